//! Winograd F(2x2, 3x3) (Lavin & Gray, 2016) for 2-d convolutions with 3x3 kernels, unit
//! stride, padding 1 and one group: each 2x2 block of outputs comes from 16 products of
//! transformed 4x4 input tiles with transformed kernels, instead of 36 multiply-adds, so
//! the products do 2.25 times less work than im2col + GEMM.
//!
//! One item at a time, in chunks of whole tile rows sized to stay in cache:
//! 1. `V = B^T d B` for every 4x4 input tile `d` (zero outside the input), laid out
//!    `[channel][point][tile]`, so point `p`'s matrix is a strided view `[cin, tiles]`;
//! 2. 16 products `M_p = U_p V_p` with the transformed kernels `U = G g G^T`, `[p][out][in]`;
//! 3. `Y = A^T M A` back to 2x2 outputs, cropped at odd edges.
//!
//! The weight gradient is the adjoint of the same algebra: `dU_p += (A dY A^T)_p V_p^T`
//! summed over tiles, then `dg = G^T dU G`. The input gradient of a same-padded 3x3
//! convolution is again one (of `dy`, with rotated kernels), so it runs through [`forward_item`].
//!
//! The interpolation points are 0, 1, -1 and infinity: every transform is adds, subtracts
//! and exact halvings, so the rounding error stays at the level of the direct sum.

use std::ops::Range;

mod tiles;

use std::mem::MaybeUninit;

use rayon::prelude::*;
use tiles::Lanes;

use crate::gemm::{MatMut, MatRef, matmul_uncounted};
use crate::param::Float;
use crate::transpose::transpose;

/// Transform points per tile (4x4).
pub(super) const POINTS: usize = 16;

/// The 2-d sizes of one convolution item.
#[derive(Clone, Copy, Debug)]
pub(super) struct Plane {
    pub h: usize,
    pub w: usize,
}

impl Plane {
    /// Tile rows and tiles per row (each tile yields up to 2x2 outputs).
    fn tiles(&self) -> (usize, usize) {
        (self.h.div_ceil(2), self.w.div_ceil(2))
    }

    /// Items per task for a batch of `batch`: 1 when an item has at least [`CHUNK_ALIGN`]
    /// tiles; for smaller planes the fewest whole items that reach it, dividing the batch
    /// (a function of the sizes only). `None` when no such group exists: the products would
    /// be too narrow for Winograd to pay off.
    pub fn items_per_task(&self, batch: usize) -> Option<usize> {
        let (th, tw) = self.tiles();
        let tiles = th * tw;
        if tiles >= CHUNK_ALIGN {
            return Some(1);
        }
        let fewest = CHUNK_ALIGN.div_ceil(tiles.max(1));
        (fewest..=batch).find(|&g| batch.is_multiple_of(g) && g * tiles <= MAX_GROUP_TILES)
    }

    /// Tile rows per chunk: about [`CHUNK_BYTES`] of transformed input and output, in
    /// whole multiples of the GEMM kernel's 64-wide side where the row length allows.
    fn chunk_rows<A>(&self, cin: usize, cout: usize) -> usize {
        let (th, tw) = self.tiles();
        let per_row = POINTS * (cin + cout) * std::mem::size_of::<A>() * tw;
        let rows = (CHUNK_BYTES / per_row.max(1)).max(1);
        let rows = match CHUNK_ALIGN.checked_rem(tw) {
            Some(0) => (rows / (CHUNK_ALIGN / tw)).max(1) * (CHUNK_ALIGN / tw),
            _ => rows,
        };
        rows.min(th).max(1)
    }

    /// Scratch lengths `(transformed input + padded rows, transformed output)` that
    /// [`forward_items`] and [`weight_grad_items`] need for tasks of `items` items.
    pub fn scratch<A>(&self, cin: usize, cout: usize, items: usize) -> (usize, usize) {
        let (th, tw) = self.tiles();
        let rows = if items == 1 {
            self.chunk_rows::<A>(cin, cout)
        } else {
            th
        };
        let n = rows * tw * items;
        (POINTS * cin * n + self.padded_len(rows), POINTS * cout * n)
    }

