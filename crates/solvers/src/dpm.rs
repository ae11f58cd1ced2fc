//! DPM-Solver / DPM-Solver++ multistep (Lu et al. 2022), orders 1-3, with the SDE
//! variants: diffusers' `DPMSolverMultistepScheduler`.

use diffusion_core::param::conversion;
use diffusion_core::{Noise, NoiseLevel, Parameterization, Rng, Tensor};
use diffusion_schedules::{DiscreteScheduleConfig, FinalSigmas, TimestepSpacing};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::common::{Cursor, History, Table, Thresholding, check_custom, threshold};
use crate::config::{self, prediction};
use crate::error::{Result, SolverError, invalid};
use crate::scheduler::{Scheduler, need_rng};
use crate::vp::{VpSchedule, VpSigmaOptions};

/// The solver keys of `DPMSolverMultistepScheduler`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DpmSolverConfig {
    pub solver_order: usize,
    pub prediction_type: String,
    pub thresholding: bool,
    pub dynamic_thresholding_ratio: f64,
    pub sample_max_value: f64,
    /// `dpmsolver++`, `sde-dpmsolver++`, `dpmsolver` or `sde-dpmsolver`.
    pub algorithm_type: String,
    /// `midpoint` or `heun` (the second-order formula).
    pub solver_type: String,
    pub lower_order_final: bool,
    pub euler_at_final: bool,
    pub use_karras_sigmas: bool,
    pub use_exponential_sigmas: bool,
    pub use_beta_sigmas: bool,
    pub use_lu_lambdas: bool,
    pub use_flow_sigmas: bool,
    pub flow_shift: f64,
    /// `zero` or `sigma_min`.
    pub final_sigmas_type: String,
    #[serde(deserialize_with = "crate::config::float_or_inf")]
    pub lambda_min_clipped: f64,
    /// Only `null` / absent is supported (learned-variance outputs are not split).
    pub variance_type: Option<String>,
    /// Used only with a `mu` under flow sigmas (accepted; `mu` is not supported here).
    pub use_dynamic_shifting: bool,
    pub time_shift_type: String,
}

impl Default for DpmSolverConfig {
    fn default() -> Self {
        Self {
            solver_order: 2,
            prediction_type: "epsilon".into(),
            thresholding: false,
            dynamic_thresholding_ratio: 0.995,
            sample_max_value: 1.0,
            algorithm_type: "dpmsolver++".into(),
            solver_type: "midpoint".into(),
            lower_order_final: true,
            euler_at_final: false,
            use_karras_sigmas: false,
            use_exponential_sigmas: false,
            use_beta_sigmas: false,
            use_lu_lambdas: false,
            use_flow_sigmas: false,
            flow_shift: 1.0,
            final_sigmas_type: "zero".into(),
            lambda_min_clipped: f64::NEG_INFINITY,
            variance_type: None,
            use_dynamic_shifting: false,
            time_shift_type: "exponential".into(),
        }
    }
}

/// The four update families.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Algorithm {
    /// Data prediction (DPM-Solver++).
    PlusPlus,
    SdePlusPlus,
    /// Noise prediction (the original DPM-Solver).
    Noise,
    SdeNoise,
}

impl Algorithm {
    pub(crate) fn from_name(scheduler: &'static str, name: &str) -> Result<Self> {
        Ok(match name {
            "dpmsolver++" => Self::PlusPlus,
            "sde-dpmsolver++" => Self::SdePlusPlus,
            "dpmsolver" => Self::Noise,
            "sde-dpmsolver" => Self::SdeNoise,
            other => {
                return Err(invalid(
                    scheduler,
                    "algorithm_type",
                    format!("{other:?} (expected dpmsolver++, sde-dpmsolver++, dpmsolver or sde-dpmsolver)"),
                ));
            }
        })
    }

    pub(crate) fn data_prediction(self) -> bool {
        matches!(self, Self::PlusPlus | Self::SdePlusPlus)
    }

    pub(crate) fn stochastic(self) -> bool {
        matches!(self, Self::SdePlusPlus | Self::SdeNoise)
    }
}

/// Update coefficients for `x_t = cx * x_s + cd0 * D0 + cd1 * D1 + cd2 * D2 + noise`,
/// from `h = lambda_t - lambda_s` (DPM-Solver's exponential-integrator formulas).
pub(crate) struct Coeffs {
    pub cx: f64,
    pub cd: [f64; 3],
    pub noise: f64,
}

