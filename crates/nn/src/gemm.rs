//! The one matrix-multiply entry point, on top of the `gemm` crate.
//!
//! Operands are strided views, so the transposes a backward pass needs cost no copy.
//! Large products run in parallel in one of two ways, chosen from the sizes only:
//! - gemm's own rayon parallelism, which packs each operand once and deals micro-tiles of
//!   the output to the threads (best when K is not the largest dimension);
//! - independent output blocks, each a single-threaded gemm call (best for the long-K
//!   weight-gradient products, where gemm's per-K-block barriers cost more than re-packing).
//!
//! Neither splits K, and gemm's K blocking depends on the sizes only, so every output
//! element is computed by the same operations in the same order for any number of rayon
//! threads: results are bit-identical (tested below for 1 to 4 threads).

use std::marker::PhantomData;
use std::mem::MaybeUninit;

use rayon::prelude::*;

use crate::param::Float;

/// A read-only strided matrix view into a slice: element `(i, j)` is `data[off + i*rs + j*cs]`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct MatRef<'a, A> {
    pub data: &'a [A],
    pub off: usize,
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<'a, A> MatRef<'a, A> {
    /// A row-major `rows x cols` matrix occupying `data[off..]`.
    pub fn row_major(data: &'a [A], off: usize, rows: usize, cols: usize) -> Self {
        Self {
            data,
            off,
            rows,
            cols,
            rs: cols,
            cs: 1,
        }
    }

    /// A row-major matrix with an explicit row stride (a column block of a wider matrix).
    pub fn strided(data: &'a [A], off: usize, rows: usize, cols: usize, rs: usize) -> Self {
        Self {
            data,
            off,
            rows,
            cols,
            rs,
            cs: 1,
        }
    }

    /// A view of an ndarray matrix with non-negative strides (transposes included), read in
    /// place; `None` for negative strides.
    pub fn from_view(v: ndarray::ArrayView2<'a, A>) -> Option<Self> {
        let (rows, cols) = v.dim();
        let (rs, cs) = (v.strides()[0], v.strides()[1]);
        if rs < 0 || cs < 0 {
            return None;
        }
        let (rs, cs) = (rs as usize, cs as usize);
        let len = if rows == 0 || cols == 0 {
            0
        } else {
            1 + (rows - 1) * rs + (cols - 1) * cs
        };
        // SAFETY: with non-negative strides every element of the view lies in
        // `ptr..ptr + len`, all inside the allocation the view borrows, and the returned
        // view has the view's lifetime.
        let data = unsafe { std::slice::from_raw_parts(v.as_ptr(), len) };
        Some(Self {
            data,
            off: 0,
            rows,
            cols,
            rs,
            cs,
        })
    }

    /// The transpose (no copy).
    pub fn t(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
            ..self
        }
    }

    fn check(&self) {
        if self.rows > 0 && self.cols > 0 {
            let last = self.off + (self.rows - 1) * self.rs + (self.cols - 1) * self.cs;
            assert!(last < self.data.len(), "matrix view out of bounds");
        }
    }
}

/// A mutable row-major matrix view with row stride `rs`, into initialised elements or
/// into uninitialised capacity that a non-accumulating product fills (gemm does not read
/// its output unless it accumulates).
#[derive(Debug)]
pub(crate) struct MatMut<'a, A> {
    ptr: *mut A,
    len: usize,
    /// Written through `ptr`; this view holds the unique borrow of `len` elements.
    _borrow: PhantomData<&'a mut [A]>,
    pub off: usize,
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    /// Into uninitialised elements: only a non-accumulating product may write it.
    uninit: bool,
}

impl<'a, A> MatMut<'a, A> {
    pub fn row_major(data: &'a mut [A], off: usize, rows: usize, cols: usize) -> Self {
        Self::strided(data, off, rows, cols, cols)
    }

    pub fn strided(data: &'a mut [A], off: usize, rows: usize, cols: usize, rs: usize) -> Self {
        Self {
            ptr: data.as_mut_ptr(),
            len: data.len(),
            _borrow: PhantomData,
            off,
            rows,
            cols,
            rs,
            uninit: false,
        }
    }

    /// A view into uninitialised elements, for a product that does not accumulate: every
    /// element of the view is written, none is read.
    pub fn uninit(data: &'a mut [MaybeUninit<A>], off: usize, rows: usize, cols: usize, rs: usize) -> Self {
        Self {
            ptr: data.as_mut_ptr().cast(),
            len: data.len(),
            _borrow: PhantomData,
            off,
            rows,
            cols,
            rs,
            uninit: true,
        }
    }
}

