//! The crate's one error type.

use diffusion_core::CoreError;
use diffusion_schedules::ScheduleError;
use thiserror::Error;

/// Errors raised by inversion, invertible samplers and adjoint gradients.
#[derive(Debug, Error, Clone, PartialEq)]
#[non_exhaustive]
pub enum InversionError {
    /// A method parameter (gamma, p, step count...) is outside its valid range.
    #[error("invalid {name} = {value}: {reason}")]
    InvalidParameter {
        name: &'static str,
        value: f64,
        reason: String,
    },
    /// A noise-level grid is unusable (too short, not monotone, non-finite).
    #[error("invalid step grid: {0}")]
    InvalidGrid(String),
    /// The grid handed to sampling is not the one the latent was inverted on.
    #[error("step grid mismatch: the latent was inverted on {inverted}, sampling asked for {sampling}")]
    GridMismatch { inverted: String, sampling: String },
    /// The latent was inverted with another method parameter (gamma / p) than sampling uses.
    #[error("{name} mismatch: the latent was inverted with {inverted}, sampling asked for {sampling}")]
    ParameterMismatch {
        name: &'static str,
        inverted: f64,
        sampling: f64,
    },
    /// The model returned NaN or infinity during a solver step.
    #[error("model output is not finite at step {step} (timestep {timestep}, sigma {sigma}): {count} values")]
    NonFiniteModelOutput {
        step: usize,
        timestep: f64,
        sigma: f64,
        count: usize,
    },
    /// A configuration key has an unsupported value.
    #[error("unsupported {key}: {reason}")]
    Unsupported { key: &'static str, reason: String },
    /// An error from diffusion-core (shapes, singular conversions, the model itself).
    #[error(transparent)]
    Core(#[from] CoreError),
    /// An error from diffusion-schedules (configs, spacings).
    #[error(transparent)]
    Schedule(#[from] ScheduleError),
}

/// Result with [`InversionError`].
pub type Result<T, E = InversionError> = std::result::Result<T, E>;

pub(crate) fn invalid_param(name: &'static str, value: f64, reason: impl Into<String>) -> InversionError {
    InversionError::InvalidParameter {
        name,
        value,
        reason: reason.into(),
    }
}

/// Attaches the solver step to a core non-finite-output error.
pub(crate) fn at_step(step: usize) -> impl Fn(CoreError) -> InversionError {
    move |e| match e {
        CoreError::NonFiniteModelOutput {
            timestep,
            sigma,
            count,
        } => InversionError::NonFiniteModelOutput {
            step,
            timestep,
            sigma,
            count,
        },
        other => InversionError::Core(other),
    }
}
