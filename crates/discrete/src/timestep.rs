//! Importance-sampled timesteps (VQ-Diffusion, after improved DDPM): `p(t)` proportional
//! to `sqrt(E[L_t^2])`, tracked as an exponential moving average of each step's squared
//! loss, uniform until every step has been seen `warmup` times.

use diffusion_core::Rng;

use crate::error::{DiscreteError, Result};
use crate::posterior::categorical;

/// A timestep sampler over `1..=T`; `sample` returns `(t, weight)` with
/// `weight = 1 / (T p(t))`, so `E[weight L_t]` is the mean loss over `t` for any `p`.
#[derive(Clone, Debug, PartialEq)]
pub struct TimestepSampler {
    sq_loss: Vec<f64>,
    count: Vec<u64>,
    warmup: u64,
    decay: f64,
}

impl TimestepSampler {
    /// VQ-Diffusion's settings: warm-up 10 samples per step, EMA weight 0.1 on new values.
    pub fn new(steps: usize) -> Result<Self> {
        Self::with_settings(steps, 10, 0.1)
    }

    /// A sampler with its own warm-up count and EMA weight (in `(0, 1]`).
    pub fn with_settings(steps: usize, warmup: u64, ema: f64) -> Result<Self> {
        if steps == 0 {
            return Err(DiscreteError::InvalidArgument {
                name: "steps",
                reason: "need at least one".into(),
            });
        }
        if !(ema > 0.0 && ema <= 1.0) {
            return Err(DiscreteError::InvalidArgument {
                name: "ema",
                reason: format!("{ema} not in (0, 1]"),
            });
        }
        Ok(Self {
            sq_loss: vec![0.0; steps],
            count: vec![0; steps],
            warmup,
            decay: ema,
        })
    }

    /// The number of steps `T`.
    pub fn steps(&self) -> usize {
        self.sq_loss.len()
    }

    /// The current sampling probabilities of `t = 1..=T` (index `t - 1`).
    pub fn probabilities(&self) -> Vec<f64> {
        let steps = self.steps();
        if self.count.iter().any(|&c| c < self.warmup) {
            return vec![1.0 / steps as f64; steps];
        }
        let root: Vec<f64> = self.sq_loss.iter().map(|l| (l + 1e-10).sqrt() + 1e-4).collect();
        let total: f64 = root.iter().sum();
        root.iter().map(|r| r / total).collect()
    }

    /// Draws `(t, weight)`, one uniform from `rng`.
    pub fn sample(&self, rng: &mut Rng) -> (usize, f64) {
        let p = self.probabilities();
        let i = categorical(&p, rng.uniform());
        (i + 1, 1.0 / (self.steps() as f64 * p[i]))
    }

    /// Records a loss value measured at step `t`.
    pub fn record(&mut self, t: usize, loss: f64) -> Result<()> {
        if t == 0 || t > self.steps() {
            return Err(DiscreteError::Timestep {
                t,
                steps: self.steps(),
            });
        }
        if !loss.is_finite() {
            return Err(DiscreteError::NonFinite("recorded loss"));
        }
        let i = t - 1;
        self.sq_loss[i] = if self.count[i] == 0 {
            loss * loss
        } else {
            (1.0 - self.decay) * self.sq_loss[i] + self.decay * loss * loss
        };
        self.count[i] += 1;
        Ok(())
    }
}
