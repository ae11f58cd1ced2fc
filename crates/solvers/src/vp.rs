//! The sigma schedules of diffusers' VP multistep solvers (DPM-Solver, UniPC, DEIS):
//! timesteps by spacing or by a sigma grid, float32 sigmas, a final sigma.

use diffusion_schedules::spacing::multistep_timesteps;
use diffusion_schedules::{DiscreteScheduleConfig, FinalSigmas, SigmaGrid};

use crate::common::{Table, f32r, log_snr, vp_alpha_sigma};
use crate::error::Result;

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
        // lambda_min_clipped drops the noisiest training steps whose log-SNR is below it.
        let clipped = (0..n_train)
            .rev()
            .take_while(|&t| {
                let a = table.abar(t);
                let (alpha, sigma) = (a.sqrt(), (1.0 - a).sqrt());
                log_snr(f32r(alpha), f32r(sigma)) < opts.lambda_min_clipped
            })
            .count();
        let spaced = multistep_timesteps(
            cfg.timestep_spacing,
            n_train,
            n_train - clipped,
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

/// Solves the small dense system `a x = b` (Gaussian elimination, partial pivoting).
pub(crate) fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Vec<f64> {
    let n = b.len();
    for col in 0..n {
        let pivot = (col..n)
            .max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))
            .unwrap_or(col);
        a.swap(col, pivot);
        b.swap(col, pivot);
        for row in col + 1..n {
            let f = a[row][col] / a[col][col];
            for k in col..n {
                a[row][k] -= f * a[col][k];
            }
            b[row] -= f * b[col];
        }
    }
    let mut x = vec![0.0; n];
    for row in (0..n).rev() {
        let s: f64 = (row + 1..n).map(|k| a[row][k] * x[k]).sum();
        x[row] = (b[row] - s) / a[row][row];
    }
    x
}
