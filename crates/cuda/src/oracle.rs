//! f64 CPU reference implementations of every GPU kernel: the oracles of the GPU tests.
//!
//! Plain loops written for clarity, not speed. Layouts are row-major and match the kernels
//! (documented per function). Each is checked in this module's tests against closed forms and
//! central finite differences, so the GPU tests compare against something independently verified.

use crate::error::{CudaError, Result};

mod unet_ops;

pub use unet_ops::{
    batch_sums, channel_sums, concat_channels, conv2d, conv2d_bwd, split_channels, upsample2, upsample2_bwd,
};

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// SiLU, `x * sigmoid(x)`.
pub fn silu(x: &[f64]) -> Vec<f64> {
    x.iter().map(|&v| v * sigmoid(v)).collect()
}

/// d silu / dx times `dy`.
pub fn silu_bwd(dy: &[f64], x: &[f64]) -> Vec<f64> {
    dy.iter()
        .zip(x)
        .map(|(&g, &v)| {
            let s = sigmoid(v);
            g * s * (1.0 + v * (1.0 - s))
        })
        .collect()
}

const GELU_K: f64 = 0.797_884_560_802_865_4; // sqrt(2 / pi)
const GELU_C: f64 = 0.044715;

/// GELU, tanh approximation: `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`.
pub fn gelu_tanh(x: &[f64]) -> Vec<f64> {
    x.iter()
        .map(|&v| 0.5 * v * (1.0 + (GELU_K * (v + GELU_C * v * v * v)).tanh()))
        .collect()
}

/// d gelu_tanh / dx times `dy`.
pub fn gelu_tanh_bwd(dy: &[f64], x: &[f64]) -> Vec<f64> {
    dy.iter()
        .zip(x)
        .map(|(&g, &v)| {
            let t = (GELU_K * (v + GELU_C * v * v * v)).tanh();
            let du = GELU_K * (1.0 + 3.0 * GELU_C * v * v);
            g * (0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * du)
        })
        .collect()
}

/// Shape of a GroupNorm input `[n, c, s]` (`s` = product of spatial dims) split in `groups`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupNormShape {
    pub n: usize,
    pub c: usize,
    pub s: usize,
    pub groups: usize,
}

