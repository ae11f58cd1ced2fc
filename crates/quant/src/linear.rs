//! A quantized Linear layer (`y = x W^T + b`, PyTorch layout), built from a
//! `diffusion_nn::layers::Linear`: optional SmoothQuant migration, an optional low-rank
//! branch (SVDQuant or LoRC), quantized weights and activations, run either as fake-quant
//! (dequantized values, f32 product) or at the quantized width (integer kernel).

use diffusion_nn::layers::Linear;
use ndarray::{ArrayD, ArrayView2};
use rayon::prelude::*;

use crate::error::{QuantError, Result, invalid};
use crate::kernel::{self, Backend, PackedWeights};
use crate::lowrank::LowRank;
use crate::quantizer::{Estimator, Granularity, Quantizer, Scales, Scheme, check_matrix, round_even_small};

/// Which low-rank branch a layer gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LowRankKind {
    #[default]
    None,
    /// SVDQuant: the top-`r` SVD of the (smoothed) weight runs in f32, the residual is
    /// quantized.
    Svd(usize),
    /// LoRC (ZeroQuant-V2): the top-`r` SVD of the weight's quantization error, added back.
    Lorc(usize),
}

/// When activation scales are computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActMode {
    /// Fixed per-tensor scale from calibration data (PTQ4DM / Q-Diffusion).
    Static,
    /// Recomputed on every call with the quantizer's granularity (per token or per tensor).
    Dynamic,
}

/// How activations are quantized.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ActRecipe {
    pub quantizer: Quantizer,
    pub mode: ActMode,
}

/// Everything that decides how one Linear is quantized.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct Recipe {
    /// `None`: f32 weights.
    pub weight: Option<Quantizer>,
    /// `None`: f32 activations.
    pub act: Option<ActRecipe>,
    /// SmoothQuant's migration strength alpha (0.5 in the paper); needs calibration data.
    pub smooth_alpha: Option<f32>,
    pub low_rank: LowRankKind,
}

/// Per-row activation `(scale, zero)` and the codes as bytes.
type ActCodes = (Vec<(f32, i32)>, Vec<u8>);

/// How a quantized layer runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exec {
    /// Quantize and dequantize, multiply in f32 (the reference semantics).
    Fake,
    /// Integer codes through [`kernel::gemm_u8i8`]; needs symmetric integer weights of at
    /// most 8 bits (per row or per group of a multiple of 64) and integer activations per
    /// tensor or per token.
    Int(Backend),
}

/// Activation quantization state.
#[derive(Clone, Debug, PartialEq)]
pub struct ActQuant {
    pub quantizer: Quantizer,
    /// Per-tensor `(scale, zero)` of a static quantizer.
    pub fixed: Option<(f32, i32)>,
}

/// A Linear with quantized weights and activations.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantLinear {
    pub in_features: usize,
    pub out_features: usize,
    /// Weight scales (`None`: weights stay f32).
    pub weight_scales: Option<Scales>,
    /// The weight codes (`[out, in]`; minifloat codes as their byte value).
    pub weight_codes: Vec<i32>,
    /// The dequantized weights used by the fake-quant path (`[out, in]`).
    pub weight: Vec<f32>,
    pub bias: Option<Vec<f32>>,
    pub act: Option<ActQuant>,
    /// SmoothQuant divisors `s` (`[in]`): the layer computes `(x / s) (W s)^T`.
    pub smooth: Option<Vec<f32>>,
    pub low_rank: Option<LowRank>,
    /// Codes packed for the integer kernel, when the weights allow it.
    pub packed: Option<PackedWeights>,
    /// Sums of the weight codes per row and kernel group (`[out, groups]`), for the
    /// activations' zero-point correction; empty when not packed.
    pub code_sums: Vec<i32>,
}

impl QuantLinear {
    /// Quantizes `linear` with `recipe`. `calib` holds rows of the layer's full-precision
    /// input (`[n, in]`), needed by smoothing and static activation scales.
    pub fn build(name: &str, linear: &Linear<f32>, recipe: &Recipe, calib: Option<&[f32]>) -> Result<Self> {
        let w = linear.weight.value.clone();
        let b = linear.bias.as_ref().map(|b| b.value.iter().copied().collect());
        Self::from_weight(name, &w, b, recipe, calib)
    }

