//! GETScore encoding, the chorale loader and MIDI in/out.

use diffusion_music::chorale::transpose;
use diffusion_music::{
    EMPTY, Grid, MusicError, Note, PAD, Score, ScoreMeta, Vocab, bundled_path, load_chorales, read_midi,
    write_midi,
};
use midly::num::{u4, u7, u15, u24, u28};
use midly::{Format, Header, MetaMessage, MidiMessage, Smf, Timing, TrackEvent, TrackEventKind};

fn chorales() -> Vec<diffusion_music::Chorale> {
    load_chorales(&bundled_path()).expect("data/chorales.json is part of the crate")
}

#[test]
fn the_corpus_loads_with_the_documented_counts() {
    let c = chorales();
    assert_eq!(c.len(), 362);
    let events: usize = c
        .iter()
        .flat_map(|c| &c.score.tracks)
        .map(|t| t.notes.len())
        .sum();
    assert_eq!(events, 84_220);
    assert!(c.iter().all(|c| c.score.tracks.len() == 4));
    assert_eq!(c[0].id, "bwv10.7");
    assert_eq!(
        c[0].score.tracks[0].notes[0],
        Note {
            onset: 0,
            duration: 8,
            pitch: 74
        }
    );
    assert_eq!(c[0].score.key_sharps, Some(-2));
    let three: usize = c.iter().filter(|c| c.score.time_signature == (3, 4)).count();
    assert_eq!(three, 36);
}

#[test]
fn every_chorale_encodes_and_decodes_exactly() {
    let vocab = Vocab::chorales();
    for c in chorales() {
        let grid = Grid::encode(&c.score, &vocab).unwrap();
        assert_eq!(grid.rows(), 8);
        assert_eq!(grid.columns(), c.score.length as usize);
        // Cells by hand: a note's tokens at its onset, EMPTY elsewhere.
        let s = &c.score.tracks[0].notes[0];
        assert_eq!(
            grid.get(0, s.onset as usize),
            vocab.pitch_token(&[s.pitch]).unwrap()
        );
        assert_eq!(
            grid.get(1, s.onset as usize),
            vocab.duration_token(s.duration).unwrap()
        );
        let onsets = grid.tokens()[..grid.columns()]
            .iter()
            .filter(|&&t| t != EMPTY)
            .count();
        assert_eq!(onsets, c.score.tracks[0].notes.len());
        assert_eq!(grid.decode(&vocab, &c.score.meta()).unwrap(), c.score, "{}", c.id);
    }
}

#[test]
fn midi_round_trip_gives_the_same_score_and_grid() {
    let vocab = Vocab::chorales();
    for c in chorales() {
        let bytes = write_midi(&c.score).unwrap();
        let back = read_midi(&bytes).unwrap();
        assert_eq!(back, c.score, "{}", c.id);
        assert_eq!(
            Grid::encode(&back, &vocab).unwrap(),
            Grid::encode(&c.score, &vocab).unwrap()
        );
    }
}

