use thiserror::Error;

/// Errors of the music crate.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum MusicError {
    /// A MIDI file that does not parse (malformed or truncated).
    #[error("malformed MIDI file: {0}")]
    Midi(String),
    /// A MIDI feature this crate does not read (e.g. SMPTE timecode timing).
    #[error("unsupported MIDI content: {0}")]
    UnsupportedMidi(String),
    /// A pitch (or set of pitches starting together) the vocabulary has no token for.
    #[error("pitch {pitch} outside the vocabulary's range {lo}..={hi}")]
    PitchOutOfRange { pitch: u8, lo: u8, hi: u8 },
    /// A chord of pitches starting together in one track with no compound token.
    #[error("no compound token for the pitches {0:?} starting together in one track")]
    UnknownCompound(Vec<u8>),
    /// A note longer than the longest duration token.
    #[error("duration of {duration} sixteenths exceeds the vocabulary's maximum {max}")]
    DurationTooLong { duration: u32, max: u32 },
    /// A note of zero length, or a score/grid whose parts disagree.
    #[error("invalid score: {0}")]
    InvalidScore(String),
    /// A grid cell holds a token of the wrong kind or an unknown id.
    #[error("invalid token {token} in row {row}, column {column}: {reason}")]
    InvalidToken {
        token: u32,
        row: usize,
        column: usize,
        reason: &'static str,
    },
    /// A track count or length the model or task does not support.
    #[error("unsupported shape: {0}")]
    Unsupported(String),
    /// A corrupt or unreadable chorale file.
    #[error("chorale data: {0}")]
    Chorales(String),
    #[error("I/O error on {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error(transparent)]
    Discrete(#[from] diffusion_discrete::DiscreteError),
    #[error(transparent)]
    Nn(#[from] diffusion_nn::NnError),
    #[error(transparent)]
    Train(#[from] diffusion_train::TrainError),
}

/// Result with [`MusicError`].
pub type Result<T> = std::result::Result<T, MusicError>;
