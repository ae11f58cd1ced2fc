//! The GETScore token vocabulary, shared by pitch and duration rows so that one discrete
//! diffusion process covers the grid:
//!
//! ```text
//! 0 pad | 1 empty | single pitches lo..=hi | compound pitch sets | durations 1..=max | mask
//! ```

use crate::error::{MusicError, Result};

/// Padding: a track that is absent, or columns past the end of the piece.
pub const PAD: u32 = 0;
/// No note starts in this track at this column.
pub const EMPTY: u32 = 1;

/// The token vocabulary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vocab {
    lo: u8,
    hi: u8,
    max_duration: u32,
    /// Sorted pitch sets of two or more notes that start together in one track.
    compounds: Vec<Vec<u8>>,
}

impl Vocab {
    /// Single pitches `lo..=hi`, durations `1..=max_duration` 16ths, and the given compound
    /// pitch sets (each sorted, deduplicated, at least two pitches inside the range).
    pub fn new(lo: u8, hi: u8, max_duration: u32, compounds: Vec<Vec<u8>>) -> Result<Self> {
        if lo > hi || hi > 127 || max_duration == 0 {
            return Err(MusicError::Unsupported(format!(
                "vocabulary range {lo}..={hi}, max duration {max_duration}"
            )));
        }
        let mut compounds: Vec<Vec<u8>> = compounds
            .into_iter()
            .map(|mut c| {
                c.sort_unstable();
                c.dedup();
                c
            })
            .collect();
        compounds.sort();
        compounds.dedup();
        for c in &compounds {
            if c.len() < 2 {
                return Err(MusicError::Unsupported(format!(
                    "compound {c:?} has fewer than two pitches"
                )));
            }
            if let Some(&p) = c.iter().find(|&&p| p < lo || p > hi) {
                return Err(MusicError::PitchOutOfRange { pitch: p, lo, hi });
            }
        }
        Ok(Self {
            lo,
            hi,
            max_duration,
            compounds,
        })
    }

    /// The chorale vocabulary: pitches 30..=90 (the chorales span 36-81, with room for
    /// transposition by up to six semitones), durations up to 64 16ths, no compounds.
    pub fn chorales() -> Self {
        Self::new(30, 90, 64, vec![]).expect("valid constants")
    }

    /// The pitch range.
    pub fn pitch_range(&self) -> (u8, u8) {
        (self.lo, self.hi)
    }

    /// The longest duration token, in 16ths.
    pub fn max_duration(&self) -> u32 {
        self.max_duration
    }

    fn singles(&self) -> u32 {
        (self.hi - self.lo) as u32 + 1
    }

    fn pitch_tokens(&self) -> u32 {
        self.singles() + self.compounds.len() as u32
    }

    /// The number of tokens, mask included (the `K` of the diffusion process).
    pub fn size(&self) -> usize {
        (2 + self.pitch_tokens() + self.max_duration + 1) as usize
    }

    /// The mask token (the last).
    pub fn mask(&self) -> u32 {
        self.size() as u32 - 1
    }

    /// The token of a set of pitches starting together (one pitch or a known compound).
    pub fn pitch_token(&self, pitches: &[u8]) -> Result<u32> {
        let mut set = pitches.to_vec();
        set.sort_unstable();
        set.dedup();
        if let Some(&p) = set.iter().find(|&&p| p < self.lo || p > self.hi) {
            return Err(MusicError::PitchOutOfRange {
                pitch: p,
                lo: self.lo,
                hi: self.hi,
            });
        }
        match set.len() {
            0 => Err(MusicError::InvalidScore("empty pitch set".into())),
            1 => Ok(2 + (set[0] - self.lo) as u32),
            _ => self
                .compounds
                .binary_search(&set)
                .map(|i| 2 + self.singles() + i as u32)
                .map_err(|_| MusicError::UnknownCompound(set)),
        }
    }

    /// The pitches of a pitch token, or `None` for any other token.
    pub fn pitches(&self, token: u32) -> Option<Vec<u8>> {
        if !self.is_pitch(token) {
            return None;
        }
        let i = token - 2;
        Some(if i < self.singles() {
            vec![self.lo + i as u8]
        } else {
            self.compounds[(i - self.singles()) as usize].clone()
        })
    }

    /// The token of a duration in 16ths.
    pub fn duration_token(&self, duration: u32) -> Result<u32> {
        if duration == 0 {
            return Err(MusicError::InvalidScore("zero duration".into()));
        }
        if duration > self.max_duration {
            return Err(MusicError::DurationTooLong {
                duration,
                max: self.max_duration,
            });
        }
        Ok(2 + self.pitch_tokens() + duration - 1)
    }

    /// The duration of a duration token, or `None` for any other token.
    pub fn duration(&self, token: u32) -> Option<u32> {
        self.is_duration(token)
            .then(|| token - 2 - self.pitch_tokens() + 1)
    }

    /// Whether `token` is a pitch token.
    pub fn is_pitch(&self, token: u32) -> bool {
        (2..2 + self.pitch_tokens()).contains(&token)
    }

    /// Whether `token` is a duration token.
    pub fn is_duration(&self, token: u32) -> bool {
        let first = 2 + self.pitch_tokens();
        (first..first + self.max_duration).contains(&token)
    }

    /// Whether `token` may stand in a pitch row (`pitch == true`) or a duration row.
    pub fn allowed(&self, token: u32, pitch: bool) -> bool {
        token == PAD
            || token == EMPTY
            || if pitch {
                self.is_pitch(token)
            } else {
                self.is_duration(token)
            }
    }
}
