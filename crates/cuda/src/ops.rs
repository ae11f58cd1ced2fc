//! Network layers on the GPU (f32 storage, f64 arithmetic inside the kernels).
//!
//! Every op writes into caller-provided outputs (so buffers can be reused, and tests can
//! poison them first); shapes are given explicitly and checked against element counts.
//! The f64 oracles with the same layouts are in [`crate::oracle`].

use std::sync::Arc;

use cudarc::cublas::sys::cublasOperation_t;
use cudarc::cublas::{Gemm, GemmConfig, StridedBatchedConfig};
use cudarc::driver::{CudaSlice, DevicePtr, LaunchConfig, PushKernelArg, SyncOnDrop};
use diffusion_core::Tensor;

use crate::device::{driver_err, grid_1d, grid_rows};
use crate::error::{CudaError, Result};
use crate::kernels::{ACTIVATIONS, ADALN, IM2COL, KernelFile, NORM, SOFTMAX};
use crate::oracle::{ConvGeometry, GroupNormShape};
use crate::tensor::CudaTensor;

type T32 = CudaTensor<f32>;

pub(crate) fn expect_len(context: &'static str, t: &T32, len: usize) -> Result<()> {
    if t.len() == len {
        Ok(())
    } else {
        Err(CudaError::ShapeMismatch {
            context,
            expected: vec![len],
            got: t.shape().to_vec(),
        })
    }
}

pub(crate) fn to_i32(name: &'static str, v: usize) -> Result<i32> {
    i32::try_from(v).map_err(|_| CudaError::InvalidArgument {
        name,
        reason: format!("{v} exceeds the kernels' 32-bit index range"),
    })
}

/// Device pointer of an optional parameter tensor (null when absent).
fn opt_ptr<'a>(
    t: Option<&'a Arc<CudaSlice<f32>>>,
    stream: &'a cudarc::driver::CudaStream,
) -> (u64, Option<SyncOnDrop<'a>>) {
    match t {
        Some(b) => {
            let (p, g) = b.device_ptr(stream);
            (p, Some(g))
        }
        None => (0, None),
    }
}

fn readable_opt(t: Option<&T32>) -> Result<Option<Arc<CudaSlice<f32>>>> {
    t.map(|t| t.readable()).transpose()
}

/// `dst = f(src)` elementwise, or `dst = f'(x) dy` for the backward kernels.
fn elementwise(file: &KernelFile, kernel: &str, inputs: &[&T32], out: &mut T32) -> Result<()> {
    let len = out.len();
    for t in inputs {
        expect_len(kernel_context(kernel), t, len)?;
        out.check_device(t, "elementwise")?;
    }
    if len == 0 {
        return Ok(());
    }
    let gpu = out.gpu().clone();
    let f = gpu.function(file, kernel)?;
    let bufs = inputs.iter().map(|t| t.readable()).collect::<Result<Vec<_>>>()?;
    let dst = out.writable()?;
    let n = len as u64;
    let mut launch = gpu.stream().launch_builder(&f);
    for b in &bufs {
        launch.arg(b.as_ref());
    }
    launch.arg(dst).arg(&n);
    // SAFETY: each buffer holds `n` f32 (checked above) and the kernel touches indices < n.
    unsafe { launch.launch(grid_1d(len)) }.map_err(driver_err("elementwise"))?;
    Ok(())
}

fn kernel_context(kernel: &str) -> &'static str {
    match kernel {
        "silu_fwd_f32" | "silu_bwd_f32" => "silu",
        _ => "gelu_tanh",
    }
}

/// `out = silu(x)`.
pub fn silu(x: &T32, out: &mut T32) -> Result<()> {
    elementwise(&ACTIVATIONS, "silu_fwd_f32", &[x], out)
}

/// `dx = silu'(x) dy`.
pub fn silu_bwd(dy: &T32, x: &T32, dx: &mut T32) -> Result<()> {
    elementwise(&ACTIVATIONS, "silu_bwd_f32", &[dy, x], dx)
}

