//! Degree and clustering statistics (networkx's definitions).

use crate::graph::Graph;

/// `networkx.degree_histogram`: entry `d` counts the nodes of degree `d`, up to the
/// largest degree.
pub fn degree_histogram(g: &Graph) -> Vec<f64> {
    let max = (0..g.n()).map(|u| g.degree(u)).max().unwrap_or(0);
    let mut h = vec![0.0; if g.n() == 0 { 0 } else { max + 1 }];
    for u in 0..g.n() {
        h[g.degree(u)] += 1.0;
    }
    h
}

/// Triangles through each node.
pub fn triangles(g: &Graph) -> Vec<usize> {
    (0..g.n())
        .map(|u| {
            let nu = g.neighbors(u);
            let mut t = 0;
            for (i, &a) in nu.iter().enumerate() {
                for &b in &nu[i + 1..] {
                    if g.has_edge(a, b) {
                        t += 1;
                    }
                }
            }
            t
        })
        .collect()
}

/// Local clustering coefficients, `2 T(u) / (d (d - 1))`, 0 below degree 2
/// (`networkx.clustering`).
pub fn clustering(g: &Graph) -> Vec<f64> {
    triangles(g)
        .into_iter()
        .enumerate()
        .map(|(u, t)| {
            let d = g.degree(u);
            if d < 2 {
                0.0
            } else {
                2.0 * t as f64 / (d * (d - 1)) as f64
            }
        })
        .collect()
}

/// The clustering histogram of GraphRNN's `clustering_stats`: `bins` equal bins on [0, 1].
pub fn clustering_histogram(g: &Graph, bins: usize) -> Vec<f64> {
    super::histogram(&clustering(g), bins, 0.0, 1.0)
}
