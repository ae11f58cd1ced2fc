//! # diffusion-train
//!
//! Training for diffusion models built on the `diffusion-nn` parameter interface:
//!
//! - [`Objective`]: epsilon / x0 / v / flow-matching regression with uniform or min-SNR-gamma
//!   weighting, and EDM preconditioning with EDM's loss weighting; [`weighted_mse`] gives
//!   the loss and its gradient with respect to the network output.
//! - [`LevelSampler`]: uniform discrete timesteps, uniform or logit-normal continuous
//!   times, EDM's log-normal sigma.
//! - [`AdamW`] (PyTorch semantics and defaults), [`LrSchedule`] (warm-up + cosine),
//!   [`clip_grad_norm`], [`Ema`].
//! - [`Trainer`]: the loop, drawing minibatches from one seeded [`diffusion_core::Rng`];
//!   [`Trainer::save`] / [`Trainer::resume`] write and read atomic checkpoint directories
//!   that resume bit-identically; [`Trainer::set_total_steps`] extends a resumed run's
//!   learning-rate schedule. The EMA file is a complete state dict (parameters and buffers):
//!   [`checkpoint::load_ema_weights`], [`checkpoint::load_inference_weights`].
//! - [`trained`]: the networks `diffuse train` trains behind one type ([`AnyNet`]), the
//!   [`ModelSpec`] a checkpoint records, and [`trained::load`], which turns a checkpoint
//!   directory into a model any sampler can call (no binary needed).
//! - [`load_weights`] / [`save_weights`]: safetensors by dotted names (PyTorch compatible).

pub mod checkpoint;
pub mod error;
pub mod io;
pub mod net;
pub mod objective;
pub mod optim;
pub mod sampler;
pub mod scalar;
pub mod trained;
pub mod trainer;

pub use error::{Result, TrainError};
pub use io::{TensorFile, load_weights, save_weights};
pub use net::{Network, Param, Parameters};
pub use objective::{EdmPrecond, Objective, PreparedBatch, SampleCoefficients, Weighting, weighted_mse};
pub use optim::{AdamW, AdamWConfig, Ema, LrSchedule, Moments, clip_grad_norm, grad_norm};
pub use sampler::{LevelSampler, TimeDistribution};
pub use scalar::Scalar;
pub use trained::{AnyNet, Architecture, ModelSpec, TrainingData};
pub use trainer::{Dataset, EmaConfig, StepStats, TrainConfig, Trainer, parameter_count};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
