//! Event-level scores: tracks of notes on a 16th-note grid, with the metadata MIDI keeps.

use crate::error::{MusicError, Result};

/// One note: onset and duration in 16th notes, MIDI pitch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Note {
    pub onset: u32,
    pub duration: u32,
    pub pitch: u8,
}

/// One instrument track.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Track {
    pub name: String,
    /// General MIDI program (0-127).
    pub program: u8,
    /// Notes sorted by `(onset, duration, pitch)`.
    pub notes: Vec<Note>,
}

/// Everything about a score but its notes: what survives a trip through a token grid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScoreMeta {
    /// Track names and programs, in track order.
    pub tracks: Vec<(String, u8)>,
    /// Microseconds per quarter note.
    pub tempo: u32,
    /// Numerator and denominator (e.g. `(3, 4)`).
    pub time_signature: (u8, u8),
    /// Sharps (positive) or flats (negative) of the key signature, if known.
    pub key_sharps: Option<i8>,
}

/// A multi-track score on a 16th-note grid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Score {
    pub tracks: Vec<Track>,
    /// Length in 16ths (at least the end of the last note).
    pub length: u32,
    pub tempo: u32,
    pub time_signature: (u8, u8),
    pub key_sharps: Option<i8>,
}

impl Score {
    /// A score from its parts; sorts each track's notes and checks them.
    pub fn new(meta: ScoreMeta, notes: Vec<Vec<Note>>, length: u32) -> Result<Self> {
        if meta.tracks.len() != notes.len() {
            return Err(MusicError::InvalidScore(format!(
                "{} track descriptions for {} note lists",
                meta.tracks.len(),
                notes.len()
            )));
        }
        let tracks = meta
            .tracks
            .into_iter()
            .zip(notes)
            .map(|((name, program), mut notes)| {
                notes.sort();
                Track { name, program, notes }
            })
            .collect();
        let score = Self {
            tracks,
            length,
            tempo: meta.tempo,
            time_signature: meta.time_signature,
            key_sharps: meta.key_sharps,
        };
        score.validate()?;
        Ok(score)
    }

    /// The metadata alone.
    pub fn meta(&self) -> ScoreMeta {
        ScoreMeta {
            tracks: self.tracks.iter().map(|t| (t.name.clone(), t.program)).collect(),
            tempo: self.tempo,
            time_signature: self.time_signature,
            key_sharps: self.key_sharps,
        }
    }

    /// 16ths per bar under the time signature.
    pub fn bar_length(&self) -> u32 {
        let (n, d) = self.time_signature;
        (n as u32 * 16 / d.max(1) as u32).max(1)
    }

    /// Checks notes (positive durations, pitches <= 127, within `length`), programs, tempo.
    pub fn validate(&self) -> Result<()> {
        let bad = |s: String| Err(MusicError::InvalidScore(s));
        if self.tempo == 0 || self.tempo >= 1 << 24 {
            return bad(format!("tempo {} us per quarter outside 1..2^24", self.tempo));
        }
        let (n, d) = self.time_signature;
        if n == 0 || d == 0 || !d.is_power_of_two() {
            return bad(format!("time signature {n}/{d}"));
        }
        for (i, t) in self.tracks.iter().enumerate() {
            if t.program > 127 {
                return bad(format!("track {i}: program {}", t.program));
            }
            for note in &t.notes {
                if note.duration == 0 || note.pitch > 127 {
                    return bad(format!("track {i}: note {note:?}"));
                }
                if note.onset + note.duration > self.length {
                    return bad(format!(
                        "track {i}: note {note:?} ends after the length {}",
                        self.length
                    ));
                }
            }
        }
        Ok(())
    }
}