/// `out = gelu_tanh(x)`.
pub fn gelu_tanh(x: &T32, out: &mut T32) -> Result<()> {
    elementwise(&ACTIVATIONS, "gelu_tanh_fwd_f32", &[x], out)
}

/// `dx = gelu_tanh'(x) dy`.
pub fn gelu_tanh_bwd(dy: &T32, x: &T32, dx: &mut T32) -> Result<()> {
    elementwise(&ACTIVATIONS, "gelu_tanh_bwd_f32", &[dy, x], dx)
}

/// Saved statistics of a normalisation forward pass (f32, one per group or row).
#[derive(Debug, Clone)]
pub struct NormStats {
    pub mean: T32,
    pub rstd: T32,
}

fn check_eps(eps: f64) -> Result<()> {
    if eps.is_finite() && eps > 0.0 {
        Ok(())
    } else {
        Err(CudaError::InvalidArgument {
            name: "eps",
            reason: format!("must be positive and finite, got {eps}"),
        })
    }
}

/// GroupNorm forward on `[n, c, s]`; writes `y` and returns the saved statistics (`[n*groups]`).
pub fn group_norm(
    x: &T32,
    shape: GroupNormShape,
    gamma: Option<&T32>,
    beta: Option<&T32>,
    eps: f64,
    y: &mut T32,
) -> Result<NormStats> {
    shape.validate()?;
    check_eps(eps)?;
    expect_len("group_norm x", x, shape.len())?;
    expect_len("group_norm y", y, shape.len())?;
    for p in [gamma, beta].into_iter().flatten() {
        expect_len("group_norm gamma/beta", p, shape.c)?;
    }
    let gpu = x.gpu().clone();
    let groups = shape.n * shape.groups;
    let mut stats = NormStats {
        mean: T32::zeros(&gpu, &[groups]),
        rstd: T32::zeros(&gpu, &[groups]),
    };
    let f = gpu.function(&NORM, "group_norm_fwd_f32")?;
    let (xb, gb, bb) = (x.readable()?, readable_opt(gamma)?, readable_opt(beta)?);
    let stream = gpu.stream();
    let (gp, _g1) = opt_ptr(gb.as_ref(), stream);
    let (bp, _g2) = opt_ptr(bb.as_ref(), stream);
    let (c, s, g) = (
        to_i32("c", shape.c)?,
        to_i32("s", shape.s)?,
        to_i32("groups", shape.groups)?,
    );
    let cfg = grid_rows(groups)?;
    let (mean, rstd) = (stats.mean.writable()?, stats.rstd.writable()?);
    let mut launch = stream.launch_builder(&f);
    launch
        .arg(xb.as_ref())
        .arg(&gp)
        .arg(&bp)
        .arg(y.writable()?)
        .arg(mean)
        .arg(rstd)
        .arg(&c)
        .arg(&s)
        .arg(&g)
        .arg(&eps);
    // SAFETY: lengths checked above; one block per (n, group) reads and writes only its group.
    unsafe { launch.launch(cfg) }.map_err(driver_err("group_norm"))?;
    Ok(stats)
}

