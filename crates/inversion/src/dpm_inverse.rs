//! diffusers' `DPMSolverMultistepInverseScheduler` (deterministic `dpmsolver++`): the
//! multistep exponential integrator run from data towards noise, same config keys,
//! defaults, timestep spacing and order-lowering rules.

use diffusion_core::{Denoiser, NoiseLevel, Parameterization, Tensor, param::conversion};
use diffusion_schedules::{DiscreteSchedule, DiscreteScheduleConfig, TimestepSpacing, spacing::np_linspace};

use crate::error::{InversionError, Result, invalid_param};

/// Which second-order correction `dpmsolver++` uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SolverType {
    Midpoint,
    Heun,
}

impl SolverType {
    /// diffusers' names; `logrho`, `bh1` and `bh2` map to midpoint as diffusers does.
    pub fn from_name(name: &str) -> Result<Self> {
        match name {
            "midpoint" | "logrho" | "bh1" | "bh2" => Ok(Self::Midpoint),
            "heun" => Ok(Self::Heun),
            other => Err(InversionError::Unsupported {
                key: "solver_type",
                reason: format!("{other:?} (expected midpoint or heun)"),
            }),
        }
    }
}

/// The `scheduler_config.json` keys of `DPMSolverMultistepInverseScheduler` that the
/// deterministic `dpmsolver++` path reads, with diffusers' defaults (order 2, midpoint,
/// `lower_order_final = true`, linspace spacing).
#[derive(Clone, Debug, PartialEq)]
pub struct DpmInverseConfig {
    pub schedule: DiscreteScheduleConfig,
    pub solver_order: usize,
    pub prediction_type: Parameterization,
    pub solver_type: SolverType,
    pub lower_order_final: bool,
    pub euler_at_final: bool,
    pub lambda_min_clipped: f64,
}

impl Default for DpmInverseConfig {
    fn default() -> Self {
        Self {
            schedule: DiscreteScheduleConfig {
                timestep_spacing: TimestepSpacing::Linspace,
                ..DiscreteScheduleConfig::default()
            },
            solver_order: 2,
            prediction_type: Parameterization::Epsilon,
            solver_type: SolverType::Midpoint,
            lower_order_final: true,
            euler_at_final: false,
            lambda_min_clipped: f64::NEG_INFINITY,
        }
    }
}

/// A configured inverse scheduler after `set_timesteps`; [`Self::step`] keeps the
/// multistep history, like diffusers' `step`.
#[derive(Clone, Debug)]
pub struct DpmInverseScheduler<T> {
    config: DpmInverseConfig,
    schedule: DiscreteSchedule,
    timesteps: Vec<i64>,
    /// VE sigmas `sqrt((1 - abar) / abar)` per step, plus the final (noisiest) one.
    sigmas: Vec<f64>,
    /// x0 predictions of the last `solver_order` steps, oldest first.
    history: Vec<T>,
    step_index: usize,
}

/// `(alpha, sigma)` of the VP marginal with VE sigma `s`.
fn vp_of(s: f64) -> (f64, f64) {
    let alpha = 1.0 / (s * s + 1.0).sqrt();
    (alpha, s * alpha)
}

fn lambda_of(s: f64) -> f64 {
    let (a, sg) = vp_of(s);
    a.ln() - sg.ln()
}

impl<T: Tensor> DpmInverseScheduler<T> {
    pub fn new(config: DpmInverseConfig, num_inference_steps: usize) -> Result<Self> {
        if !(1..=3).contains(&config.solver_order) {
            return Err(invalid_param(
                "solver_order",
                config.solver_order as f64,
                "must be 1, 2 or 3",
            ));
        }
        match config.prediction_type {
            Parameterization::Epsilon | Parameterization::Sample | Parameterization::V => {}
            other => {
                return Err(InversionError::Unsupported {
                    key: "prediction_type",
                    reason: format!("{other:?} (expected epsilon, sample or v_prediction)"),
                });
            }
        }
        let schedule = DiscreteSchedule::from_config(&config.schedule)?;
        let n_train = schedule.num_train_timesteps();
        if num_inference_steps == 0 || num_inference_steps > n_train {
            return Err(invalid_param(
                "num_inference_steps",
                num_inference_steps as f64,
                format!("must be in 1..={n_train}"),
            ));
        }
        let abar: Vec<f64> = schedule.alphas_cumprod.iter().map(|&a| f64::from(a)).collect();
        // lambda_min_clipped: count the (ascending, flipped) lambdas below the clip.
        let below = abar
            .iter()
            .filter(|&&a| 0.5 * a.ln() - 0.5 * (1.0 - a).ln() < config.lambda_min_clipped)
            .count();
        if below >= n_train {
            return Err(invalid_param(
                "lambda_min_clipped",
                config.lambda_min_clipped,
                "clips away every training step",
            ));
        }
        let noisiest = n_train - 1 - below;
        let steps = num_inference_steps;
        let mut timesteps: Vec<i64> = match config.schedule.timestep_spacing {
            TimestepSpacing::Linspace => np_linspace(0.0, noisiest as f64, steps + 1)[..steps]
                .iter()
                .map(|t| t.round_ties_even() as i64)
                .collect(),
            TimestepSpacing::Leading => {
                let ratio = (noisiest + 1) / (steps + 1);
                (0..steps)
                    .map(|i| (i * ratio + config.schedule.steps_offset) as i64)
                    .collect()
            }
            TimestepSpacing::Trailing => {
                let ratio = n_train as f64 / steps as f64;
                let start = (noisiest + 1) as f64;
                let len = (start / ratio).ceil() as usize;
                let mut v: Vec<i64> = (0..len)
                    .map(|i| (start - i as f64 * ratio).round_ties_even() as i64 - 1)
                    .collect();
                v.reverse();
                v
            }
        };
        let ve = |t: usize| f64::from((((1.0 - abar[t]) / abar[t]).sqrt()) as f32);
        let mut sigmas: Vec<f64> = timesteps.iter().map(|&t| ve(t as usize)).collect();
        sigmas.push(ve(noisiest));
        // diffusers drops repeated timesteps (but not their sigmas) when steps ~ N.
        let mut seen = std::collections::HashSet::new();
        timesteps.retain(|t| seen.insert(*t));
        Ok(Self {
            config,
            schedule,
            timesteps,
            sigmas,
            history: Vec::new(),
            step_index: 0,
        })
    }

