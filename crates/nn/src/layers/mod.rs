//! Layers: each has a pure `forward(&self, x) -> (y, Cache)` and a
//! `backward(&mut self, &Cache, dy) -> dx` that accumulates parameter gradients.

pub mod activation;
pub mod attention;
pub mod conv;
pub mod embed;
pub mod linear;
pub mod norm;
pub mod whitebox;
mod winograd;

pub use activation::{Dropout, Gelu, Silu};
pub use attention::{AttentionCache, MultiheadAttention};
pub use conv::{Conv, ConvCache, Upsample};
pub use embed::{FourierFeatures, patchify, timestep_embedding, unpatchify};
pub use linear::{Linear, LinearCache};
pub use norm::{GroupNorm, LayerNorm, NormCache};
pub use whitebox::{IstaBlock, IstaCache, SubspaceAttention, SubspaceCache};