/// GroupNorm backward: writes `dx`, `dgamma` and `dbeta` (`[c]`).
pub fn group_norm_bwd(
    dy: &T32,
    x: &T32,
    shape: GroupNormShape,
    gamma: Option<&T32>,
    stats: &NormStats,
    dx: &mut T32,
    dgamma: &mut T32,
    dbeta: &mut T32,
) -> Result<()> {
    shape.validate()?;
    for (t, len) in [(dy, shape.len()), (x, shape.len()), (&*dx, shape.len())] {
        expect_len("group_norm_bwd", t, len)?;
    }
    for (t, len) in [(&*dgamma, shape.c), (&*dbeta, shape.c)] {
        expect_len("group_norm_bwd params", t, len)?;
    }
    if let Some(g) = gamma {
        expect_len("group_norm_bwd gamma", g, shape.c)?;
    }
    let groups = shape.n * shape.groups;
    expect_len("group_norm_bwd mean", &stats.mean, groups)?;
    expect_len("group_norm_bwd rstd", &stats.rstd, groups)?;
    let gpu = x.gpu().clone();
    let stream = gpu.stream();
    let (dyb, xb, gb) = (dy.readable()?, x.readable()?, readable_opt(gamma)?);
    let (mb, rb) = (stats.mean.readable()?, stats.rstd.readable()?);
    let (gp, _g) = opt_ptr(gb.as_ref(), stream);
    let (n, c, s, g) = (
        to_i32("n", shape.n)?,
        to_i32("c", shape.c)?,
        to_i32("s", shape.s)?,
        to_i32("groups", shape.groups)?,
    );
    let f = gpu.function(&NORM, "group_norm_bwd_dx_f32")?;
    let mut launch = stream.launch_builder(&f);
    launch
        .arg(dyb.as_ref())
        .arg(xb.as_ref())
        .arg(&gp)
        .arg(mb.as_ref())
        .arg(rb.as_ref())
        .arg(dx.writable()?)
        .arg(&c)
        .arg(&s)
        .arg(&g);
    // SAFETY: lengths checked above.
    unsafe { launch.launch(grid_rows(groups)?) }.map_err(driver_err("group_norm_bwd_dx"))?;
    let f = gpu.function(&NORM, "group_norm_bwd_params_f32")?;
    let mut launch = stream.launch_builder(&f);
    launch
        .arg(dyb.as_ref())
        .arg(xb.as_ref())
        .arg(mb.as_ref())
        .arg(rb.as_ref())
        .arg(dgamma.writable()?)
        .arg(dbeta.writable()?)
        .arg(&n)
        .arg(&c)
        .arg(&s)
        .arg(&g);
    // SAFETY: lengths checked above; one block per channel.
    unsafe { launch.launch(grid_rows(shape.c)?) }.map_err(driver_err("group_norm_bwd_params"))?;
    Ok(())
}

/// LayerNorm forward over the last axis of `[rows, dim]`; returns the saved statistics (`[rows]`).
pub fn layer_norm(
    x: &T32,
    rows: usize,
    dim: usize,
    gamma: Option<&T32>,
    beta: Option<&T32>,
    eps: f64,
    y: &mut T32,
) -> Result<NormStats> {
    check_eps(eps)?;
    expect_len("layer_norm x", x, rows * dim)?;
    expect_len("layer_norm y", y, rows * dim)?;
    for p in [gamma, beta].into_iter().flatten() {
        expect_len("layer_norm gamma/beta", p, dim)?;
    }
    let gpu = x.gpu().clone();
    let mut stats = NormStats {
        mean: T32::zeros(&gpu, &[rows]),
        rstd: T32::zeros(&gpu, &[rows]),
    };
    if rows == 0 || dim == 0 {
        return Ok(stats);
    }
    let f = gpu.function(&NORM, "layer_norm_fwd_f32")?;
    let (xb, gb, bb) = (x.readable()?, readable_opt(gamma)?, readable_opt(beta)?);
    let stream = gpu.stream();
    let (gp, _g1) = opt_ptr(gb.as_ref(), stream);
    let (bp, _g2) = opt_ptr(bb.as_ref(), stream);
    let d = to_i32("dim", dim)?;
    let (mean, rstd) = (stats.mean.writable()?, stats.rstd.writable()?);
    let mut launch = stream.launch_builder(&f);
    launch
        .arg(xb.as_ref())
        .arg(&gp)
        .arg(&bp)
        .arg(y.writable()?)
        .arg(mean)
        .arg(rstd)
        .arg(&d)
        .arg(&eps);
    // SAFETY: lengths checked above; one block per row.
    unsafe { launch.launch(grid_rows(rows)?) }.map_err(driver_err("layer_norm"))?;
    Ok(stats)
}

