//! PNDM (Liu et al. 2022): pseudo Runge-Kutta warm-up steps, then pseudo linear
//! multistep (PLMS) steps: diffusers' `PNDMScheduler`, with and without `skip_prk_steps`.
//!
//! Every update is DDIM's transfer `x_prev = phi(x_t, eps, t, t_prev)`
//! (formula 9 of the paper); PRK and PLMS differ only in which `eps` combination they
//! transfer with. Steps are driven by a counter, as in diffusers, because the
//! schedule repeats timesteps.

use diffusion_core::{NoiseLevel, Parameterization, Rng, Tensor};
use diffusion_schedules::spacing::ddim_timesteps;
use diffusion_schedules::{DiscreteScheduleConfig, TimestepSpacing};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::common::{History, Table, Target, table_index};
use crate::config::{self, prediction};
use crate::error::{Result, SolverError, invalid};
use crate::scheduler::Scheduler;

/// The solver keys of `PNDMScheduler`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PndmConfig {
    pub skip_prk_steps: bool,
    pub set_alpha_to_one: bool,
    /// `epsilon` or `v_prediction`.
    pub prediction_type: String,
}

impl Default for PndmConfig {
    fn default() -> Self {
        Self {
            skip_prk_steps: false,
            set_alpha_to_one: false,
            prediction_type: "epsilon".into(),
        }
    }
}

/// PNDM (PRK warm-up + PLMS), or PLMS alone with `skip_prk_steps`.
#[derive(Clone, Debug)]
pub struct Pndm<T> {
    config: PndmConfig,
    schedule: DiscreteScheduleConfig,
    table: Table,
    pred: Parameterization,
    final_abar: f64,
    timesteps: Vec<f64>,
    prk_len: usize,
    /// `num_train_timesteps / n`.
    step_ratio: i64,
    ready: bool,
    counter: usize,
    /// Raw model outputs kept for PLMS (newest last, at most 4).
    ets: History<T>,
    /// The running Runge-Kutta sum of the current PRK group.
    rk_sum: Option<T>,
    /// The sample at the start of a PRK group (or of the PLMS warm-up step).
    start: Option<T>,
}

impl<T: Tensor> Pndm<T> {
    const NAME: &'static str = "pndm";

    pub fn new(schedule: DiscreteScheduleConfig, config: PndmConfig) -> Result<Self> {
        use Parameterization::*;
        let pred = prediction(Self::NAME, &config.prediction_type, &[Epsilon, V])?;
        let table = Table::new(&schedule, false)?;
        let final_abar = if config.set_alpha_to_one {
            1.0
        } else {
            table.abar(0)
        };
        Ok(Self {
            config,
            schedule,
            table,
            pred,
            final_abar,
            timesteps: Vec::new(),
            prk_len: 0,
            step_ratio: 1,
            ready: false,
            counter: 0,
            ets: History::new(4),
            rk_sum: None,
            start: None,
        })
    }

    pub fn schedule_defaults() -> DiscreteScheduleConfig {
        config::schedule_defaults(TimestepSpacing::Leading)
    }

    pub fn from_json(json: &Value) -> Result<Self> {
        let (s, c) = config::parse(Self::NAME, json, Some(&Self::schedule_defaults()))?;
        Self::new(s, c)
    }

    pub fn config(&self) -> &PndmConfig {
        &self.config
    }

    fn abar_at(&self, t: i64) -> f64 {
        if t >= 0 {
            self.table.abar(t as usize)
        } else {
            self.final_abar
        }
    }

    /// `(keep, c)` with `x_prev = keep x + c m` for a move from `t` to `prev` with model
    /// output `m` (in the configured type; v is converted with `x` and `t`, as diffusers
    /// does). Linear in `m`, so a weighted sum of outputs folds into the same pass.
    fn transfer_coeffs(&self, t: i64, prev: i64) -> (f64, f64) {
        let (a_t, a_prev) = (self.abar_at(t), self.abar_at(prev));
        let (b_t, b_prev) = (1.0 - a_t, 1.0 - a_prev);
        let x_coeff = (a_prev / a_t).sqrt();
        let denom = a_t * b_prev.sqrt() + (a_t * b_t * a_prev).sqrt();
        let eps_coeff = -(a_prev - a_t) / denom;
        match self.pred {
            // eps = sqrt(a_t) v + sqrt(b_t) x
            Parameterization::V => (x_coeff + eps_coeff * b_t.sqrt(), eps_coeff * a_t.sqrt()),
            _ => (x_coeff, eps_coeff),
        }
    }

