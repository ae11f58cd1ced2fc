//! The crate's one error type.

use std::path::PathBuf;

use diffusion_core::CoreError;
use thiserror::Error;

/// Errors raised by the testbed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TestbedError {
    /// A file could not be read or written.
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A JSON document did not parse or did not have the expected fields.
    #[error("malformed JSON in {origin}: {source}")]
    Json {
        origin: String,
        #[source]
        source: serde_json::Error,
    },
    /// A mixture specification is inconsistent (dimensions, weights, tables).
    #[error("invalid specification: {0}")]
    InvalidSpec(String),
    /// A covariance matrix is not symmetric positive definite.
    #[error("covariance of component {component} is not symmetric positive definite: {reason}")]
    NotPositiveDefinite { component: usize, reason: String },
    /// An array has the wrong shape.
    #[error("shape mismatch in {context}: expected {expected}, got {got:?}")]
    ShapeMismatch {
        context: String,
        expected: String,
        got: Vec<usize>,
    },
    /// A scalar or option is outside its valid range.
    #[error("invalid {name}: {reason}")]
    InvalidArgument { name: &'static str, reason: String },
    /// An `.npy`/`.npz` file is malformed, truncated, or holds another dtype.
    #[error("{path}: {reason}")]
    Npy { path: PathBuf, reason: String },
    /// An `.npz` archive has no array of that name.
    #[error("{path}: no array named {name:?}")]
    MissingArray { path: PathBuf, name: String },
    /// A test fixture the repository should carry is absent.
    #[error("fixture {path} is missing (the repository carries it under fixtures/)")]
    MissingFixture { path: PathBuf },
    /// An error from diffusion-core.
    #[error(transparent)]
    Core(#[from] CoreError),
}

/// Result with [`TestbedError`].
pub type Result<T, E = TestbedError> = std::result::Result<T, E>;

impl TestbedError {
    pub(crate) fn invalid(name: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidArgument {
            name,
            reason: reason.into(),
        }
    }

    pub(crate) fn shape(context: impl Into<String>, expected: impl Into<String>, got: &[usize]) -> Self {
        Self::ShapeMismatch {
            context: context.into(),
            expected: expected.into(),
            got: got.to_vec(),
        }
    }

    /// Maps a testbed error onto core's error type (for `Denoiser` implementations).
    pub(crate) fn into_core(self) -> CoreError {
        match self {
            Self::Core(e) => e,
            Self::ShapeMismatch {
                context,
                expected,
                got,
            } => CoreError::InvalidArgument {
                name: "x",
                reason: format!("shape mismatch in {context}: expected {expected}, got {got:?}"),
            },
            Self::InvalidArgument { name, reason } => CoreError::InvalidArgument { name, reason },
            other => CoreError::Model(other.to_string()),
        }
    }
}
