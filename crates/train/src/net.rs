//! The parameter and network interface training is written against: `diffusion-nn`'s.

pub use diffusion_nn::{Float, Network, NnError, Param, Parameters};
