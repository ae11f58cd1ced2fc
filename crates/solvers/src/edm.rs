//! Euler on Karras et al.'s EDM noise levels: diffusers' `EDMEulerScheduler`.
//!
//! The state is `x = x0 + sigma eps`; the model sees `c_in x` with
//! `c_in = 1 / sqrt(sigma^2 + sigma_data^2)` and the time `0.25 ln sigma`.
//!
//! Deliberate difference from diffusers: `step` takes the *denoised* sample x0
//! ([`Parameterization::Sample`]), so any `Denoiser` works through
//! `diffusion_core::predict_as`. A raw EDM-preconditioned network output `F` (what
//! diffusers' `step` takes) becomes x0 with [`EdmEuler::precondition_outputs`].

use diffusion_core::{NoiseLevel, Parameterization, Rng, Tensor};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::common::{Cursor, check_custom, f32r};
use crate::config;
use crate::error::{Result, invalid};
use crate::scheduler::Scheduler;

/// The keys of `EDMEulerScheduler`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EdmConfig {
    pub sigma_min: f64,
    pub sigma_max: f64,
    pub sigma_data: f64,
    /// `karras` or `exponential`.
    pub sigma_schedule: String,
    /// Accepted for compatibility; the EDM grid does not use it.
    pub num_train_timesteps: usize,
    /// What the raw network output `F` is (`epsilon` or `v_prediction`); used only by
    /// [`EdmEuler::precondition_outputs`].
    pub prediction_type: String,
    pub rho: f64,
    /// `zero` or `sigma_min`.
    pub final_sigmas_type: String,
}

impl Default for EdmConfig {
    fn default() -> Self {
        Self {
            sigma_min: 0.002,
            sigma_max: 80.0,
            sigma_data: 0.5,
            sigma_schedule: "karras".into(),
            num_train_timesteps: 1000,
            prediction_type: "epsilon".into(),
            rho: 7.0,
            final_sigmas_type: "zero".into(),
        }
    }
}

/// EDM Euler.
#[derive(Clone, Debug)]
pub struct EdmEuler {
    config: EdmConfig,
    karras: bool,
    final_zero: bool,
    /// `F` is v-like (`c_out` negated).
    v_out: bool,
    sigmas: Vec<f64>,
    cursor: Cursor,
}

impl EdmEuler {
    const NAME: &'static str = "edm_euler";

    pub fn new(config: EdmConfig) -> Result<Self> {
        let name = Self::NAME;
        let karras = match config.sigma_schedule.as_str() {
            "karras" => true,
            "exponential" => false,
            other => {
                return Err(invalid(
                    name,
                    "sigma_schedule",
                    format!("{other:?} (expected karras or exponential)"),
                ));
            }
        };
        let v_out = match config.prediction_type.as_str() {
            "epsilon" => false,
            "v_prediction" => true,
            other => {
                return Err(invalid(
                    name,
                    "prediction_type",
                    format!("{other:?} (expected epsilon or v_prediction)"),
                ));
            }
        };
        let final_zero = match config.final_sigmas_type.as_str() {
            "zero" => true,
            "sigma_min" => false,
            other => return Err(invalid(name, "final_sigmas_type", format!("{other:?}"))),
        };
        if !(config.sigma_min > 0.0 && config.sigma_max > config.sigma_min && config.sigma_max.is_finite()) {
            return Err(invalid(
                name,
                "sigma_min/sigma_max",
                "need 0 < sigma_min < sigma_max",
            ));
        }
        if !(config.sigma_data > 0.0 && config.sigma_data.is_finite() && config.rho > 0.0) {
            return Err(invalid(name, "sigma_data/rho", "must be positive"));
        }
        Ok(Self {
            config,
            karras,
            final_zero,
            v_out,
            sigmas: Vec::new(),
            cursor: Cursor::default(),
        })
    }

    pub fn from_json(json: &Value) -> Result<Self> {
        let (_, c) = config::parse(Self::NAME, json, None)?;
        Self::new(c)
    }

    pub fn config(&self) -> &EdmConfig {
        &self.config
    }

    /// The inference sigmas, with the final one.
    pub fn sigmas(&self) -> &[f64] {
        &self.sigmas
    }

