//! A Gaussian mixture with diagonal covariances whose epsilon prediction and its
//! vector-Jacobian products are exact closed forms: the differentiable test model for
//! inversion and adjoint gradients.
//!
//! Data `x0 ~ sum_k w_k N(mu_k, diag(s_k^2))`, `w = softmax(logits)`. At `x = alpha x0 +
//! sigma eps` the marginal is `sum_k w_k N(alpha mu_k, diag(c_k))`, `c_k = alpha^2 s_k^2 +
//! sigma^2`. With `y_k = (x - alpha mu_k) / c_k` and responsibilities `r_k`,
//! `g = sum_k r_k y_k = -grad log p` and the exact epsilon is `sigma g`. Its Jacobians:
//!
//! - `dg/dx = sum_k r_k diag(1/c_k) - sum_k r_k y_k y_k^T + g g^T` (minus the Hessian of
//!   `log p`, symmetric);
//! - `dg/dlogit_k = r_k (y_k - g)`;
//! - `dg/dmu_k = -alpha r_k diag(1/c_k) + alpha r_k (y_k - g) y_k^T`.
//!
//! The differentiable parameters are `[logits (K), means (K x D, row-major)]`: the
//! logits act as soft class conditioning, the means as model weights.

use diffusion_core::{
    ConditionalDenoiser, CoreError, Denoiser, NoiseLevel, Parameterization, Rng, Tensor,
    model::{DifferentiableDenoiser, Vjp},
};

use crate::error::{Result, invalid_param};

const LN_2PI: f64 = 1.837_877_066_409_345_5;

/// A diagonal Gaussian mixture, as an exact epsilon-predicting model.
#[derive(Clone, Debug, PartialEq)]
pub struct DiagonalGmm {
    dim: usize,
    logits: Vec<f64>,
    /// K x D.
    means: Vec<f64>,
    /// K x D standard deviations of the data.
    stds: Vec<f64>,
}

/// One row's posterior quantities.
struct RowEval {
    /// Responsibilities, K.
    r: Vec<f64>,
    /// `y_k`, K x D.
    y: Vec<f64>,
    /// `g`, D.
    g: Vec<f64>,
    /// `1 / c_k`, K x D.
    inv_c: Vec<f64>,
}

