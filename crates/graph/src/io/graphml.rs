//! GraphML (<http://graphml.graphdrawing.org>): undirected graphs, node ids `"0".."n-1"`,
//! node types as the integer node attribute `type`. `networkx.read_graphml(path,
//! node_type=int)` opens what we write. Reading accepts any node ids (numbered in order of
//! appearance), several `<graph>` elements per file, and rejects directed graphs,
//! unknown node ids, self-loops, repeated edges and broken XML with a typed error.

use std::collections::HashMap;
use std::path::Path;

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};

use crate::error::{GraphError, Result};
use crate::graph::Graph;

const FORMAT: &str = "GraphML";
/// The attribute name node types are stored under.
pub const TYPE_ATTR: &str = "type";

/// GraphML text for `graphs` (one `<graph>` element each; networkx's `read_graphml`
/// returns the first, `GraphMLReader()(path=...)` iterates all).
pub fn to_graphml(graphs: &[Graph]) -> String {
    let mut s = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<graphml xmlns=\"http://graphml.graphdrawing.org/xmlns\" \
         xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" \
         xsi:schemaLocation=\"http://graphml.graphdrawing.org/xmlns http://graphml.graphdrawing.org/xmlns/1.0/graphml.xsd\">\n",
    );
    if graphs.iter().any(|g| g.node_types().is_some()) {
        s.push_str(&format!(
            "  <key id=\"d0\" for=\"node\" attr.name=\"{TYPE_ATTR}\" attr.type=\"long\"/>\n"
        ));
    }
    for (i, g) in graphs.iter().enumerate() {
        s.push_str(&format!("  <graph id=\"G{i}\" edgedefault=\"undirected\">\n"));
        for u in 0..g.n() {
            match g.node_types() {
                Some(t) => s.push_str(&format!(
                    "    <node id=\"{u}\"><data key=\"d0\">{}</data></node>\n",
                    t[u]
                )),
                None => s.push_str(&format!("    <node id=\"{u}\"/>\n")),
            }
        }
        for (u, v) in g.edges() {
            s.push_str(&format!("    <edge source=\"{u}\" target=\"{v}\"/>\n"));
        }
        s.push_str("  </graph>\n");
    }
    s.push_str("</graphml>\n");
    s
}

/// Writes `graphs` to one GraphML file, atomically.
pub fn write_graphml(path: impl AsRef<Path>, graphs: &[Graph]) -> Result<()> {
    super::write_text(path.as_ref(), &to_graphml(graphs))
}

/// Reads every graph of a GraphML file.
pub fn read_graphml(path: impl AsRef<Path>) -> Result<Vec<Graph>> {
    let path = path.as_ref();
    parse(&super::read_text(path)?, Some(path))
}

/// Parses GraphML text (see the module docs).
pub fn parse_graphml(text: &str) -> Result<Vec<Graph>> {
    parse(text, None)
}

/// A graph being read: node ids in order, edges by index, types by node.
#[derive(Default)]
struct Partial {
    ids: HashMap<String, usize>,
    types: Vec<Option<usize>>,
    edges: Vec<(usize, usize)>,
}

fn attr(e: &BytesStart, name: &[u8], path: Option<&Path>) -> Result<Option<String>> {
    for a in e.attributes() {
        let a = a.map_err(|err| GraphError::malformed(FORMAT, path, err.to_string()))?;
        if a.key.as_ref() == name {
            let v = a
                .unescape_value()
                .map_err(|err| GraphError::malformed(FORMAT, path, err.to_string()))?;
            return Ok(Some(v.into_owned()));
        }
    }
    Ok(None)
}

