//! Exact posteriors `q(x_{t-1} | x_t, x_0)`, the model posterior
//! `p(x_{t-1} | x_t) = sum_x0 q(x_{t-1} | x_t, x0) p(x0 | x_t)`, and sampling.

use diffusion_core::Rng;

use crate::error::{DiscreteError, Result};
use crate::process::Process;

impl Process {
    /// `q(x_{t-1} | x_t, x_0)` for `t` in `1..=T`, written into `out` (length `k`):
    /// `Q_t[., x_t] * Qbar_{t-1}[x_0, .] / Qbar_t[x_0, x_t]`. At `t = 1` it is the point mass
    /// at `x_0`. Errors when `x_0` is the mask or `x_t` cannot follow from `x_0`.
    pub fn posterior(&self, t: usize, xt: usize, x0: usize, out: &mut [f64]) -> Result<()> {
        self.check_t(t, 1)?;
        self.check_x(xt, "x_t")?;
        self.check_x(x0, "x0")?;
        self.check_len(out.len(), "posterior out")?;
        if self.mask() == Some(x0) {
            return Err(DiscreteError::MaskedX0 { cell: 0 });
        }
        let (step, prev) = (self.one_step(t)?, self.cumulative(t - 1)?);
        // Normalised by the numerators' own sum (= Qbar_t[x0, x_t]) so that rounding in the
        // small replacement terms cannot leave the result off one.
        for (j, o) in out.iter_mut().enumerate() {
            *o = self.entry(step, j, xt) * self.entry(prev, x0, j);
        }
        let z: f64 = out.iter().sum();
        if z <= 0.0 {
            return Err(DiscreteError::Impossible { t, xt, x0 });
        }
        out.iter_mut().for_each(|o| *o /= z);
        Ok(())
    }

    /// The model posterior `p(x_{t-1} | x_t) = sum_x0 q(x_{t-1} | x_t, x0) p(x0)` for a
    /// predicted distribution `p_x0` (length `k`, non-negative; its mask entry is ignored).
    /// The sum runs over the `x0` that can produce `x_t` (`Qbar_t[x0, x_t] > 0`), with `p`
    /// renormalised over them; with mask-and-replace and uniform processes that is every
    /// data category. Costs `O(k)`.
    pub fn model_posterior(&self, t: usize, xt: usize, p_x0: &[f64], out: &mut [f64]) -> Result<()> {
        self.check_t(t, 1)?;
        self.check_x(xt, "x_t")?;
        self.check_len(p_x0.len(), "p_x0")?;
        self.check_len(out.len(), "model_posterior out")?;
        if p_x0.iter().any(|p| !p.is_finite() || *p < 0.0) {
            return Err(DiscreteError::NonFinite("p_x0 (or negative)"));
        }
        let s = self.unnormalised_model_posterior(t, xt, p_x0, out);
        if s <= 0.0 {
            return Err(DiscreteError::NoCompatibleMass { xt });
        }
        out.iter_mut().for_each(|r| *r /= s);
        Ok(())
    }

    /// Writes `R_j = sum_x0 p(x0) Q_t[j, x_t] Qbar_{t-1}[x0, j] / Qbar_t[x0, x_t]` over the
    /// compatible `x0` into `out` and returns their mass `S` (`R / S` is the posterior).
    pub(crate) fn unnormalised_model_posterior(
        &self,
        t: usize,
        xt: usize,
        p: &[f64],
        out: &mut [f64],
    ) -> f64 {
        let (a1, b1, g1) = self.cumulative(t - 1).expect("t checked");
        let col = self.column(t, xt);
        let mask = self.mask();
        let m = self.replacement();
        let (mut w_sum, mut s) = (0.0, 0.0);
        // out temporarily holds w_j = p_j / Z_j.
        for (j, w) in out.iter_mut().enumerate() {
            let z = col.evidence((a1, b1, g1), j);
            *w = if Some(j) != mask && z > 0.0 {
                s += p[j];
                p[j] / z
            } else {
                0.0
            };
            w_sum += *w;
        }
        for (j, r) in out.iter_mut().enumerate() {
            let mut prev = a1 * *r + b1 * m[j] * w_sum;
            if Some(j) == mask {
                prev += g1 * w_sum;
            }
            *r = col.q[j] * prev;
        }
        s
    }