#[test]
fn compound_tokens_hold_notes_starting_together() {
    let vocab = Vocab::new(48, 72, 16, vec![vec![64, 60, 67], vec![60, 64]]).unwrap();
    let meta = ScoreMeta {
        tracks: vec![("Piano".into(), 0)],
        tempo: 500_000,
        time_signature: (4, 4),
        key_sharps: None,
    };
    let notes = vec![vec![
        Note {
            onset: 0,
            duration: 4,
            pitch: 60,
        },
        Note {
            onset: 0,
            duration: 4,
            pitch: 64,
        },
        Note {
            onset: 0,
            duration: 4,
            pitch: 67,
        },
        Note {
            onset: 4,
            duration: 2,
            pitch: 62,
        },
    ]];
    let score = Score::new(meta.clone(), notes, 8).unwrap();
    let grid = Grid::encode(&score, &vocab).unwrap();
    assert_eq!(vocab.pitches(grid.get(0, 0)).unwrap(), vec![60, 64, 67]);
    assert_eq!(grid.get(0, 1), EMPTY);
    assert_eq!(grid.decode(&vocab, &meta).unwrap(), score);
    // A chord with no compound token, a pitch and a duration outside the vocabulary.
    let chord = Score::new(
        meta.clone(),
        vec![vec![
            Note {
                onset: 0,
                duration: 4,
                pitch: 60,
            },
            Note {
                onset: 0,
                duration: 4,
                pitch: 62,
            },
        ]],
        4,
    )
    .unwrap();
    assert!(matches!(Grid::encode(&chord, &vocab), Err(MusicError::UnknownCompound(p)) if p == vec![60, 62]));
    let high = Score::new(
        meta.clone(),
        vec![vec![Note {
            onset: 0,
            duration: 4,
            pitch: 90,
        }]],
        4,
    )
    .unwrap();
    assert!(matches!(
        Grid::encode(&high, &vocab),
        Err(MusicError::PitchOutOfRange { pitch: 90, .. })
    ));
    let long = Score::new(
        meta.clone(),
        vec![vec![Note {
            onset: 0,
            duration: 17,
            pitch: 60,
        }]],
        17,
    )
    .unwrap();
    assert!(matches!(
        Grid::encode(&long, &vocab),
        Err(MusicError::DurationTooLong {
            duration: 17,
            max: 16
        })
    ));
}

#[test]
fn grids_with_wrong_tokens_are_rejected() {
    let vocab = Vocab::chorales();
    let d = vocab.duration_token(4).unwrap();
    let p = vocab.pitch_token(&[60]).unwrap();
    // A duration token in a pitch row.
    let mut tokens = vec![EMPTY; 2 * 3];
    tokens[0] = d;
    tokens[3] = d;
    assert!(matches!(
        Grid::from_tokens(1, 3, tokens, &vocab),
        Err(MusicError::InvalidToken { row: 0, .. })
    ));
    // A pitch without a duration; the mask token.
    let mut tokens = vec![EMPTY; 6];
    tokens[1] = p;
    assert!(matches!(
        Grid::from_tokens(1, 3, tokens.clone(), &vocab),
        Err(MusicError::InvalidToken { column: 1, .. })
    ));
    tokens[1] = vocab.mask();
    assert!(Grid::from_tokens(1, 3, tokens, &vocab).is_err());
    let mut ok = vec![PAD; 6];
    ok[0] = p;
    ok[3] = d;
    let g = Grid::from_tokens(1, 3, ok, &vocab).unwrap();
    let meta = ScoreMeta {
        tracks: vec![("x".into(), 0)],
        tempo: 500_000,
        time_signature: (4, 4),
        key_sharps: None,
    };
    let s = g.decode(&vocab, &meta).unwrap();
    assert_eq!(s.length, 4);
    assert_eq!(
        s.tracks[0].notes,
        vec![Note {
            onset: 0,
            duration: 4,
            pitch: 60
        }]
    );
}

