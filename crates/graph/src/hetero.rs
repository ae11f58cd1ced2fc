//! A heterogeneous graph generated with known classes, for DiffGraph-style node
//! classification: a sparse target view, a denser but noisier auxiliary view, and a
//! meta-path view (nodes that share an item: `node - item - node`), over the same nodes,
//! with weakly informative node features.

use diffusion_core::Rng;
use ndarray::Array2;

use crate::error::{GraphError, Result};
use crate::graph::Graph;

/// Generator settings. Homophily is the expected fraction of a node's edges that stay in
/// its class (`1 / classes` is no signal).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HeteroConfig {
    pub nodes: usize,
    pub classes: usize,
    pub features: usize,
    /// Feature signal: class means are `signal * N(0, I)`, features add `N(0, I)`.
    pub signal: f64,
    pub target_degree: f64,
    pub target_homophily: f64,
    pub aux_degree: f64,
    pub aux_homophily: f64,
    /// Items per class of the meta-path view, items per node, and the probability that
    /// a node's item comes from its own class.
    pub items_per_class: usize,
    pub items_per_node: usize,
    pub item_homophily: f64,
}

impl Default for HeteroConfig {
    fn default() -> Self {
        Self {
            nodes: 400,
            classes: 4,
            features: 16,
            signal: 0.35,
            target_degree: 3.0,
            target_homophily: 0.55,
            aux_degree: 8.0,
            aux_homophily: 0.45,
            items_per_class: 10,
            items_per_node: 2,
            item_homophily: 0.6,
        }
    }
}

/// The generated graph.
#[derive(Clone, Debug)]
pub struct HeteroGraph {
    pub target: Graph,
    pub auxiliary: Graph,
    pub metapath: Graph,
    pub features: Array2<f64>,
    pub labels: Vec<usize>,
    pub classes: usize,
}

impl HeteroGraph {
    /// Fraction of edges joining nodes of the same class.
    pub fn homophily(&self, g: &Graph) -> f64 {
        let same = g
            .edges()
            .filter(|&(u, v)| self.labels[u] == self.labels[v])
            .count();
        same as f64 / g.m().max(1) as f64
    }
}

/// A planted-partition graph with the given expected degree and homophily.
fn planted(labels: &[usize], classes: usize, degree: f64, homophily: f64, rng: &mut Rng) -> Graph {
    let n = labels.len() as f64;
    let per = n / classes as f64;
    let p_in = (homophily * degree / (per - 1.0)).min(1.0);
    let p_out = ((1.0 - homophily) * degree / (n - per)).min(1.0);
    Graph::from_fn(labels.len(), |u, v| {
        let p = if labels[u] == labels[v] { p_in } else { p_out };
        rng.uniform() < p
    })
}

/// Generates the three views, features and labels from `seed`.
pub fn generate(cfg: &HeteroConfig, seed: u64) -> Result<HeteroGraph> {
    if cfg.classes < 2 || cfg.nodes < 2 * cfg.classes || cfg.features == 0 || cfg.items_per_class == 0 {
        return Err(GraphError::invalid("HeteroConfig", format!("{cfg:?}")));
    }
    for (name, h) in [
        ("target_homophily", cfg.target_homophily),
        ("aux_homophily", cfg.aux_homophily),
        ("item_homophily", cfg.item_homophily),
    ] {
        if !(0.0..=1.0).contains(&h) {
            return Err(GraphError::invalid(name, format!("{h} is not a probability")));
        }
    }
    let mut rng = Rng::new(seed);
    // Balanced classes in a random order.
    let mut labels: Vec<usize> = (0..cfg.nodes).map(|i| i % cfg.classes).collect();
    for i in (1..labels.len()).rev() {
        let j = (rng.uniform() * (i + 1) as f64) as usize;
        labels.swap(i, j.min(i));
    }
    let means = Array2::from_shape_fn((cfg.classes, cfg.features), |_| cfg.signal * rng.normal());
    let features = Array2::from_shape_fn((cfg.nodes, cfg.features), |(i, j)| {
        means[[labels[i], j]] + rng.normal()
    });
    let target = planted(
        &labels,
        cfg.classes,
        cfg.target_degree,
        cfg.target_homophily,
        &mut rng,
    );
    let auxiliary = planted(&labels, cfg.classes, cfg.aux_degree, cfg.aux_homophily, &mut rng);
    let items = cfg.items_per_class * cfg.classes;
    let mut holders: Vec<Vec<usize>> = vec![Vec::new(); items];
    for (u, &c) in labels.iter().enumerate() {
        for _ in 0..cfg.items_per_node {
            let class = if rng.uniform() < cfg.item_homophily {
                c
            } else {
                ((rng.uniform() * cfg.classes as f64) as usize).min(cfg.classes - 1)
            };
            let k = ((rng.uniform() * cfg.items_per_class as f64) as usize).min(cfg.items_per_class - 1);
            holders[class * cfg.items_per_class + k].push(u);
        }
    }
    let mut pairs = std::collections::BTreeSet::new();
    for h in &holders {
        for (i, &u) in h.iter().enumerate() {
            for &v in &h[i + 1..] {
                if u != v {
                    pairs.insert((u.min(v), u.max(v)));
                }
            }
        }
    }
    let metapath = Graph::from_edges(cfg.nodes, &pairs.into_iter().collect::<Vec<_>>())?;
    Ok(HeteroGraph {
        target,
        auxiliary,
        metapath,
        features,
        labels,
        classes: cfg.classes,
    })
}

/// A seeded split of `0..n` into `(train, test)` with `round(n * train_fraction)`
/// training nodes.
pub fn split(n: usize, train_fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut idx: Vec<usize> = (0..n).collect();
    let mut rng = Rng::with_stream(seed, 1);
    for i in (1..n).rev() {
        let j = ((rng.uniform() * (i + 1) as f64) as usize).min(i);
        idx.swap(i, j);
    }
    let k = ((n as f64) * train_fraction).round() as usize;
    let test = idx.split_off(k.min(n));
    (idx, test)
}
