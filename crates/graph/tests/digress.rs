//! The DiGress-style edge diffusion: structural features against brute force, the edge
//! denoiser's gradients against finite differences, training and sampling plumbing.

mod common;

use diffusion_core::Rng;
use diffusion_graph::digress::{
    self, DigressConfig, EdgeDenoiser, edge_cross_entropy, edge_marginal, erdos_renyi_like, node_features,
};
use diffusion_graph::{Graph, io};
use diffusion_nn::Parameters;

/// 4-cycles through `u` by enumerating ordered walks u-a-b-c-u over distinct nodes (each
/// cycle is seen in two directions).
fn brute_c4(g: &Graph, u: usize) -> f64 {
    let n = g.n();
    let mut count = 0;
    for a in 0..n {
        for b in 0..n {
            for c in 0..n {
                let distinct = [u, a, b, c]
                    .iter()
                    .collect::<std::collections::BTreeSet<_>>()
                    .len()
                    == 4;
                if distinct && g.has_edge(u, a) && g.has_edge(a, b) && g.has_edge(b, c) && g.has_edge(c, u) {
                    count += 1;
                }
            }
        }
    }
    count as f64 / 2.0
}

#[test]
fn cycle_features_equal_brute_force() {
    let g = io::read_named_graph(common::data("real_networkx.json"), "florentine_families").unwrap();
    let tri = diffusion_graph::metrics::stats::triangles(&g);
    let x = node_features(&g, 0.5, 20);
    let n = g.n() as f64;
    for u in 0..g.n() {
        assert!((x[[u, 0]] - g.degree(u) as f64 / n).abs() < 1e-15);
        assert!((x[[u, 1]] - tri[u] as f64 / n).abs() < 1e-15);
        assert!((x[[u, 2]] - brute_c4(&g, u) / (n * n)).abs() < 1e-15, "node {u}");
    }
    // K4: 3 four-cycles through every node; one component; eigenvalues 4/3.
    let k4 = Graph::from_fn(4, |_, _| true);
    let x = node_features(&k4, 0.0, 4);
    assert!((x[[0, 2]] - 3.0 / 16.0).abs() < 1e-15);
    assert!((x[[0, 4]] - 4.0 / 3.0).abs() < 1e-12 && (x[[0, 8]] - 0.25).abs() < 1e-15);
}

#[test]
fn edge_denoiser_gradients_match_finite_differences() {
    let cfg = DigressConfig {
        hidden: 5,
        gcn_layers: 2,
        mlp_hidden: 6,
        ..DigressConfig::default()
    };
    let mut model = EdgeDenoiser::new(&cfg, &mut Rng::new(2)).unwrap();
    let g = io::read_named_graph(common::data("real_networkx.json"), "florentine_families").unwrap();
    let x0: Vec<usize> = digress::pairs(g.n())
        .iter()
        .map(|&(u, v)| usize::from((u + v) % 3 == 0))
        .collect();
    let loss = |m: &EdgeDenoiser| edge_cross_entropy(&m.forward(&g, 0.3, 20).unwrap().0, &x0).0;
    model.zero_grad();
    let (logits, cache) = model.forward(&g, 0.3, 20).unwrap();
    let (_, grad) = edge_cross_entropy(&logits, &x0);
    model.backward(&cache, &grad).unwrap();
    let mut grads: Vec<(String, Vec<f64>)> = Vec::new();
    model.visit(&mut |n, p| grads.push((n.to_string(), p.grad.iter().copied().collect())));
    let h = 1e-6;
    let mut checked = 0;
    for (name, grad) in &grads {
        for i in (0..grad.len()).step_by(3) {
            let shifted = |delta: f64| {
                let mut m = model.clone();
                m.visit_mut(&mut |n, p| {
                    if n == name {
                        p.value.as_slice_mut().unwrap()[i] += delta;
                    }
                });
                loss(&m)
            };
            let fd = (shifted(h) - shifted(-h)) / (2.0 * h);
            assert!(
                (fd - grad[i]).abs() < 1e-7 * (1.0 + fd.abs()),
                "{name}[{i}]: {} vs {fd}",
                grad[i]
            );
            checked += 1;
        }
    }
    assert!(checked > 40, "{checked}");
    // The loss itself: -log sigmoid(+-l) by hand.
    let (l, g) = edge_cross_entropy(&[0.0, 2.0], &[1, 0]);
    let want = (2f64.ln() + (1.0 + 2f64.exp()).ln()) / 2.0;
    assert!((l - want).abs() < 1e-15);
    assert!((g[0] + 0.25).abs() < 1e-15 && (g[1] - 0.5 / (1.0 + (-2f64).exp())).abs() < 1e-15);
}

#[test]
fn training_and_sampling_give_simple_graphs_of_training_sizes() {
    let all = io::read_dataset(common::data("synthetic_benchmarks.json"), "community_small").unwrap();
    let train = &all[20..40];
    let m = edge_marginal(train).unwrap();
    let density = train.iter().map(Graph::m).sum::<usize>() as f64
        / train.iter().map(|g| g.n() * (g.n() - 1) / 2).sum::<usize>() as f64;
    assert!((m[1] - density).abs() < 1e-15 && (m[0] + m[1] - 1.0).abs() < 1e-15);
    let cfg = DigressConfig {
        steps: 10,
        hidden: 8,
        mlp_hidden: 8,
        train_steps: 30,
        batch: 2,
        ..DigressConfig::default()
    };
    let mut losses = Vec::new();
    let model = digress::train(train, &cfg, 0, |_, l| losses.push(l)).unwrap();
    assert_eq!(losses.len(), 30);
    assert!(losses.iter().all(|l| l.is_finite()));
    let sizes: Vec<usize> = train.iter().map(Graph::n).collect();
    let samples = model.sample(5, 1).unwrap();
    assert_eq!(
        samples,
        model.sample(5, 1).unwrap(),
        "sampling is a function of the seed"
    );
    for g in &samples {
        assert!(sizes.contains(&g.n()));
    }
    let er = erdos_renyi_like(train, 50, 0).unwrap();
    let er_density = er.iter().map(Graph::m).sum::<usize>() as f64
        / er.iter().map(|g| g.n() * (g.n() - 1) / 2).sum::<usize>() as f64;
    assert!((er_density - density).abs() < 0.05, "{er_density} vs {density}");
    assert!(digress::train(&[], &cfg, 0, |_, _| {}).is_err());
    assert!(digress::train(&[Graph::empty(0)], &cfg, 0, |_, _| {}).is_err());
}
