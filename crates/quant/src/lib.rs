#![doc = include_str!("../README.md")]

pub mod calib;
pub mod error;
pub mod fp;
pub mod io;
pub mod kernel;
pub mod linear;
pub mod lowrank;
pub mod model;
pub mod preset;
pub mod quantizer;

pub use calib::{Calibration, StepSelection};
pub use error::{QuantError, Result};
pub use linear::{ActMode, ActRecipe, Exec, LowRankKind, QuantLinear, Recipe};
pub use lowrank::LowRank;
pub use model::QuantMlp;
pub use preset::{PRESETS, preset};