/// LayerNorm backward: writes `dx`, `dgamma` and `dbeta` (`[dim]`).
pub fn layer_norm_bwd(
    dy: &T32,
    x: &T32,
    rows: usize,
    dim: usize,
    gamma: Option<&T32>,
    stats: &NormStats,
    dx: &mut T32,
    dparams: Option<(&mut T32, &mut T32)>,
) -> Result<()> {
    for (t, len) in [(dy, rows * dim), (x, rows * dim), (&*dx, rows * dim)] {
        expect_len("layer_norm_bwd", t, len)?;
    }
    if let Some((dgamma, dbeta)) = &dparams {
        for (t, len) in [(&**dgamma, dim), (&**dbeta, dim)] {
            expect_len("layer_norm_bwd params", t, len)?;
        }
    }
    if let Some(g) = gamma {
        expect_len("layer_norm_bwd gamma", g, dim)?;
    }
    expect_len("layer_norm_bwd mean", &stats.mean, rows)?;
    expect_len("layer_norm_bwd rstd", &stats.rstd, rows)?;
    if rows == 0 || dim == 0 {
        return Ok(());
    }
    let gpu = x.gpu().clone();
    let stream = gpu.stream();
    let (dyb, xb, gb) = (dy.readable()?, x.readable()?, readable_opt(gamma)?);
    let (mb, rb) = (stats.mean.readable()?, stats.rstd.readable()?);
    let (gp, _g) = opt_ptr(gb.as_ref(), stream);
    let (m, d) = (to_i32("rows", rows)?, to_i32("dim", dim)?);
    let f = gpu.function(&NORM, "layer_norm_bwd_dx_f32")?;
    let mut launch = stream.launch_builder(&f);
    launch
        .arg(dyb.as_ref())
        .arg(xb.as_ref())
        .arg(&gp)
        .arg(mb.as_ref())
        .arg(rb.as_ref())
        .arg(dx.writable()?)
        .arg(&d);
    // SAFETY: lengths checked above.
    unsafe { launch.launch(grid_rows(rows)?) }.map_err(driver_err("layer_norm_bwd_dx"))?;
    // The affine gradients are column sums over every row, one thread a column: skipped when
    // not asked for (a norm without affine parameters, as in DiT), where they would cost more
    // than the rest of the backward.
    let Some((dgamma, dbeta)) = dparams else {
        return Ok(());
    };
    let f = gpu.function(&NORM, "layer_norm_bwd_params_f32")?;
    let mut launch = stream.launch_builder(&f);
    launch
        .arg(dyb.as_ref())
        .arg(xb.as_ref())
        .arg(mb.as_ref())
        .arg(rb.as_ref())
        .arg(dgamma.writable()?)
        .arg(dbeta.writable()?)
        .arg(&m)
        .arg(&d);
    // SAFETY: lengths checked above; one thread per column.
    unsafe { launch.launch(grid_1d(dim)) }.map_err(driver_err("layer_norm_bwd_params"))?;
    Ok(())
}

fn row_count(context: &'static str, len: usize, cols: usize) -> Result<usize> {
    if cols == 0 || !len.is_multiple_of(cols) {
        return Err(CudaError::InvalidArgument {
            name: "cols",
            reason: format!("{context}: {len} elements are not rows of {cols}"),
        });
    }
    Ok(len / cols)
}

/// Row softmax of `scale * x` over the last axis (`cols` wide); writes `y`.
pub fn softmax(x: &T32, cols: usize, scale: f64, y: &mut T32) -> Result<()> {
    let rows = row_count("softmax", x.len(), cols)?;
    expect_len("softmax y", y, x.len())?;
    if rows == 0 {
        return Ok(());
    }
    let gpu = x.gpu().clone();
    let f = gpu.function(&SOFTMAX, "softmax_fwd_f32")?;
    let xb = x.readable()?;
    let c = to_i32("cols", cols)?;
    let mut launch = gpu.stream().launch_builder(&f);
    launch.arg(xb.as_ref()).arg(y.writable()?).arg(&c).arg(&scale);
    // SAFETY: lengths checked above; one block per row.
    unsafe { launch.launch(grid_rows(rows)?) }.map_err(driver_err("softmax"))?;
    Ok(())
}

