//! Backward-pass building blocks on the GPU: bias gradients (column and channel sums), the
//! backward of adaLN-Zero's gated residual ([`crate::layout::gate_add`]), attention's backward
//! (composed of [`gemm_batched`] and [`softmax_bwd`]) and a 2-D convolution's backward. Every reduction sums in f64 in a fixed
//! order, so gradients repeat bit for bit run to run.

use cudarc::driver::PushKernelArg;
use diffusion_core::Tensor;

use crate::device::{driver_err, grid_1d, grid_rows};
use crate::error::{CudaError, Result};
use crate::kernels::GRAD;
use crate::ops::{col2im, expect_len, gemm_batched, gemm_shared_a, im2col, softmax_bwd, to_i32};
use crate::oracle::ConvGeometry;
use crate::tensor::CudaTensor;

type T32 = CudaTensor<f32>;

/// `out[c] = sum_r x[r, c]` for `x: [rows, cols]`: the gradient of a bias added to every row.
pub fn column_sums(x: &T32, rows: usize, cols: usize, out: &mut T32) -> Result<()> {
    expect_len("column_sums x", x, rows * cols)?;
    expect_len("column_sums out", out, cols)?;
    out.check_device(x, "column_sums")?;
    if cols == 0 {
        return Ok(());
    }
    let gpu = x.gpu().clone();
    let f = gpu.function(&GRAD, "column_sums_f32")?;
    let xb = x.readable()?;
    let (r, c) = (to_i32("rows", rows)?, to_i32("cols", cols)?);
    let mut launch = gpu.stream().launch_builder(&f);
    launch.arg(xb.as_ref()).arg(out.writable()?).arg(&r).arg(&c);
    // SAFETY: lengths checked above; one block per column writes only its own sum (zero rows
    // sum to zero).
    unsafe { launch.launch(grid_rows(cols)?) }.map_err(driver_err("column_sums"))?;
    Ok(())
}

/// Backward of [`crate::layout::gate_add`] (`h += gate * f`) for the gated branch, given
/// the gradient `dh` of `h`: writes `df = dh * gate` (`[b, t, d]`) and `dgate = sum_t dh * f`
/// (`[b, d]`).
pub fn gate_add_bwd(
    dh: &T32,
    f: &T32,
    gate: &T32,
    (b, t, d): (usize, usize, usize),
    df: &mut T32,
    dgate: &mut T32,
) -> Result<()> {
    for (x, len) in [(dh, b * t * d), (f, b * t * d), (&*df, b * t * d)] {
        expect_len("gate_add_bwd", x, len)?;
    }
    for (x, len) in [(gate, b * d), (&*dgate, b * d)] {
        expect_len("gate_add_bwd gate", x, len)?;
    }
    for x in [f, gate, &*df, &*dgate] {
        dh.check_device(x, "gate_add_bwd")?;
    }
    if b * d == 0 {
        return Ok(());
    }
    let gpu = dh.gpu().clone();
    let stream = gpu.stream();
    let (dhb, fb, gb) = (dh.readable()?, f.readable()?, gate.readable()?);
    let (bi, ti, di) = (to_i32("b", b)?, to_i32("t", t)?, to_i32("d", d)?);
    if t > 0 {
        let k = gpu.function(&GRAD, "gate_add_bwd_df_f32")?;
        let mut launch = stream.launch_builder(&k);
        launch
            .arg(dhb.as_ref())
            .arg(gb.as_ref())
            .arg(df.writable()?)
            .arg(&bi)
            .arg(&ti)
            .arg(&di);
        // SAFETY: lengths checked above.
        unsafe { launch.launch(grid_1d(b * t * d)) }.map_err(driver_err("gate_add_bwd_df"))?;
    }
    let k = gpu.function(&GRAD, "gate_add_bwd_gate_f32")?;
    let mut launch = stream.launch_builder(&k);
    launch
        .arg(dhb.as_ref())
        .arg(fb.as_ref())
        .arg(dgate.writable()?)
        .arg(&bi)
        .arg(&ti)
        .arg(&di);
    // SAFETY: lengths checked above; one thread per (b, d).
    unsafe { launch.launch(grid_1d(b * d)) }.map_err(driver_err("gate_add_bwd_gate"))?;
    Ok(())
}

