//! # diffusion-schedules
//!
//! Noise schedules, as pure functions of their configuration.
//!
//! - Discrete (diffusers-compatible, float32): [`betas`] (linear, scaled_linear,
//!   squaredcos_cap_v2, sigmoid, zero-terminal-SNR rescale), [`DiscreteSchedule`],
//!   timestep [`spacing`] (leading / trailing / linspace, `steps_offset`), sigma
//!   [`sigmas`] grids (Karras, exponential, beta, lu-lambdas) and [`FinalSigmas`].
//! - Continuous ([`diffusion_core::NoiseSchedule`]): [`InterpolatedVp`] (a discrete table
//!   in continuous time), [`continuous::LinearVp`], [`continuous::CosineVp`],
//!   [`continuous::SubVp`], [`continuous::Ve`], [`continuous::Edm`],
//!   [`continuous::RectifiedFlow`] (with SD3 and dynamic shift, training densities),
//!   [`continuous::PfgmPlusPlus`] and stochastic [`continuous::Interpolant`]s.
//! - [`DiscreteScheduleConfig`]: the schedule keys of a diffusers `scheduler_config.json`.

pub mod betas;
pub mod config;
pub mod continuous;
pub mod discrete;
pub mod error;
pub mod sigmas;
pub mod spacing;

pub use betas::BetaSchedule;
pub use config::{DiscreteScheduleConfig, unknown_keys};
pub use continuous::edm::EdmPrecond;
pub use discrete::{DiscreteSchedule, InterpolatedVp};
pub use error::{Result, ScheduleError};
pub use sigmas::{FinalSigmas, SigmaGrid};
pub use spacing::TimestepSpacing;

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
