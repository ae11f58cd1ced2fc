//! Backward-pass building blocks on the GPU: bias gradients (column sums), the backward of
//! adaLN-Zero's gated residual ([`crate::layout::gate_add`]) and attention's backward,
//! composed of [`gemm_batched`] and [`softmax_bwd`]. Every reduction sums in f64 in a fixed
//! order, so gradients repeat bit for bit run to run.

use cudarc::driver::PushKernelArg;
use diffusion_core::Tensor;

use crate::device::{driver_err, grid_1d, grid_rows};
use crate::error::{CudaError, Result};
use crate::kernels::GRAD;
use crate::ops::{expect_len, gemm_batched, softmax_bwd, to_i32};
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
