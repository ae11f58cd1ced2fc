#![doc = include_str!("../README.md")]

mod error;
mod loss;
mod matrix;
mod posterior;
mod process;
mod timestep;

pub use error::{DiscreteError, Result};
pub use loss::{Loss, x0_probabilities};
pub use matrix::Matrix;
pub use posterior::categorical;
pub use process::{Process, VqSchedule, cosine_alpha_bar};
pub use timestep::TimestepSampler;
