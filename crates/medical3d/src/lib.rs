//! # diffusion-medical3d
//!
//! Volumetric medical imaging for diffusion-rs: NIfTI / `.npy` volumes with their affine,
//! intensity windows and three-plane PNGs; forward operators with exact adjoints
//! (parallel-beam CT per axial slice, sparse-view and limited-angle geometries, filtered
//! back-projection; Cartesian compressed-sensing MRI); DiffusionMBIR reconstruction (a 2-D
//! slice prior, one ADMM step with total variation along z per diffusion step); and
//! LeFusion-style lesion inpainting with diffusers' RePaint from `diffusion-solvers`.

pub mod error;
pub mod nifti_io;
pub mod png_out;
pub mod volume;

pub use error::{MedicalError, Result};
pub use nifti_io::{read_nifti, write_nifti};
pub use png_out::{mid_slices, write_three_plane_png};
pub use volume::{Volume, full_window, read_npy_volume, window, write_npy_volume};
pub mod ct;
pub mod mri;
pub use ct::{CtOperator, ParallelBeam};
pub use mri::{KMask, MriOperator};
pub mod metrics;
pub use metrics::{Plane, psnr, ssim, three_planes};

/// The directory of this crate's test data (`data/`).
pub fn data_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data")
}
pub mod admm;
pub use admm::{AdmmTvZ, conjugate_gradient, soft_threshold, tv_z_denoise};
pub mod mbir;
pub mod prior;
pub use mbir::{MbirConfig, reconstruct};
pub use prior::KdeSlicePrior;
pub mod lefusion;
pub use lefusion::{inpaint_lesion, lesion_histogram, lesion_loss};

/// The README's example runs as a doctest.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
