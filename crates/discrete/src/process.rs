//! The forward process: one family of transition matrices that covers uniform, absorbing,
//! mask-and-replace and marginal-transition diffusion, with closed-form cumulative products.
//!
//! Every one-step matrix has the form (categories `0..K`, the mask, when there is one,
//! being category `K - 1`; `m` a distribution over the non-mask categories):
//!
//! ```text
//! Q_t[i, j] = a_t [i == j] + (1 - a_t - g_t) m_j + g_t [j == mask]     (i not the mask)
//! Q_t[mask, j] = [j == mask]                                            (the mask absorbs)
//! ```
//!
//! Products of such matrices stay in the family: `Qbar_t` has the same form with
//! `abar_t = prod a_s` and `1 - gbar_t = prod (1 - g_s)`. The process is therefore stored
//! as its cumulative tables `abar`, `gbar`, from which the one-step values follow.

use std::f64::consts::FRAC_PI_2;

use crate::error::{DiscreteError, Result};
use crate::matrix::Matrix;

/// VQ-Diffusion's linear cumulative schedules for mask-and-replace diffusion: `abar_t` runs
/// linearly from `alpha_bar_1` to `alpha_bar_T`, `gbar_t` from `gamma_bar_1` to
/// `gamma_bar_T`. `Default` is the paper's (0.99999 -> 0.000009, 0.000009 -> 0.99999).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct VqSchedule {
    pub alpha_bar_1: f64,
    pub alpha_bar_t: f64,
    pub gamma_bar_1: f64,
    pub gamma_bar_t: f64,
}

impl Default for VqSchedule {
    fn default() -> Self {
        Self {
            alpha_bar_1: 0.99999,
            alpha_bar_t: 0.000009,
            gamma_bar_1: 0.000009,
            gamma_bar_t: 0.99999,
        }
    }
}

/// The cosine schedule `abar_t = f(t) / f(0)`, `f(t) = cos^2(pi/2 (t/T + s) / (1 + s))`, for
/// `t = 1..=T` (DiGress and improved DDPM use `s = 0.008`).
pub fn cosine_alpha_bar(steps: usize, s: f64) -> Vec<f64> {
    let f = |t: f64| ((t / steps as f64 + s) / (1.0 + s) * FRAC_PI_2).cos().powi(2);
    let f0 = f(0.0);
    (1..=steps).map(|t| (f(t as f64) / f0).clamp(0.0, 1.0)).collect()
}

/// A discrete-state forward process over `K` categories and `T` steps.
#[derive(Clone, Debug, PartialEq)]
pub struct Process {
    k: usize,
    mask: bool,
    m: Vec<f64>,
    /// Cumulative tables, index `t` in `0..=T` (index 0 is the identity: 1 and 0).
    alpha_bar: Vec<f64>,
    gamma_bar: Vec<f64>,
    /// One-step values, index `t` in `1..=T` (index 0 unused).
    alpha: Vec<f64>,
    gamma: Vec<f64>,
}