    /// The chunks of a task of `items` items, each a list of `(item, tile rows)` parts whose
    /// tiles lie side by side in the chunk: tile-row chunks of a single item, or all items
    /// whole in one chunk.
    fn chunks<A>(&self, cin: usize, cout: usize, items: usize) -> Vec<Vec<(usize, Range<usize>)>> {
        let th = self.tiles().0;
        if items > 1 {
            return vec![(0..items).map(|i| (i, 0..th)).collect()];
        }
        let step = self.chunk_rows::<A>(cin, cout);
        (0..th)
            .step_by(step)
            .map(|r0| vec![(0, r0..(r0 + step).min(th))])
            .collect()
    }

    /// Length of the zero-padded input rows that `rows` tile rows cover, split into even and
    /// odd columns, plus as many input rows (a [`RowMap`]'s output).
    fn padded_len(&self, rows: usize) -> usize {
        (2 * rows + 2) * (2 * (self.tiles().1 + 1) + self.w)
    }
}

/// An elementwise map of the input applied as it is read, `map(item, channel, values, out)`
/// for runs of whole rows of one channel (a fused GroupNorm + SiLU): the mapped input is
/// never stored whole.
pub(super) type RowMap<'a, A> = &'a (dyn Fn(usize, usize, &[A], &mut [A]) + Sync);

/// Tiles per chunk are a multiple of this (the GEMM kernel's 64-wide side) when possible.
const CHUNK_ALIGN: usize = 64;

/// Most tiles in a chunk of several whole (small) items.
const MAX_GROUP_TILES: usize = 4 * CHUNK_ALIGN;

/// Size of the transformed input and output of one chunk: within a core's L2 cache.
const CHUNK_BYTES: usize = 1 << 20;

/// `G v` for a kernel row or column `v`: the 4 values at the points 0, 1, -1, infinity.
#[inline(always)]
fn g_apply<A: Float>(v: [A; 3], half: A) -> [A; 4] {
    [
        v[0],
        (v[0] + v[1] + v[2]) * half,
        (v[0] - v[1] + v[2]) * half,
        v[2],
    ]
}

/// `G^T u`, the adjoint of [`g_apply`].
#[inline(always)]
fn g_adjoint<A: Float>(u: [A; 4], half: A) -> [A; 3] {
    [
        u[0] + (u[1] + u[2]) * half,
        (u[1] - u[2]) * half,
        (u[1] + u[2]) * half + u[3],
    ]
}

/// The transformed kernels `U = G g G^T` of weights `[cout, cin, 3, 3]`, as `[point][cout][cin]`
/// (in parallel over output channels: it runs once per call, before the per-item work).
pub(super) fn transform_weights<A: Float>(weight: &[A], cout: usize, cin: usize) -> Vec<A> {
    let half = A::of_f64(0.5);
    let len = POINTS * cout * cin;
    // Written once below, element by element, so not zeroed first.
    let mut u: Vec<A> = Vec::with_capacity(len);
    // rows[o] = the 16 rows `u[point][o][..]`.
    let mut rows: Vec<Vec<&mut [MaybeUninit<A>]>> = (0..cout).map(|_| Vec::with_capacity(POINTS)).collect();
    for point in u.spare_capacity_mut()[..len].chunks_mut((cout * cin).max(1)) {
        for (o, row) in point.chunks_mut(cin.max(1)).enumerate() {
            rows[o].push(row);
        }
    }
    rows.into_par_iter().enumerate().for_each(|(o, mut rows)| {
        // Blocks of 16 input channels, each point's row stored whole: the 16 rows lie a
        // multiple of 4 KiB apart, so element-wise stores to them would fight over the same
        // cache sets.
        let kernels = &weight[o * cin * 9..(o + 1) * cin * 9];
        for (b, block) in kernels.chunks(16 * 9).enumerate() {
            let mut out = [[A::zero(); 16]; POINTS];
            for (c, g) in block.chunks_exact(9).enumerate() {
                // Columns first: t[i][j] = (G g[.., j])[i]; then rows: u[i][k] = (G t[i][..])[k].
                let t0 = g_apply([g[0], g[3], g[6]], half);
                let t1 = g_apply([g[1], g[4], g[7]], half);
                let t2 = g_apply([g[2], g[5], g[8]], half);
                for i in 0..4 {
                    let row = g_apply([t0[i], t1[i], t2[i]], half);
                    for k in 0..4 {
                        out[i * 4 + k][c] = row[k];
                    }
                }
            }
            let n = block.len() / 9;
            for (row, vals) in rows.iter_mut().zip(&out) {
                for (d, &v) in row[b * 16..b * 16 + n].iter_mut().zip(&vals[..n]) {
                    d.write(v);
                }
            }
        }
    });
    // SAFETY: every (point, o) row of `cin` elements was written whole above (the blocks
    // of 16 channels cover `0..cin` for every output channel `o`), so all `len` are set.
    unsafe { u.set_len(len) };
    u
}

