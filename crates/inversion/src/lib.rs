//! # diffusion-inversion
//!
//! Running diffusion samplers backwards (data to noise) and differentiating through them:
//!
//! - [`grid`]: plain DDIM sampling and inversion on any [`Grid`] ([`grid::ddim_sample`],
//!   [`grid::ddim_invert`]). diffusers' inverse schedulers (`DDIMInverseScheduler`,
//!   `DPMSolverMultistepInverseScheduler`) live beside their forward classes in
//!   `diffusion-solvers`, on the same coefficient code.
//! - [`bdia`]: BDIA-DDIM and BDIA-EDM, exactly invertible; the sampler's state is
//!   carried in f64 beside a model in any precision, so an f32 round trip is bit-exact.
//! - [`edict`]: EDICT's coupled sequences, exactly invertible.
//! - [`adjoint`]: AdjointDPM gradients of a loss on the sample w.r.t. the initial noise
//!   and the model's differentiable parameters, in memory independent of the step count.
//! - [`gmm`]: a diagonal Gaussian mixture with exact epsilon and its exact
//!   vector-Jacobian products (the test model for the above), class-conditional.
//! - [`editing`]: invert under one class, regenerate under another.

pub mod adjoint;
pub mod bdia;
pub mod edict;
pub mod editing;
pub mod error;
pub mod gmm;
pub mod grid;
mod mixed;

pub use bdia::{Bdia, BdiaBase, BdiaLatent, BdiaState};
pub use edict::{Edict, EdictLatent, EdictPair};
pub use error::{InversionError, Result};
pub use grid::Grid;

use diffusion_core::{Denoiser, NoiseLevel, Tensor};

/// The model's raw output with its shape and finiteness checked, errors naming `step`.
pub(crate) fn checked_predict<T: Tensor, D: Denoiser<T> + ?Sized>(
    model: &D,
    x: &T,
    level: NoiseLevel,
    step: usize,
) -> Result<T> {
    let out = model.predict(x, level).map_err(error::at_step(step))?;
    diffusion_core::tensor::check_same_shape("model output", x.shape(), out.shape())?;
    let count = out.count_non_finite();
    if count > 0 {
        return Err(InversionError::NonFiniteModelOutput {
            step,
            timestep: level.timestep,
            sigma: level.sigma,
            count,
        });
    }
    Ok(out)
}

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