pub(crate) fn coefficients(
    alg: Algorithm,
    heun: bool,
    order: usize,
    (alpha_t, sigma_t): (f64, f64),
    (alpha_s, sigma_s): (f64, f64),
    h: f64,
) -> Coeffs {
    let em = (-h).exp_m1(); // e^{-h} - 1
    let ep = h.exp_m1(); // e^{h} - 1
    let e2 = -(-2.0 * h).exp_m1(); // 1 - e^{-2h}
    match alg {
        Algorithm::PlusPlus => Coeffs {
            cx: sigma_t / sigma_s,
            cd: [
                -alpha_t * em,
                match (order, heun) {
                    (2, false) => -0.5 * alpha_t * em,
                    _ => alpha_t * (em / h + 1.0),
                },
                -alpha_t * ((em + h) / (h * h) - 0.5),
            ],
            noise: 0.0,
        },
        Algorithm::SdePlusPlus => Coeffs {
            cx: sigma_t / sigma_s * (-h).exp(),
            cd: [
                alpha_t * e2,
                match (order, heun) {
                    (2, false) => 0.5 * alpha_t * e2,
                    _ => alpha_t * (e2 / (-2.0 * h) + 1.0),
                },
                alpha_t * ((e2 - 2.0 * h) / (4.0 * h * h) - 0.5),
            ],
            noise: sigma_t * e2.max(0.0).sqrt(),
        },
        Algorithm::Noise => Coeffs {
            cx: alpha_t / alpha_s,
            cd: [
                -sigma_t * ep,
                match (order, heun) {
                    (2, false) => -0.5 * sigma_t * ep,
                    _ => -sigma_t * (ep / h - 1.0),
                },
                -sigma_t * ((ep - h) / (h * h) - 0.5),
            ],
            noise: 0.0,
        },
        Algorithm::SdeNoise => Coeffs {
            cx: alpha_t / alpha_s,
            cd: [
                -2.0 * sigma_t * ep,
                if heun {
                    -2.0 * sigma_t * (ep / h - 1.0)
                } else {
                    -sigma_t * ep
                },
                0.0,
            ],
            noise: sigma_t * (2.0 * h).exp_m1().max(0.0).sqrt(),
        },
    }
}

/// DPM-Solver(++) multistep.
#[derive(Clone, Debug)]
pub struct DpmSolverMultistep<T> {
    config: DpmSolverConfig,
    schedule: DiscreteScheduleConfig,
    table: Table,
    pred: Parameterization,
    alg: Algorithm,
    heun: bool,
    opts: VpSigmaOptions,
    thresholding: Thresholding,
    sched: VpSchedule,
    cursor: Cursor,
    history: History<T>,
    lower_order_nums: usize,
}

impl<T: Tensor> DpmSolverMultistep<T> {
    const NAME: &'static str = "dpm_solver_multistep";

