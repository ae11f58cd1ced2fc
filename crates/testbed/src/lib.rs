//! # diffusion-testbed
//!
//! Problems with exact answers for comparing diffusion samplers, and the metrics to
//! score them. Depends on `diffusion-core` only, so solver crates can dev-depend on it.
//!
//! - [`GaussianMixture`]: an analytic data distribution whose noised marginals,
//!   log-densities, scores and epsilon / x0 / v / flow predictions are closed forms at
//!   every noise level; exact sampling and NLL. [`GmmDenoiser`] makes it a
//!   [`diffusion_core::Denoiser`] (f32 and f64 `ArrayD`, any parameterization, and
//!   class-conditional with component = class); [`TimestepModel`] feeds it a diffusers
//!   timestep through an `alphas_cumprod` table.
//! - [`spec`]: the JSON form of a mixture problem (`gmm2d_spec.json`).
//! - [`toy`]: seeded 2-D datasets (rings, two moons, swiss roll, checkerboard).
//! - [`metrics`]: RMSE, sliced W2 (between sample sets, or exactly to a mixture),
//!   mixture NLL, RBF-MMD, Frechet distance of fitted Gaussians.
//! - [`io`]: `.npy` / `.npz` reads with clear errors, atomic writes.
//! - [`fixtures`]: where tests find the data the repository carries.
//! - [`gmm_reference`]: typed readers for the repository's `fixtures/gmm/` (the exact ODE
//!   solutions and diffusers' runs on the mixture problem): [`GmmReference::fixture`].

pub mod error;
pub mod fixtures;
pub mod gmm;
pub mod gmm_reference;
pub mod io;
pub mod linalg;
pub mod metrics;
pub mod model;
pub mod spec;
pub mod toy;

pub use error::{Result, TestbedError};
pub use gmm::{GaussianMixture, NoisedMixture};
pub use gmm_reference::GmmReference;
pub use metrics::{Bandwidth, Projections};
pub use model::{GmmDenoiser, TimestepModel};
pub use spec::{DiscreteVpSchedule, GmmSpec, ScheduleSpec};
pub use toy::ToyDataset;

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
