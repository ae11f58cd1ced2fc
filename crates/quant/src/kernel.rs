//! Integer products at the quantized width: `u8` activations times `i8` (or packed signed
//! 4-bit) weights, summed exactly in `i32`, per group of columns.
//!
//! Two paths compute the same integers: a portable one, and an AVX-512 VNNI one
//! (`vpdpbusd`: 64 `u8 x i8` products summed into 16 `i32` lanes per instruction), chosen at
//! run time. The sums are exact (no saturation: `|u8 * i8| * 4 < 2^17`, and a row of K
//! values stays below 2^31 for K < 65 000), so both paths are bit-identical.
//!
//! Rows are padded to a multiple of [`BLOCK`] columns with zero weights. Packed 4-bit rows
//! keep each block of 64 values in 32 bytes: byte `j` holds value `j` in its low nibble and
//! value `j + 32` in its high nibble, so the kernel unpacks a block with two masks and no
//! shuffle.

use rayon::prelude::*;

use crate::error::{QuantError, Result, invalid};

/// Columns per kernel block (one 512-bit register of bytes).
pub const BLOCK: usize = 64;

/// Signed weight codes `[n, k]`, stored at 8 or 4 bits per value.
#[derive(Clone, Debug, PartialEq)]
pub struct PackedWeights {
    pub n: usize,
    pub k: usize,
    /// `k` rounded up to a multiple of [`BLOCK`].
    pub kp: usize,
    pub bits: u32,
    /// `n * kp` bytes (8-bit) or `n * kp / 2` (4-bit).
    pub data: Vec<u8>,
}

impl PackedWeights {
    /// Packs `codes` (`[n, k]`, row-major) at `bits` (4 or 8); 4-bit codes must lie in
    /// `[-8, 7]`, 8-bit ones in `[-128, 127]`.
    pub fn pack(codes: &[i32], n: usize, k: usize, bits: u32) -> Result<Self> {
        if bits != 4 && bits != 8 {
            return Err(QuantError::UnsupportedBits {
                bits,
                what: "integer kernel weights",
                supported: "4, 8",
            });
        }
        crate::quantizer::check_matrix_i32(codes, n, k, "packed weights")?;
        let (lo, hi) = if bits == 4 { (-8, 7) } else { (-128, 127) };
        if let Some(&bad) = codes.iter().find(|&&c| c < lo || c > hi) {
            return Err(invalid(
                "weight code",
                format!("{bad} outside [{lo}, {hi}] for {bits} bits"),
            ));
        }
        let kp = k.div_ceil(BLOCK) * BLOCK;
        let row_bytes = if bits == 8 { kp } else { kp / 2 };
        let mut data = vec![0u8; n * row_bytes];
        for (r, dst) in data.chunks_mut(row_bytes).enumerate() {
            let src = &codes[r * k..(r + 1) * k];
            if bits == 8 {
                for (d, &c) in dst.iter_mut().zip(src) {
                    *d = c as i8 as u8;
                }
            } else {
                for (j, &c) in src.iter().enumerate() {
                    let (blk, off) = (j / BLOCK, j % BLOCK);
                    let byte = &mut dst[blk * BLOCK / 2 + off % (BLOCK / 2)];
                    let nib = (c as u8) & 0x0f;
                    *byte |= if off < BLOCK / 2 { nib } else { nib << 4 };
                }
            }
        }
        Ok(Self { n, k, kp, bits, data })
    }

    /// The signed codes back (`[n, k]`).
    pub fn unpack(&self) -> Vec<i32> {
        let mut out = Vec::with_capacity(self.n * self.k);
        let mut row = vec![0i8; self.kp];
        for r in 0..self.n {
            self.row_i8(r, &mut row);
            out.extend(row[..self.k].iter().map(|&v| v as i32));
        }
        out
    }

    fn row_bytes(&self) -> usize {
        if self.bits == 8 { self.kp } else { self.kp / 2 }
    }

