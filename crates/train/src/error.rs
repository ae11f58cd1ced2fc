use std::path::PathBuf;

use thiserror::Error;

/// Errors raised while training, optimizing or (de)serializing checkpoints.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TrainError {
    /// A scalar or configuration argument is outside its valid range.
    #[error("invalid {name}: {reason}")]
    InvalidArgument { name: &'static str, reason: String },
    /// Two arrays that must agree in shape do not.
    #[error("shape mismatch in {context}: expected {expected:?}, got {got:?}")]
    ShapeMismatch {
        context: &'static str,
        expected: Vec<usize>,
        got: Vec<usize>,
    },
    /// The loss or the gradients became NaN or infinite.
    #[error("non-finite {what} at step {step}")]
    NonFinite { what: &'static str, step: u64 },
    /// The network's forward or backward pass failed.
    #[error("network error: {0}")]
    Network(#[from] diffusion_nn::NnError),
    #[error(transparent)]
    Schedule(#[from] diffusion_schedules::ScheduleError),
    /// A JSON file of a checkpoint could not be parsed, or its files disagree.
    #[error("cannot read {path}: {reason} (is the file truncated or corrupt?)")]
    Corrupt { path: PathBuf, reason: String },
    /// An operating-system I/O error.
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// An error from diffusion-core (parameterization conversion, shapes).
    #[error(transparent)]
    Core(#[from] diffusion_core::CoreError),
}

/// Result with [`TrainError`].
pub type Result<T, E = TrainError> = std::result::Result<T, E>;

impl TrainError {
    pub(crate) fn invalid(name: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidArgument {
            name,
            reason: reason.into(),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}

/// Checks a finite, strictly positive scalar.
pub(crate) fn check_positive(name: &'static str, v: f64) -> Result<()> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(TrainError::invalid(
            name,
            format!("must be finite and > 0, got {v}"),
        ))
    }
}

/// Checks a finite scalar in `[lo, hi]` (or `[lo, hi)` when `open_hi`).
pub(crate) fn check_range(name: &'static str, v: f64, lo: f64, hi: f64, open_hi: bool) -> Result<()> {
    let ok = v.is_finite() && v >= lo && if open_hi { v < hi } else { v <= hi };
    if ok {
        Ok(())
    } else {
        let close = if open_hi { ")" } else { "]" };
        Err(TrainError::invalid(
            name,
            format!("must be in [{lo}, {hi}{close}, got {v}"),
        ))
    }
}
