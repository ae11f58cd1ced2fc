//! The sigma schedules of diffusers' VP multistep solvers (DPM-Solver, UniPC, DEIS):
//! timesteps by spacing or by a sigma grid, float32 sigmas, a final sigma.

use diffusion_core::param::conversion;
use diffusion_core::{NoiseLevel, Parameterization, Tensor};
use diffusion_schedules::spacing::{inverse_multistep_timesteps, multistep_timesteps};
use diffusion_schedules::{DiscreteScheduleConfig, FinalSigmas, SigmaGrid};

use crate::common::{Cursor, History, Table, Thresholding, f32r, log_snr, threshold, vp_alpha_sigma};
use crate::error::{Result, invalid};

/// How a VP solver builds its sigmas.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct VpSigmaOptions {
    pub grid: SigmaGrid,
    pub final_sigmas: FinalSigmas,
    /// DPM-Solver's `lambda_min_clipped` (-inf: no clipping).
    pub lambda_min_clipped: f64,
    /// `use_flow_sigmas` with this `flow_shift`: `alpha = 1 - sigma`.
    pub flow_shift: Option<f64>,
}

impl VpSigmaOptions {
    /// Checks the flow shift (used only with flow sigmas).
    pub fn new(
        scheduler: &'static str,
        grid: SigmaGrid,
        final_sigmas: FinalSigmas,
        lambda_min_clipped: f64,
        flow_shift: Option<f64>,
    ) -> Result<Self> {
        if flow_shift.is_some_and(|s| s.is_nan() || s <= 0.0) {
            return Err(invalid(scheduler, "flow_shift", "must be positive"));
        }
        Ok(Self {
            grid,
            final_sigmas,
            lambda_min_clipped,
            flow_shift,
        })
    }
}

/// An inference schedule: `timesteps[i]` (what the model sees) and `sigmas[i]`, with one
/// extra final sigma.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct VpSchedule {
    pub timesteps: Vec<f64>,
    pub sigmas: Vec<f64>,
    pub flow: bool,
}

impl VpSchedule {
    pub fn build(
        table: &Table,
        cfg: &DiscreteScheduleConfig,
        n: usize,
        opts: &VpSigmaOptions,
    ) -> Result<Self> {
        let n_train = cfg.num_train_timesteps;
        let spaced = multistep_timesteps(
            cfg.timestep_spacing,
            n_train,
            unclipped_steps(table, n_train, opts),
            n,
            cfg.steps_offset,
        )?;
        let (mut sigmas, timesteps): (Vec<f64>, Vec<f64>) = if let Some(shift) = opts.flow_shift {
            let steps = diffusion_schedules::spacing::np_linspace(1.0, 1.0 / n_train as f64, n + 1);
            let mut s: Vec<f64> = steps
                .iter()
                .map(|a| {
                    let s = 1.0 - a;
                    shift * s / (1.0 + (shift - 1.0) * s)
                })
                .collect();
            s.reverse();
            s.pop();
            // diffusers stores these timesteps as int64 (truncation).
            let ts = s.iter().map(|v| (v * n_train as f64).trunc()).collect();
            (s, ts)
        } else {
            match opts.grid {
                SigmaGrid::Table => {
                    let ts: Vec<f64> = spaced.iter().map(|&t| t as f64).collect();
                    (table.interp_sigmas(&ts), ts)
                }
                grid => {
                    let (s, ts) = table.grid(grid, n, None, None);
                    // Karras and lu grids round their timesteps, the others truncate
                    // (diffusers' int64 cast).
                    let round = matches!(grid, SigmaGrid::Karras { .. } | SigmaGrid::LuLambdas);
                    let ts = ts
                        .into_iter()
                        .map(|t| if round { t.round_ties_even() } else { t.trunc() })
                        .collect();
                    (s, ts)
                }
            }
        };
        let last = match opts.final_sigmas {
            FinalSigmas::Zero => 0.0,
            FinalSigmas::SigmaMin => table.sigma_min(),
        };
        sigmas.push(last);
        let sigmas = sigmas.into_iter().map(f32r).collect();
        Ok(Self {
            timesteps,
            sigmas,
            flow: opts.flow_shift.is_some(),
        })
    }

