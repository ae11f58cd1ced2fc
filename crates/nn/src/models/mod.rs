//! Diffusion models built from [`crate::layers`].

pub mod dit;
pub mod mlp;
pub mod unet;
pub mod whitebox_dit;

pub use dit::{Dit, DitConfig};
pub use mlp::{MlpConfig, MlpDenoiser};
pub use unet::{SkipScaling, UNet, UNetConfig};
pub use whitebox_dit::{CrateBlock, WhiteBoxDit, WhiteBoxDitCache, WhiteBoxDitConfig};
