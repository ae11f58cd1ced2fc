//! Quantized models as safetensors: codes in their own dtypes (`I8`, or `U8` for minifloat
//! codes, unsigned codes and packed 4-bit pairs), `F32` scales, smoothing factors,
//! low-rank factors and biases, and a JSON description of every layer's quantizers in the
//! file's metadata. Loading checks every scale, zero point and factor against the weight
//! it belongs to ([`QuantError::ScaleMismatch`]).
//!
//! Per layer `net.{2i}`: `qweight` (or `weight` when unquantized), `wscale`, `wzero`,
//! `bias`, `smooth`, `lowrank_a` (`[r, in]`), `lowrank_b` (`[out, r]`), `act_scale`,
//! `act_zero`. Codes of at most 4 bits are packed two per byte along the input axis:
//! column `2c` in the low nibble, `2c + 1` in the high one.

use std::collections::HashMap;
use std::path::Path;

use diffusion_core::Parameterization;
use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use serde::{Deserialize, Serialize};

use crate::error::{QuantError, Result};
use crate::fp::MiniFloat;
use crate::linear::{ActQuant, Exec, QuantLinear};
use crate::lowrank::LowRank;
use crate::model::{QuantMlp, layer_name};
use crate::quantizer::{Estimator, Granularity, IntFormat, Quantizer, Scales, Scheme};

const FORMAT: &str = "diffusion-quant/1";

#[derive(Serialize, Deserialize)]
struct QuantizerMeta {
    /// `int` or a minifloat name.
    scheme: String,
    bits: u32,
    symmetric: bool,
    /// `tensor`, `row` or the group size.
    granularity: String,
    /// `None`: min/max; else the Lp search's `(p, steps)`.
    lp: Option<(f64, usize)>,
    pow2: bool,
}

#[derive(Serialize, Deserialize)]
struct LayerMeta {
    in_features: usize,
    out_features: usize,
    weight: Option<QuantizerMeta>,
    act: Option<QuantizerMeta>,
    low_rank: Option<usize>,
}

#[derive(Serialize, Deserialize)]
struct ModelMeta {
    format: String,
    model: String,
    dim: usize,
    temb: usize,
    parameterization: Parameterization,
    layers: Vec<LayerMeta>,
}

fn describe(q: &Quantizer) -> QuantizerMeta {
    let (scheme, symmetric) = match q.scheme {
        Scheme::Int(f) => ("int".to_string(), f.symmetric),
        Scheme::Float(f) => (f.name.to_string(), true),
    };
    QuantizerMeta {
        scheme,
        bits: q.scheme.bits(),
        symmetric,
        granularity: match q.granularity {
            Granularity::PerTensor => "tensor".into(),
            Granularity::PerRow => "row".into(),
            Granularity::PerGroup(g) => g.to_string(),
        },
        lp: match q.estimator {
            Estimator::MinMax => None,
            Estimator::Lp { p, steps } => Some((p, steps)),
        },
        pow2: q.pow2_scales,
    }
}

fn parse(m: &QuantizerMeta) -> Result<Quantizer> {
    let scheme = if m.scheme == "int" {
        Scheme::Int(IntFormat::new(m.bits, m.symmetric)?)
    } else {
        let f = MiniFloat::by_name(&m.scheme)?;
        if f.bits() != m.bits {
            return Err(bad(format!("{} declared with {} bits", m.scheme, m.bits)));
        }
        Scheme::Float(f)
    };
    let granularity = match m.granularity.as_str() {
        "tensor" => Granularity::PerTensor,
        "row" => Granularity::PerRow,
        g => Granularity::PerGroup(g.parse().map_err(|_| bad(format!("granularity {g:?}")))?),
    };
    let estimator = match m.lp {
        None => Estimator::MinMax,
        Some((p, steps)) => Estimator::Lp { p, steps },
    };
    Ok(Quantizer {
        scheme,
        granularity,
        estimator,
        pow2_scales: m.pow2,
    })
}

fn bad(reason: impl Into<String>) -> QuantError {
    QuantError::Checkpoint(reason.into())
}

/// One tensor to write: dtype, shape, little-endian bytes.
type Entry = (String, Dtype, Vec<usize>, Vec<u8>);

