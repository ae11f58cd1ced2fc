use thiserror::Error;

/// Errors raised by the core primitives.
#[derive(Debug, Error, Clone, PartialEq)]
#[non_exhaustive]
pub enum CoreError {
    /// Two tensors that must have the same shape do not.
    #[error("shape mismatch in {context}: expected {expected:?}, got {got:?}")]
    ShapeMismatch {
        context: &'static str,
        expected: Vec<usize>,
        got: Vec<usize>,
    },
    /// A model returned NaN or infinity.
    #[error("model output is not finite at timestep {timestep} (sigma {sigma}): {count} non-finite values")]
    NonFiniteModelOutput { timestep: f64, sigma: f64, count: usize },
    /// A parameterization conversion is singular at this noise level.
    #[error(
        "cannot convert {from:?} to {to:?} at alpha = {alpha}, sigma = {sigma}: the conversion is singular"
    )]
    SingularConversion {
        from: crate::Parameterization,
        to: crate::Parameterization,
        alpha: f64,
        sigma: f64,
    },
    /// A scalar argument is outside its valid range.
    #[error("invalid {name}: {reason}")]
    InvalidArgument { name: &'static str, reason: String },
    /// A model failed for a reason of its own.
    #[error("model error: {0}")]
    Model(String),
}

/// Result with [`CoreError`].
pub type Result<T, E = CoreError> = std::result::Result<T, E>;
