//! Broadcast adds and layout permutations on the GPU (`kernels/layout.cu`): the glue between
//! the layer kernels of [`crate::ops`] when whole models run on the device.

use cudarc::driver::PushKernelArg;
use diffusion_core::Tensor;

use crate::device::{driver_err, grid_1d};
use crate::error::Result;
use crate::kernels::LAYOUT;
use crate::ops::{expect_len, to_i32};
use crate::tensor::CudaTensor;

type T32 = CudaTensor<f32>;

/// `y[i] += v[i % v.len()]` in place: a bias over the rows of `y` (`v` one row long) or a
/// table repeated for every batch item.
pub fn add_periodic(y: &mut T32, v: &T32) -> Result<()> {
    add_per_block(y, v, 1)
}

/// `y[i] += v[(i / block) % v.len()]` in place: with `block` = the spatial size of an NCHW
/// tensor, one value per channel plane (`v`: `[channels]` or `[batch, channels]`).
pub fn add_per_block(y: &mut T32, v: &T32, block: usize) -> Result<()> {
    let (n, period) = (y.len(), v.len());
    if n == 0 {
        return Ok(());
    }
    if block == 0 || period == 0 || !n.is_multiple_of(block * period) {
        return Err(crate::CudaError::InvalidArgument {
            name: "add_per_block",
            reason: format!(
                "y ({:?}, {n} elements) is not a whole number of blocks of {block} times {period} values",
                y.shape()
            ),
        });
    }
    y.check_device(v, "add_per_block")?;
    let gpu = y.gpu().clone();
    let f = gpu.function(&LAYOUT, "add_broadcast_f32")?;
    let vb = v.readable()?;
    let (n64, b64, p64) = (n as u64, block as u64, period as u64);
    let mut launch = gpu.stream().launch_builder(&f);
    launch
        .arg(y.unique()?)
        .arg(vb.as_ref())
        .arg(&n64)
        .arg(&b64)
        .arg(&p64);
    // SAFETY: the kernel reads v[(i / block) % period] and updates y[i] for i < n.
    unsafe { launch.launch(grid_1d(n)) }.map_err(driver_err("add_per_block"))?;
    Ok(())
}

/// `h[b, t, d] += gate[b, d] * f[b, t, d]` in place (`h`, `f`: `[b, t, d]`; `gate`: `[b, d]`).
pub fn gate_add(h: &mut T32, f: &T32, gate: &T32, (b, t, d): (usize, usize, usize)) -> Result<()> {
    expect_len("gate_add h", h, b * t * d)?;
    expect_len("gate_add f", f, b * t * d)?;
    expect_len("gate_add gate", gate, b * d)?;
    if h.is_empty() {
        return Ok(());
    }
    h.check_device(f, "gate_add")?;
    h.check_device(gate, "gate_add")?;
    let gpu = h.gpu().clone();
    let k = gpu.function(&LAYOUT, "gate_add_f32")?;
    let (fb, gb) = (f.readable()?, gate.readable()?);
    let (bi, ti, di) = (to_i32("b", b)?, to_i32("t", t)?, to_i32("d", d)?);
    let mut launch = gpu.stream().launch_builder(&k);
    launch
        .arg(h.unique()?)
        .arg(fb.as_ref())
        .arg(gb.as_ref())
        .arg(&bi)
        .arg(&ti)
        .arg(&di);
    // SAFETY: lengths checked above.
    unsafe { launch.launch(grid_1d(b * t * d)) }.map_err(driver_err("gate_add"))?;
    Ok(())
}

/// One launch of a permutation kernel `name(src, dst, i32 dims...)` over `dst.len()` threads.
fn permute(name: &str, src: &T32, dst: &mut T32, dims: &[usize]) -> Result<()> {
    expect_len("layout source", src, dst.len())?;
    if dst.is_empty() {
        return Ok(());
    }
    dst.check_device(src, "layout")?;
    let gpu = src.gpu().clone();
    let f = gpu.function(&LAYOUT, name)?;
    let sb = src.readable()?;
    let dims = dims
        .iter()
        .map(|&d| to_i32("dim", d))
        .collect::<Result<Vec<i32>>>()?;
    let n = dst.len();
    let mut launch = gpu.stream().launch_builder(&f);
    launch.arg(sb.as_ref()).arg(dst.writable()?);
    for d in &dims {
        launch.arg(d);
    }
    // SAFETY: src and dst hold the same number of elements (checked), the kernel maps each
    // destination index below n to a source index below n.
    unsafe { launch.launch(grid_1d(n)) }.map_err(driver_err("layout"))?;
    Ok(())
}

