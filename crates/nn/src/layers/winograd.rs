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

use crate::gemm::{MatMut, MatRef, matmul_uncounted};
use crate::param::{Float, cast};

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

    /// Whether one item has at least [`CHUNK_ALIGN`] tiles (below that, the products are too
    /// narrow for Winograd to pay off).
    pub fn fills_a_chunk(&self) -> bool {
        let (th, tw) = self.tiles();
        th * tw >= CHUNK_ALIGN
    }

    /// Tiles per chunk: about [`CHUNK_BYTES`] of transformed input and output, in whole
    /// multiples of the GEMM micro-tile width where the item allows.
    fn chunk_tiles<A>(&self, cin: usize, cout: usize) -> usize {
        let (th, tw) = self.tiles();
        let per_tile = POINTS * (cin + cout) * std::mem::size_of::<A>();
        let n = (CHUNK_BYTES / per_tile.max(1)) / CHUNK_ALIGN * CHUNK_ALIGN;
        n.max(CHUNK_ALIGN).min(th * tw).max(1)
    }

    /// Scratch lengths `(transformed input + row buffers, transformed output)` that
    /// [`forward_item`] and [`weight_grad_item`] need.
    pub fn scratch<A>(&self, cin: usize, cout: usize) -> (usize, usize) {
        let n = self.chunk_tiles::<A>(cin, cout);
        let tw = self.tiles().1;
        let rows = n.div_ceil(tw) + 1;
        (POINTS * cin * n + Rows::len(rows, tw), POINTS * cout * n)
    }
}

/// The tiles `t0..t1` of an item (in row-major tile order), as segments of tile rows:
/// `(tile row, tile columns, offset of the first one in the chunk)`.
fn segments(tw: usize, tiles: Range<usize>) -> impl Iterator<Item = (usize, Range<usize>, usize)> {
    let first_row = tiles.start / tw;
    let end_row = tiles.end.div_ceil(tw);
    (first_row..end_row).map(move |tr| {
        let lo = tiles.start.max(tr * tw) - tr * tw;
        let hi = tiles.end.min((tr + 1) * tw) - tr * tw;
        (tr, lo..hi, tr * tw + lo - tiles.start)
    })
}

/// Work rows of the input transform: the zero-padded input rows a chunk's tiles cover.
struct Rows;

impl Rows {
    fn len(tile_rows: usize, tw: usize) -> usize {
        (2 * tile_rows + 2) * (2 * tw + 2)
    }
}

/// Tiles per chunk are a multiple of this (the GEMM kernel's 64-wide side) when possible.
const CHUNK_ALIGN: usize = 64;

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

/// `B^T d` for 4 consecutive inputs.
#[inline(always)]
fn b_apply<A: Float>(d: [A; 4]) -> [A; 4] {
    [d[0] - d[2], d[1] + d[2], d[2] - d[1], d[1] - d[3]]
}

/// `A^T m`: the 2 outputs of 4 transformed values.
#[inline(always)]
fn a_apply<A: Float>(m: [A; 4]) -> [A; 2] {
    [m[0] + m[1] + m[2], m[1] - m[2] - m[3]]
}

/// `A y`, the adjoint of [`a_apply`].
#[inline(always)]
fn a_adjoint<A: Float>(y: [A; 2]) -> [A; 4] {
    [y[0], y[0] + y[1], y[0] - y[1], -y[1]]
}

/// The transformed kernels `U = G g G^T` of weights `[cout, cin, 3, 3]`, as `[point][cout][cin]`.
pub(super) fn transform_weights<A: Float>(weight: &[A], cout: usize, cin: usize) -> Vec<A> {
    let half = cast::<A>(0.5);
    let mut u = vec![A::zero(); POINTS * cout * cin];
    for (oc, g) in weight.chunks_exact(9).enumerate() {
        // Columns first: t[i][j] = (G g[.., j])[i]; then rows: u[i][k] = (G t[i][..])[k].
        let cols: [[A; 4]; 3] = std::array::from_fn(|j| g_apply([g[j], g[3 + j], g[6 + j]], half));
        for i in 0..4 {
            let row = g_apply([cols[0][i], cols[1][i], cols[2][i]], half);
            for (k, &v) in row.iter().enumerate() {
                u[(i * 4 + k) * cout * cin + oc] = v;
            }
        }
    }
    u
}