    /// diffusers' `precondition_outputs`: the denoised sample
    /// `c_skip x + c_out F` from a raw EDM network output `F` at timestep `t`.
    pub fn precondition_outputs<T: Tensor>(&self, x: &T, f: &T, t: f64) -> Result<T> {
        let s = self.sigma_at(t)?;
        let sd = self.config.sigma_data;
        let c_skip = sd * sd / (s * s + sd * sd);
        let c_out = s * sd / (s * s + sd * sd).sqrt() * if self.v_out { -1.0 } else { 1.0 };
        Ok(diffusion_core::lincomb_new(&[(c_skip, x), (c_out, f)], None)?)
    }

    fn install(&mut self, sigmas: Vec<f64>) {
        let sigmas: Vec<f64> = sigmas.into_iter().map(f32r).collect();
        let ts = sigmas.iter().map(|s| f32r(0.25 * s.ln())).collect();
        let last = if self.final_zero {
            0.0
        } else {
            sigmas[sigmas.len() - 1]
        };
        self.sigmas = sigmas;
        self.sigmas.push(last);
        self.cursor.reset(ts);
    }

    fn sigma_at(&self, t: f64) -> Result<f64> {
        Ok(self.sigmas[self.cursor.index_for_query(Self::NAME, t)?])
    }
}

impl<T: Tensor> Scheduler<T> for EdmEuler {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn set_timesteps(&mut self, n: usize) -> Result<()> {
        if n == 0 {
            return Err(invalid(Self::NAME, "num_inference_steps", "must be at least 1"));
        }
        let c = &self.config;
        let sigmas = if self.karras {
            diffusion_schedules::sigmas::karras_sigmas(c.sigma_min, c.sigma_max, c.rho, n)
        } else {
            diffusion_schedules::sigmas::exponential_sigmas(c.sigma_min, c.sigma_max, n)
        };
        self.install(sigmas);
        Ok(())
    }

    /// The noise levels to visit (strictly decreasing, positive); the final one is
    /// added by `final_sigmas_type`, as diffusers' `set_timesteps(sigmas=...)`.
    fn set_custom_sigmas(&mut self, sigmas: &[f64]) -> Result<()> {
        check_custom(Self::NAME, sigmas, 1e-12, f64::MAX)?;
        self.install(sigmas.to_vec());
        Ok(())
    }

    fn timesteps(&self) -> &[f64] {
        &self.cursor.timesteps
    }

    /// diffusers uses `sqrt(sigma_max^2 + 1)` (not `sigma_data`).
    fn init_noise_sigma(&self) -> f64 {
        (self.config.sigma_max * self.config.sigma_max + 1.0).sqrt()
    }

    fn prediction_type(&self) -> Parameterization {
        Parameterization::Sample
    }

    fn input_scale(&self, t: f64) -> Result<f64> {
        let s = self.sigma_at(t)?;
        let sd = self.config.sigma_data;
        Ok(1.0 / (s * s + sd * sd).sqrt())
    }

    fn noise_level(&self, t: f64) -> Result<NoiseLevel> {
        let s = self.sigma_at(t)?;
        let c_in = <Self as Scheduler<T>>::input_scale(self, t)?;
        Ok(NoiseLevel::new(t, c_in, c_in * s))
    }

    fn step_in_place(&mut self, x0: &T, t: f64, x: &mut T, _rng: Option<&mut Rng>) -> Result<()> {
        let i = self.cursor.index_for_step(Self::NAME, t)?;
        let (s, next) = (self.sigmas[i], self.sigmas[i + 1]);
        // x + (next - s) (x - x0) / s
        let r = (next - s) / s;
        x.lincomb(1.0 + r, &[(-r, x0)], None)?;
        self.cursor.advance(i);
        Ok(())
    }

    fn add_noise(&self, x0: &T, noise: &T, t: f64) -> Result<T> {
        self.cursor.require_ready(Self::NAME, "add_noise")?;
        let s = self.sigmas[self.cursor.find(Self::NAME, t)?];
        Ok(diffusion_core::lincomb_new(&[(1.0, x0), (s, noise)], None)?)
    }
}
