//! DEIS (Zhang & Chen 2023), the log-rho multistep variant of diffusers'
//! `DEISMultistepScheduler`, orders 1-3.
//!
//! With `rho = sigma / alpha`, the ODE is `d(x / alpha) = eps d rho`. DEIS fits a
//! polynomial in `ln rho` through the last `k` noise predictions and integrates it
//! exactly over `[rho_s, rho_t]`.

use diffusion_core::{Parameterization, Rng, Tensor};
use diffusion_schedules::{DiscreteScheduleConfig, FinalSigmas, TimestepSpacing};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::common::{Target, Thresholding};
use crate::config::{self, prediction};
use crate::error::{Result, SolverError, invalid};
use crate::scheduler::Scheduler;
use crate::vp::{VpCore, VpSigmaOptions, check_solver_order, multistep_order, vp_core_scheduler_methods};

/// The solver keys of `DEISMultistepScheduler`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeisConfig {
    pub solver_order: usize,
    pub prediction_type: String,
    pub thresholding: bool,
    pub dynamic_thresholding_ratio: f64,
    pub sample_max_value: f64,
    /// `deis` (`dpmsolver` / `dpmsolver++` map to it, as in diffusers).
    pub algorithm_type: String,
    /// `logrho` (`midpoint` / `heun` map to it, as in diffusers).
    pub solver_type: String,
    pub lower_order_final: bool,
    pub use_karras_sigmas: bool,
    pub use_exponential_sigmas: bool,
    pub use_beta_sigmas: bool,
    /// Only `false` is supported.
    pub use_flow_sigmas: bool,
    /// Used only with `use_flow_sigmas` (accepted for compatibility).
    pub flow_shift: f64,
    /// Used only with a `mu` passed to `set_timesteps` under flow sigmas (accepted).
    pub use_dynamic_shifting: bool,
    pub time_shift_type: String,
}

impl Default for DeisConfig {
    fn default() -> Self {
        Self {
            solver_order: 2,
            prediction_type: "epsilon".into(),
            thresholding: false,
            dynamic_thresholding_ratio: 0.995,
            sample_max_value: 1.0,
            algorithm_type: "deis".into(),
            solver_type: "logrho".into(),
            lower_order_final: true,
            use_karras_sigmas: false,
            use_exponential_sigmas: false,
            use_beta_sigmas: false,
            use_flow_sigmas: false,
            flow_shift: 1.0,
            use_dynamic_shifting: false,
            time_shift_type: "exponential".into(),
        }
    }
}

/// `int_{rho_s}^{rho_t} l_j(ln rho) d rho` for the Lagrange basis `l_j` on the nodes
/// `ln rho_k`: the weight of the `j`-th newest noise prediction. Closed forms
/// (antiderivatives of `rho * polynomial(ln rho)`) for 1, 2 or 3 nodes.
pub(crate) fn deis_weights(rho_t: f64, nodes: &[f64]) -> [f64; 3] {
    let rho_s = nodes[0];
    let l = |r: f64| r.ln();
    match nodes.len() {
        1 => [rho_t - rho_s, 0.0, 0.0],
        2 => {
            // int r (ln r - ln c) / (ln b - ln c) dr = r (ln r - ln c - 1) / (ln b - ln c).
            let anti = |r: f64, b: f64, c: f64| r * (l(r) - l(c) - 1.0) / (l(b) - l(c));
            let w = |b: f64, c: f64| anti(rho_t, b, c) - anti(rho_s, b, c);
            [w(nodes[0], nodes[1]), w(nodes[1], nodes[0]), 0.0]
        }
        _ => {
            // int (ln r - ln c)(ln r - ln d) / ((ln b - ln c)(ln b - ln d)) dr, using
            // int p(ln r) dr = r (p - p' + p'') for a quadratic p.
            let anti = |r: f64, b: f64, c: f64, d: f64| {
                let (u, lc, ld) = (l(r), l(c), l(d));
                let p = (u - lc) * (u - ld);
                let dp = 2.0 * u - lc - ld;
                r * (p - dp + 2.0) / ((l(b) - lc) * (l(b) - ld))
            };
            let w = |b: f64, c: f64, d: f64| anti(rho_t, b, c, d) - anti(rho_s, b, c, d);
            let (a, b, c) = (nodes[0], nodes[1], nodes[2]);
            [w(a, b, c), w(b, c, a), w(c, a, b)]
        }
    }
}

/// DEIS multistep (log-rho).
#[derive(Clone, Debug)]
pub struct Deis<T> {
    config: DeisConfig,
    /// Its history holds past noise predictions (newest last).
    core: VpCore<T>,
}

impl<T: Tensor> Deis<T> {
    const NAME: &'static str = "deis";

