//! DiffGraph: the latent schedule against closed forms, the model's hand-written
//! gradients against finite differences, and node classification on a generated graph.

use diffusion_core::Rng;
use diffusion_graph::classify::{cross_entropy, scores};
use diffusion_graph::diffgraph::{
    DiffGraph, DiffGraphConfig, LatentSchedule, Views, compare, train_diffgraph,
};
use diffusion_graph::hetero::{HeteroConfig, generate, split};
use diffusion_nn::Parameters;
use ndarray::{Array2, array};

#[test]
fn posterior_mean_is_the_gaussian_product() {
    let s = LatentSchedule::new(1.0, 0.05, 0.5, 10, false).unwrap();
    for t in 1..10 {
        let (ab, ab_prev, beta) = (s.alphas_cumprod[t], s.alphas_cumprod[t - 1], s.betas[t]);
        // Prior x_{t-1} ~ N(sqrt(ab_prev) x0, 1 - ab_prev); likelihood x_t ~ N(sqrt(1-beta) x_{t-1}, beta).
        let (x0, xt) = (0.7, -1.3);
        let precision = 1.0 / (1.0 - ab_prev) + (1.0 - beta) / beta;
        let mean = (ab_prev.sqrt() * x0 / (1.0 - ab_prev) + (1.0 - beta).sqrt() * xt / beta) / precision;
        let (c1, c2) = s.posterior_mean_coefficients(t);
        assert!((c1 * x0 + c2 * xt - mean).abs() < 1e-12, "t = {t}");
        // abar is the product of (1 - beta).
        assert!((ab - ab_prev * (1.0 - beta)).abs() < 1e-15);
        assert!((s.loss_weight(t) - (ab_prev / (1.0 - ab_prev) - ab / (1.0 - ab))).abs() < 1e-12);
    }
    assert_eq!(s.loss_weight(0), 1.0);
    // 1 - abar is linear in t before beta_fixed: 0.05, 0.1, ..., 0.5.
    for t in 0..10 {
        assert!((1.0 - s.alphas_cumprod[t] - (0.05 + 0.05 * t as f64)).abs() < 1e-12);
    }
    assert!(LatentSchedule::new(1.0, 0.5, 0.1, 10, false).is_err());
    assert!(LatentSchedule::new(1.0, 0.1, 0.5, 0, false).is_err());
    assert_eq!(
        LatentSchedule::new(1.0, 0.05, 0.5, 10, true).unwrap().betas[0],
        1e-4
    );
}

#[test]
fn reverse_pass_with_the_true_x0_lands_on_it() {
    // The last step has c1 = 1, c2 = 0, so a perfect x0 predictor ends exactly at x0;
    // with a predictor returning x0 every intermediate is a mix of x0 and the start.
    let s = LatentSchedule::new(1.0, 0.05, 0.5, 8, true).unwrap();
    let x0 = array![[1.0, -2.0], [0.5, 3.0]];
    let start = array![[9.0, 9.0], [-9.0, 0.0]];
    let mut calls = Vec::new();
    let out = s
        .reverse(&start, |_, t| {
            calls.push(t);
            Ok(x0.clone())
        })
        .unwrap();
    assert_eq!(calls, (0..8).rev().collect::<Vec<_>>());
    for (a, b) in out.iter().zip(x0.iter()) {
        assert!((a - b).abs() < 1e-12);
    }
}

#[test]
fn diffgraph_gradients_match_finite_differences() {
    let hcfg = HeteroConfig {
        nodes: 24,
        classes: 3,
        features: 4,
        items_per_class: 2,
        ..HeteroConfig::default()
    };
    let g = generate(&hcfg, 5).unwrap();
    let views = Views::of(&g);
    let cfg = DiffGraphConfig {
        dim: 6,
        denoiser_hidden: 8,
        temb: 4,
        steps: 5,
        ..DiffGraphConfig::default()
    };
    let train: Vec<usize> = (0..12).collect();
    let weight = 0.7;
    for sum_input in [false, true] {
        let mut model =
            DiffGraph::new(4, 3, &DiffGraphConfig { sum_input, ..cfg }, &mut Rng::new(1)).unwrap();
        let rng = Rng::new(99);
        let loss = |m: &mut DiffGraph| {
            let l = m
                .accumulate_gradients(&views, &g.features, &g.labels, &train, weight, &mut rng.clone())
                .unwrap();
            l.cross_entropy + weight * l.diffusion
        };
        model.zero_grad();
        loss(&mut model);
        let mut grads: Vec<(String, Vec<f64>)> = Vec::new();
        model.visit(&mut |n, p| grads.push((n.to_string(), p.grad.iter().copied().collect())));
        let h = 1e-6;
        let mut checked = 0;
        for (name, grad) in &grads {
            // Every second entry of every tensor keeps the test fast.
            for i in (0..grad.len()).step_by(2) {
                let shifted = |delta: f64| {
                    let mut m = model.clone();
                    m.visit_mut(&mut |n, p| {
                        if n == name {
                            p.value.as_slice_mut().unwrap()[i] += delta;
                        }
                    });
                    loss(&mut m)
                };
                let fd = (shifted(h) - shifted(-h)) / (2.0 * h);
                assert!(
                    (fd - grad[i]).abs() < 1e-6 * (1.0 + fd.abs()),
                    "sum_input {sum_input}: {name}[{i}] analytic {} numeric {fd}",
                    grad[i]
                );
                checked += 1;
            }
        }
        assert!(checked > 80, "{checked}");
    }
}

