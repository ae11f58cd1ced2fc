//! PCA and pairwise distances, on `diffusion-nn`'s GEMM and `diffusion-testbed`'s Jacobi
//! eigensolver.

use diffusion_core::Rng;
use diffusion_nn::matmul_2d;
use diffusion_testbed::linalg::symmetric_eigen;
use ndarray::{Array1, Array2, Axis};

use crate::error::{Result, ScrnaError};

/// A fitted principal-component projection.
#[derive(Clone, Debug, PartialEq)]
pub struct Pca {
    pub mean: Array1<f64>,
    /// `[genes, k]`, orthonormal columns, by decreasing variance.
    pub components: Array2<f64>,
    /// Variance along each component (unbiased).
    pub variances: Vec<f64>,
}

impl Pca {
    /// The top `k` components of `x` (rows are samples) by subspace iteration on the
    /// covariance (`k + 10` vectors, 100 iterations, then Rayleigh-Ritz), seeded.
    pub fn fit(x: &Array2<f64>, k: usize, seed: u64) -> Result<Self> {
        let (n, p) = x.dim();
        if n < 2 || k == 0 || k > p {
            return Err(ScrnaError::invalid(
                "PCA",
                format!("{k} components of {n} samples x {p} features"),
            ));
        }
        let mean = x.mean_axis(Axis(0)).expect("n >= 2");
        let xc = x - &mean;
        let cov = matmul_2d(&xc.t().to_owned(), &xc)? / (n as f64 - 1.0);
        let m = (k + 10).min(p);
        let mut q = vec![0.0; p * m];
        Rng::new(seed).fill_normal(&mut q);
        let mut q = Array2::from_shape_vec((p, m), q).expect("sized");
        orthonormalize(&mut q);
        for _ in 0..100 {
            q = matmul_2d(&cov, &q)?;
            orthonormalize(&mut q);
        }
        let b = matmul_2d(&q.t().to_owned(), &matmul_2d(&cov, &q)?)?;
        let (vals, vecs) = symmetric_eigen(b.as_slice().expect("standard"), m);
        let mut order: Vec<usize> = (0..m).collect();
        order.sort_by(|&i, &j| vals[j].total_cmp(&vals[i]));
        let v = Array2::from_shape_vec((m, m), vecs).expect("sized");
        let top = v.select(Axis(1), &order[..k]);
        Ok(Self {
            mean,
            components: matmul_2d(&q, &top)?,
            variances: order[..k].iter().map(|&i| vals[i]).collect(),
        })
    }

    /// `(x - mean) components`: `[samples, k]`.
    pub fn transform(&self, x: &Array2<f64>) -> Result<Array2<f64>> {
        if x.ncols() != self.mean.len() {
            return Err(ScrnaError::Shape {
                context: "PCA transform: features".into(),
                expected: vec![x.nrows(), self.mean.len()],
                got: x.shape().to_vec(),
            });
        }
        Ok(matmul_2d(&(x - &self.mean), &self.components)?)
    }
}

/// Modified Gram-Schmidt, twice (enough for working-precision orthogonality).
fn orthonormalize(q: &mut Array2<f64>) {
    for _ in 0..2 {
        for j in 0..q.ncols() {
            for i in 0..j {
                let d = q.column(i).dot(&q.column(j));
                let ci = q.column(i).to_owned();
                q.column_mut(j).scaled_add(-d, &ci);
            }
            let norm = q.column(j).dot(&q.column(j)).sqrt();
            if norm > 0.0 {
                q.column_mut(j).mapv_inplace(|v| v / norm);
            }
        }
    }
}

/// Squared Euclidean distances `[a.rows, b.rows]` (clamped at 0 against round-off).
pub fn sq_distances(a: &Array2<f64>, b: &Array2<f64>) -> Result<Array2<f64>> {
    if a.ncols() != b.ncols() {
        return Err(ScrnaError::Shape {
            context: "pairwise distances: features".into(),
            expected: vec![b.nrows(), a.ncols()],
            got: b.shape().to_vec(),
        });
    }
    let na: Vec<f64> = a.rows().into_iter().map(|r| r.dot(&r)).collect();
    let nb: Vec<f64> = b.rows().into_iter().map(|r| r.dot(&r)).collect();
    let mut d = matmul_2d(a, &b.t().to_owned())?;
    for ((i, j), v) in d.indexed_iter_mut() {
        *v = (na[i] + nb[j] - 2.0 * *v).max(0.0);
    }
    Ok(d)
}
