//! The sampling loop of a diffusers pipeline, minus the pipeline.

use diffusion_core::{Denoiser, Rng, Tensor, predict_as};

use crate::error::{Result, SolverError};
use crate::scheduler::Scheduler;

/// What the per-step callback sees.
#[derive(Debug)]
pub struct StepInfo<'a, T> {
    /// 0-based index of the step just taken.
    pub index: usize,
    /// Number of steps in the schedule.
    pub total: usize,
    /// The timestep the model was evaluated at.
    pub timestep: f64,
    /// The model output at that timestep (in the scheduler's prediction type).
    pub model_output: &'a T,
    /// The sample after the step.
    pub sample: &'a T,
}

/// The callback's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    Continue,
    /// End the loop now and return the current sample.
    Stop,
}

/// Runs `scheduler` (whose timesteps are already set) from the noise `x_t` to the end.
///
/// `x_t` is the caller's standard-normal noise (or an `add_noise` result for
/// img2img): like diffusers pipelines, this function multiplies it by
/// `init_noise_sigma` before the first step. Each model call receives the scaled input
/// and the scheduler's [`diffusion_core::NoiseLevel`]; its output is checked (shape,
/// finiteness) and converted to the scheduler's prediction type by
/// [`diffusion_core::predict_as`]. `rng` feeds the stochastic schedulers.
pub fn sample<T, S, M, F>(
    scheduler: &mut S,
    model: &M,
    x_t: &T,
    mut rng: Option<&mut Rng>,
    mut callback: F,
) -> Result<T>
where
    T: Tensor,
    S: Scheduler<T> + ?Sized,
    M: Denoiser<T> + ?Sized,
    F: FnMut(&StepInfo<'_, T>) -> Control,
{
    let timesteps = scheduler.timesteps().to_vec();
    if timesteps.is_empty() {
        return Err(SolverError::NotInitialized {
            scheduler: scheduler.name(),
            what: "sample",
        });
    }
    let mut x = x_t.clone();
    let s0 = scheduler.init_noise_sigma();
    if s0 != 1.0 {
        x.lincomb(s0, &[], None)?;
    }
    let target = scheduler.prediction_type();
    for (index, &t) in timesteps.iter().enumerate() {
        let input = scheduler.scale_model_input(&x, t)?;
        let level = scheduler.noise_level(t)?;
        let out = predict_as(model, &input, level, target)?;
        scheduler.step_in_place(&out, t, &mut x, rng.as_deref_mut())?;
        let info = StepInfo {
            index,
            total: timesteps.len(),
            timestep: t,
            model_output: &out,
            sample: &x,
        };
        if callback(&info) == Control::Stop {
            break;
        }
    }
    Ok(x)
}

/// [`sample`] without a callback.
pub fn sample_all<T, S, M>(scheduler: &mut S, model: &M, x_t: &T, rng: Option<&mut Rng>) -> Result<T>
where
    T: Tensor,
    S: Scheduler<T> + ?Sized,
    M: Denoiser<T> + ?Sized,
{
    sample(scheduler, model, x_t, rng, |_| Control::Continue)
}
