//! GETScore: a 2-D token grid, two rows per track (pitch, then duration) over 16th-note
//! columns. A note's tokens sit in the column where it starts; other cells of a track are
//! `EMPTY`, cells past the end of a piece (or of an absent track) `PAD`. Notes of one track
//! that start together share a compound pitch token and one duration (the longest).

use std::collections::BTreeMap;

use crate::error::{MusicError, Result};
use crate::score::{Note, Score, ScoreMeta};
use crate::vocab::{EMPTY, PAD, Vocab};

/// A token grid of `2 * tracks` rows and `columns` columns, row-major.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grid {
    tracks: usize,
    columns: usize,
    tokens: Vec<u32>,
}

impl Grid {
    /// A grid with every cell set to `token`.
    pub fn filled(tracks: usize, columns: usize, token: u32) -> Self {
        Self {
            tracks,
            columns,
            tokens: vec![token; 2 * tracks * columns],
        }
    }

    /// A grid from row-major tokens (`2 * tracks * columns` of them), checked against `vocab`.
    pub fn from_tokens(tracks: usize, columns: usize, tokens: Vec<u32>, vocab: &Vocab) -> Result<Self> {
        if tokens.len() != 2 * tracks * columns {
            return Err(MusicError::Unsupported(format!(
                "{} tokens for {tracks} tracks x {columns} columns",
                tokens.len()
            )));
        }
        let grid = Self {
            tracks,
            columns,
            tokens,
        };
        grid.validate(vocab)?;
        Ok(grid)
    }

    /// The GETScore of `score`: one column per 16th of its length.
    pub fn encode(score: &Score, vocab: &Vocab) -> Result<Self> {
        score.validate()?;
        let columns = score.length as usize;
        let mut grid = Self::filled(score.tracks.len(), columns, EMPTY);
        for (i, track) in score.tracks.iter().enumerate() {
            let mut starts: BTreeMap<u32, (Vec<u8>, u32)> = BTreeMap::new();
            for n in &track.notes {
                let e = starts.entry(n.onset).or_default();
                e.0.push(n.pitch);
                e.1 = e.1.max(n.duration);
            }
            for (onset, (pitches, duration)) in starts {
                let c = onset as usize;
                grid.tokens[(2 * i) * columns + c] = vocab.pitch_token(&pitches)?;
                grid.tokens[(2 * i + 1) * columns + c] = vocab.duration_token(duration)?;
            }
        }
        Ok(grid)
    }

    /// The score the grid encodes, with `meta`'s track names, programs, tempo and metre.
    /// Its length is the number of columns up to the last that is not all `PAD`.
    pub fn decode(&self, vocab: &Vocab, meta: &ScoreMeta) -> Result<Score> {
        self.validate(vocab)?;
        if meta.tracks.len() != self.tracks {
            return Err(MusicError::Unsupported(format!(
                "{} track descriptions for a grid of {} tracks",
                meta.tracks.len(),
                self.tracks
            )));
        }
        let mut length = (0..self.columns)
            .rev()
            .find(|&c| (0..2 * self.tracks).any(|r| self.get(r, c) != PAD))
            .map_or(0, |c| c + 1) as u32;
        let mut notes = vec![Vec::new(); self.tracks];
        for (i, track) in notes.iter_mut().enumerate() {
            for c in 0..self.columns {
                let (p, d) = (self.get(2 * i, c), self.get(2 * i + 1, c));
                if let (Some(pitches), Some(duration)) = (vocab.pitches(p), vocab.duration(d)) {
                    for pitch in pitches {
                        track.push(Note {
                            onset: c as u32,
                            duration,
                            pitch,
                        });
                    }
                    length = length.max(c as u32 + duration);
                }
            }
        }
        Score::new(meta.clone(), notes, length)
    }

    /// Checks every token against its row's kind and that pitch and duration cells pair up.
    pub fn validate(&self, vocab: &Vocab) -> Result<()> {
        for i in 0..self.tracks {
            for c in 0..self.columns {
                let (p, d) = (self.get(2 * i, c), self.get(2 * i + 1, c));
                let bad = |row, token, reason| {
                    Err(MusicError::InvalidToken {
                        token,
                        row,
                        column: c,
                        reason,
                    })
                };
                if !vocab.allowed(p, true) {
                    return bad(2 * i, p, "not a pitch, empty or pad token");
                }
                if !vocab.allowed(d, false) {
                    return bad(2 * i + 1, d, "not a duration, empty or pad token");
                }
                if vocab.is_pitch(p) != vocab.is_duration(d) {
                    return bad(
                        2 * i + 1,
                        d,
                        "a pitch needs a duration in the same column and vice versa",
                    );
                }
            }
        }
        Ok(())
    }

    /// The number of tracks.
    pub fn tracks(&self) -> usize {
        self.tracks
    }

    /// The number of columns (16ths).
    pub fn columns(&self) -> usize {
        self.columns
    }

    /// The number of rows (`2 * tracks`).
    pub fn rows(&self) -> usize {
        2 * self.tracks
    }

    /// Token at `(row, column)`.
    pub fn get(&self, row: usize, column: usize) -> u32 {
        self.tokens[row * self.columns + column]
    }

    /// Sets the token at `(row, column)`.
    pub fn set(&mut self, row: usize, column: usize, token: u32) {
        self.tokens[row * self.columns + column] = token;
    }

    /// The tokens, row-major.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Columns `start..start + len`, padded with `PAD` past the end.
    pub fn window(&self, start: usize, len: usize) -> Grid {
        let mut out = Grid::filled(self.tracks, len, PAD);
        for r in 0..self.rows() {
            for c in 0..len {
                if start + c < self.columns {
                    out.set(r, c, self.get(r, start + c));
                }
            }
        }
        out
    }

    /// Makes pitch and duration cells pair up (a lone pitch or duration becomes `EMPTY`),
    /// for grids produced by a model.
    pub fn repair(&mut self, vocab: &Vocab) {
        for i in 0..self.tracks {
            for c in 0..self.columns {
                let (p, d) = (self.get(2 * i, c), self.get(2 * i + 1, c));
                if vocab.is_pitch(p) != vocab.is_duration(d) {
                    self.set(2 * i, c, EMPTY);
                    self.set(2 * i + 1, c, EMPTY);
                }
            }
        }
    }
}
