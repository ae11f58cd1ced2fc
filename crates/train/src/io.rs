//! safetensors reading/writing by dotted parameter names, and atomic file writes.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use ndarray::{ArrayD, IxDyn};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};

use crate::error::{Result, TrainError};
use crate::net::Parameters;
use crate::scalar::Scalar;

/// Encodes named arrays as a safetensors file (names must be unique).
pub fn encode<A: Scalar>(
    tensors: &[(String, &ArrayD<A>)],
    metadata: Option<HashMap<String, String>>,
) -> Result<Vec<u8>> {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, a)| {
            let mut out = Vec::with_capacity(a.len() * std::mem::size_of::<A>());
            // Iteration is in logical (row-major) order whatever the memory layout.
            a.iter().for_each(|v| v.put_le(&mut out));
            out
        })
        .collect();
    let mut views = Vec::with_capacity(tensors.len());
    for ((name, a), b) in tensors.iter().zip(&bytes) {
        let view = TensorView::new(A::DTYPE, a.shape().to_vec(), b)
            .map_err(|e| TrainError::invalid("tensor", format!("`{name}`: {e}")))?;
        views.push((name.as_str(), view));
    }
    safetensors::serialize(views, metadata).map_err(|e| TrainError::invalid("safetensors", e.to_string()))
}

/// A safetensors file read into memory and validated.
#[derive(Debug)]
pub struct TensorFile {
    path: PathBuf,
    bytes: Vec<u8>,
}

impl TensorFile {
    /// Reads and validates `path` (header, offsets, sizes): truncation is caught here.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let bytes = fs::read(&path).map_err(|e| TrainError::io(&path, e))?;
        SafeTensors::deserialize(&bytes).map_err(|e| corrupt(&path, &e))?;
        Ok(Self { path, bytes })
    }

    fn parsed(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.bytes).expect("validated in open")
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The tensor names, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.parsed().names().into_iter().map(str::to_string).collect();
        names.sort();
        names
    }

    /// The `__metadata__` map of the header.
    pub fn metadata(&self) -> HashMap<String, String> {
        SafeTensors::read_metadata(&self.bytes)
            .ok()
            .and_then(|(_, m)| m.metadata().clone())
            .unwrap_or_default()
    }

    /// Tensor `name` converted to `A`, which must have shape `expected`.
    pub fn get<A: Scalar>(&self, name: &str, expected: &[usize]) -> Result<ArrayD<A>> {
        let st = self.parsed();
        let view = st.tensor(name).map_err(|_| TrainError::MissingTensor {
            name: name.to_string(),
            path: self.path.clone(),
        })?;
        if view.shape() != expected {
            return Err(TrainError::TensorShape {
                name: name.to_string(),
                path: self.path.clone(),
                expected: expected.to_vec(),
                found: view.shape().to_vec(),
            });
        }
        let values = decode(view.dtype(), view.data()).ok_or_else(|| TrainError::TensorDtype {
            name: name.to_string(),
            path: self.path.clone(),
            dtype: format!("{:?}", view.dtype()),
        })?;
        let values: Vec<A> = values.into_iter().map(A::of_f64).collect();
        Ok(ArrayD::from_shape_vec(IxDyn(expected), values).expect("size validated by safetensors"))
    }

    /// Copies every parameter and buffer of `model` from this file by name. With `strict`,
    /// tensors in the file that the model does not have are an error (PyTorch's
    /// `strict=True`). Nothing is modified unless every tensor loads.
    pub fn load_into<A: Scalar, M: Parameters<A> + ?Sized>(&self, model: &mut M, strict: bool) -> Result<()> {
        load_split(model, self, self, strict)
    }

    /// With `strict`, an error naming the tensors of this file outside `known`.
    fn check_no_extra(&self, known: &BTreeSet<&str>) -> Result<()> {
        let extra: Vec<String> = self
            .names()
            .into_iter()
            .filter(|n| !known.contains(n.as_str()))
            .collect();
        if extra.is_empty() {
            Ok(())
        } else {
            Err(TrainError::UnexpectedTensors {
                path: self.path.clone(),
                names: extra,
            })
        }
    }
}