    /// Row `r` as `kp` signed bytes.
    fn row_i8(&self, r: usize, out: &mut [i8]) {
        let src = &self.data[r * self.row_bytes()..(r + 1) * self.row_bytes()];
        if self.bits == 8 {
            for (o, &b) in out.iter_mut().zip(src) {
                *o = b as i8;
            }
        } else {
            for (blk, bytes) in src.chunks(BLOCK / 2).enumerate() {
                for (j, &b) in bytes.iter().enumerate() {
                    out[blk * BLOCK + j] = sign4(b & 0x0f);
                    out[blk * BLOCK + j + BLOCK / 2] = sign4(b >> 4);
                }
            }
        }
    }
}

#[inline(always)]
fn sign4(nib: u8) -> i8 {
    ((nib ^ 8) as i8) - 8
}

/// Which implementation runs the product.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Portable,
    /// AVX-512 VNNI (`avx512f`, `avx512bw`, `avx512vnni` detected at run time).
    Vnni,
}

impl Backend {
    /// The fastest backend this CPU supports.
    pub fn detect() -> Self {
        if vnni_available() {
            Self::Vnni
        } else {
            Self::Portable
        }
    }
}

/// Whether this CPU runs the VNNI path.
pub fn vnni_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Rows of the activation matrix per parallel task (a fixed size: results are integers and
/// do not depend on the split anyway).
const ROWS_PER_TASK: usize = 16;

/// `out[i, j, g] = sum_{c in group g} a[i, c] * w[j, c]` for `a` (`[m, kp]` bytes, the
/// padding columns any value) and groups of `group` columns (a multiple of [`BLOCK`] that
/// divides `kp`). `out` is `[m, n, kp / group]`.
pub fn gemm_u8i8(a: &[u8], m: usize, w: &PackedWeights, group: usize, backend: Backend) -> Result<Vec<i32>> {
    if a.len() != m * w.kp {
        return Err(QuantError::Shape {
            context: "int8 product activations".into(),
            expected: vec![m, w.kp],
            got: vec![a.len()],
        });
    }
    if group == 0 || !group.is_multiple_of(BLOCK) || !w.kp.is_multiple_of(group) {
        return Err(invalid(
            "kernel group",
            format!("{group} must be a multiple of {BLOCK} dividing {}", w.kp),
        ));
    }
    if backend == Backend::Vnni && !vnni_available() {
        return Err(invalid("backend", "AVX-512 VNNI is not available on this CPU"));
    }
    let groups = w.kp / group;
    let mut out = vec![0i32; m * w.n * groups];
    out.par_chunks_mut(ROWS_PER_TASK * w.n * groups)
        .zip(a.par_chunks(ROWS_PER_TASK * w.kp))
        .for_each(|(o, a)| match backend {
            Backend::Portable => portable(a, w, group, o),
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the features were detected above.
            Backend::Vnni => unsafe { vnni::gemm(a, w, group, o) },
            #[cfg(not(target_arch = "x86_64"))]
            Backend::Vnni => unreachable!("detected above"),
        });
    Ok(out)
}

fn portable(a: &[u8], w: &PackedWeights, group: usize, out: &mut [i32]) {
    let groups = w.kp / group;
    let mut row = vec![0i8; w.kp];
    // Weight rows outer: each is unpacked once per task.
    for j in 0..w.n {
        w.row_i8(j, &mut row);
        for (i, ar) in a.chunks(w.kp).enumerate() {
            for g in 0..groups {
                let s = g * group..(g + 1) * group;
                let dot: i32 = ar[s.clone()]
                    .iter()
                    .zip(&row[s])
                    .map(|(&x, &y)| x as i32 * y as i32)
                    .sum();
                out[(i * w.n + j) * groups + g] = dot;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod vnni {
    use std::arch::x86_64::*;

    use super::{BLOCK, PackedWeights};

    /// Four weight rows share each activation load.
    const NR: usize = 4;

    /// 64 signed bytes of weight row `r`, block `b`.
    #[inline(always)]
    unsafe fn load_w(w: &PackedWeights, r: usize, b: usize) -> __m512i {
        // SAFETY (whole function): `b < kp / 64` and `r < n`, so the reads stay in `data`.
        unsafe {
            if w.bits == 8 {
                _mm512_loadu_si512(w.data.as_ptr().add(r * w.kp + b * BLOCK).cast())
            } else {
                let p = w.data.as_ptr().add(r * w.kp / 2 + b * BLOCK / 2);
                let bytes = _mm256_loadu_si256(p.cast());
                let mask = _mm256_set1_epi8(0x0f);
                let lo = _mm256_and_si256(bytes, mask);
                let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(bytes), mask);
                let both = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi);
                // Sign-extend the nibbles: (v ^ 8) - 8.
                let eight = _mm512_set1_epi8(8);
                _mm512_sub_epi8(_mm512_xor_si512(both, eight), eight)
            }
        }
    }

    /// The lane sums of four accumulators at once (an add tree over interleaved lanes, so
    /// a group of one block does not pay four full horizontal reductions).
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn reduce4(acc: &[__m512i; NR]) -> [i32; NR] {
        let t0 = _mm512_add_epi32(
            _mm512_unpacklo_epi32(acc[0], acc[1]),
            _mm512_unpackhi_epi32(acc[0], acc[1]),
        );
        let t1 = _mm512_add_epi32(
            _mm512_unpacklo_epi32(acc[2], acc[3]),
            _mm512_unpackhi_epi32(acc[2], acc[3]),
        );
        // Per 128-bit lane: [sum0, sum1, sum2, sum3] of that lane's part.
        let t = _mm512_add_epi32(_mm512_unpacklo_epi64(t0, t1), _mm512_unpackhi_epi64(t0, t1));
        let h = _mm256_add_epi32(_mm512_castsi512_si256(t), _mm512_extracti64x4_epi64::<1>(t));
        let q = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256::<1>(h));
        let mut out = [0i32; NR];
        // SAFETY: `out` holds four i32.
        unsafe { _mm_storeu_si128(out.as_mut_ptr().cast(), q) };
        out
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn gemm(a: &[u8], w: &PackedWeights, group: usize, out: &mut [i32]) {
        let groups = w.kp / group;
        let bpg = group / BLOCK;
        let blocks = w.kp / BLOCK;
        let rows = a.len() / w.kp;
        // A panel of up to NR weight rows, unpacked once per task (4-bit) and then reused
        // from L1 by every activation row of the task.
        let mut panel = vec![_mm512_setzero_si512(); NR * blocks];
        let mut j = 0;
        while j < w.n {
            let nr = NR.min(w.n - j);
            for r in 0..nr {
                for b in 0..blocks {
                    // SAFETY: row `j + r < n`, block `b < kp / 64`.
                    panel[r * blocks + b] = unsafe { load_w(w, j + r, b) };
                }
            }
            for i in 0..rows {
                let ar = &a[i * w.kp..(i + 1) * w.kp];
                for g in 0..groups {
                    let mut acc = [_mm512_setzero_si512(); NR];
                    for b in g * bpg..(g + 1) * bpg {
                        // SAFETY: `ar` has `kp` bytes and `b * 64 + 64 <= kp`.
                        let x = unsafe { _mm512_loadu_si512(ar.as_ptr().add(b * BLOCK).cast()) };
                        for (r, acc) in acc.iter_mut().enumerate().take(nr) {
                            *acc = _mm512_dpbusd_epi32(*acc, x, panel[r * blocks + b]);
                        }
                    }
                    let sums = reduce4(&acc);
                    for r in 0..nr {
                        out[(i * w.n + j + r) * groups + g] = sums[r];
                    }
                }
            }
            j += nr;
        }
    }
}
