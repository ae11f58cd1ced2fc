//! diffusers' `DDIMInverseScheduler`: DDIM run from data towards noise, with the same
//! config keys, defaults and timestep conventions (including its quirk that the step at
//! timestep `t` moves the sample from level `t - N/n` to level `t` while the model sees `t`).

use diffusion_core::{Denoiser, NoiseLevel, Parameterization, Tensor, param::conversion};
use diffusion_schedules::{
    DiscreteSchedule, DiscreteScheduleConfig, TimestepSpacing, spacing::ddim_timesteps,
};

use crate::error::{InversionError, Result};

/// The `scheduler_config.json` keys of `DDIMInverseScheduler`, with its defaults
/// (`clip_sample = true`, `set_alpha_to_one = true`, leading spacing).
#[derive(Clone, Debug, PartialEq)]
pub struct DdimInverseConfig {
    pub schedule: DiscreteScheduleConfig,
    pub prediction_type: Parameterization,
    pub clip_sample: bool,
    pub clip_sample_range: f64,
    /// Where the first step starts: `abar = 1` when true, else `abar_0`.
    pub set_alpha_to_one: bool,
}

impl Default for DdimInverseConfig {
    fn default() -> Self {
        Self {
            schedule: DiscreteScheduleConfig::default(),
            prediction_type: Parameterization::Epsilon,
            clip_sample: true,
            clip_sample_range: 1.0,
            set_alpha_to_one: true,
        }
    }
}

/// A configured `DDIMInverseScheduler` after `set_timesteps`.
#[derive(Clone, Debug)]
pub struct DdimInverseScheduler {
    config: DdimInverseConfig,
    schedule: DiscreteSchedule,
    /// Ascending: the order inversion visits them.
    timesteps: Vec<i64>,
    step_ratio: i64,
}

impl DdimInverseScheduler {
    /// Builds the tables and the ascending timesteps for `num_inference_steps`.
    pub fn new(config: DdimInverseConfig, num_inference_steps: usize) -> Result<Self> {
        match config.prediction_type {
            Parameterization::Epsilon | Parameterization::Sample | Parameterization::V => {}
            other => {
                return Err(InversionError::Unsupported {
                    key: "prediction_type",
                    reason: format!("{other:?} (DDIMInverseScheduler takes epsilon, sample or v_prediction)"),
                });
            }
        }
        if config.clip_sample && !(config.clip_sample_range.is_finite() && config.clip_sample_range > 0.0) {
            return Err(crate::error::invalid_param(
                "clip_sample_range",
                config.clip_sample_range,
                "must be positive and finite",
            ));
        }
        let spacing = config.schedule.timestep_spacing;
        if spacing == TimestepSpacing::Linspace {
            return Err(InversionError::Unsupported {
                key: "timestep_spacing",
                reason: "DDIMInverseScheduler supports only leading and trailing".into(),
            });
        }
        let schedule = DiscreteSchedule::from_config(&config.schedule)?;
        let n_train = schedule.num_train_timesteps();
        let mut timesteps = ddim_timesteps(
            spacing,
            n_train,
            num_inference_steps,
            config.schedule.steps_offset,
        )?;
        timesteps.reverse();
        Ok(Self {
            step_ratio: (n_train / num_inference_steps) as i64,
            config,
            schedule,
            timesteps,
        })
    }

    /// The timesteps in the order inversion visits them (ascending).
    pub fn timesteps(&self) -> &[i64] {
        &self.timesteps
    }

    pub fn schedule(&self) -> &DiscreteSchedule {
        &self.schedule
    }

    /// The table level at training step `t`: what the model is told at that timestep.
    pub fn model_level(&self, t: i64) -> NoiseLevel {
        self.schedule.level(t as usize)
    }

    /// `abar` at index `t`, or the initial value below 0.
    fn abar(&self, t: i64) -> f64 {
        if t >= 0 {
            f64::from(self.schedule.alphas_cumprod[t as usize])
        } else if self.config.set_alpha_to_one {
            1.0
        } else {
            f64::from(self.schedule.alphas_cumprod[0])
        }
    }

    /// One inverse step: `model_output` was computed at `(sample, timestep)`.
    pub fn step<T: Tensor>(&self, model_output: &T, timestep: i64, sample: &T) -> Result<T> {
        let n_train = self.schedule.num_train_timesteps() as i64;
        if !(0..n_train).contains(&timestep) {
            return Err(InversionError::InvalidGrid(format!(
                "timestep {timestep} is outside the {n_train} training steps"
            )));
        }
        let from = (timestep - self.step_ratio).min(n_train - 1);
        let (a, a_next) = (self.abar(from), self.abar(timestep));
        let (sa, sb) = (a.sqrt(), (1.0 - a).sqrt());
        let (sa_next, sb_next) = (a_next.sqrt(), (1.0 - a_next).sqrt());
        let p = self.config.prediction_type;
        // x0 = cx0 * x + cm0 * out; eps = cxe * x + cme * out.
        let (cx0, cm0) = conversion(p, Parameterization::Sample, sa, sb)?;
        let (cxe, cme) = conversion(p, Parameterization::Epsilon, sa, sb)?;
        if !self.config.clip_sample {
            return crate::lincomb2(
                (sa_next * cx0 + sb_next * cxe, sample),
                (sa_next * cm0 + sb_next * cme, model_output),
            );
        }
        // diffusers clips x0 but keeps the unclipped epsilon for the direction term.
        let r = self.config.clip_sample_range;
        let x0 = crate::lincomb2((cx0, sample), (cm0, model_output))?;
        let x0 = x0.map_batch_items(&|v: &mut [f64]| v.iter_mut().for_each(|e| *e = e.clamp(-r, r)))?;
        let mut out = x0;
        out.lincomb(
            sa_next,
            &[(sb_next * cxe, sample), (sb_next * cme, model_output)],
            None,
        )?;
        Ok(out)
    }

    /// The diffusers loop: `for t in timesteps: x = step(model(x, t), t, x)`, with the
    /// model told the table level at `t`.
    pub fn invert<T: Tensor, D: Denoiser<T> + ?Sized>(&self, model: &D, sample: &T) -> Result<T> {
        let mut x = sample.clone();
        for (k, &t) in self.timesteps.iter().enumerate() {
            let out = crate::checked_predict(model, &x, self.model_level(t), k)?;
            x = self.step(&out, t, &x)?;
        }
        Ok(x)
    }
}