    /// Ascending timesteps, the order inversion visits them.
    pub fn timesteps(&self) -> &[i64] {
        &self.timesteps
    }

    /// The VE sigmas per step plus the final one.
    pub fn sigmas(&self) -> &[f64] {
        &self.sigmas
    }

    /// The level the model is told at step `k`: the table timestep with the step's sigma.
    pub fn model_level(&self, k: usize) -> NoiseLevel {
        let (a, s) = vp_of(self.sigmas[k]);
        NoiseLevel::new(self.timesteps[k] as f64, a, s)
    }

    pub fn schedule(&self) -> &DiscreteSchedule {
        &self.schedule
    }

    /// One multistep update. `timestep` must be the next one in [`Self::timesteps`].
    pub fn step(&mut self, model_output: &T, timestep: i64, sample: &T) -> Result<T> {
        let k = self.step_index;
        let n = self.timesteps.len();
        if k >= n || self.timesteps[k] != timestep {
            return Err(InversionError::GridMismatch {
                inverted: format!("step {k} of timesteps {:?}", self.timesteps),
                sampling: format!("timestep {timestep}"),
            });
        }
        let (alpha_s, sigma_s) = vp_of(self.sigmas[k]);
        let (cx, cm) = conversion(
            self.config.prediction_type,
            Parameterization::Sample,
            alpha_s,
            sigma_s,
        )?;
        let x0 = crate::lincomb2((cx, sample), (cm, model_output))?;
        if self.history.len() == self.config.solver_order {
            self.history.remove(0);
        }
        self.history.push(x0);

        let short = self.config.lower_order_final && n < 15;
        let lower_final = k == n - 1 && (self.config.euler_at_final || short);
        let lower_second = k + 2 == n && short;
        let available = self.history.len();
        let order = if self.config.solver_order == 1 || available < 2 || lower_final {
            1
        } else if self.config.solver_order == 2 || available < 3 || lower_second {
            2
        } else {
            3
        };
        let out = self.update(order, sample)?;
        self.step_index += 1;
        Ok(out)
    }

    /// The dpmsolver++ update of `order` from step `k` to `k + 1`, one fused pass.
    fn update(&self, order: usize, sample: &T) -> Result<T> {
        let k = self.step_index;
        let (alpha_t, sigma_t) = vp_of(self.sigmas[k + 1]);
        let (_, sigma_s0) = vp_of(self.sigmas[k]);
        let lam = |i: usize| lambda_of(self.sigmas[i]);
        let h = lam(k + 1) - lam(k);
        let phi = (-h).exp_m1(); // e^{-h} - 1
        let m = |back: usize| &self.history[self.history.len() - 1 - back];
        // Coefficients on m0, m1, m2.
        let mut c = [-alpha_t * phi, 0.0, 0.0];
        match order {
            1 => {}
            2 => {
                let r0 = (lam(k) - lam(k - 1)) / h;
                let cd1 = match self.config.solver_type {
                    SolverType::Midpoint => -0.5 * alpha_t * phi,
                    SolverType::Heun => alpha_t * (phi / h + 1.0),
                };
                // D1 = (m0 - m1) / r0.
                c[0] += cd1 / r0;
                c[1] -= cd1 / r0;
            }
            _ => {
                let (r0, r1) = ((lam(k) - lam(k - 1)) / h, (lam(k - 1) - lam(k - 2)) / h);
                let d10 = [1.0 / r0, -1.0 / r0, 0.0];
                let d11 = [0.0, 1.0 / r1, -1.0 / r1];
                let cd1 = alpha_t * (phi / h + 1.0);
                let cd2 = -alpha_t * ((phi + h) / (h * h) - 0.5);
                for i in 0..3 {
                    let diff = d10[i] - d11[i];
                    let d1 = d10[i] + r0 / (r0 + r1) * diff;
                    let d2 = diff / (r0 + r1);
                    c[i] += cd1 * d1 + cd2 * d2;
                }
            }
        }
        let mut out = m(0).zeros_like();
        let mut terms: Vec<(f64, &T)> = vec![(sigma_t / sigma_s0, sample)];
        for (i, ci) in c.iter().enumerate().take(order) {
            terms.push((*ci, m(i)));
        }
        out.lincomb(0.0, &terms, None)?;
        Ok(out)
    }

    /// The diffusers loop over every timestep with `model` told [`Self::model_level`].
    /// Resets the multistep history first.
    pub fn invert<D: Denoiser<T> + ?Sized>(&mut self, model: &D, sample: &T) -> Result<T> {
        self.history.clear();
        self.step_index = 0;
        let mut x = sample.clone();
        for k in 0..self.timesteps.len() {
            let out = crate::checked_predict(model, &x, self.model_level(k), k)?;
            x = self.step(&out, self.timesteps[k], &x)?;
        }
        Ok(x)
    }
}
