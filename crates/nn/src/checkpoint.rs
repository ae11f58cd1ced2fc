//! The one safetensors reader and writer: tensors by PyTorch's dotted parameter names,
//! f64/f32/f16/bf16 read into either float type, strict or lenient loading that changes
//! nothing unless every tensor loads, and atomic writes.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use ndarray::{ArrayD, IxDyn};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};

use crate::error::{NnError, Result};
use crate::param::{Float, Parameters};

/// A tensor read from a file, converted to f64: `(shape, data)`.
pub type HostTensor = (Vec<usize>, Vec<f64>);

/// What a buffer without a file is called in messages.
const IN_MEMORY: &str = "safetensors bytes";

/// A safetensors file (or buffer) read into memory and validated: truncation and bad
/// headers are caught when it is opened.
#[derive(Debug)]
pub struct TensorFile {
    origin: String,
    bytes: Vec<u8>,
}

impl TensorFile {
    /// Reads and validates `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| NnError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::with_origin(bytes, path.display().to_string())
    }

    /// Validates an in-memory safetensors buffer.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self> {
        Self::with_origin(bytes, IN_MEMORY.to_string())
    }

    fn with_origin(bytes: Vec<u8>, origin: String) -> Result<Self> {
        SafeTensors::deserialize(&bytes).map_err(|e| NnError::Safetensors {
            origin: origin.clone(),
            reason: e.to_string(),
        })?;
        Ok(Self { origin, bytes })
    }

    fn parsed(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.bytes).expect("validated when opened")
    }

    /// The file's path (or a description of the buffer), for messages.
    pub fn origin(&self) -> &str {
        &self.origin
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

    /// Tensor `name` with its shape, as f64.
    pub fn get_f64(&self, name: &str) -> Result<HostTensor> {
        let st = self.parsed();
        let view = st.tensor(name).map_err(|_| self.missing(name))?;
        Ok((view.shape().to_vec(), self.values(name, &view)?))
    }

    /// Tensor `name` converted to `A`, which must have shape `expected`.
    pub fn get<A: Float>(&self, name: &str, expected: &[usize]) -> Result<ArrayD<A>> {
        let st = self.parsed();
        let view = st.tensor(name).map_err(|_| self.missing(name))?;
        if view.shape() != expected {
            return Err(NnError::TensorShape {
                name: name.to_string(),
                origin: self.origin.clone(),
                expected: expected.to_vec(),
                got: view.shape().to_vec(),
            });
        }
        let values = self.values(name, &view)?.into_iter().map(A::of_f64).collect();
        Ok(ArrayD::from_shape_vec(IxDyn(expected), values).expect("size validated by safetensors"))
    }

    fn values(&self, name: &str, view: &TensorView<'_>) -> Result<Vec<f64>> {
        decode(view.dtype(), view.data()).ok_or_else(|| NnError::TensorDtype {
            name: name.to_string(),
            origin: self.origin.clone(),
            dtype: format!("{:?}", view.dtype()),
        })
    }

    fn missing(&self, name: &str) -> NnError {
        NnError::MissingTensor {
            name: name.to_string(),
            origin: self.origin.clone(),
        }
    }

    /// Copies every parameter and buffer of `model` from this file by name. With `strict`,
    /// tensors in the file that the model does not have are an error (PyTorch's
    /// `strict=True`). Nothing is modified unless every tensor loads.
    pub fn load_into<A: Float, M: Parameters<A> + ?Sized>(&self, model: &mut M, strict: bool) -> Result<()> {
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
            Err(NnError::UnexpectedTensors {
                origin: self.origin.clone(),
                names: extra,
            })
        }
    }
}

