//! Sparse products against dense ones, and GCN gradients against central finite
//! differences in f64.

mod common;

use diffusion_core::Rng;
use diffusion_graph::gcn::{Activation, Gcn, GcnLayer};
use diffusion_graph::sparse::{Csr, normalized_adjacency};
use diffusion_graph::{Graph, GraphError, io};
use diffusion_nn::Parameters;
use ndarray::Array2;

fn random(rows: usize, cols: usize, rng: &mut Rng) -> Array2<f64> {
    Array2::from_shape_fn((rows, cols), |_| rng.normal())
}

#[test]
fn normalized_adjacency_by_hand() {
    // Path 0-1-2 with self-loops: degrees 2, 3, 2.
    let g = Graph::from_edges(3, &[(0, 1), (1, 2)]).unwrap();
    let a = normalized_adjacency(&g, true).to_dense();
    let s6 = 1.0 / 6f64.sqrt();
    let want = [0.5, s6, 0.0, s6, 1.0 / 3.0, s6, 0.0, s6, 0.5];
    for (x, y) in a.iter().zip(want) {
        assert!((x - y).abs() < 1e-15);
    }
    // Without self-loops: D^-1/2 A D^-1/2, an isolated node's row zero.
    let g = Graph::from_edges(4, &[(0, 1), (1, 2)]).unwrap();
    let a = normalized_adjacency(&g, false).to_dense();
    let h = 1.0 / 2f64.sqrt();
    let want = [
        0.0, h, 0.0, 0.0, h, 0.0, h, 0.0, 0.0, h, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
    ];
    assert_eq!(a, want);
}

#[test]
fn sparse_products_equal_dense_ones() {
    let mut rng = Rng::new(1);
    let t: Vec<(usize, usize, f64)> = (0..40)
        .map(|i| ((i * 7) % 9, (i * 5 + 3) % 9, rng.normal()))
        .collect();
    let m = Csr::from_triplets(9, t).unwrap();
    let d = m.to_dense();
    let x = random(9, 4, &mut rng);
    for (mat, dense) in [(m.clone(), d.clone()), (m.transpose(), transpose(&d, 9))] {
        let y = mat.matmul(&x).unwrap();
        for r in 0..9 {
            for c in 0..4 {
                let want: f64 = (0..9).map(|k| dense[r * 9 + k] * x[[k, c]]).sum();
                assert!((y[[r, c]] - want).abs() < 1e-12);
            }
        }
    }
    assert!(matches!(
        m.matmul(&random(8, 2, &mut rng)),
        Err(GraphError::Shape { .. })
    ));
    assert!(Csr::from_triplets(2, vec![(0, 2, 1.0)]).is_err());
    assert!(Csr::from_triplets(2, vec![(0, 1, f64::NAN)]).is_err());
}

fn transpose(d: &[f64], n: usize) -> Vec<f64> {
    (0..n * n).map(|i| d[(i % n) * n + i / n]).collect()
}

/// `L = sum(C * gcn(x))`; checks every parameter and input gradient by central differences.
fn check_gradients(mut net: Gcn<f64>, adj: &Csr, x: &Array2<f64>, seed: u64) {
    let mut rng = Rng::new(seed);
    let (y, cache) = net.forward(adj, x).unwrap();
    let c = random(y.nrows(), y.ncols(), &mut rng);
    let loss = |net: &Gcn<f64>, x: &Array2<f64>| (net.forward(adj, x).unwrap().0 * &c).sum();
    net.zero_grad();
    let dx = net.backward(&adj.transpose(), &cache, &c).unwrap();
    let h = 1e-6;
    let mut checked = 0;
    let mut grads: Vec<(String, Vec<f64>)> = Vec::new();
    net.visit(&mut |name, p| grads.push((name.to_string(), p.grad.iter().copied().collect())));
    for (name, grad) in grads {
        for (i, &g) in grad.iter().enumerate() {
            let shifted = |delta: f64| {
                let mut n2 = net.clone();
                n2.visit_mut(&mut |pn, p| {
                    if pn == name {
                        p.value.as_slice_mut().unwrap()[i] += delta;
                    }
                });
                loss(&n2, x)
            };
            let fd = (shifted(h) - shifted(-h)) / (2.0 * h);
            assert!(
                (fd - g).abs() < 1e-6 * (1.0 + fd.abs()),
                "{name}[{i}]: analytic {g}, numeric {fd}"
            );
            checked += 1;
        }
    }
    for i in 0..x.nrows() {
        for j in 0..x.ncols() {
            let mut xp = x.clone();
            xp[[i, j]] += h;
            let mut xm = x.clone();
            xm[[i, j]] -= h;
            let fd = (loss(&net, &xp) - loss(&net, &xm)) / (2.0 * h);
            assert!(
                (fd - dx[[i, j]]).abs() < 1e-6 * (1.0 + fd.abs()),
                "dx[{i},{j}]: {} vs {fd}",
                dx[[i, j]]
            );
        }
    }
    assert!(checked > 0 || net.num_params() == 0);
}

#[test]
fn kipf_gcn_gradients_match_finite_differences() {
    let g = io::read_named_graph(common::data("real_networkx.json"), "florentine_families").unwrap();
    let adj = normalized_adjacency(&g, true);
    let mut rng = Rng::new(7);
    let x = random(g.n(), 5, &mut rng);
    let mut net = Gcn::<f64>::kipf(&[5, 6, 3], &mut rng).unwrap();
    net.layers[0].activation = Activation::Tanh;
    check_gradients(net.clone(), &adj, &x, 11);
    net.layers[0].activation = Activation::LeakyRelu(0.2);
    net.layers[1].normalize = true;
    check_gradients(net, &adj, &x, 12);
}

#[test]
fn light_gcn_gradients_match_finite_differences() {
    let g = io::read_named_graph(common::data("real_networkx.json"), "karate_club").unwrap();
    let adj = normalized_adjacency(&g, false);
    let mut rng = Rng::new(3);
    let x = random(g.n(), 4, &mut rng);
    let mut net = Gcn::<f64>::light(4, 5, 2, &mut rng).unwrap();
    check_gradients(net.clone(), &adj, &x, 21);
    // A weighted layer in the middle of a summed stack.
    net.layers
        .insert(1, GcnLayer::new(5, 5, Activation::Tanh, true, &mut rng));
    check_gradients(net, &adj, &x, 22);
}

#[test]
fn gcn_rejects_bad_input() {
    let mut rng = Rng::new(0);
    assert!(Gcn::<f64>::kipf(&[3], &mut rng).is_err());
    assert!(Gcn::<f64>::kipf(&[3, 0], &mut rng).is_err());
    let net = Gcn::<f64>::kipf(&[3, 2], &mut rng).unwrap();
    let adj = normalized_adjacency(&Graph::from_edges(4, &[(0, 1)]).unwrap(), true);
    assert!(net.forward(&adj, &random(3, 3, &mut rng)).is_err());
    assert!(net.forward(&adj, &random(4, 2, &mut rng)).is_err());
    let mut x = random(4, 3, &mut rng);
    x[[1, 1]] = f64::NAN;
    assert!(matches!(net.forward(&adj, &x), Err(GraphError::Invalid { .. })));
}
