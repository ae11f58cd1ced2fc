//! Diffusion models built from [`crate::layers`].

pub mod dit;
pub mod mlp;
pub mod unet;

pub use dit::{Dit, DitConfig};
pub use mlp::{MlpConfig, MlpDenoiser};
pub use unet::{SkipScaling, UNet, UNetConfig};
