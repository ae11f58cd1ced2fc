//! Flow-matching samplers on the rectified-flow path `x = (1 - s) x0 + s eps` with a
//! velocity model `u = eps - x0`: diffusers' `FlowMatchEulerDiscreteScheduler` (shift,
//! dynamic shift `mu`, terminal stretch, Karras / exponential / beta grids, stochastic
//! sampling) and `FlowMatchHeunDiscreteScheduler`.

use diffusion_core::{Noise, NoiseLevel, Parameterization, Rng, Tensor};
use diffusion_schedules::SigmaGrid;
use diffusion_schedules::spacing::np_linspace;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::common::{Cursor, f32r};
use crate::config;
use crate::error::{Result, SolverError, invalid};
use crate::scheduler::{Scheduler, need_rng};

/// The keys of `FlowMatchEulerDiscreteScheduler` (`FlowMatchHeunDiscreteScheduler`
/// accepts only `num_train_timesteps` and `shift`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FlowMatchConfig {
    pub num_train_timesteps: usize,
    pub shift: f64,
    pub use_dynamic_shifting: bool,
    /// Used by pipelines to compute `mu` (see [`calculate_shift`]); accepted here.
    pub base_shift: Option<f64>,
    pub max_shift: Option<f64>,
    pub base_image_seq_len: usize,
    pub max_image_seq_len: usize,
    pub invert_sigmas: bool,
    pub shift_terminal: Option<f64>,
    pub use_karras_sigmas: bool,
    pub use_exponential_sigmas: bool,
    pub use_beta_sigmas: bool,
    /// `exponential` or `linear`.
    pub time_shift_type: String,
    pub stochastic_sampling: bool,
}

impl Default for FlowMatchConfig {
    fn default() -> Self {
        Self {
            num_train_timesteps: 1000,
            shift: 1.0,
            use_dynamic_shifting: false,
            base_shift: Some(0.5),
            max_shift: Some(1.15),
            base_image_seq_len: 256,
            max_image_seq_len: 4096,
            invert_sigmas: false,
            shift_terminal: None,
            use_karras_sigmas: false,
            use_exponential_sigmas: false,
            use_beta_sigmas: false,
            time_shift_type: "exponential".into(),
            stochastic_sampling: false,
        }
    }
}

/// The `mu` diffusers' Flux / SD3 pipelines pass for an image of `image_seq_len`
/// tokens: linear in the sequence length between `(base_seq_len, base_shift)` and
/// `(max_seq_len, max_shift)`.
pub fn calculate_shift(
    image_seq_len: usize,
    base_seq_len: usize,
    max_seq_len: usize,
    base_shift: f64,
    max_shift: f64,
) -> f64 {
    let m = (max_shift - base_shift) / (max_seq_len as f64 - base_seq_len as f64);
    let b = base_shift - m * base_seq_len as f64;
    image_seq_len as f64 * m + b
}

/// Which flow sampler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowMethod {
    Euler,
    Heun,
}

/// Flow-matching Euler or Heun.
#[derive(Clone, Debug)]
pub struct FlowMatch<T> {
    method: FlowMethod,
    config: FlowMatchConfig,
    grid: SigmaGrid,
    /// The training schedule's extreme sigmas (float32, shifted unless dynamic).
    sigma_min: f64,
    sigma_max: f64,
    /// `sigmas[i]` for timestep `i`, plus the final one (Heun: interleaved).
    sigmas: Vec<f64>,
    cursor: Cursor,
    heun_start: Option<T>,
    heun_prev: Option<T>,
    heun_dt: Option<f64>,
}

fn shifted(shift: f64, s: f64) -> f64 {
    shift * s / (1.0 + (shift - 1.0) * s)
}

