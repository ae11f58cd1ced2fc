//! DPM-Solver / DPM-Solver++ singlestep (Lu et al. 2022), orders 1-3: diffusers'
//! `DPMSolverSinglestepScheduler`.
//!
//! The schedule is cut into groups by an order list (`[1, 2, 3, 1, 2, 3, ...]` for
//! order 3). Each group starts from its first sample; the group's later steps are
//! intermediate evaluations whose outputs refine one high-order jump from that start.

use diffusion_core::{Noise, Parameterization, Rng, Tensor};
use diffusion_schedules::{DiscreteScheduleConfig, FinalSigmas, TimestepSpacing};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::common::{Target, Thresholding};
use crate::config::{self, prediction};
use crate::dpm::{Algorithm, check_dpm_keys, coefficients};
use crate::error::{Result, invalid};
use crate::scheduler::{Scheduler, need_rng};
use crate::vp::{VpCore, VpSigmaOptions, check_solver_order, vp_core_scheduler_methods};

/// The solver keys of `DPMSolverSinglestepScheduler`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DpmSinglestepConfig {
    pub solver_order: usize,
    pub prediction_type: String,
    pub thresholding: bool,
    pub dynamic_thresholding_ratio: f64,
    pub sample_max_value: f64,
    /// `dpmsolver++`, `sde-dpmsolver++` or `dpmsolver`.
    pub algorithm_type: String,
    /// `midpoint` or `heun`.
    pub solver_type: String,
    pub lower_order_final: bool,
    pub use_karras_sigmas: bool,
    pub use_exponential_sigmas: bool,
    pub use_beta_sigmas: bool,
    pub use_flow_sigmas: bool,
    pub flow_shift: f64,
    /// `zero` or `sigma_min`.
    pub final_sigmas_type: String,
    #[serde(deserialize_with = "crate::config::float_or_inf")]
    pub lambda_min_clipped: f64,
    /// Only `null` / absent is supported (learned-variance outputs are not split).
    pub variance_type: Option<String>,
    /// Used only with a `mu` passed to `set_timesteps` under flow sigmas (accepted).
    pub use_dynamic_shifting: bool,
    pub time_shift_type: String,
}

impl Default for DpmSinglestepConfig {
    fn default() -> Self {
        Self {
            solver_order: 2,
            prediction_type: "epsilon".into(),
            thresholding: false,
            dynamic_thresholding_ratio: 0.995,
            sample_max_value: 1.0,
            algorithm_type: "dpmsolver++".into(),
            solver_type: "midpoint".into(),
            lower_order_final: false,
            use_karras_sigmas: false,
            use_exponential_sigmas: false,
            use_beta_sigmas: false,
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

/// diffusers' `get_order_list`: the order of each of `steps` steps.
pub(crate) fn order_list(
    steps: usize,
    order: usize,
    lower_order_final: bool,
    final_zero: bool,
) -> Vec<usize> {
    let cycle = |k: usize| (1..=order).cycle().take(k * order).collect::<Vec<_>>();
    let mut orders = if lower_order_final {
        match order {
            3 => match steps % 3 {
                0 => [cycle(steps / 3 - 1), vec![1, 2, 1]].concat(),
                1 => [cycle(steps / 3), vec![1]].concat(),
                _ => [cycle(steps / 3), vec![1, 2]].concat(),
            },
            2 => {
                if steps.is_multiple_of(2) {
                    [cycle(steps / 2 - 1), vec![1, 1]].concat()
                } else {
                    [cycle(steps / 2), vec![1]].concat()
                }
            }
            _ => vec![1; steps],
        }
    } else {
        cycle(steps / order)
    };
    if final_zero && let Some(last) = orders.last_mut() {
        *last = 1;
    }
    orders
}

/// DPM-Solver(++) singlestep.
#[derive(Clone, Debug)]
pub struct DpmSolverSinglestep<T> {
    config: DpmSinglestepConfig,
    alg: Algorithm,
    heun: bool,
    /// Its history holds the converted model outputs of the current group (newest last).
    core: VpCore<T>,
    orders: Vec<usize>,
    /// The sample at the start of the current group.
    start: Option<T>,
}

impl<T: Tensor> DpmSolverSinglestep<T> {
    const NAME: &'static str = "dpm_solver_singlestep";

    pub fn new(schedule: DiscreteScheduleConfig, config: DpmSinglestepConfig) -> Result<Self> {
        use Parameterization::*;
        let name = Self::NAME;
        let pred = prediction(name, &config.prediction_type, &[Epsilon, Sample, V, Flow])?;
        let alg = Algorithm::from_name(name, &config.algorithm_type)?;
        if alg == Algorithm::SdeNoise {
            return Err(invalid(
                name,
                "algorithm_type",
                "sde-dpmsolver has no singlestep form (use dpmsolver++, sde-dpmsolver++ or dpmsolver)",
            ));
        }
        check_solver_order(name, config.solver_order)?;
        let final_sigmas = FinalSigmas::from_name(&config.final_sigmas_type)?;
        let heun = check_dpm_keys(
            name,
            alg,
            &config.solver_type,
            final_sigmas,
            config.variance_type.as_ref(),
        )?;
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
            orders: Vec::new(),
            start: None,
        })
    }

    /// Linspace timesteps only: the class has no `timestep_spacing` (the key is accepted
    /// and ignored, as diffusers does).
    pub fn schedule_defaults() -> DiscreteScheduleConfig {
        config::schedule_defaults(TimestepSpacing::Linspace)
    }

    pub fn from_json(json: &Value) -> Result<Self> {
        let (mut s, c): (DiscreteScheduleConfig, _) =
            config::parse(Self::NAME, json, Some(&Self::schedule_defaults()))?;
        s.timestep_spacing = TimestepSpacing::Linspace;
        s.steps_offset = 0;
        Self::new(s, c)
    }

    pub fn config(&self) -> &DpmSinglestepConfig {
        &self.config
    }

    /// The inference sigmas (VE noise levels), one more than the timesteps.
    pub fn sigmas(&self) -> &[f64] {
        &self.core.sched.sigmas
    }

    /// The order of each step of the current schedule.
    pub fn orders(&self) -> &[usize] {
        &self.orders
    }
}

/// Weights on `[m0, m1, m2]` (newest first) of a singlestep update of `order` from the
/// group start `s_{order-1}`; `r0 = (lambda_s0 - lambda_start) / h`,
/// `r1 = (lambda_s1 - lambda_start) / h` (order 3 only).
pub(crate) fn singlestep_weights(order: usize, heun: bool, cd: [f64; 3], r0: f64, r1: f64) -> [f64; 3] {
    match order {
        1 => [cd[0], 0.0, 0.0],
        // D0 = m1, D1 = (m0 - m1) / r0.
        2 => [cd[1] / r0, cd[0] - cd[1] / r0, 0.0],
        _ => {
            // D0 = m2, D1_0 = (m1 - m2) / r1, D1_1 = (m0 - m2) / r0.
            let d1_0 = [0.0, 1.0 / r1, -1.0 / r1];
            let d1_1 = [1.0 / r0, 0.0, -1.0 / r0];
            let mut w = [0.0, 0.0, cd[0]];
            for j in 0..3 {
                if heun {
                    let d1 = (r0 * d1_0[j] - r1 * d1_1[j]) / (r0 - r1);
                    let d2 = 2.0 * (d1_1[j] - d1_0[j]) / (r0 - r1);
                    w[j] += cd[1] * d1 + cd[2] * d2;
                } else {
                    w[j] += cd[1] * d1_1[j];
                }
            }
            w
        }
    }
}

impl<T: Tensor> Scheduler<T> for DpmSolverSinglestep<T> {
    vp_core_scheduler_methods!();