/// Multiply-adds per parallel piece: large enough that the re-packing a piece does and the
/// rayon hand-off (a few microseconds) stay small next to ~20 us of arithmetic.
const PIECE_WORK: usize = 1 << 22;
/// At most this many pieces per product: enough for rayon to balance a few threads (and to
/// route around a core busy with other work) without re-packing operands too often.
const MAX_PIECES: usize = 8;
/// Column-band boundaries are multiples of this: gemm computes row-major outputs as
/// transposes, so our columns run along its 64-wide AVX-512 f32 micro-tile (x4 kernel); a
/// band of 96 would run half in the slower x2 edge kernel.
const COL_ALIGN: usize = 64;
/// Row-band boundaries are multiples of this (gemm's 6-wide micro-tile side, and 16).
const ROW_ALIGN: usize = 48;

/// How a product is parallelised: `pm` row bands x `pn` column bands of independent
/// single-threaded calls, or (`shared`) one call using gemm's rayon parallelism.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Split {
    pub pm: usize,
    pub pn: usize,
    pub shared: bool,
}

impl Split {
    /// One piece on the calling thread.
    pub const SERIAL: Self = Self {
        pm: 1,
        pn: 1,
        shared: false,
    };

    /// The split used for an `m x n x k` product: a function of the sizes only, never of the
    /// thread count, so every output element is computed by the same sequence of
    /// operations on any machine load or pool size. K is never split.
    pub fn for_sizes(m: usize, n: usize, k: usize) -> Self {
        let pieces = (m * n * k / PIECE_WORK).clamp(1, MAX_PIECES);
        // Measured with 2 threads (AVX-512, sgemm_probe): gemm's shared packing wins by
        // 10-60% unless K is the longest side (dW = dy^T x), where blocks win by 10-30%.
        if pieces > 1 && k <= m.max(n) {
            return Self {
                pm: 1,
                pn: 1,
                shared: true,
            };
        }
        // Column bands first (measured on AVX-512 with gemm 0.19: they cost the least
        // re-packing for most shapes), then row bands for what is still missing. Bands
        // narrower than two micro-tiles would run the slow edge kernels.
        let pn = pieces.min(n / (2 * COL_ALIGN)).max(1);
        let pm = pieces.div_ceil(pn).min(m / (2 * ROW_ALIGN)).max(1);
        Self {
            pm,
            pn,
            shared: false,
        }
    }
}

/// Band `i` of `parts` over `len` elements, with boundaries on multiples of `align`.
fn band(len: usize, parts: usize, i: usize, align: usize) -> (usize, usize) {
    let step = len.div_ceil(parts).div_ceil(align) * align;
    let lo = (i * step).min(len);
    (lo, ((i + 1) * step).min(len) - lo)
}

/// Multiply-adds issued through [`matmul`] since the process started (for FLOP accounting
/// in benchmarks; one relaxed atomic add per product).
static MACS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The running multiply-add count of [`MACS`].
pub(crate) fn macs() -> u64 {
    MACS.load(std::sync::atomic::Ordering::Relaxed)
}

/// `c = a @ b` (or `c += a @ b` with `accumulate`).
pub(crate) fn matmul<A: Float>(c: MatMut<'_, A>, a: MatRef<'_, A>, b: MatRef<'_, A>, accumulate: bool) {
    matmul_serial_if(false, c, a, b, accumulate);
}

/// `a @ b` as a new row-major vector, written by the product without being zeroed first;
/// on the calling thread when `serial`.
pub(crate) fn matmul_new<A: Float>(a: MatRef<'_, A>, b: MatRef<'_, A>, serial: bool) -> Vec<A> {
    let (m, n) = (a.rows, b.cols);
    let mut c = Vec::with_capacity(m * n);
    matmul_serial_if(
        serial,
        MatMut::uninit(&mut c.spare_capacity_mut()[..m * n], 0, m, n, n),
        a,
        b,
        false,
    );
    // SAFETY: a non-accumulating product writes every element of its `m x n` output.
    unsafe { c.set_len(m * n) };
    c
}

/// [`matmul`] on the calling thread only: for products issued from inside a parallel loop
/// over batch items, which already keeps every thread busy (nested splitting would only
/// add re-packing and synchronisation).
pub(crate) fn matmul_serial<A: Float>(
    c: MatMut<'_, A>,
    a: MatRef<'_, A>,
    b: MatRef<'_, A>,
    accumulate: bool,
) {
    matmul_serial_if(true, c, a, b, accumulate);
}

