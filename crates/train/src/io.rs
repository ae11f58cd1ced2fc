//! Files of a training run: weights by dotted parameter names (the safetensors code is
//! `diffusion_nn::checkpoint`'s) and atomic writes.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

pub use diffusion_nn::checkpoint::{TensorFile, encode, load_split, state_dict};

use crate::error::{Result, TrainError};
use crate::net::Parameters;
use crate::scalar::Scalar;

/// Writes `model`'s parameters and buffers to `path` (atomically) under their dotted names.
pub fn save_weights<A: Scalar, M: Parameters<A> + ?Sized>(model: &M, path: impl AsRef<Path>) -> Result<()> {
    Ok(diffusion_nn::checkpoint::save(model, path)?)
}

/// Loads weights saved by [`save_weights`] or exported from PyTorch
/// (`safetensors.torch.save_file(model.state_dict(), ...)`) into `model`.
pub fn load_weights<A: Scalar, M: Parameters<A> + ?Sized>(
    model: &mut M,
    path: impl AsRef<Path>,
    strict: bool,
) -> Result<()> {
    Ok(diffusion_nn::checkpoint::load(model, path, strict)?)
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A fresh sibling path of `path` for temporary output: `.<name>.tmp-<pid>-<n>`.
pub(crate) fn temp_sibling(path: &Path) -> Result<PathBuf> {
    let name = path
        .file_name()
        .ok_or_else(|| TrainError::invalid("path", format!("{} has no file name", path.display())))?;
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = format!(".{}.tmp-{}-{n}", name.to_string_lossy(), std::process::id());
    Ok(path.with_file_name(tmp))
}

/// Flushes a directory entry so a rename inside it survives a crash (no-op off Unix).
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    diffusion_core::fs::sync_dir(dir).map_err(|e| TrainError::io(dir, e))
}

/// [`diffusion_core::fs::write_atomic`] with this crate's error.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    diffusion_core::fs::write_atomic(path, bytes).map_err(|e| TrainError::io(path, e))
}
