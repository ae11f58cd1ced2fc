//! # diffusion-quant
//!
//! Post-training quantization of diffusion models.
//!
//! - [`fp`]: FP8 E4M3 / E5M2 and FP4 E2M1 codecs, exact to the bit.
//! - [`quantizer`]: uniform affine and minifloat quantizers (per tensor, row, group;
//!   min/max or Lp-search scales, running min/max, power-of-two scales).
//! - [`kernel`]: `u8 x i8 -> i32` products (portable and AVX-512 VNNI), packed int4 weights.

pub mod error;
pub mod fp;
pub mod kernel;
pub mod quantizer;

pub use error::{QuantError, Result};
pub mod linear;
pub mod lowrank;

pub use linear::{ActMode, ActRecipe, Exec, LowRankKind, QuantLinear, Recipe};
pub use lowrank::LowRank;
pub mod calib;
pub mod model;

pub use calib::{Calibration, StepSelection};
pub use model::QuantMlp;
pub mod io;
