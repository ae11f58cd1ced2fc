//! Step grids: the noise levels a sampler visits, in sampling order (noisiest first),
//! and the deterministic DDIM update between two of them.
//!
//! Every invertible sampler in this crate records the grid it ran on, so that sampling
//! from an inverted latent can refuse a different grid instead of silently producing a
//! wrong reconstruction.

use diffusion_core::{Denoiser, NoiseLevel, NoiseSchedule, Parameterization, Tensor, predict_as};
use diffusion_schedules::DiscreteSchedule;

use crate::error::{InversionError, Result, at_step};

/// Noise levels in sampling order: `levels[0]` is the noisiest, the last is where
/// sampling ends. A grid of `n + 1` levels has `n` steps.
#[derive(Clone, Debug, PartialEq)]
pub struct Grid {
    levels: Vec<NoiseLevel>,
}

impl Grid {
    /// Validates `levels`: at least two, finite, `alpha > 0`, `sigma >= 0`, and the
    /// noise-to-signal ratio `sigma / alpha` strictly decreasing.
    pub fn new(levels: Vec<NoiseLevel>) -> Result<Self> {
        if levels.len() < 2 {
            return Err(InversionError::InvalidGrid(format!(
                "{} noise levels: a grid needs at least two (one step)",
                levels.len()
            )));
        }
        for (i, l) in levels.iter().enumerate() {
            if !(l.alpha.is_finite() && l.sigma.is_finite() && l.timestep.is_finite()) {
                return Err(InversionError::InvalidGrid(format!(
                    "level {i} is not finite: {l:?}"
                )));
            }
            if l.alpha <= 0.0 || l.sigma < 0.0 {
                return Err(InversionError::InvalidGrid(format!(
                    "level {i} needs alpha > 0 and sigma >= 0: {l:?}"
                )));
            }
        }
        for (i, w) in levels.windows(2).enumerate() {
            if w[1].sigma / w[1].alpha >= w[0].sigma / w[0].alpha {
                return Err(InversionError::InvalidGrid(format!(
                    "sigma/alpha must strictly decrease in sampling order, but level {} ({}) >= level {i} ({})",
                    i + 1,
                    w[1].sigma / w[1].alpha,
                    w[0].sigma / w[0].alpha
                )));
            }
        }
        Ok(Self { levels })
    }

    /// A diffusers discrete grid: integer `timesteps` in sampling order (descending),
    /// each at its table level, then `final_level` where sampling ends.
    pub fn from_discrete(
        schedule: &DiscreteSchedule,
        timesteps: &[i64],
        final_level: NoiseLevel,
    ) -> Result<Self> {
        let n = schedule.num_train_timesteps() as i64;
        let mut levels = Vec::with_capacity(timesteps.len() + 1);
        for &t in timesteps {
            if !(0..n).contains(&t) {
                return Err(InversionError::InvalidGrid(format!(
                    "timestep {t} is outside the {n} training steps"
                )));
            }
            levels.push(schedule.level(t as usize));
        }
        levels.push(final_level);
        Self::new(levels)
    }

    /// An EDM (variance-exploding, `alpha = 1`) grid from descending sigmas; the model
    /// time is EDM's `0.25 ln sigma` (0 at `sigma = 0`, where no model is evaluated).
    pub fn edm(sigmas: &[f64]) -> Result<Self> {
        let levels = sigmas
            .iter()
            .map(|&s| NoiseLevel::new(if s > 0.0 { 0.25 * s.ln() } else { 0.0 }, 1.0, s))
            .collect();
        Self::new(levels)
    }

    /// `steps + 1` levels of `schedule`, uniform in log-SNR from `t_start` (noisy) to
    /// `t_end`, with the continuous time as the model's time input.
    pub fn uniform_lambda(
        schedule: &dyn NoiseSchedule,
        t_start: f64,
        t_end: f64,
        steps: usize,
    ) -> Result<Self> {
        if steps == 0 {
            return Err(InversionError::InvalidGrid("zero steps".into()));
        }
        let (l0, l1) = (schedule.lambda(t_start), schedule.lambda(t_end));
        let levels = (0..=steps)
            .map(|i| {
                let t = match i {
                    0 => t_start,
                    i if i == steps => t_end,
                    _ => schedule.t_of_lambda(l0 + (l1 - l0) * i as f64 / steps as f64),
                };
                schedule.level(t)
            })
            .collect();
        Self::new(levels)
    }

    pub fn levels(&self) -> &[NoiseLevel] {
        &self.levels
    }

