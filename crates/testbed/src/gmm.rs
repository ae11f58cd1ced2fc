//! The analytic Gaussian-mixture data distribution and its exact noised marginals.
//!
//! With data `x0 ~ sum_k w_k N(mu_k, Sigma_k)` and `x = alpha x0 + sigma eps`, the noised
//! marginal is `p(x) = sum_k w_k N(x; alpha mu_k, C_k)`, `C_k = alpha^2 Sigma_k + sigma^2 I`.
//! Given `x`, component `k` has posterior responsibility `r_k(x)` and, within it,
//! `E[eps | x, k] = sigma C_k^-1 (x - alpha mu_k)` and
//! `E[x0 | x, k] = mu_k + alpha Sigma_k C_k^-1 (x - alpha mu_k)`.
//! Every prediction is built from `g = sum_k r_k C_k^-1 (x - alpha mu_k)` (minus the
//! score) and `h = E[x0 | x]`, both finite at `sigma = 0` and at `alpha = 0`, so no
//! conversion ever divides by a vanishing alpha or sigma.

use diffusion_core::{Parameterization, Rng};
use ndarray::{Array1, Array2, ArrayView2};
use rayon::prelude::*;

use crate::error::{Result, TestbedError};
use crate::linalg::{Cholesky, mat_vec};
use crate::spec::GmmSpec;

const LN_2PI: f64 = 1.837_877_066_409_345_5;
/// Rows per parallel work unit when evaluating a batch.
const ROWS_PER_TASK: usize = 64;

/// A Gaussian mixture `sum_k w_k N(mu_k, Sigma_k)` in `D` dimensions.
#[derive(Clone, Debug, PartialEq)]
pub struct GaussianMixture {
    dim: usize,
    weights: Vec<f64>,
    /// K x D, row-major.
    means: Vec<f64>,
    /// K x D x D, row-major.
    covariances: Vec<f64>,
    /// Cholesky factors of the data-level covariances (sampling).
    factors: Vec<Cholesky>,
}

impl GaussianMixture {
    /// A mixture with full covariances. Weights must be positive and sum to 1 (within
    /// 1e-6; they are then renormalised exactly); covariances must be symmetric positive
    /// definite.
    pub fn new(weights: Vec<f64>, means: Vec<Vec<f64>>, covariances: Vec<Vec<Vec<f64>>>) -> Result<Self> {
        let k = weights.len();
        if k == 0 {
            return Err(TestbedError::InvalidSpec(
                "a mixture needs at least one component".into(),
            ));
        }
        if means.len() != k || covariances.len() != k {
            return Err(TestbedError::InvalidSpec(format!(
                "{k} weights but {} means and {} covariances",
                means.len(),
                covariances.len()
            )));
        }
        let dim = means[0].len();
        if dim == 0 {
            return Err(TestbedError::InvalidSpec("means have dimension 0".into()));
        }
        let total: f64 = weights.iter().sum();
        if let Some(i) = weights.iter().position(|w| !(w.is_finite() && *w > 0.0)) {
            return Err(TestbedError::InvalidSpec(format!(
                "weight {i} is {} (weights must be positive and finite)",
                weights[i]
            )));
        }
        if (total - 1.0).abs() > 1e-6 {
            return Err(TestbedError::InvalidSpec(format!(
                "weights sum to {total}, not 1"
            )));
        }
        let mut flat_means = Vec::with_capacity(k * dim);
        let mut flat_covs = Vec::with_capacity(k * dim * dim);
        let mut factors = Vec::with_capacity(k);
        for c in 0..k {
            if means[c].len() != dim {
                return Err(TestbedError::InvalidSpec(format!(
                    "mean {c} has dimension {} but mean 0 has {dim}",
                    means[c].len()
                )));
            }
            if means[c].iter().any(|v| !v.is_finite()) {
                return Err(TestbedError::InvalidSpec(format!("mean {c} is not finite")));
            }
            flat_means.extend_from_slice(&means[c]);
            let cov = &covariances[c];
            if cov.len() != dim || cov.iter().any(|row| row.len() != dim) {
                return Err(TestbedError::InvalidSpec(format!(
                    "covariance {c} is not {dim} x {dim}"
                )));
            }
            let flat: Vec<f64> = cov.iter().flatten().copied().collect();
            check_spd(&flat, dim, c)?;
            factors.push(
                Cholesky::new(&flat, dim).ok_or_else(|| TestbedError::NotPositiveDefinite {
                    component: c,
                    reason: "Cholesky factorisation failed (a non-positive pivot)".into(),
                })?,
            );
            flat_covs.extend_from_slice(&flat);
        }
        Ok(Self {
            dim,
            weights: weights.iter().map(|w| w / total).collect(),
            means: flat_means,
            covariances: flat_covs,
            factors,
        })
    }