    fn set_timesteps(&mut self, n: usize) -> Result<()> {
        self.core.set_timesteps(n)?;
        let order = self.config.solver_order;
        let final_zero = self.core.opts.final_sigmas == FinalSigmas::Zero;
        // diffusers switches lower_order_final on (and keeps it) when the steps do not
        // divide into whole groups or the last sigma is zero.
        if !n.is_multiple_of(order) || final_zero {
            self.config.lower_order_final = true;
        }
        self.orders = order_list(n, order, self.config.lower_order_final, final_zero);
        self.start = None;
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

impl<T: Tensor> DpmSolverSinglestep<T> {
    /// One step, written to `x` (in place or as a new tensor).
    fn advance(&mut self, m: &T, t: f64, x: &mut Target<'_, T>, rng: Option<&mut Rng>) -> Result<()> {
        let i = self.core.cursor.index_for_step(Self::NAME, t)?;
        let noise_rng = if self.alg.stochastic() {
            Some(need_rng(Self::NAME, rng)?)
        } else {
            None
        };
        self.core
            .push_converted(m, x.sample(), i, self.alg.data_prediction())?;
        // Starting part-way (img2img) can leave too few outputs for the listed order.
        let order = self.orders[i].min(self.core.history.len()).max(1);
        if order == 1 {
            // The group's start sample; the update below overwrites `x` (keep = 0).
            x.move_sample_to(&mut self.start)?;
        }
        let s = &self.core.sched;
        let first = i + 1 - order; // the group's start index
        let (lt, ls) = (s.lambda(i + 1), s.lambda(first));
        let h = lt - ls;
        let co = coefficients(
            self.alg,
            self.heun,
            order,
            s.alpha_sigma(i + 1),
            s.alpha_sigma(first),
            h,
        );
        let r0 = (s.lambda(i) - ls) / h;
        let r1 = if order == 3 {
            (s.lambda(i - 1) - ls) / h
        } else {
            1.0
        };
        let w = singlestep_weights(order, self.heun, co.cd, r0, r1);
        let history = &self.core.history;
        let start = self.start.as_ref().expect("a group starts with an order-1 step");
        let terms = [
            (co.cx, start),
            (w[0], history.get(0)),
            (w[1], history.get(1.min(order - 1))),
            (w[2], history.get(2.min(order - 1))),
        ];
        let noise = noise_rng.map(|r| Noise::new(co.noise, r));
        x.lincomb(0.0, &terms[..order + 1], noise)?;
        self.core.cursor.advance(i);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// diffusers' get_order_list, written out by hand for a few cases.
    #[test]
    fn order_lists() {
        assert_eq!(order_list(6, 3, true, false), vec![1, 2, 3, 1, 2, 1]);
        assert_eq!(order_list(7, 3, true, false), vec![1, 2, 3, 1, 2, 3, 1]);
        assert_eq!(order_list(8, 3, true, true), vec![1, 2, 3, 1, 2, 3, 1, 1]);
        assert_eq!(order_list(6, 2, true, false), vec![1, 2, 1, 2, 1, 1]);
        assert_eq!(order_list(5, 2, true, false), vec![1, 2, 1, 2, 1]);
        assert_eq!(order_list(6, 3, false, false), vec![1, 2, 3, 1, 2, 3]);
        assert_eq!(order_list(4, 2, false, true), vec![1, 2, 1, 1]);
    }
}