    /// Number of steps (`levels - 1`).
    pub fn steps(&self) -> usize {
        self.levels.len() - 1
    }

    /// The grid's levels reversed (cleanest first): the order inversion visits them.
    pub fn reversed_levels(&self) -> Vec<NoiseLevel> {
        self.levels.iter().rev().copied().collect()
    }

    /// A short description for error messages.
    pub fn describe(&self) -> String {
        let (a, b) = (self.levels[0], self.levels[self.levels.len() - 1]);
        format!(
            "{} steps from timestep {} (sigma {:.4}) to timestep {} (sigma {:.4})",
            self.steps(),
            a.timestep,
            a.sigma,
            b.timestep,
            b.sigma
        )
    }

    /// Fails with [`InversionError::GridMismatch`] unless `other` is this grid.
    pub fn check_same(&self, other: &Grid) -> Result<()> {
        if self == other {
            Ok(())
        } else {
            Err(InversionError::GridMismatch {
                inverted: self.describe(),
                sampling: other.describe(),
            })
        }
    }
}

/// The deterministic DDIM map from level `from` to level `to`:
/// `x_to = (alpha_to / alpha_from) x + (sigma_to - alpha_to sigma_from / alpha_from) eps`.
/// Returns `(cx, ceps)`.
pub fn ddim_coefficients(from: NoiseLevel, to: NoiseLevel) -> (f64, f64) {
    let ratio = to.alpha / from.alpha;
    (ratio, to.sigma - ratio * from.sigma)
}

/// The model's epsilon prediction, with a non-finite output reported at `step`.
pub fn epsilon<T: Tensor, D: Denoiser<T> + ?Sized>(
    model: &D,
    x: &T,
    level: NoiseLevel,
    step: usize,
) -> Result<T> {
    predict_as(model, x, level, Parameterization::Epsilon).map_err(at_step(step))
}

/// The model's x0 prediction (EDM's denoiser `D`), with a non-finite output reported at `step`.
pub fn denoised<T: Tensor, D: Denoiser<T> + ?Sized>(
    model: &D,
    x: &T,
    level: NoiseLevel,
    step: usize,
) -> Result<T> {
    predict_as(model, x, level, Parameterization::Sample).map_err(at_step(step))
}

/// One DDIM step from `from` to `to` with the model evaluated at `(x, eval)`; the
/// model output buffer becomes the result (one fused pass).
fn ddim_step<T: Tensor, D: Denoiser<T> + ?Sized>(
    model: &D,
    x: &T,
    eval: NoiseLevel,
    from: NoiseLevel,
    to: NoiseLevel,
    step: usize,
) -> Result<T> {
    let mut out = epsilon(model, x, eval, step)?;
    let (cx, ce) = ddim_coefficients(from, to);
    out.lincomb(ce, &[(cx, x)], None)?;
    Ok(out)
}

/// Deterministic DDIM sampling (eta = 0) over `grid` from `x_start` at `grid.levels()[0]`.
pub fn ddim_sample<T: Tensor, D: Denoiser<T> + ?Sized>(model: &D, grid: &Grid, x_start: &T) -> Result<T> {
    let mut x = x_start.clone();
    for (k, w) in grid.levels().windows(2).enumerate() {
        x = ddim_step(model, &x, w[0], w[0], w[1], k)?;
    }
    Ok(x)
}

/// Plain DDIM inversion over `grid`, from `x_end` at the grid's last level back to its
/// first. Each step reuses the epsilon at the *current* (cleaner) point for the move to
/// the noisier level, the approximation `eps(x_{k+1}) ~ eps(x_k)` that makes plain
/// inversion inexact.
pub fn ddim_invert<T: Tensor, D: Denoiser<T> + ?Sized>(model: &D, grid: &Grid, x_end: &T) -> Result<T> {
    let levels = grid.levels();
    let mut x = x_end.clone();
    for k in (0..grid.steps()).rev() {
        let (noisy, clean) = (levels[k], levels[k + 1]);
        x = ddim_step(model, &x, clean, clean, noisy, k)?;
    }
    Ok(x)
}

/// Relative RMS difference `||a - b|| / ||b||` (absolute when `b` is zero).
pub fn relative_rms<T: Tensor>(a: &T, b: &T) -> Result<f64> {
    let mut d = a.clone();
    d.lincomb(1.0, &[(-1.0, b)], None)?;
    let den = b.sum_squares().sqrt();
    let num = d.sum_squares().sqrt();
    Ok(if den > 0.0 { num / den } else { num })
}