    /// A mixture of isotropic components `N(mu_k, std_k^2 I)`.
    pub fn isotropic(weights: Vec<f64>, means: Vec<Vec<f64>>, stds: &[f64]) -> Result<Self> {
        if stds.len() != means.len() {
            return Err(TestbedError::InvalidSpec(format!(
                "{} standard deviations for {} means",
                stds.len(),
                means.len()
            )));
        }
        let covariances = means
            .iter()
            .zip(stds)
            .map(|(m, &s)| {
                let d = m.len();
                (0..d)
                    .map(|i| (0..d).map(|j| if i == j { s * s } else { 0.0 }).collect())
                    .collect()
            })
            .collect();
        Self::new(weights, means, covariances)
    }

    /// The mixture a [`GmmSpec`] describes (its declared `dim` must match the means).
    pub fn from_spec(spec: &GmmSpec) -> Result<Self> {
        let gmm = Self::new(spec.weights.clone(), spec.means.clone(), spec.covariances.clone())?;
        if let Some(d) = spec.dim
            && d != gmm.dim
        {
            return Err(TestbedError::InvalidSpec(format!(
                "spec declares dim {d} but its means have dimension {}",
                gmm.dim
            )));
        }
        Ok(gmm)
    }

    /// The spec form of this mixture (no schedules).
    pub fn to_spec(&self) -> GmmSpec {
        let d = self.dim;
        GmmSpec {
            name: None,
            dim: Some(d),
            weights: self.weights.clone(),
            means: (0..self.n_components()).map(|k| self.mean(k).to_vec()).collect(),
            covariances: (0..self.n_components())
                .map(|k| self.covariance(k).chunks(d).map(<[f64]>::to_vec).collect())
                .collect(),
            schedules: Default::default(),
        }
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn n_components(&self) -> usize {
        self.weights.len()
    }

    pub fn weights(&self) -> &[f64] {
        &self.weights
    }

    /// Mean of component `k` (panics if `k` is out of range, like slice indexing).
    pub fn mean(&self, k: usize) -> &[f64] {
        &self.means[k * self.dim..(k + 1) * self.dim]
    }

    /// Row-major covariance of component `k`.
    pub fn covariance(&self, k: usize) -> &[f64] {
        let dd = self.dim * self.dim;
        &self.covariances[k * dd..(k + 1) * dd]
    }

    /// Component `k` alone: the class-conditional distribution when components are classes.
    pub fn component(&self, k: usize) -> Result<Self> {
        self.check_class(k)?;
        Ok(Self {
            dim: self.dim,
            weights: vec![1.0],
            means: self.mean(k).to_vec(),
            covariances: self.covariance(k).to_vec(),
            factors: vec![self.factors[k].clone()],
        })
    }

    pub(crate) fn check_class(&self, k: usize) -> Result<()> {
        if k < self.n_components() {
            Ok(())
        } else {
            Err(TestbedError::invalid(
                "class",
                format!(
                    "{k} is out of range: the mixture has {} components",
                    self.n_components()
                ),
            ))
        }
    }

    /// The exact marginal of `alpha x0 + sigma eps`, ready for evaluation.
    ///
    /// Fails if alpha or sigma is negative or not finite, or if a noised covariance
    /// `alpha^2 Sigma_k + sigma^2 I` is singular (alpha = sigma = 0).
    pub fn at_noise(&self, alpha: f64, sigma: f64) -> Result<NoisedMixture<'_>> {
        for (name, v) in [("alpha", alpha), ("sigma", sigma)] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(TestbedError::invalid(
                    name,
                    format!("{v} (must be finite and >= 0)"),
                ));
            }
        }
        let d = self.dim;
        let mut factors = Vec::with_capacity(self.n_components());
        let mut log_norm = Vec::with_capacity(self.n_components());
        for k in 0..self.n_components() {
            let mut c: Vec<f64> = self.covariance(k).iter().map(|s| alpha * alpha * s).collect();
            for i in 0..d {
                c[i * d + i] += sigma * sigma;
            }
            let f = Cholesky::new(&c, d).ok_or_else(|| {
                TestbedError::invalid(
                    "noise level",
                    format!("alpha = {alpha}, sigma = {sigma} makes component {k}'s covariance singular"),
                )
            })?;
            log_norm.push(self.weights[k].ln() - 0.5 * f.log_det() - 0.5 * d as f64 * LN_2PI);
            factors.push(f);
        }
        Ok(NoisedMixture {
            gmm: self,
            alpha,
            sigma,
            factors,
            log_norm,
        })
    }

    /// `ln p(x0)` of each row of `x` under the data distribution.
    pub fn log_density(&self, x: ArrayView2<'_, f64>) -> Result<Array1<f64>> {
        self.at_noise(1.0, 0.0)?.log_density(x)
    }

    /// Mean negative log-likelihood (nats per sample) of the rows of `x`.
    pub fn nll(&self, x: ArrayView2<'_, f64>) -> Result<f64> {
        let lp = self.log_density(x)?;
        if lp.is_empty() {
            return Err(TestbedError::invalid("x", "no samples"));
        }
        Ok(-lp.mean().unwrap_or(f64::NAN))
    }

    /// `n` exact samples of the data distribution, with the component each came from.
    pub fn sample_with_labels(&self, n: usize, rng: &mut Rng) -> (Array2<f64>, Vec<usize>) {
        let d = self.dim;
        let mut out = Array2::zeros((n, d));
        let mut labels = Vec::with_capacity(n);
        let mut z = vec![0.0; d];
        for mut row in out.rows_mut() {
            let k = self.pick_component(rng.uniform());
            rng.fill_normal(&mut z);
            let row = row.as_slice_mut().expect("fresh arrays are contiguous");
            self.factors[k].mul_lower(&z, row);
            for (v, m) in row.iter_mut().zip(self.mean(k)) {
                *v += m;
            }
            labels.push(k);
        }
        (out, labels)
    }

    /// `n` exact samples of the data distribution.
    pub fn sample(&self, n: usize, rng: &mut Rng) -> Array2<f64> {
        self.sample_with_labels(n, rng).0
    }

    /// `n` exact samples of the noised marginal of `alpha x0 + sigma eps`.
    pub fn sample_noised(&self, n: usize, alpha: f64, sigma: f64, rng: &mut Rng) -> Result<Array2<f64>> {
        for (name, v) in [("alpha", alpha), ("sigma", sigma)] {
            if !v.is_finite() {
                return Err(TestbedError::invalid(name, format!("{v} is not finite")));
            }
        }
        let x0 = self.sample(n, rng);
        let mut eps = vec![0.0; n * self.dim];
        rng.fill_normal(&mut eps);
        let eps = Array2::from_shape_vec((n, self.dim), eps).expect("length is n * dim");
        Ok(x0 * alpha + eps * sigma)
    }

    /// Inverse-CDF choice of a component from a uniform variate in [0, 1).
    fn pick_component(&self, u: f64) -> usize {
        let mut acc = 0.0;
        for (k, w) in self.weights.iter().enumerate() {
            acc += w;
            if u < acc {
                return k;
            }
        }
        self.n_components() - 1
    }
}