    pub fn new(schedule: DiscreteScheduleConfig, config: DpmSolverConfig) -> Result<Self> {
        use Parameterization::*;
        let name = Self::NAME;
        let pred = prediction(name, &config.prediction_type, &[Epsilon, Sample, V, Flow])?;
        let alg = Algorithm::from_name(name, &config.algorithm_type)?;
        if !(1..=3).contains(&config.solver_order) {
            return Err(invalid(
                name,
                "solver_order",
                format!("{} (expected 1, 2 or 3)", config.solver_order),
            ));
        }
        let heun = match config.solver_type.as_str() {
            "midpoint" => false,
            "heun" => true,
            other => {
                return Err(invalid(
                    name,
                    "solver_type",
                    format!("{other:?} (expected midpoint or heun)"),
                ));
            }
        };
        let final_sigmas = FinalSigmas::from_name(&config.final_sigmas_type)?;
        if !alg.data_prediction() && final_sigmas == FinalSigmas::Zero {
            return Err(invalid(
                name,
                "final_sigmas_type",
                "`zero` is singular for the noise-prediction algorithms; use sigma_min",
            ));
        }
        if alg == Algorithm::SdeNoise && config.solver_order == 3 {
            return Err(invalid(
                name,
                "solver_order",
                "sde-dpmsolver has no third-order update",
            ));
        }
        if let Some(v) = &config.variance_type {
            return Err(SolverError::Unsupported {
                scheduler: name,
                what: format!("variance_type {v:?}"),
            });
        }
        if config.use_flow_sigmas && (config.flow_shift.is_nan() || config.flow_shift <= 0.0) {
            return Err(invalid(name, "flow_shift", "must be positive"));
        }
        let grid = config::sigma_grid(
            name,
            config.use_karras_sigmas,
            config.use_exponential_sigmas,
            config.use_beta_sigmas,
            config.use_lu_lambdas,
        )?;
        let opts = VpSigmaOptions {
            grid,
            final_sigmas,
            lambda_min_clipped: config.lambda_min_clipped,
            flow_shift: config.use_flow_sigmas.then_some(config.flow_shift),
        };
        let thresholding = Thresholding {
            enabled: config.thresholding,
            ratio: config.dynamic_thresholding_ratio,
            max_value: config.sample_max_value,
        };
        Ok(Self {
            table: Table::new(&schedule, true)?,
            history: History::new(config.solver_order),
            config,
            schedule,
            pred,
            alg,
            heun,
            opts,
            thresholding,
            sched: VpSchedule::default(),
            cursor: Cursor::default(),
            lower_order_nums: 0,
        })
    }

    pub fn schedule_defaults() -> DiscreteScheduleConfig {
        config::schedule_defaults(TimestepSpacing::Linspace)
    }

    pub fn from_json(json: &Value) -> Result<Self> {
        let (s, c) = config::parse(Self::NAME, json, Some(&Self::schedule_defaults()))?;
        Self::new(s, c)
    }

    pub fn config(&self) -> &DpmSolverConfig {
        &self.config
    }

    /// The inference sigmas (VE noise levels), one more than the timesteps.
    pub fn sigmas(&self) -> &[f64] {
        &self.sched.sigmas
    }

    fn reset(&mut self, sched: VpSchedule) {
        self.cursor.reset(sched.timesteps.clone());
        self.sched = sched;
        self.history.clear();
        self.lower_order_nums = 0;
    }

    /// The model output as the algorithm's variable (x0 or epsilon), pushed to history.
    fn push_converted(&mut self, m: &T, x: &T, i: usize) -> Result<()> {
        let (alpha, sigma) = self.sched.alpha_sigma(i);
        let target = if self.alg.data_prediction() {
            Parameterization::Sample
        } else {
            Parameterization::Epsilon
        };
        let (cx, cm) = conversion(self.pred, target, alpha, sigma)?;
        self.history.push_lincomb(&[(cm, m), (cx, x)])?;
        if self.thresholding.enabled {
            let newest = self.history.newest_mut();
            if target == Parameterization::Sample {
                self.thresholding.apply(newest)?;
            } else {
                // Threshold the implied x0, then return to epsilon.
                let mut x0 = x.zeros_like();
                x0.lincomb(0.0, &[(1.0 / alpha, x), (-sigma / alpha, &*newest)], None)?;
                let x0 = threshold(&x0, self.thresholding.ratio, self.thresholding.max_value)?;
                newest.lincomb(0.0, &[(1.0 / sigma, x), (-alpha / sigma, &x0)], None)?;
            }
        }
        Ok(())
    }
}

/// Coefficients on `[m0, m1, m2]` (newest first) of the divided differences D0, D1, D2
/// of a multistep method, from the step-size ratios `r0 = h0 / h`, `r1 = h1 / h`.
pub(crate) fn multistep_weights(order: usize, cd: [f64; 3], r0: f64, r1: f64) -> [f64; 3] {
    match order {
        1 => [cd[0], 0.0, 0.0],
        2 => [cd[0] + cd[1] / r0, -cd[1] / r0, 0.0],
        _ => {
            // D1_0 = (m0 - m1) / r0, D1_1 = (m1 - m2) / r1,
            // D1 = D1_0 + r0 / (r0 + r1) (D1_0 - D1_1), D2 = (D1_0 - D1_1) / (r0 + r1).
            let d10 = [1.0 / r0, -1.0 / r0, 0.0];
            let d11 = [0.0, 1.0 / r1, -1.0 / r1];
            let k = r0 / (r0 + r1);
            let mut w = [cd[0], 0.0, 0.0];
            for j in 0..3 {
                let d1 = d10[j] + k * (d10[j] - d11[j]);
                let d2 = (d10[j] - d11[j]) / (r0 + r1);
                w[j] += cd[1] * d1 + cd[2] * d2;
            }
            w
        }
    }
}