impl DiagonalGmm {
    /// `weights` must be positive (they are normalised); `means` and `stds` are K rows of D.
    pub fn new(weights: &[f64], means: Vec<Vec<f64>>, stds: Vec<Vec<f64>>) -> Result<Self> {
        let k = weights.len();
        if k == 0 || means.len() != k || stds.len() != k {
            return Err(invalid_param(
                "components",
                k as f64,
                format!("{k} weights, {} means, {} stds", means.len(), stds.len()),
            ));
        }
        let dim = means[0].len();
        if dim == 0 || means.iter().chain(&stds).any(|r| r.len() != dim) {
            return Err(invalid_param(
                "dim",
                dim as f64,
                "every mean and std row needs the same length > 0",
            ));
        }
        if let Some(&w) = weights.iter().find(|w| !(w.is_finite() && **w > 0.0)) {
            return Err(invalid_param("weight", w, "weights must be positive and finite"));
        }
        if let Some(&m) = means.iter().flatten().find(|m| !m.is_finite()) {
            return Err(invalid_param("mean", m, "means must be finite"));
        }
        if let Some(&s) = stds.iter().flatten().find(|s| !(s.is_finite() && **s > 0.0)) {
            return Err(invalid_param(
                "std",
                s,
                "standard deviations must be positive and finite",
            ));
        }
        Ok(Self {
            dim,
            logits: weights.iter().map(|w| w.ln()).collect(),
            means: means.concat(),
            stds: stds.concat(),
        })
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn n_components(&self) -> usize {
        self.logits.len()
    }

    pub fn mean(&self, k: usize) -> &[f64] {
        &self.means[k * self.dim..(k + 1) * self.dim]
    }

    pub fn std(&self, k: usize) -> &[f64] {
        &self.stds[k * self.dim..(k + 1) * self.dim]
    }

    /// Normalised weights `softmax(logits)`.
    pub fn weights(&self) -> Vec<f64> {
        let m = self.logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = self.logits.iter().map(|l| (l - m).exp()).collect();
        let s: f64 = e.iter().sum();
        e.iter().map(|v| v / s).collect()
    }

    /// The class-`k` model: component `k` alone.
    pub fn class(&self, k: usize) -> Result<Self> {
        if k >= self.n_components() {
            return Err(invalid_param(
                "class",
                k as f64,
                format!("{} classes", self.n_components()),
            ));
        }
        Ok(Self {
            dim: self.dim,
            logits: vec![0.0],
            means: self.mean(k).to_vec(),
            stds: self.std(k).to_vec(),
        })
    }

    /// The differentiable parameters `[logits, means]`.
    pub fn params(&self) -> Vec<f64> {
        [self.logits.as_slice(), self.means.as_slice()].concat()
    }

    /// Replaces the parameters (same layout as [`Self::params`]).
    pub fn set_params(&mut self, p: &[f64]) -> Result<()> {
        let k = self.n_components();
        if p.len() != k + self.means.len() {
            return Err(invalid_param(
                "params",
                p.len() as f64,
                format!("expected {}", k + self.means.len()),
            ));
        }
        self.logits.copy_from_slice(&p[..k]);
        self.means.copy_from_slice(&p[k..]);
        Ok(())
    }

    /// `n` draws from class `k` as rows, `mu_k + s_k z`, `z` from `rng`.
    pub fn sample_class(&self, k: usize, n: usize, rng: &mut Rng) -> Result<Vec<f64>> {
        let class = self.class(k)?;
        let mut z = vec![0.0; n * self.dim];
        rng.fill_normal(&mut z);
        for row in z.chunks_mut(self.dim) {
            for ((v, m), s) in row.iter_mut().zip(class.mean(0)).zip(class.std(0)) {
                *v = m + s * *v;
            }
        }
        Ok(z)
    }

    /// Whitened coordinates `(x - mu_k) / s_k` of rows `x` relative to component `k`.
    pub fn whiten(&self, k: usize, x: &[f64]) -> Vec<f64> {
        x.chunks(self.dim)
            .flat_map(|row| {
                row.iter()
                    .zip(self.mean(k))
                    .zip(self.std(k))
                    .map(|((v, m), s)| (v - m) / s)
            })
            .collect()
    }

    fn rows<T: Tensor>(&self, x: &T) -> diffusion_core::Result<usize> {
        let shape = x.shape();
        let per: usize = shape.iter().skip(1).product();
        if shape.len() < 2 || per != self.dim {
            return Err(CoreError::ShapeMismatch {
                context: "DiagonalGmm input (batch, ...) with dim values per item",
                expected: vec![shape.first().copied().unwrap_or(0), self.dim],
                got: shape.to_vec(),
            });
        }
        Ok(shape[0])
    }

    fn check_level(level: NoiseLevel) -> diffusion_core::Result<()> {
        let ok =
            level.alpha.is_finite() && level.sigma.is_finite() && level.alpha >= 0.0 && level.sigma >= 0.0;
        if !ok || (level.alpha == 0.0 && level.sigma == 0.0) {
            return Err(CoreError::InvalidArgument {
                name: "noise level",
                reason: format!("DiagonalGmm needs finite alpha, sigma >= 0, not both 0: {level:?}"),
            });
        }
        Ok(())
    }

    fn eval_row(&self, x: &[f64], alpha: f64, sigma: f64) -> RowEval {
        let (kn, d) = (self.n_components(), self.dim);
        let mut y = vec![0.0; kn * d];
        let mut inv_c = vec![0.0; kn * d];
        let mut logt = vec![0.0; kn];
        for k in 0..kn {
            let mut acc = self.logits[k];
            for i in 0..d {
                let s = self.stds[k * d + i];
                let c = alpha * alpha * s * s + sigma * sigma;
                let z = x[i] - alpha * self.means[k * d + i];
                inv_c[k * d + i] = 1.0 / c;
                y[k * d + i] = z / c;
                acc -= 0.5 * (z * z / c + c.ln() + LN_2PI);
            }
            logt[k] = acc;
        }
        // Log-sum-exp: the logits' own normaliser cancels here too.
        let m = logt.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let tot: f64 = logt.iter().map(|l| (l - m).exp()).sum();
        let r: Vec<f64> = logt.iter().map(|l| (l - m).exp() / tot).collect();
        let mut g = vec![0.0; d];
        for k in 0..kn {
            for i in 0..d {
                g[i] += r[k] * y[k * d + i];
            }
        }
        RowEval { r, y, g, inv_c }
    }

    /// The exact epsilon for `x` at `level`.
    fn epsilon<T: Tensor>(&self, x: &T, level: NoiseLevel) -> diffusion_core::Result<T> {
        Self::check_level(level)?;
        self.rows(x)?;
        let data = x.to_f64_vec();
        let mut out = vec![0.0; data.len()];
        for (xr, or) in data.chunks(self.dim).zip(out.chunks_mut(self.dim)) {
            let e = self.eval_row(xr, level.alpha, level.sigma);
            for (o, g) in or.iter_mut().zip(&e.g) {
                *o = level.sigma * g;
            }
        }
        x.from_f64_like(&out)
    }
}

impl<T: Tensor> Denoiser<T> for DiagonalGmm {
    fn parameterization(&self) -> Parameterization {
        Parameterization::Epsilon
    }

