//! The crate's one error type.

use thiserror::Error;

/// Errors of graph construction, file I/O, metrics and models.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum GraphError {
    /// An edge `(u, u)` in a simple graph.
    #[error("self-loop at node {node}")]
    SelfLoop { node: usize },
    /// The same undirected edge twice.
    #[error("duplicate edge ({u}, {v})")]
    DuplicateEdge { u: usize, v: usize },
    /// A node index outside `0..n`.
    #[error("node index {index} out of range for a graph of {n} nodes")]
    NodeOutOfRange { index: usize, n: usize },
    /// A graph with no nodes where one is needed.
    #[error("empty graph: {context}")]
    EmptyGraph { context: String },
    /// Node types given for a different number of nodes.
    #[error("{what}: expected {expected} entries, got {got}")]
    Length {
        what: String,
        expected: usize,
        got: usize,
    },
    /// A file whose contents do not parse.
    #[error("malformed {format} file{}: {reason}", path.as_deref().map(|p| format!(" {p}")).unwrap_or_default())]
    Malformed {
        format: &'static str,
        path: Option<String>,
        reason: String,
    },
    /// A key that names nothing known (a data set, a statistic).
    #[error("unknown {what} {name:?}")]
    Unknown { what: &'static str, name: String },
    /// An argument outside its domain (a negative sigma, NaN features, zero steps).
    #[error("invalid {name}: {reason}")]
    Invalid { name: &'static str, reason: String },
    /// Shape mismatch of arrays.
    #[error("{context}: expected shape {expected:?}, got {got:?}")]
    Shape {
        context: String,
        expected: Vec<usize>,
        got: Vec<usize>,
    },
    /// File system failure.
    #[error("i/o error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// Errors from the network layers.
    #[error(transparent)]
    Nn(#[from] diffusion_nn::NnError),
    /// Errors from the categorical diffusion.
    #[error(transparent)]
    Discrete(#[from] diffusion_discrete::DiscreteError),
    /// Errors from the optimizer.
    #[error(transparent)]
    Train(#[from] diffusion_train::TrainError),
}

/// Result with [`GraphError`].
pub type Result<T, E = GraphError> = std::result::Result<T, E>;

impl GraphError {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.display().to_string(),
            source,
        }
    }

    pub(crate) fn malformed(
        format: &'static str,
        path: Option<&std::path::Path>,
        reason: impl Into<String>,
    ) -> Self {
        Self::Malformed {
            format,
            path: path.map(|p| p.display().to_string()),
            reason: reason.into(),
        }
    }

    pub(crate) fn invalid(name: &'static str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            name,
            reason: reason.into(),
        }
    }
}
