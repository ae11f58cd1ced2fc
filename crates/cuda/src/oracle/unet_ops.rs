//! References of the pieces a UNet's backward pass adds: a 2-D convolution and its
//! gradients, upsampling, the channel concatenation of long skips, and the reductions.

use super::{ConvGeometry, col2im, gemm_batched, im2col};
use crate::error::Result;

/// `out[c] = sum_{n, s} x[n, c, s]`.
pub fn channel_sums(x: &[f64], n: usize, c: usize, s: usize) -> Vec<f64> {
    (0..c)
        .map(|ch| {
            (0..n)
                .flat_map(|b| &x[(b * c + ch) * s..(b * c + ch + 1) * s])
                .sum()
        })
        .collect()
}

/// `out[i] = sum_b x[b, i]` for `x: [batch, len]`.
pub fn batch_sums(x: &[f64], batch: usize, len: usize) -> Vec<f64> {
    (0..len)
        .map(|i| (0..batch).map(|b| x[b * len + i]).sum())
        .collect()
}

/// A 2-D convolution: `x` `[n, c, h, w]`, `weight` `[cout, c*kh*kw]`, `bias` `[cout]`;
/// returns `[n, cout, oh, ow]`.
pub fn conv2d(x: &[f64], weight: &[f64], bias: &[f64], g: ConvGeometry, cout: usize) -> Result<Vec<f64>> {
    let (oh, ow) = g.output_hw()?;
    let (kk, l) = (g.c * g.kh * g.kw, oh * ow);
    let cols = im2col(x, g)?;
    let mut y = Vec::with_capacity(g.n * cout * l);
    for b in 0..g.n {
        let yb = gemm_batched(weight, &cols[b * kk * l..], 1, (cout, kk, l), false, false);
        y.extend(yb.iter().enumerate().map(|(i, v)| v + bias[i / l]));
    }
    Ok(y)
}

/// Gradients of [`conv2d`] for the output gradient `dy`: `(dx, dweight, dbias)`.
pub fn conv2d_bwd(
    x: &[f64],
    weight: &[f64],
    dy: &[f64],
    g: ConvGeometry,
    cout: usize,
) -> Result<(Vec<f64>, Vec<f64>, Vec<f64>)> {
    let (oh, ow) = g.output_hw()?;
    let (kk, l) = (g.c * g.kh * g.kw, oh * ow);
    let cols = im2col(x, g)?;
    let per_image = gemm_batched(dy, &cols, g.n, (cout, l, kk), false, true);
    let dweight = batch_sums(&per_image, g.n, cout * kk);
    let dbias = channel_sums(dy, g.n, cout, l);
    let mut dcols = Vec::with_capacity(g.n * kk * l);
    for b in 0..g.n {
        dcols.extend(gemm_batched(
            weight,
            &dy[b * cout * l..],
            1,
            (kk, cout, l),
            true,
            false,
        ));
    }
    Ok((col2im(&dcols, g)?, dweight, dbias))
}

/// Nearest-neighbour x2 upsampling of `[planes, h, w]` to `[planes, 2h, 2w]`.
pub fn upsample2(x: &[f64], planes: usize, h: usize, w: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(planes * 4 * h * w);
    for p in 0..planes {
        for oy in 0..2 * h {
            out.extend((0..2 * w).map(|ox| x[(p * h + oy / 2) * w + ox / 2]));
        }
    }
    out
}

/// The adjoint of [`upsample2`]: each pixel the sum of its 2x2 block.
pub fn upsample2_bwd(dout: &[f64], planes: usize, h: usize, w: usize) -> Vec<f64> {
    let mut dx = vec![0.0; planes * h * w];
    for p in 0..planes {
        for oy in 0..2 * h {
            for ox in 0..2 * w {
                dx[(p * h + oy / 2) * w + ox / 2] += dout[(p * 2 * h + oy) * 2 * w + ox];
            }
        }
    }
    dx
}

/// `[n, ca, s]` and `[n, cb, s]` to `[n, ca + cb, s]`, the second times `scale`.
pub fn concat_channels(
    a: &[f64],
    b: &[f64],
    n: usize,
    ca: usize,
    cb: usize,
    s: usize,
    scale: f64,
) -> Vec<f64> {
    let mut out = Vec::with_capacity(n * (ca + cb) * s);
    for i in 0..n {
        out.extend_from_slice(&a[i * ca * s..(i + 1) * ca * s]);
        out.extend(b[i * cb * s..(i + 1) * cb * s].iter().map(|v| v * scale));
    }
    out
}

/// The adjoint of [`concat_channels`]: `(da, db)`, `db` times `scale`.
pub fn split_channels(
    cat: &[f64],
    n: usize,
    ca: usize,
    cb: usize,
    s: usize,
    scale: f64,
) -> (Vec<f64>, Vec<f64>) {
    let (mut a, mut b) = (Vec::with_capacity(n * ca * s), Vec::with_capacity(n * cb * s));
    for row in cat.chunks_exact(((ca + cb) * s).max(1)) {
        a.extend_from_slice(&row[..ca * s]);
        b.extend(row[ca * s..].iter().map(|v| v * scale));
    }
    (a, b)
}
