//! A discrete (diffusers-style) schedule: the float32 beta and `alphas_cumprod` tables,
//! and its continuous-time view.

use diffusion_core::{Convention, NoiseLevel, NoiseSchedule};

use crate::betas::{alphas_cumprod, betas, rescale_zero_terminal_snr};
use crate::config::DiscreteScheduleConfig;
use crate::error::{Result, invalid};
use crate::sigmas::sigmas_from_alphas_cumprod;

/// The training-time tables of a discrete schedule, in float32 as diffusers keeps them.
#[derive(Clone, Debug, PartialEq)]
pub struct DiscreteSchedule {
    pub betas: Vec<f32>,
    pub alphas_cumprod: Vec<f32>,
}

impl DiscreteSchedule {
    /// Builds the tables a diffusers scheduler with this config builds.
    pub fn from_config(config: &DiscreteScheduleConfig) -> Result<Self> {
        config.validate()?;
        let mut b = match &config.trained_betas {
            Some(t) => {
                if t.len() != config.num_train_timesteps {
                    return Err(invalid(
                        "trained_betas",
                        format!(
                            "{} values for {} training steps",
                            t.len(),
                            config.num_train_timesteps
                        ),
                    ));
                }
                if t.iter().any(|b| !(b.is_finite() && *b > 0.0 && *b <= 1.0)) {
                    return Err(invalid("trained_betas", "every beta must be in (0, 1]"));
                }
                t.iter().map(|&v| v as f32).collect()
            }
            None => betas(
                config.beta_schedule,
                config.beta_start,
                config.beta_end,
                config.num_train_timesteps,
            )?,
        };
        if config.rescale_betas_zero_snr {
            b = rescale_zero_terminal_snr(&b);
        }
        Ok(Self::from_betas(b))
    }

    /// From a float32 beta table.
    pub fn from_betas(betas: Vec<f32>) -> Self {
        let alphas_cumprod = alphas_cumprod(&betas);
        Self {
            betas,
            alphas_cumprod,
        }
    }

    /// From an `alphas_cumprod` table (for example one stored with a model).
    pub fn from_alphas_cumprod(alphas_cumprod: Vec<f32>) -> Self {
        let mut prev = 1.0f32;
        let betas = alphas_cumprod
            .iter()
            .map(|&a| {
                let b = 1.0 - a / prev;
                prev = a;
                b
            })
            .collect();
        Self {
            betas,
            alphas_cumprod,
        }
    }

    pub fn num_train_timesteps(&self) -> usize {
        self.betas.len()
    }

    /// `sqrt((1 - abar) / abar)` per training step (float32).
    pub fn sigmas(&self) -> Vec<f32> {
        sigmas_from_alphas_cumprod(&self.alphas_cumprod)
    }

    /// The marginal at integer timestep `t`: `alpha = sqrt(abar_t)`, `sigma = sqrt(1 - abar_t)`.
    pub fn level(&self, t: usize) -> NoiseLevel {
        let a = f64::from(self.alphas_cumprod[t]);
        NoiseLevel::new(t as f64, a.sqrt(), (1.0 - a).sqrt())
    }

    /// The continuous-time view (DPM-Solver's discrete `NoiseScheduleVP`).
    pub fn continuous(&self) -> InterpolatedVp {
        InterpolatedVp::new(&self.alphas_cumprod)
    }
}

/// A VP schedule interpolated from a discrete table, piecewise-linear in `log alpha`
/// over `t_i = (i + 1) / N`, as DPM-Solver's `NoiseScheduleVP('discrete')`.
///
/// Continuous `t` maps to the network's integer timestep as `1000 t - 1` (for N = 1000),
/// the convention of DPM-Solver and UniPC: [`InterpolatedVp::model_timestep`].
#[derive(Clone, Debug, PartialEq)]
pub struct InterpolatedVp {
    t: Vec<f64>,
    log_alpha: Vec<f64>,
}