/// [`matmul_serial`] when `serial` (the caller already runs one task per thread), else
/// [`matmul`].
pub(crate) fn matmul_serial_if<A: Float>(
    serial: bool,
    c: MatMut<'_, A>,
    a: MatRef<'_, A>,
    b: MatRef<'_, A>,
    accumulate: bool,
) {
    add_macs(c.rows * c.cols * a.cols);
    matmul_uncounted(serial, c, a, b, accumulate);
}

/// [`matmul_serial_if`] without adding to the multiply-add count: for algorithms whose
/// products stand for a larger nominal count (Winograd convolutions), which they report
/// through [`add_macs`].
pub(crate) fn matmul_uncounted<A: Float>(
    serial: bool,
    c: MatMut<'_, A>,
    a: MatRef<'_, A>,
    b: MatRef<'_, A>,
    accumulate: bool,
) {
    let split = if serial {
        Split::SERIAL
    } else {
        Split::for_sizes(c.rows, c.cols, a.cols)
    };
    matmul_split(c, a, b, accumulate, split);
}

/// Adds `n` multiply-adds to the count of [`macs`].
pub(crate) fn add_macs(n: usize) {
    MACS.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
}

/// [`matmul`] with an explicit split (benchmarks compare splits with this).
pub(crate) fn matmul_split<A: Float>(
    c: MatMut<'_, A>,
    a: MatRef<'_, A>,
    b: MatRef<'_, A>,
    accumulate: bool,
    split: Split,
) {
    let (m, n, k) = (c.rows, c.cols, a.cols);
    assert!(
        a.rows == m && b.rows == k && b.cols == n,
        "matmul dimension mismatch"
    );
    a.check();
    b.check();
    if m == 0 || n == 0 {
        return;
    }
    assert!(c.off + (m - 1) * c.rs + n <= c.len, "output view out of bounds");
    assert!(
        !(accumulate && c.uninit),
        "accumulating onto uninitialised memory"
    );
    // SAFETY: in bounds of the view's `len` elements (checked above).
    let dst = SendPtr(unsafe { c.ptr.add(c.off) });
    let c_rs = c.rs;
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                for j in 0..n {
                    // SAFETY: in bounds (checked above); writing never reads the old value.
                    unsafe { dst.get().add(i * c_rs + j).write(A::zero()) };
                }
            }
        }
        return;
    }
    let pieces = split.pm * split.pn;
    let run = |p: usize| {
        let (r0, rows) = band(m, split.pm, p / split.pn, ROW_ALIGN);
        let (c0, cols) = band(n, split.pn, p % split.pn, COL_ALIGN);
        if rows == 0 || cols == 0 {
            return;
        }
        // SAFETY: the output view was bounds-checked above; pieces cover disjoint blocks
        // of it, so no two threads write the same element, and `a`/`b` were checked whole.
        unsafe {
            raw(
                dst.get().add(r0 * c_rs + c0),
                c_rs,
                rows,
                cols,
                k,
                a.data.as_ptr().add(a.off + r0 * a.rs),
                a,
                b.data.as_ptr().add(b.off + c0 * b.cs),
                b,
                accumulate,
                if split.shared {
                    gemm::Parallelism::Rayon(0)
                } else {
                    gemm::Parallelism::None
                },
            )
        };
    };
    if pieces <= 1 {
        run(0);
    } else {
        (0..pieces).into_par_iter().for_each(run);
    }
}

/// A raw output pointer shared by the disjoint pieces of one product.
#[derive(Clone, Copy)]
struct SendPtr<A>(*mut A);
// SAFETY: the pieces sharing it write disjoint elements (see `matmul_split`).
unsafe impl<A> Send for SendPtr<A> {}
// SAFETY: as above.
unsafe impl<A> Sync for SendPtr<A> {}
impl<A> SendPtr<A> {
    fn get(self) -> *mut A {
        self.0
    }
}