/// Copies `model`'s parameters from `params` and its buffers from `buffers` (which may be the
/// same file), by name. With `strict`, either file holding a tensor the model does not have
/// is an error. Nothing is modified unless every tensor loads.
pub(crate) fn load_split<A: Scalar, M: Parameters<A> + ?Sized>(
    model: &mut M,
    params: &TensorFile,
    buffers: &TensorFile,
    strict: bool,
) -> Result<()> {
    let mut param_shapes = Vec::new();
    model.visit(&mut |name, p| param_shapes.push((name.to_string(), p.value.shape().to_vec())));
    let mut buffer_shapes = Vec::new();
    model.visit_buffers(&mut |name, b| buffer_shapes.push((name.to_string(), b.shape().to_vec())));
    let param_values = param_shapes
        .iter()
        .map(|(name, shape)| params.get::<A>(name, shape))
        .collect::<Result<Vec<_>>>()?;
    let buffer_values = buffer_shapes
        .iter()
        .map(|(name, shape)| buffers.get::<A>(name, shape))
        .collect::<Result<Vec<_>>>()?;
    if strict {
        let known: BTreeSet<&str> = param_shapes
            .iter()
            .chain(&buffer_shapes)
            .map(|(n, _)| n.as_str())
            .collect();
        params.check_no_extra(&known)?;
        buffers.check_no_extra(&known)?;
    }
    let mut param_values = param_values.into_iter();
    model.visit_mut(&mut |_, p| p.value = param_values.next().expect("one per parameter"));
    let mut buffer_values = buffer_values.into_iter();
    model.visit_buffers_mut(&mut |_, b| *b = buffer_values.next().expect("one per buffer"));
    Ok(())
}

fn corrupt(path: &Path, e: &safetensors::SafeTensorError) -> TrainError {
    TrainError::Corrupt {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// Little-endian floats of any width safetensors exports, as f64; `None` for non-floats.
fn decode(dtype: Dtype, data: &[u8]) -> Option<Vec<f64>> {
    Some(match dtype {
        Dtype::F64 => data
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect(),
        Dtype::F32 => data
            .chunks_exact(4)
            .map(|c| f64::from(f32::from_le_bytes(c.try_into().expect("4 bytes"))))
            .collect(),
        Dtype::F16 => data
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f64())
            .collect(),
        Dtype::BF16 => data
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f64())
            .collect(),
        _ => return None,
    })
}

/// The model's parameters and buffers by name (its `state_dict()`), in visit order.
pub fn state_dict<A: Scalar, M: Parameters<A> + ?Sized>(model: &M) -> Vec<(String, ArrayD<A>)> {
    let mut named = Vec::new();
    model.visit(&mut |name, p| named.push((name.to_string(), p.value.clone())));
    model.visit_buffers(&mut |name, b| named.push((name.to_string(), b.clone())));
    named
}

/// Writes `model`'s parameters and buffers to `path` (atomically) under their dotted names.
pub fn save_weights<A: Scalar, M: Parameters<A> + ?Sized>(model: &M, path: impl AsRef<Path>) -> Result<()> {
    let named = state_dict(model);
    let refs: Vec<(String, &ArrayD<A>)> = named.iter().map(|(n, a)| (n.clone(), a)).collect();
    write_atomic(path.as_ref(), &encode(&refs, None)?)
}

/// Loads weights saved by [`save_weights`] or exported from PyTorch
/// (`safetensors.torch.save_file(model.state_dict(), ...)`) into `model`.
pub fn load_weights<A: Scalar, M: Parameters<A> + ?Sized>(
    model: &mut M,
    path: impl AsRef<Path>,
    strict: bool,
) -> Result<()> {
    TensorFile::open(path)?.load_into(model, strict)
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
