//! Timestep / noise-level samplers for training.

use std::sync::Arc;

use diffusion_core::{NoiseLevel, NoiseSchedule, Rng};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::{Result, TrainError, check_positive};

/// How a continuous time is drawn on a schedule's `[t_min, t_max]`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum TimeDistribution {
    /// `t ~ U(t_min, t_max)`.
    Uniform,
    /// `t = t_min + (t_max - t_min) sigmoid(mean + std z)`, `z ~ N(0, 1)` (Esser et al. 2024,
    /// the rectified-flow default of SD3 with mean 0, std 1).
    LogitNormal { mean: f64, std: f64 },
}

/// Draws one [`NoiseLevel`] per batch item.
#[derive(Clone)]
pub struct LevelSampler {
    kind: Kind,
}

#[derive(Clone)]
enum Kind {
    Discrete {
        alphas_cumprod: Vec<f64>,
    },
    Continuous {
        schedule: Arc<dyn NoiseSchedule>,
        distribution: TimeDistribution,
    },
    EdmLogNormal {
        p_mean: f64,
        p_std: f64,
    },
}

impl std::fmt::Debug for LevelSampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LevelSampler({})", self.describe())
    }
}

impl LevelSampler {
    /// Uniform integer timesteps `0..N` of a discrete (diffusers-style) schedule given by its
    /// `alphas_cumprod` table: `alpha = sqrt(acp[t])`, `sigma = sqrt(1 - acp[t])`, and the
    /// network's time input is the integer `t`.
    pub fn discrete(alphas_cumprod: Vec<f64>) -> Result<Self> {
        if alphas_cumprod.is_empty() {
            return Err(TrainError::invalid("alphas_cumprod", "the table is empty"));
        }
        if let Some((i, v)) = alphas_cumprod
            .iter()
            .enumerate()
            .find(|(_, v)| !(v.is_finite() && **v > 0.0 && **v < 1.0))
        {
            return Err(TrainError::invalid(
                "alphas_cumprod",
                format!("entry {i} is {v}; every entry must lie in (0, 1)"),
            ));
        }
        Ok(Self {
            kind: Kind::Discrete { alphas_cumprod },
        })
    }

    /// Continuous times on `schedule` drawn from `distribution`; the network's time input is `t`.
    pub fn continuous(schedule: Arc<dyn NoiseSchedule>, distribution: TimeDistribution) -> Result<Self> {
        let (lo, hi) = schedule.t_range();
        if !(lo.is_finite() && hi.is_finite() && lo < hi) {
            return Err(TrainError::invalid(
                "schedule t_range",
                format!("need finite t_min < t_max, got ({lo}, {hi})"),
            ));
        }
        if let TimeDistribution::LogitNormal { mean, std } = distribution {
            if !mean.is_finite() {
                return Err(TrainError::invalid("logit-normal mean", format!("got {mean}")));
            }
            check_positive("logit-normal std", std)?;
        }
        Ok(Self {
            kind: Kind::Continuous {
                schedule,
                distribution,
            },
        })
    }

    /// EDM's log-normal noise levels: `ln sigma ~ N(p_mean, p_std^2)`, `alpha = 1`; the
    /// level's timestep is `sigma` (the EDM objective feeds the network `c_noise`).
    /// Karras et al. use `p_mean = -1.2`, `p_std = 1.2`.
    pub fn edm_log_normal(p_mean: f64, p_std: f64) -> Result<Self> {
        if !p_mean.is_finite() {
            return Err(TrainError::invalid("p_mean", format!("got {p_mean}")));
        }
        check_positive("p_std", p_std)?;
        Ok(Self {
            kind: Kind::EdmLogNormal { p_mean, p_std },
        })
    }

    /// Draws `n` levels from `rng`.
    pub fn sample(&self, rng: &mut Rng, n: usize) -> Vec<NoiseLevel> {
        match &self.kind {
            Kind::Discrete { alphas_cumprod } => (0..n)
                .map(|_| {
                    let len = alphas_cumprod.len();
                    let t = ((rng.uniform() * len as f64) as usize).min(len - 1);
                    let acp = alphas_cumprod[t];
                    NoiseLevel::new(t as f64, acp.sqrt(), (1.0 - acp).sqrt())
                })
                .collect(),
            Kind::Continuous {
                schedule,
                distribution,
            } => {
                let (lo, hi) = schedule.t_range();
                let fractions: Vec<f64> = match *distribution {
                    TimeDistribution::Uniform => (0..n).map(|_| rng.uniform()).collect(),
                    TimeDistribution::LogitNormal { mean, std } => {
                        let mut z = vec![0.0; n];
                        rng.fill_normal(&mut z);
                        z.iter()
                            .map(|z| 1.0 / (1.0 + (-(mean + std * z)).exp()))
                            .collect()
                    }
                };
                fractions
                    .into_iter()
                    .map(|u| schedule.level((lo + (hi - lo) * u).clamp(lo, hi)))
                    .collect()
            }
            Kind::EdmLogNormal { p_mean, p_std } => {
                let mut z = vec![0.0; n];
                rng.fill_normal(&mut z);
                z.iter()
                    .map(|z| {
                        let sigma = (p_mean + p_std * z).exp();
                        NoiseLevel::new(sigma, 1.0, sigma)
                    })
                    .collect()
            }
        }
    }

    /// A JSON description for `config.json` (a schedule object is described by its range).
    pub fn describe(&self) -> serde_json::Value {
        match &self.kind {
            Kind::Discrete { alphas_cumprod } => {
                json!({"kind": "discrete_uniform", "num_train_timesteps": alphas_cumprod.len()})
            }
            Kind::Continuous {
                schedule,
                distribution,
            } => json!({
                "kind": "continuous",
                "t_range": [schedule.t_range().0, schedule.t_range().1],
                "convention": format!("{:?}", schedule.convention()),
                "distribution": distribution,
            }),
            Kind::EdmLogNormal { p_mean, p_std } => {
                json!({"kind": "edm_log_normal", "p_mean": p_mean, "p_std": p_std})
            }
        }
    }
}
