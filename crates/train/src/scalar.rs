//! The element types training supports, with their safetensors encoding.

use diffusion_nn::Float;
use safetensors::Dtype;

/// A float element type (f32 or f64) with a little-endian safetensors encoding.
pub trait Scalar: Float {
    /// The safetensors dtype this type is saved as.
    const DTYPE: Dtype;
    /// Appends the little-endian bytes of `self`.
    fn put_le(self, out: &mut Vec<u8>);
}

impl Scalar for f32 {
    const DTYPE: Dtype = Dtype::F32;
    fn put_le(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
}

impl Scalar for f64 {
    const DTYPE: Dtype = Dtype::F64;
    fn put_le(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
}
