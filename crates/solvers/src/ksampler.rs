//! The k-diffusion family on diffusers' discrete VE sigmas: Euler (with churn), Euler
//! ancestral, Heun and LMS (`EulerDiscreteScheduler`, `EulerAncestralDiscreteScheduler`,
//! `HeunDiscreteScheduler`, `LMSDiscreteScheduler`).
//!
//! The state is the VE sample `x = x0 + sigma eps`; the model sees
//! `x / sqrt(sigma^2 + 1)`, a VP sample at `alpha = 1 / sqrt(sigma^2 + 1)`.

use diffusion_core::param::conversion;
use diffusion_core::{Noise, NoiseLevel, Parameterization, Rng, Tensor};
use diffusion_schedules::spacing::euler_timesteps;
use diffusion_schedules::{DiscreteScheduleConfig, FinalSigmas, SigmaGrid, TimestepSpacing};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::common::{Cursor, History, Table, Target, check_custom, clip, f32r, vp_alpha_sigma};
use crate::config::{self, prediction};
use crate::error::{Result, SolverError, invalid};
use crate::scheduler::{Scheduler, need_rng};

/// Which k-diffusion sampler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KMethod {
    Euler,
    EulerAncestral,
    Heun,
    Lms,
}

impl KMethod {
    fn name(self) -> &'static str {
        match self {
            Self::Euler => "euler",
            Self::EulerAncestral => "euler_ancestral",
            Self::Heun => "heun",
            Self::Lms => "lms",
        }
    }
}

/// The solver keys of the four classes (their union: a key one class lacks is
/// accepted by the others' parser), plus the `step` keyword arguments of Euler
/// (`s_churn`, `s_tmin`, `s_tmax`, `s_noise`) and LMS (`order`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KConfig {
    pub prediction_type: String,
    pub interpolation_type: String,
    pub use_karras_sigmas: bool,
    pub use_exponential_sigmas: bool,
    pub use_beta_sigmas: bool,
    pub sigma_min: Option<f64>,
    pub sigma_max: Option<f64>,
    /// `discrete` (table timesteps) or `continuous` (`0.25 ln sigma`, v-prediction only).
    pub timestep_type: String,
    pub final_sigmas_type: String,
    pub clip_sample: bool,
    pub clip_sample_range: f64,
    pub s_churn: f64,
    pub s_tmin: f64,
    #[serde(deserialize_with = "crate::config::float_or_inf")]
    pub s_tmax: f64,
    pub s_noise: f64,
    /// LMS order (diffusers' `step(order=4)`).
    pub order: usize,
}

impl Default for KConfig {
    fn default() -> Self {
        Self {
            prediction_type: "epsilon".into(),
            interpolation_type: "linear".into(),
            use_karras_sigmas: false,
            use_exponential_sigmas: false,
            use_beta_sigmas: false,
            sigma_min: None,
            sigma_max: None,
            timestep_type: "discrete".into(),
            final_sigmas_type: "zero".into(),
            clip_sample: false,
            clip_sample_range: 1.0,
            s_churn: 0.0,
            s_tmin: 0.0,
            s_tmax: f64::INFINITY,
            s_noise: 1.0,
            order: 4,
        }
    }
}

/// Euler, Euler ancestral, Heun or LMS.
#[derive(Clone, Debug)]
pub struct KSampler<T> {
    method: KMethod,
    config: KConfig,
    schedule: DiscreteScheduleConfig,
    table: Table,
    pred: Parameterization,
    grid: SigmaGrid,
    final_sigmas: FinalSigmas,
    continuous: bool,
    cursor: Cursor,
    /// `sigmas[i]` for timestep `i`, plus the final sigma (Heun: interleaved).
    sigmas: Vec<f64>,
    /// Heun's first-stage derivative and sample, LMS's past derivatives.
    history: History<T>,
    heun_start: Option<T>,
    heun_dt: Option<f64>,
}