/// `dW[o, c] += G^T dU[.., o, c] G` for the accumulated transformed gradient `du`
/// (`[point][cout][cin]`) into weights `[cout, cin, 3, 3]`.
pub(super) fn weight_grad_from_transformed<A: Float>(du: &[A], cout: usize, cin: usize, dw: &mut [A]) {
    let half = cast::<A>(0.5);
    let plane = cout * cin;
    for (oc, g) in dw.chunks_exact_mut(9).enumerate() {
        let at = |i: usize, k: usize| du[(i * 4 + k) * plane + oc];
        // Rows first: r[i][..] = G^T du[i][..]; then columns: dg[.., j] = G^T r[..][j].
        let rows: [[A; 3]; 4] =
            std::array::from_fn(|i| g_adjoint([at(i, 0), at(i, 1), at(i, 2), at(i, 3)], half));
        for j in 0..3 {
            let col = g_adjoint([rows[0][j], rows[1][j], rows[2][j], rows[3][j]], half);
            for (i, &v) in col.iter().enumerate() {
                g[i * 3 + j] = g[i * 3 + j] + v;
            }
        }
    }
}

/// `V = B^T d B` for the tiles `tiles` of item `x` (`[cin, h, w]`) into `v[c][point][tile]`
/// (`n = tiles.len()`); `work` has [`Rows::len`] elements.
fn transform_input<A: Float>(
    x: &[A],
    cin: usize,
    p: Plane,
    tiles: Range<usize>,
    v: &mut [A],
    work: &mut [A],
) {
    let (_, tw) = p.tiles();
    let n = tiles.len();
    let first_row = tiles.start / tw;
    let pw = 2 * tw + 2;
    let prows = 2 * (tiles.end.div_ceil(tw) - first_row) + 2;
    let padded = &mut work[..prows * pw];
    for (c, vc) in v.chunks_exact_mut(POINTS * n).take(cin).enumerate() {
        let xc = &x[c * p.h * p.w..(c + 1) * p.h * p.w];
        // Padded row i holds input row 2 * first_row + i - 1 at columns 1..=w.
        for (i, row) in padded.chunks_exact_mut(pw).enumerate() {
            match (2 * first_row + i).checked_sub(1).filter(|&r| r < p.h) {
                Some(r) => {
                    row[0] = A::zero();
                    row[1..=p.w].copy_from_slice(&xc[r * p.w..(r + 1) * p.w]);
                    row[p.w + 1..].fill(A::zero());
                }
                None => row.fill(A::zero()),
            }
        }
        for (tr, cols, off) in segments(tw, tiles.clone()) {
            let base = 2 * (tr - first_row) * pw;
            let r: [&[A]; 4] = std::array::from_fn(|k| &padded[base + k * pw..base + (k + 1) * pw]);
            for (u, tj) in cols.enumerate() {
                let s = 2 * tj;
                let h: [[A; 4]; 4] =
                    std::array::from_fn(|k| b_apply([r[k][s], r[k][s + 1], r[k][s + 2], r[k][s + 3]]));
                for j in 0..4 {
                    let t = b_apply([h[0][j], h[1][j], h[2][j], h[3][j]]);
                    for (i, &val) in t.iter().enumerate() {
                        vc[(i * 4 + j) * n + off + u] = val;
                    }
                }
            }
        }
    }
}

/// `dM = A dY A^T` for the tiles `tiles` of `dy` (`[cout, h, w]`; zero beyond odd edges)
/// into `dm[o][point][tile]`.
fn transform_output_grad<A: Float>(dy: &[A], cout: usize, p: Plane, tiles: Range<usize>, dm: &mut [A]) {
    let (_, tw) = p.tiles();
    let n = tiles.len();
    for (o, mo) in dm.chunks_exact_mut(POINTS * n).take(cout).enumerate() {
        let yo = &dy[o * p.h * p.w..(o + 1) * p.h * p.w];
        for (tr, cols, off) in segments(tw, tiles.clone()) {
            let row = |a: usize| yo.get((2 * tr + a) * p.w..(2 * tr + a + 1) * p.w).unwrap_or(&[]);
            let (r0, r1) = (row(0), row(1));
            for (u, tj) in cols.enumerate() {
                let at = |r: &[A], c: usize| r.get(c).copied().unwrap_or(A::zero());
                let (c0, c1) = (2 * tj, 2 * tj + 1);
                // Columns of A dY, then rows of (A dY) A^T.
                let even = a_adjoint([at(r0, c0), at(r1, c0)]);
                let odd = a_adjoint([at(r0, c1), at(r1, c1)]);
                for i in 0..4 {
                    let q = a_adjoint([even[i], odd[i]]);
                    for (k, &val) in q.iter().enumerate() {
                        mo[(i * 4 + k) * n + off + u] = val;
                    }
                }
            }
        }
    }
}

