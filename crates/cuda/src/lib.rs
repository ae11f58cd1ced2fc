//! # diffusion-cuda
//!
//! The CUDA backend of diffusion-rs. With the `cuda` feature:
//!
//! - `CudaTensor<T>` (f32, f64) implements [`diffusion_core::Tensor`], so every solver runs on
//!   the GPU unchanged; its fused `lincomb` draws the same Philox noise as the CPU backend.
//! - `ops` runs network layers on the GPU (cuBLAS GEMM, activations, norms, softmax,
//!   attention, im2col/col2im, adaLN modulation); `grad` the backward-only pieces (bias
//!   gradients, gated residual and attention backward); `optim` AdamW.
//! - `models::GpuDit` and `models::GpuUNet` (2-D) run inference, and a training step's
//!   forward and backward passes.
//! - Kernels are CUDA C files embedded in the binary and compiled at run time by NVRTC,
//!   once per device context. Nothing is linked at build time: the driver, NVRTC and cuBLAS
//!   are loaded at run time, and each missing piece is a typed [`CudaError`], never a panic.
//!
//! Without the feature the crate still offers the f64 CPU reference implementations in
//! [`oracle`] (the oracles of the GPU tests) and [`compile_all_kernels`] reports
//! [`CudaError::FeatureDisabled`].

pub mod error;
pub mod kernels;
pub mod oracle;

#[cfg(feature = "cuda")]
mod device;
#[cfg(feature = "cuda")]
pub mod grad;
#[cfg(feature = "cuda")]
pub mod layout;
#[cfg(feature = "cuda")]
pub mod models;
#[cfg(feature = "cuda")]
pub mod nvrtc;
#[cfg(feature = "cuda")]
pub mod ops;
#[cfg(feature = "cuda")]
pub mod optim;
#[cfg(feature = "cuda")]
mod tensor;

#[cfg(feature = "cuda")]
pub use device::Gpu;
pub use error::{CudaError, Result};
#[cfg(feature = "cuda")]
pub use tensor::{CudaTensor, GpuElement};

/// Compiles every embedded kernel with NVRTC for NVRTC's default architecture and returns
/// `(kernel file, PTX bytes)` for each. Needs libnvrtc only, no GPU: this is what
/// `cargo xtask kernels-check` calls.
pub fn compile_all_kernels() -> Result<Vec<(String, usize)>> {
    #[cfg(feature = "cuda")]
    {
        nvrtc::compile_all(None)
    }
    #[cfg(not(feature = "cuda"))]
    {
        Err(CudaError::FeatureDisabled)
    }
}

/// Whether the environment asks GPU tests to fail instead of skipping when no device is
/// usable (`DIFFUSION_REQUIRE_GPU=1`).
pub fn gpu_required() -> bool {
    env_flag("DIFFUSION_REQUIRE_GPU")
}

/// Whether the environment asks the NVRTC compile test to fail instead of skipping when
/// libnvrtc is missing (`DIFFUSION_REQUIRE_NVRTC=1`, for CI jobs that installed it).
pub fn nvrtc_required() -> bool {
    env_flag("DIFFUSION_REQUIRE_NVRTC")
}

fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "0")
}

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
