//! UniPC (Zhao et al. 2023): the UniP predictor and UniC corrector, B(h) variants bh1
//! and bh2, orders 1-3: diffusers' `UniPCMultistepScheduler`.

use diffusion_core::{Parameterization, Rng, Tensor};
use diffusion_schedules::{DiscreteScheduleConfig, FinalSigmas, TimestepSpacing};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::common::{Target, Thresholding};
use crate::config::{self, prediction};
use crate::error::{Result, SolverError, invalid};
use crate::scheduler::Scheduler;
use crate::vp::{VpCore, VpSigmaOptions, check_solver_order, vp_core_scheduler_methods};
use diffusion_core::linalg::solve;

/// The solver keys of `UniPCMultistepScheduler`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UniPcConfig {
    pub solver_order: usize,
    pub prediction_type: String,
    pub thresholding: bool,
    pub dynamic_thresholding_ratio: f64,
    pub sample_max_value: f64,
    pub predict_x0: bool,
    /// `bh1` or `bh2` (`midpoint`, `heun`, `logrho` map to bh2, as in diffusers).
    pub solver_type: String,
    pub lower_order_final: bool,
    /// Step indices after which the corrector is skipped.
    pub disable_corrector: Vec<usize>,
    pub use_karras_sigmas: bool,
    pub use_exponential_sigmas: bool,
    pub use_beta_sigmas: bool,
    pub use_flow_sigmas: bool,
    pub flow_shift: f64,
    pub final_sigmas_type: String,
    /// Used only with a `mu` under flow sigmas (accepted; `mu` is not supported here).
    pub use_dynamic_shifting: bool,
    pub time_shift_type: String,
    /// Not supported when set (diffusers' defaults are `null`).
    pub sigma_min: Option<f64>,
    pub sigma_max: Option<f64>,
    pub shift_terminal: Option<f64>,
}

impl Default for UniPcConfig {
    fn default() -> Self {
        Self {
            solver_order: 2,
            prediction_type: "epsilon".into(),
            thresholding: false,
            dynamic_thresholding_ratio: 0.995,
            sample_max_value: 1.0,
            predict_x0: true,
            solver_type: "bh2".into(),
            lower_order_final: true,
            disable_corrector: Vec::new(),
            use_karras_sigmas: false,
            use_exponential_sigmas: false,
            use_beta_sigmas: false,
            use_flow_sigmas: false,
            flow_shift: 1.0,
            final_sigmas_type: "zero".into(),
            use_dynamic_shifting: false,
            time_shift_type: "exponential".into(),
            sigma_min: None,
            sigma_max: None,
            shift_terminal: None,
        }
    }
}

/// UniPC multistep.
#[derive(Clone, Debug)]
pub struct UniPc<T> {
    config: UniPcConfig,
    bh1: bool,
    core: VpCore<T>,
    /// The converted output of this step, before it joins the history.
    spare: Option<T>,
    last_sample: Option<T>,
    this_order: usize,
}

impl<T: Tensor> UniPc<T> {
    const NAME: &'static str = "unipc";

    pub fn new(schedule: DiscreteScheduleConfig, config: UniPcConfig) -> Result<Self> {
        use Parameterization::*;
        let name = Self::NAME;
        let pred = prediction(name, &config.prediction_type, &[Epsilon, Sample, V, Flow])?;
        for (key, v) in [
            ("sigma_min", config.sigma_min),
            ("sigma_max", config.sigma_max),
            ("shift_terminal", config.shift_terminal),
        ] {
            if v.is_some() {
                return Err(SolverError::Unsupported {
                    scheduler: name,
                    what: format!("{key} (only null is supported)"),
                });
            }
        }
        check_solver_order(name, config.solver_order)?;
        let bh1 = match config.solver_type.as_str() {
            "bh1" => true,
            "bh2" | "midpoint" | "heun" | "logrho" => false,
            other => {
                return Err(invalid(
                    name,
                    "solver_type",
                    format!("{other:?} (expected bh1 or bh2)"),
                ));
            }
        };
        let grid = config::sigma_grid(
            name,
            config.use_karras_sigmas,
            config.use_exponential_sigmas,
            config.use_beta_sigmas,
            false,
        )?;
        let opts = VpSigmaOptions::new(
            name,
            grid,
            FinalSigmas::from_name(&config.final_sigmas_type)?,
            f64::NEG_INFINITY,
            config.use_flow_sigmas.then_some(config.flow_shift),
        )?;
        let thresholding = Thresholding::new(
            config.thresholding,
            config.dynamic_thresholding_ratio,
            config.sample_max_value,
        );
        Ok(Self {
            core: VpCore::new(schedule, pred, config.solver_order, opts, thresholding)?,
            config,
            bh1,
            spare: None,
            last_sample: None,
            this_order: 1,
        })
    }

