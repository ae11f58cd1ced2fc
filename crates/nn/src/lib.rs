//! # diffusion-nn
//!
//! Hand-written network layers and diffusion models on ndarray + rayon, with explicit
//! backward passes (no autograd tape):
//!
//! - [`param`]: [`Param`] (value + gradient) and the [`Parameters`] visitor that names
//!   parameters exactly like PyTorch's `state_dict()`.
//! - [`network`]: the [`Network`] training interface and [`NetworkDenoiser`], which makes a
//!   network a [`diffusion_core::Denoiser`].
//! - [`layers`]: Linear, Conv1d/2d/3d, norms, activations, attention, embeddings...
//! - [`models`]: MLP denoiser, DiT, UNet, white-box DiT.
//!
//! Every parallel reduction uses a partition that depends only on the problem size, so
//! results are bit-identical for any number of rayon threads.

pub mod checkpoint;
pub mod error;
mod gemm;
pub mod layers;
pub mod models;
pub mod network;
pub mod param;

pub use error::{NnError, Result};
pub use network::{Network, NetworkDenoiser};
pub use param::{Float, Param, Parameters};

/// `a @ b` for 2-d arrays through the crate's GEMM (thread-count independent results).
pub fn matmul_2d<A: Float>(a: &ndarray::Array2<A>, b: &ndarray::Array2<A>) -> Result<ndarray::Array2<A>> {
    let (m, k) = a.dim();
    let (k2, n) = b.dim();
    if k != k2 {
        return Err(NnError::Shape {
            context: "matmul_2d inner dimensions".into(),
            expected: vec![k],
            got: vec![k2],
        });
    }
    let a = a.as_standard_layout();
    let b = b.as_standard_layout();
    let mut c = vec![A::zero(); m * n];
    gemm::matmul(
        gemm::MatMut::row_major(&mut c, 0, m, n),
        gemm::MatRef::row_major(a.as_slice().expect("standard layout"), 0, m, k),
        gemm::MatRef::row_major(b.as_slice().expect("standard layout"), 0, k, n),
        false,
    );
    Ok(ndarray::Array2::from_shape_vec((m, n), c).expect("length m * n"))
}