    /// Column `x_t` of `Q_t` with its products against `m` and the mask.
    pub(crate) fn column(&self, t: usize, xt: usize) -> Column {
        let step = self.one_step(t).expect("t checked");
        let q: Vec<f64> = (0..self.k()).map(|j| self.entry(step, j, xt)).collect();
        let to_m = q.iter().zip(self.replacement()).map(|(a, b)| a * b).sum();
        let to_mask = self.mask().map_or(0.0, |mk| q[mk]);
        Column { q, to_m, to_mask }
    }

    /// Draws `x_t ~ q(x_t | x_0)` for every cell, `t` in `0..=T`, one uniform per cell (two
    /// for replaced tokens) from `rng`, cells in order.
    pub fn sample_forward(&self, t: usize, x0: &[usize], rng: &mut Rng) -> Result<Vec<usize>> {
        let (a, b, _) = self.cumulative(t)?;
        let mask = self.mask();
        x0.iter()
            .enumerate()
            .map(|(cell, &x)| {
                self.check_x(x, "x0")?;
                if mask == Some(x) {
                    return Err(DiscreteError::MaskedX0 { cell });
                }
                let u = rng.uniform();
                Ok(if u < a {
                    x
                } else if u < a + b {
                    categorical(self.replacement(), rng.uniform())
                } else {
                    mask.expect("gbar > 0 only with a mask")
                })
            })
            .collect()
    }

    /// Draws `x_{t-1} ~ p(x_{t-1} | x_t)` for every cell from the predicted `x0`
    /// distributions `p_x0` (cells x `k`, row-major), one uniform per cell. At `t = 1` this
    /// draws `x0` itself.
    pub fn sample_step(&self, t: usize, xt: &[usize], p_x0: &[f64], rng: &mut Rng) -> Result<Vec<usize>> {
        let k = self.k();
        if p_x0.len() != xt.len() * k {
            return Err(DiscreteError::LengthMismatch {
                context: "sample_step p_x0",
                expected: xt.len() * k,
                got: p_x0.len(),
            });
        }
        let mut post = vec![0.0; k];
        xt.iter()
            .zip(p_x0.chunks_exact(k))
            .map(|(&x, p)| {
                self.model_posterior(t, x, p, &mut post)?;
                Ok(categorical(&post, rng.uniform()))
            })
            .collect()
    }
}

/// `Q_t[., x_t]`, `sum_j Q_t[j, x_t] m_j` and `Q_t[mask, x_t]`.
pub(crate) struct Column {
    pub q: Vec<f64>,
    pub to_m: f64,
    pub to_mask: f64,
}

impl Column {
    /// `Qbar_t[x0, x_t] = sum_j Qbar_{t-1}[x0, j] Q_t[j, x_t]` for a data category `x0`,
    /// from the coefficients of `Qbar_{t-1}` (summed in this order everywhere, so the
    /// posterior's normaliser and the loss's agree to the last bit).
    pub fn evidence(&self, (a, b, g): (f64, f64, f64), x0: usize) -> f64 {
        a * self.q[x0] + b * self.to_m + g * self.to_mask
    }
}

/// The category whose cumulative probability first exceeds `u` (in `[0, 1)`); the last
/// category with positive probability when rounding leaves `u` beyond the total.
pub fn categorical(probs: &[f64], u: f64) -> usize {
    let total: f64 = probs.iter().sum();
    let target = u * total;
    let mut acc = 0.0;
    let mut last = 0;
    for (i, &p) in probs.iter().enumerate() {
        if p > 0.0 {
            acc += p;
            last = i;
            if target < acc {
                return i;
            }
        }
    }
    last
}