/// `y = A^T M A (+ bias)` for the tiles `tiles`, cropped to the output.
fn transform_output<A: Float>(
    m: &[A],
    cout: usize,
    p: Plane,
    tiles: Range<usize>,
    bias: Option<&[A]>,
    y: &mut [A],
) {
    let (_, tw) = p.tiles();
    let n = tiles.len();
    for (o, mo) in m.chunks_exact(POINTS * n).take(cout).enumerate() {
        let b = bias.map_or(A::zero(), |b| b[o]);
        let yo = &mut y[o * p.h * p.w..(o + 1) * p.h * p.w];
        for (tr, cols, off) in segments(tw, tiles.clone()) {
            for (u, tj) in cols.enumerate() {
                let at = |i: usize, k: usize| mo[(i * 4 + k) * n + off + u];
                // Rows of A^T M for each column k, then A^T across k.
                let cols: [[A; 2]; 4] =
                    std::array::from_fn(|k| a_apply([at(0, k), at(1, k), at(2, k), at(3, k)]));
                for a in 0..2 {
                    let r = 2 * tr + a;
                    if r >= p.h {
                        break;
                    }
                    let out = a_apply([cols[0][a], cols[1][a], cols[2][a], cols[3][a]]);
                    for (k, &val) in out.iter().enumerate() {
                        let c = 2 * tj + k;
                        if c < p.w {
                            yo[r * p.w + c] = val + b;
                        }
                    }
                }
            }
        }
    }
}

/// One item's convolution `y = conv(x) (+ bias)` from the transformed kernels `u`
/// ([`transform_weights`]); `x` is `[cin, h, w]`, `y` is `[cout, h, w]`; `buf_v` and
/// `buf_m` have the lengths of [`Plane::scratch`].
#[allow(clippy::too_many_arguments)]
pub(super) fn forward_item<A: Float>(
    x: &[A],
    u: &[A],
    bias: Option<&[A]>,
    (cin, cout): (usize, usize),
    p: Plane,
    y: &mut [A],
    (buf_v, buf_m): (&mut [A], &mut [A]),
    serial: bool,
) {
    let (th, tw) = p.tiles();
    let step = p.chunk_tiles::<A>(cin, cout);
    for t0 in (0..th * tw).step_by(step) {
        let tiles = t0..(t0 + step).min(th * tw);
        let n = tiles.len();
        let (v, work) = buf_v.split_at_mut(POINTS * cin * n);
        let m = &mut buf_m[..POINTS * cout * n];
        transform_input(x, cin, p, tiles.clone(), v, work);
        for pt in 0..POINTS {
            matmul_uncounted(
                serial,
                MatMut::strided(m, pt * n, cout, n, POINTS * n),
                MatRef::row_major(u, pt * cout * cin, cout, cin),
                MatRef::strided(v, pt * n, cin, n, POINTS * n),
                false,
            );
        }
        transform_output(m, cout, p, tiles, bias, y);
    }
}

/// Adds one item's transformed weight gradient `dU_p += (A dY A^T)_p V_p^T` into `du`
/// (`[point][cout][cin]`; [`weight_grad_from_transformed`] turns the sum into `dW`).
#[allow(clippy::too_many_arguments)]
pub(super) fn weight_grad_item<A: Float>(
    x: &[A],
    dy: &[A],
    (cin, cout): (usize, usize),
    p: Plane,
    du: &mut [A],
    (buf_v, buf_m): (&mut [A], &mut [A]),
    serial: bool,
) {
    let (th, tw) = p.tiles();
    let step = p.chunk_tiles::<A>(cin, cout);
    for t0 in (0..th * tw).step_by(step) {
        let tiles = t0..(t0 + step).min(th * tw);
        let n = tiles.len();
        let (v, work) = buf_v.split_at_mut(POINTS * cin * n);
        let dm = &mut buf_m[..POINTS * cout * n];
        transform_input(x, cin, p, tiles.clone(), v, work);
        transform_output_grad(dy, cout, p, tiles, dm);
        for pt in 0..POINTS {
            matmul_uncounted(
                serial,
                MatMut::row_major(du, pt * cout * cin, cout, cin),
                MatRef::strided(dm, pt * n, cout, n, POINTS * n),
                MatRef::strided(v, pt * n, cin, n, POINTS * n).t(),
                true,
            );
        }
    }
}
