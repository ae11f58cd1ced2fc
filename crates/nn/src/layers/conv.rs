//! N-d convolution (1, 2 or 3 spatial axes) by im2col + GEMM, with stride, zero padding
//! and groups (PyTorch `nn.Conv{1,2,3}d` weight layout `[out, in/groups, k...]`), and
//! nearest-neighbour upsampling.
//!
//! Every rank is handled as 3-d with leading singleton axes, so there is one code path.

use diffusion_core::Rng;
use ndarray::ArrayD;
use rayon::prelude::*;

use super::winograd;
use crate::error::{NnError, Result, check_shape};
use crate::gemm::{MatMut, MatRef, add_macs, matmul_serial_if};
use crate::kernels::{array, par_items_with_grads, std_slice, uniform_array, with_scratch};
use crate::param::{Float, Param, Parameters};

/// Sizes of one convolution call, all as 3-d.
#[derive(Clone, Copy, Debug)]
struct Geom {
    cin: usize,
    input: [usize; 3],
    out: [usize; 3],
    kernel: [usize; 3],
    stride: [usize; 3],
    pad: [usize; 3],
}

impl Geom {
    fn in_len(&self) -> usize {
        self.input.iter().product()
    }
    fn out_len(&self) -> usize {
        self.out.iter().product()
    }
    fn k_len(&self) -> usize {
        self.kernel.iter().product()
    }
    /// Unit stride and "same" padding (`(k - 1) / 2` on every axis, odd kernels): the
    /// input gradient is then again such a convolution, of `dy` with the kernel rotated by
    /// 180 degrees and in/out channels swapped.
    fn is_same(&self) -> bool {
        self.stride == [1, 1, 1]
            && (0..3).all(|a| self.kernel[a] % 2 == 1 && self.pad[a] == (self.kernel[a] - 1) / 2)
    }

    /// The geometry of that adjoint convolution (over `dy`, `cout` channels).
    fn adjoint(&self, cout: usize) -> Self {
        Self {
            cin: cout,
            input: self.out,
            out: self.input,
            ..*self
        }
    }

    /// A 2-d 3x3 convolution with unit stride and padding 1: run by Winograd F(2x2, 3x3)
    /// (when it has one group and the batch makes wide enough products, see
    /// [`winograd::Plane::items_per_task`]).
    fn winograd_plane(&self) -> Option<winograd::Plane> {
        (self.input[0] == 1 && self.kernel == [1, 3, 3] && self.stride == [1, 1, 1] && self.pad == [0, 1, 1])
            .then_some(winograd::Plane {
                h: self.input[1],
                w: self.input[2],
            })
    }

    /// A 1x1 convolution with unit stride and no padding needs no im2col.
    fn is_pointwise(&self) -> bool {
        self.k_len() == 1 && self.stride == [1, 1, 1] && self.pad == [0, 0, 0]
    }
}

/// For output index `o` along an axis and kernel offset `k`: the input index, if inside.
#[inline]
fn src(o: usize, k: usize, stride: usize, pad: usize, size: usize) -> Option<usize> {
    (o * stride + k).checked_sub(pad).filter(|&i| i < size)
}

