//! Metrics against closed forms and hand-computed small cases.

use diffusion_core::Rng;
use diffusion_scrna::linalg::{Pca, sq_distances};
use diffusion_scrna::metrics::*;
use diffusion_testbed::linalg::symmetric_eigen;
use ndarray::{Array2, array};

fn randn(rows: usize, cols: usize, seed: u64) -> Array2<f64> {
    let mut v = vec![0.0; rows * cols];
    Rng::new(seed).fill_normal(&mut v);
    Array2::from_shape_vec((rows, cols), v).unwrap()
}

#[test]
fn pearson_and_spearman_closed_forms() {
    let a = [1.0, 2.0, 3.0, 4.0];
    assert!((pearson(&a, &[2.0, 4.0, 6.0, 8.0]).unwrap() - 1.0).abs() < 1e-15);
    assert!((pearson(&a, &[4.0, 3.0, 2.0, 1.0]).unwrap() + 1.0).abs() < 1e-15);
    // By hand: centred a = (-1.5, -.5, .5, 1.5), b = (1, 0, 0, 3) - 1 = (0, -1, -1, 2):
    // sum ab = 0 + .5 - .5 + 3 = 3, |a|^2 = 5, |b|^2 = 6 -> 3 / sqrt(30).
    let r = pearson(&a, &[1.0, 0.0, 0.0, 3.0]).unwrap();
    assert!((r - 3.0 / 30f64.sqrt()).abs() < 1e-15, "{r}");
    // Spearman of a monotone but non-linear map is 1; ties get average ranks.
    assert!((spearman(&a, &[1.0, 10.0, 100.0, 1e6]).unwrap() - 1.0).abs() < 1e-15);
    assert_eq!(ranks(&[3.0, 1.0, 3.0, 2.0]), vec![3.5, 1.0, 3.5, 2.0]);
    assert!(pearson(&a, &[1.0]).is_err());
}

#[test]
fn wasserstein_and_ks_closed_forms() {
    // Shifting a sample by c moves it exactly c; KS of disjoint samples is 1.
    let a = [0.0, 1.0, 5.0];
    let b: Vec<f64> = a.iter().map(|v| v + 0.25).collect();
    assert!((wasserstein1(&a, &b).unwrap() - 0.25).abs() < 1e-15);
    assert_eq!(ks_statistic(&[0.0, 1.0], &[2.0, 3.0]).unwrap(), 1.0);
    // Unequal sizes: {0} vs {0, 2}: |F_a - F_b| = 1/2 on [0, 2) -> W1 = 1, KS = 1/2.
    assert!((wasserstein1(&[0.0], &[0.0, 2.0]).unwrap() - 1.0).abs() < 1e-15);
    assert!((ks_statistic(&[0.0], &[0.0, 2.0]).unwrap() - 0.5).abs() < 1e-15);
    assert_eq!(wasserstein1(&a, &a).unwrap(), 0.0);
    assert!(wasserstein1(&[], &a).is_err());
}

#[test]
fn auc_counts_pairs() {
    // Positives {0.9, 0.4}, negatives {0.5, 0.1}: pairs won 1 + 1 + 1 + 0 = 3 of 4.
    let s = [0.9, 0.5, 0.4, 0.1];
    assert!((auc(&s, &[true, false, true, false]).unwrap() - 0.75).abs() < 1e-15);
    // A tie counts one half.
    assert!((auc(&[0.5, 0.5], &[true, false]).unwrap() - 0.5).abs() < 1e-15);
    assert!(auc(&s, &[true; 4]).is_err());
}

#[test]
fn mmd_matches_the_two_point_closed_form() {
    // One point each at squared distance s: n = 2, base = (2 s / 2) / 2^2 = s / 4, so
    // K(x, y) = sum_i exp(-s / (s/4 * 2^i)) = sum_i exp(-4 / 2^i), K(x, x) = 5.
    let x = array![[0.0, 0.0]];
    let y = array![[3.0, 4.0]];
    let expected = 10.0 - 2.0 * (0..5).map(|i| (-4.0 / 2f64.powi(i)).exp()).sum::<f64>();
    let got = mmd_multi_rbf(&x, &y, 2.0, 5).unwrap();
    assert!((got - expected).abs() < 1e-12, "{got} vs {expected}");
    // Identical sets: exactly zero.
    let a = randn(20, 3, 1);
    assert!(mmd_multi_rbf(&a, &a, 2.0, 5).unwrap().abs() < 1e-12);
    // A shifted set is farther than a fresh draw of the same distribution.
    let same = mmd_multi_rbf(&a, &randn(20, 3, 2), 2.0, 5).unwrap();
    let shifted = mmd_multi_rbf(&a, &(randn(20, 3, 2) + 3.0), 2.0, 5).unwrap();
    assert!(shifted > 5.0 * same, "{same} {shifted}");
}