    pub fn new(schedule: DiscreteScheduleConfig, config: DeisConfig) -> Result<Self> {
        use Parameterization::*;
        let name = Self::NAME;
        let pred = prediction(name, &config.prediction_type, &[Epsilon, Sample, V])?;
        check_solver_order(name, config.solver_order)?;
        if !matches!(
            config.algorithm_type.as_str(),
            "deis" | "dpmsolver" | "dpmsolver++"
        ) {
            return Err(invalid(
                name,
                "algorithm_type",
                format!("{:?} (expected deis)", config.algorithm_type),
            ));
        }
        if !matches!(config.solver_type.as_str(), "logrho" | "midpoint" | "heun") {
            return Err(invalid(
                name,
                "solver_type",
                format!("{:?} (expected logrho)", config.solver_type),
            ));
        }
        if config.use_flow_sigmas {
            return Err(SolverError::Unsupported {
                scheduler: name,
                what: "use_flow_sigmas".into(),
            });
        }
        let grid = config::sigma_grid(
            name,
            config.use_karras_sigmas,
            config.use_exponential_sigmas,
            config.use_beta_sigmas,
            false,
        )?;
        // DEIS always ends at the table's smallest sigma (or the grid's last, the same value).
        let opts = VpSigmaOptions::new(name, grid, FinalSigmas::SigmaMin, f64::NEG_INFINITY, None)?;
        let thresholding = Thresholding::new(
            config.thresholding,
            config.dynamic_thresholding_ratio,
            config.sample_max_value,
        );
        Ok(Self {
            core: VpCore::new(schedule, pred, config.solver_order, opts, thresholding)?,
            config,
        })
    }

    pub fn schedule_defaults() -> DiscreteScheduleConfig {
        config::schedule_defaults(TimestepSpacing::Linspace)
    }

    pub fn from_json(json: &Value) -> Result<Self> {
        let (s, c) = config::parse(Self::NAME, json, Some(&Self::schedule_defaults()))?;
        Self::new(s, c)
    }

    pub fn config(&self) -> &DeisConfig {
        &self.config
    }

    /// The inference sigmas (VE noise levels), one more than the timesteps.
    pub fn sigmas(&self) -> &[f64] {
        &self.core.sched.sigmas
    }

    fn rho(&self, i: usize) -> f64 {
        let (a, s) = self.core.sched.alpha_sigma(i);
        s / a
    }
}

impl<T: Tensor> Scheduler<T> for Deis<T> {
    vp_core_scheduler_methods!();

    fn set_timesteps(&mut self, n: usize) -> Result<()> {
        self.core.set_timesteps(n)
    }

    fn order(&self) -> usize {
        self.config.solver_order
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

impl<T: Tensor> Deis<T> {
    /// One step, written to `x` (in place or as a new tensor).
    fn advance(&mut self, m: &T, t: f64, x: &mut Target<'_, T>) -> Result<()> {
        let i = self.core.cursor.index_for_step(Self::NAME, t)?;
        let n = self.core.cursor.len();
        let lof = self.config.lower_order_final && n < 15;
        // The noise prediction (through a thresholded x0 if enabled).
        self.core.push_converted(m, x.sample(), i, false)?;
        let order = multistep_order(
            self.config.solver_order,
            self.core.lower_order_nums,
            i == n - 1 && lof,
            i + 2 == n && lof,
        );
        // Fixed arrays (entries past `order` repeat the last node and are unused): no
        // per-step allocation.
        let nodes = [0, 1, 2].map(|k| self.rho(i - k.min(order - 1)));
        let w = deis_weights(self.rho(i + 1), &nodes[..order]);
        let s = &self.core.sched;
        let (alpha_t, alpha_s) = (s.alpha_sigma(i + 1).0, s.alpha_sigma(i).0);
        // x_t = alpha_t (x_s / alpha_s + sum_j w_j eps_j)
        let history = &self.core.history;
        let terms = [0, 1, 2].map(|k| (alpha_t * w[k], history.get(k.min(order - 1))));
        x.lincomb(alpha_t / alpha_s, &terms[..order], None)?;
        self.core.count_step();
        self.core.cursor.advance(i);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The weights against 2000-panel composite Simpson quadrature of the Lagrange basis in ln rho.
    #[test]
    fn weights_match_quadrature() {
        let rho_t = 0.3;
        let nodes = [0.9, 1.7, 3.1];
        for k in 1..=3 {
            let w = deis_weights(rho_t, &nodes[..k]);
            for (j, wj) in w.iter().take(k).enumerate() {
                let basis = |r: f64| -> f64 {
                    (0..k)
                        .filter(|&q| q != j)
                        .map(|q| (r.ln() - nodes[q].ln()) / (nodes[j].ln() - nodes[q].ln()))
                        .product()
                };
                let (a, b, panels) = (nodes[0], rho_t, 2000);
                let h = (b - a) / panels as f64;
                let mut s = basis(a) + basis(b);
                for p in 1..panels {
                    s += basis(a + p as f64 * h) * if p % 2 == 1 { 4.0 } else { 2.0 };
                }
                let quad = s * h / 3.0;
                assert!((wj - quad).abs() < 1e-10, "order {k} weight {j}: {wj} vs {quad}");
            }
        }
    }
}