/// A file built with midly directly: format 0, 96 ticks per quarter, two channels in one
/// track, a note-on with velocity 0 as note-off, off-grid times rounded to 16ths.
#[test]
fn foreign_midi_files_are_read_and_quantised() {
    let ev = |delta: u32, kind| TrackEvent {
        delta: u28::new(delta),
        kind,
    };
    let on = |ch: u8, key: u8, vel: u8| TrackEventKind::Midi {
        channel: u4::new(ch),
        message: MidiMessage::NoteOn {
            key: u7::new(key),
            vel: u7::new(vel),
        },
    };
    let track = vec![
        ev(0, TrackEventKind::Meta(MetaMessage::TrackName(b"Duo"))),
        ev(0, TrackEventKind::Meta(MetaMessage::Tempo(u24::new(600_000)))),
        ev(0, TrackEventKind::Meta(MetaMessage::TimeSignature(3, 2, 24, 8))),
        ev(
            0,
            TrackEventKind::Midi {
                channel: u4::new(1),
                message: MidiMessage::ProgramChange { program: u7::new(40) },
            },
        ),
        ev(1, on(0, 60, 90)), // tick 1 -> 16th 0
        ev(0, on(1, 48, 90)), // tick 1
        ev(46, on(0, 60, 0)), // tick 47 -> 16th 2 (24 ticks a 16th)
        ev(49, on(1, 48, 0)), // tick 96 -> 16th 4
        ev(0, on(0, 62, 70)), // tick 96
        ev(
            48,
            TrackEventKind::Midi {
                channel: u4::new(0),
                message: MidiMessage::NoteOff {
                    key: u7::new(62),
                    vel: u7::new(0),
                },
            },
        ),
        ev(96, TrackEventKind::Meta(MetaMessage::EndOfTrack)), // tick 240 -> 16th 10
    ];
    let mut smf = Smf::new(Header::new(Format::SingleTrack, Timing::Metrical(u15::new(96))));
    smf.tracks.push(track);
    let mut bytes = Vec::new();
    smf.write_std(&mut bytes).unwrap();
    let score = read_midi(&bytes).unwrap();
    assert_eq!(score.tempo, 600_000);
    assert_eq!(score.time_signature, (3, 4));
    assert_eq!(score.length, 10);
    assert_eq!(score.tracks.len(), 2);
    assert_eq!(
        (score.tracks[0].name.as_str(), score.tracks[0].program),
        ("Duo ch 0", 0)
    );
    assert_eq!(
        (score.tracks[1].name.as_str(), score.tracks[1].program),
        ("Duo ch 1", 40)
    );
    assert_eq!(
        score.tracks[0].notes,
        vec![
            Note {
                onset: 0,
                duration: 2,
                pitch: 60
            },
            Note {
                onset: 4,
                duration: 2,
                pitch: 62
            }
        ]
    );
    assert_eq!(
        score.tracks[1].notes,
        vec![Note {
            onset: 0,
            duration: 4,
            pitch: 48
        }]
    );
}

#[test]
fn malformed_and_truncated_midi_files_are_typed_errors() {
    let c = &chorales()[0];
    let bytes = write_midi(&c.score).unwrap();
    for cut in [0, 5, 13, 14, 30, bytes.len() / 2, bytes.len() - 1] {
        assert!(
            matches!(read_midi(&bytes[..cut]), Err(MusicError::Midi(_))),
            "cut at {cut}"
        );
    }
    assert!(matches!(
        read_midi(b"RIFF not a midi file at all"),
        Err(MusicError::Midi(_))
    ));
    let mut smf = Smf::new(Header::new(
        Format::Parallel,
        Timing::Timecode(midly::Fps::Fps25, 40),
    ));
    smf.tracks.push(vec![TrackEvent {
        delta: u28::new(0),
        kind: TrackEventKind::Meta(MetaMessage::EndOfTrack),
    }]);
    let mut b = Vec::new();
    smf.write_std(&mut b).unwrap();
    assert!(matches!(read_midi(&b), Err(MusicError::UnsupportedMidi(_))));
}

#[test]
fn transposition_moves_every_note() {
    let c = &chorales()[0];
    let up = transpose(&c.score, 5).unwrap();
    for (a, b) in c.score.tracks.iter().zip(&up.tracks) {
        for (x, y) in a.notes.iter().zip(&b.notes) {
            assert_eq!(y.pitch, x.pitch + 5);
            assert_eq!((y.onset, y.duration), (x.onset, x.duration));
        }
    }
    assert!(transpose(&c.score, 100).is_err());
}

/// Writes every chorale as MIDI into `$MIDI_OUT` for a check with an independent reader:
/// `MIDI_OUT=/tmp/chorales cargo test -p diffusion-music --test io -- --ignored` then
/// `python3 scripts/check_midi_mido.py /tmp/chorales data/chorales.json` (needs `mido`).
#[test]
#[ignore = "writes files for scripts/check_midi_mido.py"]
fn write_chorale_midi_files() {
    let dir = std::path::PathBuf::from(std::env::var("MIDI_OUT").expect("set MIDI_OUT to a directory"));
    std::fs::create_dir_all(&dir).unwrap();
    for c in chorales() {
        diffusion_music::write_midi_file(&dir.join(format!("{}.mid", c.id)), &c.score).unwrap();
    }
}
