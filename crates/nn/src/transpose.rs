//! Matrix transposition into a row-major buffer, for products whose operand gemm would
//! otherwise pack against its layout.
//!
//! gemm packs an operand whose elements are contiguous along K one scalar load at a time:
//! the Winograd weight gradient's transformed input (`[channel][point][tile]`, K = tiles)
//! down a 32 KB stride, about 0.9 ns an element and 5% of a unet-small training step; and
//! a weight read as `W^T` (PyTorch's `[out, in]` layout), once per block of output rows,
//! 3% of an mlp step run in row blocks. A copy transposed 16 x 16 at a time in AVX-512
//! registers takes 0.2 ns an element, and gemm then packs it as contiguous runs; a weight
//! is transposed once per forward pass for all its row blocks or tasks.

use crate::param::Float;

/// `dst[k * rows + i] = src[i * rs + k]` for `i < rows`, `k < cols`: the `rows x cols`
/// matrix at `src` (row stride `rs`) transposed into the row-major `cols x rows` matrix
/// `dst`. Exact (a copy); f32 runs in 16 x 16 register blocks where the CPU has AVX-512.
pub(crate) fn transpose<A: Float>(src: &[A], rs: usize, rows: usize, cols: usize, dst: &mut [A]) {
    assert!(
        dst.len() >= rows * cols && (rows == 0 || cols == 0 || (rows - 1) * rs + cols <= src.len()),
        "transpose: {rows} x {cols} (stride {rs}) from {} into {} elements",
        src.len(),
        dst.len()
    );
    #[cfg(target_arch = "x86_64")]
    if std::any::TypeId::of::<A>() == std::any::TypeId::of::<f32>()
        && std::arch::is_x86_feature_detected!("avx512f")
    {
        let (src, dst): (&[f32], &mut [f32]) = (bytemuck::cast_slice(src), bytemuck::cast_slice_mut(dst));
        // SAFETY: the CPU has AVX-512F, and the bounds were checked above.
        unsafe { avx512::transpose_f32(src, rs, rows, cols, dst) };
        return;
    }
    transpose_edges(src, rs, (0, rows), (0, cols), dst, rows);
}

/// The row-major `rows x cols` matrix `w` transposed into a new `cols x rows` one.
pub(crate) fn transposed<A: Float>(w: &[A], rows: usize, cols: usize) -> Vec<A> {
    let mut t = vec![A::zero(); rows * cols];
    transpose(w, cols, rows, cols, &mut t);
    t
}

/// The plain transposing copy of rows `r0..r1` and columns `c0..c1` (`ld` = `dst`'s row
/// length, the matrix's row count).
fn transpose_edges<A: Copy>(
    src: &[A],
    rs: usize,
    (r0, r1): (usize, usize),
    (c0, c1): (usize, usize),
    dst: &mut [A],
    ld: usize,
) {
    for i in r0..r1 {
        for k in c0..c1 {
            dst[k * ld + i] = src[i * rs + k];
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    /// Output row `i` of [`block`]'s shuffles holds column `SWAP[i % 4] + i / 4 * 4`.
    const SWAP: [usize; 4] = [0, 2, 1, 3];

    /// One 16 x 16 block: rows of `src` (stride `rs`) to rows of `dst` (stride `ld`), in
    /// four rounds of shuffles (32-, 64-, 128- and 256-bit interleaves).
    ///
    /// # Safety
    /// AVX-512F; 16 rows of 16 readable at `src`, writable at `dst`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn block(src: *const f32, rs: usize, dst: *mut f32, ld: usize) {
        // SAFETY: the caller guarantees the 16 rows at both ends.
        unsafe {
            let mut r = [_mm512_setzero_ps(); 16];
            for (i, v) in r.iter_mut().enumerate() {
                *v = _mm512_loadu_ps(src.add(i * rs));
            }
            let mut t = [_mm512_setzero_ps(); 16];
            for i in 0..8 {
                t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
                t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
            }
            for i in 0..4 {
                for j in 0..2 {
                    let (a, b) = (_mm512_castps_pd(t[4 * i + j]), _mm512_castps_pd(t[4 * i + j + 2]));
                    r[4 * i + j] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, b));
                    r[4 * i + j + 2] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, b));
                }
            }
            for i in 0..2 {
                for j in 0..4 {
                    let (a, b) = (r[8 * i + j], r[8 * i + j + 4]);
                    t[8 * i + j] = _mm512_shuffle_f32x4::<0x88>(a, b);
                    t[8 * i + j + 4] = _mm512_shuffle_f32x4::<0xdd>(a, b);
                }
            }
            for j in 0..8 {
                r[j] = _mm512_shuffle_f32x4::<0x88>(t[j], t[j + 8]);
                r[j + 8] = _mm512_shuffle_f32x4::<0xdd>(t[j], t[j + 8]);
            }
            for (i, v) in r.iter().enumerate() {
                _mm512_storeu_ps(dst.add((i / 4 * 4 + SWAP[i % 4]) * ld), *v);
            }
        }
    }

    /// [`super::transpose`] for f32: whole 16 x 16 blocks in registers, the edges plain.
    ///
    /// # Safety
    /// AVX-512F; `src` holds the `rows x cols` matrix at row stride `rs` and `dst` has
    /// `rows * cols` elements (checked by the caller).
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn transpose_f32(src: &[f32], rs: usize, rows: usize, cols: usize, dst: &mut [f32]) {
        let (rb, cb) = (rows / 16 * 16, cols / 16 * 16);
        for i in (0..rb).step_by(16) {
            for k in (0..cb).step_by(16) {
                // SAFETY: rows i..i+16 and columns k..k+16 lie inside both matrices.
                unsafe {
                    block(
                        src.as_ptr().add(i * rs + k),
                        rs,
                        dst.as_mut_ptr().add(k * rows + i),
                        rows,
                    )
                };
            }
        }
        super::transpose_edges(src, rs, (0, rb), (cb, cols), dst, rows);
        super::transpose_edges(src, rs, (rb, rows), (0, cols), dst, rows);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every element lands at its transposed place, for whole blocks, ragged edges, a row
    /// stride wider than the matrix, and both element types.
    #[test]
    fn transposes_every_element() {
        for (rows, cols, rs) in [
            (64, 512, 8192),
            (16, 16, 16),
            (37, 21, 50),
            (5, 40, 40),
            (33, 1, 3),
            (0, 7, 7),
        ] {
            let src: Vec<f32> = (0..rows.max(1) * rs).map(|i| i as f32).collect();
            let mut dst = vec![f32::NAN; rows * cols];
            transpose(&src, rs, rows, cols, &mut dst);
            let src64: Vec<f64> = src.iter().map(|&v| f64::from(v)).collect();
            let mut dst64 = vec![f64::NAN; rows * cols];
            transpose(&src64, rs, rows, cols, &mut dst64);
            for i in 0..rows {
                for k in 0..cols {
                    assert_eq!(
                        dst[k * rows + i],
                        src[i * rs + k],
                        "f32 ({i}, {k}) of {rows} x {cols}"
                    );
                    assert_eq!(dst64[k * rows + i], src64[i * rs + k], "f64 ({i}, {k})");
                }
            }
        }
    }
}