    /// diffusers' `DPMSolverMultistepInverseScheduler` schedule: ascending timesteps
    /// from the cleanest level and their table sigmas, ending at the noisiest step
    /// `lambda_min_clipped` leaves. Like diffusers, a timestep that repeats (when `n`
    /// nears the training steps) is dropped from the timesteps but not from the sigmas.
    pub fn inverse(
        table: &Table,
        cfg: &DiscreteScheduleConfig,
        n: usize,
        opts: &VpSigmaOptions,
    ) -> Result<Self> {
        let n_train = cfg.num_train_timesteps;
        let last = unclipped_steps(table, n_train, opts);
        let spaced = inverse_multistep_timesteps(cfg.timestep_spacing, n_train, last, n, cfg.steps_offset)?;
        let mut timesteps: Vec<f64> = spaced.iter().map(|&t| t as f64).collect();
        let mut sigmas = table.interp_sigmas(&timesteps);
        sigmas.extend(table.interp_sigmas(&[(last - 1) as f64]));
        let mut seen = Vec::with_capacity(timesteps.len());
        timesteps.retain(|t| {
            let fresh = !seen.contains(t);
            seen.push(*t);
            fresh
        });
        Ok(Self {
            timesteps,
            sigmas: sigmas.into_iter().map(f32r).collect(),
            flow: false,
        })
    }

    /// From user timesteps (integers in the table), interpolating the table sigmas.
    pub fn custom(table: &Table, timesteps: &[f64], final_sigmas: FinalSigmas) -> Self {
        let mut sigmas = table.interp_sigmas(timesteps);
        sigmas.push(match final_sigmas {
            FinalSigmas::Zero => 0.0,
            FinalSigmas::SigmaMin => table.sigma_min(),
        });
        Self {
            timesteps: timesteps.to_vec(),
            sigmas: sigmas.into_iter().map(f32r).collect(),
            flow: false,
        }
    }

    /// `(alpha_t, sigma_t)` at sigma index `i`.
    pub fn alpha_sigma(&self, i: usize) -> (f64, f64) {
        let s = self.sigmas[i];
        if self.flow {
            (1.0 - s, s)
        } else {
            vp_alpha_sigma(s)
        }
    }

    /// `lambda = ln alpha - ln sigma` at sigma index `i`.
    pub fn lambda(&self, i: usize) -> f64 {
        let (a, s) = self.alpha_sigma(i);
        log_snr(a, s)
    }
}

/// The training steps left after `lambda_min_clipped` drops the noisiest ones whose
/// log-SNR is below it.
fn unclipped_steps(table: &Table, n_train: usize, opts: &VpSigmaOptions) -> usize {
    let clipped = (0..n_train)
        .rev()
        .take_while(|&t| {
            let a = table.abar(t);
            let (alpha, sigma) = (a.sqrt(), (1.0 - a).sqrt());
            log_snr(f32r(alpha), f32r(sigma)) < opts.lambda_min_clipped
        })
        .count();
    n_train - clipped
}

/// Fails unless `order` is 1, 2 or 3 (the orders the VP multistep solvers implement).
pub(crate) fn check_solver_order(scheduler: &'static str, order: usize) -> Result<()> {
    if (1..=3).contains(&order) {
        Ok(())
    } else {
        Err(invalid(
            scheduler,
            "solver_order",
            format!("{order} (expected 1, 2 or 3)"),
        ))
    }
}

/// The order of a multistep update: limited by the solver order, by how many outputs
/// the history holds (`warmed` steps taken so far), and by the lower-order tail rules.
pub(crate) fn multistep_order(
    solver_order: usize,
    warmed: usize,
    lower_final: bool,
    lower_second: bool,
) -> usize {
    if solver_order == 1 || warmed < 1 || lower_final {
        1
    } else if solver_order == 2 || warmed < 2 || lower_second {
        2
    } else {
        3
    }
}

/// The state the VP multistep solvers (DPM-Solver multistep and singlestep, DEIS,
/// UniPC) share: the training table, the inference schedule, the step cursor and the
/// history of converted model outputs.
#[derive(Clone, Debug)]
pub(crate) struct VpCore<T> {
    pub schedule: DiscreteScheduleConfig,
    pub table: Table,
    pub pred: Parameterization,
    pub opts: VpSigmaOptions,
    pub thresholding: Thresholding,
    pub sched: VpSchedule,
    pub cursor: Cursor,
    pub history: History<T>,
    /// Steps taken since the schedule was set, capped at the solver order (diffusers'
    /// `lower_order_nums`): the warm-up of a multistep method.
    pub lower_order_nums: usize,
    solver_order: usize,
}

impl<T: Tensor> VpCore<T> {
    pub fn new(
        schedule: DiscreteScheduleConfig,
        pred: Parameterization,
        solver_order: usize,
        opts: VpSigmaOptions,
        thresholding: Thresholding,
    ) -> Result<Self> {
        Ok(Self {
            table: Table::new(&schedule, true)?,
            history: History::new(solver_order),
            schedule,
            pred,
            opts,
            thresholding,
            sched: VpSchedule::default(),
            cursor: Cursor::default(),
            lower_order_nums: 0,
            solver_order,
        })
    }

