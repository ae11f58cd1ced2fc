//! # diffusion-inversion
//!
//! Running diffusion samplers backwards (data to noise) and differentiating through them:
//!
//! - [`ddim_inverse`] and [`dpm_inverse`]: diffusers' `DDIMInverseScheduler` and
//!   `DPMSolverMultistepInverseScheduler` (same configs, same numbers), and plain
//!   DDIM sampling / inversion on any [`Grid`] ([`grid::ddim_sample`], [`grid::ddim_invert`]).
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
pub mod ddim_inverse;
pub mod dpm_inverse;
pub mod edict;
pub mod editing;
pub mod error;
pub mod gmm;
pub mod grid;
mod mixed;

pub use bdia::{Bdia, BdiaBase, BdiaLatent, BdiaState};
pub use ddim_inverse::{DdimInverseConfig, DdimInverseScheduler};
pub use dpm_inverse::{DpmInverseConfig, DpmInverseScheduler, SolverType};
pub use edict::{Edict, EdictLatent, EdictPair};
pub use error::{InversionError, Result};
pub use grid::Grid;

use diffusion_core::{Denoiser, NoiseLevel, Tensor};

/// `c1 * t1 + c2 * t2` in a fresh buffer (one fused pass).
pub(crate) fn lincomb2<T: Tensor>(a: (f64, &T), b: (f64, &T)) -> Result<T> {
    Ok(diffusion_core::lincomb_new(&[a, b], None)?)
}

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