impl<T: Tensor> KSampler<T> {
    pub fn new(method: KMethod, schedule: DiscreteScheduleConfig, config: KConfig) -> Result<Self> {
        use Parameterization::*;
        let name = method.name();
        let pred = prediction(name, &config.prediction_type, &[Epsilon, Sample, V])?;
        if config.interpolation_type != "linear" {
            return Err(SolverError::Unsupported {
                scheduler: name,
                what: format!("interpolation_type {:?}", config.interpolation_type),
            });
        }
        let continuous = match config.timestep_type.as_str() {
            "discrete" => false,
            "continuous" => pred == V,
            other => return Err(invalid(name, "timestep_type", format!("{other:?}"))),
        };
        if !(1..=MAX_LMS_ORDER).contains(&config.order) {
            return Err(invalid(name, "order", "LMS order must be 1..=4"));
        }
        if !(config.s_churn >= 0.0 && config.s_noise >= 0.0) {
            return Err(invalid(name, "s_churn/s_noise", "must be >= 0"));
        }
        let grid = config::sigma_grid(
            name,
            config.use_karras_sigmas,
            config.use_exponential_sigmas,
            config.use_beta_sigmas,
            false,
        )?;
        let final_sigmas = FinalSigmas::from_name(&config.final_sigmas_type)?;
        Ok(Self {
            method,
            table: Table::new(&schedule, true)?,
            history: History::new(if method == KMethod::Lms { config.order } else { 1 }),
            config,
            schedule,
            pred,
            grid,
            final_sigmas,
            continuous,
            cursor: Cursor::default(),
            sigmas: Vec::new(),
            heun_start: None,
            heun_dt: None,
        })
    }

    /// The schedule defaults of the class (Heun's differ: linear 0.00085..0.012).
    pub fn schedule_defaults(method: KMethod) -> DiscreteScheduleConfig {
        let mut d = config::schedule_defaults(TimestepSpacing::Linspace);
        if method == KMethod::Heun {
            d.beta_start = 0.00085;
            d.beta_end = 0.012;
        }
        d
    }

    pub fn from_json(method: KMethod, json: &Value) -> Result<Self> {
        let (s, c) = config::parse(method.name(), json, Some(&Self::schedule_defaults(method)))?;
        Self::new(method, s, c)
    }

    pub fn method(&self) -> KMethod {
        self.method
    }

    /// The inference sigmas, with the final one.
    pub fn sigmas(&self) -> &[f64] {
        &self.sigmas
    }

    fn install(&mut self, timesteps: Vec<f64>, mut sigmas: Vec<f64>) {
        let mut ts: Vec<f64> = if self.continuous {
            sigmas.iter().map(|s| f32r(0.25 * s.ln())).collect()
        } else {
            timesteps.into_iter().map(f32r).collect()
        };
        if self.method == KMethod::Heun {
            // t0, t1, t1, t2, t2, ...; sigmas s0, s1, s1, ..., s_{n-1}, s_{n-1}, s_final.
            let last = sigmas.pop().expect("final sigma");
            let mut s2 = vec![sigmas[0]];
            let mut t2 = vec![ts[0]];
            for k in 1..sigmas.len() {
                s2.extend([sigmas[k], sigmas[k]]);
                t2.extend([ts[k], ts[k]]);
            }
            s2.push(last);
            sigmas = s2;
            ts = t2;
        }
        self.sigmas = sigmas.into_iter().map(f32r).collect();
        self.cursor.reset(ts);
        self.history.clear();
        self.heun_start = None;
        self.heun_dt = None;
    }

    fn final_sigma(&self) -> f64 {
        match (self.method, self.final_sigmas) {
            (KMethod::Euler, FinalSigmas::SigmaMin) => self.table.sigma_min(),
            _ => 0.0,
        }
    }

    /// `(A, B)` with `x0 = A x + B m` for the VE sample `x` at noise level `sigma`.
    fn x0_coeffs(&self, sigma: f64) -> Result<(f64, f64)> {
        let (a, s) = vp_alpha_sigma(sigma);
        let (cx, cm) = conversion(self.pred, Parameterization::Sample, a, s)?;
        Ok((cx * a, cm))
    }

    fn sigma_at(&self, t: f64) -> Result<f64> {
        let i = self.cursor.index_for_query(self.method.name(), t)?;
        Ok(self.sigmas[i])
    }
}

/// `int_{s0}^{s1} prod_{k != j} (tau - x_k) / (x_j - x_k) d tau`: an LMS weight, by
/// The highest LMS order (the Gauss rule below integrates its weights exactly).
const MAX_LMS_ORDER: usize = 4;

/// 4-point Gauss-Legendre (exact for the degree <= 3 polynomials of order <= 4).
fn lagrange_integral(nodes: &[f64], j: usize, s0: f64, s1: f64) -> f64 {
    const X: [f64; 4] = [
        -0.861_136_311_594_052_6,
        -0.339_981_043_584_856_3,
        0.339_981_043_584_856_3,
        0.861_136_311_594_052_6,
    ];
    const W: [f64; 4] = [
        0.347_854_845_137_453_9,
        0.652_145_154_862_546_1,
        0.652_145_154_862_546_1,
        0.347_854_845_137_453_9,
    ];
    let (mid, half) = (0.5 * (s0 + s1), 0.5 * (s1 - s0));
    X.iter()
        .zip(W)
        .map(|(&x, w)| {
            let tau = mid + half * x;
            let p: f64 = (0..nodes.len())
                .filter(|&k| k != j)
                .map(|k| (tau - nodes[k]) / (nodes[j] - nodes[k]))
                .product();
            w * p
        })
        .sum::<f64>()
        * half
}

