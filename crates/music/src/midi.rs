//! Standard MIDI files in and out (via `midly`, strict parsing): notes quantised to 16ths,
//! tempo, time signature, key signature, track names and programs kept.

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;

use midly::num::{u4, u7, u15, u24, u28};
use midly::{Format, Header, MetaMessage, MidiMessage, Smf, Timing, TrackEvent, TrackEventKind};

use crate::error::{MusicError, Result};
use crate::score::{Note, Score, ScoreMeta};

/// Ticks per quarter note in files written here (a 16th is 120 ticks).
pub const TICKS_PER_QUARTER: u16 = 480;
const TICKS_PER_16TH: u32 = TICKS_PER_QUARTER as u32 / 4;
/// Microseconds per quarter when a file has no tempo event (120 bpm, the MIDI default).
pub const DEFAULT_TEMPO: u32 = 500_000;

/// The MIDI channel of track `i`: 0-15 skipping the percussion channel 9.
fn channel_of(i: usize) -> u8 {
    let c = (i % 15) as u8;
    if c >= 9 { c + 1 } else { c }
}

/// A format-1 MIDI file of `score`: a conductor track (tempo, time and key signature) and
/// one track per score track (name, program change, notes), each ending at the score's
/// length so that the length survives a round trip.
pub fn write_midi(score: &Score) -> Result<Vec<u8>> {
    score.validate()?;
    let end = score.length * TICKS_PER_16TH;
    let (num, den) = score.time_signature;
    let mut conductor: Vec<(u32, u8, TrackEventKind)> = vec![
        (
            0,
            0,
            TrackEventKind::Meta(MetaMessage::Tempo(u24::new(score.tempo))),
        ),
        (
            0,
            0,
            TrackEventKind::Meta(MetaMessage::TimeSignature(num, den.trailing_zeros() as u8, 24, 8)),
        ),
    ];
    if let Some(k) = score.key_sharps {
        conductor.push((0, 0, TrackEventKind::Meta(MetaMessage::KeySignature(k, false))));
    }
    let mut tracks = vec![finish(conductor, end)];
    for (i, track) in score.tracks.iter().enumerate() {
        let channel = u4::new(channel_of(i));
        let mut ev: Vec<(u32, u8, TrackEventKind)> = vec![
            (
                0,
                0,
                TrackEventKind::Meta(MetaMessage::TrackName(track.name.as_bytes())),
            ),
            (
                0,
                0,
                TrackEventKind::Midi {
                    channel,
                    message: MidiMessage::ProgramChange {
                        program: u7::new(track.program),
                    },
                },
            ),
        ];
        for n in &track.notes {
            let key = u7::new(n.pitch);
            // Order at equal ticks: offs (1) before ons (2), so repeated notes re-strike.
            ev.push((
                n.onset * TICKS_PER_16TH,
                2,
                TrackEventKind::Midi {
                    channel,
                    message: MidiMessage::NoteOn {
                        key,
                        vel: u7::new(80),
                    },
                },
            ));
            ev.push((
                (n.onset + n.duration) * TICKS_PER_16TH,
                1,
                TrackEventKind::Midi {
                    channel,
                    message: MidiMessage::NoteOff { key, vel: u7::new(0) },
                },
            ));
        }
        tracks.push(finish(ev, end));
    }
    let mut smf = Smf::new(Header::new(
        Format::Parallel,
        Timing::Metrical(u15::new(TICKS_PER_QUARTER)),
    ));
    smf.tracks = tracks;
    let mut out = Vec::new();
    smf.write_std(&mut out)
        .map_err(|e| MusicError::Midi(format!("writing: {e}")))?;
    Ok(out)
}

