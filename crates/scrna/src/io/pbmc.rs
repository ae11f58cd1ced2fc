//! The shipped PBMC set (`data/pbmc68k_reduced`: 700 cells x 765 genes, 10 cell types; see
//! that directory's README for source, licence and how the counts were recovered).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::data::{CellMatrix, Labels, Values};
use crate::error::{Result, ScrnaError};
use crate::io::npy::{read_any, read_matrix};

/// The counts with their cell types, and each cell's library size over *all* genes of the
/// original matrix (the 765 genes are a subset, so row sums are smaller).
#[derive(Clone, Debug)]
pub struct Pbmc {
    pub counts: CellMatrix,
    pub n_counts: Vec<f64>,
}

#[derive(Deserialize)]
struct Meta {
    genes: Vec<String>,
    cell_barcodes: Vec<String>,
    bulk_label_names: Vec<String>,
}

/// The directory the set ships in, inside this crate.
pub fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/pbmc68k_reduced")
}

/// Reads `counts_u16.npy`, `bulk_labels_u8.npy`, `n_counts_f32.npy` and `meta.json` from `dir`.
pub fn read_pbmc(dir: impl AsRef<Path>) -> Result<Pbmc> {
    let dir = dir.as_ref();
    let meta_path = dir.join("meta.json");
    let meta_text = std::fs::read_to_string(&meta_path).map_err(ScrnaError::io(&meta_path))?;
    let meta: Meta = serde_json::from_str(&meta_text).map_err(|e| ScrnaError::Parse {
        path: meta_path.clone(),
        line: e.line(),
        reason: e.to_string(),
    })?;
    let x = read_matrix(dir.join("counts_u16.npy"))?;
    let codes: Vec<usize> = read_any(dir.join("bulk_labels_u8.npy"))?
        .iter()
        .map(|&v| v as usize)
        .collect();
    let n_counts: Vec<f64> = read_any(dir.join("n_counts_f32.npy"))?.iter().copied().collect();
    let counts = CellMatrix::new(x, meta.genes, meta.cell_barcodes, Values::Counts)?
        .with_labels(Labels::new(codes, meta.bulk_label_names)?)?;
    if n_counts.len() != counts.cells() {
        return Err(ScrnaError::Length {
            what: "library sizes (n_counts_f32.npy)",
            of: "cells",
            expected: counts.cells(),
            got: n_counts.len(),
        });
    }
    Ok(Pbmc { counts, n_counts })
}
