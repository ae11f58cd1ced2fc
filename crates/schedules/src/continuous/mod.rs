//! Continuous-time schedules with closed forms.

pub mod edm;
mod flow;
mod interpolant;
mod pfgm;
mod vp;

pub use edm::{Edm, Ve};
pub use flow::{FlowDensity, RectifiedFlow, dynamic_shift_mu, shift_time, time_shift_exponential};
pub use interpolant::{Interpolant, InterpolantPath};
pub use pfgm::PfgmPlusPlus;
pub use vp::{CosineVp, LinearVp, SubVp};