/// Backward of scaled dot-product attention ([`crate::ops::attention_with_probs`]) over
/// `[bh, l, d]` tensors, from the output gradient `d_out` (`[bh, lq, d]`), the inputs and the
/// forward's probabilities `probs` (`[bh, lq, lk]`). Writes `dq` (`[bh, lq, d]`), `dk` and
/// `dv` (`[bh, lk, d]`), as `diffusion_nn`'s attention backward computes them:
/// `dV = P^T dO`, `dP = dO V^T`, `dS = scale P (dP - rowsum(dP P))`, `dQ = dS K`, `dK = dS^T Q`.
pub fn attention_bwd(
    d_out: &T32,
    q: &T32,
    k: &T32,
    v: &T32,
    probs: &T32,
    bh: usize,
    (lq, lk, d): (usize, usize, usize),
    dq: &mut T32,
    dk: &mut T32,
    dv: &mut T32,
) -> Result<()> {
    for (x, len) in [(d_out, bh * lq * d), (q, bh * lq * d), (&*dq, bh * lq * d)] {
        expect_len("attention_bwd [bh, lq, d]", x, len)?;
    }
    for (x, len) in [
        (k, bh * lk * d),
        (v, bh * lk * d),
        (&*dk, bh * lk * d),
        (&*dv, bh * lk * d),
    ] {
        expect_len("attention_bwd [bh, lk, d]", x, len)?;
    }
    expect_len("attention_bwd probs", probs, bh * lq * lk)?;
    if d == 0 || lk == 0 {
        return Err(CudaError::InvalidArgument {
            name: "attention_bwd",
            reason: "head dimension and key length must be positive".into(),
        });
    }
    let gpu = q.gpu().clone();
    let scale = 1.0 / (d as f64).sqrt();
    gemm_batched(probs, d_out, bh, (lk, lq, d), true, false, dv)?;
    let mut dp = T32::zeros(&gpu, &[bh, lq, lk]);
    gemm_batched(d_out, v, bh, (lq, d, lk), false, true, &mut dp)?;
    let mut ds = dp.zeros_like();
    softmax_bwd(&dp, probs, lk, scale, &mut ds)?;
    gemm_batched(&ds, k, bh, (lq, lk, d), false, false, dq)?;
    gemm_batched(&ds, q, bh, (lk, lq, d), true, false, dk)
}

/// `out[c] = sum_{n, s} x[n, c, s]` for `x: [n, c, s]`: a convolution's bias gradient; with
/// `n = 1` and `c = batch * channels`, the sum of every channel plane (the gradient of a
/// value added to a whole plane, as a UNet ResBlock's time embedding).
pub fn channel_sums(x: &T32, (n, c, s): (usize, usize, usize), out: &mut T32) -> Result<()> {
    expect_len("channel_sums x", x, n * c * s)?;
    expect_len("channel_sums out", out, c)?;
    out.check_device(x, "channel_sums")?;
    if c == 0 {
        return Ok(());
    }
    let gpu = x.gpu().clone();
    let f = gpu.function(&GRAD, "channel_sums_f32")?;
    let xb = x.readable()?;
    let (ni, ci, s64) = (to_i32("n", n)?, to_i32("c", c)?, s as i64);
    let mut launch = gpu.stream().launch_builder(&f);
    launch
        .arg(xb.as_ref())
        .arg(out.writable()?)
        .arg(&ni)
        .arg(&ci)
        .arg(&s64);
    // SAFETY: lengths checked above; one block per channel writes only its own sum (an empty
    // channel sums to zero).
    unsafe { launch.launch(grid_rows(c)?) }.map_err(driver_err("channel_sums"))?;
    Ok(())
}

