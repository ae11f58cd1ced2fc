//! Metrics against independent oracles: brute-force graphlet enumeration over the Graph
//! Atlas, closed forms of the kernels and spectra, hand-computed small graphs, and numbers
//! from networkx/numpy (`data/reference_metrics.py`).

mod common;

use diffusion_graph::Graph;
use diffusion_graph::io;
use diffusion_graph::metrics::mmd::{self, Kernel, MmdSettings, Statistic};
use diffusion_graph::metrics::{orbit, spectral, stats, vun};
use serde_json::Value;

/// Graphlets with each position's orbit (ORCA / Pržulj numbering), written out by hand.
/// (nodes, edges, orbit of each position).
type Graphlet = (usize, &'static [(usize, usize)], &'static [usize]);

const GRAPHLETS: &[Graphlet] = &[
    (2, &[(0, 1)], &[0, 0]),
    (3, &[(0, 1), (1, 2)], &[1, 2, 1]),
    (3, &[(0, 1), (1, 2), (0, 2)], &[3, 3, 3]),
    (4, &[(0, 1), (1, 2), (2, 3)], &[4, 5, 5, 4]),
    (4, &[(0, 1), (0, 2), (0, 3)], &[7, 6, 6, 6]),
    (4, &[(0, 1), (1, 2), (2, 3), (3, 0)], &[8, 8, 8, 8]),
    (4, &[(0, 1), (1, 2), (0, 2), (2, 3)], &[10, 10, 11, 9]),
    (4, &[(0, 1), (1, 2), (2, 3), (3, 0), (0, 2)], &[13, 12, 13, 12]),
    (
        4,
        &[(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)],
        &[14, 14, 14, 14],
    ),
];

fn permutations(k: usize) -> Vec<Vec<usize>> {
    if k == 0 {
        return vec![vec![]];
    }
    let mut out = Vec::new();
    for p in permutations(k - 1) {
        for i in 0..=p.len() {
            let mut q = p.clone();
            q.insert(i, k - 1);
            out.push(q);
        }
    }
    out
}

/// Orbit counts by trying every node subset of size 2-4 against every graphlet under
/// every relabelling.
fn brute_force_orbits(g: &Graph) -> Vec<[u64; 15]> {
    let n = g.n();
    let mut counts = vec![[0u64; 15]; n];
    let mut subsets: Vec<Vec<usize>> = Vec::new();
    for a in 0..n {
        for b in a + 1..n {
            subsets.push(vec![a, b]);
            for c in b + 1..n {
                subsets.push(vec![a, b, c]);
                for d in c + 1..n {
                    subsets.push(vec![a, b, c, d]);
                }
            }
        }
    }
    let perms: Vec<Vec<Vec<usize>>> = (0..=4).map(permutations).collect();
    for s in subsets {
        let k = s.len();
        'graphlets: for &(size, edges, orbits) in GRAPHLETS {
            if size != k {
                continue;
            }
            for p in &perms[k] {
                // Template position i sits on node s[p[i]]: induced edges must match exactly.
                let mut matches = true;
                for i in 0..k {
                    for j in i + 1..k {
                        let in_template = edges.contains(&(i, j)) || edges.contains(&(j, i));
                        if in_template != g.has_edge(s[p[i]], s[p[j]]) {
                            matches = false;
                        }
                    }
                }
                if matches {
                    for i in 0..k {
                        counts[s[p[i]]][orbits[i]] += 1;
                    }
                    break 'graphlets;
                }
            }
        }
    }
    counts
}

#[test]
fn orbit_counts_equal_brute_force_on_the_graph_atlas() {
    let atlas = io::read_graph_list(common::data("graph_atlas.json")).unwrap();
    assert_eq!(atlas.len(), 1253);
    for (i, g) in atlas.iter().enumerate() {
        assert_eq!(orbit::orbit_counts(g), brute_force_orbits(g), "atlas graph {i}");
    }
}

#[test]
fn orbit_counts_equal_brute_force_on_real_graphs() {
    for name in ["florentine_families", "karate_club"] {
        let g = io::read_named_graph(common::data("real_networkx.json"), name).unwrap();
        let c = orbit::orbit_counts(&g);
        assert_eq!(c, brute_force_orbits(&g), "{name}");
        let tri = stats::triangles(&g);
        for u in 0..g.n() {
            assert_eq!(c[u][0], g.degree(u) as u64);
            assert_eq!(c[u][3], tri[u] as u64);
        }
    }
}