    fn copy_into(slot: &mut Option<T>, x: &T) -> Result<()> {
        let mut buf = slot.take().unwrap_or_else(|| x.zeros_like());
        buf.lincomb(0.0, &[(1.0, x)], None)?;
        *slot = Some(buf);
        Ok(())
    }

    fn step_prk(&mut self, m: &T, t: i64, x: &mut Target<'_, T>) -> Result<()> {
        let c = self.counter;
        let half = self.step_ratio / 2;
        let prev = if c % 2 == 1 { t } else { t - half };
        let group_t = self.timesteps[c / 4 * 4] as i64;
        match c % 4 {
            0 => {
                let mut sum = self.rk_sum.take().unwrap_or_else(|| m.zeros_like());
                sum.lincomb(0.0, &[(1.0 / 6.0, m)], None)?;
                self.rk_sum = Some(sum);
                self.ets.push_lincomb(&[(1.0, m)])?;
                Self::copy_into(&mut self.start, x.sample())?;
            }
            1 | 2 => {
                let sum = self.rk_sum.as_mut().expect("group sum");
                sum.lincomb(1.0, &[(1.0 / 3.0, m)], None)?;
            }
            _ => {}
        }
        let (keep, cm) = self.transfer_coeffs(group_t, prev);
        let start = self.start.as_ref().expect("group start");
        if c % 4 == 3 {
            // eps = rk_sum + m / 6, folded into the update.
            let sum = self.rk_sum.as_ref().expect("group sum");
            x.lincomb(0.0, &[(keep, start), (cm, sum), (cm / 6.0, m)], None)?;
        } else {
            x.lincomb(0.0, &[(keep, start), (cm, m)], None)?;
        }
        Ok(())
    }

    fn step_plms(&mut self, m: &T, t: i64, x: &mut Target<'_, T>) -> Result<()> {
        let c = self.counter;
        let (mut t_from, mut prev) = (t, t - self.step_ratio);
        if c != 1 {
            self.ets.push_lincomb(&[(1.0, m)])?;
        } else {
            // The warm-up's second evaluation: a Heun step from the stored start.
            prev = t;
            t_from = t + self.step_ratio;
        }
        let (keep, cm) = self.transfer_coeffs(t_from, prev);
        let e = |k: usize| self.ets.get(k);
        match (self.ets.len(), c) {
            (1, 0) => {
                Self::copy_into(&mut self.start, x.sample())?;
                x.lincomb(keep, &[(cm, m)], None)?;
            }
            (1, 1) => {
                let start = self.start.take().expect("warm-up start");
                x.lincomb(0.0, &[(keep, &start), (0.5 * cm, m), (0.5 * cm, e(0))], None)?;
            }
            (n, _) => {
                // The Adams-Bashforth combination of the outputs, folded into the update.
                let weights: [f64; 4] = match n {
                    2 => [3.0 / 2.0, -1.0 / 2.0, 0.0, 0.0],
                    3 => [23.0 / 12.0, -16.0 / 12.0, 5.0 / 12.0, 0.0],
                    _ => [55.0 / 24.0, -59.0 / 24.0, 37.0 / 24.0, -9.0 / 24.0],
                };
                let order = n.min(4);
                let terms = [0, 1, 2, 3].map(|k| (cm * weights[k], e(k.min(order - 1))));
                x.lincomb(keep, &terms[..order], None)?;
            }
        }
        Ok(())
    }