impl GroupNormShape {
    /// Checks that `groups` divides `c` and nothing is empty.
    pub fn validate(&self) -> Result<()> {
        if self.groups == 0 || !self.c.is_multiple_of(self.groups) {
            return Err(CudaError::InvalidArgument {
                name: "groups",
                reason: format!("{} groups do not divide {} channels", self.groups, self.c),
            });
        }
        if self.n == 0 || self.s == 0 {
            return Err(CudaError::InvalidArgument {
                name: "shape",
                reason: format!("empty group norm input {self:?}"),
            });
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.n * self.c * self.s
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn channels_per_group(&self) -> usize {
        self.c / self.groups
    }
}

/// Output of a normalisation forward pass: `y`, and per group (or row) `mean` and `rstd`.
#[derive(Debug, Clone, PartialEq)]
pub struct NormForward {
    pub y: Vec<f64>,
    pub mean: Vec<f64>,
    pub rstd: Vec<f64>,
}

/// Gradients of a normalisation: input, scale, shift.
#[derive(Debug, Clone, PartialEq)]
pub struct NormBackward {
    pub dx: Vec<f64>,
    pub dgamma: Vec<f64>,
    pub dbeta: Vec<f64>,
}

/// GroupNorm forward; `gamma`/`beta` are per channel (`None` = identity).
pub fn group_norm(
    x: &[f64],
    shape: GroupNormShape,
    gamma: Option<&[f64]>,
    beta: Option<&[f64]>,
    eps: f64,
) -> NormForward {
    let GroupNormShape { n, c, s, groups } = shape;
    let cpg = shape.channels_per_group();
    let count = (cpg * s) as f64;
    let mut y = vec![0.0; x.len()];
    let (mut means, mut rstds) = (Vec::new(), Vec::new());
    for b in 0..n {
        for g in 0..groups {
            let range = (b * c + g * cpg) * s..(b * c + (g + 1) * cpg) * s;
            let xs = &x[range.clone()];
            let mean = xs.iter().sum::<f64>() / count;
            let var = xs.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / count;
            let rstd = 1.0 / (var + eps).sqrt();
            for (i, idx) in range.enumerate() {
                let ch = g * cpg + i / s;
                let mut v = (x[idx] - mean) * rstd;
                if let Some(gm) = gamma {
                    v *= gm[ch];
                }
                if let Some(bt) = beta {
                    v += bt[ch];
                }
                y[idx] = v;
            }
            means.push(mean);
            rstds.push(rstd);
        }
    }
    NormForward {
        y,
        mean: means,
        rstd: rstds,
    }
}

/// GroupNorm backward (recomputes the statistics from `x`).
pub fn group_norm_bwd(
    dy: &[f64],
    x: &[f64],
    shape: GroupNormShape,
    gamma: Option<&[f64]>,
    eps: f64,
) -> NormBackward {
    let GroupNormShape { n, c, s, groups } = shape;
    let cpg = shape.channels_per_group();
    let count = (cpg * s) as f64;
    let fwd = group_norm(x, shape, None, None, eps);
    let xhat = &fwd.y;
    let mut dx = vec![0.0; x.len()];
    let (mut dgamma, mut dbeta) = (vec![0.0; c], vec![0.0; c]);
    for b in 0..n {
        for g in 0..groups {
            let rstd = fwd.rstd[b * groups + g];
            let range = (b * c + g * cpg) * s..(b * c + (g + 1) * cpg) * s;
            let scale = |idx: usize| gamma.map_or(1.0, |gm| gm[(idx / s) % c]);
            let mg = range.clone().map(|i| dy[i] * scale(i)).sum::<f64>() / count;
            let mgx = range.clone().map(|i| dy[i] * scale(i) * xhat[i]).sum::<f64>() / count;
            for i in range {
                dx[i] = rstd * (dy[i] * scale(i) - mg - xhat[i] * mgx);
                let ch = (i / s) % c;
                dgamma[ch] += dy[i] * xhat[i];
                dbeta[ch] += dy[i];
            }
        }
    }
    NormBackward { dx, dgamma, dbeta }
}

/// LayerNorm over the last axis of `[rows, dim]`; `gamma`/`beta` are per column.
pub fn layer_norm(
    x: &[f64],
    rows: usize,
    dim: usize,
    gamma: Option<&[f64]>,
    beta: Option<&[f64]>,
    eps: f64,
) -> NormForward {
    // A LayerNorm row is a GroupNorm with one group over `dim` channels of one element each.
    group_norm(
        x,
        GroupNormShape {
            n: rows,
            c: dim,
            s: 1,
            groups: 1,
        },
        gamma,
        beta,
        eps,
    )
}

/// LayerNorm backward.
pub fn layer_norm_bwd(
    dy: &[f64],
    x: &[f64],
    rows: usize,
    dim: usize,
    gamma: Option<&[f64]>,
    eps: f64,
) -> NormBackward {
    group_norm_bwd(
        dy,
        x,
        GroupNormShape {
            n: rows,
            c: dim,
            s: 1,
            groups: 1,
        },
        gamma,
        eps,
    )
}

/// Softmax of `scale * x` along each row of `[rows, cols]`.
pub fn softmax(x: &[f64], cols: usize, scale: f64) -> Vec<f64> {
    let mut y = vec![0.0; x.len()];
    for (xr, yr) in x.chunks(cols).zip(y.chunks_mut(cols)) {
        let m = xr.iter().map(|v| scale * v).fold(f64::NEG_INFINITY, f64::max);
        let total: f64 = xr.iter().map(|v| (scale * v - m).exp()).sum();
        for (o, v) in yr.iter_mut().zip(xr) {
            *o = (scale * v - m).exp() / total;
        }
    }
    y
}

/// Softmax backward given the forward output `y`.
pub fn softmax_bwd(dy: &[f64], y: &[f64], cols: usize, scale: f64) -> Vec<f64> {
    let mut dx = vec![0.0; y.len()];
    for ((g, yr), o) in dy.chunks(cols).zip(y.chunks(cols)).zip(dx.chunks_mut(cols)) {
        let dot: f64 = g.iter().zip(yr).map(|(a, b)| a * b).sum();
        for ((o, gi), yi) in o.iter_mut().zip(g).zip(yr) {
            *o = scale * yi * (gi - dot);
        }
    }
    dx
}

/// Batched row-major matrix product: `c[b] = op(a[b]) op(b[b])`, `op(a)` is `[m, k]`,
/// `op(b)` is `[k, n]`; with `trans_a` `a[b]` is stored `[k, m]`, with `trans_b` `b[b]` is `[n, k]`.
pub fn gemm_batched(
    a: &[f64],
    b: &[f64],
    batch: usize,
    (m, k, n): (usize, usize, usize),
    trans_a: bool,
    trans_b: bool,
) -> Vec<f64> {
    let mut c = vec![0.0; batch * m * n];
    for p in 0..batch {
        let (a, b) = (&a[p * m * k..(p + 1) * m * k], &b[p * k * n..(p + 1) * k * n]);
        for i in 0..m {
            for j in 0..n {
                let mut acc = 0.0;
                for l in 0..k {
                    let av = if trans_a { a[l * m + i] } else { a[i * k + l] };
                    let bv = if trans_b { b[j * k + l] } else { b[l * n + j] };
                    acc += av * bv;
                }
                c[p * m * n + i * n + j] = acc;
            }
        }
    }
    c
}

/// Scaled dot-product attention: `q` is `[bh, lq, d]`, `k` and `v` are `[bh, lk, d]`
/// (`bh` = batch x heads); returns `softmax(q k^T / sqrt(d)) v`, `[bh, lq, d]`.
pub fn attention(q: &[f64], k: &[f64], v: &[f64], bh: usize, lq: usize, lk: usize, d: usize) -> Vec<f64> {
    let scores = gemm_batched(q, k, bh, (lq, d, lk), false, true);
    let p = softmax(&scores, lk, 1.0 / (d as f64).sqrt());
    gemm_batched(&p, v, bh, (lq, lk, d), false, false)
}

/// Gradients of [`attention`] for the output gradient `d_out` (`[bh, lq, d]`):
/// `(dq, dk, dv)`, from `P = softmax(q k^T / sqrt(d))`: `dV = P^T dO`, `dP = dO V^T`,
/// `dS = softmax_bwd(dP)` (the scale included), `dQ = dS K`, `dK = dS^T Q`.
pub fn attention_bwd(
    d_out: &[f64],
    q: &[f64],
    k: &[f64],
    v: &[f64],
    bh: usize,
    lq: usize,
    lk: usize,
    d: usize,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let scale = 1.0 / (d as f64).sqrt();
    let p = softmax(&gemm_batched(q, k, bh, (lq, d, lk), false, true), lk, scale);
    let dv = gemm_batched(&p, d_out, bh, (lk, lq, d), true, false);
    let dp = gemm_batched(d_out, v, bh, (lq, d, lk), false, true);
    let ds = softmax_bwd(&dp, &p, lk, scale);
    let dq = gemm_batched(&ds, k, bh, (lq, lk, d), false, false);
    let dk = gemm_batched(&ds, q, bh, (lk, lq, d), true, false);
    (dq, dk, dv)
}

/// adaLN-Zero's gated residual `h + gate * f` (`h`, `f`: `[b, l, d]`, `gate`: `[b, d]`).
pub fn gate_add(h: &[f64], f: &[f64], gate: &[f64], b: usize, l: usize, d: usize) -> Vec<f64> {
    (0..b * l * d)
        .map(|i| h[i] + gate[(i / (l * d)) * d + i % d] * f[i])
        .collect()
}

/// Gradients of [`gate_add`] for the gated branch: `(df, dgate)`.
pub fn gate_add_bwd(
    dh: &[f64],
    f: &[f64],
    gate: &[f64],
    b: usize,
    l: usize,
    d: usize,
) -> (Vec<f64>, Vec<f64>) {
    let mut df = vec![0.0; b * l * d];
    let mut dgate = vec![0.0; b * d];
    for i in 0..b * l * d {
        let p = (i / (l * d)) * d + i % d;
        df[i] = dh[i] * gate[p];
        dgate[p] += dh[i] * f[i];
    }
    (df, dgate)
}

/// Geometry of a 2-D convolution on NCHW images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeometry {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: usize,
    pub pad: usize,
    pub dilation: usize,
}

impl ConvGeometry {
    /// Output height and width; an error when the kernel does not fit the padded image.
    pub fn output_hw(&self) -> Result<(usize, usize)> {
        let bad = |reason: String| CudaError::InvalidArgument {
            name: "conv geometry",
            reason,
        };
        if self.stride == 0 || self.dilation == 0 || self.kh == 0 || self.kw == 0 {
            return Err(bad(format!(
                "stride, dilation and kernel size must be positive: {self:?}"
            )));
        }
        let span_h = self.dilation * (self.kh - 1) + 1;
        let span_w = self.dilation * (self.kw - 1) + 1;
        if self.h + 2 * self.pad < span_h || self.w + 2 * self.pad < span_w {
            return Err(bad(format!("kernel larger than the padded image: {self:?}")));
        }
        Ok((
            (self.h + 2 * self.pad - span_h) / self.stride + 1,
            (self.w + 2 * self.pad - span_w) / self.stride + 1,
        ))
    }

