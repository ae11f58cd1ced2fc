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

#[cfg(feature = "mimalloc")]
pub mod alloc;
pub mod checkpoint;
pub mod error;
mod gemm;
mod kernels;
pub mod layers;
pub mod models;
pub mod network;
pub mod param;
mod transpose;
mod vmath;

pub use error::{NnError, Result};
pub use network::{Network, NetworkDenoiser};
pub use param::{Float, Param, Parameters};

/// `a @ b` for 2-d arrays through the crate's GEMM (thread-count independent results).
pub fn matmul_2d<A: Float>(a: &ndarray::Array2<A>, b: &ndarray::Array2<A>) -> Result<ndarray::Array2<A>> {
    matmul_view(a.view(), b.view())
}

/// `a @ b` for 2-d views; transposed views (`x.t()`) and other positive-stride layouts are
/// read in place, anything else is copied first.
pub fn matmul_view<A: Float>(
    a: ndarray::ArrayView2<'_, A>,
    b: ndarray::ArrayView2<'_, A>,
) -> Result<ndarray::Array2<A>> {
    let (m, k) = a.dim();
    let (k2, n) = b.dim();
    if k != k2 {
        return Err(NnError::Shape {
            context: "matmul_2d inner dimensions".into(),
            expected: vec![k],
            got: vec![k2],
        });
    }
    let mut c = vec![A::zero(); m * n];
    let (a_own, b_own);
    let av = match gemm::MatRef::from_view(a) {
        Some(v) => v,
        None => {
            a_own = a.as_standard_layout().into_owned();
            gemm::MatRef::row_major(a_own.as_slice().expect("standard layout"), 0, m, k)
        }
    };
    let bv = match gemm::MatRef::from_view(b) {
        Some(v) => v,
        None => {
            b_own = b.as_standard_layout().into_owned();
            gemm::MatRef::row_major(b_own.as_slice().expect("standard layout"), 0, k, n)
        }
    };
    gemm::matmul(gemm::MatMut::row_major(&mut c, 0, m, n), av, bv, false);
    Ok(ndarray::Array2::from_shape_vec((m, n), c).expect("length m * n"))
}

/// Multiply-adds issued through the crate's GEMM so far in this process (all threads):
/// the difference across a call is that call's matrix-product work (`2 *` it in FLOPs).
pub fn gemm_macs() -> u64 {
    gemm::macs()
}

/// `a @ b` for row-major slices with an explicit `(row bands, column bands)` split: a hook for
/// `examples/sgemm_probe.rs` to compare splits; not a stable API.
#[doc(hidden)]
pub fn probe_matmul_split<A: Float>(
    c: &mut [A],
    a: ndarray::ArrayView2<'_, A>,
    b: ndarray::ArrayView2<'_, A>,
    split: Option<(usize, usize)>,
) {
    let (m, n) = (a.nrows(), b.ncols());
    let (av, bv) = (
        gemm::MatRef::from_view(a).expect("positive strides"),
        gemm::MatRef::from_view(b).expect("positive strides"),
    );
    let split = split.map_or_else(
        || gemm::Split::for_sizes(m, n, a.ncols()),
        |(pm, pn)| gemm::Split {
            pm,
            pn,
            shared: false,
        },
    );
    gemm::matmul_split(gemm::MatMut::row_major(c, 0, m, n), av, bv, false, split);
}

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
