//! The variational loss `KL(q(x_{t-1} | x_t, x0) || p(x_{t-1} | x_t))` (the negative log
//! likelihood `-log p(x0 | x_1)` at `t = 1`) with per-cell weights, plus the auxiliary
//! cross-entropy `-log p(x0 | x_t)`, and its gradient with respect to the logits.

use crate::error::{DiscreteError, Result};
use crate::process::Process;

/// Weighted sums over the cells of one item: `total = vb + aux_weight * aux`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Loss {
    /// `sum_c w_c KL_c` (the variational bound's term at this `t`).
    pub vb: f64,
    /// `sum_c w_c CE_c`, the auxiliary `x0` cross-entropy.
    pub aux: f64,
    /// `vb + aux_weight * aux`, the value whose gradient is returned.
    pub total: f64,
}

/// `p(x0)`: the softmax of `logits` (length `k`) over the data categories, zero at the mask.
pub fn x0_probabilities(process: &Process, logits: &[f64], out: &mut [f64]) -> Result<()> {
    process.check_len(logits.len(), "logits")?;
    process.check_len(out.len(), "x0_probabilities out")?;
    if logits.iter().any(|v| !v.is_finite()) {
        return Err(DiscreteError::NonFinite("logits"));
    }
    softmax(logits, process.mask(), out);
    Ok(())
}

/// Writes the softmax over every category but `mask` and returns log of its normaliser
/// relative to the largest logit (so `ln p_i = l_i - max - ln_z`).
fn softmax(logits: &[f64], mask: Option<usize>, out: &mut [f64]) -> (f64, f64) {
    let max = logits
        .iter()
        .enumerate()
        .filter(|(i, _)| Some(*i) != mask)
        .map(|(_, v)| *v)
        .fold(f64::NEG_INFINITY, f64::max);
    let mut z = 0.0;
    for (i, (o, &l)) in out.iter_mut().zip(logits).enumerate() {
        *o = if Some(i) == mask { 0.0 } else { (l - max).exp() };
        z += *o;
    }
    out.iter_mut().for_each(|o| *o /= z);
    (max, z.ln())
}

impl Process {
    /// The loss of one item at step `t` (`1..=T`): clean cells `x0`, noisy cells `xt`,
    /// the network's logits for `p(x0 | x_t)` (cells x `k`, row-major; the mask's logit
    /// is ignored), per-cell weights (0 skips a cell, e.g. a condition cell) and the
    /// auxiliary weight. When `grad` is given (same length as `logits`) it receives
    /// `d total / d logits` (overwritten). Importance weights of the timestep multiply
    /// the result outside.
    pub fn loss(
        &self,
        t: usize,
        x0: &[usize],
        xt: &[usize],
        logits: &[f64],
        weights: &[f64],
        aux_weight: f64,
        mut grad: Option<&mut [f64]>,
    ) -> Result<Loss> {
        self.check_t(t, 1)?;
        let k = self.k();
        let cells = x0.len();
        for (context, len, expected) in [
            ("loss x_t", xt.len(), cells),
            ("loss logits", logits.len(), cells * k),
            ("loss weights", weights.len(), cells),
        ] {
            if len != expected {
                return Err(DiscreteError::LengthMismatch {
                    context,
                    expected,
                    got: len,
                });
            }
        }
        if let Some(g) = grad.as_deref()
            && g.len() != cells * k
        {
            return Err(DiscreteError::LengthMismatch {
                context: "loss grad",
                expected: cells * k,
                got: g.len(),
            });
        }
        if weights.iter().any(|w| !w.is_finite()) || !aux_weight.is_finite() {
            return Err(DiscreteError::NonFinite("loss weights"));
        }
        let prev = self.cumulative(t - 1)?;
        let (a1, b1, g1) = prev;
        let mask = self.mask();
        let m = self.replacement();
        let (mut p, mut q, mut r, mut c) = (vec![0.0; k], vec![0.0; k], vec![0.0; k], vec![0.0; k]);
        let mut out = Loss::default();
        for cell in 0..cells {
            let (x, y, w) = (x0[cell], xt[cell], weights[cell]);
            let lg = &logits[cell * k..(cell + 1) * k];
            let mut g_cell = grad.as_deref_mut().map(|g| &mut g[cell * k..(cell + 1) * k]);
            if let Some(g) = g_cell.as_deref_mut() {
                g.fill(0.0);
            }
            if w == 0.0 {
                continue;
            }
            self.check_x(y, "x_t")?;
            self.check_x(x, "x0")?;
            if mask == Some(x) {
                return Err(DiscreteError::MaskedX0 { cell });
            }
            if lg.iter().any(|v| !v.is_finite()) {
                return Err(DiscreteError::NonFinite("logits"));
            }
            let (max, ln_z) = softmax(lg, mask, &mut p);
            let col = self.column(t, y);
            self.posterior(t, y, x, &mut q)?;
            let s = self.unnormalised_model_posterior(t, y, &p, &mut r);
            if s <= 0.0 {
                return Err(DiscreteError::NoCompatibleMass { xt: y });
            }
            let ln_s = s.ln();
            let mut kl = 0.0;
            for j in 0..k {
                c[j] = 0.0;
                if q[j] > 0.0 {
                    let rj = r[j].max(f64::MIN_POSITIVE);
                    kl += q[j] * (q[j].ln() - rj.ln() + ln_s);
                    c[j] = q[j] * col.q[j] / rj;
                }
            }
            let ce = -(lg[x] - max - ln_z);
            out.vb += w * kl;
            out.aux += w * ce;
            let Some(g) = g_cell else { continue };
            // d KL / d p(x0') for compatible x0'; then back through the softmax.
            let cm: f64 = c.iter().zip(m).map(|(ci, mi)| ci * mi).sum();
            let c_mask = mask.map_or(0.0, |mk| c[mk]);
            let mut dot = 0.0;
            for j in 0..k {
                let z = if Some(j) == mask {
                    0.0
                } else {
                    col.evidence(prev, j)
                };
                let dp = if Some(j) != mask && z > 0.0 {
                    -(a1 * c[j] + b1 * cm + g1 * c_mask) / z + 1.0 / s
                } else {
                    0.0
                };
                g[j] = dp;
                dot += p[j] * dp;
            }
            for j in 0..k {
                if Some(j) == mask {
                    g[j] = 0.0;
                    continue;
                }
                let onehot = if j == x { 1.0 } else { 0.0 };
                g[j] = w * (p[j] * (g[j] - dot) + aux_weight * (p[j] - onehot));
            }
        }
        out.total = out.vb + aux_weight * out.aux;
        Ok(out)
    }
}