/// Sorts `(tick, order, event)` stably and turns ticks into deltas, with the end of track.
fn finish(mut ev: Vec<(u32, u8, TrackEventKind<'_>)>, end: u32) -> Vec<TrackEvent<'_>> {
    ev.sort_by_key(|(tick, order, _)| (*tick, *order));
    let mut last = 0;
    let mut out: Vec<TrackEvent> = ev
        .into_iter()
        .map(|(tick, _, kind)| {
            let delta = u28::new(tick - last);
            last = tick;
            TrackEvent { delta, kind }
        })
        .collect();
    out.push(TrackEvent {
        delta: u28::new(end.saturating_sub(last)),
        kind: TrackEventKind::Meta(MetaMessage::EndOfTrack),
    });
    out
}

/// Reads a MIDI file (format 0 or 1, metrical timing). Each (track, channel) with notes
/// becomes a score track named after its track (plus ` ch N` when a track uses several
/// channels), with the first program change on that channel (0 if none). Times are rounded
/// to the nearest 16th; notes shorter than that last one 16th. Tempo, time and key
/// signature are the first of each in the file. Malformed or truncated files, SMPTE timing
/// and format-2 files are errors.
pub fn read_midi(bytes: &[u8]) -> Result<Score> {
    let smf = Smf::parse(bytes).map_err(|e| MusicError::Midi(e.to_string()))?;
    let tpq = match smf.header.timing {
        Timing::Metrical(t) if t.as_int() > 0 => t.as_int() as u64,
        Timing::Metrical(_) => return Err(MusicError::Midi("zero ticks per quarter".into())),
        Timing::Timecode(..) => return Err(MusicError::UnsupportedMidi("SMPTE timecode timing".into())),
    };
    if smf.header.format == Format::Sequential {
        return Err(MusicError::UnsupportedMidi("format 2 (sequential tracks)".into()));
    }
    let to16 = |tick: u64| ((tick * 4 + tpq / 2) / tpq) as u32;
    let (mut tempo, mut time_sig, mut key) = (None, None, None);
    let mut length = 0u32;
    // (track index, channel) -> (program, notes)
    let mut parts: BTreeMap<(usize, u8), (Option<u8>, Vec<Note>)> = BTreeMap::new();
    let mut names: Vec<String> = Vec::new();
    for (ti, track) in smf.tracks.iter().enumerate() {
        let mut tick = 0u64;
        let mut name = format!("Track {ti}");
        let mut open: BTreeMap<(u8, u8), VecDeque<u64>> = BTreeMap::new();
        let close =
            |parts: &mut BTreeMap<_, (Option<u8>, Vec<Note>)>, ch: u8, key: u8, start: u64, end: u64| {
                let onset = to16(start);
                let duration = to16(end).saturating_sub(onset).max(1);
                parts.entry((ti, ch)).or_default().1.push(Note {
                    onset,
                    duration,
                    pitch: key,
                });
            };
        for ev in track {
            tick += ev.delta.as_int() as u64;
            match ev.kind {
                TrackEventKind::Meta(MetaMessage::Tempo(t)) => {
                    tempo.get_or_insert(t.as_int());
                }
                TrackEventKind::Meta(MetaMessage::TimeSignature(n, d, ..)) => {
                    if d > 6 {
                        return Err(MusicError::Midi(format!("time signature denominator 2^{d}")));
                    }
                    time_sig.get_or_insert((n, 1u8 << d));
                }
                TrackEventKind::Meta(MetaMessage::KeySignature(k, _)) => {
                    key.get_or_insert(k);
                }
                TrackEventKind::Meta(MetaMessage::TrackName(n)) => {
                    name = String::from_utf8_lossy(n).into_owned()
                }
                TrackEventKind::Midi { channel, message } => {
                    let ch = channel.as_int();
                    match message {
                        MidiMessage::ProgramChange { program } => {
                            parts
                                .entry((ti, ch))
                                .or_default()
                                .0
                                .get_or_insert(program.as_int());
                        }
                        MidiMessage::NoteOn { key: k, vel } if vel.as_int() > 0 => {
                            open.entry((ch, k.as_int())).or_default().push_back(tick);
                        }
                        MidiMessage::NoteOn { key: k, .. } | MidiMessage::NoteOff { key: k, .. } => {
                            // A note-off without a matching note-on is ignored, as players do.
                            if let Some(start) = open.get_mut(&(ch, k.as_int())).and_then(|q| q.pop_front()) {
                                close(&mut parts, ch, k.as_int(), start, tick);
                            }
                        }
                        _ => {}
                    }
                }
                _ => {}
            }
        }
        // Notes still sounding at the end of the track end there.
        for ((ch, k), starts) in open {
            for start in starts {
                close(&mut parts, ch, k, start, tick);
            }
        }
        length = length.max(to16(tick));
        names.push(name);
    }
    type Part = ((usize, u8), (Option<u8>, Vec<Note>));
    let parts: Vec<Part> = parts
        .into_iter()
        .filter(|(_, (_, notes))| !notes.is_empty())
        .collect();
    let mut meta = ScoreMeta {
        tracks: Vec::new(),
        tempo: tempo.unwrap_or(DEFAULT_TEMPO),
        time_signature: time_sig.unwrap_or((4, 4)),
        key_sharps: key,
    };
    let mut notes = Vec::new();
    for ((ti, ch), (program, n)) in parts {
        let several = smf.tracks[ti]
            .iter()
            .filter_map(|e| match e.kind {
                TrackEventKind::Midi {
                    channel,
                    message: MidiMessage::NoteOn { .. },
                } => Some(channel.as_int()),
                _ => None,
            })
            .any(|c| c != ch);
        let name = if several {
            format!("{} ch {}", names[ti], ch)
        } else {
            names[ti].clone()
        };
        meta.tracks.push((name, program.unwrap_or(0)));
        length = length.max(n.iter().map(|x| x.onset + x.duration).max().unwrap_or(0));
        notes.push(n);
    }
    Score::new(meta, notes, length)
}

/// Reads a MIDI file from disk.
pub fn read_midi_file(path: &Path) -> Result<Score> {
    let bytes = std::fs::read(path).map_err(|source| MusicError::Io {
        path: path.display().to_string(),
        source,
    })?;
    read_midi(&bytes)
}

/// Writes `score` as a MIDI file, atomically (temporary file, then rename).
pub fn write_midi_file(path: &Path, score: &Score) -> Result<()> {
    let bytes = write_midi(score)?;
    diffusion_train::io::write_atomic(path, &bytes)?;
    Ok(())
}