/// `out[i] = sum_b x[b, i]` for `x: [batch, len]`, items added in order (per-image weight
/// gradients summed over the batch).
pub fn batch_sums(x: &T32, batch: usize, len: usize, out: &mut T32) -> Result<()> {
    expect_len("batch_sums x", x, batch * len)?;
    expect_len("batch_sums out", out, len)?;
    out.check_device(x, "batch_sums")?;
    if len == 0 {
        return Ok(());
    }
    let gpu = x.gpu().clone();
    let f = gpu.function(&GRAD, "batch_sums_f32")?;
    let xb = x.readable()?;
    let (bi, l64) = (to_i32("batch", batch)?, len as i64);
    let mut launch = gpu.stream().launch_builder(&f);
    launch.arg(xb.as_ref()).arg(out.writable()?).arg(&bi).arg(&l64);
    // SAFETY: lengths checked above; one thread per output element.
    unsafe { launch.launch(grid_1d(len)) }.map_err(driver_err("batch_sums"))?;
    Ok(())
}

/// The gradients of a 2-D convolution ([`conv2d_bwd`]).
#[derive(Debug)]
pub struct ConvGrads {
    /// dL/dx, `[n, c, h, w]`.
    pub dx: T32,
    /// dL/dW, `[cout, c * kh * kw]` (the weight's rows, as the forward multiplies them).
    pub dweight: T32,
    /// dL/db, `[cout]` (the gradient of a bias, whether or not the layer has one).
    pub dbias: T32,
}

/// Whether the convolution's columns are the image itself (1x1, stride 1, no padding).
fn cols_are_image(g: &ConvGeometry) -> bool {
    g.kh == 1 && g.kw == 1 && g.stride == 1 && g.pad == 0
}

/// Backward of the convolution `y_b = W cols_b + bias` (`cols_b` = im2col of image `b`,
/// `W`: `[cout, K]`, `K = c * kh * kw`) for the input `x` (`[n, c, h, w]`) and the output
/// gradient `dy` (`[n, cout, oh, ow]`): `dW = sum_b dy_b cols_b^T` (one batched product
/// into `[n, cout, K]`, then the items summed in order), `dbias` = `dy` summed over the
/// batch and positions, `dx = col2im(W^T dy_b)`.
pub fn conv2d_bwd(x: &T32, weight: &T32, dy: &T32, g: ConvGeometry, cout: usize) -> Result<ConvGrads> {
    let (oh, ow) = g.output_hw()?;
    let (n, kk, l) = (g.n, g.c * g.kh * g.kw, oh * ow);
    expect_len("conv2d_bwd x", x, g.image_len())?;
    expect_len("conv2d_bwd weight", weight, cout * kk)?;
    expect_len("conv2d_bwd dy", dy, n * cout * l)?;
    let gpu = x.gpu().clone();
    let direct = cols_are_image(&g);
    let cols = if direct {
        x.clone()
    } else {
        let mut cols = T32::zeros(&gpu, &[n, kk, l]);
        im2col(x, g, &mut cols)?;
        cols
    };
    let mut per_image = T32::zeros(&gpu, &[n, cout, kk]);
    gemm_batched(dy, &cols, n, (cout, l, kk), false, true, &mut per_image)?;
    let mut dweight = T32::zeros(&gpu, &[cout, kk]);
    batch_sums(&per_image, n, cout * kk, &mut dweight)?;
    let mut dbias = T32::zeros(&gpu, &[cout]);
    channel_sums(dy, (n, cout, l), &mut dbias)?;
    let mut dcols = T32::zeros(&gpu, &[n, kk, l]);
    gemm_shared_a(weight, dy, n, (kk, cout, l), true, false, &mut dcols)?;
    let dx = if direct {
        dcols.reshape(&[g.n, g.c, g.h, g.w])?
    } else {
        let mut dx = T32::zeros(&gpu, &[g.n, g.c, g.h, g.w]);
        col2im(&dcols, g, &mut dx)?;
        dx
    };
    Ok(ConvGrads { dx, dweight, dbias })
}