    /// Builds the `n`-step schedule from the options and resets the solver state.
    pub fn set_timesteps(&mut self, n: usize) -> Result<()> {
        let sched = VpSchedule::build(&self.table, &self.schedule, n, &self.opts)?;
        self.reset(sched);
        Ok(())
    }

    pub fn reset(&mut self, sched: VpSchedule) {
        self.cursor.reset(sched.timesteps.clone());
        self.sched = sched;
        self.history.clear();
        self.lower_order_nums = 0;
    }

    /// Records that a step was taken (for the warm-up of [`multistep_order`]).
    pub fn count_step(&mut self) {
        self.lower_order_nums = (self.lower_order_nums + 1).min(self.solver_order);
    }

    pub fn noise_level(&self, scheduler: &'static str, t: f64) -> Result<NoiseLevel> {
        let i = self.cursor.index_for_query(scheduler, t)?;
        let (a, s) = self.sched.alpha_sigma(i);
        Ok(NoiseLevel::new(t, a, s))
    }

    pub fn add_noise(&self, scheduler: &'static str, x0: &T, noise: &T, t: f64) -> Result<T> {
        self.cursor.require_ready(scheduler, "add_noise")?;
        let i = self.cursor.find(scheduler, t)?;
        let (a, s) = self.sched.alpha_sigma(i);
        Ok(diffusion_core::lincomb_new(&[(a, x0), (s, noise)], None)?)
    }

    /// Writes the model output `m` for sample `x` at sigma index `i` into `out`, as the
    /// data prediction x0 (`data`) or as the noise prediction.
    pub fn convert_output(&self, out: &mut T, m: &T, x: &T, i: usize, data: bool) -> Result<()> {
        convert_output(
            out,
            self.pred,
            &self.thresholding,
            self.sched.alpha_sigma(i),
            m,
            x,
            data,
        )
    }

    /// [`VpCore::convert_output`] as the newest history entry (in a recycled buffer).
    pub fn push_converted(&mut self, m: &T, x: &T, i: usize, data: bool) -> Result<()> {
        let (pred, thresholding) = (self.pred, self.thresholding);
        let alpha_sigma = self.sched.alpha_sigma(i);
        self.history.push_with(x, |out| {
            convert_output(out, pred, &thresholding, alpha_sigma, m, x, data)
        })
    }
}

/// The model output converted to x0 (`data`) or epsilon. With dynamic thresholding the
/// x0 prediction is thresholded first and epsilon derived from it (diffusers' DEIS;
/// DPM-Solver takes an equivalent route through epsilon).
fn convert_output<T: Tensor>(
    out: &mut T,
    pred: Parameterization,
    thresholding: &Thresholding,
    (alpha, sigma): (f64, f64),
    m: &T,
    x: &T,
    data: bool,
) -> Result<()> {
    if thresholding.enabled {
        let (cx, cm) = conversion(pred, Parameterization::Sample, alpha, sigma)?;
        out.lincomb(0.0, &[(cm, m), (cx, x)], None)?;
        let x0 = threshold(out, thresholding.ratio, thresholding.max_value)?;
        if data {
            *out = x0;
        } else {
            out.lincomb(0.0, &[(1.0 / sigma, x), (-alpha / sigma, &x0)], None)?;
        }
    } else {
        let target = if data {
            Parameterization::Sample
        } else {
            Parameterization::Epsilon
        };
        let (cx, cm) = conversion(pred, target, alpha, sigma)?;
        out.lincomb(0.0, &[(cm, m), (cx, x)], None)?;
    }
    Ok(())
}

/// The [`crate::Scheduler`] methods that only read a VP solver's `core: VpCore<T>` and
/// its `NAME` (expanded inside each `impl Scheduler<T>`).
macro_rules! vp_core_scheduler_methods {
    () => {
        fn name(&self) -> &'static str {
            Self::NAME
        }

        fn timesteps(&self) -> &[f64] {
            &self.core.cursor.timesteps
        }

        fn prediction_type(&self) -> diffusion_core::Parameterization {
            self.core.pred
        }

        fn noise_level(&self, t: f64) -> crate::error::Result<diffusion_core::NoiseLevel> {
            self.core.noise_level(Self::NAME, t)
        }

        fn add_noise(&self, x0: &T, noise: &T, t: f64) -> crate::error::Result<T> {
            self.core.add_noise(Self::NAME, x0, noise, t)
        }
    };
}
pub(crate) use vp_core_scheduler_methods;
