//! The crate's one error type.

use thiserror::Error;

/// Everything that can go wrong while quantizing, calibrating, running or loading a model.
#[derive(Debug, Error)]
pub enum QuantError {
    /// A bit width the requested format or kernel does not support.
    #[error("unsupported bit width {bits} for {what} (supported: {supported})")]
    UnsupportedBits {
        bits: u32,
        what: &'static str,
        supported: &'static str,
    },
    /// Calibration (or a scale estimate) was asked to work from no data.
    #[error("empty calibration set: {0}")]
    EmptyCalibration(String),
    /// Scales (or zero points, smoothing factors, low-rank factors) whose shape does not fit
    /// the weights they belong to.
    #[error("scale mismatch in {tensor}: expected {expected} values, found {found}")]
    ScaleMismatch {
        tensor: String,
        expected: usize,
        found: usize,
    },
    /// A layer this crate cannot quantize (e.g. a weight that is not a 2-d matrix).
    #[error("unsupported layer {name}: {reason}")]
    UnsupportedLayer { name: String, reason: String },
    /// Shapes that do not fit together.
    #[error("shape mismatch in {context}: expected {expected:?}, got {got:?}")]
    Shape {
        context: String,
        expected: Vec<usize>,
        got: Vec<usize>,
    },
    /// NaN (or infinity where none is allowed) in an input.
    #[error("non-finite value in {0}")]
    NonFinite(String),
    /// A configuration value outside its valid range.
    #[error("invalid {name}: {reason}")]
    Invalid { name: &'static str, reason: String },
    /// A quantized checkpoint that is missing a tensor, has the wrong dtype, or is corrupt.
    #[error("bad quantized checkpoint: {0}")]
    Checkpoint(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Nn(#[from] diffusion_nn::NnError),
    #[error(transparent)]
    Solver(#[from] diffusion_solvers::SolverError),
    #[error(transparent)]
    Train(#[from] diffusion_train::TrainError),
    #[error(transparent)]
    Core(#[from] diffusion_core::CoreError),
}

/// `Result` with [`QuantError`].
pub type Result<T> = std::result::Result<T, QuantError>;

pub(crate) fn invalid(name: &'static str, reason: impl Into<String>) -> QuantError {
    QuantError::Invalid {
        name,
        reason: reason.into(),
    }
}