fn parse(text: &str, path: Option<&Path>) -> Result<Vec<Graph>> {
    let bad = |reason: String| GraphError::malformed(FORMAT, path, reason);
    let mut reader = Reader::from_str(text);
    reader.config_mut().trim_text(true);
    let mut type_key: Option<String> = None;
    let mut graphs = Vec::new();
    let mut current: Option<Partial> = None;
    // (node index, data key) of an open <data> element inside a <node>.
    let mut open_node: Option<usize> = None;
    let mut open_data_key: Option<String> = None;
    let mut saw_root = false;
    let mut depth = 0usize;
    loop {
        let pos = reader.buffer_position();
        let event = reader
            .read_event()
            .map_err(|e| bad(format!("at byte {pos}: {e}")))?;
        let (start, is_empty) = match &event {
            Event::Start(e) => (Some(e.clone()), false),
            Event::Empty(e) => (Some(e.clone()), true),
            _ => (None, false),
        };
        if let Some(e) = start {
            if !is_empty {
                depth += 1;
            }
            match e.local_name().as_ref() {
                b"graphml" => saw_root = true,
                b"key" => {
                    let name = attr(&e, b"attr.name", path)?;
                    let target = attr(&e, b"for", path)?;
                    if name.as_deref() == Some(TYPE_ATTR) && target.as_deref() != Some("edge") {
                        type_key = attr(&e, b"id", path)?;
                    }
                }
                b"graph" => {
                    if current.is_some() {
                        return Err(bad("nested <graph> elements are not supported".into()));
                    }
                    if attr(&e, b"edgedefault", path)?.as_deref() == Some("directed") {
                        return Err(bad(
                            "directed graph (edgedefault=\"directed\"); expected undirected".into(),
                        ));
                    }
                    current = Some(Partial::default());
                }
                b"node" => {
                    let g = current
                        .as_mut()
                        .ok_or_else(|| bad("<node> outside a <graph>".into()))?;
                    let id = attr(&e, b"id", path)?.ok_or_else(|| bad("<node> without an id".into()))?;
                    let index = g.ids.len();
                    if g.ids.insert(id.clone(), index).is_some() {
                        return Err(bad(format!("node id {id:?} declared twice")));
                    }
                    g.types.push(None);
                    if !is_empty {
                        open_node = Some(index);
                    }
                }
                b"edge" => {
                    let g = current
                        .as_mut()
                        .ok_or_else(|| bad("<edge> outside a <graph>".into()))?;
                    if attr(&e, b"directed", path)?.as_deref() == Some("true") {
                        return Err(bad("directed edge in an undirected graph".into()));
                    }
                    let end = |name: &[u8]| -> Result<usize> {
                        let id = attr(&e, name, path)?.ok_or_else(|| {
                            bad(format!("<edge> without {}", String::from_utf8_lossy(name)))
                        })?;
                        g.ids
                            .get(&id)
                            .copied()
                            .ok_or_else(|| bad(format!("edge names unknown node {id:?}")))
                    };
                    let (u, v) = (end(b"source")?, end(b"target")?);
                    g.edges.push((u, v));
                }
                b"data" if open_node.is_some() && !is_empty => {
                    open_data_key = attr(&e, b"key", path)?;
                }
                _ => {}
            }
            continue;
        }
        match event {
            Event::Text(t) => {
                if let (Some(node), Some(key)) = (open_node, open_data_key.as_ref())
                    && type_key.as_ref() == Some(key)
                {
                    let raw = t.decode().map_err(|e| bad(e.to_string()))?;
                    let raw = raw.trim();
                    let value = raw
                        .parse::<usize>()
                        .map_err(|_| bad(format!("node type {raw:?} is not a non-negative integer")))?;
                    current.as_mut().expect("node inside graph").types[node] = Some(value);
                }
            }
            Event::End(e) => {
                depth = depth.saturating_sub(1);
                match e.local_name().as_ref() {
                    b"data" => open_data_key = None,
                    b"node" => open_node = None,
                    b"graph" => {
                        let g = current.take().expect("reader checks tag balance");
                        graphs.push(finish(g, &bad)?);
                    }
                    _ => {}
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if !saw_root {
        return Err(bad("no <graphml> root element".into()));
    }
    if depth != 0 || current.is_some() {
        return Err(bad("truncated: unclosed elements at end of file".into()));
    }
    if graphs.is_empty() {
        return Err(bad("no <graph> element".into()));
    }
    Ok(graphs)
}

fn finish(p: Partial, bad: &dyn Fn(String) -> GraphError) -> Result<Graph> {
    let g = Graph::from_edges(p.ids.len(), &p.edges)?;
    let typed = p.types.iter().filter(|t| t.is_some()).count();
    if typed == 0 {
        return Ok(g);
    }
    if typed != p.types.len() {
        return Err(bad(format!(
            "{typed} of {} nodes have a type; expected all or none",
            p.types.len()
        )));
    }
    g.with_node_types(p.types.into_iter().map(|t| t.expect("all typed")).collect())
}
