use thiserror::Error;

/// Errors of the discrete diffusion crate.
#[derive(Debug, Error, Clone, PartialEq)]
#[non_exhaustive]
pub enum DiscreteError {
    /// A schedule or distribution argument is outside its valid range.
    #[error("invalid {name}: {reason}")]
    InvalidArgument { name: &'static str, reason: String },
    /// Two slices that must agree in length do not.
    #[error("length mismatch in {context}: expected {expected}, got {got}")]
    LengthMismatch {
        context: &'static str,
        expected: usize,
        got: usize,
    },
    /// A category index is not below the number of categories.
    #[error("category {index} out of range for {k} categories in {context}")]
    CategoryOutOfRange {
        context: &'static str,
        index: usize,
        k: usize,
    },
    /// A clean state `x0` is the mask category, which the data never takes.
    #[error("x0 is the mask category at cell {cell}")]
    MaskedX0 { cell: usize },
    /// A timestep outside `1..=T` (or `0..=T` where stated).
    #[error("timestep {t} outside 1..={steps}")]
    Timestep { t: usize, steps: usize },
    /// `x_t` cannot arise from `x_0` in `t` steps, so the posterior is undefined.
    #[error("x_t = {xt} is impossible from x_0 = {x0} after {t} steps")]
    Impossible { t: usize, xt: usize, x0: usize },
    /// A predicted distribution gives no mass to any `x_0` that could have produced `x_t`.
    #[error("the predicted x_0 distribution has no mass on states compatible with x_t = {xt}")]
    NoCompatibleMass { xt: usize },
    /// NaN or infinity in an input.
    #[error("non-finite value in {0}")]
    NonFinite(&'static str),
}

/// Result with [`DiscreteError`].
pub type Result<T> = std::result::Result<T, DiscreteError>;
