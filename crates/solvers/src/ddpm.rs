//! DDPM ancestral sampling (Ho et al. 2020): diffusers' `DDPMScheduler`, with the
//! `fixed_small` / `fixed_small_log` / `fixed_large` variances.

use diffusion_core::param::conversion;
use diffusion_core::{Noise, NoiseLevel, Parameterization, Rng, Tensor};
use diffusion_schedules::spacing::ddim_timesteps;
use diffusion_schedules::{DiscreteScheduleConfig, TimestepSpacing};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::common::{Cursor, Table, Thresholding, check_custom, clip, table_index};
use crate::config::{self, prediction};
use crate::error::{Result, SolverError, invalid};
use crate::scheduler::{Scheduler, need_rng};

/// The solver keys of `DDPMScheduler`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DdpmConfig {
    /// `fixed_small`, `fixed_small_log` or `fixed_large` (the learned kinds, which need a
    /// doubled model output, and `fixed_large_log`, NaN in diffusers, are not supported).
    pub variance_type: String,
    pub clip_sample: bool,
    pub prediction_type: String,
    pub thresholding: bool,
    pub dynamic_thresholding_ratio: f64,
    pub clip_sample_range: f64,
    pub sample_max_value: f64,
}

impl Default for DdpmConfig {
    fn default() -> Self {
        Self {
            variance_type: "fixed_small".into(),
            clip_sample: true,
            prediction_type: "epsilon".into(),
            thresholding: false,
            dynamic_thresholding_ratio: 0.995,
            clip_sample_range: 1.0,
            sample_max_value: 1.0,
        }
    }
}

/// DDPM.
#[derive(Clone, Debug)]
pub struct Ddpm {
    config: DdpmConfig,
    schedule: DiscreteScheduleConfig,
    table: Table,
    pred: Parameterization,
    large_variance: bool,
    thresholding: Thresholding,
    cursor: Cursor,
}

impl Ddpm {
    const NAME: &'static str = "ddpm";

    pub fn new(schedule: DiscreteScheduleConfig, config: DdpmConfig) -> Result<Self> {
        use Parameterization::*;
        let pred = prediction(Self::NAME, &config.prediction_type, &[Epsilon, Sample, V])?;
        let large_variance = match config.variance_type.as_str() {
            "fixed_small" | "fixed_small_log" => false,
            "fixed_large" => true,
            "fixed_large_log" | "learned" | "learned_range" => {
                return Err(SolverError::Unsupported {
                    scheduler: Self::NAME,
                    what: format!("variance_type {:?}", config.variance_type),
                });
            }
            other => return Err(invalid(Self::NAME, "variance_type", format!("{other:?}"))),
        };
        config::check_range(
            Self::NAME,
            "dynamic_thresholding_ratio",
            config.dynamic_thresholding_ratio,
            0.0,
            1.0,
        )?;
        let thresholding = Thresholding {
            enabled: config.thresholding,
            ratio: config.dynamic_thresholding_ratio,
            max_value: config.sample_max_value,
        };
        Ok(Self {
            table: Table::new(&schedule, false)?,
            config,
            schedule,
            pred,
            large_variance,
            thresholding,
            cursor: Cursor::default(),
        })
    }

    pub fn schedule_defaults() -> DiscreteScheduleConfig {
        config::schedule_defaults(TimestepSpacing::Leading)
    }

    pub fn from_json(json: &Value) -> Result<Self> {
        let (s, c) = config::parse(Self::NAME, json, Some(&Self::schedule_defaults()))?;
        Self::new(s, c)
    }

    pub fn config(&self) -> &DdpmConfig {
        &self.config
    }

    fn abar(&self, t: f64) -> Result<f64> {
        Ok(self.table.abar(table_index(Self::NAME, t, self.table.len())?))
    }
}

impl<T: Tensor> Scheduler<T> for Ddpm {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn set_timesteps(&mut self, n: usize) -> Result<()> {
        let s = &self.schedule;
        let ts = ddim_timesteps(s.timestep_spacing, s.num_train_timesteps, n, s.steps_offset)?;
        if let Some(bad) = ts.iter().find(|&&t| t < 0 || t as usize >= s.num_train_timesteps) {
            return Err(invalid(
                Self::NAME,
                "steps_offset",
                format!("timestep {bad} leaves the table"),
            ));
        }
        self.cursor.reset(ts.into_iter().map(|t| t as f64).collect());
        Ok(())
    }

    fn set_custom_timesteps(&mut self, timesteps: &[f64]) -> Result<()> {
        check_custom(Self::NAME, timesteps, 0.0, (self.table.len() - 1) as f64)?;
        if let Some(t) = timesteps.iter().find(|t| t.fract() != 0.0) {
            return Err(SolverError::InvalidSchedule {
                scheduler: Self::NAME,
                reason: format!("timestep {t} is not an integer"),
            });
        }
        self.cursor.reset(timesteps.to_vec());
        Ok(())
    }

    fn timesteps(&self) -> &[f64] {
        &self.cursor.timesteps
    }

    fn prediction_type(&self) -> Parameterization {
        self.pred
    }

    fn is_stochastic(&self) -> bool {
        true
    }

    fn noise_level(&self, t: f64) -> Result<NoiseLevel> {
        let a = self.abar(t)?;
        Ok(NoiseLevel::new(t, a.sqrt(), (1.0 - a).sqrt()))
    }

    fn step_in_place(&mut self, m: &T, t: f64, x: &mut T, rng: Option<&mut Rng>) -> Result<()> {
        let i = self.cursor.index_for_step(Self::NAME, t)?;
        let a_t = self.abar(t)?;
        let a_prev = match self.cursor.timesteps.get(i + 1) {
            Some(&p) => self.abar(p)?,
            None => 1.0,
        };
        let (b_t, b_prev) = (1.0 - a_t, 1.0 - a_prev);
        let step_alpha = a_t / a_prev;
        let step_beta = 1.0 - step_alpha;
        // The posterior mean q(x_prev | x_t, x0) = c0 x0 + cx x_t (formula 7 of the paper).
        let c0 = a_prev.sqrt() * step_beta / b_t;
        let cx = step_alpha.sqrt() * b_prev / b_t;
        let std = if t > 0.0 {
            let var = if self.large_variance {
                step_beta
            } else {
                (b_prev / b_t * step_beta).max(1e-20)
            };
            var.sqrt()
        } else {
            0.0
        };
        let noise = if std > 0.0 {
            Some(Noise::new(std, need_rng(Self::NAME, rng)?))
        } else {
            None
        };
        let (kx, km) = conversion(self.pred, Parameterization::Sample, a_t.sqrt(), b_t.sqrt())?;
        if self.thresholding.enabled || self.config.clip_sample {
            let mut x0 = m.zeros_like();
            x0.lincomb(0.0, &[(kx, &*x), (km, m)], None)?;
            let x0 = if self.thresholding.enabled {
                crate::common::threshold(&x0, self.thresholding.ratio, self.thresholding.max_value)?
            } else {
                clip(&x0, self.config.clip_sample_range)?
            };
            x.lincomb(cx, &[(c0, &x0)], noise)?;
        } else {
            x.lincomb(cx + c0 * kx, &[(c0 * km, m)], noise)?;
        }
        self.cursor.advance(i);
        Ok(())
    }

    fn add_noise(&self, x0: &T, noise: &T, t: f64) -> Result<T> {
        let a = self.abar(t)?;
        Ok(diffusion_core::lincomb_new(
            &[(a.sqrt(), x0), ((1.0 - a).sqrt(), noise)],
            None,
        )?)
    }
}