fn f32s(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn i32s(v: &[i32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Codes as stored: packed nibbles (<= 4 bits), `I8` (signed integers) or `U8`.
fn encode_codes(codes: &[i32], rows: usize, cols: usize, scheme: Scheme) -> (Dtype, Vec<usize>, Vec<u8>) {
    let signed = matches!(scheme, Scheme::Int(f) if f.symmetric);
    if scheme.bits() <= 4 {
        let half = cols.div_ceil(2);
        let mut out = vec![0u8; rows * half];
        for r in 0..rows {
            for c in 0..cols {
                let nib = (codes[r * cols + c] as u8) & 0x0f;
                out[r * half + c / 2] |= if c % 2 == 0 { nib } else { nib << 4 };
            }
        }
        (Dtype::U8, vec![rows, half], out)
    } else {
        let dtype = if signed { Dtype::I8 } else { Dtype::U8 };
        (dtype, vec![rows, cols], codes.iter().map(|&c| c as u8).collect())
    }
}

fn decode_codes(
    t: &TensorView<'_>,
    rows: usize,
    cols: usize,
    scheme: Scheme,
    name: &str,
) -> Result<Vec<i32>> {
    let signed = matches!(scheme, Scheme::Int(f) if f.symmetric);
    let packed = scheme.bits() <= 4;
    let (dtype, shape) = if packed {
        (Dtype::U8, vec![rows, cols.div_ceil(2)])
    } else if signed {
        (Dtype::I8, vec![rows, cols])
    } else {
        (Dtype::U8, vec![rows, cols])
    };
    if t.dtype() != dtype || t.shape() != shape.as_slice() {
        return Err(bad(format!(
            "{name}: expected {dtype:?} {shape:?}, found {:?} {:?}",
            t.dtype(),
            t.shape()
        )));
    }
    let data = t.data();
    let mut codes = Vec::with_capacity(rows * cols);
    for r in 0..rows {
        for c in 0..cols {
            let v = if packed {
                let b = data[r * shape[1] + c / 2];
                let nib = if c % 2 == 0 { b & 0x0f } else { b >> 4 };
                if signed {
                    ((nib ^ 8) as i8 - 8) as i32
                } else {
                    nib as i32
                }
            } else {
                let b = data[r * cols + c];
                if signed { b as i8 as i32 } else { b as i32 }
            };
            codes.push(v);
        }
    }
    Ok(codes)
}

/// Writes `model` to `path` (atomically).
pub fn save(model: &QuantMlp, path: impl AsRef<Path>) -> Result<()> {
    let mut entries: Vec<Entry> = Vec::new();
    let mut metas = Vec::new();
    for (i, l) in model.layers.iter().enumerate() {
        let p = layer_name(i);
        let (out, inp) = (l.out_features, l.in_features);
        match &l.weight_scales {
            Some(s) => {
                let (dtype, shape, bytes) = encode_codes(&l.weight_codes, out, inp, s.scheme);
                entries.push((format!("{p}.qweight"), dtype, shape, bytes));
                let (rb, cb) = s.granularity.blocks(out, inp)?;
                entries.push((format!("{p}.wscale"), Dtype::F32, vec![rb, cb], f32s(&s.scale)));
                entries.push((format!("{p}.wzero"), Dtype::I32, vec![rb, cb], i32s(&s.zero)));
            }
            None => entries.push((format!("{p}.weight"), Dtype::F32, vec![out, inp], f32s(&l.weight))),
        }
        if let Some(b) = &l.bias {
            entries.push((format!("{p}.bias"), Dtype::F32, vec![out], f32s(b)));
        }
        if let Some(s) = &l.smooth {
            entries.push((format!("{p}.smooth"), Dtype::F32, vec![inp], f32s(s)));
        }
        if let Some(lr) = &l.low_rank {
            entries.push((
                format!("{p}.lowrank_a"),
                Dtype::F32,
                vec![lr.rank, inp],
                f32s(&lr.a),
            ));
            entries.push((
                format!("{p}.lowrank_b"),
                Dtype::F32,
                vec![out, lr.rank],
                f32s(&lr.b),
            ));
        }
        if let Some(ActQuant {
            fixed: Some((s, z)), ..
        }) = &l.act
        {
            entries.push((format!("{p}.act_scale"), Dtype::F32, vec![1], f32s(&[*s])));
            entries.push((format!("{p}.act_zero"), Dtype::I32, vec![1], i32s(&[*z])));
        }
        metas.push(LayerMeta {
            in_features: inp,
            out_features: out,
            weight: l.weight_scales.as_ref().map(|s| {
                describe(&Quantizer {
                    scheme: s.scheme,
                    granularity: s.granularity,
                    estimator: Estimator::MinMax,
                    pow2_scales: false,
                })
            }),
            act: l.act.as_ref().map(|a| describe(&a.quantizer)),
            low_rank: l.low_rank.as_ref().map(|lr| lr.rank),
        });
    }
    let meta = ModelMeta {
        format: FORMAT.into(),
        model: "mlp".into(),
        dim: model.dim,
        temb: model.temb,
        parameterization: model.parameterization,
        layers: metas,
    };
    let json = serde_json::to_string(&meta).map_err(|e| bad(e.to_string()))?;
    let views: Vec<(String, TensorView<'_>)> = entries
        .iter()
        .map(|(n, d, s, b)| {
            Ok((
                n.clone(),
                TensorView::new(*d, s.clone(), b).map_err(|e| bad(e.to_string()))?,
            ))
        })
        .collect::<Result<_>>()?;
    let metadata = HashMap::from([("quant".to_string(), json)]);
    let bytes = safetensors::serialize(views, Some(metadata)).map_err(|e| bad(e.to_string()))?;
    diffusion_train::io::write_atomic(path.as_ref(), &bytes)?;
    Ok(())
}

/// Tensor `name` of a 4-byte `dtype` with `expected` values (`None` when absent): a wrong
/// dtype or a count that does not match the layer is an error naming the tensor.
fn four_byte_values<T>(
    st: &SafeTensors<'_>,
    name: &str,
    expected: usize,
    dtype: Dtype,
    from_le: fn([u8; 4]) -> T,
) -> Result<Option<Vec<T>>> {
    let Ok(t) = st.tensor(name) else { return Ok(None) };
    if t.dtype() != dtype {
        return Err(bad(format!("{name}: dtype {:?}, expected {dtype:?}", t.dtype())));
    }
    let v: Vec<T> = t
        .data()
        .chunks_exact(4)
        .map(|b| from_le(b.try_into().expect("4 bytes")))
        .collect();
    if v.len() != expected {
        return Err(QuantError::ScaleMismatch {
            tensor: name.into(),
            expected,
            found: v.len(),
        });
    }
    Ok(Some(v))
}

/// Reads a model written by [`save`] (executed as fake-quant; see [`QuantMlp::with_exec`]).
pub fn load(path: impl AsRef<Path>) -> Result<QuantMlp> {
    let bytes = std::fs::read(path.as_ref())?;
    from_bytes(&bytes)
}

/// As [`load`], from the file's bytes.
pub fn from_bytes(bytes: &[u8]) -> Result<QuantMlp> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| bad(e.to_string()))?;
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| bad(e.to_string()))?;
    let json = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get("quant"))
        .ok_or_else(|| bad("no \"quant\" metadata: not a diffusion-quant file"))?;
    let meta: ModelMeta = serde_json::from_str(json).map_err(|e| bad(format!("metadata: {e}")))?;
    if meta.format != FORMAT || meta.model != "mlp" {
        return Err(bad(format!("format {:?} / model {:?}", meta.format, meta.model)));
    }
    if meta.layers.is_empty() {
        return Err(bad("no layers"));
    }
    let f32_of =
        |name: &str, expected: usize| four_byte_values(&st, name, expected, Dtype::F32, f32::from_le_bytes);
    let i32_of =
        |name: &str, expected: usize| four_byte_values(&st, name, expected, Dtype::I32, i32::from_le_bytes);
    let need = |name: &str, v: Option<Vec<f32>>| v.ok_or_else(|| bad(format!("missing tensor {name}")));

    let mut layers = Vec::new();
    for (i, m) in meta.layers.iter().enumerate() {
        let p = layer_name(i);
        let (out, inp) = (m.out_features, m.in_features);
        let (weight_scales, weight_codes, weight) = match &m.weight {
            Some(qm) => {
                let q = parse(qm)?;
                let (rb, cb) = q.granularity.blocks(out, inp)?;
                let name = format!("{p}.qweight");
                let t = st
                    .tensor(&name)
                    .map_err(|_| bad(format!("missing tensor {name}")))?;
                let codes = decode_codes(&t, out, inp, q.scheme, &name)?;
                let scale = need(&format!("{p}.wscale"), f32_of(&format!("{p}.wscale"), rb * cb)?)?;
                let zero = i32_of(&format!("{p}.wzero"), rb * cb)?.unwrap_or_else(|| vec![0; rb * cb]);
                if scale.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
                    return Err(bad(format!("{p}.wscale: scales must be positive and finite")));
                }
                let scales = Scales {
                    scheme: q.scheme,
                    granularity: q.granularity,
                    rows: out,
                    cols: inp,
                    scale,
                    zero,
                };
                let deq = scales.dequantize(&codes)?;
                (Some(scales), codes, deq)
            }
            None => {
                let name = format!("{p}.weight");
                (None, Vec::new(), need(&name, f32_of(&name, out * inp)?)?)
            }
        };
        let bias = f32_of(&format!("{p}.bias"), out)?;
        let smooth = f32_of(&format!("{p}.smooth"), inp)?;
        let low_rank = match m.low_rank {
            Some(r) => {
                let a = need(
                    &format!("{p}.lowrank_a"),
                    f32_of(&format!("{p}.lowrank_a"), r * inp)?,
                )?;
                let b = need(
                    &format!("{p}.lowrank_b"),
                    f32_of(&format!("{p}.lowrank_b"), out * r)?,
                )?;
                Some(LowRank {
                    rank: r,
                    rows: out,
                    cols: inp,
                    a,
                    b,
                })
            }
            None => None,
        };
        let act = match &m.act {
            Some(qm) => {
                let quantizer = parse(qm)?;
                let s = f32_of(&format!("{p}.act_scale"), 1)?;
                let z = i32_of(&format!("{p}.act_zero"), 1)?;
                let fixed = match (s, z) {
                    (Some(s), Some(z)) => Some((s[0], z[0])),
                    (None, None) => None,
                    _ => return Err(bad(format!("{p}: act_scale and act_zero come together"))),
                };
                Some(ActQuant { quantizer, fixed })
            }
            None => None,
        };
        layers.push(QuantLinear::assemble(
            inp,
            out,
            weight_scales,
            weight_codes,
            weight,
            bias,
            act,
            smooth,
            low_rank,
        )?);
    }
    Ok(QuantMlp {
        dim: meta.dim,
        temb: meta.temb,
        layers,
        exec: Exec::Fake,
        parameterization: meta.parameterization,
    })
}