impl<T: Tensor> Scheduler<T> for DpmSolverMultistep<T> {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn set_timesteps(&mut self, n: usize) -> Result<()> {
        let sched = VpSchedule::build(&self.table, &self.schedule, n, &self.opts)?;
        self.reset(sched);
        Ok(())
    }

    fn set_custom_timesteps(&mut self, timesteps: &[f64]) -> Result<()> {
        if self.opts.grid != diffusion_schedules::SigmaGrid::Table || self.opts.flow_shift.is_some() {
            return Err(invalid(
                Self::NAME,
                "timesteps",
                "custom timesteps need the plain table sigmas",
            ));
        }
        check_custom(Self::NAME, timesteps, 0.0, (self.table.len() - 1) as f64)?;
        let ts: Vec<f64> = timesteps.iter().map(|t| t.trunc()).collect();
        let sched = VpSchedule::custom(&self.table, &ts, self.opts.final_sigmas);
        self.reset(sched);
        Ok(())
    }

    fn timesteps(&self) -> &[f64] {
        &self.cursor.timesteps
    }

    fn order(&self) -> usize {
        self.config.solver_order
    }

    fn prediction_type(&self) -> Parameterization {
        self.pred
    }

    fn is_stochastic(&self) -> bool {
        self.alg.stochastic()
    }

    fn noise_level(&self, t: f64) -> Result<NoiseLevel> {
        let i = self.cursor.index_for_query(Self::NAME, t)?;
        let (a, s) = self.sched.alpha_sigma(i);
        Ok(NoiseLevel::new(t, a, s))
    }

    fn step_in_place(&mut self, m: &T, t: f64, x: &mut T, rng: Option<&mut Rng>) -> Result<()> {
        let i = self.cursor.index_for_step(Self::NAME, t)?;
        let n = self.cursor.len();
        let (solver_order, lower_order_final) = (self.config.solver_order, self.config.lower_order_final);
        let lower_final = i == n - 1
            && (self.config.euler_at_final
                || (lower_order_final && n < 15)
                || self.opts.final_sigmas == FinalSigmas::Zero);
        let lower_second = i + 2 == n && lower_order_final && n < 15;
        let noise_rng = if self.alg.stochastic() {
            Some(need_rng(Self::NAME, rng)?)
        } else {
            None
        };
        self.push_converted(m, x, i)?;
        let order = if solver_order == 1 || self.lower_order_nums < 1 || lower_final {
            1
        } else if solver_order == 2 || self.lower_order_nums < 2 || lower_second {
            2
        } else {
            3
        };
        let s = &self.sched;
        let (lt, l0) = (s.lambda(i + 1), s.lambda(i));
        let h = lt - l0;
        let co = coefficients(
            self.alg,
            self.heun,
            order,
            s.alpha_sigma(i + 1),
            s.alpha_sigma(i),
            h,
        );
        let r0 = if order >= 2 {
            (l0 - s.lambda(i - 1)) / h
        } else {
            1.0
        };
        let r1 = if order >= 3 {
            (s.lambda(i - 1) - s.lambda(i - 2)) / h
        } else {
            1.0
        };
        let w = multistep_weights(order, co.cd, r0, r1);
        let terms: Vec<(f64, &T)> = (0..order).map(|k| (w[k], self.history.get(k))).collect();
        let noise = noise_rng.map(|r| Noise::new(co.noise, r));
        x.lincomb(co.cx, &terms, noise)?;
        self.lower_order_nums = (self.lower_order_nums + 1).min(solver_order);
        self.cursor.advance(i);
        Ok(())
    }

    fn add_noise(&self, x0: &T, noise: &T, t: f64) -> Result<T> {
        self.cursor.require_ready(Self::NAME, "add_noise")?;
        let i = self.cursor.find(Self::NAME, t)?;
        let (a, s) = self.sched.alpha_sigma(i);
        Ok(diffusion_core::lincomb_new(&[(a, x0), (s, noise)], None)?)
    }
}