/// `dW[o, c] += G^T dU[.., o, c] G` for the accumulated transformed gradient `du`
/// (`[point][cout][cin]`) into weights `[cout, cin, 3, 3]`.
pub(super) fn weight_grad_from_transformed<A: Float>(du: &[A], cout: usize, cin: usize, dw: &mut [A]) {
    let half = A::of_f64(0.5);
    let plane = cout * cin;
    // Blocks of 16 kernels, each point's 16 values read whole (the points' rows lie a
    // multiple of 4 KiB apart, see `transform_weights`).
    dw.par_chunks_mut(16 * 9).enumerate().for_each(|(b, block)| {
        let len = block.len() / 9;
        let mut pts = [[A::zero(); 16]; POINTS];
        for (q, vals) in pts.iter_mut().enumerate() {
            vals[..len].copy_from_slice(&du[q * plane + b * 16..q * plane + b * 16 + len]);
        }
        for (k, g) in block.chunks_exact_mut(9).enumerate() {
            let at = |q: usize| pts[q][k];
            // Rows first: r[i][..] = G^T du[i][..]; then columns: dg[.., j] = G^T r[..][j].
            let rows = [
                g_adjoint([at(0), at(1), at(2), at(3)], half),
                g_adjoint([at(4), at(5), at(6), at(7)], half),
                g_adjoint([at(8), at(9), at(10), at(11)], half),
                g_adjoint([at(12), at(13), at(14), at(15)], half),
            ];
            for j in 0..3 {
                let col = g_adjoint([rows[0][j], rows[1][j], rows[2][j], rows[3][j]], half);
                for (i, &v) in col.iter().enumerate() {
                    g[i * 3 + j] = g[i * 3 + j] + v;
                }
            }
        }
    });
}

/// Tiles in the next block of a tile row with `left` tiles left: 16 (one AVX-512 register
/// of f32), 8, 4 (an 8 x 8 plane's row of tiles), or single tiles.
#[inline(always)]
fn block_width(left: usize) -> usize {
    match left {
        16.. => 16,
        8.. => 8,
        4.. => 4,
        _ => 1,
    }
}

/// Calls `$block::<A, N>(args)` over a tile row of `$tw` tiles in blocks of `N` = 16, 8, 4 or 1
/// tiles ([`block_width`]), with `$t` (the block's first tile) and `$col` (its column in the
/// chunk, from `$col0`) bound for the arguments. A macro, not a closure: the call must be
/// inlined into the AVX-512 function that runs the transform.
macro_rules! for_blocks {
    ($tw:expr, $col0:expr, |$t:ident, $col:ident| $block:ident($($arg:expr),*)) => {{
        let mut $t = 0;
        while $t < $tw {
            let width = block_width($tw - $t);
            let $col = $col0 + $t;
            match width {
                16 => $block::<A, 16>($($arg),*),
                8 => $block::<A, 8>($($arg),*),
                4 => $block::<A, 4>($($arg),*),
                _ => $block::<A, 1>($($arg),*),
            }
            $t += width;
        }
    }};
}

/// Splits `row` into its even and odd columns (zero beyond the row).
#[inline(always)]
fn deinterleave<A: Float>(row: &[A], even: &mut [A], odd: &mut [A]) {
    let half = row.len() / 2;
    even[half..].fill(A::zero());
    odd[half..].fill(A::zero());
    let pairs = row.chunks_exact(2);
    if let [last] = pairs.remainder() {
        even[half] = *last;
    }
    for ((pair, e), o) in pairs.zip(even.iter_mut()).zip(odd.iter_mut()) {
        *e = pair[0];
        *o = pair[1];
    }
}

