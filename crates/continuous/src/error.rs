//! The crate's one error type.

use std::path::PathBuf;

use diffusion_core::CoreError;
use thiserror::Error;

/// Errors raised by the continuous-time samplers.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ContinuousError {
    /// A scalar or option is outside its valid range.
    #[error("invalid {name}: {reason}")]
    InvalidArgument { name: &'static str, reason: String },
    /// A time grid is empty, not finite, or not strictly monotone.
    #[error("invalid time grid: {0}")]
    InvalidGrid(String),
    /// The adaptive integrator could not meet its tolerance.
    #[error("adaptive ODE solver failed at s = {at}: {reason}")]
    IntegrationFailed { at: f64, reason: String },
    /// A file could not be read or written.
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A statistics file is malformed or inconsistent.
    #[error("{path}: {reason}")]
    Format { path: PathBuf, reason: String },
    /// An error from diffusion-core (model output shape or finiteness, conversions).
    #[error(transparent)]
    Core(#[from] CoreError),
}

/// Result with [`ContinuousError`].
pub type Result<T, E = ContinuousError> = std::result::Result<T, E>;

pub(crate) fn invalid(name: &'static str, reason: impl Into<String>) -> ContinuousError {
    ContinuousError::InvalidArgument {
        name,
        reason: reason.into(),
    }
}