    /// As [`QuantLinear::build`] from a weight tensor, which must be a matrix `[out, in]`
    /// (a convolution kernel is an [`QuantError::UnsupportedLayer`]).
    pub fn from_weight(
        name: &str,
        weight: &ArrayD<f32>,
        bias: Option<Vec<f32>>,
        recipe: &Recipe,
        calib: Option<&[f32]>,
    ) -> Result<Self> {
        if weight.ndim() != 2 {
            return Err(QuantError::UnsupportedLayer {
                name: name.into(),
                reason: format!(
                    "weight of shape {:?}: only Linear ([out, in]) layers are supported",
                    weight.shape()
                ),
            });
        }
        let (out, inp) = (weight.shape()[0], weight.shape()[1]);
        if let Some(b) = &bias
            && b.len() != out
        {
            return Err(QuantError::Shape {
                context: format!("{name} bias"),
                expected: vec![out],
                got: vec![b.len()],
            });
        }
        let mut w: Vec<f32> = weight.iter().copied().collect();
        if w.iter().any(|v| !v.is_finite()) {
            return Err(QuantError::NonFinite(format!("{name} weight")));
        }
        let calib = match calib {
            Some(c) => {
                if c.is_empty() {
                    return Err(QuantError::EmptyCalibration(format!("{name}: no input rows")));
                }
                if !c.len().is_multiple_of(inp) {
                    return Err(QuantError::Shape {
                        context: format!("{name} calibration rows"),
                        expected: vec![inp],
                        got: vec![c.len()],
                    });
                }
                Some(c.to_vec())
            }
            None => None,
        };
        let needs_calib = recipe.smooth_alpha.is_some()
            || matches!(
                recipe.act,
                Some(ActRecipe {
                    mode: ActMode::Static,
                    ..
                })
            );
        let mut calib = match (calib, needs_calib) {
            (None, true) => {
                return Err(QuantError::EmptyCalibration(format!(
                    "{name}: smoothing and static activation scales need calibration data"
                )));
            }
            (c, _) => c,
        };

        let smooth = match recipe.smooth_alpha {
            Some(alpha) => {
                let x = calib.as_mut().expect("checked above");
                let s = smooth_factors(x, &w, inp, alpha)?;
                for row in w.chunks_mut(inp) {
                    for (v, &sj) in row.iter_mut().zip(&s) {
                        *v *= sj;
                    }
                }
                for row in x.chunks_mut(inp) {
                    for (v, &sj) in row.iter_mut().zip(&s) {
                        *v /= sj;
                    }
                }
                Some(s)
            }
            None => None,
        };

        let mut low_rank = None;
        if let LowRankKind::Svd(r) = recipe.low_rank {
            let lr = LowRank::of(&w, out, inp, r)?;
            for (v, p) in w.iter_mut().zip(lr.product()) {
                *v -= p;
            }
            low_rank = Some(lr);
        }

        let (weight_scales, weight_codes, deq) = match &recipe.weight {
            Some(q) => {
                let scales = q.fit(&w, out, inp)?;
                let mut deq = w.clone();
                scales.fake_quantize(&mut deq)?;
                let codes = weight_codes(&scales, &w)?;
                (Some(scales), codes, deq)
            }
            None => (None, Vec::new(), w.clone()),
        };
        if let LowRankKind::Lorc(r) = recipe.low_rank {
            let err: Vec<f32> = w.iter().zip(&deq).map(|(a, b)| a - b).collect();
            low_rank = Some(LowRank::of(&err, out, inp, r)?);
        }

        let act = match &recipe.act {
            None => None,
            Some(ActRecipe { quantizer, mode }) => {
                let fixed = match mode {
                    ActMode::Dynamic => None,
                    ActMode::Static => {
                        if quantizer.granularity != Granularity::PerTensor {
                            return Err(invalid("static activation quantizer", "must be per tensor"));
                        }
                        let x = calib.as_ref().expect("checked above");
                        let s = quantizer.fit(x, x.len() / inp, inp)?;
                        Some((s.scale[0], s.zero[0]))
                    }
                };
                Some(ActQuant {
                    quantizer: *quantizer,
                    fixed,
                })
            }
        };

        Self::assemble(
            inp,
            out,
            weight_scales,
            weight_codes,
            deq,
            bias,
            act,
            smooth,
            low_rank,
        )
    }