/// Softmax backward from the forward output `y`; writes `dx`.
pub fn softmax_bwd(dy: &T32, y: &T32, cols: usize, scale: f64, dx: &mut T32) -> Result<()> {
    let rows = row_count("softmax_bwd", y.len(), cols)?;
    expect_len("softmax_bwd dy", dy, y.len())?;
    expect_len("softmax_bwd dx", dx, y.len())?;
    if rows == 0 {
        return Ok(());
    }
    let gpu = y.gpu().clone();
    let f = gpu.function(&SOFTMAX, "softmax_bwd_f32")?;
    let (dyb, yb) = (dy.readable()?, y.readable()?);
    let c = to_i32("cols", cols)?;
    let mut launch = gpu.stream().launch_builder(&f);
    launch
        .arg(dyb.as_ref())
        .arg(yb.as_ref())
        .arg(dx.writable()?)
        .arg(&c)
        .arg(&scale);
    // SAFETY: lengths checked above; one block per row.
    unsafe { launch.launch(grid_rows(rows)?) }.map_err(driver_err("softmax_bwd"))?;
    Ok(())
}

/// Batched row-major GEMM through cuBLAS: `c[p] = op(a[p]) op(b[p])` with `op(a)` `[m, k]`
/// and `op(b)` `[k, n]` (stored transposed when `trans_a` / `trans_b`), `p < batch`.
pub fn gemm_batched(
    a: &T32,
    b: &T32,
    batch: usize,
    (m, k, n): (usize, usize, usize),
    trans_a: bool,
    trans_b: bool,
    c: &mut T32,
) -> Result<()> {
    expect_len("gemm a", a, batch * m * k)?;
    gemm_strided(a, m * k, b, batch, (m, k, n), (trans_a, trans_b), c)
}

/// [`gemm_batched`] with one `a` for every batch item: `c[p] = op(a) op(b[p])` (a
/// convolution's weights against each image's columns).
pub fn gemm_shared_a(
    a: &T32,
    b: &T32,
    batch: usize,
    (m, k, n): (usize, usize, usize),
    trans_a: bool,
    trans_b: bool,
    c: &mut T32,
) -> Result<()> {
    expect_len("gemm a", a, m * k)?;
    gemm_strided(a, 0, b, batch, (m, k, n), (trans_a, trans_b), c)
}

fn gemm_strided(
    a: &T32,
    stride_a: usize,
    b: &T32,
    batch: usize,
    (m, k, n): (usize, usize, usize),
    (trans_a, trans_b): (bool, bool),
    c: &mut T32,
) -> Result<()> {
    expect_len("gemm b", b, batch * k * n)?;
    expect_len("gemm c", c, batch * m * n)?;
    if batch * m * n == 0 {
        return Ok(());
    }
    if k == 0 {
        // An empty inner dimension is a sum of nothing.
        *c = T32::full(c.gpu(), c.shape(), 0.0)?;
        return Ok(());
    }
    let gpu = a.gpu().clone();
    let blas = gpu.blas()?;
    let (ab, bb) = (a.readable()?, b.readable()?);
    let op = |t: bool| {
        if t {
            cublasOperation_t::CUBLAS_OP_T
        } else {
            cublasOperation_t::CUBLAS_OP_N
        }
    };
    // Row-major C = A B is column-major C^T = B^T A^T: swap the operands and m with n.
    let cfg = StridedBatchedConfig {
        gemm: GemmConfig {
            transa: op(trans_b),
            transb: op(trans_a),
            m: to_i32("n", n)?,
            n: to_i32("m", m)?,
            k: to_i32("k", k)?,
            alpha: 1.0f32,
            lda: to_i32("ldb", if trans_b { k } else { n })?,
            ldb: to_i32("lda", if trans_a { m } else { k })?,
            beta: 0.0f32,
            ldc: to_i32("n", n)?,
        },
        batch_size: to_i32("batch", batch)?,
        stride_a: (k * n) as i64,
        stride_b: stride_a as i64,
        stride_c: (m * n) as i64,
    };
    // SAFETY: buffer lengths match the strides and leading dimensions checked above (a
    // stride of 0 reads the one `a` for every item).
    unsafe { blas.gemm_strided_batched(cfg, bb.as_ref(), ab.as_ref(), c.writable()?) }.map_err(|e| {
        CudaError::Cublas {
            context: "gemm_strided_batched",
            message: format!("{e:?}"),
        }
    })
}

