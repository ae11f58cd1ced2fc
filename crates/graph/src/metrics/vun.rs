//! Validity, uniqueness and novelty of generated graphs (DiGress's
//! `eval_fraction_unique_non_isomorphic_valid`), with an exact isomorphism test (VF2,
//! `petgraph`) behind cheap invariants, and planarity (the left-right test of Brandes
//! 2009, `rustworkx-core`).

use petgraph::graph::UnGraph;

use crate::graph::Graph;

fn to_petgraph(g: &Graph) -> UnGraph<usize, ()> {
    let mut p = UnGraph::with_capacity(g.n(), g.m());
    let types = g.node_types();
    for u in 0..g.n() {
        p.add_node(types.map_or(0, |t| t[u]));
    }
    for (u, v) in g.edges() {
        p.add_edge(
            petgraph::graph::NodeIndex::new(u),
            petgraph::graph::NodeIndex::new(v),
            (),
        );
    }
    p
}

/// Invariants equal for isomorphic graphs: node and edge counts, sorted degree sequence,
/// sorted node types.
fn invariants(g: &Graph) -> (usize, usize, Vec<usize>, Vec<usize>) {
    let mut degrees: Vec<usize> = (0..g.n()).map(|u| g.degree(u)).collect();
    degrees.sort_unstable();
    let mut types = g.node_types().map(<[usize]>::to_vec).unwrap_or_default();
    types.sort_unstable();
    (g.n(), g.m(), degrees, types)
}

/// Whether `a` and `b` are isomorphic (node types, when both have them, must match).
pub fn is_isomorphic(a: &Graph, b: &Graph) -> bool {
    if invariants(a) != invariants(b) {
        return false;
    }
    let (pa, pb) = (to_petgraph(a), to_petgraph(b));
    petgraph::algo::is_isomorphic_matching(&pa, &pb, |x, y| x == y, |_, _| true)
}

/// Whether `g` is planar.
pub fn is_planar(g: &Graph) -> bool {
    rustworkx_core::planar::is_planar(&to_petgraph(g))
}

/// DiGress's planar-graph validity: connected and planar.
pub fn is_valid_planar(g: &Graph) -> bool {
    g.is_connected() && is_planar(g)
}

/// Fractions over the generated set, as DiGress reports them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Vun {
    /// Graphs that pass the validity test.
    pub valid: f64,
    /// Graphs not isomorphic to an earlier generated graph.
    pub unique: f64,
    /// Graphs unique and not isomorphic to any training graph.
    pub unique_novel: f64,
    /// Graphs valid, unique and novel (V.U.N.).
    pub vun: f64,
}

/// Validity, uniqueness and novelty of `generated` against `train` (DiGress's order: a
/// graph isomorphic to an earlier one is not unique; a unique graph isomorphic to a
/// training graph is not novel; V.U.N. counts unique, novel, valid graphs).
pub fn vun(generated: &[Graph], train: &[Graph], valid: impl Fn(&Graph) -> bool) -> Vun {
    let total = generated.len().max(1) as f64;
    let mut seen: Vec<&Graph> = Vec::new();
    let (mut valid_count, mut non_unique, mut not_novel, mut vun_count) = (0usize, 0usize, 0usize, 0usize);
    for g in generated {
        let ok = valid(g);
        valid_count += ok as usize;
        if seen.iter().any(|s| is_isomorphic(g, s)) {
            non_unique += 1;
            continue;
        }
        seen.push(g);
        if train.iter().any(|t| is_isomorphic(g, t)) {
            not_novel += 1;
            continue;
        }
        vun_count += ok as usize;
    }
    Vun {
        valid: valid_count as f64 / total,
        unique: 1.0 - non_unique as f64 / total,
        unique_novel: 1.0 - (non_unique + not_novel) as f64 / total,
        vun: vun_count as f64 / total,
    }
}
