//! The stateful step API, in the style of diffusers' schedulers.

use diffusion_core::{NoiseLevel, Parameterization, Rng, Tensor};

use crate::error::{Result, SolverError};

/// A discrete-time sampler: a schedule of timesteps plus a `step` that moves a sample
/// from one timestep to the next, given the model's output there.
///
/// The protocol is diffusers': `set_timesteps(n)`; scale the initial noise by
/// [`Scheduler::init_noise_sigma`]; then for each `t` in [`Scheduler::timesteps`]:
/// `input = scale_model_input(x, t)`, `out = model(input, noise_level(t))`,
/// `x = step(out, t, x)`. [`crate::sample()`] runs exactly that loop.
///
/// Model outputs are in the scheduler's [`Scheduler::prediction_type`]; the
/// [`NoiseLevel`] of each timestep describes the *scaled* model input, so a model that
/// predicts something else can be converted with `diffusion_core::predict_as`.
pub trait Scheduler<T: Tensor>: Send {
    /// Our name of the algorithm (for messages).
    fn name(&self) -> &'static str;

    /// Builds the inference schedule of `num_inference_steps` steps and resets all state.
    fn set_timesteps(&mut self, num_inference_steps: usize) -> Result<()>;

    /// `set_timesteps` with a resolution-dependent shift `mu` (diffusers' `mu` argument,
    /// for flow-matching schedulers with `use_dynamic_shifting`).
    fn set_timesteps_with_mu(&mut self, _num_inference_steps: usize, _mu: f64) -> Result<()> {
        Err(SolverError::Unsupported {
            scheduler: self.name(),
            what: "a dynamic shift (mu)".into(),
        })
    }

    /// A user-chosen schedule of (decreasing) model timesteps, where diffusers allows it.
    fn set_custom_timesteps(&mut self, _timesteps: &[f64]) -> Result<()> {
        Err(SolverError::Unsupported {
            scheduler: self.name(),
            what: "custom timesteps".into(),
        })
    }

    /// A user-chosen (decreasing) noise-level schedule, where diffusers allows it.
    fn set_custom_sigmas(&mut self, _sigmas: &[f64]) -> Result<()> {
        Err(SolverError::Unsupported {
            scheduler: self.name(),
            what: "custom sigmas".into(),
        })
    }

    /// The timesteps to step through, in order (values the model takes as input).
    fn timesteps(&self) -> &[f64];

    /// The scale of the initial noise: `x_T = init_noise_sigma * z`.
    fn init_noise_sigma(&self) -> f64 {
        1.0
    }

    /// How many model outputs one step combines (diffusers' `order`).
    fn order(&self) -> usize {
        1
    }

    /// What `step` expects the model output to be.
    fn prediction_type(&self) -> Parameterization;

    /// Whether `step` draws noise (and needs an [`Rng`]).
    fn is_stochastic(&self) -> bool {
        false
    }

    /// The factor `scale_model_input` multiplies the sample by at timestep `t`.
    fn input_scale(&self, _t: f64) -> Result<f64> {
        Ok(1.0)
    }

    /// The model input at `t`: `input_scale(t) * sample`.
    fn scale_model_input(&self, sample: &T, t: f64) -> Result<T> {
        let c = self.input_scale(t)?;
        let mut out = sample.clone();
        if c != 1.0 {
            out.lincomb(c, &[], None)?;
        }
        Ok(out)
    }

    /// The noise level of the scaled model input at `t`: the timestep value the network
    /// takes, and the `(alpha, sigma)` of `input = alpha x0 + sigma eps`.
    fn noise_level(&self, t: f64) -> Result<NoiseLevel>;

    /// Advances `sample` (in place) from timestep `t` to the next one.
    fn step_in_place(
        &mut self,
        model_output: &T,
        t: f64,
        sample: &mut T,
        rng: Option<&mut Rng>,
    ) -> Result<()>;

    /// diffusers' `step`: the sample at the next timestep as a new tensor.
    fn step(&mut self, model_output: &T, t: f64, sample: &T, rng: Option<&mut Rng>) -> Result<T> {
        let mut next = sample.clone();
        self.step_in_place(model_output, t, &mut next, rng)?;
        Ok(next)
    }

    /// The forward process: `x0` noised to timestep `t` with `noise`.
    fn add_noise(&self, x0: &T, noise: &T, t: f64) -> Result<T>;
}

impl<T: Tensor, S: Scheduler<T> + ?Sized> Scheduler<T> for Box<S> {
    fn name(&self) -> &'static str {
        (**self).name()
    }
    fn set_timesteps(&mut self, n: usize) -> Result<()> {
        (**self).set_timesteps(n)
    }
    fn set_timesteps_with_mu(&mut self, n: usize, mu: f64) -> Result<()> {
        (**self).set_timesteps_with_mu(n, mu)
    }
    fn set_custom_timesteps(&mut self, timesteps: &[f64]) -> Result<()> {
        (**self).set_custom_timesteps(timesteps)
    }
    fn set_custom_sigmas(&mut self, sigmas: &[f64]) -> Result<()> {
        (**self).set_custom_sigmas(sigmas)
    }
    fn timesteps(&self) -> &[f64] {
        (**self).timesteps()
    }
    fn init_noise_sigma(&self) -> f64 {
        (**self).init_noise_sigma()
    }
    fn order(&self) -> usize {
        (**self).order()
    }
    fn prediction_type(&self) -> Parameterization {
        (**self).prediction_type()
    }
    fn is_stochastic(&self) -> bool {
        (**self).is_stochastic()
    }
    fn input_scale(&self, t: f64) -> Result<f64> {
        (**self).input_scale(t)
    }
    fn scale_model_input(&self, sample: &T, t: f64) -> Result<T> {
        (**self).scale_model_input(sample, t)
    }
    fn noise_level(&self, t: f64) -> Result<NoiseLevel> {
        (**self).noise_level(t)
    }
    fn step_in_place(&mut self, m: &T, t: f64, sample: &mut T, rng: Option<&mut Rng>) -> Result<()> {
        (**self).step_in_place(m, t, sample, rng)
    }
    fn step(&mut self, m: &T, t: f64, sample: &T, rng: Option<&mut Rng>) -> Result<T> {
        (**self).step(m, t, sample, rng)
    }
    fn add_noise(&self, x0: &T, noise: &T, t: f64) -> Result<T> {
        (**self).add_noise(x0, noise, t)
    }
}

/// Fails unless an Rng was given.
pub(crate) fn need_rng<'a>(scheduler: &'static str, rng: Option<&'a mut Rng>) -> Result<&'a mut Rng> {
    rng.ok_or(SolverError::MissingRng { scheduler })
}