    /// A layer from its parts (as loaded from a file), every part checked against the
    /// weight's shape.
    pub fn assemble(
        in_features: usize,
        out_features: usize,
        weight_scales: Option<Scales>,
        weight_codes: Vec<i32>,
        weight: Vec<f32>,
        bias: Option<Vec<f32>>,
        act: Option<ActQuant>,
        smooth: Option<Vec<f32>>,
        low_rank: Option<LowRank>,
    ) -> Result<Self> {
        let (inp, out) = (in_features, out_features);
        let count = |tensor: &str, expected: usize, found: usize| {
            if expected == found {
                Ok(())
            } else {
                Err(QuantError::ScaleMismatch {
                    tensor: tensor.into(),
                    expected,
                    found,
                })
            }
        };
        count("weight", out * inp, weight.len())?;
        if let Some(s) = &weight_scales {
            s.check_fits(out, inp, "weight")?;
            count("weight codes", out * inp, weight_codes.len())?;
        }
        if let Some(b) = &bias {
            count("bias", out, b.len())?;
        }
        if let Some(s) = &smooth {
            count("smooth", inp, s.len())?;
            if s.iter().any(|v| !(v.is_finite() && *v > 0.0)) {
                return Err(invalid("smoothing factors", "must be positive and finite"));
            }
        }
        if let Some(lr) = &low_rank {
            count("lowrank rows", out, lr.rows)?;
            count("lowrank cols", inp, lr.cols)?;
            lr.check("lowrank")?;
        }
        let mut layer = Self {
            in_features: inp,
            out_features: out,
            weight_scales,
            weight_codes,
            weight,
            bias,
            act,
            smooth,
            low_rank,
            packed: None,
            code_sums: Vec::new(),
        };
        layer.packed = layer.pack()?;
        if let Some(p) = &layer.packed {
            let group = layer.kernel_group(p.kp);
            let groups = p.kp / group;
            let mut sums = vec![0i32; layer.out_features * groups];
            for (j, row) in layer.weight_codes.chunks(inp).enumerate() {
                for (c, &q) in row.iter().enumerate() {
                    sums[j * groups + c / group] += q;
                }
            }
            layer.code_sums = sums;
        }
        Ok(layer)
    }

    /// Kernel-packed codes when the weights are symmetric integers the kernel can group.
    fn pack(&self) -> Result<Option<PackedWeights>> {
        let Some(s) = &self.weight_scales else {
            return Ok(None);
        };
        let Scheme::Int(f) = s.scheme else { return Ok(None) };
        let groups_ok = match s.granularity {
            Granularity::PerRow | Granularity::PerTensor => true,
            Granularity::PerGroup(g) => g.is_multiple_of(kernel::BLOCK),
        };
        if !f.symmetric || !groups_ok {
            return Ok(None);
        }
        let bits = if f.bits() <= 4 { 4 } else { 8 };
        Ok(Some(PackedWeights::pack(
            &self.weight_codes,
            self.out_features,
            self.in_features,
            bits,
        )?))
    }

    /// `y = x W^T + b` on `rows` rows of `x` (`[rows, in]`).
    pub fn forward(&self, x: &[f32], rows: usize, exec: Exec) -> Result<Vec<f32>> {
        check_matrix(x, rows, self.in_features, "QuantLinear input")?;
        if x.iter().any(|v| !v.is_finite()) {
            return Err(QuantError::NonFinite("QuantLinear input".into()));
        }
        let (inp, out) = (self.in_features, self.out_features);
        let xs: Vec<f32> = match &self.smooth {
            Some(s) => x
                .chunks(inp)
                .flat_map(|r| r.iter().zip(s).map(|(v, sj)| v / sj))
                .collect(),
            None => x.to_vec(),
        };
        let mut y = match exec {
            Exec::Int(backend) if self.act.is_some() && self.packed.is_some() => {
                self.int_product(&xs, rows, backend)?
            }
            Exec::Int(_) => {
                return Err(invalid(
                    "execution",
                    "integer execution needs symmetric integer weights (per row or per group of 64k) and quantized activations",
                ));
            }
            Exec::Fake => {
                let xa = self.fake_activations(&xs, rows)?;
                product(&xa, rows, inp, &self.weight, out)?
            }
        };
        if let Some(lr) = &self.low_rank {
            let t = product(&xs, rows, inp, &lr.a, lr.rank)?;
            let u = product(&t, rows, lr.rank, &lr.b, out)?;
            for (v, d) in y.iter_mut().zip(u) {
                *v += d;
            }
        }
        if let Some(b) = &self.bias {
            for row in y.chunks_mut(out) {
                for (v, bj) in row.iter_mut().zip(b) {
                    *v += bj;
                }
            }
        }
        Ok(y)
    }