impl<T: Tensor> FlowMatch<T> {
    fn name_of(method: FlowMethod) -> &'static str {
        match method {
            FlowMethod::Euler => "flow_match_euler",
            FlowMethod::Heun => "flow_match_heun",
        }
    }

    pub fn new(method: FlowMethod, config: FlowMatchConfig) -> Result<Self> {
        let name = Self::name_of(method);
        if config.num_train_timesteps == 0 {
            return Err(invalid(name, "num_train_timesteps", "must be at least 1"));
        }
        if !(config.shift.is_finite() && config.shift > 0.0) {
            return Err(invalid(name, "shift", "must be positive"));
        }
        if !matches!(config.time_shift_type.as_str(), "exponential" | "linear") {
            return Err(invalid(
                name,
                "time_shift_type",
                format!("{:?} (expected exponential or linear)", config.time_shift_type),
            ));
        }
        if let Some(st) = config.shift_terminal
            && !(st.is_finite() && st < 1.0)
        {
            return Err(invalid(name, "shift_terminal", "must be below 1"));
        }
        let grid = config::sigma_grid(
            name,
            config.use_karras_sigmas,
            config.use_exponential_sigmas,
            config.use_beta_sigmas,
            false,
        )?;
        let n = config.num_train_timesteps;
        // diffusers' training table in float32: sigma = t / N for t = N..1, shifted.
        let train = |t: f64| {
            let s = (t as f32 / n as f32) as f64;
            if config.use_dynamic_shifting {
                s
            } else {
                let sh = config.shift as f32;
                let s = s as f32;
                f64::from(sh * s / (1.0 + (sh - 1.0) * s))
            }
        };
        Ok(Self {
            method,
            grid,
            sigma_min: train(1.0),
            sigma_max: train(n as f64),
            config,
            sigmas: Vec::new(),
            cursor: Cursor::default(),
            heun_start: None,
            heun_prev: None,
            heun_dt: None,
        })
    }

    pub fn from_json(method: FlowMethod, json: &Value) -> Result<Self> {
        let name = Self::name_of(method);
        if method == FlowMethod::Heun
            && let Some(obj) = json.as_object()
            && let Some(k) = obj
                .iter()
                .find(|(k, v)| {
                    !k.starts_with('_')
                        && !v.is_null()
                        && !["num_train_timesteps", "shift"].contains(&k.as_str())
                })
                .map(|(k, _)| k)
        {
            return Err(SolverError::Parse {
                scheduler: name,
                reason: format!(
                    "unknown field `{k}` (FlowMatchHeunDiscreteScheduler takes num_train_timesteps and shift)"
                ),
            });
        }
        let (_, c) = config::parse(name, json, None)?;
        Self::new(method, c)
    }

    pub fn config(&self) -> &FlowMatchConfig {
        &self.config
    }

    /// The inference sigmas, with the final one.
    pub fn sigmas(&self) -> &[f64] {
        &self.sigmas
    }

    fn build(&mut self, n: usize, mu: Option<f64>) -> Result<()> {
        let name = Self::name_of(self.method);
        if n == 0 {
            return Err(invalid(name, "num_inference_steps", "must be at least 1"));
        }
        let c = &self.config;
        let nt = c.num_train_timesteps as f64;
        let mut s: Vec<f64> = np_linspace(self.sigma_max * nt, self.sigma_min * nt, n)
            .into_iter()
            .map(|t| t / nt)
            .collect();
        match (c.use_dynamic_shifting, mu) {
            (true, None) => {
                return Err(invalid(
                    name,
                    "use_dynamic_shifting",
                    "needs a mu: call set_timesteps_with_mu",
                ));
            }
            (true, Some(mu)) => {
                let linear = c.time_shift_type == "linear";
                let m = if linear { mu } else { mu.exp() };
                for v in &mut s {
                    *v = m / (m + (1.0 / *v - 1.0));
                }
            }
            (false, _) => s.iter_mut().for_each(|v| *v = shifted(c.shift, *v)),
        }
        if let Some(st) = c.shift_terminal.filter(|&st| st != 0.0) {
            // Stretch so that the last sigma lands on shift_terminal.
            let scale = (1.0 - s[n - 1]) / (1.0 - st);
            s.iter_mut().for_each(|v| *v = 1.0 - (1.0 - *v) / scale);
        }
        if self.grid != SigmaGrid::Table {
            s = self.grid.sigmas(s[n - 1], s[0], n);
        }
        let mut sigmas: Vec<f64> = s.into_iter().map(f32r).collect();
        let last = if c.invert_sigmas {
            sigmas.iter_mut().for_each(|v| *v = f32r(1.0 - *v));
            1.0
        } else {
            0.0
        };
        let mut ts: Vec<f64> = sigmas.iter().map(|v| f32r(v * nt)).collect();
        sigmas.push(last);
        if self.method == FlowMethod::Heun {
            // t0, t1, t1, ...; sigmas s0, s1, s1, ..., s_{n-1}, s_{n-1}, s_final.
            let mut t2 = vec![ts[0]];
            let mut s2 = vec![sigmas[0]];
            for k in 1..n {
                t2.extend([ts[k], ts[k]]);
                s2.extend([sigmas[k], sigmas[k]]);
            }
            s2.push(last);
            ts = t2;
            sigmas = s2;
        }
        self.sigmas = sigmas;
        self.cursor.reset(ts);
        self.heun_dt = None;
        Ok(())
    }

    fn sigma_at(&self, t: f64) -> Result<f64> {
        Ok(self.sigmas[self.cursor.index_for_query(Self::name_of(self.method), t)?])
    }
}

