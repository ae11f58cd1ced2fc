//! DDIM (Song et al. 2021) with `eta`, `clip_sample`, thresholding, `set_alpha_to_one`;
//! and its inversion (diffusers' `DDIMInverseScheduler`).

use diffusion_core::param::conversion;
use diffusion_core::{Noise, NoiseLevel, Parameterization, Rng, Tensor};
use diffusion_schedules::spacing::ddim_timesteps;
use diffusion_schedules::{DiscreteScheduleConfig, TimestepSpacing};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::common::{Cursor, Table, Target, Thresholding, clip, threshold};
use crate::config::{self, prediction};
use crate::error::{Result, invalid};
use crate::scheduler::{Scheduler, need_rng};

/// The solver keys of `DDIMScheduler` / `DDIMInverseScheduler` (plus `eta`, which
/// diffusers passes to `step`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DdimConfig {
    pub clip_sample: bool,
    pub set_alpha_to_one: bool,
    pub prediction_type: String,
    pub thresholding: bool,
    pub dynamic_thresholding_ratio: f64,
    pub clip_sample_range: f64,
    pub sample_max_value: f64,
    /// Noise scale: 0 is deterministic DDIM, 1 is DDPM-like ancestral sampling.
    pub eta: f64,
}

impl Default for DdimConfig {
    fn default() -> Self {
        Self {
            clip_sample: true,
            set_alpha_to_one: true,
            prediction_type: "epsilon".into(),
            thresholding: false,
            dynamic_thresholding_ratio: 0.995,
            clip_sample_range: 1.0,
            sample_max_value: 1.0,
            eta: 0.0,
        }
    }
}

/// DDIM, forward (denoising) or inverse (noising along the same ODE).
#[derive(Clone, Debug)]
pub struct Ddim {
    config: DdimConfig,
    schedule: DiscreteScheduleConfig,
    inverse: bool,
    table: Table,
    pred: Parameterization,
    /// `abar` beyond the end of the table (`prev_t < 0`, or the inverse's start).
    final_abar: f64,
    cursor: Cursor,
    step_ratio: i64,
    thresholding: Thresholding,
}

impl Ddim {
    const NAME: &'static str = "ddim";

    pub fn new(schedule: DiscreteScheduleConfig, config: DdimConfig) -> Result<Self> {
        Self::build(schedule, config, false)
    }

    /// diffusers' `DDIMInverseScheduler` (leading or trailing spacing only).
    pub fn inverse(schedule: DiscreteScheduleConfig, config: DdimConfig) -> Result<Self> {
        if schedule.timestep_spacing == TimestepSpacing::Linspace {
            return Err(invalid(
                "ddim_inverse",
                "timestep_spacing",
                "must be leading or trailing",
            ));
        }
        Self::build(schedule, config, true)
    }

    fn build(schedule: DiscreteScheduleConfig, config: DdimConfig, inverse: bool) -> Result<Self> {
        use Parameterization::*;
        let pred = prediction(Self::NAME, &config.prediction_type, &[Epsilon, Sample, V])?;
        if !(config.eta >= 0.0 && config.eta.is_finite()) {
            return Err(invalid(Self::NAME, "eta", format!("{} must be >= 0", config.eta)));
        }
        config::check_range(
            Self::NAME,
            "dynamic_thresholding_ratio",
            config.dynamic_thresholding_ratio,
            0.0,
            1.0,
        )?;
        let table = Table::new(&schedule, false)?;
        let final_abar = if config.set_alpha_to_one {
            1.0
        } else {
            table.abar(0)
        };
        let thresholding = Thresholding {
            enabled: config.thresholding,
            ratio: config.dynamic_thresholding_ratio,
            max_value: config.sample_max_value,
        };
        Ok(Self {
            config,
            schedule,
            inverse,
            table,
            pred,
            final_abar,
            cursor: Cursor::default(),
            step_ratio: 1,
            thresholding,
        })
    }

    /// The schedule defaults of `DDIMScheduler`.
    pub fn schedule_defaults() -> DiscreteScheduleConfig {
        config::schedule_defaults(TimestepSpacing::Leading)
    }

    pub fn from_json(json: &Value) -> Result<Self> {
        let (s, c) = config::parse(Self::NAME, json, Some(&Self::schedule_defaults()))?;
        Self::new(s, c)
    }

    pub fn inverse_from_json(json: &Value) -> Result<Self> {
        let (s, c) = config::parse("ddim_inverse", json, Some(&Self::schedule_defaults()))?;
        Self::inverse(s, c)
    }

    pub fn config(&self) -> &DdimConfig {
        &self.config
    }

    pub fn schedule(&self) -> &DiscreteScheduleConfig {
        &self.schedule
    }

    fn abar_at(&self, t: i64) -> f64 {
        if t >= 0 {
            self.table.abar(t as usize)
        } else {
            self.final_abar
        }
    }

    fn table_t(&self, t: f64) -> Result<usize> {
        crate::common::table_index(self.name_(), t, self.table.len())
    }

