//! Whitespace-separated edge lists, one `u v` pair per line (networkx's
//! `read_edgelist(path, nodetype=int)` reads them; trailing fields such as networkx's
//! `{}` edge data are ignored). A `# nodes: N` comment fixes the node count, so
//! isolated nodes survive a round trip; otherwise it is the largest index plus one.

use std::path::Path;

use crate::error::{GraphError, Result};
use crate::graph::Graph;

const FORMAT: &str = "edge list";

/// Parses an edge list (see the module docs). `n`, when given, overrides the header.
pub fn parse_edgelist(text: &str, n: Option<usize>) -> Result<Graph> {
    parse(text, n, None)
}

fn parse(text: &str, n: Option<usize>, path: Option<&Path>) -> Result<Graph> {
    let bad =
        |line: usize, reason: String| GraphError::malformed(FORMAT, path, format!("line {line}: {reason}"));
    let mut header_n = None;
    let mut edges = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if let Some(comment) = line.strip_prefix('#') {
            if let Some(v) = comment.trim().strip_prefix("nodes:") {
                let v = v.trim();
                header_n = Some(
                    v.parse::<usize>()
                        .map_err(|_| bad(i + 1, format!("node count {v:?}")))?,
                );
            }
            continue;
        }
        if line.is_empty() {
            continue;
        }
        let mut fields = line.split_whitespace();
        let mut index = || -> Result<usize> {
            let f = fields
                .next()
                .ok_or_else(|| bad(i + 1, "expected two node indices".into()))?;
            f.parse::<usize>()
                .map_err(|_| bad(i + 1, format!("{f:?} is not a node index")))
        };
        let (u, v) = (index()?, index()?);
        edges.push((u, v));
    }
    let n = n
        .or(header_n)
        .unwrap_or_else(|| edges.iter().map(|&(u, v)| u.max(v) + 1).max().unwrap_or(0));
    Graph::from_edges(n, &edges)
}

/// Reads an edge-list file.
pub fn read_edgelist(path: impl AsRef<Path>, n: Option<usize>) -> Result<Graph> {
    let path = path.as_ref();
    parse(&super::read_text(path)?, n, Some(path))
}

/// The edge list of `g` with its `# nodes: N` header.
pub fn to_edgelist(g: &Graph) -> String {
    let mut s = format!("# nodes: {}\n", g.n());
    for (u, v) in g.edges() {
        s.push_str(&format!("{u} {v}\n"));
    }
    s
}

/// Writes `g` as an edge list, atomically.
pub fn write_edgelist(path: impl AsRef<Path>, g: &Graph) -> Result<()> {
    super::write_text(path.as_ref(), &to_edgelist(g))
}
