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
    let (n, period) = (y.len(), v.len());
    if n == 0 {
        return Ok(());
    }
    if period == 0 || !n.is_multiple_of(period) {
        return Err(crate::CudaError::ShapeMismatch {
            context: "add_periodic: y's length must be a multiple of v's",
            expected: vec![period],
            got: y.shape().to_vec(),
        });
    }
    y.check_device(v, "add_periodic")?;
    let gpu = y.gpu().clone();
    let f = gpu.function(&LAYOUT, "add_periodic_f32")?;
    let vb = v.readable()?;
    let (n64, p64) = (n as u64, period as u64);
    let mut launch = gpu.stream().launch_builder(&f);
    launch.arg(y.unique()?).arg(vb.as_ref()).arg(&n64).arg(&p64);
    // SAFETY: the kernel reads v[i % period] and updates y[i] for i < n.
    unsafe { launch.launch(grid_1d(n)) }.map_err(driver_err("add_periodic"))?;
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
fn permute(name: &str, src: &T32, dst: &mut T32, dims: [usize; 4]) -> Result<()> {
    expect_len("layout source", src, dst.len())?;
    if dst.is_empty() {
        return Ok(());
    }
    dst.check_device(src, "layout")?;
    let gpu = src.gpu().clone();
    let f = gpu.function(&LAYOUT, name)?;
    let sb = src.readable()?;
    let d = [
        to_i32("dim", dims[0])?,
        to_i32("dim", dims[1])?,
        to_i32("dim", dims[2])?,
        to_i32("dim", dims[3])?,
    ];
    let n = dst.len();
    let mut launch = gpu.stream().launch_builder(&f);
    launch
        .arg(sb.as_ref())
        .arg(dst.writable()?)
        .arg(&d[0])
        .arg(&d[1])
        .arg(&d[2])
        .arg(&d[3]);
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
    permute("patch_rows_f32", x, out, [b, c, s, p])
}

/// Patch tokens `[b, (s/p)^2, p*p*c]` (features `(kh, kw, c)`, as `diffusion_nn`'s
/// `unpatchify` reads them) back to images `[b, c, s, s]`.
pub fn unpatchify(tokens: &T32, (b, c, s, p): (usize, usize, usize, usize), out: &mut T32) -> Result<()> {
    check_patches(b, c, s, p)?;
    expect_len("unpatchify out", out, b * c * s * s)?;
    permute("unpatchify_f32", tokens, out, [b, c, s, p])
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
    permute("split_heads_f32", x, out, [b, t, h, dh])
}

/// `[b*h, t, dh]` to `[b, t, h*dh]`.
pub fn merge_heads(x: &T32, (b, t, h, dh): (usize, usize, usize, usize), out: &mut T32) -> Result<()> {
    expect_len("merge_heads x", x, b * t * h * dh)?;
    permute("merge_heads_f32", x, out, [b, t, h, dh])
}