impl<T: Tensor> Scheduler<T> for KSampler<T> {
    fn name(&self) -> &'static str {
        self.method.name()
    }

    fn set_timesteps(&mut self, n: usize) -> Result<()> {
        let s = &self.schedule;
        let ts = euler_timesteps(s.timestep_spacing, s.num_train_timesteps, n, s.steps_offset)?;
        let ts: Vec<f64> = ts.into_iter().map(f32r).collect();
        let interp = self.table.interp_sigmas(&ts);
        let (mut sigmas, ts) = if self.grid == SigmaGrid::Table {
            (interp, ts)
        } else {
            let lo = self.config.sigma_min.unwrap_or(interp[interp.len() - 1]);
            let hi = self.config.sigma_max.unwrap_or(interp[0]);
            self.table.grid(self.grid, n, Some(lo), Some(hi))
        };
        sigmas.push(self.final_sigma());
        self.install(ts, sigmas);
        Ok(())
    }

    fn set_custom_timesteps(&mut self, timesteps: &[f64]) -> Result<()> {
        check_custom(self.method.name(), timesteps, 0.0, (self.table.len() - 1) as f64)?;
        let ts: Vec<f64> = timesteps.iter().map(|&t| f32r(t)).collect();
        let mut sigmas = self.table.interp_sigmas(&ts);
        sigmas.push(self.final_sigma());
        self.install(ts, sigmas);
        Ok(())
    }

    /// `sigmas` are the noise levels to visit, the last one being where sampling ends.
    fn set_custom_sigmas(&mut self, sigmas: &[f64]) -> Result<()> {
        let name = self.method.name();
        if sigmas.len() < 2 {
            return Err(SolverError::InvalidSchedule {
                scheduler: name,
                reason: "need at least two sigmas (start and end)".into(),
            });
        }
        check_custom(name, &sigmas[..sigmas.len() - 1], 1e-12, f64::MAX)?;
        check_custom(name, sigmas, 0.0, f64::MAX)?;
        let sigmas: Vec<f64> = sigmas.iter().map(|&s| f32r(s)).collect();
        let ts = sigmas[..sigmas.len() - 1]
            .iter()
            .map(|&s| self.table.sigma_to_t(s))
            .collect();
        self.install(ts, sigmas);
        Ok(())
    }

    fn timesteps(&self) -> &[f64] {
        &self.cursor.timesteps
    }

    fn init_noise_sigma(&self) -> f64 {
        let max = self.sigmas.iter().copied().fold(0.0, f64::max);
        match self.schedule.timestep_spacing {
            TimestepSpacing::Linspace | TimestepSpacing::Trailing => max,
            TimestepSpacing::Leading => (max * max + 1.0).sqrt(),
        }
    }

    fn order(&self) -> usize {
        if self.method == KMethod::Heun { 2 } else { 1 }
    }

    fn prediction_type(&self) -> Parameterization {
        self.pred
    }

    fn is_stochastic(&self) -> bool {
        self.method == KMethod::EulerAncestral || (self.method == KMethod::Euler && self.config.s_churn > 0.0)
    }

    fn input_scale(&self, t: f64) -> Result<f64> {
        let s = self.sigma_at(t)?;
        Ok(1.0 / (s * s + 1.0).sqrt())
    }

    fn noise_level(&self, t: f64) -> Result<NoiseLevel> {
        let (a, s) = vp_alpha_sigma(self.sigma_at(t)?);
        Ok(NoiseLevel::new(t, a, s))
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
        self.cursor.require_ready(self.method.name(), "add_noise")?;
        let i = self.cursor.find(self.method.name(), t)?;
        Ok(diffusion_core::lincomb_new(
            &[(1.0, x0), (self.sigmas[i], noise)],
            None,
        )?)
    }
}

