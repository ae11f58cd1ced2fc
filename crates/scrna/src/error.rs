//! The crate's one error type.

use std::path::PathBuf;

/// Everything that can go wrong reading, checking, preprocessing, scoring or modelling cells.
#[derive(Debug, thiserror::Error)]
pub enum ScrnaError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file whose contents do not parse (bad header, bad number, wrong field count).
    #[error("{path}: line {line}: {reason}")]
    Parse {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    /// A file that ends before the data its header declares.
    #[error("{path}: truncated: {reason}")]
    Truncated { path: PathBuf, reason: String },
    #[error("negative count {value} at cell {cell}, gene {gene}")]
    NegativeCount { cell: usize, gene: usize, value: f64 },
    #[error("non-integer count {value} at cell {cell}, gene {gene} (counts must be whole numbers)")]
    NonIntegerCount { cell: usize, gene: usize, value: f64 },
    #[error("{what}: non-finite value {value} at cell {cell}, gene {gene}")]
    NonFinite {
        what: &'static str,
        cell: usize,
        gene: usize,
        value: f64,
    },
    #[error("{what}: {got} entries for {expected} {of}")]
    Length {
        what: &'static str,
        of: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("{context}: expected shape {expected:?}, got {got:?}")]
    Shape {
        context: String,
        expected: Vec<usize>,
        got: Vec<usize>,
    },
    #[error("{what}: {reason}")]
    Invalid { what: &'static str, reason: String },
    #[error("unknown {what} {name:?}")]
    Unknown { what: &'static str, name: String },
    #[error(transparent)]
    Npy(#[from] diffusion_testbed::TestbedError),
    #[error(transparent)]
    Nn(#[from] diffusion_nn::NnError),
    #[error(transparent)]
    Train(#[from] diffusion_train::TrainError),
    #[error(transparent)]
    Solver(#[from] diffusion_solvers::SolverError),
    #[error(transparent)]
    Core(#[from] diffusion_core::CoreError),
    #[cfg(feature = "h5ad")]
    #[error("{path}: HDF5: {reason}")]
    Hdf5 { path: PathBuf, reason: String },
}

pub type Result<T> = std::result::Result<T, ScrnaError>;

impl ScrnaError {
    pub(crate) fn invalid(what: &'static str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            what,
            reason: reason.into(),
        }
    }

    pub(crate) fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Self + '_ {
        move |source| Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
