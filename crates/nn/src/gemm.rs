//! The one matrix-multiply entry point, on top of the `gemm` crate.
//!
//! Operands are strided views, so the transposes a backward pass needs cost no copy.
//! Large products are split into row tiles whose boundaries depend only on the matrix
//! sizes; each tile runs single-threaded, so results are bit-identical for any number of
//! rayon threads.

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

/// A mutable row-major matrix view with row stride `rs`.
#[derive(Debug)]
pub(crate) struct MatMut<'a, A> {
    pub data: &'a mut [A],
    pub off: usize,
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
}

impl<'a, A> MatMut<'a, A> {
    pub fn row_major(data: &'a mut [A], off: usize, rows: usize, cols: usize) -> Self {
        Self {
            data,
            off,
            rows,
            cols,
            rs: cols,
        }
    }

    pub fn strided(data: &'a mut [A], off: usize, rows: usize, cols: usize, rs: usize) -> Self {
        Self {
            data,
            off,
            rows,
            cols,
            rs,
        }
    }
}

/// Work (multiply-adds) below which a product runs on the calling thread.
const PARALLEL_MIN_WORK: usize = 1 << 20;
/// Minimum rows per parallel tile.
const MIN_TILE_ROWS: usize = 32;
/// At most this many tiles per product.
const MAX_TILES: usize = 4;

/// `c = a @ b` (or `c += a @ b` with `accumulate`).
pub(crate) fn matmul<A: Float>(c: MatMut<'_, A>, a: MatRef<'_, A>, b: MatRef<'_, A>, accumulate: bool) {
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
    assert!(
        c.off + (m - 1) * c.rs + n <= c.data.len(),
        "output view out of bounds"
    );
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                c.data[c.off + i * c.rs..c.off + i * c.rs + n].fill(A::zero());
            }
        }
        return;
    }
    let work = m * n * k;
    let tiles = if work < PARALLEL_MIN_WORK {
        1
    } else {
        (m / MIN_TILE_ROWS).clamp(1, MAX_TILES)
    };
    if tiles == 1 {
        // SAFETY: all three views were bounds-checked above.
        unsafe { raw(c.data.as_mut_ptr().add(c.off), c.rs, m, n, k, a, 0, b, accumulate) };
        return;
    }
    let rows_per = m.div_ceil(tiles);
    let region = &mut c.data[c.off..c.off + (m - 1) * c.rs + n];
    // Row tiles of the output are disjoint slices of `region` (the last may be short).
    let mut chunks: Vec<&mut [A]> = Vec::with_capacity(tiles);
    let mut rest = region;
    let mut row = 0;
    while row < m {
        let rows = rows_per.min(m - row);
        let take = if row + rows == m { rest.len() } else { rows * c.rs };
        let (head, tail) = rest.split_at_mut(take);
        chunks.push(head);
        rest = tail;
        row += rows;
    }
    let rs = c.rs;
    chunks.into_par_iter().enumerate().for_each(|(i, chunk)| {
        let r0 = i * rows_per;
        let rows = rows_per.min(m - r0);
        // SAFETY: the chunk holds rows r0..r0+rows of the output; `a` is offset to the same
        // rows and was bounds-checked as a whole.
        unsafe { raw(chunk.as_mut_ptr(), rs, rows, n, k, a, r0, b, accumulate) };
    });
}

/// # Safety
/// `dst` must be valid for `m` rows of `n` elements with row stride `dst_rs`; `a` rows
/// `row0..row0+m` and `b` must be in bounds.
#[allow(clippy::too_many_arguments)]
unsafe fn raw<A: Float>(
    dst: *mut A,
    dst_rs: usize,
    m: usize,
    n: usize,
    k: usize,
    a: MatRef<'_, A>,
    row0: usize,
    b: MatRef<'_, A>,
    accumulate: bool,
) {
    let a_ptr = a.data[a.off + row0 * a.rs..].as_ptr();
    let b_ptr = b.data[b.off..].as_ptr();
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
            gemm::Parallelism::None,
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
    fn identical_for_any_thread_count() {
        let (m, n, k) = (700, 96, 200);
        let a: Vec<f32> = fill(m * k, 0.3).iter().map(|&v| v as f32).collect();
        let b: Vec<f32> = fill(k * n, 0.7).iter().map(|&v| v as f32).collect();
        let run = || {
            let mut c = vec![0.0f32; m * n];
            matmul(
                MatMut::row_major(&mut c, 0, m, n),
                MatRef::row_major(&a, 0, m, k),
                MatRef::row_major(&b, 0, k, n),
                false,
            );
            c
        };
        let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        let single = pool.install(run);
        let pool3 = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap();
        assert_eq!(single, pool3.install(run));
        assert_eq!(single, run());
    }
}