impl Process {
    /// The general constructor. `k` counts every category, the mask included when `mask`
    /// is true (it is then category `k - 1`). `m` (length `k`) is the distribution replaced
    /// tokens are drawn from; it must be zero at the mask and sum to one. `alpha_bar` and
    /// `gamma_bar` are the cumulative tables for `t = 1..=T`: the probability that a token
    /// is still its clean value, and that it is masked (all zero without a mask).
    pub fn from_cumulative(
        k: usize,
        mask: bool,
        m: Vec<f64>,
        alpha_bar: &[f64],
        gamma_bar: &[f64],
    ) -> Result<Self> {
        let invalid = |name, reason: String| Err(DiscreteError::InvalidArgument { name, reason });
        if k < 2 {
            return invalid("k", format!("need at least 2 categories, got {k}"));
        }
        if m.len() != k {
            return Err(DiscreteError::LengthMismatch {
                context: "stationary distribution m",
                expected: k,
                got: m.len(),
            });
        }
        if gamma_bar.len() != alpha_bar.len() {
            return Err(DiscreteError::LengthMismatch {
                context: "gamma_bar",
                expected: alpha_bar.len(),
                got: gamma_bar.len(),
            });
        }
        if alpha_bar.is_empty() {
            return invalid("steps", "need at least one step".into());
        }
        if m.iter().chain(alpha_bar).chain(gamma_bar).any(|v| !v.is_finite()) {
            return Err(DiscreteError::NonFinite("process tables"));
        }
        if m.iter().any(|&v| v < 0.0) || (m.iter().sum::<f64>() - 1.0).abs() > 1e-9 {
            return invalid("m", "must be non-negative and sum to one".into());
        }
        if mask && m[k - 1] != 0.0 {
            return invalid("m", "must be zero at the mask category".into());
        }
        if !mask && gamma_bar.iter().any(|&g| g != 0.0) {
            return invalid("gamma_bar", "must be zero for a process without a mask".into());
        }
        let steps = alpha_bar.len();
        let mut ab = Vec::with_capacity(steps + 1);
        let mut gb = Vec::with_capacity(steps + 1);
        ab.push(1.0);
        gb.push(0.0);
        ab.extend_from_slice(alpha_bar);
        gb.extend_from_slice(gamma_bar);
        let mut alpha = vec![1.0; steps + 1];
        let mut gamma = vec![0.0; steps + 1];
        const TOL: f64 = 1e-12;
        for t in 1..=steps {
            let (a0, a1, g0, g1) = (ab[t - 1], ab[t], gb[t - 1], gb[t]);
            if !(0.0..=1.0).contains(&a1) || !(0.0..=1.0).contains(&g1) || a1 + g1 > 1.0 + TOL {
                return invalid(
                    "schedule",
                    format!("at t={t}: abar={a1}, gbar={g1} not a distribution"),
                );
            }
            if a1 > a0 + TOL || g1 < g0 - TOL {
                return invalid(
                    "schedule",
                    format!("at t={t}: abar must not grow and gbar must not shrink"),
                );
            }
            // A state with abar_{t-1} = 0 has no clean tokens left: a_t is irrelevant.
            alpha[t] = if a0 > 0.0 { (a1 / a0).min(1.0) } else { 0.0 };
            gamma[t] = if g0 < 1.0 {
                (1.0 - (1.0 - g1) / (1.0 - g0)).clamp(0.0, 1.0)
            } else {
                1.0
            };
            if alpha[t] + gamma[t] > 1.0 + 1e-9 {
                return invalid(
                    "schedule",
                    format!(
                        "at t={t}: one-step keep {} + mask {} exceed one",
                        alpha[t], gamma[t]
                    ),
                );
            }
            if alpha[t] + gamma[t] > 1.0 {
                alpha[t] = 1.0 - gamma[t];
            }
        }
        Ok(Self {
            k,
            mask,
            m,
            alpha_bar: ab,
            gamma_bar: gb,
            alpha,
            gamma,
        })
    }

    /// D3PM's uniform process: tokens are replaced by a uniformly drawn category, with the
    /// cumulative keep probabilities `alpha_bar` (`t = 1..=T`, e.g. [`cosine_alpha_bar`]).
    pub fn uniform(k: usize, alpha_bar: &[f64]) -> Result<Self> {
        let m = vec![1.0 / k.max(1) as f64; k];
        Self::from_cumulative(k, false, m, alpha_bar, &vec![0.0; alpha_bar.len()])
    }

    /// D3PM's absorbing process with `k - 1` data categories and the mask `k - 1`: at step
    /// `t` a token is masked with probability `1 / (T - t + 1)`, so `abar_t = 1 - t / T`
    /// and everything is masked at `T`.
    pub fn absorbing(k: usize, steps: usize) -> Result<Self> {
        let ab: Vec<f64> = (1..=steps).map(|t| 1.0 - t as f64 / steps as f64).collect();
        let gb: Vec<f64> = ab.iter().map(|a| 1.0 - a).collect();
        Self::from_cumulative(k, true, data_uniform(k), &ab, &gb)
    }

    /// VQ-Diffusion's mask-and-replace process with `k - 1` data categories and the mask
    /// `k - 1`: keep (`abar`), mask (`gbar`) and uniform replacement by a data category
    /// (`K_data * bbar_t = 1 - abar_t - gbar_t`), the cumulative tables linear in `t`.
    pub fn mask_and_replace(k: usize, steps: usize, schedule: VqSchedule) -> Result<Self> {
        let lin = |a: f64, b: f64, t: usize| {
            if steps == 1 {
                a
            } else {
                a + (b - a) * (t - 1) as f64 / (steps - 1) as f64
            }
        };
        let ab: Vec<f64> = (1..=steps)
            .map(|t| lin(schedule.alpha_bar_1, schedule.alpha_bar_t, t))
            .collect();
        let gb: Vec<f64> = (1..=steps)
            .map(|t| lin(schedule.gamma_bar_1, schedule.gamma_bar_t, t))
            .collect();
        Self::from_cumulative(k, true, data_uniform(k), &ab, &gb)
    }

