//! The JSON of the shared graph data (`shared/data/graphs`): each graph is
//! `{"n": N, "edges": [[u, v], ...]}` with 0-based `u < v`, optionally with per-node
//! labels (`block` in the synthetic sets, `node_types` in files we write), which become
//! node types. A file is either a list holder `{"graphs": [...]}` (the Graph Atlas),
//! a map of named data sets each holding `graphs` (the synthetic benchmarks), or a map of
//! named single graphs (the real networkx graphs).

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{GraphError, Result};
use crate::graph::Graph;

const FORMAT: &str = "graph JSON";

/// One graph as stored in JSON.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct GraphRecord {
    pub n: usize,
    pub edges: Vec<[usize; 2]>,
    /// Community / block labels of the synthetic sets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block: Option<Vec<usize>>,
    /// Node types (what we write).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_types: Option<Vec<usize>>,
}

impl GraphRecord {
    /// Validates and builds the graph (node types from `node_types`, else `block`).
    pub fn to_graph(&self) -> Result<Graph> {
        let edges: Vec<(usize, usize)> = self.edges.iter().map(|e| (e[0], e[1])).collect();
        let g = Graph::from_edges(self.n, &edges)?;
        match self.node_types.clone().or_else(|| self.block.clone()) {
            Some(t) => g.with_node_types(t),
            None => Ok(g),
        }
    }

    /// The record of `g`.
    pub fn of(g: &Graph) -> Self {
        Self {
            n: g.n(),
            edges: g.edges().map(|(u, v)| [u, v]).collect(),
            block: None,
            node_types: g.node_types().map(<[usize]>::to_vec),
        }
    }
}

fn load(path: &Path) -> Result<Value> {
    let text = super::read_text(path)?;
    serde_json::from_str(&text).map_err(|e| GraphError::malformed(FORMAT, Some(path), e.to_string()))
}

fn graphs_of(v: &Value, path: &Path, what: &str) -> Result<Vec<Graph>> {
    let list = v
        .get("graphs")
        .ok_or_else(|| GraphError::malformed(FORMAT, Some(path), format!("{what} has no \"graphs\" list")))?;
    let records: Vec<GraphRecord> = serde_json::from_value(list.clone())
        .map_err(|e| GraphError::malformed(FORMAT, Some(path), format!("{what}: {e}")))?;
    records.iter().map(GraphRecord::to_graph).collect()
}

/// All graphs of a `{"graphs": [...]}` file (the Graph Atlas, or what
/// [`write_graph_list`] wrote).
pub fn read_graph_list(path: impl AsRef<Path>) -> Result<Vec<Graph>> {
    let path = path.as_ref();
    graphs_of(&load(path)?, path, "file")
}

/// The graphs of data set `name` in a file of named sets (`community_small`, `sbm`,
/// `planar` in `synthetic_benchmarks.json`).
pub fn read_dataset(path: impl AsRef<Path>, name: &str) -> Result<Vec<Graph>> {
    let path = path.as_ref();
    let v = load(path)?;
    let set = v.get(name).ok_or_else(|| GraphError::Unknown {
        what: "data set",
        name: name.to_string(),
    })?;
    graphs_of(set, path, name)
}

/// The single graph `name` of a file of named graphs (`karate_club`, ... in
/// `real_networkx.json`).
pub fn read_named_graph(path: impl AsRef<Path>, name: &str) -> Result<Graph> {
    let path = path.as_ref();
    let v = load(path)?;
    let g = v.get(name).ok_or_else(|| GraphError::Unknown {
        what: "graph",
        name: name.to_string(),
    })?;
    let rec: GraphRecord = serde_json::from_value(g.clone())
        .map_err(|e| GraphError::malformed(FORMAT, Some(path), format!("{name}: {e}")))?;
    rec.to_graph()
}

/// Writes `{"graphs": [...]}`, atomically.
pub fn write_graph_list(path: impl AsRef<Path>, graphs: &[Graph]) -> Result<()> {
    let records: Vec<GraphRecord> = graphs.iter().map(GraphRecord::of).collect();
    let text = serde_json::to_string(&serde_json::json!({ "graphs": records }))
        .map_err(|e| GraphError::invalid("graph list", e.to_string()))?;
    super::write_text(path.as_ref(), &text)
}