    /// The activation scales of this call (`[rows]` or one per tensor, as `Scales`).
    fn act_scales(&self, xs: &[f32], rows: usize) -> Result<Option<Scales>> {
        let Some(a) = &self.act else { return Ok(None) };
        Ok(Some(match a.fixed {
            Some((s, z)) => Scales {
                scheme: a.quantizer.scheme,
                granularity: Granularity::PerTensor,
                rows,
                cols: self.in_features,
                scale: vec![s],
                zero: vec![z],
            },
            None => a.quantizer.fit(xs, rows, self.in_features)?,
        }))
    }

    fn fake_activations(&self, xs: &[f32], rows: usize) -> Result<Vec<f32>> {
        let mut xa = xs.to_vec();
        if let Some(s) = self.act_scales(xs, rows)? {
            s.fake_quantize(&mut xa)?;
        }
        Ok(xa)
    }

    /// Columns per kernel group: the weight quantizer's group, or the whole padded row.
    fn kernel_group(&self, kp: usize) -> usize {
        match self.weight_scales.as_ref().map(|s| s.granularity) {
            Some(Granularity::PerGroup(g)) => g,
            _ => kp,
        }
    }

    /// Per-row `(scale, zero)` of the activations and their codes as bytes (`[rows, kp]`,
    /// symmetric codes shifted by 128), with the shift folded into the zero points.
    fn act_codes(&self, xs: &[f32], rows: usize, kp: usize) -> Result<ActCodes> {
        let a = self.act.as_ref().expect("checked by the caller");
        let Scheme::Int(f) = a.quantizer.scheme else {
            return Err(invalid(
                "execution",
                "integer execution needs integer activations",
            ));
        };
        let inp = self.in_features;
        let params: Vec<(f32, i32)> = match (a.fixed, a.quantizer.granularity, a.quantizer.estimator) {
            (Some(p), _, _) => vec![p; rows],
            // The common dynamic case without the generic block machinery.
            (None, Granularity::PerRow, Estimator::MinMax) => xs
                .chunks(inp)
                .map(|r| {
                    let (lo, hi) = r.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &v| {
                        (l.min(v), h.max(v))
                    });
                    a.quantizer.params_from_range(lo, hi)
                })
                .collect(),
            (None, Granularity::PerGroup(_), _) => {
                return Err(invalid(
                    "execution",
                    "integer execution needs per-tensor or per-token activations",
                ));
            }
            (None, g, _) => {
                let s = a.quantizer.fit(xs, rows, inp)?;
                (0..rows)
                    .map(|i| {
                        if g == Granularity::PerTensor {
                            (s.scale[0], s.zero[0])
                        } else {
                            (s.scale[i], s.zero[i])
                        }
                    })
                    .collect()
            }
        };
        let off = if f.symmetric { 128 } else { 0 };
        let (qmin, qmax) = f.code_range();
        let mut codes = vec![0u8; rows * kp];
        codes
            .par_chunks_mut(kp)
            .zip(xs.par_chunks(inp))
            .zip(&params)
            .for_each(|((dst, src), &(s, z))| {
                // Divides (not multiplies by 1 / s) to get the fake-quant path's codes exactly.
                for (d, &v) in dst.iter_mut().zip(src) {
                    let q = (round_even_small((v / s).clamp(-4_194_304.0, 4_194_304.0)) as i32)
                        .saturating_add(z)
                        .clamp(qmin, qmax);
                    *d = (q + off) as u8;
                }
            });
        Ok((params.into_iter().map(|(s, z)| (s, z + off)).collect(), codes))
    }

    fn int_product(&self, xs: &[f32], rows: usize, backend: Backend) -> Result<Vec<f32>> {
        let w = self.packed.as_ref().expect("checked by the caller");
        let ws = self.weight_scales.as_ref().expect("packed weights have scales");
        let (params, a) = self.act_codes(xs, rows, w.kp)?;
        let out = self.out_features;
        let group = self.kernel_group(w.kp);
        let groups = w.kp / group;
        let dots = kernel::gemm_u8i8(&a, rows, w, group, backend)?;
        let mut y = vec![0f32; rows * out];
        y.par_chunks_mut(out)
            .zip(&params)
            .enumerate()
            .for_each(|(i, (yr, &(s_a, za)))| {
                for (j, yv) in yr.iter_mut().enumerate() {
                    let mut acc = 0f32;
                    for g in 0..groups {
                        let d = dots[(i * out + j) * groups + g] - za * self.code_sums[j * groups + g];
                        let s_w = match ws.granularity {
                            Granularity::PerTensor => ws.scale[0],
                            Granularity::PerRow => ws.scale[j],
                            Granularity::PerGroup(_) => ws.scale[j * groups + g],
                        };
                        acc += d as f32 * s_w;
                    }
                    *yv = acc * s_a;
                }
            });
        Ok(y)
    }

    /// Bytes the layer's weights take in the integer kernel's form (codes, scales,
    /// smoothing and low-rank factors, bias), or in f32 when not quantized.
    pub fn weight_bytes(&self) -> usize {
        let main = match (&self.packed, &self.weight_scales) {
            (Some(p), Some(s)) => p.data.len() + 8 * s.scale.len(),
            (None, Some(s)) => self.weight.len() * s.scheme.bits() as usize / 8 + 8 * s.scale.len(),
            _ => 4 * self.weight.len(),
        };
        main + 4
            * (self.smooth.as_ref().map_or(0, Vec::len)
                + self.low_rank.as_ref().map_or(0, |l| l.a.len() + l.b.len())
                + self.bias.as_ref().map_or(0, Vec::len))
    }
}

