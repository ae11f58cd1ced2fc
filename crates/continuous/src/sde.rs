//! Reverse-time SDE samplers (Song et al. 2021, "Score-Based Generative Modeling through
//! Stochastic Differential Equations"): Euler-Maruyama on the reverse SDE, and the
//! predictor-corrector sampler with Langevin correction at a fixed signal-to-noise ratio.
//!
//! Any schedule `x_t = alpha(t) x0 + sigma(t) eps` is the marginal of the forward SDE
//! `dx = f x dt + g dW` with `f = d ln alpha / dt` and `g^2 = d sigma^2 / dt - 2 f sigma^2`.
//! The reverse SDE is `dx = [f x - g^2 score] dt + g dW_bar` with `score = -eps / sigma`.
//! `f` and `g^2` come from finite differences of `ln alpha` and `sigma^2`, so every
//! [`NoiseSchedule`] works without a hand-written derivative.
//!
//! Each update is one fused [`Tensor::lincomb`] drawing its Gaussian noise from the
//! caller's [`Rng`], so a run depends only on the seed (not on the rayon thread count).

use diffusion_core::{Denoiser, Noise, NoiseSchedule, Rng, Tensor};

use crate::error::{Result, invalid};
use crate::eval::Evaluator;
use crate::grid::TimeGrid;

/// Drift and diffusion of the forward SDE at one time.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SdeCoefficients {
    /// `f(t) = d ln alpha / dt`.
    pub drift: f64,
    /// `g(t)^2 = d sigma^2 / dt - 2 f sigma^2`.
    pub diffusion_sq: f64,
}

/// `d/dt` of `h` at `t` by a fourth-order central difference, falling back to a
/// second-order one-sided difference where the stencil leaves the schedule's domain
/// (schedules built from tables may clamp outside it).
fn derivative(h: impl Fn(f64) -> f64, t: f64, range: (f64, f64)) -> f64 {
    let step = 1e-4 * (range.1 - range.0).abs().max(1e-300);
    let (lo, hi) = range;
    if t - 2.0 * step >= lo && t + 2.0 * step <= hi {
        (8.0 * (h(t + step) - h(t - step)) - (h(t + 2.0 * step) - h(t - 2.0 * step))) / (12.0 * step)
    } else if t + 2.0 * step <= hi {
        (-3.0 * h(t) + 4.0 * h(t + step) - h(t + 2.0 * step)) / (2.0 * step)
    } else {
        (3.0 * h(t) - 4.0 * h(t - step) + h(t - 2.0 * step)) / (2.0 * step)
    }
}

/// The forward SDE's `f(t)` and `g(t)^2` for `schedule`.
///
/// `g^2 = d sigma^2 / dt - 2 f sigma^2` (the same as `-2 sigma^2 d lambda / dt`, but the
/// derivative is taken of the smooth `sigma^2`, not of `lambda`, which is log-singular
/// at the clean end).
pub fn sde_coefficients<S: NoiseSchedule + ?Sized>(schedule: &S, t: f64) -> SdeCoefficients {
    let range = schedule.t_range();
    let drift = derivative(|u| schedule.alpha(u).ln(), t, range);
    let dvar = derivative(|u| schedule.sigma(u).powi(2), t, range);
    let sigma = schedule.sigma(t);
    SdeCoefficients {
        drift,
        diffusion_sq: (dvar - 2.0 * drift * sigma * sigma).max(0.0),
    }
}

/// Langevin corrector settings of the predictor-corrector sampler.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LangevinOptions {
    /// Corrector steps per time (Song et al. use 1).
    pub steps: usize,
    /// Target signal-to-noise ratio `r` (0.16 for CIFAR-10 VE, 0.01 for VP in the paper).
    pub snr: f64,
}

impl Default for LangevinOptions {
    fn default() -> Self {
        Self { steps: 1, snr: 0.16 }
    }
}

/// Options of the reverse-SDE samplers.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct SdeOptions {
    /// Langevin correction before each predictor step (`None`: plain Euler-Maruyama).
    pub corrector: Option<LangevinOptions>,
    /// After the last step, return the model's data prediction `E[x0 | x_end]` (Tweedie
    /// denoising; one extra model call) instead of the noisy state.
    pub final_denoise: bool,
}