/// Images `[b, c, s, s]` to the rows a patch-embedding convolution (kernel = stride = `p`)
/// multiplies: `[b, (s/p)^2, c*p*p]`, each row in Conv2d weight order `(c, kh, kw)`.
pub fn patch_rows(x: &T32, (b, c, s, p): (usize, usize, usize, usize), out: &mut T32) -> Result<()> {
    check_patches(b, c, s, p)?;
    expect_len("patch_rows x", x, b * c * s * s)?;
    permute("patch_rows_f32", x, out, &[b, c, s, p])
}

/// Patch tokens `[b, (s/p)^2, p*p*c]` (features `(kh, kw, c)`, as `diffusion_nn`'s
/// `unpatchify` reads them) back to images `[b, c, s, s]`.
pub fn unpatchify(tokens: &T32, (b, c, s, p): (usize, usize, usize, usize), out: &mut T32) -> Result<()> {
    check_patches(b, c, s, p)?;
    expect_len("unpatchify out", out, b * c * s * s)?;
    permute("unpatchify_f32", tokens, out, &[b, c, s, p])
}

/// The adjoint of [`patch_rows`], which is its inverse: rows `[b, (s/p)^2, c*p*p]` back to
/// images `[b, c, s, s]` (the input gradient of a patch embedding).
pub fn patch_rows_bwd(rows: &T32, (b, c, s, p): (usize, usize, usize, usize), out: &mut T32) -> Result<()> {
    check_patches(b, c, s, p)?;
    expect_len("patch_rows_bwd out", out, b * c * s * s)?;
    permute("patch_rows_bwd_f32", rows, out, &[b, c, s, p])
}

/// The inverse of [`unpatchify`]: images `[b, c, s, s]` to patch tokens `[b, (s/p)^2, p*p*c]`
/// (features `(kh, kw, c)`), as `diffusion_nn`'s `patchify` (DiT's output gradient).
pub fn patchify(x: &T32, (b, c, s, p): (usize, usize, usize, usize), out: &mut T32) -> Result<()> {
    check_patches(b, c, s, p)?;
    expect_len("patchify x", x, b * c * s * s)?;
    permute("patchify_f32", x, out, &[b, c, s, p])
}

fn check_patches(b: usize, c: usize, s: usize, p: usize) -> Result<()> {
    if p == 0 || !s.is_multiple_of(p) {
        return Err(crate::CudaError::InvalidArgument {
            name: "patch",
            reason: format!("patch {p} must divide the image side {s} (batch {b}, {c} channels)"),
        });
    }
    Ok(())
}

/// `[b, t, h*dh]` to `[b*h, t, dh]`.
pub fn split_heads(x: &T32, (b, t, h, dh): (usize, usize, usize, usize), out: &mut T32) -> Result<()> {
    expect_len("split_heads x", x, b * t * h * dh)?;
    permute("split_heads_f32", x, out, &[b, t, h, dh])
}

/// `[b*h, t, dh]` to `[b, t, h*dh]`.
pub fn merge_heads(x: &T32, (b, t, h, dh): (usize, usize, usize, usize), out: &mut T32) -> Result<()> {
    expect_len("merge_heads x", x, b * t * h * dh)?;
    permute("merge_heads_f32", x, out, &[b, t, h, dh])
}

/// `[n, ca, s]` and `[n, cb, s]` to `[n, ca + cb, s]`, the second multiplied by `scale`.
pub fn concat_channels(
    a: &T32,
    b: &T32,
    (n, ca, cb, s): (usize, usize, usize, usize),
    scale: f32,
    out: &mut T32,
) -> Result<()> {
    expect_len("concat a", a, n * ca * s)?;
    expect_len("concat b", b, n * cb * s)?;
    expect_len("concat out", out, n * (ca + cb) * s)?;
    if out.is_empty() {
        return Ok(());
    }
    out.check_device(a, "concat_channels")?;
    out.check_device(b, "concat_channels")?;
    let gpu = a.gpu().clone();
    let f = gpu.function(&LAYOUT, "concat_channels_f32")?;
    let (ab, bb) = (a.readable()?, b.readable()?);
    let (ni, cai, cbi) = (to_i32("n", n)?, to_i32("ca", ca)?, to_i32("cb", cb)?);
    let s64 = s as i64;
    let len = out.len();
    let mut launch = gpu.stream().launch_builder(&f);
    launch
        .arg(ab.as_ref())
        .arg(bb.as_ref())
        .arg(out.writable()?)
        .arg(&ni)
        .arg(&cai)
        .arg(&cbi)
        .arg(&s64)
        .arg(&scale);
    // SAFETY: lengths checked above.
    unsafe { launch.launch(grid_1d(len)) }.map_err(driver_err("concat_channels"))?;
    Ok(())
}

