//! # diffusion-solvers
//!
//! diffusers-compatible samplers over `diffusion-core` tensors: a stateful
//! [`Scheduler`] step API (`set_timesteps`, `scale_model_input`, `step`, `add_noise`),
//! the sampling loop [`sample()`], configs read from a diffusers `scheduler_config.json`
//! ([`from_config_json`]), and classifier-free guidance as a model wrapper.

pub(crate) mod common;
pub(crate) mod config;
pub mod ddim;
pub mod error;
pub mod sample;
pub mod scheduler;

pub use ddim::{Ddim, DdimConfig};
pub use error::{Result, SolverError};
pub use sample::{Control, StepInfo, sample, sample_all};
pub use scheduler::Scheduler;
pub mod dpm;
pub(crate) mod vp;
pub use dpm::{DpmSolverConfig, DpmSolverMultistep};
pub mod registry;
pub use registry::{SCHEDULERS, by_name, from_config_file, from_config_json};
pub mod ksampler;
pub use ksampler::{KConfig, KMethod, KSampler};
pub mod unipc;
pub use unipc::{UniPc, UniPcConfig};
pub mod deis;
pub use deis::{Deis, DeisConfig};
pub mod dpm_single;
pub use dpm_single::{DpmSinglestepConfig, DpmSolverSinglestep};
pub mod pndm;
pub use pndm::{Pndm, PndmConfig};
pub mod ddpm;
pub use ddpm::{Ddpm, DdpmConfig};
pub mod flow;
pub use flow::{FlowMatch, FlowMatchConfig, FlowMethod, calculate_shift};
pub mod edm;
pub use edm::{EdmConfig, EdmEuler};
pub mod guidance;
pub use guidance::ClassifierFreeGuidance;
pub mod repaint;
pub use repaint::{RePaint, RePaintConfig};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
