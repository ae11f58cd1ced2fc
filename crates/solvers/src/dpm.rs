//! DPM-Solver / DPM-Solver++ multistep (Lu et al. 2022), orders 1-3, with the SDE
//! variants: diffusers' `DPMSolverMultistepScheduler`, and its inversion
//! (`DPMSolverMultistepInverseScheduler`) on the same coefficients.

use diffusion_core::{Noise, Parameterization, Rng, Tensor};
use diffusion_schedules::{DiscreteScheduleConfig, FinalSigmas, TimestepSpacing};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::common::{Target, Thresholding, check_custom};
use crate::config::{self, prediction};
use crate::error::{Result, SolverError, invalid};
use crate::scheduler::{Scheduler, need_rng};
use crate::vp::{VpCore, VpSchedule, VpSigmaOptions, check_solver_order, multistep_order};

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

/// The checks both DPM-Solver classes make: `solver_type` (returns whether it is heun),
/// a final sigma the algorithm can reach, and no learned variance.
pub(crate) fn check_dpm_keys(
    scheduler: &'static str,
    alg: Algorithm,
    solver_type: &str,
    final_sigmas: FinalSigmas,
    variance_type: Option<&String>,
) -> Result<bool> {
    let heun = match solver_type {
        "midpoint" => false,
        "heun" => true,
        other => {
            return Err(invalid(
                scheduler,
                "solver_type",
                format!("{other:?} (expected midpoint or heun)"),
            ));
        }
    };
    if !alg.data_prediction() && final_sigmas == FinalSigmas::Zero {
        return Err(invalid(
            scheduler,
            "final_sigmas_type",
            "`zero` is singular for the noise-prediction algorithms; use sigma_min",
        ));
    }
    if let Some(v) = variance_type {
        return Err(SolverError::Unsupported {
            scheduler,
            what: format!("variance_type {v:?}"),
        });
    }
    Ok(heun)
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

/// DPM-Solver(++) multistep, forward (denoising) or inverse (data towards noise).
#[derive(Clone, Debug)]
pub struct DpmSolverMultistep<T> {
    config: DpmSolverConfig,
    alg: Algorithm,
    heun: bool,
    inverse: bool,
    core: VpCore<T>,
}

impl<T: Tensor> DpmSolverMultistep<T> {
    const NAME: &'static str = "dpm_solver_multistep";
    const INVERSE_NAME: &'static str = "dpm_solver_multistep_inverse";

    pub fn new(schedule: DiscreteScheduleConfig, config: DpmSolverConfig) -> Result<Self> {
        Self::build(schedule, config, false)
    }

    /// diffusers' `DPMSolverMultistepInverseScheduler`: ascending timesteps from the
    /// cleanest level, the same updates. Only the table's own sigmas are supported.
    pub fn inverse(schedule: DiscreteScheduleConfig, config: DpmSolverConfig) -> Result<Self> {
        let name = Self::INVERSE_NAME;
        let grid_keys = [
            ("use_karras_sigmas", config.use_karras_sigmas),
            ("use_exponential_sigmas", config.use_exponential_sigmas),
            ("use_beta_sigmas", config.use_beta_sigmas),
            ("use_lu_lambdas", config.use_lu_lambdas),
            ("use_flow_sigmas", config.use_flow_sigmas),
        ];
        if let Some((key, _)) = grid_keys.iter().find(|(_, on)| *on) {
            return Err(SolverError::Unsupported {
                scheduler: name,
                what: format!("{key} (the inverse runs on the table sigmas)"),
            });
        }
        Self::build(schedule, config, true)
    }

    fn build(schedule: DiscreteScheduleConfig, config: DpmSolverConfig, inverse: bool) -> Result<Self> {
        use Parameterization::*;
        let name = if inverse { Self::INVERSE_NAME } else { Self::NAME };
        let pred = prediction(name, &config.prediction_type, &[Epsilon, Sample, V, Flow])?;
        let alg = Algorithm::from_name(name, &config.algorithm_type)?;
        check_solver_order(name, config.solver_order)?;
        let final_sigmas = FinalSigmas::from_name(&config.final_sigmas_type)?;
        // The inverse ends at the noisiest level: its final sigma is never zero.
        let reached = if inverse {
            FinalSigmas::SigmaMin
        } else {
            final_sigmas
        };
        let heun = check_dpm_keys(
            name,
            alg,
            &config.solver_type,
            reached,
            config.variance_type.as_ref(),
        )?;
        if alg == Algorithm::SdeNoise && config.solver_order == 3 {
            return Err(invalid(
                name,
                "solver_order",
                "sde-dpmsolver has no third-order update",
            ));
        }
        let grid = config::sigma_grid(
            name,
            config.use_karras_sigmas,
            config.use_exponential_sigmas,
            config.use_beta_sigmas,
            config.use_lu_lambdas,
        )?;
        let opts = VpSigmaOptions::new(
            name,
            grid,
            final_sigmas,
            config.lambda_min_clipped,
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
            alg,
            heun,
            inverse,
        })
    }

    pub fn schedule_defaults() -> DiscreteScheduleConfig {
        config::schedule_defaults(TimestepSpacing::Linspace)
    }

    pub fn from_json(json: &Value) -> Result<Self> {
        let (s, c) = config::parse(Self::NAME, json, Some(&Self::schedule_defaults()))?;
        Self::new(s, c)
    }

    pub fn inverse_from_json(json: &Value) -> Result<Self> {
        let (s, c) = config::parse(Self::INVERSE_NAME, json, Some(&Self::schedule_defaults()))?;
        Self::inverse(s, c)
    }

    pub fn config(&self) -> &DpmSolverConfig {
        &self.config
    }

    /// The inference sigmas (VE noise levels), one more than the timesteps.
    pub fn sigmas(&self) -> &[f64] {
        &self.core.sched.sigmas
    }
}