#[test]
fn orbit_statistic_of_k4_and_a_star() {
    // K4: every node has degree 3, 3 triangles, and sits once at orbit 14; no induced paths.
    let k4 = Graph::from_fn(4, |_, _| true);
    let s = orbit::orbit_statistic(&k4);
    let mut want = vec![0.0; 15];
    (want[0], want[3], want[14]) = (3.0, 3.0, 1.0);
    assert_eq!(s, want);
    // Star with 3 leaves: centre at orbits 0 (x3), 2 (x3), 7 (x1); leaves 0, 1 (x2), 6.
    let star = Graph::from_edges(4, &[(0, 1), (0, 2), (0, 3)]).unwrap();
    let c = orbit::orbit_counts(&star);
    assert_eq!(c[0][..8], [3, 0, 3, 0, 0, 0, 0, 1]);
    assert_eq!(c[1][..8], [1, 2, 0, 0, 0, 0, 1, 0]);
}

#[test]
fn degree_and_clustering_on_hand_computed_graphs() {
    // The paw: triangle 0-1-2 and pendant 3 on node 2.
    let paw = Graph::from_edges(4, &[(0, 1), (1, 2), (0, 2), (2, 3)]).unwrap();
    assert_eq!(stats::degree_histogram(&paw), vec![0.0, 1.0, 2.0, 1.0]);
    assert_eq!(stats::clustering(&paw), vec![1.0, 1.0, 1.0 / 3.0, 0.0]);
    let h = stats::clustering_histogram(&paw, 100);
    assert_eq!((h[0], h[33], h[99], h.iter().sum::<f64>()), (1.0, 1.0, 2.0, 4.0));
    // The 4-cycle has no triangles; K5 is all ones.
    assert_eq!(
        stats::clustering(&Graph::from_edges(4, &[(0, 1), (1, 2), (2, 3), (3, 0)]).unwrap()),
        vec![0.0; 4]
    );
    assert_eq!(stats::clustering(&Graph::from_fn(5, |_, _| true)), vec![1.0; 5]);
}