/// Batch size (outermost axis) and values per item.
fn batch_layout<T: Tensor>(x: &T) -> (usize, usize) {
    let batch = x.shape().first().copied().unwrap_or(1).max(1);
    (batch, x.len() / batch)
}

/// One Langevin step at time `t`: `x += eps_step score + sqrt(2 eps_step) z`, with the
/// step size set so that `|eps_step score| / sqrt(2 eps_step) |z| ~ snr`.
///
/// The norms are root-mean-square per-item norms over the batch (`E|z|^2 = d` for the
/// noise), which keeps the update one fused pass; Song et al.'s code uses the batch
/// mean of the drawn noise's norms instead, which differs by O(1/d) in high dimension.
/// `alpha_i` is the one-step signal retention `(alpha(t) / alpha(t_prev))^2` (1 for VE),
/// the continuous analogue of the paper's `1 - beta_i`.
fn langevin_step<T, D, S>(
    eval: &Evaluator<'_, D, S>,
    x: &mut T,
    t: f64,
    alpha_i: f64,
    snr: f64,
    rng: &mut Rng,
) -> Result<()>
where
    T: Tensor,
    D: Denoiser<T> + ?Sized,
    S: NoiseSchedule + ?Sized,
{
    let eps = eval.noise(x, t)?;
    let sigma = eval.schedule.sigma(t);
    let (batch, dim) = batch_layout(x);
    // |score| = |eps| / sigma (RMS over items).
    let grad_norm = (eps.sum_squares() / batch as f64).sqrt() / sigma;
    if grad_norm == 0.0 {
        return Ok(());
    }
    let noise_norm = (dim as f64).sqrt();
    let step = 2.0 * alpha_i * (snr * noise_norm / grad_norm).powi(2);
    // x + step * (-eps / sigma) + sqrt(2 step) z
    x.lincomb(
        1.0,
        &[(-step / sigma, &eps)],
        Some(Noise::new((2.0 * step).sqrt(), rng)),
    )?;
    Ok(())
}

/// Samples the reverse SDE from `x` at `grid.times()[0]` down to the last grid time with
/// Euler-Maruyama, optionally with Langevin correction (the PC sampler).
///
/// Model calls: `steps * (1 + corrector steps)`, plus one with `final_denoise`.
pub fn sample_sde<T, D, S>(
    eval: &Evaluator<'_, D, S>,
    x: &T,
    grid: &TimeGrid,
    options: &SdeOptions,
    rng: &mut Rng,
) -> Result<T>
where
    T: Tensor,
    D: Denoiser<T> + ?Sized,
    S: NoiseSchedule + ?Sized,
{
    if let Some(c) = options.corrector
        && !(c.snr.is_finite() && c.snr > 0.0)
    {
        return Err(invalid("snr", format!("must be positive, got {}", c.snr)));
    }
    let times = grid.times();
    let schedule = eval.schedule;
    let mut x = x.clone();
    for (i, w) in times.windows(2).enumerate() {
        let (t, t_next) = (w[0], w[1]);
        if let Some(c) = options.corrector {
            // Signal retained over the step that led to t (the first step: the next one).
            let prev = if i == 0 { t_next } else { times[i - 1] };
            let ratio = schedule.alpha(t.max(prev)) / schedule.alpha(t.min(prev));
            for _ in 0..c.steps {
                langevin_step(eval, &mut x, t, ratio * ratio, c.snr, rng)?;
            }
        }
        let eps = eval.noise(&x, t)?;
        let h = t - t_next;
        let SdeCoefficients { drift, diffusion_sq } = sde_coefficients(schedule, t);
        let sigma = schedule.sigma(t);
        // x - h [f x - g^2 score] + g sqrt(h) z with score = -eps / sigma.
        x.lincomb(
            1.0 - h * drift,
            &[(-h * diffusion_sq / sigma, &eps)],
            Some(Noise::new((diffusion_sq * h).sqrt(), rng)),
        )?;
    }
    if options.final_denoise {
        let t_end = times[times.len() - 1];
        x = eval.data(&x, t_end)?;
    }
    Ok(x)
}
