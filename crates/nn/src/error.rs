//! The crate's one error type.

use thiserror::Error;

/// Errors raised by layers, models and checkpoint loading.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum NnError {
    /// An input tensor has the wrong shape.
    #[error("{context}: expected shape {expected:?}, got {got:?}")]
    Shape {
        context: String,
        expected: Vec<usize>,
        got: Vec<usize>,
    },
    /// A layer or model configuration is impossible (zero width, heads not dividing the width...).
    #[error("invalid configuration {name}: {reason}")]
    Config { name: &'static str, reason: String },
    /// A non-shape input problem (wrong batch of timesteps, class label out of range...).
    #[error("invalid input {name}: {reason}")]
    Input { name: &'static str, reason: String },
    /// A checkpoint lacks a tensor the model needs.
    #[error("checkpoint is missing tensor {name:?}")]
    MissingTensor { name: String },
    /// A checkpoint tensor has a different shape than the model's parameter.
    #[error("checkpoint tensor {name:?} has shape {got:?}, the model expects {expected:?}")]
    TensorShape {
        name: String,
        expected: Vec<usize>,
        got: Vec<usize>,
    },
    /// A checkpoint tensor has an element type we cannot convert.
    #[error("checkpoint tensor {name:?} has dtype {dtype}; only F32 and F64 are supported")]
    TensorDtype { name: String, dtype: String },
    /// The safetensors container itself is unreadable (truncated, bad header).
    #[error("cannot parse safetensors data{}: {reason}", path.as_deref().map(|p| format!(" in {p}")).unwrap_or_default())]
    Safetensors { path: Option<String>, reason: String },
    /// File system failure.
    #[error("i/o error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Result with [`NnError`].
pub type Result<T, E = NnError> = std::result::Result<T, E>;

/// Checks `got == expected`, naming the tensor in the error.
pub(crate) fn check_shape(context: &str, expected: &[usize], got: &[usize]) -> Result<()> {
    if expected == got {
        Ok(())
    } else {
        Err(NnError::Shape {
            context: context.to_string(),
            expected: expected.to_vec(),
            got: got.to_vec(),
        })
    }
}

impl From<NnError> for diffusion_core::CoreError {
    fn from(e: NnError) -> Self {
        diffusion_core::CoreError::Model(e.to_string())
    }
}
