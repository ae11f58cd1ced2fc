//! The one error type of this crate.

use std::path::PathBuf;

use thiserror::Error;

/// Everything that can go wrong reading volumes, building operators or reconstructing.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum MedicalError {
    /// A file could not be read or written.
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A NIfTI file that is malformed, truncated or of an unsupported kind.
    #[error("cannot read NIfTI {path}: {reason}")]
    Nifti { path: PathBuf, reason: String },
    /// An `.npy` problem reported by the testbed's reader / writer.
    #[error(transparent)]
    Npy(#[from] diffusion_testbed::TestbedError),
    /// An array whose shape does not match what an operator or function expects.
    #[error("{context}: expected shape {expected}, got {got:?}")]
    Shape {
        context: &'static str,
        expected: String,
        got: Vec<usize>,
    },
    /// An invalid argument (geometry, mask, option) with the reason.
    #[error("invalid {what}: {reason}")]
    Invalid { what: &'static str, reason: String },
    /// NaN or infinity where finite values are required.
    #[error("{context}: {count} non-finite values")]
    NonFinite { context: &'static str, count: usize },
    /// A sampler or model error from diffusion-core / diffusion-solvers.
    #[error(transparent)]
    Solver(#[from] diffusion_solvers::SolverError),
    /// A tensor or model error from diffusion-core.
    #[error(transparent)]
    Core(#[from] diffusion_core::CoreError),
    /// A PNG could not be encoded.
    #[error("cannot write PNG {path}: {reason}")]
    Png { path: PathBuf, reason: String },
}

/// Result with [`MedicalError`].
pub type Result<T, E = MedicalError> = std::result::Result<T, E>;

pub(crate) fn invalid(what: &'static str, reason: impl Into<String>) -> MedicalError {
    MedicalError::Invalid {
        what,
        reason: reason.into(),
    }
}

pub(crate) fn shape(context: &'static str, expected: impl Into<String>, got: &[usize]) -> MedicalError {
    MedicalError::Shape {
        context,
        expected: expected.into(),
        got: got.to_vec(),
    }
}

pub(crate) fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> MedicalError + '_ {
    move |source| MedicalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Fails on NaN or infinity.
pub(crate) fn check_finite<'a, A: num_traits::Float + 'a>(
    context: &'static str,
    values: impl IntoIterator<Item = &'a A>,
) -> Result<()> {
    let count = values.into_iter().filter(|v| !v.is_finite()).count();
    if count == 0 {
        Ok(())
    } else {
        Err(MedicalError::NonFinite { context, count })
    }
}