    pub fn schedule_defaults() -> DiscreteScheduleConfig {
        config::schedule_defaults(TimestepSpacing::Linspace)
    }

    pub fn from_json(json: &Value) -> Result<Self> {
        let (s, c) = config::parse(Self::NAME, json, Some(&Self::schedule_defaults()))?;
        Self::new(s, c)
    }

    pub fn sigmas(&self) -> &[f64] {
        &self.core.sched.sigmas
    }

    /// The UniP / UniC coefficients for a step from sigma index `s0` to `t` using the
    /// history sigma indices `past` (newest first): returns `(cx, c_m0, c_past, c_new)`
    /// with `x_t = cx x + c_m0 m0 + sum c_past[k] m_k (+ c_new m_new)`.
    fn unified(
        &self,
        t: usize,
        s0: usize,
        past: &[usize],
        corrector: bool,
    ) -> Result<(f64, f64, Vec<f64>, f64)> {
        let s = &self.core.sched;
        let (alpha_t, sigma_t) = s.alpha_sigma(t);
        let (alpha_s0, sigma_s0) = s.alpha_sigma(s0);
        let h = s.lambda(t) - s.lambda(s0);
        let order = past.len() + 1;
        let rks: Vec<f64> = past.iter().map(|&si| (s.lambda(si) - s.lambda(s0)) / h).collect();
        let hh = if self.config.predict_x0 { -h } else { h };
        let h_phi_1 = hh.exp_m1();
        let b_h = if self.bh1 { hh } else { hh.exp_m1() };
        let mut h_phi_k = h_phi_1 / hh - 1.0;
        let mut factorial = 1.0;
        let mut r_rows = Vec::new();
        let mut b = Vec::new();
        let mut all_r = rks.clone();
        all_r.push(1.0);
        for i in 1..=order {
            r_rows.push(all_r.iter().map(|r| r.powi(i as i32 - 1)).collect::<Vec<f64>>());
            b.push(h_phi_k * factorial / b_h);
            factorial *= (i + 1) as f64;
            h_phi_k = h_phi_k / hh - 1.0 / factorial;
        }
        // x_t_ = (sigma_t/sigma_s0) x - alpha_t h_phi_1 m0 (data) or the noise analogue.
        let (cx, c_base, scale) = if self.config.predict_x0 {
            (sigma_t / sigma_s0, -alpha_t * h_phi_1, -alpha_t * b_h)
        } else {
            (alpha_t / alpha_s0, -sigma_t * h_phi_1, -sigma_t * b_h)
        };
        let rhos: Vec<f64> = if corrector {
            if order == 1 {
                vec![0.5]
            } else {
                solve(r_rows.clone(), b.clone())?
            }
        } else if order == 1 {
            Vec::new()
        } else if order == 2 {
            vec![0.5]
        } else {
            let n = order - 1;
            let a: Vec<Vec<f64>> = r_rows[..n].iter().map(|row| row[..n].to_vec()).collect();
            solve(a, b[..n].to_vec())?
        };
        // D1_k = (m_k - m0) / r_k.
        let mut c_m0 = c_base;
        let mut c_past = vec![0.0; past.len()];
        for k in 0..past.len() {
            let w = scale * rhos[k] / rks[k];
            c_past[k] += w;
            c_m0 -= w;
        }
        let mut c_new = 0.0;
        if corrector {
            // D1_t = m_new - m0 weighted by the last rho.
            let w = scale * rhos[order - 1];
            c_new = w;
            c_m0 -= w;
        }
        Ok((cx, c_m0, c_past, c_new))
    }
}