/// Scaled dot-product attention `softmax(q k^T / sqrt(d)) v` over `[bh, l, d]` tensors
/// (`bh` = batch x heads, contiguous). Writes `out` (`[bh, lq, d]`).
pub fn attention(
    q: &T32,
    k: &T32,
    v: &T32,
    bh: usize,
    lens: (usize, usize, usize),
    out: &mut T32,
) -> Result<()> {
    attention_with_probs(q, k, v, bh, lens, out).map(drop)
}

/// [`attention`], also returning the probabilities `softmax(q k^T / sqrt(d))` (`[bh, lq, lk]`)
/// that its backward ([`crate::grad::attention_bwd`]) needs.
pub fn attention_with_probs(
    q: &T32,
    k: &T32,
    v: &T32,
    bh: usize,
    (lq, lk, d): (usize, usize, usize),
    out: &mut T32,
) -> Result<T32> {
    expect_len("attention q", q, bh * lq * d)?;
    expect_len("attention k", k, bh * lk * d)?;
    expect_len("attention v", v, bh * lk * d)?;
    expect_len("attention out", out, bh * lq * d)?;
    if d == 0 || lk == 0 {
        return Err(CudaError::InvalidArgument {
            name: "attention",
            reason: "head dimension and key length must be positive".into(),
        });
    }
    let gpu = q.gpu().clone();
    let mut scores = T32::zeros(&gpu, &[bh, lq, lk]);
    gemm_batched(q, k, bh, (lq, d, lk), false, true, &mut scores)?;
    let mut probs = T32::zeros(&gpu, &[bh, lq, lk]);
    softmax(&scores, lk, 1.0 / (d as f64).sqrt(), &mut probs)?;
    gemm_batched(&probs, v, bh, (lq, lk, d), false, false, out)?;
    Ok(probs)
}

fn conv_launch(file: &KernelFile, kernel: &str, g: ConvGeometry, src: &T32, dst: &mut T32) -> Result<()> {
    let (oh, ow) = g.output_hw()?;
    let gpu = src.gpu().clone();
    let f = gpu.function(file, kernel)?;
    let sb = src.readable()?;
    let ints = [
        g.n, g.c, g.h, g.w, g.kh, g.kw, g.stride, g.pad, g.dilation, oh, ow,
    ]
    .into_iter()
    .map(|v| to_i32("conv geometry", v))
    .collect::<Result<Vec<i32>>>()?;
    let work = dst.len();
    let mut launch = gpu.stream().launch_builder(&f);
    launch.arg(sb.as_ref()).arg(dst.writable()?);
    for v in &ints {
        launch.arg(v);
    }
    let cfg: LaunchConfig = grid_1d(work);
    // SAFETY: the caller checked both buffers against the geometry.
    unsafe { launch.launch(cfg) }.map_err(driver_err("im2col/col2im"))?;
    Ok(())
}

/// im2col: image `[n, c, h, w]` to columns `[n, c*kh*kw, oh*ow]`.
pub fn im2col(x: &T32, g: ConvGeometry, cols: &mut T32) -> Result<()> {
    expect_len("im2col x", x, g.image_len())?;
    expect_len("im2col cols", cols, g.cols_len()?)?;
    if cols.is_empty() {
        return Ok(());
    }
    conv_launch(&IM2COL, "im2col_f32", g, x, cols)
}

