//! # diffusion-scrna
//!
//! Single-cell RNA-seq generation with the White-Box Diffusion Transformer:
//!
//! - [`data`]: the cells x genes matrix with gene names, barcodes and cell-type labels.
//! - [`io`]: `.npy`, CSV/TSV, 10x Matrix Market directories, the shipped PBMC set and
//!   (feature `h5ad`) AnnData `.h5ad`.
//! - [`prep`]: gene and cell filters, library-size normalisation, `log1p`, highly variable
//!   genes (Seurat flavour), z-scoring, and the inverse for generated cells.
//! - [`metrics`]: the field's generation metrics (gene-mean/variance correlations, 1-D
//!   Wasserstein, multi-bandwidth MMD in PC space, zero fraction, library size, kNN AUC,
//!   iLISI, nearest-training-cell distances, cell-type accuracy).
//! - [`model`]: the white-box DiT (CRATE blocks) and the standard DiT over gene patches,
//!   label-conditional with classifier-free guidance; training and sampling.

pub mod data;
pub mod error;
pub mod io;
pub mod linalg;
pub mod metrics;
pub mod model;
pub mod prep;
pub mod split;

pub use data::{CellMatrix, Labels, Values};
pub use error::{Result, ScrnaError};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