impl<T: Tensor> Scheduler<T> for FlowMatch<T> {
    fn name(&self) -> &'static str {
        Self::name_of(self.method)
    }

    fn set_timesteps(&mut self, n: usize) -> Result<()> {
        self.build(n, None)
    }

    fn set_timesteps_with_mu(&mut self, n: usize, mu: f64) -> Result<()> {
        if self.method == FlowMethod::Heun || !self.config.use_dynamic_shifting || !mu.is_finite() {
            return Err(invalid(
                Self::name_of(self.method),
                "use_dynamic_shifting",
                "mu needs use_dynamic_shifting (flow-matching Euler) and a finite value",
            ));
        }
        self.build(n, Some(mu))
    }

    fn timesteps(&self) -> &[f64] {
        &self.cursor.timesteps
    }

    fn order(&self) -> usize {
        match self.method {
            FlowMethod::Euler => 1,
            FlowMethod::Heun => 2,
        }
    }

    fn prediction_type(&self) -> Parameterization {
        Parameterization::Flow
    }

    fn is_stochastic(&self) -> bool {
        self.config.stochastic_sampling && self.method == FlowMethod::Euler
    }

    fn noise_level(&self, t: f64) -> Result<NoiseLevel> {
        let s = self.sigma_at(t)?;
        Ok(NoiseLevel::new(t, 1.0 - s, s))
    }

    fn step_in_place(&mut self, m: &T, t: f64, x: &mut T, rng: Option<&mut Rng>) -> Result<()> {
        let name = Self::name_of(self.method);
        let i = self.cursor.index_for_step(name, t)?;
        let (s, next) = (self.sigmas[i], self.sigmas[i + 1]);
        match self.method {
            FlowMethod::Euler if self.config.stochastic_sampling => {
                // x0 = x - s u, then re-noised to the next level with fresh noise.
                let noise = Noise::new(next, need_rng(name, rng)?);
                x.lincomb(1.0 - next, &[(-(1.0 - next) * s, m)], Some(noise))?;
            }
            FlowMethod::Euler => x.lincomb(1.0, &[(next - s, m)], None)?,
            FlowMethod::Heun => match self.heun_dt.take() {
                None => {
                    let dt = next - s;
                    let mut start = self.heun_start.take().unwrap_or_else(|| x.zeros_like());
                    start.lincomb(0.0, &[(1.0, &*x)], None)?;
                    let mut prev = self.heun_prev.take().unwrap_or_else(|| m.zeros_like());
                    prev.lincomb(0.0, &[(1.0, m)], None)?;
                    x.lincomb(1.0, &[(dt, m)], None)?;
                    self.heun_start = Some(start);
                    self.heun_prev = Some(prev);
                    self.heun_dt = Some(dt);
                }
                Some(dt) => {
                    let start = self.heun_start.as_ref().expect("stored start");
                    let prev = self.heun_prev.as_ref().expect("stored derivative");
                    x.lincomb(0.0, &[(1.0, start), (0.5 * dt, prev), (0.5 * dt, m)], None)?;
                }
            },
        }
        self.cursor.advance(i);
        Ok(())
    }

    /// diffusers' `scale_noise`: `s noise + (1 - s) x0`.
    fn add_noise(&self, x0: &T, noise: &T, t: f64) -> Result<T> {
        let name = Self::name_of(self.method);
        self.cursor.require_ready(name, "add_noise")?;
        let s = self.sigmas[self.cursor.find(name, t)?];
        Ok(diffusion_core::lincomb_new(&[(1.0 - s, x0), (s, noise)], None)?)
    }
}