impl<T: Tensor> DpmSolverMultistep<T> {
    /// One step, written to `x` (in place or as a new tensor).
    fn advance(&mut self, m: &T, t: f64, x: &mut Target<'_, T>, rng: Option<&mut Rng>) -> Result<()> {
        let name = self.name();
        let i = self.core.cursor.index_for_step(name, t)?;
        let n = self.core.cursor.len();
        let lower_order_final = self.config.lower_order_final;
        let lower_final = i == n - 1
            && (self.config.euler_at_final
                || (lower_order_final && n < 15)
                || (!self.inverse && self.core.opts.final_sigmas == FinalSigmas::Zero));
        let lower_second = i + 2 == n && lower_order_final && n < 15;
        let noise_rng = if self.alg.stochastic() {
            Some(need_rng(name, rng)?)
        } else {
            None
        };
        self.core
            .push_converted(m, x.sample(), i, self.alg.data_prediction())?;
        let order = multistep_order(
            self.config.solver_order,
            self.core.lower_order_nums,
            lower_final,
            lower_second,
        );
        let s = &self.core.sched;
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
        let history = &self.core.history;
        let terms = [0, 1, 2].map(|k| (w[k], history.get(k.min(order - 1))));
        let noise = noise_rng.map(|r| Noise::new(co.noise, r));
        x.lincomb(co.cx, &terms[..order], noise)?;
        self.core.count_step();
        self.core.cursor.advance(i);
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
        if self.inverse {
            Self::INVERSE_NAME
        } else {
            Self::NAME
        }
    }

    fn timesteps(&self) -> &[f64] {
        &self.core.cursor.timesteps
    }

    fn prediction_type(&self) -> Parameterization {
        self.core.pred
    }

    fn noise_level(&self, t: f64) -> Result<diffusion_core::NoiseLevel> {
        self.core.noise_level(self.name(), t)
    }

    fn add_noise(&self, x0: &T, noise: &T, t: f64) -> Result<T> {
        self.core.add_noise(self.name(), x0, noise, t)
    }

    fn set_timesteps(&mut self, n: usize) -> Result<()> {
        if self.inverse {
            let core = &mut self.core;
            let sched = VpSchedule::inverse(&core.table, &core.schedule, n, &core.opts)?;
            core.reset(sched);
            Ok(())
        } else {
            self.core.set_timesteps(n)
        }
    }

    fn set_custom_timesteps(&mut self, timesteps: &[f64]) -> Result<()> {
        if self.inverse {
            return Err(SolverError::Unsupported {
                scheduler: Self::INVERSE_NAME,
                what: "custom timesteps".into(),
            });
        }
        let core = &mut self.core;
        if core.opts.grid != diffusion_schedules::SigmaGrid::Table || core.opts.flow_shift.is_some() {
            return Err(invalid(
                Self::NAME,
                "timesteps",
                "custom timesteps need the plain table sigmas",
            ));
        }
        check_custom(Self::NAME, timesteps, 0.0, (core.table.len() - 1) as f64)?;
        let ts: Vec<f64> = timesteps.iter().map(|t| t.trunc()).collect();
        let sched = VpSchedule::custom(&core.table, &ts, core.opts.final_sigmas);
        core.reset(sched);
        Ok(())
    }

    fn order(&self) -> usize {
        self.config.solver_order
    }

    fn is_stochastic(&self) -> bool {
        self.alg.stochastic()
    }

    fn step_in_place(&mut self, m: &T, t: f64, x: &mut T, rng: Option<&mut Rng>) -> Result<()> {
        self.advance(m, t, &mut Target::InPlace(x), rng)
    }

    fn step(&mut self, m: &T, t: f64, x: &T, rng: Option<&mut Rng>) -> Result<T> {
        let mut out = Target::New(x, None);
        self.advance(m, t, &mut out, rng)?;
        Ok(out.into_new())
    }
}