#[test]
fn scores_by_hand() {
    // 4 nodes, 2 classes: predictions 0, 1, 1, 1 against labels 0, 0, 1, 1.
    let p = array![[0.9, 0.1], [0.4, 0.6], [0.2, 0.8], [0.3, 0.7]];
    let s = scores(&p, &[0, 0, 1, 1], &[0, 1, 2, 3]);
    assert_eq!(s.micro_f1, 0.75);
    // Class 0: tp 1, fp 0, fn 1 -> 2/3; class 1: tp 2, fp 1, fn 0 -> 4/5.
    assert!((s.macro_f1 - (2.0 / 3.0 + 0.8) / 2.0).abs() < 1e-15);
    // Class 0 scores: positives .9 .4, negatives .2 .3 -> 4/4; class 1 the same ordering.
    assert_eq!(s.auc, 1.0);
    let (l, g) = cross_entropy(&Array2::zeros((2, 2)), &[0, 1], &[1]);
    assert!((l - 2f64.ln()).abs() < 1e-15);
    assert_eq!(g, array![[0.0, 0.0], [0.5, -0.5]]);
}

#[test]
fn diffgraph_uses_the_auxiliary_views() {
    // Target view sparse and weakly homophilous, auxiliary views denser: DiffGraph must
    // beat a GCN on the target view alone on held-out nodes.
    let hcfg = HeteroConfig {
        nodes: 300,
        ..HeteroConfig::default()
    };
    let g = generate(&hcfg, 0).unwrap();
    assert!(g.homophily(&g.target) > 0.4 && g.homophily(&g.auxiliary) > 0.35);
    let (train, test) = split(g.labels.len(), 0.2, 0);
    let cfg = DiffGraphConfig::default();
    let (_, losses) = train_diffgraph(&g, &train, &cfg, 0).unwrap();
    let (first, last) = (losses[0], losses[losses.len() - 1]);
    assert!(
        last.cross_entropy < 0.5 * first.cross_entropy,
        "{first:?} -> {last:?}"
    );
    let c = compare(&g, &train, &test, &cfg, 0).unwrap();
    println!("{c:?}");
    assert!(c.diffgraph.micro_f1 > 0.45, "{c:?}");
    assert!(c.diffgraph.micro_f1 > c.gcn_target.micro_f1 + 0.03, "{c:?}");
    assert!(c.diffgraph.auc > c.gcn_target.auc, "{c:?}");
}

#[test]
fn bad_tasks_are_typed_errors() {
    let g = generate(
        &HeteroConfig {
            nodes: 40,
            ..HeteroConfig::default()
        },
        1,
    )
    .unwrap();
    let cfg = DiffGraphConfig {
        epochs: 1,
        ..DiffGraphConfig::default()
    };
    assert!(train_diffgraph(&g, &[], &cfg, 0).is_err());
    assert!(train_diffgraph(&g, &[40], &cfg, 0).is_err());
    assert!(
        generate(
            &HeteroConfig {
                classes: 1,
                ..HeteroConfig::default()
            },
            0
        )
        .is_err()
    );
    assert!(
        generate(
            &HeteroConfig {
                target_homophily: 1.5,
                ..HeteroConfig::default()
            },
            0
        )
        .is_err()
    );
}

/// The README's DiffGraph table (about a minute):
/// `cargo test -p diffusion-graph --test diffgraph -- --ignored --nocapture`.
#[test]
#[ignore]
fn diffgraph_study_over_seeds() {
    let cfg = DiffGraphConfig::default();
    let mut rows: Vec<[f64; 9]> = Vec::new();
    for seed in 0..5 {
        let g = generate(&HeteroConfig::default(), seed).unwrap();
        let (train, test) = split(g.labels.len(), 0.2, seed);
        let c = compare(&g, &train, &test, &cfg, seed).unwrap();
        println!("seed {seed}: {c:?}");
        let s = [c.diffgraph, c.gcn_target, c.gcn_summed];
        rows.push(std::array::from_fn(|i| {
            let m = s[i / 3];
            [m.micro_f1, m.macro_f1, m.auc][i % 3]
        }));
    }
    println!("| model | Micro-F1 | Macro-F1 | AUC |\n|---|---|---|---|");
    for (m, name) in ["DiffGraph", "GCN, target view", "GCN, summed views"]
        .iter()
        .enumerate()
    {
        let cell = |k: usize| {
            let v: Vec<f64> = rows.iter().map(|r| r[3 * m + k]).collect();
            let mean = v.iter().sum::<f64>() / v.len() as f64;
            let sd = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (v.len() - 1) as f64).sqrt();
            format!("{mean:.3} ± {sd:.3}")
        };
        println!("| {name} | {} | {} | {} |", cell(0), cell(1), cell(2));
    }
    let mean = |k: usize| rows.iter().map(|r| r[k]).sum::<f64>() / rows.len() as f64;
    assert!(
        mean(0) > mean(3),
        "DiffGraph should beat the target-view GCN on average"
    );
}