/// `V = B^T d B` for the tiles of tile rows `rows` of item `x` (`[cin, h, w]`, each row
/// first mapped by `pre` if given) into `v[c][point][tile]` (the chunk's `n` tiles, these
/// from column `col0`); `work` has [`Plane::padded_len`].
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn transform_input<A: Float>(
    x: &[A],
    cin: usize,
    p: Plane,
    rows: Range<usize>,
    (n, col0): (usize, usize),
    pre: Option<(RowMap<'_, A>, usize)>,
    v: &mut [A],
    work: &mut [A],
) {
    let tw = p.tiles().1;
    let half = tw + 1;
    let (padded, mapped) = work[..p.padded_len(rows.len())].split_at_mut((2 * rows.len() + 2) * 2 * half);
    for (c, vc) in v.chunks_exact_mut(POINTS * n).take(cin).enumerate() {
        let xc = &x[c * p.h * p.w..(c + 1) * p.h * p.w];
        // Padded row i holds input row 2 * rows.start + i - 1, and padded column q input
        // column q - 1: even q in `e[q / 2]`, odd q in `o[q / 2]`.
        // Input rows lo..hi feed these padded rows; mapped by `pre` in one span if given.
        let lo = (2 * rows.start).saturating_sub(1).min(p.h);
        let hi = (2 * rows.end + 1).min(p.h);
        let src = &xc[lo * p.w..hi * p.w];
        let src = match pre {
            Some((map, item)) => {
                let out = &mut mapped[..src.len()];
                map(item, c, src, out);
                &*out
            }
            None => src,
        };
        for (i, row) in padded.chunks_exact_mut(2 * half).enumerate() {
            let (e, o) = row.split_at_mut(half);
            match (2 * rows.start + i).checked_sub(1).filter(|&r| r < p.h) {
                Some(r) => {
                    e[0] = A::zero();
                    deinterleave(&src[(r - lo) * p.w..(r - lo + 1) * p.w], o, &mut e[1..]);
                }
                None => row.fill(A::zero()),
            }
        }
        let padded = &*padded;
        for (tl, rows4) in padded
            .chunks_exact(4 * half)
            .zip(padded[4 * half..].chunks_exact(4 * half))
            .enumerate()
        {
            // Padded rows 2 tl .. 2 tl + 4 of this tile row.
            let (r01, r23) = (rows4.0, rows4.1);
            let eo = [
                &r01[..2 * half],
                &r01[2 * half..],
                &r23[..2 * half],
                &r23[2 * half..],
            ];
            for_blocks!(tw, col0 + tl * tw, |t, col| input_block(&eo, half, t, vc, n, col));
        }
    }
}

/// The 4 columns of the `N` tiles from `t` in one padded row (`half` even, then odd columns).
#[inline(always)]
fn tile_row<A: Float, const N: usize>(row: &[A], half: usize, t: usize) -> [Lanes<A, N>; 4] {
    let (e, o) = row.split_at(half);
    [
        Lanes::load(e, t),
        Lanes::load(o, t),
        Lanes::load(e, t + 1),
        Lanes::load(o, t + 1),
    ]
}

/// [`tiles::input`] of the `N` tiles from `t` of one tile row (padded rows `eo`, each its
/// `half` even then odd columns), stored at column `col`.
#[inline(always)]
fn input_block<A: Float, const N: usize>(
    eo: &[&[A]; 4],
    half: usize,
    t: usize,
    vc: &mut [A],
    n: usize,
    col: usize,
) {
    let v = tiles::input([
        tile_row::<A, N>(eo[0], half, t),
        tile_row(eo[1], half, t),
        tile_row(eo[2], half, t),
        tile_row(eo[3], half, t),
    ]);
    for (pt, lanes) in v.into_iter().enumerate() {
        lanes.store(vc, pt * n + col);
    }
}

/// `dM = A dY A^T` for the tiles of tile rows `rows` of `dy` (`[cout, h, w]`; zero beyond
/// odd edges) into `dm[o][point][tile]`.
#[inline(always)]
fn transform_output_grad<A: Float>(
    dy: &[A],
    cout: usize,
    p: Plane,
    rows: Range<usize>,
    (n, col0): (usize, usize),
    dm: &mut [A],
) {
    let tw = p.tiles().1;
    for (o, mo) in dm.chunks_exact_mut(POINTS * n).take(cout).enumerate() {
        let yo = &dy[o * p.h * p.w..(o + 1) * p.h * p.w];
        for (tl, tr) in rows.clone().enumerate() {
            let row = |r: usize| (r < p.h).then(|| &yo[r * p.w..(r + 1) * p.w]);
            let out_rows = [row(2 * tr), row(2 * tr + 1)];
            for_blocks!(tw, col0 + tl * tw, |t, col| output_grad_block(
                &out_rows, t, mo, n, col
            ));
        }
    }
}

/// Output-gradient columns `c0 + 2 l + parity` of `row` for `l < N` (zero beyond the row,
/// or for a missing row).
#[inline(always)]
fn grad_lanes<A: Float, const N: usize>(row: Option<&[A]>, c0: usize, parity: usize) -> Lanes<A, N> {
    match row {
        Some(row) if c0 + 2 * N <= row.len() => Lanes::load_strided(row, c0, parity),
        Some(row) => {
            let mut v = [A::zero(); N];
            for (l, d) in v.iter_mut().enumerate() {
                *d = row.get(c0 + 2 * l + parity).copied().unwrap_or(A::zero());
            }
            Lanes(v)
        }
        None => Lanes([A::zero(); N]),
    }
}

/// [`tiles::output_grad`] of the `N` tiles from `t` of one tile row (output rows `rows`,
/// `None` below the edge), stored at column `col`.
#[inline(always)]
fn output_grad_block<A: Float, const N: usize>(
    rows: &[Option<&[A]>; 2],
    t: usize,
    mo: &mut [A],
    n: usize,
    col: usize,
) {
    let c0 = 2 * t;
    let m = tiles::output_grad([
        [grad_lanes::<A, N>(rows[0], c0, 0), grad_lanes(rows[0], c0, 1)],
        [grad_lanes(rows[1], c0, 0), grad_lanes(rows[1], c0, 1)],
    ]);
    for (pt, lanes) in m.into_iter().enumerate() {
        lanes.store(mo, pt * n + col);
    }
}

/// `y = A^T M A (+ bias)` for the tiles of tile rows `rows`, cropped to the output.
#[inline(always)]
fn transform_output<A: Float>(
    m: &[A],
    cout: usize,
    p: Plane,
    rows: Range<usize>,
    (n, col0): (usize, usize),
    bias: Option<&[A]>,
    y: &mut [MaybeUninit<A>],
) {
    let tw = p.tiles().1;
    for (o, mo) in m.chunks_exact(POINTS * n).take(cout).enumerate() {
        let b = bias.map_or(A::zero(), |b| b[o]);
        let yo = &mut y[o * p.h * p.w..(o + 1) * p.h * p.w];
        for (tl, tr) in rows.clone().enumerate() {
            // Output rows 2 tr and 2 tr + 1 (the second absent below an odd edge).
            let (r0, r1) = yo[2 * tr * p.w..].split_at_mut(p.w);
            let mut out_rows = [r0, r1.get_mut(..p.w).unwrap_or(&mut [])];
            for_blocks!(tw, col0 + tl * tw, |t, col| output_block(
                mo,
                n,
                col,
                b,
                t,
                &mut out_rows
            ));
        }
    }
}

/// [`tiles::output`] (+ `b`) of the `N` tiles from `t` of one tile row, read at column `col`
/// and written into the output rows (cropped to their length).
#[inline(always)]
fn output_block<A: Float, const N: usize>(
    mo: &[A],
    n: usize,
    col: usize,
    b: A,
    t: usize,
    rows: &mut [&mut [MaybeUninit<A>]; 2],
) {
    let mut m = [Lanes([A::zero(); N]); POINTS];
    for (q, mq) in m.iter_mut().enumerate() {
        *mq = Lanes::load(mo, q * n + col);
    }
    let y = tiles::output(m);
    let c0 = 2 * t;
    for (row, ya) in rows.iter_mut().zip(&y) {
        if c0 + 2 * N <= row.len() {
            for (l, pair) in row[c0..c0 + 2 * N].chunks_exact_mut(2).enumerate() {
                pair[0].write(ya[0].0[l] + b);
                pair[1].write(ya[1].0[l] + b);
            }
        } else {
            for l in 0..N {
                for (k, yk) in ya.iter().enumerate() {
                    if let Some(d) = row.get_mut(c0 + 2 * l + k) {
                        d.write(yk.0[l] + b);
                    }
                }
            }
        }
    }
}

/// The convolution `y = conv(pre(x)) (+ bias)` of a task of `items` items (the first being
/// item `first` of the batch for `pre`) from the transformed kernels `u`
/// ([`transform_weights`]); `x` is `[items, cin, h, w]`, `y` is `[items, cout, h, w]`, every
/// element of which is written (it may start uninitialised); `buf_v` and `buf_m` have the
/// lengths of [`Plane::scratch`].
#[allow(clippy::too_many_arguments)]
pub(super) fn forward_items<A: Float>(
    x: &[A],
    (items, pre): (usize, Option<(RowMap<'_, A>, usize)>),
    u: &[A],
    bias: Option<&[A]>,
    (cin, cout): (usize, usize),
    p: Plane,
    y: &mut [MaybeUninit<A>],
    (buf_v, buf_m): (&mut [A], &mut [A]),
    serial: bool,
) {
    let (tw, plane) = (p.tiles().1, p.h * p.w);
    for chunk in p.chunks::<A>(cin, cout, items) {
        let n = chunk.iter().map(|(_, rows)| rows.len() * tw).sum::<usize>();
        let (v, padded) = buf_v.split_at_mut(POINTS * cin * n);
        let m = &mut buf_m[..POINTS * cout * n];
        crate::vmath::wide(
            #[inline(always)]
            || {
                let mut col0 = 0;
                for (i, rows) in &chunk {
                    let xi = &x[i * cin * plane..(i + 1) * cin * plane];
                    let pre = pre.map(|(map, first)| (map, first + i));
                    transform_input(xi, cin, p, rows.clone(), (n, col0), pre, v, padded);
                    col0 += rows.len() * tw;
                }
            },
        );
        for pt in 0..POINTS {
            matmul_uncounted(
                serial,
                MatMut::strided(m, pt * n, cout, n, POINTS * n),
                MatRef::row_major(u, pt * cout * cin, cout, cin),
                MatRef::strided(v, pt * n, cin, n, POINTS * n),
                false,
            );
        }
        crate::vmath::wide(
            #[inline(always)]
            || {
                let mut col0 = 0;
                for (i, rows) in &chunk {
                    let yi = &mut y[i * cout * plane..(i + 1) * cout * plane];
                    transform_output(m, cout, p, rows.clone(), (n, col0), bias, yi);
                    col0 += rows.len() * tw;
                }
            },
        );
    }
}

/// Adds the transformed weight gradient of a task of `items` items (input `pre(x)`, as in
/// [`forward_items`]),
/// `dU_p += (A dY A^T)_p V_p^T`, into `du` (`[point][cout][cin]`;
/// [`weight_grad_from_transformed`] turns the sum into `dW`).
#[allow(clippy::too_many_arguments)]
pub(super) fn weight_grad_items<A: Float>(
    x: &[A],
    dy: &[A],
    (items, pre): (usize, Option<(RowMap<'_, A>, usize)>),
    (cin, cout): (usize, usize),
    p: Plane,
    du: &mut [A],
    (buf_v, buf_m): (&mut [A], &mut [A]),
    serial: bool,
) {
    let (tw, plane) = (p.tiles().1, p.h * p.w);
    let chunks = p.chunks::<A>(cin, cout, items);
    // One point's transformed input transposed (`[tile][channel]`), see below.
    let most = chunks
        .iter()
        .map(|c| c.iter().map(|(_, rows)| rows.len() * tw).sum::<usize>());
    let mut vt = vec![A::zero(); most.max().unwrap_or(0) * cin];
    for chunk in chunks {
        let n = chunk.iter().map(|(_, rows)| rows.len() * tw).sum::<usize>();
        let (v, padded) = buf_v.split_at_mut(POINTS * cin * n);
        let dm = &mut buf_m[..POINTS * cout * n];
        crate::vmath::wide(
            #[inline(always)]
            || {
                let mut col0 = 0;
                for (i, rows) in &chunk {
                    let xi = &x[i * cin * plane..(i + 1) * cin * plane];
                    let dyi = &dy[i * cout * plane..(i + 1) * cout * plane];
                    let pre = pre.map(|(map, first)| (map, first + i));
                    transform_input(xi, cin, p, rows.clone(), (n, col0), pre, v, padded);
                    transform_output_grad(dyi, cout, p, rows.clone(), (n, col0), dm);
                    col0 += rows.len() * tw;
                }
            },
        );
        for pt in 0..POINTS {
            // `V_p^T` as a row-major copy: gemm would pack `V_p` (contiguous along the
            // tiles, K) one element at a time (see `crate::transpose`).
            transpose(&v[pt * n..], POINTS * n, cin, n, &mut vt);
            matmul_uncounted(
                serial,
                MatMut::row_major(du, pt * cout * cin, cout, cin),
                MatRef::strided(dm, pt * n, cout, n, POINTS * n),
                MatRef::row_major(&vt, 0, n, cin),
                true,
            );
        }
    }
}