impl<T: Tensor> Scheduler<T> for UniPc<T> {
    vp_core_scheduler_methods!();

    fn set_timesteps(&mut self, n: usize) -> Result<()> {
        self.core.set_timesteps(n)?;
        self.last_sample = None;
        self.this_order = 1;
        Ok(())
    }

    fn order(&self) -> usize {
        1
    }

    fn step_in_place(&mut self, m: &T, t: f64, x: &mut T, _rng: Option<&mut Rng>) -> Result<()> {
        self.advance(m, t, &mut Target::InPlace(x))
    }

    fn step(&mut self, m: &T, t: f64, x: &T, _rng: Option<&mut Rng>) -> Result<T> {
        let mut out = Target::New(x, None);
        self.advance(m, t, &mut out)?;
        Ok(out.into_new())
    }
}

impl<T: Tensor> UniPc<T> {
    /// One step, written to `x` (in place or as a new tensor).
    ///
    /// The corrected sample is written into the buffer that keeps it for the next
    /// corrector (`last_sample`), and the predictor reads it from there: no separate
    /// copy of the sample.
    fn advance(&mut self, m: &T, t: f64, x: &mut Target<'_, T>) -> Result<()> {
        let i = self.core.cursor.index_for_step(Self::NAME, t)?;
        let n = self.core.cursor.len();
        let predict_x0 = self.config.predict_x0;
        if self.core.thresholding.enabled && !predict_x0 {
            return Err(SolverError::Unsupported {
                scheduler: Self::NAME,
                what: "thresholding with predict_x0 = false".into(),
            });
        }
        // Convert the output at sigma_i (x0 for predict_x0, else epsilon).
        let mut conv = self.spare.take().unwrap_or_else(|| m.zeros_like());
        self.core
            .convert_output(&mut conv, m, x.sample(), i, predict_x0)?;
        // UniC: correct the sample that the previous predictor produced, into `last`.
        let use_corrector =
            i > 0 && !self.config.disable_corrector.contains(&(i - 1)) && self.last_sample.is_some();
        let mut last = self.last_sample.take().unwrap_or_else(|| m.zeros_like());
        if use_corrector {
            let order = self.this_order;
            let mut past = [0usize; 3];
            for (k, p) in past.iter_mut().enumerate().take(order - 1) {
                *p = i - (k + 2);
            }
            let (cx, c_m0, c_past, c_new) = self.unified(i, i - 1, &past[..order - 1], true)?;
            let history = &self.core.history;
            let mut terms = [(c_m0, history.get(0)), (c_new, &conv), (0.0, &conv), (0.0, &conv)];
            for (k, c) in c_past.iter().enumerate() {
                terms[2 + k] = (*c, history.get(k + 1));
            }
            last.lincomb(cx, &terms[..2 + c_past.len()], None)?;
        } else {
            last.lincomb(0.0, &[(1.0, x.sample())], None)?;
        }
        self.spare = self.core.history.push_owned(conv);
        let this_order = if self.config.lower_order_final {
            self.config.solver_order.min(n - i)
        } else {
            self.config.solver_order
        };
        self.this_order = this_order.min(self.core.lower_order_nums + 1);
        // UniP: predict the next sample from the (corrected) current one.
        let mut past = [0usize; 3];
        for (k, p) in past.iter_mut().enumerate().take(self.this_order - 1) {
            *p = i - (k + 1);
        }
        let (cx, c_m0, c_past, _) = self.unified(i + 1, i, &past[..self.this_order - 1], false)?;
        let history = &self.core.history;
        let mut terms = [(cx, &last), (c_m0, history.get(0)), (0.0, &last), (0.0, &last)];
        for (k, c) in c_past.iter().enumerate() {
            terms[2 + k] = (*c, history.get(k + 1));
        }
        x.lincomb(0.0, &terms[..2 + c_past.len()], None)?;
        self.last_sample = Some(last);
        self.core.count_step();
        self.core.cursor.advance(i);
        Ok(())
    }
}
