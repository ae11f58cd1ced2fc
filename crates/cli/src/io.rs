//! Files: `.npy` arrays of either float width, atomic writes, the model a command samples.

use std::path::Path;

use anyhow::{Context, Result, bail};
use ndarray::ArrayD;

/// An array read from `.npy`, remembering its element width so outputs can match it.
#[derive(Clone, Debug)]
pub enum NpyArray {
    F32(ArrayD<f32>),
    F64(ArrayD<f64>),
}

impl NpyArray {
    pub fn read(path: &Path) -> Result<Self> {
        if let Ok(a) = diffusion_testbed::io::read_npy::<f64>(path) {
            return Ok(Self::F64(a));
        }
        match diffusion_testbed::io::read_npy::<f32>(path) {
            Ok(a) => Ok(Self::F32(a)),
            Err(e) => bail!("{e} (expected a float32 or float64 .npy array)"),
        }
    }

    pub fn shape(&self) -> &[usize] {
        match self {
            Self::F32(a) => a.shape(),
            Self::F64(a) => a.shape(),
        }
    }

    pub fn to_f64(&self) -> ArrayD<f64> {
        match self {
            Self::F32(a) => a.mapv(f64::from),
            Self::F64(a) => a.clone(),
        }
    }
}

pub use diffusion_core::fs::write_atomic;

/// Writes an array as `.npy` in the given width.
pub fn write_npy(path: &Path, data: &ArrayD<f64>, f32_out: bool) -> Result<()> {
    if f32_out {
        diffusion_testbed::io::write_npy(path, &data.mapv(|v| v as f32))
    } else {
        diffusion_testbed::io::write_npy(path, data)
    }
    .with_context(|| format!("cannot write {}", path.display()))
}

/// `[n, d]` view of an array of 2 dimensions.
pub fn as_2d(a: &ArrayD<f64>, what: &str) -> Result<ndarray::Array2<f64>> {
    a.clone().into_dimensionality::<ndarray::Ix2>().map_err(|_| {
        anyhow::anyhow!(
            "{what} must be a 2-D array [samples, dim], got shape {:?}",
            a.shape()
        )
    })
}
