//! # diffusion-continuous
//!
//! Continuous-time samplers built on `diffusion-core`: time grids, an adaptive
//! Dormand-Prince reference ODE solver with exact log-likelihoods, fixed-step ODE solvers,
//! reverse-SDE and predictor-corrector samplers, stochastic interpolants and PFGM++.

pub mod dc;
pub mod dopri;
pub mod dpmv3;
pub mod error;
pub mod eval;
pub mod grid;
pub mod interpolant;
pub mod likelihood;
pub mod linalg;
pub mod multistep;
pub mod pfgm;
pub mod sde;

pub use dc::{CascadeRegression, DcSolver, SearchOptions};
pub use dopri::{Dopri5Options, Dopri5Stats, ProbabilityFlow, integrate};
pub use dpmv3::{DpmSolverV3, DpmV3Options, EmsOptions, ModelStatistics};
pub use error::{ContinuousError, Result};
pub use eval::{Evaluator, ModelTime};
pub use grid::{GridKind, TimeGrid};
pub use interpolant::{InterpolantDiffusion, InterpolantSchedule};
pub use likelihood::{LikelihoodOptions, log_likelihood};
pub use multistep::{Method, MultistepOptions, UniPcVariant};
pub use pfgm::{EdmChurn, edm_heun, edm_heun_churn, sample_pfgm};
pub use sde::{LangevinOptions, SdeOptions, sample_sde};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
