//! Shared helpers for the workspace benchmarks.

pub mod peak;

use diffusion_core::Rng;
use ndarray::{ArrayD, IxDyn};

/// A seeded standard-normal f32 tensor.
pub fn randn(shape: &[usize], seed: u64) -> ArrayD<f32> {
    let n: usize = shape.iter().product();
    let mut z = vec![0.0f64; n];
    Rng::new(seed).fill_normal(&mut z);
    ArrayD::from_shape_vec(IxDyn(shape), z.into_iter().map(|v| v as f32).collect()).expect("sizes agree")
}