impl<T: Tensor> KSampler<T> {
    /// Heun's two stages: an Euler predictor to the next sigma, then the trapezoidal
    /// corrector from the stored start.
    fn heun_step(&mut self, i: usize, m: &T, x: &mut T) -> Result<()> {
        let first = self.heun_dt.is_none();
        // Both stages evaluate at sigmas[i] (the interleaved schedule repeats each sigma).
        let (sigma_in, derivative_sigma) = (self.sigmas[i], self.sigmas[i]);
        let (a, b) = self.x0_coeffs(sigma_in)?;
        let clip_x0 = self.config.clip_sample;
        // derivative d = (x - x0) / sigma with x0 = A x + B m (or clipped).
        let mut d = match self.history.len() {
            0 => m.zeros_like(),
            _ => self.history.get(0).clone(),
        };
        if clip_x0 {
            let mut x0 = m.zeros_like();
            x0.lincomb(0.0, &[(a, x), (b, m)], None)?;
            let x0 = clip(&x0, self.config.clip_sample_range)?;
            d.lincomb(
                0.0,
                &[(1.0 / derivative_sigma, x), (-1.0 / derivative_sigma, &x0)],
                None,
            )?;
        } else {
            d.lincomb(
                0.0,
                &[((1.0 - a) / derivative_sigma, x), (-b / derivative_sigma, m)],
                None,
            )?;
        }
        if first {
            let dt = self.sigmas[i + 1] - self.sigmas[i];
            let mut start = self.heun_start.take().unwrap_or_else(|| x.zeros_like());
            start.lincomb(0.0, &[(1.0, x)], None)?;
            x.lincomb(1.0, &[(dt, &d)], None)?;
            self.heun_start = Some(start);
            self.heun_dt = Some(dt);
            self.history.clear();
            self.history.push_owned(d);
        } else {
            let dt = self.heun_dt.take().expect("second stage follows the first");
            let start = self.heun_start.as_ref().expect("stored start");
            let prev = self.history.get(0);
            x.lincomb(0.0, &[(1.0, start), (0.5 * dt, prev), (0.5 * dt, &d)], None)?;
            self.history.clear();
            self.history.push_owned(d);
        }
        Ok(())
    }
}

impl<T: Tensor> KSampler<T> {
    /// One step, written to `x` (in place or as a new tensor).
    fn advance(&mut self, m: &T, t: f64, x: &mut Target<'_, T>, rng: Option<&mut Rng>) -> Result<()> {
        let name = self.method.name();
        let i = self.cursor.index_for_step(name, t)?;
        let sigma = self.sigmas[i];
        match self.method {
            KMethod::Euler => {
                let c = &self.config;
                let gamma = if c.s_tmin <= sigma && sigma <= c.s_tmax {
                    (c.s_churn / (self.sigmas.len() - 1) as f64).min(2f64.sqrt() - 1.0)
                } else {
                    0.0
                };
                let sigma_hat = sigma * (gamma + 1.0);
                // diffusers converts epsilon at sigma_hat, the other kinds at sigma.
                let conv = if self.pred == Parameterization::Epsilon {
                    sigma_hat
                } else {
                    sigma
                };
                let (a, b) = self.x0_coeffs(conv)?;
                let dt = self.sigmas[i + 1] - sigma_hat;
                let keep = 1.0 + (1.0 - a) * dt / sigma_hat;
                let noise = if gamma > 0.0 {
                    let scale = keep * c.s_noise * (sigma_hat * sigma_hat - sigma * sigma).sqrt();
                    Some(Noise::new(scale, need_rng(name, rng)?))
                } else {
                    None
                };
                x.lincomb(keep, &[(-b * dt / sigma_hat, m)], noise)?;
            }
            KMethod::EulerAncestral => {
                let next = self.sigmas[i + 1];
                let up = (next * next * (sigma * sigma - next * next) / (sigma * sigma))
                    .max(0.0)
                    .sqrt();
                let down = (next * next - up * up).max(0.0).sqrt();
                let (a, b) = self.x0_coeffs(sigma)?;
                let dt = down - sigma;
                let noise = Noise::new(up, need_rng(name, rng)?);
                x.lincomb(1.0 + (1.0 - a) * dt / sigma, &[(-b * dt / sigma, m)], Some(noise))?;
            }
            KMethod::Heun => self.heun_step(i, m, x.as_mut())?,
            KMethod::Lms => {
                let (a, b) = self.x0_coeffs(sigma)?;
                self.history
                    .push_lincomb(&[(-b / sigma, m), ((1.0 - a) / sigma, x.sample())])?;
                let order = (i + 1).min(self.config.order);
                // Fixed arrays (LMS order is at most MAX_LMS_ORDER): no per-step allocation.
                let mut nodes = [0.0; MAX_LMS_ORDER];
                for (k, node) in nodes.iter_mut().enumerate().take(order) {
                    *node = self.sigmas[i - k];
                }
                let nodes = &nodes[..order];
                let history = &self.history;
                let terms: [(f64, &T); MAX_LMS_ORDER] = std::array::from_fn(|j| {
                    let j = j.min(order - 1);
                    (
                        lagrange_integral(nodes, j, sigma, self.sigmas[i + 1]),
                        history.get(j),
                    )
                });
                x.lincomb(1.0, &terms[..order], None)?;
            }
        }
        self.cursor.advance(i);
        Ok(())
    }
}