#[test]
fn knn_auc_hand_cases() {
    // 1-NN on a line: real {0, 10}, generated {1, 11}: every cell's nearest other cell is
    // of the other kind, so real cells score 0 and generated 1: AUC 0.
    let real = array![[0.0], [10.0]];
    let gen_ = array![[1.0], [11.0]];
    assert_eq!(knn_auc(&real, &gen_, 1).unwrap(), 0.0);
    // Far-apart clusters: every neighbour is of the same kind: AUC 1.
    let real = randn(30, 2, 3);
    let gen_ = randn(30, 2, 4) + 100.0;
    assert_eq!(knn_auc(&real, &gen_, 5).unwrap(), 1.0);
    assert!(knn_auc(&real, &gen_, 60).is_err());
}

#[test]
fn ilisi_closed_forms() {
    // A regular simplex (unit basis vectors, all distances equal): every cell weighs its
    // 5 others equally. With batches [0, 0, 0, 1, 1, 1], a batch-0 cell sees 2 of its own
    // and 3 others: simpson = (2/5)^2 + (3/5)^2 = 13/25, LISI = 25/13 for every cell.
    let x = Array2::from_shape_fn((6, 6), |(i, j)| f64::from(u8::from(i == j)));
    let got = ilisi(&x, &[0, 0, 0, 1, 1, 1], 2.0).unwrap();
    assert!((got - 25.0 / 13.0).abs() < 1e-12, "{got}");
    // Separated batches with neighbourhoods inside each: 1.
    let mut far = randn(40, 2, 5);
    far.slice_mut(ndarray::s![20.., ..]).mapv_inplace(|v| v + 1e3);
    let b: Vec<usize> = (0..40).map(|i| usize::from(i >= 20)).collect();
    assert!((ilisi(&far, &b, 5.0).unwrap() - 1.0).abs() < 1e-12);
    // Two draws of one distribution mix well (about 2 minus the sampling noise).
    let mixed = randn(200, 2, 6);
    let alt: Vec<usize> = (0..200).map(|i| i % 2).collect();
    let l = ilisi(&mixed, &alt, 10.0).unwrap();
    assert!(l > 1.8, "{l}");
}

#[test]
fn nearest_distances_and_knn_classifier() {
    let reference = array![[0.0, 0.0], [10.0, 0.0]];
    let q = array![[3.0, 4.0], [10.0, 1.0]];
    assert_eq!(nearest_distances(&q, &reference).unwrap(), vec![5.0, 1.0]);
    // Copies of the reference are at distance 0 (a memorising generator).
    assert_eq!(nearest_distances(&reference, &reference).unwrap(), vec![0.0, 0.0]);
    let train = array![[0.0], [1.0], [2.0], [10.0], [11.0]];
    let labels = [0, 0, 0, 1, 1];
    let pred = knn_classify(&train, &labels, &array![[0.5], [10.5], [6.5]], 3).unwrap();
    // 6.5: nearest 3 are 10 (1), 2 (0), 11 (1) -> 1.
    assert_eq!(pred, vec![0, 1, 1]);
    assert_eq!(accuracy(&pred, &[0, 1, 0]), 2.0 / 3.0);
}

#[test]
fn pca_matches_the_full_eigendecomposition() {
    // Data with a decaying spectrum; compare with Jacobi on the full covariance.
    let (n, p, k) = (200, 12, 4);
    let mut x = randn(n, p, 7);
    for (j, mut c) in x.columns_mut().into_iter().enumerate() {
        c.mapv_inplace(|v| v * (p - j) as f64);
    }
    let pca = Pca::fit(&x, k, 3).unwrap();
    let mean = x.mean_axis(ndarray::Axis(0)).unwrap();
    let xc = &x - &mean;
    let cov = xc.t().dot(&xc) / (n as f64 - 1.0);
    let (mut vals, _) = symmetric_eigen(cov.as_slice().unwrap(), p);
    vals.sort_by(|a, b| b.total_cmp(a));
    for i in 0..k {
        assert!(
            (pca.variances[i] - vals[i]).abs() < 1e-8 * vals[0],
            "{i}: {} vs {}",
            pca.variances[i],
            vals[i]
        );
    }
    // The projection's per-component variances are the eigenvalues too.
    let z = pca.transform(&x).unwrap();
    for i in 0..k {
        let v = z.column(i).mapv(|a| a * a).sum() / (n as f64 - 1.0);
        assert!((v - vals[i]).abs() < 1e-8 * vals[0]);
    }
    let d = sq_distances(&array![[0.0, 0.0]], &array![[3.0, 4.0], [1.0, 0.0]]).unwrap();
    assert_eq!(d, array![[25.0, 1.0]]);
}