    /// DiGress's marginal-transition process: `Q_t = a_t I + (1 - a_t) 1 m^T`, `m` the
    /// data's marginal distribution over the `k = m.len()` categories, with the cosine
    /// schedule (`s = 0.008`).
    pub fn marginal(m: Vec<f64>, steps: usize) -> Result<Self> {
        let k = m.len();
        let ab = cosine_alpha_bar(steps, 0.008);
        Self::from_cumulative(k, false, m, &ab, &vec![0.0; steps])
    }

    /// The number of categories, the mask included.
    pub fn k(&self) -> usize {
        self.k
    }

    /// The number of steps `T`.
    pub fn steps(&self) -> usize {
        self.alpha.len() - 1
    }

    /// The mask category (`k - 1`), if the process has one.
    pub fn mask(&self) -> Option<usize> {
        self.mask.then_some(self.k - 1)
    }

    /// The replacement distribution `m`.
    pub fn replacement(&self) -> &[f64] {
        &self.m
    }

    /// `(abar_t, bbar_t, gbar_t)` for `t` in `0..=T`: keep, replace (times `m`), mask.
    pub fn cumulative(&self, t: usize) -> Result<(f64, f64, f64)> {
        self.check_t(t, 0)?;
        let (a, g) = (self.alpha_bar[t], self.gamma_bar[t]);
        Ok((a, (1.0 - a - g).max(0.0), g))
    }

    /// `(a_t, b_t, g_t)` of the one-step matrix, `t` in `1..=T`.
    pub fn one_step(&self, t: usize) -> Result<(f64, f64, f64)> {
        self.check_t(t, 1)?;
        let (a, g) = (self.alpha[t], self.gamma[t]);
        Ok((a, (1.0 - a - g).max(0.0), g))
    }

    /// The one-step matrix `Q_t`, `t` in `1..=T`.
    pub fn step_matrix(&self, t: usize) -> Result<Matrix> {
        let c = self.one_step(t)?;
        Ok(self.dense(c))
    }

    /// The cumulative matrix `Qbar_t = Q_1 ... Q_t` in closed form, `t` in `0..=T`.
    pub fn cumulative_matrix(&self, t: usize) -> Result<Matrix> {
        let c = self.cumulative(t)?;
        Ok(self.dense(c))
    }

    /// `q(x_t | x_0)`: row `x0` of `Qbar_t`, written into `out` (length `k`).
    pub fn marginal_row(&self, t: usize, x0: usize, out: &mut [f64]) -> Result<()> {
        let c = self.cumulative(t)?;
        self.check_x(x0, "x0")?;
        self.check_len(out.len(), "marginal_row out")?;
        for (j, o) in out.iter_mut().enumerate() {
            *o = self.entry(c, x0, j);
        }
        Ok(())
    }

    pub(crate) fn entry(&self, (a, b, g): (f64, f64, f64), i: usize, j: usize) -> f64 {
        if self.mask && i == self.k - 1 {
            return if j == i { 1.0 } else { 0.0 };
        }
        let mut v = b * self.m[j];
        if i == j {
            v += a;
        }
        if self.mask && j == self.k - 1 {
            v += g;
        }
        v
    }

    fn dense(&self, c: (f64, f64, f64)) -> Matrix {
        let k = self.k;
        let data = (0..k * k).map(|n| self.entry(c, n / k, n % k)).collect();
        Matrix::from_rows(k, data).expect("k * k entries")
    }

    pub(crate) fn check_t(&self, t: usize, lowest: usize) -> Result<()> {
        if t < lowest || t > self.steps() {
            return Err(DiscreteError::Timestep {
                t,
                steps: self.steps(),
            });
        }
        Ok(())
    }

    pub(crate) fn check_x(&self, x: usize, context: &'static str) -> Result<()> {
        if x >= self.k {
            return Err(DiscreteError::CategoryOutOfRange {
                context,
                index: x,
                k: self.k,
            });
        }
        Ok(())
    }

    pub(crate) fn check_len(&self, len: usize, context: &'static str) -> Result<()> {
        if len != self.k {
            return Err(DiscreteError::LengthMismatch {
                context,
                expected: self.k,
                got: len,
            });
        }
        Ok(())
    }
}

/// Uniform over the `k - 1` data categories, zero at the mask `k - 1`.
fn data_uniform(k: usize) -> Vec<f64> {
    let mut m = vec![1.0 / (k.max(2) - 1) as f64; k];
    if let Some(last) = m.last_mut() {
        *last = 0.0;
    }
    m
}