/// Codes of `w` under `scales` (minifloat codes as their byte value).
fn weight_codes(scales: &Scales, w: &[f32]) -> Result<Vec<i32>> {
    match scales.scheme {
        Scheme::Int(_) => scales.quantize_int(w),
        Scheme::Float(f) => {
            let (rows, cols) = (scales.rows, scales.cols);
            let mut codes = Vec::with_capacity(w.len());
            let per = |r: usize, c: usize| match scales.granularity {
                Granularity::PerTensor => 0,
                Granularity::PerRow => r,
                Granularity::PerGroup(g) => r * (cols / g) + c / g,
            };
            for r in 0..rows {
                for c in 0..cols {
                    codes.push(f.encode(w[r * cols + c] / scales.scale[per(r, c)])? as i32);
                }
            }
            Ok(codes)
        }
    }
}

/// SmoothQuant's per-input-channel factors `s_j = max|X_j|^alpha / max|W_j|^(1 - alpha)`.
pub fn smooth_factors(x: &[f32], w: &[f32], inp: usize, alpha: f32) -> Result<Vec<f32>> {
    if !(0.0..=1.0).contains(&alpha) {
        return Err(invalid("smoothing alpha", format!("{alpha} outside [0, 1]")));
    }
    if x.is_empty() {
        return Err(QuantError::EmptyCalibration(
            "smoothing needs activation rows".into(),
        ));
    }
    let absmax = |m: &[f32]| {
        let mut a = vec![0f32; inp];
        for row in m.chunks(inp) {
            for (a, v) in a.iter_mut().zip(row) {
                *a = a.max(v.abs());
            }
        }
        a
    };
    let (ax, aw) = (absmax(x), absmax(w));
    Ok(ax
        .iter()
        .zip(&aw)
        .map(|(&a, &b)| {
            if a > 0.0 && b > 0.0 {
                (a.powf(alpha) / b.powf(1.0 - alpha)).clamp(1e-5, 1e5)
            } else {
                1.0
            }
        })
        .collect())
}

/// `x W^T` for `x: [rows, inp]`, `w: [out, inp]` through `diffusion-nn`'s GEMM.
fn product(x: &[f32], rows: usize, inp: usize, w: &[f32], out: usize) -> Result<Vec<f32>> {
    let xv = ArrayView2::from_shape((rows, inp), x).map_err(|e| invalid("product", e.to_string()))?;
    let wv = ArrayView2::from_shape((out, inp), w).map_err(|e| invalid("product", e.to_string()))?;
    let y = diffusion_nn::matmul_view(xv, wv.t())?;
    Ok(y.into_raw_vec_and_offset().0)
}
