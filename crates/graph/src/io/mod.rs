//! Reading and writing graphs: plain edge lists, the JSON of the shared graph data
//! sets, and GraphML (which networkx, igraph, Gephi and others read).

pub mod edgelist;
pub mod graphml;
pub mod json;

use std::path::Path;

use crate::error::{GraphError, Result};

pub use edgelist::{parse_edgelist, read_edgelist, to_edgelist, write_edgelist};
pub use graphml::{parse_graphml, read_graphml, to_graphml, write_graphml};
pub use json::{GraphRecord, read_dataset, read_graph_list, read_named_graph, write_graph_list};

/// Reads a whole text file, naming it in the error.
pub(crate) fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| GraphError::io(path, e))
}

/// Writes atomically (temporary sibling + rename), so readers never see half a file.
pub(crate) fn write_text(path: &Path, text: &str) -> Result<()> {
    diffusion_train::io::write_atomic(path, text.as_bytes()).map_err(|e| match e {
        diffusion_train::TrainError::Io { source, .. } => GraphError::io(path, source),
        other => GraphError::Train(other),
    })
}
