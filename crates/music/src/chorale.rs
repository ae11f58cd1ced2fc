//! The Bach chorales in the shared event format (`data/chorales.json`): four voices,
//! events `[onset16, dur16, midi]`.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{MusicError, Result};
use crate::score::{Note, Score, ScoreMeta};

/// One chorale: its corpus id and its score (tracks Soprano, Alto, Tenor, Bass).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chorale {
    pub id: String,
    pub score: Score,
}

/// The tempo given to chorales (the data has none): 80 quarter notes per minute.
pub const CHORALE_TEMPO: u32 = 750_000;
/// General MIDI program 52, "Choir Aahs", for every voice.
pub const CHORALE_PROGRAM: u8 = 52;

#[derive(Deserialize)]
struct File {
    chorales: Vec<Raw>,
}

#[derive(Deserialize)]
struct Raw {
    id: String,
    time_signature: String,
    key_signature_sharps: Option<i8>,
    length_16ths: u32,
    tracks: Vec<RawTrack>,
}

#[derive(Deserialize)]
struct RawTrack {
    name: String,
    events: Vec<[u32; 3]>,
}

/// The copy of the corpus in this crate.
pub fn bundled_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/chorales.json")
}

/// Loads every chorale of an event-format file.
pub fn load_chorales(path: &Path) -> Result<Vec<Chorale>> {
    let text = std::fs::read_to_string(path).map_err(|source| MusicError::Io {
        path: path.display().to_string(),
        source,
    })?;
    parse_chorales(&text)
}

/// Parses the event format.
pub fn parse_chorales(text: &str) -> Result<Vec<Chorale>> {
    let file: File = serde_json::from_str(text).map_err(|e| MusicError::Chorales(e.to_string()))?;
    file.chorales.into_iter().map(convert).collect()
}

fn convert(raw: Raw) -> Result<Chorale> {
    let bad = |s: String| MusicError::Chorales(format!("{}: {s}", raw.id));
    let (n, d) = raw
        .time_signature
        .split_once('/')
        .and_then(|(n, d)| Some((n.trim().parse::<u8>().ok()?, d.trim().parse::<u8>().ok()?)))
        .ok_or_else(|| bad(format!("time signature {:?}", raw.time_signature)))?;
    let meta = ScoreMeta {
        tracks: raw
            .tracks
            .iter()
            .map(|t| (t.name.clone(), CHORALE_PROGRAM))
            .collect(),
        tempo: CHORALE_TEMPO,
        time_signature: (n, d),
        key_sharps: raw.key_signature_sharps,
    };
    let mut notes = Vec::with_capacity(raw.tracks.len());
    for t in &raw.tracks {
        let mut track = Vec::with_capacity(t.events.len());
        for &[onset, duration, pitch] in &t.events {
            if pitch > 127 {
                return Err(bad(format!("pitch {pitch}")));
            }
            track.push(Note {
                onset,
                duration,
                pitch: pitch as u8,
            });
        }
        notes.push(track);
    }
    let score = Score::new(meta, notes, raw.length_16ths).map_err(|e| bad(e.to_string()))?;
    Ok(Chorale { id: raw.id, score })
}

/// The score transposed by `semitones` (all voices).
pub fn transpose(score: &Score, semitones: i32) -> Result<Score> {
    let mut out = score.clone();
    for t in &mut out.tracks {
        for n in &mut t.notes {
            let p = n.pitch as i32 + semitones;
            if !(0..=127).contains(&p) {
                return Err(MusicError::InvalidScore(format!(
                    "transposing {} by {semitones}",
                    n.pitch
                )));
            }
            n.pitch = p as u8;
        }
    }
    Ok(out)
}

/// Splits chorales by piece: every `every`-th (by position, starting at `offset`) is held
/// out. Deterministic, so the same pieces are always held out.
pub fn split(chorales: &[Chorale], every: usize, offset: usize) -> (Vec<Chorale>, Vec<Chorale>) {
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for (i, c) in chorales.iter().enumerate() {
        if every > 0 && i % every == offset % every {
            test.push(c.clone())
        } else {
            train.push(c.clone())
        }
    }
    (train, test)
}