/// Symmetric (to 1e-10 relative) and positive definite.
fn check_spd(a: &[f64], dim: usize, component: usize) -> Result<()> {
    if a.iter().any(|v| !v.is_finite()) {
        return Err(TestbedError::NotPositiveDefinite {
            component,
            reason: "it has non-finite entries".into(),
        });
    }
    let scale = a.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    for i in 0..dim {
        for j in 0..i {
            if (a[i * dim + j] - a[j * dim + i]).abs() > 1e-10 * scale {
                return Err(TestbedError::NotPositiveDefinite {
                    component,
                    reason: format!(
                        "it is not symmetric: [{i}][{j}] = {} but [{j}][{i}] = {}",
                        a[i * dim + j],
                        a[j * dim + i]
                    ),
                });
            }
        }
    }
    if Cholesky::new(a, dim).is_none() {
        return Err(TestbedError::NotPositiveDefinite {
            component,
            reason: "it has a non-positive eigenvalue (Cholesky failed)".into(),
        });
    }
    Ok(())
}

/// A mixture's exact marginal at one noise level `(alpha, sigma)`; see [`GaussianMixture::at_noise`].
#[derive(Clone, Debug)]
pub struct NoisedMixture<'a> {
    gmm: &'a GaussianMixture,
    alpha: f64,
    sigma: f64,
    /// Cholesky factors of `C_k = alpha^2 Sigma_k + sigma^2 I`.
    factors: Vec<Cholesky>,
    /// `ln w_k - ln det(C_k)/2 - D ln(2 pi)/2`.
    log_norm: Vec<f64>,
}