impl InterpolatedVp {
    pub fn new(alphas_cumprod: &[f32]) -> Self {
        let n = alphas_cumprod.len() as f64;
        let t = (1..=alphas_cumprod.len()).map(|i| i as f64 / n).collect();
        let log_alpha = alphas_cumprod.iter().map(|&a| 0.5 * f64::from(a).ln()).collect();
        Self { t, log_alpha }
    }

    /// The training-step index a continuous time corresponds to: `N t - 1`.
    pub fn model_timestep(&self, t: f64) -> f64 {
        self.t.len() as f64 * t - 1.0
    }

    /// The continuous time of training step `i`.
    pub fn time_of_step(&self, i: f64) -> f64 {
        (i + 1.0) / self.t.len() as f64
    }

    fn log_alpha(&self, t: f64) -> f64 {
        // Linear extrapolation beyond the ends, as DPM-Solver's `interpolate_fn`.
        let n = self.t.len();
        let k = self.t.partition_point(|&v| v < t).clamp(1, n - 1);
        let (t0, t1) = (self.t[k - 1], self.t[k]);
        let (l0, l1) = (self.log_alpha[k - 1], self.log_alpha[k]);
        l0 + (t - t0) * (l1 - l0) / (t1 - t0)
    }
}

impl NoiseSchedule for InterpolatedVp {
    fn alpha(&self, t: f64) -> f64 {
        self.log_alpha(t).exp()
    }
    fn sigma(&self, t: f64) -> f64 {
        (1.0 - (2.0 * self.log_alpha(t)).exp()).sqrt()
    }
    fn t_range(&self) -> (f64, f64) {
        (self.t[0], self.t[self.t.len() - 1])
    }
    fn convention(&self) -> Convention {
        Convention::VariancePreserving
    }
    fn lambda(&self, t: f64) -> f64 {
        let la = self.log_alpha(t);
        la - 0.5 * (-(2.0 * la).exp_m1()).ln()
    }
    fn t_of_lambda(&self, lambda: f64) -> f64 {
        // log alpha = -0.5 log(1 + exp(-2 lambda)), then invert the (decreasing) table.
        let la = -0.5 * softplus(-2.0 * lambda);
        let n = self.log_alpha.len();
        let k = self.log_alpha.partition_point(|&v| v > la).clamp(1, n - 1);
        let (l0, l1) = (self.log_alpha[k - 1], self.log_alpha[k]);
        let (t0, t1) = (self.t[k - 1], self.t[k]);
        t0 + (la - l0) * (t1 - t0) / (l1 - l0)
    }
}

/// `ln(1 + e^x)` without overflow.
pub(crate) fn softplus(x: f64) -> f64 {
    if x > 30.0 {
        x + (-x).exp().ln_1p()
    } else {
        x.exp().ln_1p()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BetaSchedule;

    #[test]
    fn interpolation_hits_the_table_and_inverts() {
        let cfg = DiscreteScheduleConfig {
            beta_schedule: BetaSchedule::ScaledLinear,
            beta_start: 0.00085,
            beta_end: 0.012,
            ..Default::default()
        };
        let d = DiscreteSchedule::from_config(&cfg).unwrap();
        let c = d.continuous();
        for i in [0usize, 10, 500, 999] {
            let t = c.time_of_step(i as f64);
            let a2 = c.alpha(t).powi(2);
            assert!((a2 - f64::from(d.alphas_cumprod[i])).abs() < 1e-12 * (1.0 + a2.recip()));
            assert!((c.alpha(t).powi(2) + c.sigma(t).powi(2) - 1.0).abs() < 1e-12);
        }
        for t in [0.002, 0.1, 0.37, 0.8, 1.0] {
            let back = c.t_of_lambda(c.lambda(t));
            assert!((back - t).abs() < 1e-9, "{t} -> {back}");
        }
    }

    #[test]
    fn alphas_cumprod_round_trips_through_betas() {
        let d = DiscreteSchedule::from_config(&DiscreteScheduleConfig::default()).unwrap();
        let back = DiscreteSchedule::from_alphas_cumprod(d.alphas_cumprod.clone());
        for (a, b) in d.betas.iter().zip(&back.betas) {
            assert!((a - b).abs() < 2e-6, "{a} vs {b}");
        }
    }
}