    /// Elements of the image `[n, c, h, w]`.
    pub fn image_len(&self) -> usize {
        self.n * self.c * self.h * self.w
    }

    /// Elements of the column matrix `[n, c*kh*kw, oh*ow]`.
    pub fn cols_len(&self) -> Result<usize> {
        let (oh, ow) = self.output_hw()?;
        Ok(self.n * self.c * self.kh * self.kw * oh * ow)
    }
}

/// im2col: `[n, c, h, w]` to `[n, c*kh*kw, oh*ow]` (zero padding).
pub fn im2col(x: &[f64], g: ConvGeometry) -> Result<Vec<f64>> {
    let (oh, ow) = g.output_hw()?;
    let mut cols = Vec::with_capacity(g.cols_len()?);
    for n in 0..g.n {
        for c in 0..g.c {
            for ky in 0..g.kh {
                for kx in 0..g.kw {
                    for oy in 0..oh {
                        for ox in 0..ow {
                            let iy = (oy * g.stride + ky * g.dilation) as isize - g.pad as isize;
                            let ix = (ox * g.stride + kx * g.dilation) as isize - g.pad as isize;
                            let inside = iy >= 0 && ix >= 0 && (iy as usize) < g.h && (ix as usize) < g.w;
                            cols.push(if inside {
                                x[((n * g.c + c) * g.h + iy as usize) * g.w + ix as usize]
                            } else {
                                0.0
                            });
                        }
                    }
                }
            }
        }
    }
    Ok(cols)
}

/// col2im, the adjoint of [`im2col`]: every column entry is added back into its pixel.
pub fn col2im(cols: &[f64], g: ConvGeometry) -> Result<Vec<f64>> {
    let (oh, ow) = g.output_hw()?;
    let mut x = vec![0.0; g.image_len()];
    let mut idx = 0;
    for n in 0..g.n {
        for c in 0..g.c {
            for ky in 0..g.kh {
                for kx in 0..g.kw {
                    for oy in 0..oh {
                        for ox in 0..ow {
                            let iy = (oy * g.stride + ky * g.dilation) as isize - g.pad as isize;
                            let ix = (ox * g.stride + kx * g.dilation) as isize - g.pad as isize;
                            if iy >= 0 && ix >= 0 && (iy as usize) < g.h && (ix as usize) < g.w {
                                x[((n * g.c + c) * g.h + iy as usize) * g.w + ix as usize] += cols[idx];
                            }
                            idx += 1;
                        }
                    }
                }
            }
        }
    }
    Ok(x)
}

/// adaLN modulation: `x` `[b, l, d]`, `shift`/`scale` `[b, d]`; `y = x (1 + scale) + shift`.
pub fn adaln_modulate(x: &[f64], shift: &[f64], scale: &[f64], b: usize, l: usize, d: usize) -> Vec<f64> {
    let mut y = vec![0.0; b * l * d];
    for i in 0..b * l * d {
        let p = (i / (l * d)) * d + i % d;
        y[i] = x[i] * (1.0 + scale[p]) + shift[p];
    }
    y
}

/// Gradients of [`adaln_modulate`]: `(dx, dshift, dscale)`.
pub fn adaln_modulate_bwd(
    dy: &[f64],
    x: &[f64],
    scale: &[f64],
    b: usize,
    l: usize,
    d: usize,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let mut dx = vec![0.0; b * l * d];
    let (mut dshift, mut dscale) = (vec![0.0; b * d], vec![0.0; b * d]);
    for i in 0..b * l * d {
        let p = (i / (l * d)) * d + i % d;
        dx[i] = dy[i] * (1.0 + scale[p]);
        dshift[p] += dy[i];
        dscale[p] += dy[i] * x[i];
    }
    (dx, dshift, dscale)
}

#[cfg(test)]
mod tests;