/// Nearest-neighbour x2 upsampling of `planes` `[h, w]` planes to `[2h, 2w]`.
pub fn upsample2(x: &T32, (planes, h, w): (usize, usize, usize), out: &mut T32) -> Result<()> {
    expect_len("upsample2 x", x, planes * h * w)?;
    expect_len("upsample2 out", out, planes * 4 * h * w)?;
    if out.is_empty() {
        return Ok(());
    }
    out.check_device(x, "upsample2")?;
    let gpu = x.gpu().clone();
    let f = gpu.function(&LAYOUT, "upsample2_f32")?;
    let xb = x.readable()?;
    let (p64, hi, wi) = (planes as i64, to_i32("h", h)?, to_i32("w", w)?);
    let len = out.len();
    let mut launch = gpu.stream().launch_builder(&f);
    launch
        .arg(xb.as_ref())
        .arg(out.writable()?)
        .arg(&p64)
        .arg(&hi)
        .arg(&wi);
    // SAFETY: lengths checked above.
    unsafe { launch.launch(grid_1d(len)) }.map_err(driver_err("upsample2"))?;
    Ok(())
}

/// Batched transpose `[b, r, c]` to `[b, c, r]`.
pub fn transpose(x: &T32, (b, r, c): (usize, usize, usize), out: &mut T32) -> Result<()> {
    expect_len("transpose x", x, b * r * c)?;
    permute("transpose_f32", x, out, &[b, r, c])
}

/// The adjoint of [`upsample2`]: `dout` `[planes, 2h, 2w]` to `dx` `[planes, h, w]`, each
/// pixel the sum of the 2x2 block it was copied to.
pub fn upsample2_bwd(dout: &T32, (planes, h, w): (usize, usize, usize), dx: &mut T32) -> Result<()> {
    expect_len("upsample2_bwd dout", dout, planes * 4 * h * w)?;
    expect_len("upsample2_bwd dx", dx, planes * h * w)?;
    if dx.is_empty() {
        return Ok(());
    }
    dx.check_device(dout, "upsample2_bwd")?;
    let gpu = dout.gpu().clone();
    let f = gpu.function(&LAYOUT, "upsample2_bwd_f32")?;
    let db = dout.readable()?;
    // The kernel indexes rows of the output (2h x 2w) in 32 bits.
    to_i32("2h", 2 * h)?;
    to_i32("2w", 2 * w)?;
    let (p64, hi, wi) = (planes as i64, to_i32("h", h)?, to_i32("w", w)?);
    let len = dx.len();
    let mut launch = gpu.stream().launch_builder(&f);
    launch
        .arg(db.as_ref())
        .arg(dx.writable()?)
        .arg(&p64)
        .arg(&hi)
        .arg(&wi);
    // SAFETY: lengths checked above; each thread reads its own 2x2 block.
    unsafe { launch.launch(grid_1d(len)) }.map_err(driver_err("upsample2_bwd"))?;
    Ok(())
}

/// The adjoint of [`concat_channels`]: `cat` `[n, ca + cb, s]` split into `a` `[n, ca, s]`
/// and `b` `[n, cb, s]`, the second multiplied by `scale`.
pub fn split_channels(
    cat: &T32,
    (n, ca, cb, s): (usize, usize, usize, usize),
    scale: f32,
    a: &mut T32,
    b: &mut T32,
) -> Result<()> {
    expect_len("split_channels cat", cat, n * (ca + cb) * s)?;
    expect_len("split_channels a", a, n * ca * s)?;
    expect_len("split_channels b", b, n * cb * s)?;
    if cat.is_empty() {
        return Ok(());
    }
    cat.check_device(a, "split_channels")?;
    cat.check_device(b, "split_channels")?;
    let gpu = cat.gpu().clone();
    let f = gpu.function(&LAYOUT, "split_channels_f32")?;
    let cb_in = cat.readable()?;
    let (ni, cai, cbi) = (to_i32("n", n)?, to_i32("ca", ca)?, to_i32("cb", cb)?);
    let s64 = s as i64;
    let len = cat.len();
    let mut launch = gpu.stream().launch_builder(&f);
    launch
        .arg(cb_in.as_ref())
        .arg(a.writable()?)
        .arg(b.writable()?)
        .arg(&ni)
        .arg(&cai)
        .arg(&cbi)
        .arg(&s64)
        .arg(&scale);
    // SAFETY: lengths checked above; every element of `cat` goes to exactly one output.
    unsafe { launch.launch(grid_1d(len)) }.map_err(driver_err("split_channels"))?;
    Ok(())
}