    /// One step, written to `x` (in place or as a new tensor).
    fn advance(&mut self, m: &T, t: f64, x: &mut Target<'_, T>) -> Result<()> {
        if !self.ready {
            return Err(SolverError::NotInitialized {
                scheduler: Self::NAME,
                what: "step",
            });
        }
        let c = self.counter;
        if c >= self.timesteps.len() {
            return Err(SolverError::Finished {
                scheduler: Self::NAME,
                steps: self.timesteps.len(),
            });
        }
        if self.timesteps[c] != t {
            return Err(SolverError::OutOfOrder {
                scheduler: Self::NAME,
                expected: self.timesteps[c],
                got: t,
            });
        }
        if c < self.prk_len {
            self.step_prk(m, t as i64, x)?;
        } else {
            self.step_plms(m, t as i64, x)?;
        }
        self.counter += 1;
        Ok(())
    }
}

impl<T: Tensor> Scheduler<T> for Pndm<T> {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn set_timesteps(&mut self, n: usize) -> Result<()> {
        let s = &self.schedule;
        // The base grid, ascending (DDPM/DDIM's timesteps reversed).
        let mut base: Vec<i64> =
            ddim_timesteps(s.timestep_spacing, s.num_train_timesteps, n, s.steps_offset)?;
        base.reverse();
        if let Some(bad) = base
            .iter()
            .find(|&&t| t < 0 || t as usize >= s.num_train_timesteps)
        {
            return Err(invalid(
                Self::NAME,
                "steps_offset",
                format!("timestep {bad} leaves the table"),
            ));
        }
        let ratio = (s.num_train_timesteps / n) as i64;
        let (prk, plms): (Vec<i64>, Vec<i64>) = if self.config.skip_prk_steps {
            // [t_0 .. t_{n-2}, t_{n-2}, t_{n-1}] reversed: the second-newest repeats.
            let mut p = base[..n - 1].to_vec();
            if n >= 2 {
                p.push(base[n - 2]);
            }
            p.push(base[n - 1]);
            p.reverse();
            (Vec::new(), p)
        } else {
            if n < 4 {
                return Err(invalid(
                    Self::NAME,
                    "num_inference_steps",
                    "PNDM with PRK warm-up needs at least 4 steps (or skip_prk_steps)",
                ));
            }
            // Three RK4 groups over the last four grid points, each [t, t - h/2, t - h/2, t - h].
            let half = ratio / 2;
            let mut pts = Vec::new();
            for &t in &base[n - 4..] {
                pts.extend([t, t + half]);
            }
            pts.pop();
            let doubled: Vec<i64> = pts.iter().flat_map(|&t| [t, t]).collect();
            let mut prk = doubled[1..doubled.len() - 1].to_vec();
            prk.reverse();
            let mut plms = base[..n - 3].to_vec();
            plms.reverse();
            (prk, plms)
        };
        self.prk_len = prk.len();
        self.timesteps = prk.into_iter().chain(plms).map(|t| t as f64).collect();
        self.step_ratio = ratio;
        self.counter = 0;
        self.ets.clear();
        self.rk_sum = None;
        self.start = None;
        self.ready = true;
        Ok(())
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn order(&self) -> usize {
        1
    }

    fn prediction_type(&self) -> Parameterization {
        self.pred
    }

    fn noise_level(&self, t: f64) -> Result<NoiseLevel> {
        let a = self.table.abar(table_index(Self::NAME, t, self.table.len())?);
        Ok(NoiseLevel::new(t, a.sqrt(), (1.0 - a).sqrt()))
    }

    fn step_in_place(&mut self, m: &T, t: f64, x: &mut T, _rng: Option<&mut Rng>) -> Result<()> {
        self.advance(m, t, &mut Target::InPlace(x))
    }

    fn step(&mut self, m: &T, t: f64, x: &T, _rng: Option<&mut Rng>) -> Result<T> {
        let mut out = Target::New(x, None);
        self.advance(m, t, &mut out)?;
        Ok(out.into_new())
    }

    fn add_noise(&self, x0: &T, noise: &T, t: f64) -> Result<T> {
        let a = self.table.abar(table_index(Self::NAME, t, self.table.len())?);
        Ok(diffusion_core::lincomb_new(
            &[(a.sqrt(), x0), ((1.0 - a).sqrt(), noise)],
            None,
        )?)
    }
}