/// Copies `model`'s parameters from `params` and its buffers from `buffers` (which may be the
/// same file), by name. With `strict`, either file holding a tensor the model does not have
/// is an error. Nothing is modified unless every tensor loads.
pub fn load_split<A: Float, M: Parameters<A> + ?Sized>(
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

/// Little-endian floats of any width safetensors exports, as f64; `None` for non-floats.
pub fn decode(dtype: Dtype, data: &[u8]) -> Option<Vec<f64>> {
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

/// Encodes named arrays (in `A`'s own dtype) as safetensors bytes; names must be unique.
pub fn encode<A: Float>(
    tensors: &[(String, &ArrayD<A>)],
    metadata: Option<HashMap<String, String>>,
) -> Result<Vec<u8>> {
    let wide = std::mem::size_of::<A>() == 8;
    let dtype = if wide { Dtype::F64 } else { Dtype::F32 };
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, a)| {
            let mut out = Vec::with_capacity(a.len() * std::mem::size_of::<A>());
            // Iteration is in logical (row-major) order whatever the memory layout.
            for &v in a.iter() {
                if wide {
                    out.extend_from_slice(&v.as_f64().to_le_bytes());
                } else {
                    out.extend_from_slice(&(v.as_f64() as f32).to_le_bytes());
                }
            }
            out
        })
        .collect();
    let invalid = |reason: String| NnError::Safetensors {
        origin: IN_MEMORY.to_string(),
        reason,
    };
    let mut views = Vec::with_capacity(tensors.len());
    for ((name, a), b) in tensors.iter().zip(&bytes) {
        let view =
            TensorView::new(dtype, a.shape().to_vec(), b).map_err(|e| invalid(format!("`{name}`: {e}")))?;
        views.push((name.as_str(), view));
    }
    safetensors::serialize(views, metadata).map_err(|e| invalid(e.to_string()))
}

/// The model's parameters and buffers by name (its `state_dict()`), in visit order.
pub fn state_dict<A: Float, M: Parameters<A> + ?Sized>(model: &M) -> Vec<(String, ArrayD<A>)> {
    let mut named = Vec::new();
    model.visit(&mut |name, p| named.push((name.to_string(), p.value.clone())));
    model.visit_buffers(&mut |name, b| named.push((name.to_string(), b.clone())));
    named
}

/// Serialises parameters and buffers (in `A`'s own dtype) to safetensors bytes.
pub fn save_bytes<A: Float, M: Parameters<A> + ?Sized>(model: &M) -> Result<Vec<u8>> {
    let named = state_dict(model);
    let refs: Vec<(String, &ArrayD<A>)> = named.iter().map(|(n, a)| (n.clone(), a)).collect();
    encode(&refs, None)
}

/// Writes `model`'s parameters and buffers to `path` atomically under their dotted names.
pub fn save<A: Float, M: Parameters<A> + ?Sized>(model: &M, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    diffusion_core::fs::write_atomic(path, &save_bytes(model)?).map_err(|source| NnError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// Loads every parameter and buffer of `model` from a file written by [`save`] or exported
/// from PyTorch (`safetensors.torch.save_file(model.state_dict(), ...)`). With `strict`,
/// tensors the model does not have are an error. Nothing changes unless every tensor loads.
pub fn load<A: Float, M: Parameters<A> + ?Sized>(
    model: &mut M,
    path: impl AsRef<Path>,
    strict: bool,
) -> Result<()> {
    TensorFile::open(path)?.load_into(model, strict)
}

/// [`load`] from safetensors bytes.
pub fn load_bytes<A: Float, M: Parameters<A> + ?Sized>(
    model: &mut M,
    bytes: &[u8],
    strict: bool,
) -> Result<()> {
    TensorFile::from_bytes(bytes.to_vec())?.load_into(model, strict)
}

/// Every tensor of a safetensors file, as f64.
pub fn read_all(path: impl AsRef<Path>) -> Result<HashMap<String, HostTensor>> {
    let file = TensorFile::open(path)?;
    file.names()
        .into_iter()
        .map(|n| Ok((n.clone(), file.get_f64(&n)?)))
        .collect()
}