/// # Safety
/// `dst` must be valid for `m` rows of `n` elements with row stride `dst_rs`; `a_ptr`/`b_ptr`
/// must address `m x k` / `k x n` blocks with the strides of `a`/`b`, in bounds.
unsafe fn raw<A: Float>(
    dst: *mut A,
    dst_rs: usize,
    m: usize,
    n: usize,
    k: usize,
    a_ptr: *const A,
    a: MatRef<'_, A>,
    b_ptr: *const A,
    b: MatRef<'_, A>,
    accumulate: bool,
    parallelism: gemm::Parallelism,
) {
    // SAFETY: forwarded from the caller; gemm reads only inside the described views.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs as isize,
            accumulate,
            a_ptr,
            a.cs as isize,
            a.rs as isize,
            b_ptr,
            b.cs as isize,
            b.rs as isize,
            A::one(),
            A::one(),
            false,
            false,
            false,
            parallelism,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[f64], b: &[f64], m: usize, n: usize, k: usize) -> Vec<f64> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            }
        }
        c
    }

    fn fill(n: usize, s: f64) -> Vec<f64> {
        (0..n).map(|i| ((i as f64) * s).sin()).collect()
    }

    #[test]
    fn matches_naive_with_transposes_and_accumulation() {
        for &(m, n, k) in &[(1, 1, 1), (7, 5, 3), (300, 70, 129), (513, 64, 40)] {
            let a = fill(m * k, 0.37);
            let b = fill(k * n, 0.11);
            let want = naive(&a, &b, m, n, k);
            // plain
            let mut c = vec![0.0; m * n];
            matmul(
                MatMut::row_major(&mut c, 0, m, n),
                MatRef::row_major(&a, 0, m, k),
                MatRef::row_major(&b, 0, k, n),
                false,
            );
            // transposed storage of both operands, accumulating onto `want`
            let at: Vec<f64> = (0..k * m).map(|i| a[(i % m) * k + i / m]).collect();
            let bt: Vec<f64> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
            let mut c2 = want.clone();
            matmul(
                MatMut::row_major(&mut c2, 0, m, n),
                MatRef::row_major(&at, 0, k, m).t(),
                MatRef::row_major(&bt, 0, n, k).t(),
                true,
            );
            for i in 0..m * n {
                let tol = 1e-12 * (k as f64);
                assert!((c[i] - want[i]).abs() < tol, "{m}x{n}x{k} at {i}");
                assert!((c2[i] - 2.0 * want[i]).abs() < 2.0 * tol);
            }
        }
    }

    #[test]
    fn new_products_write_every_element() {
        // Fresh outputs are never zeroed: gemm's own non-accumulating paths (small, gemv,
        // blocked) and the `k = 0` case must each write all of them.
        for &(m, n, k) in &[(1, 9, 4), (9, 1, 4), (5, 7, 3), (300, 70, 129), (4, 6, 0)] {
            let a = fill(m * k, 0.37);
            let b = fill(k * n, 0.11);
            let want = naive(&a, &b, m, n, k);
            for serial in [false, true] {
                // Leave non-zero garbage in the allocator's free list first.
                drop(vec![f64::NAN; m * n]);
                let c = matmul_new(
                    MatRef::row_major(&a, 0, m, k),
                    MatRef::row_major(&b, 0, k, n),
                    serial,
                );
                for (i, (&c, &w)) in c.iter().zip(&want).enumerate() {
                    assert!(
                        (c - w).abs() <= 1e-12 * k.max(1) as f64,
                        "{m}x{n}x{k} at {i}: {c} vs {w}"
                    );
                }
            }
        }
    }

    #[test]
    fn identical_for_any_thread_count() {
        // Shared-packing (K short) and block (K long) strategies, odd sizes, transposed B.
        for &(m, n, k, bt) in &[
            (700, 96, 200, false),
            (333, 777, 555, true),
            (96, 200, 3000, false),
            (256, 256, 4096, true),
        ] {
            let a: Vec<f32> = fill(m * k, 0.3).iter().map(|&v| v as f32).collect();
            let b: Vec<f32> = fill(k * n, 0.7).iter().map(|&v| v as f32).collect();
            let run = || {
                let mut c = vec![0.0f32; m * n];
                let bv = if bt {
                    MatRef::row_major(&b, 0, n, k).t()
                } else {
                    MatRef::row_major(&b, 0, k, n)
                };
                matmul(
                    MatMut::row_major(&mut c, 0, m, n),
                    MatRef::row_major(&a, 0, m, k),
                    bv,
                    false,
                );
                c
            };
            let single = rayon::ThreadPoolBuilder::new()
                .num_threads(1)
                .build()
                .unwrap()
                .install(run);
            for threads in 2..=4 {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                assert_eq!(single, pool.install(run), "{m}x{n}x{k} with {threads} threads");
            }
            assert_eq!(single, run());
        }
    }

    #[test]
    fn splits_depend_on_sizes_only() {
        assert!(Split::for_sizes(4096, 768, 192).shared);
        let dw = Split::for_sizes(768, 192, 4096);
        assert!(!dw.shared && dw.pm * dw.pn > 1);
        assert_eq!(
            Split::for_sizes(64, 64, 64).pm * Split::for_sizes(64, 64, 64).pn,
            1
        );
    }
}