    fn predict(&self, x: &T, level: NoiseLevel) -> diffusion_core::Result<T> {
        self.epsilon(x, level)
    }
}

impl<T: Tensor> ConditionalDenoiser<T> for DiagonalGmm {
    /// The class (component) index; `None` is the whole mixture.
    type Cond = usize;

    fn parameterization(&self) -> Parameterization {
        Parameterization::Epsilon
    }

    fn predict_cond(&self, x: &T, level: NoiseLevel, cond: Option<&usize>) -> diffusion_core::Result<T> {
        match cond {
            None => self.epsilon(x, level),
            Some(&k) => {
                let class = self.class(k).map_err(|e| CoreError::InvalidArgument {
                    name: "class",
                    reason: e.to_string(),
                })?;
                class.epsilon(x, level)
            }
        }
    }
}

impl<T: Tensor> DifferentiableDenoiser<T> for DiagonalGmm {
    fn num_params(&self) -> usize {
        self.n_components() + self.means.len()
    }

    fn vjp(&self, x: &T, level: NoiseLevel, cotangent: &T) -> diffusion_core::Result<Vjp<T>> {
        Self::check_level(level)?;
        self.rows(x)?;
        diffusion_core::tensor::check_same_shape("vjp cotangent", x.shape(), cotangent.shape())?;
        let (alpha, sigma) = (level.alpha, level.sigma);
        let (kn, d) = (self.n_components(), self.dim);
        let data = x.to_f64_vec();
        let cot = cotangent.to_f64_vec();
        let mut gx = vec![0.0; data.len()];
        let mut gp = vec![0.0; kn + kn * d];
        for ((xr, ur), gxr) in data.chunks(d).zip(cot.chunks(d)).zip(gx.chunks_mut(d)) {
            let e = self.eval_row(xr, alpha, sigma);
            // eps = sigma g: pull v = sigma u back through g.
            let v: Vec<f64> = ur.iter().map(|u| sigma * u).collect();
            let vg: f64 = v.iter().zip(&e.g).map(|(a, b)| a * b).sum();
            for i in 0..d {
                gxr[i] = e.g[i] * vg;
            }
            for k in 0..kn {
                let yk = &e.y[k * d..(k + 1) * d];
                let ick = &e.inv_c[k * d..(k + 1) * d];
                let vy: f64 = v.iter().zip(yk).map(|(a, b)| a * b).sum();
                let rk = e.r[k];
                for i in 0..d {
                    gxr[i] += rk * (v[i] * ick[i] - yk[i] * vy);
                }
                gp[k] += rk * (vy - vg);
                for i in 0..d {
                    gp[kn + k * d + i] += alpha * rk * ((vy - vg) * yk[i] - v[i] * ick[i]);
                }
            }
        }
        Ok(Vjp {
            x: x.from_f64_like(&gx)?,
            params: gp,
        })
    }
}
