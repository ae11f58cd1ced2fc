//! Eigenvalues of the normalised Laplacian and GRAN's spectral histogram.

use nalgebra::DMatrix;

use crate::graph::Graph;

/// `networkx.normalized_laplacian_matrix`: `D^-1/2 (D - A) D^-1/2`, row-major, with the
/// rows and columns of isolated nodes zero (networkx sets `1/sqrt(0)` to 0).
pub fn normalized_laplacian(g: &Graph) -> Vec<f64> {
    let n = g.n();
    let inv_sqrt: Vec<f64> = (0..n)
        .map(|u| {
            let d = g.degree(u);
            if d == 0 { 0.0 } else { 1.0 / (d as f64).sqrt() }
        })
        .collect();
    let mut l = vec![0.0; n * n];
    for u in 0..n {
        if g.degree(u) > 0 {
            l[u * n + u] = 1.0;
        }
        for &v in g.neighbors(u) {
            l[u * n + v] = -inv_sqrt[u] * inv_sqrt[v];
        }
    }
    l
}

/// Eigenvalues (ascending) of a symmetric `n x n` row-major matrix.
pub fn symmetric_eigenvalues(a: &[f64], n: usize) -> Vec<f64> {
    assert_eq!(a.len(), n * n, "symmetric_eigenvalues: a must be n x n");
    if n == 0 {
        return Vec::new();
    }
    let m = DMatrix::from_row_slice(n, n, a);
    let mut ev: Vec<f64> = m.symmetric_eigenvalues().iter().copied().collect();
    ev.sort_by(f64::total_cmp);
    ev
}

/// Normalised-Laplacian eigenvalues (ascending, in [0, 2]).
pub fn laplacian_spectrum(g: &Graph) -> Vec<f64> {
    symmetric_eigenvalues(&normalized_laplacian(g), g.n())
}

/// GRAN's `spectral_worker`: the eigenvalues' histogram on 200 bins over `[-1e-5, 2]`,
/// normalised to sum 1.
pub fn spectral_histogram(g: &Graph) -> Vec<f64> {
    let mut h = super::histogram(&laplacian_spectrum(g), 200, -1e-5, 2.0);
    let s: f64 = h.iter().sum();
    if s > 0.0 {
        for v in &mut h {
            *v /= s;
        }
    }
    h
}

/// Normalised-Laplacian eigenvalues (ascending) and unit eigenvectors (`vectors[k]` is
/// the eigenvector of `values[k]`, length `n`).
pub fn laplacian_eigen(g: &Graph) -> (Vec<f64>, Vec<Vec<f64>>) {
    let n = g.n();
    if n == 0 {
        return (Vec::new(), Vec::new());
    }
    let e = nalgebra::SymmetricEigen::new(DMatrix::from_row_slice(n, n, &normalized_laplacian(g)));
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| e.eigenvalues[a].total_cmp(&e.eigenvalues[b]));
    let values = order.iter().map(|&k| e.eigenvalues[k]).collect();
    let vectors = order
        .iter()
        .map(|&k| e.eigenvectors.column(k).iter().copied().collect())
        .collect();
    (values, vectors)
}