    fn name_(&self) -> &'static str {
        if self.inverse { "ddim_inverse" } else { Self::NAME }
    }

    /// One step, written to `x` (in place or as a new tensor).
    fn advance<T: Tensor>(
        &mut self,
        m: &T,
        t: f64,
        x: &mut Target<'_, T>,
        rng: Option<&mut Rng>,
    ) -> Result<()> {
        let index = self.cursor.index_for_step(self.name_(), t)?;
        let ti = t as i64;
        // The step's source and target levels. The inverse steps from `t - ratio` up to
        // `t`, and (as diffusers) converts the model output with the source level.
        let (a_t, a_prev) = if self.inverse {
            let src = (ti - self.step_ratio).min(self.table.len() as i64 - 1);
            (self.abar_at(src), self.abar_at(ti))
        } else {
            (self.abar_at(ti), self.abar_at(ti - self.step_ratio))
        };
        let (alpha, sigma) = (a_t.sqrt(), (1.0 - a_t).sqrt());
        let eta = if self.inverse { 0.0 } else { self.config.eta };
        let variance = (1.0 - a_prev) / (1.0 - a_t) * (1.0 - a_t / a_prev);
        let std = eta * variance.max(0.0).sqrt();
        let dir = (1.0 - a_prev - std * std).max(0.0).sqrt();
        let noise = if std > 0.0 {
            Some(Noise::new(std, need_rng(self.name_(), rng)?))
        } else {
            None
        };
        let (cx0, cm0) = conversion(self.pred, Parameterization::Sample, alpha, sigma)?;
        let clipping = self.config.clip_sample || self.thresholding.enabled;
        if self.inverse && clipping {
            // diffusers' inverse clips x0 but keeps the model's epsilon.
            let x0 = m.lincomb_to_new(0.0, &[(cx0, x.sample()), (cm0, m)], None)?;
            let x0 = clip(&x0, self.config.clip_sample_range)?;
            let (cxe, cme) = conversion(self.pred, Parameterization::Epsilon, alpha, sigma)?;
            x.lincomb(dir * cxe, &[(a_prev.sqrt(), &x0), (dir * cme, m)], None)?;
        } else if clipping {
            // x0 is clipped, then epsilon recomputed from the clipped x0 (diffusers).
            let mut x0 = m.lincomb_to_new(0.0, &[(cx0, x.sample()), (cm0, m)], None)?;
            x0 = if self.thresholding.enabled {
                threshold(&x0, self.thresholding.ratio, self.thresholding.max_value)?
            } else {
                clip(&x0, self.config.clip_sample_range)?
            };
            // prev = sqrt(a_prev) x0 + dir (x - alpha x0) / sigma + std z
            x.lincomb(dir / sigma, &[(a_prev.sqrt() - dir * alpha / sigma, &x0)], noise)?;
        } else {
            let (cxe, cme) = conversion(self.pred, Parameterization::Epsilon, alpha, sigma)?;
            let keep = a_prev.sqrt() * cx0 + dir * cxe;
            let cm = a_prev.sqrt() * cm0 + dir * cme;
            x.lincomb(keep, &[(cm, m)], noise)?;
        }
        self.cursor.advance(index);
        Ok(())
    }
}

impl<T: Tensor> Scheduler<T> for Ddim {
    fn name(&self) -> &'static str {
        self.name_()
    }

    fn set_timesteps(&mut self, n: usize) -> Result<()> {
        let s = &self.schedule;
        let mut ts = ddim_timesteps(s.timestep_spacing, s.num_train_timesteps, n, s.steps_offset)?;
        if self.inverse {
            ts.reverse();
        }
        if let Some(bad) = ts.iter().find(|&&t| t < 0 || t as usize >= s.num_train_timesteps) {
            return Err(invalid(
                self.name_(),
                "steps_offset",
                format!("timestep {bad} leaves the table"),
            ));
        }
        self.step_ratio = (s.num_train_timesteps / n) as i64;
        self.cursor.reset(ts.into_iter().map(|t| t as f64).collect());
        Ok(())
    }

    fn timesteps(&self) -> &[f64] {
        &self.cursor.timesteps
    }

    fn prediction_type(&self) -> Parameterization {
        self.pred
    }

    fn is_stochastic(&self) -> bool {
        !self.inverse && self.config.eta > 0.0
    }

    fn noise_level(&self, t: f64) -> Result<NoiseLevel> {
        let a = self.table.abar(self.table_t(t)?);
        Ok(NoiseLevel::new(t, a.sqrt(), (1.0 - a).sqrt()))
    }

    fn step_in_place(&mut self, m: &T, t: f64, x: &mut T, rng: Option<&mut Rng>) -> Result<()> {
        self.advance(m, t, &mut Target::InPlace(x), rng)
    }

    fn step(&mut self, m: &T, t: f64, x: &T, rng: Option<&mut Rng>) -> Result<T> {
        let mut out = Target::New(x, None);
        self.advance(m, t, &mut out, rng)?;
        Ok(out.into_new())
    }

    fn add_noise(&self, x0: &T, noise: &T, t: f64) -> Result<T> {
        let a = self.table.abar(self.table_t(t)?);
        Ok(diffusion_core::lincomb_new(
            &[(a.sqrt(), x0), ((1.0 - a).sqrt(), noise)],
            None,
        )?)
    }
}
