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
    /// A safetensors file or buffer (`origin`) lacks a tensor the model needs.
    #[error("tensor `{name}` is missing from {origin}")]
    MissingTensor { name: String, origin: String },
    /// A stored tensor has a different shape than the model's.
    #[error("tensor `{name}` in {origin} has shape {got:?}, but the model expects {expected:?}")]
    TensorShape {
        name: String,
        origin: String,
        expected: Vec<usize>,
        got: Vec<usize>,
    },
    /// A stored tensor is not a float type the crate reads (f64, f32, f16, bf16).
    #[error("tensor `{name}` in {origin} has unsupported dtype {dtype}")]
    TensorDtype {
        name: String,
        origin: String,
        dtype: String,
    },
    /// A strict load found tensors the model does not have.
    #[error("{origin} holds {} tensor(s) the model does not have: {names:?}", names.len())]
    UnexpectedTensors { origin: String, names: Vec<String> },
    /// The safetensors container itself is unreadable (truncated, bad header).
    #[error("cannot read {origin}: {reason} (is the file truncated or corrupt?)")]
    Safetensors { origin: String, reason: String },
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
