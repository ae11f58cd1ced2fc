//! # diffusion
//!
//! diffusion-rs in one dependency. Each module is one of the `diffusion-*` crates; depend
//! on those directly to take only what you need.
//!
//! ```
//! use diffusion::core::{Parameterization, param::conversion};
//! // epsilon -> x0 at alpha = 0.6, sigma = 0.8: x0 = (x - 0.8 eps) / 0.6.
//! let (cx, cm) = conversion(Parameterization::Epsilon, Parameterization::Sample, 0.6, 0.8).unwrap();
//! assert!((cx - 1.0 / 0.6).abs() < 1e-12 && (cm + 0.8 / 0.6).abs() < 1e-12);
//! ```

pub use diffusion_continuous as continuous;
pub use diffusion_core as core;
#[cfg(feature = "cuda")]
pub use diffusion_cuda as cuda;
pub use diffusion_discrete as discrete;
pub use diffusion_graph as graph;
pub use diffusion_inversion as inversion;
pub use diffusion_medical3d as medical3d;
pub use diffusion_music as music;
pub use diffusion_nn as nn;
pub use diffusion_quant as quant;
pub use diffusion_schedules as schedules;
pub use diffusion_scrna as scrna;
pub use diffusion_solvers as solvers;
pub use diffusion_testbed as testbed;
pub use diffusion_train as train;

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
