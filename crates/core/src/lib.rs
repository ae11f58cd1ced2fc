//! # diffusion-core
//!
//! The seam every other diffusion-rs crate plugs into:
//!
//! - [`Tensor`]: what solvers are written against; its one hot primitive is the fused
//!   linear combination [`Tensor::lincomb`]. Implemented here for `ndarray::ArrayD<f32>`
//!   and `ArrayD<f64>`, and by `diffusion-cuda` for GPU buffers.
//! - [`Denoiser`]: the model as a solver sees it, with a declared [`Parameterization`];
//!   [`param::conversion`] converts between parameterizations; [`denoiser_fn`] makes a
//!   closure a model.
//! - [`NoiseSchedule`]: continuous-time `alpha(t)`, `sigma(t)`, `lambda(t)` and its inverse.
//! - [`fs::write_atomic`]: the one atomic file write.
//! - [`linalg::solve`]: the small dense solve behind solver coefficients.
//! - [`Rng`]: an explicit, counter-based (Philox4x32-10) random stream whose output does
//!   not depend on the number of threads.

pub mod error;
pub mod fs;
pub mod linalg;
pub mod model;
pub mod param;
pub mod rng;
pub mod schedule;
pub mod tensor;

pub use error::{CoreError, Result};
pub use model::{
    ConditionalDenoiser, Conditioned, Denoiser, FnDenoiser, NoiseLevel, denoiser_fn, predict_as,
};
pub use param::Parameterization;
pub use rng::Rng;
pub use schedule::{Convention, NoiseSchedule};
pub use tensor::{Element, Noise, Tensor, lincomb_new};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
