//! The exact answer a sampler should reach: the probability-flow ODE solved by adaptive
//! Dormand-Prince at tight tolerance.

use anyhow::Result;
use diffusion_continuous::{Dopri5Options, Evaluator, ModelTime, ProbabilityFlow};
use diffusion_core::Denoiser;
use diffusion_schedules::DiscreteSchedule;
use ndarray::ArrayD;

/// Integrates from `x_t` at the last training timestep to the clean end (sigma = 0).
pub fn ode_solution<M: Denoiser<ArrayD<f64>>>(
    model: &M,
    alphas_cumprod: &[f64],
    x_t: &ArrayD<f64>,
    tolerance: f64,
) -> Result<ArrayD<f64>> {
    let table: Vec<f32> = alphas_cumprod.iter().map(|&a| a as f32).collect();
    let schedule = DiscreteSchedule::from_alphas_cumprod(table).continuous();
    let n = alphas_cumprod.len();
    let flow = ProbabilityFlow::new(Evaluator::new(model, &schedule, ModelTime::discrete(n)));
    let (mut out, _) = flow.solve_s(x_t, 1.0, &[0.0], &Dopri5Options::tolerance(tolerance))?;
    Ok(out.remove(0))
}
