//! Undirected simple graphs with optional node types.

use crate::error::{GraphError, Result};

/// An undirected simple graph on nodes `0..n`: no self-loops, no repeated edges.
/// Adjacency lists are kept sorted, so equal graphs compare equal and edge order is
/// canonical (`(u, v)` with `u < v`, lexicographic).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Graph {
    adj: Vec<Vec<usize>>,
    edge_count: usize,
    node_types: Option<Vec<usize>>,
}

impl Graph {
    /// `n` nodes and no edges.
    pub fn empty(n: usize) -> Self {
        Self {
            adj: vec![Vec::new(); n],
            edge_count: 0,
            node_types: None,
        }
    }

    /// A simple graph from an edge list; each undirected edge must appear once (in either
    /// orientation). Self-loops, repeats and indices `>= n` are errors.
    pub fn from_edges(n: usize, edges: &[(usize, usize)]) -> Result<Self> {
        let mut g = Self::empty(n);
        for &(u, v) in edges {
            g.add_edge(u, v)?;
        }
        Ok(g)
    }

    /// Like [`Graph::from_edges`], then [`Graph::with_node_types`].
    pub fn from_typed_edges(n: usize, edges: &[(usize, usize)], types: Vec<usize>) -> Result<Self> {
        Self::from_edges(n, edges)?.with_node_types(types)
    }

    /// A graph from a symmetric 0/1 adjacency predicate over `u < v`.
    pub fn from_fn(n: usize, mut edge: impl FnMut(usize, usize) -> bool) -> Self {
        let mut adj = vec![Vec::new(); n];
        let mut m = 0;
        for u in 0..n {
            for v in u + 1..n {
                if edge(u, v) {
                    adj[u].push(v);
                    adj[v].push(u);
                    m += 1;
                }
            }
        }
        for a in &mut adj {
            a.sort_unstable();
        }
        Self {
            adj,
            edge_count: m,
            node_types: None,
        }
    }

    /// Attaches one type per node (any `usize` labels).
    pub fn with_node_types(mut self, types: Vec<usize>) -> Result<Self> {
        if types.len() != self.n() {
            return Err(GraphError::Length {
                what: "node types".into(),
                expected: self.n(),
                got: types.len(),
            });
        }
        self.node_types = Some(types);
        Ok(self)
    }

    /// Adds the undirected edge `{u, v}`.
    pub fn add_edge(&mut self, u: usize, v: usize) -> Result<()> {
        let n = self.n();
        for i in [u, v] {
            if i >= n {
                return Err(GraphError::NodeOutOfRange { index: i, n });
            }
        }
        if u == v {
            return Err(GraphError::SelfLoop { node: u });
        }
        match self.adj[u].binary_search(&v) {
            Ok(_) => Err(GraphError::DuplicateEdge {
                u: u.min(v),
                v: u.max(v),
            }),
            Err(pos) => {
                self.adj[u].insert(pos, v);
                let pos = self.adj[v].binary_search(&u).unwrap_err();
                self.adj[v].insert(pos, u);
                self.edge_count += 1;
                Ok(())
            }
        }
    }

    /// Number of nodes.
    pub fn n(&self) -> usize {
        self.adj.len()
    }

    /// Number of edges.
    pub fn m(&self) -> usize {
        self.edge_count
    }

    /// Sorted neighbours of `u` (panics if `u >= n`, like slice indexing).
    pub fn neighbors(&self, u: usize) -> &[usize] {
        &self.adj[u]
    }

    /// Degree of `u`.
    pub fn degree(&self, u: usize) -> usize {
        self.adj[u].len()
    }

    /// Whether `{u, v}` is an edge (false for out-of-range indices).
    pub fn has_edge(&self, u: usize, v: usize) -> bool {
        u < self.n() && self.adj[u].binary_search(&v).is_ok()
    }

    /// Edges `(u, v)`, `u < v`, in lexicographic order.
    pub fn edges(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        self.adj
            .iter()
            .enumerate()
            .flat_map(|(u, a)| a.iter().copied().filter(move |&v| v > u).map(move |v| (u, v)))
    }

    /// Node types, when the graph has them.
    pub fn node_types(&self) -> Option<&[usize]> {
        self.node_types.as_deref()
    }

    /// Dense 0/1 adjacency, row-major `n x n`.
    pub fn dense_adjacency(&self) -> Vec<f64> {
        let n = self.n();
        let mut a = vec![0.0; n * n];
        for (u, v) in self.edges() {
            a[u * n + v] = 1.0;
            a[v * n + u] = 1.0;
        }
        a
    }

    /// Fails with [`GraphError::EmptyGraph`] when the graph has no nodes.
    pub fn require_nodes(&self, context: &str) -> Result<()> {
        if self.n() == 0 {
            return Err(GraphError::EmptyGraph {
                context: context.to_string(),
            });
        }
        Ok(())
    }

    /// Whether every node is reachable from node 0 (the empty graph is not connected).
    pub fn is_connected(&self) -> bool {
        if self.n() == 0 {
            return false;
        }
        self.components() == 1
    }

    /// Number of connected components.
    pub fn components(&self) -> usize {
        let n = self.n();
        let mut seen = vec![false; n];
        let mut count = 0;
        let mut stack = Vec::new();
        for s in 0..n {
            if seen[s] {
                continue;
            }
            count += 1;
            seen[s] = true;
            stack.push(s);
            while let Some(u) = stack.pop() {
                for &v in &self.adj[u] {
                    if !seen[v] {
                        seen[v] = true;
                        stack.push(v);
                    }
                }
            }
        }
        count
    }
}