fn reference() -> Value {
    let text = std::fs::read_to_string(common::data("reference_metrics.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

#[test]
fn statistics_match_networkx_and_numpy() {
    let r = reference();
    for name in ["karate_club", "florentine_families", "les_miserables"] {
        let g = io::read_named_graph(common::data("real_networkx.json"), name).unwrap();
        let want = &r[name];
        assert_eq!(
            stats::degree_histogram(&g),
            floats(&want["degree_histogram"]),
            "{name}"
        );
        let c = stats::clustering(&g);
        for (a, b) in c.iter().zip(floats(&want["clustering"])) {
            assert!((a - b).abs() < 1e-12, "{name}: clustering {a} vs {b}");
        }
        let avg = c.iter().sum::<f64>() / g.n() as f64;
        assert!((avg - want["average_clustering"].as_f64().unwrap()).abs() < 1e-12);
        assert_eq!(
            stats::clustering_histogram(&g, 100),
            floats(&want["clustering_histogram"]),
            "{name}"
        );
        let ev = spectral::laplacian_spectrum(&g);
        for (a, b) in ev.iter().zip(floats(&want["eigenvalues"])) {
            assert!((a - b).abs() < 1e-10, "{name}: eigenvalue {a} vs {b}");
        }
        assert_eq!(
            spectral::spectral_histogram(&g),
            floats(&want["spectral_histogram"]),
            "{name}"
        );
    }
    // Zachary's karate club: networkx.average_clustering = 0.5706384782076823.
    assert!((r["karate_club"]["average_clustering"].as_f64().unwrap() - 0.5706384782076823).abs() < 1e-15);
}

#[test]
fn spectra_equal_closed_forms() {
    // K_n: 0 once, n / (n - 1) with multiplicity n - 1.
    let ev = spectral::laplacian_spectrum(&Graph::from_fn(6, |_, _| true));
    assert!(ev[0].abs() < 1e-12);
    assert!(ev[1..].iter().all(|&e| (e - 1.2).abs() < 1e-12));
    // C_n: 1 - cos(2 pi k / n).
    let n = 9;
    let cycle = Graph::from_fn(n, |u, v| v == u + 1 || (u == 0 && v == n - 1));
    let mut want: Vec<f64> = (0..n)
        .map(|k| 1.0 - (2.0 * std::f64::consts::PI * k as f64 / n as f64).cos())
        .collect();
    want.sort_by(f64::total_cmp);
    for (a, b) in spectral::laplacian_spectrum(&cycle).iter().zip(&want) {
        assert!((a - b).abs() < 1e-12, "{a} vs {b}");
    }
    // A star: 0, 1 (n - 2 times), 2; an isolated node adds a 0 (networkx's convention).
    let mut star = Graph::from_fn(6, |u, _| u == 0);
    star = Graph::from_edges(7, &star.edges().collect::<Vec<_>>()).unwrap();
    let ev = spectral::laplacian_spectrum(&star);
    let want = [0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 2.0];
    for (a, b) in ev.iter().zip(want) {
        assert!((a - b).abs() < 1e-12, "{ev:?}");
    }
}

#[test]
fn kernels_equal_closed_forms_on_hand_made_histograms() {
    let (x, y) = (vec![1.0, 0.0, 0.0], vec![0.0, 0.0, 1.0]);
    // All mass moves two bins: EMD 2; TV 1; squared Euclidean 2.
    let emd = Kernel::GaussianEmd {
        sigma: 1.0,
        scaling: 1.0,
    };
    assert!((emd.eval(&x, &y) - (-2.0f64).exp()).abs() < 1e-15);
    assert!((Kernel::GaussianTv { sigma: 1.0 }.eval(&x, &y) - (-0.5f64).exp()).abs() < 1e-15);
    assert!((Kernel::Gaussian { sigma: 1.0 }.eval(&x, &y) - (-1.0f64).exp()).abs() < 1e-15);
    // Padding: [1] vs [0, 1] moves all mass one bin.
    assert!((emd.eval(&[1.0], &[0.0, 1.0]) - (-0.5f64).exp()).abs() < 1e-15);
    // [.5, .5] vs [0, 1]: half the mass moves one bin; with scaling 100 and sigma 0.1 the
    // distance is 0.005 and the kernel exp(-0.005^2 / 0.02).
    let clus = Kernel::GaussianEmd {
        sigma: 0.1,
        scaling: 100.0,
    };
    assert!((clus.eval(&[0.5, 0.5], &[0.0, 1.0]) - (-0.00125f64).exp()).abs() < 1e-15);

    // MMD^2 of X = {a, b} and Y = {c} as histograms (normalised first): a = [2, 2] ->
    // [.5, .5], b = [0, 3] -> [0, 1], c = [1] -> [1, 0]. EMDs: a-b 0.5, a-c 0.5, b-c 1.
    let (a, b, c) = (vec![2.0, 2.0], vec![0.0, 3.0], vec![1.0]);
    let (kab, kac, kbc) = ((-0.125f64).exp(), (-0.125f64).exp(), (-0.5f64).exp());
    let want = (2.0 + 2.0 * kab) / 4.0 + 1.0 - 2.0 * (kac + kbc) / 2.0;
    let got = mmd::mmd2(&[a.clone(), b.clone()], std::slice::from_ref(&c), emd, true).unwrap();
    assert!((got - want).abs() < 1e-15, "{got} vs {want}");
    // TV of the same: a-b 0.5, a-c 0.5, b-c 1.
    let tv = Kernel::GaussianTv { sigma: 1.0 };
    let got = mmd::mmd2(&[a, b], &[c], tv, true).unwrap();
    assert!((got - want).abs() < 1e-15);
    // Identical sets: exactly 0.
    let s = vec![vec![1.0, 2.0, 3.0], vec![0.0, 1.0]];
    assert!(mmd::mmd2(&s, &s, emd, true).unwrap().abs() < 1e-15);
    // Bad input.
    assert!(mmd::mmd2(&[vec![0.0]], &[vec![1.0]], emd, true).is_err());
    assert!(mmd::mmd2(&[vec![f64::NAN]], &[vec![1.0]], emd, false).is_err());
    assert!(mmd::mmd2(&[], &[vec![1.0]], emd, false).is_err());
    assert!(mmd::mmd2(&[vec![1.0]], &[vec![1.0]], Kernel::Gaussian { sigma: 0.0 }, false).is_err());
}

#[test]
fn graph_mmd_matches_the_python_evaluation_formulas() {
    let r = &reference()["community_small_mmd"];
    let cs = io::read_dataset(common::data("synthetic_benchmarks.json"), "community_small").unwrap();
    let (a, b) = (&cs[..10], &cs[10..25]);
    for (preset, settings) in [("gdss", MmdSettings::gdss()), ("gran", MmdSettings::gran())] {
        for s in [Statistic::Degree, Statistic::Clustering, Statistic::Spectral] {
            let got = mmd::graph_mmd(a, b, s, &settings).unwrap();
            let want = r[preset][s.name()].as_f64().unwrap();
            assert!(
                (got - want).abs() < 1e-12,
                "{preset} {}: {got} vs {want}",
                s.name()
            );
        }
    }
    assert!(matches!(
        mmd::graph_mmd(&[Graph::empty(0)], b, Statistic::Degree, &MmdSettings::gdss()),
        Err(diffusion_graph::GraphError::EmptyGraph { .. })
    ));
}

#[test]
fn isomorphism_uniqueness_novelty_and_planarity() {
    // The atlas lists each graph on up to 7 nodes once: no two are isomorphic, and a
    // relabelled copy of each is isomorphic to it.
    let atlas = io::read_graph_list(common::data("graph_atlas.json")).unwrap();
    let some: Vec<Graph> = atlas.iter().filter(|g| g.n() == 5).cloned().collect();
    assert_eq!(some.len(), 34);
    let r = vun::vun(&some, &[], |_| true);
    assert_eq!((r.unique, r.unique_novel, r.vun), (1.0, 1.0, 1.0));
    for g in &some {
        let n = g.n();
        let relabel = |u: usize| (u * 3 + 1) % n;
        let h = Graph::from_edges(
            n,
            &g.edges()
                .map(|(u, v)| (relabel(u), relabel(v)))
                .collect::<Vec<_>>(),
        )
        .unwrap();
        assert!(vun::is_isomorphic(g, &h));
    }
    // Uniqueness and novelty counting: [a, a', b, c] with a' ~ a and c in the training set.
    let a = Graph::from_edges(4, &[(0, 1), (1, 2), (2, 3)]).unwrap();
    let a2 = Graph::from_edges(4, &[(3, 1), (1, 0), (0, 2)]).unwrap();
    let b = Graph::from_edges(4, &[(0, 1), (0, 2), (0, 3)]).unwrap();
    let c = Graph::from_fn(4, |_, _| true);
    let r = vun::vun(&[a, a2, b.clone(), c.clone()], &[c], |g| g.m() == 3);
    assert_eq!((r.valid, r.unique, r.unique_novel, r.vun), (0.75, 0.75, 0.5, 0.5));
    // Typed isomorphism respects types.
    let t1 = b.clone().with_node_types(vec![1, 0, 0, 0]).unwrap();
    let t2 = b.clone().with_node_types(vec![0, 1, 0, 0]).unwrap();
    assert!(!vun::is_isomorphic(&t1, &t2));

    // Planarity: K5 and K3,3 are not planar; K4, a planar benchmark graph and every
    // atlas graph with at most 4 nodes are.
    assert!(!vun::is_planar(&Graph::from_fn(5, |_, _| true)));
    assert!(!vun::is_planar(&Graph::from_fn(6, |u, v| u < 3 && v >= 3)));
    assert!(vun::is_planar(&Graph::from_fn(4, |_, _| true)));
    assert!(atlas.iter().filter(|g| g.n() <= 4).all(vun::is_planar));
    let planar = io::read_dataset(common::data("synthetic_benchmarks.json"), "planar").unwrap();
    assert!(planar.iter().take(20).all(vun::is_valid_planar));
    // Removing nodes from K5 makes it planar; disconnected graphs are not valid planar graphs.
    assert!(!vun::is_valid_planar(
        &Graph::from_edges(4, &[(0, 1), (2, 3)]).unwrap()
    ));
    // Euler's bound: a simple graph with m > 3n - 6 edges is not planar.
    for g in &atlas {
        if g.n() >= 3 && g.m() > 3 * g.n() - 6 {
            assert!(!vun::is_planar(g));
        }
    }
}
