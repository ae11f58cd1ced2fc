//! safetensors load/save by PyTorch parameter names.

use std::collections::HashMap;
use std::path::Path;

use ndarray::ArrayD;
use safetensors::{Dtype, SafeTensors, tensor::TensorView};

use crate::error::{NnError, Result};
use crate::param::{Float, Parameters};

/// A tensor read from a file, converted to f64: `(shape, data)`.
pub type HostTensor = (Vec<usize>, Vec<f64>);

fn st_err(path: Option<&Path>, e: impl std::fmt::Display) -> NnError {
    NnError::Safetensors {
        path: path.map(|p| p.display().to_string()),
        reason: e.to_string(),
    }
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| NnError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// Converts F32/F64 little-endian data to f64.
fn to_f64(name: &str, view: &TensorView<'_>) -> Result<Vec<f64>> {
    let d = view.data();
    match view.dtype() {
        Dtype::F32 => Ok(d
            .chunks_exact(4)
            .map(|b| f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])))
            .collect()),
        Dtype::F64 => Ok(d
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")))
            .collect()),
        other => Err(NnError::TensorDtype {
            name: name.to_string(),
            dtype: format!("{other:?}"),
        }),
    }
}

/// Every tensor of a safetensors byte buffer, as f64.
pub fn read_all_bytes(bytes: &[u8]) -> Result<HashMap<String, HostTensor>> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| st_err(None, e))?;
    let mut out = HashMap::new();
    for (name, view) in st.tensors() {
        let data = to_f64(&name, &view)?;
        out.insert(name, (view.shape().to_vec(), data));
    }
    Ok(out)
}

/// Every tensor of a safetensors file, as f64.
pub fn read_all(path: impl AsRef<Path>) -> Result<HashMap<String, HostTensor>> {
    let path = path.as_ref();
    read_all_bytes(&read(path)?).map_err(|e| match e {
        NnError::Safetensors { reason, .. } => st_err(Some(path), reason),
        other => other,
    })
}

/// Loads every parameter and buffer of `model` from safetensors bytes, by name.
/// Fails naming the tensor if one is missing, mis-shaped or of an unsupported dtype.
/// Tensors in the file that the model does not have are ignored.
pub fn load_bytes<A: Float>(model: &mut dyn Parameters<A>, bytes: &[u8]) -> Result<()> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| st_err(None, e))?;
    let mut first_err: Option<NnError> = None;
    let mut load = |name: &str, value: &mut ArrayD<A>| {
        if first_err.is_some() {
            return;
        }
        let res = (|| {
            let view = st.tensor(name).map_err(|_| NnError::MissingTensor {
                name: name.to_string(),
            })?;
            if view.shape() != value.shape() {
                return Err(NnError::TensorShape {
                    name: name.to_string(),
                    expected: value.shape().to_vec(),
                    got: view.shape().to_vec(),
                });
            }
            let data = to_f64(name, &view)?;
            for (v, d) in value.iter_mut().zip(data) {
                *v = A::of_f64(d);
            }
            Ok(())
        })();
        if let Err(e) = res {
            first_err = Some(e);
        }
    };
    model.visit_mut(&mut |n, p| load(n, &mut p.value));
    model.visit_buffers_mut(&mut |n, b| load(n, b));
    first_err.map_or(Ok(()), Err)
}

/// Loads a model from a safetensors file (see [`load_bytes`]).
pub fn load<A: Float>(model: &mut dyn Parameters<A>, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    load_bytes(model, &read(path)?).map_err(|e| match e {
        NnError::Safetensors { reason, .. } => st_err(Some(path), reason),
        other => other,
    })
}

/// Serialises parameters and buffers (in `A`'s own dtype) to safetensors bytes.
pub fn save_bytes<A: Float>(model: &dyn Parameters<A>) -> Result<Vec<u8>> {
    let dtype = if std::mem::size_of::<A>() == 4 {
        Dtype::F32
    } else {
        Dtype::F64
    };
    let mut raw: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    let mut push = |name: &str, v: &ArrayD<A>| {
        let mut bytes = Vec::with_capacity(v.len() * std::mem::size_of::<A>());
        for &x in v.iter() {
            if std::mem::size_of::<A>() == 4 {
                bytes.extend_from_slice(&(x.as_f64() as f32).to_le_bytes());
            } else {
                bytes.extend_from_slice(&x.as_f64().to_le_bytes());
            }
        }
        raw.push((name.to_string(), v.shape().to_vec(), bytes));
    };
    model.visit(&mut |n, p| push(n, &p.value));
    model.visit_buffers(&mut |n, b| push(n, b));
    let views = raw
        .iter()
        .map(|(n, s, b)| {
            Ok((
                n.clone(),
                TensorView::new(dtype, s.clone(), b).map_err(|e| st_err(None, e))?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::serialize(views, None).map_err(|e| st_err(None, e))
}

/// Saves to `path` atomically (temporary file in the same directory, then rename).
pub fn save<A: Float>(model: &dyn Parameters<A>, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let bytes = save_bytes(model)?;
    let io = |source| NnError::Io {
        path: path.display().to_string(),
        source,
    };
    diffusion_core::fs::write_atomic(path, &bytes).map_err(io)
}
