//! Node orbit counts of the 2-4 node graphlets, numbered as in ORCA (Hočevar & Demšar
//! 2014) and Pržulj's graphlet degree vectors, which the GraphRNN / GRAN / GDSS orbit
//! statistic is built on:
//!
//! | graphlet | orbits |
//! |---|---|
//! | edge | 0 |
//! | path on 3 nodes | 1 end, 2 middle |
//! | triangle | 3 |
//! | path on 4 nodes | 4 end, 5 inner |
//! | star (claw) | 6 leaf, 7 centre |
//! | 4-cycle | 8 |
//! | paw (triangle with a pendant) | 9 pendant, 10 degree-2 triangle nodes, 11 the degree-3 node |
//! | diamond (4-cycle plus a chord) | 12 degree-2 nodes, 13 chord ends |
//! | K4 | 14 |
//!
//! Counts are over *induced* connected subgraphs. Each one is visited exactly once by
//! Wernicke's ESU enumeration, and a node's orbit in a 2-4 node connected graphlet follows
//! from the graphlet's edge count and the node's degree inside it.

use crate::graph::Graph;

/// Number of orbits of 2-4 node graphlets.
pub const ORBITS: usize = 15;

/// The orbit of a node of degree `deg` inside a connected induced subgraph of `size`
/// nodes, `edges` edges and largest degree `max_deg`.
fn orbit_of(size: usize, edges: usize, deg: usize, max_deg: usize) -> usize {
    match (size, edges, deg, max_deg) {
        (2, 1, _, _) => 0,
        (3, 2, 1, _) => 1,
        (3, 2, _, _) => 2,
        (3, 3, _, _) => 3,
        // Three edges on four nodes: a path (degrees 1, 2, 2, 1) or a star (3, 1, 1, 1).
        (4, 3, 1, 2) => 4,
        (4, 3, 2, _) => 5,
        (4, 3, 1, _) => 6,
        (4, 3, 3, _) => 7,
        // Four edges: the 4-cycle (all degree 2) or the paw (3, 2, 2, 1).
        (4, 4, 2, 2) => 8,
        (4, 4, 1, _) => 9,
        (4, 4, 2, _) => 10,
        (4, 4, 3, _) => 11,
        (4, 5, 2, _) => 12,
        (4, 5, 3, _) => 13,
        (4, 6, _, _) => 14,
        _ => unreachable!("connected graphlet ({size} nodes, {edges} edges) with a node of degree {deg}"),
    }
}

/// Adds the orbit counts of the connected induced subgraph `nodes` into `counts`.
fn record(g: &Graph, nodes: &[usize], counts: &mut [[u64; ORBITS]]) {
    let k = nodes.len();
    let mut deg = [0usize; 4];
    let mut edges = 0;
    for i in 0..k {
        for j in i + 1..k {
            if g.has_edge(nodes[i], nodes[j]) {
                deg[i] += 1;
                deg[j] += 1;
                edges += 1;
            }
        }
    }
    let max_deg = deg.iter().copied().max().unwrap_or(0);
    for i in 0..k {
        counts[nodes[i]][orbit_of(k, edges, deg[i], max_deg)] += 1;
    }
}

/// ESU extension: `sub` is connected; `ext` holds candidates `> root` adjacent to `sub`
/// and exclusive to its last added node's neighbourhood.
fn extend(g: &Graph, root: usize, sub: &mut Vec<usize>, ext: Vec<usize>, counts: &mut [[u64; ORBITS]]) {
    record(g, sub, counts);
    if sub.len() == 4 {
        return;
    }
    let mut ext = ext;
    while let Some(w) = ext.pop() {
        let mut next = ext.clone();
        for &u in g.neighbors(w) {
            // u joins when it is new and not adjacent to (nor in) the current subgraph.
            if u > root && !sub.contains(&u) && !next.contains(&u) && !sub.iter().any(|&s| g.has_edge(s, u)) {
                next.push(u);
            }
        }
        sub.push(w);
        extend(g, root, sub, next, counts);
        sub.pop();
    }
}

/// Per-node orbit counts, `counts[u][o]`: how many connected induced 2-4 node subgraphs
/// contain `u` at orbit `o` (ORCA's `node_orbit_counts`, graphlet size 4).
pub fn orbit_counts(g: &Graph) -> Vec<[u64; ORBITS]> {
    let mut counts = vec![[0u64; ORBITS]; g.n()];
    for v in 0..g.n() {
        let ext: Vec<usize> = g.neighbors(v).iter().copied().filter(|&u| u > v).collect();
        let mut sub = vec![v];
        // A lone node is not a graphlet: start recording from the edges.
        let mut ext = ext;
        while let Some(w) = ext.pop() {
            let mut next = ext.clone();
            for &u in g.neighbors(w) {
                if u > v && !next.contains(&u) && !g.has_edge(v, u) && u != v {
                    next.push(u);
                }
            }
            sub.push(w);
            extend(g, v, &mut sub, next, &mut counts);
            sub.pop();
        }
    }
    counts
}

/// The per-graph orbit statistic of GraphRNN's `orbit_stats_all`: orbit counts summed over
/// nodes, divided by the number of nodes (0 for an empty graph).
pub fn orbit_statistic(g: &Graph) -> Vec<f64> {
    let counts = orbit_counts(g);
    let mut s = vec![0.0; ORBITS];
    for c in &counts {
        for o in 0..ORBITS {
            s[o] += c[o] as f64;
        }
    }
    if g.n() > 0 {
        for v in &mut s {
            *v /= g.n() as f64;
        }
    }
    s
}