/// `cols[(c, kz, ky, kx), (oz, oy, ox)] = x[c, iz, iy, ix]` (0 outside the input) for the
/// output rows `rows` (flattened `(oz, oy)`) only: `cols` is `[cin * k, rows.len() * ow]`.
fn im2col_rows<A: Float>(x: &[A], g: &Geom, rows: std::ops::Range<usize>, cols: &mut [A]) {
    let [id, ih, iw] = g.input;
    let [_, oh, ow] = g.out;
    let [kd, kh, kw] = g.kernel;
    let l = rows.len() * ow;
    let mut row = 0;
    for c in 0..g.cin {
        for kz in 0..kd {
            for ky in 0..kh {
                for kx in 0..kw {
                    let out = &mut cols[row * l..(row + 1) * l];
                    row += 1;
                    let (lo, hi) = valid_range(kx, g.stride[2], g.pad[2], iw, ow);
                    for (fr, orow) in rows.clone().zip(out.chunks_mut(ow)) {
                        let (z, y) = (fr / oh, fr % oh);
                        let inside =
                            src(z, kz, g.stride[0], g.pad[0], id).zip(src(y, ky, g.stride[1], g.pad[1], ih));
                        let Some((iz, iy)) = inside.filter(|_| lo < hi) else {
                            orow.fill(A::zero());
                            continue;
                        };
                        let base = ((c * id + iz) * ih + iy) * iw;
                        orow[..lo].fill(A::zero());
                        orow[hi..].fill(A::zero());
                        let first = lo * g.stride[2] + kx - g.pad[2];
                        if g.stride[2] == 1 {
                            orow[lo..hi].copy_from_slice(&x[base + first..base + first + hi - lo]);
                        } else {
                            for (j, o) in orow[lo..hi].iter_mut().enumerate() {
                                *o = x[base + first + j * g.stride[2]];
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Output rows per im2col tile: about `TILE_BYTES` of columns, so a tile is still in the
/// core's cache when the GEMM packs it, but at least `MIN_TILE_COLS` columns wide.
fn tile_rows<A>(g: &Geom) -> usize {
    let k = (g.cin * g.k_len()).max(1);
    let ow = g.out[2].max(1);
    let cols = (TILE_BYTES / (k * std::mem::size_of::<A>())).max(MIN_TILE_COLS);
    (cols / ow).max(1)
}

/// Target size of one im2col tile.
const TILE_BYTES: usize = 1 << 20;
/// Narrowest GEMM (in output positions) a tile may make.
const MIN_TILE_COLS: usize = 256;

/// The output indices `lo..hi` along an axis whose input index `o * stride + k - pad` is
/// inside `0..size` (a contiguous range, so the inner loops need no per-element checks).
#[inline]
fn valid_range(k: usize, stride: usize, pad: usize, size: usize, out: usize) -> (usize, usize) {
    // o * stride + k >= pad  and  o * stride + k < size + pad
    let lo = pad.saturating_sub(k).div_ceil(stride).min(out);
    let hi = (size + pad).saturating_sub(k).div_ceil(stride).clamp(lo, out);
    (lo, hi)
}

/// The adjoint of [`im2col_rows`] over all output rows: `dx[c, iz, iy, ix] += dcols[...]`.
fn col2im<A: Float>(dcols: &[A], g: &Geom, dx: &mut [A]) {
    let [id, ih, iw] = g.input;
    let [od, oh, ow] = g.out;
    let [kd, kh, kw] = g.kernel;
    let l = g.out_len();
    let mut row = 0;
    for c in 0..g.cin {
        for kz in 0..kd {
            for ky in 0..kh {
                for kx in 0..kw {
                    let col = &dcols[row * l..(row + 1) * l];
                    row += 1;
                    for z in 0..od {
                        let Some(iz) = src(z, kz, g.stride[0], g.pad[0], id) else {
                            continue;
                        };
                        for y in 0..oh {
                            let Some(iy) = src(y, ky, g.stride[1], g.pad[1], ih) else {
                                continue;
                            };
                            let base = ((c * id + iz) * ih + iy) * iw;
                            let crow = &col[(z * oh + y) * ow..(z * oh + y + 1) * ow];
                            let (lo, hi) = valid_range(kx, g.stride[2], g.pad[2], iw, ow);
                            if lo == hi {
                                continue;
                            }
                            let first = lo * g.stride[2] + kx - g.pad[2];
                            if g.stride[2] == 1 {
                                let dst = &mut dx[base + first..base + first + hi - lo];
                                for (d, &v) in dst.iter_mut().zip(&crow[lo..hi]) {
                                    *d = *d + v;
                                }
                            } else {
                                for (j, &v) in crow[lo..hi].iter().enumerate() {
                                    let i = base + first + j * g.stride[2];
                                    dx[i] = dx[i] + v;
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `map(x)` stored whole, plane by plane (for the paths that cannot apply it as they read).
fn map_input<A: Float>(x: &[A], g: &Geom, map: winograd::RowMap<'_, A>) -> Vec<A> {
    let mut mapped = vec![A::zero(); x.len()];
    mapped
        .par_chunks_mut(g.in_len().max(1))
        .zip(x.par_chunks(g.in_len().max(1)))
        .enumerate()
        .for_each(|(plane, (out, src))| map(plane / g.cin, plane % g.cin, src, out));
    mapped
}

/// Batches at least this large keep every thread busy with whole items, so the per-item
/// products run serially; smaller batches let each product parallelise itself. (A rule on
/// the batch size alone, so results stay independent of the thread count.)
const SERIAL_ITEMS: usize = 4;

/// A convolution over 1, 2 or 3 spatial axes.
#[derive(Clone, Debug)]
pub struct Conv<A> {
    pub weight: Param<A>,
    pub bias: Option<Param<A>>,
    rank: usize,
    stride: [usize; 3],
    pad: [usize; 3],
    groups: usize,
}

/// The input, kept for the backward pass (im2col is recomputed there to save memory).
#[derive(Clone, Debug)]
pub struct ConvCache<A> {
    x: Vec<A>,
    shape: Vec<usize>,
}

/// Pads a per-axis setting of length `rank` to 3-d with `fill`.
fn to3(v: &[usize], fill: usize) -> [usize; 3] {
    let mut out = [fill; 3];
    out[3 - v.len()..].copy_from_slice(v);
    out
}

impl<A: Float> Conv<A> {
    /// `kernel`, `stride`, `padding` have one entry per spatial axis (1 to 3 of them).
    /// PyTorch default initialisation: `U(-1/sqrt(fan_in), 1/sqrt(fan_in))`.
    pub fn new(
        cin: usize,
        cout: usize,
        kernel: &[usize],
        stride: &[usize],
        padding: &[usize],
        groups: usize,
        bias: bool,
        rng: &mut Rng,
    ) -> Result<Self> {
        let rank = kernel.len();
        if !(1..=3).contains(&rank) || stride.len() != rank || padding.len() != rank {
            return Err(NnError::Config {
                name: "Conv geometry",
                reason: format!(
                    "kernel {kernel:?}, stride {stride:?}, padding {padding:?} must all have 1 to 3 entries"
                ),
            });
        }
        if groups == 0 || !cin.is_multiple_of(groups) || !cout.is_multiple_of(groups) {
            return Err(NnError::Config {
                name: "Conv groups",
                reason: format!("{groups} groups must divide in ({cin}) and out ({cout}) channels"),
            });
        }
        if kernel.contains(&0) || stride.contains(&0) {
            return Err(NnError::Config {
                name: "Conv geometry",
                reason: "kernel sizes and strides must be positive".into(),
            });
        }
        let mut wshape = vec![cout, cin / groups];
        wshape.extend_from_slice(kernel);
        let fan_in = (cin / groups * kernel.iter().product::<usize>()) as f64;
        let bound = 1.0 / fan_in.sqrt();
        Ok(Self {
            weight: Param::new(uniform_array(&wshape, bound, rng)),
            bias: bias.then(|| Param::new(uniform_array(&[cout], bound, rng))),
            rank,
            stride: to3(stride, 1),
            pad: to3(padding, 0),
            groups,
        })
    }

    /// Convenience: square kernel with the same stride and padding on every axis.
    pub fn square(
        rank: usize,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        pad: usize,
        rng: &mut Rng,
    ) -> Result<Self> {
        Self::new(
            cin,
            cout,
            &vec![k; rank],
            &vec![stride; rank],
            &vec![pad; rank],
            1,
            true,
            rng,
        )
    }

    pub fn in_channels(&self) -> usize {
        self.weight.value.shape()[1] * self.groups
    }

    pub fn out_channels(&self) -> usize {
        self.weight.value.shape()[0]
    }

    /// Stride per spatial axis.
    pub fn stride(&self) -> &[usize] {
        &self.stride[3 - self.rank..]
    }

    /// Zero padding per spatial axis.
    pub fn padding(&self) -> &[usize] {
        &self.pad[3 - self.rank..]
    }

    pub fn groups(&self) -> usize {
        self.groups
    }

    fn kernel3(&self) -> [usize; 3] {
        to3(&self.weight.value.shape()[2..], 1)
    }

    /// Geometry for an input of `shape = [batch, cin, spatial...]`.
    fn geom(&self, shape: &[usize]) -> Result<(usize, Geom)> {
        let cin = self.in_channels();
        if shape.len() != self.rank + 2 || shape[1] != cin {
            return Err(NnError::Shape {
                context: format!(
                    "Conv{}d({cin} -> {}) input [batch, channels, spatial...]",
                    self.rank,
                    self.out_channels()
                ),
                expected: vec![shape.first().copied().unwrap_or(0), cin],
                got: shape.to_vec(),
            });
        }
        let input = to3(&shape[2..], 1);
        let kernel = self.kernel3();
        let mut out = [0; 3];
        for a in 0..3 {
            let span = input[a] + 2 * self.pad[a];
            if span < kernel[a] {
                return Err(NnError::Shape {
                    context: format!("Conv{}d: padded input smaller than the kernel", self.rank),
                    expected: kernel[3 - self.rank..].to_vec(),
                    got: shape[2..].to_vec(),
                });
            }
            out[a] = (span - kernel[a]) / self.stride[a] + 1;
        }
        Ok((
            shape[0],
            Geom {
                cin,
                input,
                out,
                kernel,
                stride: self.stride,
                pad: self.pad,
            },
        ))
    }

    fn out_shape(&self, batch: usize, g: &Geom) -> Vec<usize> {
        let mut s = vec![batch, self.out_channels()];
        s.extend_from_slice(&g.out[3 - self.rank..]);
        s
    }

    /// Forward of one item: `y = W cols + b` per group; `buf` holds the im2col columns.
    fn forward_item(&self, x: &[A], g: &Geom, y: &mut [A], buf: &mut [A], serial: bool) {
        let (cout, l) = (self.out_channels(), g.out_len());
        let (cin_g, cout_g) = (g.cin / self.groups, cout / self.groups);
        let kk = cin_g * g.k_len();
        if let Some(b) = &self.bias {
            for (row, &bv) in y.chunks_mut(l).zip(b.v()) {
                row.fill(bv);
            }
        }
        if g.is_pointwise() {
            for gi in 0..self.groups {
                matmul_serial_if(
                    serial,
                    MatMut::row_major(y, gi * cout_g * l, cout_g, l),
                    MatRef::row_major(self.weight.v(), gi * cout_g * kk, cout_g, kk),
                    MatRef::row_major(x, gi * kk * l, kk, l),
                    self.bias.is_some(),
                );
            }
            return;
        }
        // im2col and the product tile by tile (whole output rows), so each tile's columns
        // are still in cache when the GEMM packs them.
        let (rows, ow) = (g.out[0] * g.out[1], g.out[2]);
        let step = tile_rows::<A>(g);
        for r0 in (0..rows).step_by(step) {
            let r1 = (r0 + step).min(rows);
            let w = (r1 - r0) * ow;
            let cols = &mut buf[..g.cin * g.k_len() * w];
            im2col_rows(x, g, r0..r1, cols);
            for gi in 0..self.groups {
                matmul_serial_if(
                    serial,
                    MatMut::strided(y, gi * cout_g * l + r0 * ow, cout_g, w, l),
                    MatRef::row_major(self.weight.v(), gi * cout_g * kk, cout_g, kk),
                    MatRef::row_major(cols, gi * kk * w, kk, w),
                    self.bias.is_some(),
                );
            }
        }
    }

    pub(crate) fn forward_slice(&self, x: &[A], shape: &[usize]) -> Result<(Vec<A>, Vec<usize>)> {
        self.forward_mapped(x, shape, None)
    }

    /// The convolution of `pre(x)`, where `pre` maps the input elementwise by runs of one
    /// channel (`pre(item, channel, values, out)`): the Winograd path applies it as it
    /// reads, others materialise the mapped input first.
    pub(crate) fn forward_mapped(
        &self,
        x: &[A],
        shape: &[usize],
        pre: Option<winograd::RowMap<'_, A>>,
    ) -> Result<(Vec<A>, Vec<usize>)> {
        let (batch, g) = self.geom(shape)?;
        let out_shape = self.out_shape(batch, &g);
        let (per_in, per_out) = (g.cin * g.in_len(), self.out_channels() * g.out_len());
        if let Some((p, items)) = self.winograd(&g, batch) {
            let cout = self.out_channels();
            add_macs(batch * per_out * g.cin * 9);
            let u = winograd::transform_weights(self.weight.v(), cout, g.cin);
            let (lv, lm) = p.scratch::<A>(g.cin, cout, items);
            let bias = self.bias.as_ref().map(|b| b.v());
            let serial = batch / items >= SERIAL_ITEMS;
            let len = batch * per_out;
            // Every element is written by its task, so the output is not zeroed first.
            let mut y: Vec<A> = Vec::with_capacity(len);
            y.spare_capacity_mut()[..len]
                .par_chunks_mut((items * per_out).max(1))
                .enumerate()
                .for_each(|(k, yk)| {
                    with_scratch(lv, lm, |bv, bm| {
                        let xk = &x[k * items * per_in..(k + 1) * items * per_in];
                        let (dims, task) = ((g.cin, cout), (items, pre.map(|map| (map, k * items))));
                        winograd::forward_items(xk, task, &u, bias, dims, p, yk, (bv, bm), serial)
                    })
                });
            // SAFETY: `forward_items` writes every output element of its task's items (each
            // output position lies in exactly one tile, and every tile is transformed), and
            // the tasks cover the batch.
            unsafe { y.set_len(len) };
            return Ok((y, out_shape));
        }
        let mut y = vec![A::zero(); batch * per_out];
        let serial = batch >= SERIAL_ITEMS;
        if let Some(map) = pre {
            return self.forward_mapped(&map_input(x, &g, map), shape, None);
        }
        if per_out > 0 {
            let ncols = if g.is_pointwise() {
                0
            } else {
                g.cin * g.k_len() * tile_rows::<A>(&g) * g.out[2]
            };
            y.par_chunks_mut(per_out).enumerate().for_each(|(b, yb)| {
                with_scratch(ncols, 0, |buf, _| {
                    self.forward_item(&x[b * per_in..(b + 1) * per_in], &g, yb, buf, serial)
                })
            });
        }
        Ok((y, out_shape))
    }

    /// The Winograd plane of geometry `g` and the items per task, when a batch of `batch`
    /// runs by Winograd.
    fn winograd(&self, g: &Geom, batch: usize) -> Option<(winograd::Plane, usize)> {
        let p = g
            .winograd_plane()
            .filter(|_| self.groups == 1 && self.out_channels() > 0 && g.in_len() > 0)?;
        Some((p, p.items_per_task(batch)?))
    }

    /// The kernels rotated by 180 degrees with in/out channels swapped (`[cin, cout, k]`):
    /// the kernels of the adjoint convolution.
    fn adjoint_weight(&self, cin: usize, k: usize) -> Vec<A> {
        let (cout, weight) = (self.out_channels(), self.weight.v());
        let mut flipped = vec![A::zero(); weight.len()];
        for o in 0..cout {
            for c in 0..cin {
                for t in 0..k {
                    flipped[(c * cout + o) * k + k - 1 - t] = weight[(o * cin + c) * k + t];
                }
            }
        }
        flipped
    }

    /// [`Self::backward_slice`] by Winograd: the weight gradient is accumulated in the
    /// transformed domain (per group of items) and transformed back once; `dx` is the
    /// adjoint convolution.
    fn backward_winograd(
        &mut self,
        x: &[A],
        (batch, g, p, items): (usize, Geom, winograd::Plane, usize),
        pre: Option<winograd::RowMap<'_, A>>,
        dy: &[A],
        need_dx: bool,
    ) -> Vec<A> {
        let (cin, cout) = (g.cin, self.out_channels());
        let (per_in, per_out) = (cin * g.in_len(), cout * g.out_len());
        let ulen = winograd::POINTS * cout * cin;
        let has_bias = self.bias.is_some();
        let (tasks, serial) = (batch / items, batch / items >= SERIAL_ITEMS);
        add_macs(batch * per_out * cin * 9 * if need_dx { 2 } else { 1 });
        let u_adj = need_dx.then(|| winograd::transform_weights(&self.adjoint_weight(cin, 9), cin, cout));
        let ((v1, m1), (v2, m2)) = (p.scratch::<A>(cin, cout, items), p.scratch::<A>(cout, cin, items));
        // dx is written whole by the adjoint convolution, so it starts uninitialised; without
        // dx, one placeholder element per task keeps the split into tasks.
        let dx_len = if need_dx { batch * per_in } else { tasks };
        let mut dx: Vec<A> = Vec::with_capacity(dx_len);
        let glen = ulen + if has_bias { cout } else { 0 };
        let grads = par_items_with_grads(
            &mut dx.spare_capacity_mut()[..dx_len],
            tasks,
            glen,
            |k, dxk, grad| {
                let xk = &x[k * items * per_in..(k + 1) * items * per_in];
                let dyk = &dy[k * items * per_out..(k + 1) * items * per_out];
                with_scratch(v1.max(v2), m1.max(m2), |bv, bm| {
                    let (du, gb) = grad.split_at_mut(ulen);
                    let bufs = (&mut *bv, &mut *bm);
                    let task = (items, pre.map(|map| (map, k * items)));
                    winograd::weight_grad_items(xk, dyk, task, (cin, cout), p, du, bufs, serial);
                    if has_bias {
                        for (o, row) in dyk.chunks(g.out_len()).enumerate() {
                            gb[o % cout] = gb[o % cout] + crate::kernels::lane_dot(row, row, |v, _| v);
                        }
                    }
                    match &u_adj {
                        Some(u) => {
                            let task = (items, None);
                            winograd::forward_items(
                                dyk,
                                task,
                                u,
                                None,
                                (cout, cin),
                                p,
                                dxk,
                                (bv, bm),
                                serial,
                            );
                        }
                        None => {
                            dxk.iter_mut().for_each(|v| {
                                v.write(A::zero());
                            });
                        }
                    }
                })
            },
        );
        // SAFETY: each task wrote all of its part of dx: the adjoint convolution writes every
        // element of its items (`forward_items`), and without dx each placeholder is zeroed.
        unsafe { dx.set_len(dx_len) };
        winograd::weight_grad_from_transformed(&grads[..ulen], cout, cin, self.weight.g());
        if let Some(bias) = &mut self.bias {
            crate::kernels::add_into(bias.g(), &grads[ulen..]);
        }
        if need_dx { dx } else { Vec::new() }
    }

    /// Backward from the cached input slice; returns dx (or nothing if `!need_dx`).
    pub(crate) fn backward_slice(
        &mut self,
        x: &[A],
        shape: &[usize],
        dy: &[A],
        need_dx: bool,
    ) -> Result<Vec<A>> {
        self.backward_mapped(x, shape, None, dy, need_dx)
    }

    /// The backward of [`Conv::forward_mapped`] (the input gradient is that of `pre(x)`).
    pub(crate) fn backward_mapped(
        &mut self,
        x: &[A],
        shape: &[usize],
        pre: Option<winograd::RowMap<'_, A>>,
        dy: &[A],
        need_dx: bool,
    ) -> Result<Vec<A>> {
        let (batch, g) = self.geom(shape)?;
        let cout = self.out_channels();
        let l = g.out_len();
        let (cin_g, cout_g) = (g.cin / self.groups, cout / self.groups);
        let kk = cin_g * g.k_len();
        let (per_in, per_out) = (g.cin * g.in_len(), cout * l);
        if dy.len() != batch * per_out {
            return Err(NnError::Shape {
                context: "Conv backward dy".into(),
                expected: self.out_shape(batch, &g),
                got: vec![dy.len()],
            });
        }
        if let Some((p, items)) = self.winograd(&g, batch) {
            return Ok(self.backward_winograd(x, (batch, g, p, items), pre, dy, need_dx));
        }
        if let Some(map) = pre {
            let mapped = map_input(x, &g, map);
            return self.backward_mapped(&mapped, shape, None, dy, need_dx);
        }
        let wlen = self.weight.value.len();
        let has_bias = self.bias.is_some();
        let glen = wlen + if has_bias { cout } else { 0 };
        let mut dx = vec![A::zero(); batch * per_in];
        let weight = self.weight.v();
        let groups = self.groups;
        let serial = batch >= SERIAL_ITEMS;
        // For "same" convolutions dx is computed as the adjoint convolution (im2col of dy
        // and one product shaped like the forward one) instead of a short-K product plus
        // col2im's scattered adds: measured faster on the unet's shapes.
        let adjoint = (need_dx && groups == 1 && !g.is_pointwise() && g.is_same())
            .then(|| (g.adjoint(cout), self.adjoint_weight(g.cin, g.k_len())));
        let grads = par_items_with_grads(&mut dx, batch, glen, |b, dxb, grad| {
            let xb = &x[b * per_in..(b + 1) * per_in];
            let dyb = &dy[b * per_out..(b + 1) * per_out];
            // Scratch: one im2col tile of x, and one of dy (adjoint) or all of dcols (col2im).
            let tile_len = |geom: &Geom| geom.cin * geom.k_len() * tile_rows::<A>(geom) * geom.out[2];
            let ncols = if g.is_pointwise() { 0 } else { tile_len(&g) };
            let dlen = match (&adjoint, need_dx) {
                (Some((ga, _)), _) => tile_len(ga),
                (None, true) => g.cin * g.k_len() * l,
                (None, false) => 0,
            };
            // Both buffers are fully overwritten (im2col / a non-accumulating GEMM).
            with_scratch(ncols, dlen, |cbuf, dcols| {
                let (gw, gb) = grad.split_at_mut(wlen);
                // dW_g += dy_g cols_g^T, tile by tile of output rows.
                let dw = |cols: &[A], r0: usize, w: usize, gw: &mut [A]| {
                    for gi in 0..groups {
                        matmul_serial_if(
                            serial,
                            MatMut::row_major(gw, gi * cout_g * kk, cout_g, kk),
                            MatRef::strided(dyb, gi * cout_g * l + r0, cout_g, w, l),
                            MatRef::row_major(cols, gi * kk * w, kk, w).t(),
                            true,
                        );
                    }
                };
                if g.is_pointwise() {
                    dw(xb, 0, l, gw);
                } else {
                    let (rows, ow, step) = (g.out[0] * g.out[1], g.out[2], tile_rows::<A>(&g));
                    for r0 in (0..rows).step_by(step) {
                        let r1 = (r0 + step).min(rows);
                        let cols = &mut cbuf[..g.cin * g.k_len() * (r1 - r0) * ow];
                        im2col_rows(xb, &g, r0..r1, cols);
                        dw(cols, r0 * ow, (r1 - r0) * ow, gw);
                    }
                }
                if has_bias {
                    for (o, row) in dyb.chunks(l).enumerate() {
                        gb[o] = gb[o] + crate::kernels::lane_dot(row, row, |v, _| v);
                    }
                }
                if !need_dx {
                    return;
                }
                if let Some((ga, flipped)) = &adjoint {
                    // dx = W' im2col(dy), W' = [cin, cout * k] (rotated kernels), by tiles.
                    let (rows, ow, step) = (ga.out[0] * ga.out[1], ga.out[2], tile_rows::<A>(ga));
                    let (kt, li) = (cout * ga.k_len(), ga.out_len());
                    for r0 in (0..rows).step_by(step) {
                        let r1 = (r0 + step).min(rows);
                        let w = (r1 - r0) * ow;
                        let tile = &mut dcols[..kt * w];
                        im2col_rows(dyb, ga, r0..r1, tile);
                        matmul_serial_if(
                            serial,
                            MatMut::strided(dxb, r0 * ow, g.cin, w, li),
                            MatRef::row_major(flipped, 0, g.cin, kt),
                            MatRef::row_major(tile, 0, kt, w),
                            false,
                        );
                    }
                } else {
                    // dcols = W^T dy per group (written straight into dx for 1x1 convolutions).
                    let dst: &mut [A] = if g.is_pointwise() { dxb } else { dcols };
                    for gi in 0..groups {
                        matmul_serial_if(
                            serial,
                            MatMut::row_major(dst, gi * kk * l, kk, l),
                            MatRef::row_major(weight, gi * cout_g * kk, cout_g, kk).t(),
                            MatRef::row_major(dyb, gi * cout_g * l, cout_g, l),
                            false,
                        );
                    }
                    if !g.is_pointwise() {
                        col2im(dcols, &g, dxb);
                    }
                }
            })
        });
        crate::kernels::add_into(self.weight.g(), &grads[..wlen]);
        if let Some(bias) = &mut self.bias {
            crate::kernels::add_into(bias.g(), &grads[wlen..]);
        }
        Ok(if need_dx { dx } else { Vec::new() })
    }

    pub fn forward(&self, x: &ArrayD<A>) -> Result<(ArrayD<A>, ConvCache<A>)> {
        let xs = std_slice(x).into_owned();
        let (y, shape) = self.forward_slice(&xs, x.shape())?;
        Ok((
            array(&shape, y),
            ConvCache {
                x: xs,
                shape: x.shape().to_vec(),
            },
        ))
    }

    pub fn apply(&self, x: &ArrayD<A>) -> Result<ArrayD<A>> {
        let (y, shape) = self.forward_slice(&std_slice(x), x.shape())?;
        Ok(array(&shape, y))
    }

    pub fn backward(&mut self, cache: &ConvCache<A>, dy: &ArrayD<A>) -> Result<ArrayD<A>> {
        let (batch, g) = self.geom(&cache.shape)?;
        check_shape("Conv backward dy", &self.out_shape(batch, &g), dy.shape())?;
        let dx = self.backward_slice(&cache.x, &cache.shape, &std_slice(dy), true)?;
        Ok(array(&cache.shape, dx))
    }
}

impl<A> Parameters<A> for Conv<A> {
    fn visit(&self, f: &mut dyn FnMut(&str, &Param<A>)) {
        f("weight", &self.weight);
        if let Some(b) = &self.bias {
            f("bias", b);
        }
    }
    fn visit_mut(&mut self, f: &mut dyn FnMut(&str, &mut Param<A>)) {
        f("weight", &mut self.weight);
        if let Some(b) = &mut self.bias {
            f("bias", b);
        }
    }
}

/// Nearest-neighbour upsampling by an integer factor on every spatial axis.
#[derive(Clone, Copy, Debug)]
pub struct Upsample {
    pub factor: usize,
}

impl Upsample {
    fn dims(shape: &[usize]) -> Result<(usize, [usize; 3])> {
        if !(3..=5).contains(&shape.len()) {
            return Err(NnError::Shape {
                context: "Upsample input [batch, channels, 1 to 3 spatial axes]".into(),
                expected: vec![],
                got: shape.to_vec(),
            });
        }
        Ok((shape[0] * shape[1], to3(&shape[2..], 1)))
    }

    fn out_shape(&self, shape: &[usize]) -> Vec<usize> {
        let mut s = shape.to_vec();
        for v in &mut s[2..] {
            *v *= self.factor;
        }
        s
    }

    /// Output `[b, c, f*d, f*h, f*w]` with `y[.., z, y, x] = x[.., z/f, y/f, x/f]`.
    pub(crate) fn forward_slice<A: Float>(&self, x: &[A], shape: &[usize]) -> Result<(Vec<A>, Vec<usize>)> {
        let (planes, [d, h, w]) = Self::dims(shape)?;
        let rank = shape.len() - 2;
        let f = self.factor;
        let (fd, fh, fw) = (if rank == 3 { f } else { 1 }, if rank >= 2 { f } else { 1 }, f);
        let (od, oh, ow) = (d * fd, h * fh, w * fw);
        let mut y = vec![A::zero(); planes * od * oh * ow];
        y.par_chunks_mut((od * oh * ow).max(1))
            .enumerate()
            .for_each(|(p, yp)| {
                let xp = &x[p * d * h * w..(p + 1) * d * h * w];
                for z in 0..od {
                    for r in 0..oh {
                        let src = &xp[((z / fd) * h + r / fh) * w..((z / fd) * h + r / fh + 1) * w];
                        let dst = &mut yp[(z * oh + r) * ow..(z * oh + r + 1) * ow];
                        for (run, &v) in dst.chunks_exact_mut(fw).zip(src) {
                            run.fill(v);
                        }
                    }
                }
            });
        Ok((y, self.out_shape(shape)))
    }

    /// dL/dx: sums each `f^rank` block of `dy`. `shape` is the input shape.
    pub(crate) fn backward_slice<A: Float>(&self, dy: &[A], shape: &[usize]) -> Result<Vec<A>> {
        let (planes, [d, h, w]) = Self::dims(shape)?;
        let rank = shape.len() - 2;
        let f = self.factor;
        let (fd, fh, fw) = (if rank == 3 { f } else { 1 }, if rank >= 2 { f } else { 1 }, f);
        let (od, oh, ow) = (d * fd, h * fh, w * fw);
        let mut dx = vec![A::zero(); planes * d * h * w];
        dx.par_chunks_mut((d * h * w).max(1))
            .enumerate()
            .for_each(|(p, dxp)| {
                let dyp = &dy[p * od * oh * ow..(p + 1) * od * oh * ow];
                for z in 0..od {
                    for r in 0..oh {
                        let row = &dyp[(z * oh + r) * ow..(z * oh + r + 1) * ow];
                        let dst = &mut dxp[((z / fd) * h + r / fh) * w..((z / fd) * h + r / fh + 1) * w];
                        for (d, run) in dst.iter_mut().zip(row.chunks_exact(fw)) {
                            *d = run.iter().fold(*d, |a, &v| a + v);
                        }
                    }
                }
            });
        Ok(dx)
    }

    pub fn forward<A: Float>(&self, x: &ArrayD<A>) -> Result<ArrayD<A>> {
        let (y, s) = self.forward_slice(&std_slice(x), x.shape())?;
        Ok(array(&s, y))
    }

    /// `input_shape` is the forward input's shape.
    pub fn backward<A: Float>(&self, input_shape: &[usize], dy: &ArrayD<A>) -> Result<ArrayD<A>> {
        check_shape("Upsample backward dy", &self.out_shape(input_shape), dy.shape())?;
        Ok(array(
            input_shape,
            self.backward_slice(&std_slice(dy), input_shape)?,
        ))
    }
}