/// What one row's posterior evaluation needs to produce.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Want {
    Density,
    Score,
    ScoreAndMean,
}

/// Turns one row's `(ln p, responsibilities, g, h)` into that row's output values.
type RowEmitter<'a> = dyn Fn(f64, &[f64], &[f64], &[f64], &mut [f64]) + Sync + 'a;

/// Scratch space for one row, reused across the rows of a work unit.
struct RowScratch {
    log_terms: Vec<f64>,
    solved: Vec<Vec<f64>>,
    tmp: Vec<f64>,
}

impl RowScratch {
    fn new(k: usize, d: usize) -> Self {
        Self {
            log_terms: vec![0.0; k],
            solved: vec![vec![0.0; d]; k],
            tmp: vec![0.0; d],
        }
    }
}

impl NoisedMixture<'_> {
    pub fn alpha(&self) -> f64 {
        self.alpha
    }

    pub fn sigma(&self) -> f64 {
        self.sigma
    }

    /// Evaluates one row: returns `ln p(x)`; fills `resp` with the responsibilities, `g`
    /// with `sum_k r_k C_k^-1 (x - alpha mu_k)` and `h` with `E[x0 | x]` as `want` asks.
    fn eval_row(
        &self,
        x: &[f64],
        want: Want,
        s: &mut RowScratch,
        resp: &mut [f64],
        g: &mut [f64],
        h: &mut [f64],
    ) -> f64 {
        let gmm = self.gmm;
        let d = gmm.dim;
        for k in 0..gmm.n_components() {
            let z = &mut s.solved[k];
            for ((zi, xi), mi) in z.iter_mut().zip(x).zip(gmm.mean(k)) {
                *zi = xi - self.alpha * mi;
            }
            let f = &self.factors[k];
            f.solve_lower(z);
            let quad: f64 = z.iter().map(|v| v * v).sum();
            s.log_terms[k] = self.log_norm[k] - 0.5 * quad;
            if want != Want::Density {
                // z <- C_k^-1 (x - alpha mu_k)
                f.solve_upper_t(z);
            }
        }
        // Log-sum-exp: responsibilities stay exact even when every density underflows.
        let max = s.log_terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let total: f64 = s.log_terms.iter().map(|l| (l - max).exp()).sum();
        let log_p = max + total.ln();
        if want == Want::Density {
            return log_p;
        }
        g.fill(0.0);
        if want == Want::ScoreAndMean {
            h.fill(0.0);
        }
        for k in 0..gmm.n_components() {
            let r = (s.log_terms[k] - log_p).exp();
            resp[k] = r;
            if r == 0.0 {
                continue;
            }
            let y = &s.solved[k];
            for (gi, yi) in g.iter_mut().zip(y) {
                *gi += r * yi;
            }
            if want == Want::ScoreAndMean {
                mat_vec(gmm.covariance(k), y, &mut s.tmp);
                for ((hi, mi), ti) in h.iter_mut().zip(gmm.mean(k)).zip(&s.tmp) {
                    *hi += r * (mi + self.alpha * ti);
                }
            }
        }
        debug_assert_eq!(g.len(), d);
        log_p
    }

    fn check_batch(&self, x: &ArrayView2<'_, f64>) -> Result<()> {
        if x.ncols() != self.gmm.dim {
            return Err(TestbedError::shape(
                "mixture input",
                format!("[batch, {}]", self.gmm.dim),
                x.shape(),
            ));
        }
        Ok(())
    }

    /// Runs `eval_row` over every row in parallel (row results do not depend on the
    /// split, so the output is identical for any number of threads). `per_row` is the
    /// number of output values per row; `emit` turns one row's evaluation into them.
    fn map_rows(
        &self,
        x: ArrayView2<'_, f64>,
        want: Want,
        per_row: usize,
        emit: &RowEmitter<'_>,
    ) -> Result<Vec<f64>> {
        self.check_batch(&x)?;
        let (k, d) = (self.gmm.n_components(), self.gmm.dim);
        let x = x.as_standard_layout();
        let xs = x.as_slice().expect("standard layout is contiguous");
        let mut out = vec![0.0; x.nrows() * per_row];
        let work = |(chunk_idx, out_chunk): (usize, &mut [f64])| {
            let mut scratch = RowScratch::new(k, d);
            let (mut resp, mut g, mut h) = (vec![0.0; k], vec![0.0; d], vec![0.0; d]);
            for (i, o) in out_chunk.chunks_mut(per_row).enumerate() {
                let row = chunk_idx * ROWS_PER_TASK + i;
                let xr = &xs[row * d..(row + 1) * d];
                let lp = self.eval_row(xr, want, &mut scratch, &mut resp, &mut g, &mut h);
                emit(lp, &resp, &g, &h, o);
            }
        };
        if per_row > 0 {
            let chunk = ROWS_PER_TASK * per_row;
            if x.nrows() * k * d * d > 1 << 14 {
                out.par_chunks_mut(chunk).enumerate().for_each(work);
            } else {
                out.chunks_mut(chunk).enumerate().for_each(work);
            }
        }
        Ok(out)
    }

    /// `ln p(x)` of each row.
    pub fn log_density(&self, x: ArrayView2<'_, f64>) -> Result<Array1<f64>> {
        let v = self.map_rows(x, Want::Density, 1, &|lp, _, _, _, o| o[0] = lp)?;
        Ok(Array1::from_vec(v))
    }

    /// Posterior component probabilities `p(k | x)`, [batch, K].
    pub fn responsibilities(&self, x: ArrayView2<'_, f64>) -> Result<Array2<f64>> {
        let k = self.gmm.n_components();
        let n = x.nrows();
        let v = self.map_rows(x, Want::Score, k, &|_, r, _, _, o| o.copy_from_slice(r))?;
        Ok(Array2::from_shape_vec((n, k), v).expect("n * k values"))
    }

    /// The score `grad_x ln p(x)`, [batch, D].
    pub fn score(&self, x: ArrayView2<'_, f64>) -> Result<Array2<f64>> {
        self.predict(x, Parameterization::Score)
    }

    /// The exact (posterior-mean) prediction of kind `target` for each row of `x`.
    ///
    /// Epsilon `sigma g`, sample `E[x0|x]`, v `alpha eps - sigma x0`, flow `eps - x0`,
    /// score `-g`, with `g = sum_k r_k C_k^-1 (x - alpha mu_k)`.
    pub fn predict(&self, x: ArrayView2<'_, f64>, target: Parameterization) -> Result<Array2<f64>> {
        let (alpha, sigma) = (self.alpha, self.sigma);
        let (cg, ch) = match target {
            Parameterization::Epsilon => (sigma, 0.0),
            Parameterization::Sample => (0.0, 1.0),
            Parameterization::V => (alpha * sigma, -sigma),
            Parameterization::Flow => (sigma, -1.0),
            Parameterization::Score => (-1.0, 0.0),
            other => {
                return Err(TestbedError::invalid(
                    "parameterization",
                    format!("{other:?} is not supported by the exact mixture model"),
                ));
            }
        };
        let want = if ch == 0.0 {
            Want::Score
        } else {
            Want::ScoreAndMean
        };
        let d = self.gmm.dim;
        let n = x.nrows();
        let v = self.map_rows(x, want, d, &|_, _, g, h, o| {
            for i in 0..d {
                o[i] = cg * g[i] + if ch == 0.0 { 0.0 } else { ch * h[i] };
            }
        })?;
        Ok(Array2::from_shape_vec((n, d), v).expect("n * d values"))
    }
}