/// col2im (the adjoint of im2col, summing overlaps): columns to image.
pub fn col2im(cols: &T32, g: ConvGeometry, x: &mut T32) -> Result<()> {
    expect_len("col2im cols", cols, g.cols_len()?)?;
    expect_len("col2im x", x, g.image_len())?;
    if x.is_empty() {
        return Ok(());
    }
    conv_launch(&IM2COL, "col2im_f32", g, cols, x)
}

/// adaLN modulation `y = x (1 + scale) + shift`, `x` `[b, l, d]`, `shift`/`scale` `[b, d]`.
pub fn adaln_modulate(
    x: &T32,
    shift: &T32,
    scale: &T32,
    (b, l, d): (usize, usize, usize),
    y: &mut T32,
) -> Result<()> {
    expect_len("adaln x", x, b * l * d)?;
    expect_len("adaln y", y, b * l * d)?;
    expect_len("adaln shift", shift, b * d)?;
    expect_len("adaln scale", scale, b * d)?;
    if y.is_empty() {
        return Ok(());
    }
    let gpu = x.gpu().clone();
    let f = gpu.function(&ADALN, "adaln_modulate_fwd_f32")?;
    let (xb, shb, scb) = (x.readable()?, shift.readable()?, scale.readable()?);
    let (bi, li, di) = (to_i32("b", b)?, to_i32("l", l)?, to_i32("d", d)?);
    let mut launch = gpu.stream().launch_builder(&f);
    launch
        .arg(xb.as_ref())
        .arg(shb.as_ref())
        .arg(scb.as_ref())
        .arg(y.writable()?)
        .arg(&bi)
        .arg(&li)
        .arg(&di);
    // SAFETY: lengths checked above.
    unsafe { launch.launch(grid_1d(b * l * d)) }.map_err(driver_err("adaln_modulate"))?;
    Ok(())
}

/// Gradients of [`adaln_modulate`]: writes `dx` `[b, l, d]`, `dshift` and `dscale` `[b, d]`.
pub fn adaln_modulate_bwd(
    dy: &T32,
    x: &T32,
    scale: &T32,
    (b, l, d): (usize, usize, usize),
    dx: &mut T32,
    dshift: &mut T32,
    dscale: &mut T32,
) -> Result<()> {
    for (t, len) in [(dy, b * l * d), (x, b * l * d), (&*dx, b * l * d)] {
        expect_len("adaln_bwd", t, len)?;
    }
    for (t, len) in [(scale, b * d), (&*dshift, b * d), (&*dscale, b * d)] {
        expect_len("adaln_bwd params", t, len)?;
    }
    if b * d == 0 {
        return Ok(());
    }
    let gpu = x.gpu().clone();
    let stream = gpu.stream();
    let (dyb, xb, scb) = (dy.readable()?, x.readable()?, scale.readable()?);
    let (bi, li, di) = (to_i32("b", b)?, to_i32("l", l)?, to_i32("d", d)?);
    if l > 0 {
        let f = gpu.function(&ADALN, "adaln_modulate_bwd_dx_f32")?;
        let mut launch = stream.launch_builder(&f);
        launch
            .arg(dyb.as_ref())
            .arg(scb.as_ref())
            .arg(dx.writable()?)
            .arg(&bi)
            .arg(&li)
            .arg(&di);
        // SAFETY: lengths checked above.
        unsafe { launch.launch(grid_1d(b * l * d)) }.map_err(driver_err("adaln_bwd_dx"))?;
    }
    let f = gpu.function(&ADALN, "adaln_modulate_bwd_params_f32")?;
    let mut launch = stream.launch_builder(&f);
    launch
        .arg(dyb.as_ref())
        .arg(xb.as_ref())
        .arg(dshift.writable()?)
        .arg(dscale.writable()?)
        .arg(&bi)
        .arg(&li)
        .arg(&di);
    // SAFETY: lengths checked above; one thread per (b, d).
    unsafe { launch.launch(grid_1d(b * d)) }.map_err(driver_err("adaln_bwd_params"))?;
    Ok(())
}
