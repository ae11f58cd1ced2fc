//! The tensor abstraction solvers are written against.
//!
//! Every solver update is `x_next = keep * x + sum_i c_i * t_i + s * z`: a linear
//! combination of a few same-shaped tensors plus optional Gaussian noise. That one fused
//! pass, [`Tensor::lincomb`], is the only hot primitive a backend must provide; the rest
//! of the trait is bookkeeping and rarely used host round trips (which a backend may
//! override with native versions).

use std::fmt::Debug;
use std::mem::MaybeUninit;

use ndarray::{ArrayD, IxDyn};
use rayon::prelude::*;

use crate::rng::{NormalBlock, Rng};
use crate::{CoreError, Result};

/// Gaussian noise to add in a [`Tensor::lincomb`]: `scale * z`, `z ~ N(0, I)` drawn
/// from `rng` (element `n` of the tensor, in row-major order, gets variate `n`).
#[derive(Debug)]
pub struct Noise<'a> {
    pub scale: f64,
    pub rng: &'a mut Rng,
}

impl<'a> Noise<'a> {
    pub fn new(scale: f64, rng: &'a mut Rng) -> Self {
        Self { scale, rng }
    }
}

/// A dense tensor a solver can update.
pub trait Tensor: Clone + Debug + Send + Sync + Sized {
    /// The shape, outermost (batch) axis first.
    fn shape(&self) -> &[usize];

    /// Number of elements.
    fn len(&self) -> usize {
        self.shape().iter().product()
    }

    /// Whether the tensor has no elements.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A tensor of zeros with the same shape, element type and device.
    fn zeros_like(&self) -> Self;

    /// The fused primitive: `self = keep * self + sum_i c_i * t_i + noise.scale * z`.
    ///
    /// With `keep == 0` the old contents are overwritten, never read (so NaN in an
    /// uninitialised buffer cannot leak). Coefficients are computed in f64 by the caller
    /// and applied in the element type, as torch does. Fails with
    /// [`CoreError::ShapeMismatch`] if a term's shape differs.
    fn lincomb(&mut self, keep: f64, terms: &[(f64, &Self)], noise: Option<Noise<'_>>) -> Result<()>;

    /// `keep * self + sum_i c_i * t_i + noise.scale * z` as a new tensor, `self` unchanged:
    /// the same values, bit for bit, as `lincomb` on a copy of `self` (terms are applied
    /// in the same order). Provided so `step`-style APIs need one pass instead of a copy
    /// plus an update; the default does exactly the copy plus update, and backends may
    /// override it with a single fused pass into fresh storage.
    fn lincomb_to_new(&self, keep: f64, terms: &[(f64, &Self)], noise: Option<Noise<'_>>) -> Result<Self> {
        let mut out = self.clone();
        out.lincomb(keep, terms, noise)?;
        Ok(out)
    }

    /// The elements in row-major order, as f64.
    fn to_f64_vec(&self) -> Vec<f64>;

    /// A tensor shaped and placed like `self` holding `data` (row-major).
    #[allow(clippy::wrong_self_convention)] // `self` supplies shape and device, not data
    fn from_f64_like(&self, data: &[f64]) -> Result<Self>;

    /// Number of NaN or infinite elements.
    fn count_non_finite(&self) -> usize {
        self.to_f64_vec().iter().filter(|v| !v.is_finite()).count()
    }

    /// Sum of squares, accumulated in f64.
    fn sum_squares(&self) -> f64 {
        self.to_f64_vec().iter().map(|v| v * v).sum()
    }

    /// Applies `f` to each batch item (the rows of the outermost axis) on the host.
    /// For the rare non-linear steps (dynamic thresholding); backends may override.
    fn map_batch_items(&self, f: &(dyn Fn(&mut [f64]) + Sync)) -> Result<Self> {
        let mut data = self.to_f64_vec();
        let batch = self.shape().first().copied().unwrap_or(1).max(1);
        let per = data.len() / batch;
        if per > 0 {
            data.chunks_mut(per).for_each(f);
        }
        self.from_f64_like(&data)
    }
}

/// Checks that `got` has `expected`'s shape.
pub fn check_same_shape(context: &'static str, expected: &[usize], got: &[usize]) -> Result<()> {
    if expected == got {
        Ok(())
    } else {
        Err(CoreError::ShapeMismatch {
            context,
            expected: expected.to_vec(),
            got: got.to_vec(),
        })
    }
}

/// `sum_i c_i * t_i (+ noise)` into a new tensor shaped like the first term.
pub fn lincomb_new<T: Tensor>(terms: &[(f64, &T)], noise: Option<Noise<'_>>) -> Result<T> {
    let first = terms.first().ok_or_else(|| CoreError::InvalidArgument {
        name: "terms",
        reason: "a linear combination needs at least one term".into(),
    })?;
    let mut out = first.1.zeros_like();
    out.lincomb(0.0, terms, noise)?;
    Ok(out)
}

/// The element types the ndarray backend supports.
pub trait Element:
    Copy
    + Debug
    + Default
    + Send
    + Sync
    + PartialEq
    + std::ops::Add<Output = Self>
    + std::ops::Mul<Output = Self>
    + 'static
{
    /// `v` rounded to this type.
    fn of_f64(v: f64) -> Self;
    /// `self` as f64 (exact).
    fn as_f64(self) -> f64;
}

impl Element for f32 {
    #[inline]
    fn of_f64(v: f64) -> Self {
        v as f32
    }
    #[inline]
    fn as_f64(self) -> f64 {
        f64::from(self)
    }
}

impl Element for f64 {
    #[inline]
    fn of_f64(v: f64) -> Self {
        v
    }
    #[inline]
    fn as_f64(self) -> f64 {
        self
    }
}

/// Elements per work unit: the output chunk (16-32 KiB) stays in L1 while every term
/// streams through it once.
const CHUNK: usize = 4096;
/// Below this size the pass runs on the calling thread.
const PARALLEL_MIN: usize = 1 << 16;

/// Terms fused into one sweep of a chunk. Up to this many streams (plus the output)
/// stay well inside the load ports and registers; longer sums run in several groups.
const FUSED: usize = 4;

/// `keep * x + c_0 t_0[i] + ... + c_{N-1} t_{N-1}[i]` (without the `keep` product when
/// `READ` is false: `x` is then never read), summed left to right, so the result has the
/// same bits as adding the terms one pass at a time.
#[inline(always)]
fn fused_value<A: Element, const N: usize, const READ: bool>(
    keep: A,
    x: A,
    c: &[A; N],
    t: &[&[A]; N],
    i: usize,
) -> A {
    let mut acc = if READ { keep * x } else { A::default() };
    for j in 0..N {
        // The first term of a non-reading sweep is assigned, not added to zero, so
        // `-0.0` survives as in the unfused formula.
        acc = if !READ && j == 0 {
            c[0] * t[0][i]
        } else {
            acc + c[j] * t[j][i]
        };
    }
    acc
}

/// One in-place sweep of `fused_value` over a chunk. Monomorphised per term count so the
/// loop vectorises without bounds checks.
#[inline(always)]
fn fused_chunk<A: Element, const N: usize, const READ: bool>(
    out: &mut [A],
    keep: A,
    c: [A; N],
    t: [&[A]; N],
) {
    let len = out.len();
    let t = t.map(|s| &s[..len]);
    for (i, o) in out.iter_mut().enumerate() {
        *o = fused_value::<A, N, READ>(keep, *o, &c, &t, i);
    }
}

/// `fused_value` over a chunk of `x`, written to fresh storage `out` (of the same length):
/// every slot is initialised.
#[inline(always)]
fn fused_chunk_from<A: Element, const N: usize, const READ: bool>(
    out: &mut [MaybeUninit<A>],
    x: &[A],
    keep: A,
    c: [A; N],
    t: [&[A]; N],
) {
    let len = out.len();
    let (x, t) = (&x[..len], t.map(|s| &s[..len]));
    for (i, o) in out.iter_mut().enumerate() {
        o.write(fused_value::<A, N, READ>(keep, x[i], &c, &t, i));
    }
}

/// Expands to a `match` on the group length that calls `$kernel::<A, N, READ>` with the
/// group's coefficients and term slices (from element `$start` on): `READ` is true when
/// `$keep` is `Some`. `$pre` are the kernel's leading arguments.
macro_rules! sweep_group {
    ($kernel:ident, ($($pre:expr),*), $start:expr, $keep:expr, $group:expr) => {{
        let (group, start): (&[(f64, &[A])], usize) = ($group, $start);
        let c = |j: usize| A::of_f64(group[j].0);
        let t = |j: usize| &group[j].1[start..];
        match ($keep, group.len()) {
            (Some(k), 1) => $kernel::<A, 1, true>($($pre,)* A::of_f64(k), [c(0)], [t(0)]),
            (Some(k), 2) => $kernel::<A, 2, true>($($pre,)* A::of_f64(k), [c(0), c(1)], [t(0), t(1)]),
            (Some(k), 3) => {
                $kernel::<A, 3, true>($($pre,)* A::of_f64(k), [c(0), c(1), c(2)], [t(0), t(1), t(2)])
            }
            (Some(k), _) => $kernel::<A, 4, true>(
                $($pre,)*
                A::of_f64(k),
                [c(0), c(1), c(2), c(3)],
                [t(0), t(1), t(2), t(3)],
            ),
            (None, 1) => $kernel::<A, 1, false>($($pre,)* A::default(), [c(0)], [t(0)]),
            (None, 2) => $kernel::<A, 2, false>($($pre,)* A::default(), [c(0), c(1)], [t(0), t(1)]),
            (None, 3) => {
                $kernel::<A, 3, false>($($pre,)* A::default(), [c(0), c(1), c(2)], [t(0), t(1), t(2)])
            }
            (None, _) => $kernel::<A, 4, false>(
                $($pre,)*
                A::default(),
                [c(0), c(1), c(2), c(3)],
                [t(0), t(1), t(2), t(3)],
            ),
        }
    }};
}

fn combine_chunk<A: Element>(
    out: &mut [A],
    start: usize,
    keep: f64,
    terms: &[(f64, &[A])],
    noise: Option<(f64, NormalBlock)>,
) {
    let len = out.len();
    // The first sweep reads `out` only when `keep != 0`, so an uninitialised buffer
    // never leaks into the result. Later groups add to the partial sum (`1 * o` is
    // exact, so this equals adding term by term).
    if terms.is_empty() {
        if keep != 0.0 {
            let k = A::of_f64(keep);
            out.iter_mut().for_each(|o| *o = k * *o);
        } else {
            out.fill(A::default());
        }
    }
    for (g, group) in terms.chunks(FUSED).enumerate() {
        let keep = match (g, keep != 0.0) {
            (0, true) => Some(keep),
            (0, false) => None,
            _ => Some(1.0),
        };
        sweep_group!(fused_chunk, (&mut *out), start, keep, group);
    }
    if let Some((scale, block)) = noise {
        let mut z = [0.0f64; CHUNK];
        let z = &mut z[..len];
        block.fill(start as u64, z);
        out.iter_mut()
            .zip(z.iter())
            .for_each(|(o, &v)| *o = *o + A::of_f64(scale * v));
    }
}

/// `out = keep * out + sum_i c_i * t_i + noise` over contiguous slices, in parallel
/// chunks whose results do not depend on the thread count.
pub fn lincomb_slices<A: Element>(out: &mut [A], keep: f64, terms: &[(f64, &[A])], noise: Option<Noise<'_>>) {
    let noise = noise.map(|n| (n.scale, n.rng.reserve_normals(out.len())));
    if out.len() < PARALLEL_MIN {
        out.chunks_mut(CHUNK)
            .enumerate()
            .for_each(|(i, o)| combine_chunk(o, i * CHUNK, keep, terms, noise));
    } else {
        out.par_chunks_mut(CHUNK)
            .enumerate()
            .for_each(|(i, o)| combine_chunk(o, i * CHUNK, keep, terms, noise));
    }
}

/// Terms gathered on the stack by [`with_term_slices`]; longer sums take a `Vec`.
const STACK_TERMS: usize = 8;

fn check_term_shapes<A: Element>(
    context: &'static str,
    out: &ArrayD<A>,
    terms: &[(f64, &ArrayD<A>)],
) -> Result<()> {
    let want = ndarray::ArrayBase::shape(out);
    for (_, t) in terms {
        check_same_shape(context, want, ndarray::ArrayBase::shape(*t))?;
    }
    Ok(())
}

/// Calls `f` with the terms as contiguous row-major slices: on the stack, without any
/// allocation, in the usual case (at most [`STACK_TERMS`] terms, all contiguous); terms
/// in another memory order are copied once (solver buffers never are).
fn with_term_slices<A: Element, R>(terms: &[(f64, &ArrayD<A>)], f: impl FnOnce(&[(f64, &[A])]) -> R) -> R {
    if terms.len() <= STACK_TERMS {
        let mut stack: [(f64, &[A]); STACK_TERMS] = [(0.0, &[]); STACK_TERMS];
        let all_contiguous = stack
            .iter_mut()
            .zip(terms)
            .all(|(slot, (c, t))| match t.as_slice() {
                Some(s) => {
                    *slot = (*c, s);
                    true
                }
                None => false,
            });
        if all_contiguous {
            return f(&stack[..terms.len()]);
        }
    }
    let owned: Vec<Option<ArrayD<A>>> = terms
        .iter()
        .map(|(_, t)| (!t.is_standard_layout()).then(|| t.as_standard_layout().into_owned()))
        .collect();
    let slices: Vec<(f64, &[A])> = terms
        .iter()
        .zip(&owned)
        .map(|((c, t), o)| (*c, o.as_ref().unwrap_or(t).as_slice().expect("standard layout")))
        .collect();
    f(&slices)
}

impl<A: Element> Tensor for ArrayD<A> {
    fn shape(&self) -> &[usize] {
        ndarray::ArrayBase::shape(self)
    }

    fn zeros_like(&self) -> Self {
        ArrayD::from_elem(self.raw_dim(), A::default())
    }

    fn lincomb(&mut self, keep: f64, terms: &[(f64, &Self)], noise: Option<Noise<'_>>) -> Result<()> {
        check_term_shapes("lincomb", self, terms)?;
        if !self.is_standard_layout() {
            *self = self.as_standard_layout().into_owned();
        }
        let out = self.as_slice_mut().expect("standard layout");
        with_term_slices(terms, |slices| lincomb_slices(out, keep, slices, noise));
        Ok(())
    }

    /// One fused pass into fresh storage (no copy of `self`) for contiguous tensors
    /// below the parallel size; otherwise copy plus update.
    fn lincomb_to_new(&self, keep: f64, terms: &[(f64, &Self)], noise: Option<Noise<'_>>) -> Result<Self> {
        let x = match self.as_slice() {
            Some(x) if x.len() < PARALLEL_MIN => x,
            _ => {
                let mut out = self.clone();
                out.lincomb(keep, terms, noise)?;
                return Ok(out);
            }
        };
        check_term_shapes("lincomb_to_new", self, terms)?;
        let noise = noise.map(|n| (n.scale, n.rng.reserve_normals(x.len())));
        let mut out: Vec<A> = Vec::with_capacity(x.len());
        with_term_slices(terms, |slices| {
            let (first, rest) = slices.split_at(slices.len().min(FUSED));
            let read = (keep != 0.0).then_some(keep);
            for (i, xc) in x.chunks(CHUNK).enumerate() {
                let start = i * CHUNK;
                // The first group (and `keep * x`) is written straight into the new
                // storage exactly as `combine_chunk` would compute it in place; further
                // terms and the noise are added to the chunk just written.
                let end = start + xc.len();
                let chunk = &mut out.spare_capacity_mut()[..xc.len()];
                match (read, first.is_empty()) {
                    (Some(k), true) => {
                        let k = A::of_f64(k);
                        chunk.iter_mut().zip(xc).for_each(|(o, &v)| {
                            o.write(k * v);
                        });
                    }
                    (None, true) => chunk.iter_mut().for_each(|o| {
                        o.write(A::default());
                    }),
                    _ => sweep_group!(fused_chunk_from, (chunk, xc), start, read, first),
                }
                // SAFETY: each arm above initialised all `xc.len()` slots after the
                // current length, and the capacity is `x.len() >= end`.
                unsafe { out.set_len(end) };
                if !rest.is_empty() || noise.is_some() {
                    // keep = 1 multiplies exactly, so this matches the in-place sum.
                    combine_chunk(&mut out[start..], start, 1.0, rest, noise);
                }
            }
        });
        Ok(ArrayD::from_shape_vec(self.raw_dim(), out).expect("length matches"))
    }

    fn to_f64_vec(&self) -> Vec<f64> {
        self.iter().map(|v| v.as_f64()).collect()
    }

    fn from_f64_like(&self, data: &[f64]) -> Result<Self> {
        if data.len() != self.len() {
            return Err(CoreError::ShapeMismatch {
                context: "from_f64_like",
                expected: ndarray::ArrayBase::shape(self).to_vec(),
                got: vec![data.len()],
            });
        }
        let v: Vec<A> = data.iter().map(|&x| A::of_f64(x)).collect();
        Ok(ArrayD::from_shape_vec(IxDyn(ndarray::ArrayBase::shape(self)), v).expect("length checked"))
    }

    fn count_non_finite(&self) -> usize {
        // Checked on every model output: parallel on large tensors (a count is exact in
        // any order).
        match self.as_slice_memory_order() {
            Some(s) if s.len() >= PARALLEL_MIN => s
                .par_chunks(CHUNK)
                .map(|c| c.iter().filter(|v| !v.as_f64().is_finite()).count())
                .sum(),
            _ => self.iter().filter(|v| !v.as_f64().is_finite()).count(),
        }
    }

    fn sum_squares(&self) -> f64 {
        self.iter().map(|v| v.as_f64() * v.as_f64()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array;
    use rand_core::RngCore;

    fn ramp(n: usize, scale: f64) -> ArrayD<f64> {
        Array::from_shape_fn(IxDyn(&[n]), |i| (i[0] as f64 * scale).sin())
    }

    #[test]
    fn lincomb_matches_elementwise_formula() {
        let n = 5000;
        let (a, b) = (ramp(n, 0.1), ramp(n, 0.37));
        let mut out = ramp(n, 0.01);
        let before = out.clone();
        out.lincomb(0.5, &[(2.0, &a), (-3.0, &b)], None).unwrap();
        for i in 0..n {
            let want = 0.5 * before[i] + 2.0 * a[i] - 3.0 * b[i];
            assert!((out[i] - want).abs() < 1e-14);
        }
    }

    /// The fused new-tensor pass against `lincomb` on a copy: identical bits, with and
    /// without terms and noise, over several chunks.
    #[test]
    fn lincomb_to_new_equals_copy_then_lincomb() {
        let n = CHUNK * 3 + 5;
        let to32 = |a: ArrayD<f64>| a.mapv(|v| v as f32);
        let (x, a, b) = (to32(ramp(n, 0.01)), to32(ramp(n, 0.1)), to32(ramp(n, 0.37)));
        type Case<'a> = (f64, Vec<(f64, &'a ArrayD<f32>)>, bool);
        let cases: [Case; 4] = [
            (0.7, vec![(2.0, &a)], false),
            (1.3, vec![(2.0, &a), (-3.0, &b)], true),
            (0.5, vec![], true),
            (0.0, vec![(1.5, &a)], false),
        ];
        for (keep, terms, noisy) in cases {
            let (mut r1, mut r2) = (Rng::new(9), Rng::new(9));
            let got = x
                .lincomb_to_new(keep, &terms, noisy.then(|| Noise::new(0.3, &mut r1)))
                .unwrap();
            let mut want = x.clone();
            want.lincomb(keep, &terms, noisy.then(|| Noise::new(0.3, &mut r2)))
                .unwrap();
            assert_eq!(got, want, "keep {keep}, {} terms", terms.len());
            assert_eq!(r1.next_u64(), r2.next_u64(), "the same variates were consumed");
        }
        let bad = ArrayD::<f32>::zeros(IxDyn(&[2]));
        assert!(x.lincomb_to_new(1.0, &[(1.0, &bad)], None).is_err());
    }

    /// Every term count (fused groups of up to four, several groups, the heap path past
    /// eight terms), with and without `keep`, in place and into a new tensor, against
    /// the term-by-term f32 sum written out here: identical bits.
    #[test]
    fn fused_terms_equal_term_by_term_sums() {
        let n = CHUNK + 37;
        let x = ramp(n, 0.013).mapv(|v| v as f32);
        let ts: Vec<ArrayD<f32>> = (0..11)
            .map(|j| ramp(n, 0.05 + 0.11 * j as f64).mapv(|v| v as f32))
            .collect();
        for count in 0..=ts.len() {
            for keep in [0.0, 0.7] {
                let terms: Vec<(f64, &ArrayD<f32>)> = ts[..count]
                    .iter()
                    .enumerate()
                    .map(|(j, t)| (0.3 - 0.17 * j as f64, t))
                    .collect();
                let want: Vec<f32> = (0..n)
                    .map(|i| {
                        let mut acc = if keep != 0.0 { keep as f32 * x[i] } else { 0.0 };
                        for (j, (c, t)) in terms.iter().enumerate() {
                            let p = *c as f32 * t[i];
                            acc = if keep == 0.0 && j == 0 { p } else { acc + p };
                        }
                        acc
                    })
                    .collect();
                let mut in_place = x.clone();
                in_place.lincomb(keep, &terms, None).unwrap();
                let fresh = x.lincomb_to_new(keep, &terms, None).unwrap();
                for (name, got) in [("lincomb", &in_place), ("lincomb_to_new", &fresh)] {
                    let same = got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "{name}: {count} terms, keep {keep}");
                }
            }
        }
    }

    #[test]
    fn lincomb_to_new_with_keep_zero_ignores_nan_input() {
        let x = ArrayD::from_elem(IxDyn(&[5]), f32::NAN);
        let a = ArrayD::from_elem(IxDyn(&[5]), 2.0f32);
        assert!(
            x.lincomb_to_new(0.0, &[], None)
                .unwrap()
                .iter()
                .all(|&v| v == 0.0)
        );
        let got = x.lincomb_to_new(0.0, &[(1.5, &a)], None).unwrap();
        assert!(got.iter().all(|&v| v == 3.0));
    }

    #[test]
    fn keep_zero_overwrites_nan() {
        let mut out = ArrayD::from_elem(IxDyn(&[3]), f32::NAN);
        let a = ArrayD::from_elem(IxDyn(&[3]), 2.0f32);
        out.lincomb(0.0, &[(1.5, &a)], None).unwrap();
        assert!(out.iter().all(|&v| v == 3.0));
    }

    #[test]
    fn non_finite_values_are_counted_on_large_tensors() {
        let mut a = ArrayD::<f32>::zeros(IxDyn(&[PARALLEL_MIN * 3]));
        a[7] = f32::NAN;
        a[PARALLEL_MIN + 1] = f32::INFINITY;
        a[PARALLEL_MIN * 3 - 1] = f32::NEG_INFINITY;
        assert_eq!(a.count_non_finite(), 3);
    }

    #[test]
    fn shape_mismatch_is_an_error() {
        let mut out = ArrayD::<f32>::zeros(IxDyn(&[2, 3]));
        let a = ArrayD::<f32>::zeros(IxDyn(&[3, 2]));
        let err = out.lincomb(0.0, &[(1.0, &a)], None).unwrap_err();
        assert!(matches!(err, CoreError::ShapeMismatch { .. }), "{err}");
    }

    #[test]
    fn noise_is_independent_of_thread_count_and_chunking() {
        let n = PARALLEL_MIN * 2 + 17;
        let mut parallel = ArrayD::<f32>::zeros(IxDyn(&[n]));
        parallel
            .lincomb(0.0, &[], Some(Noise::new(1.0, &mut Rng::new(5))))
            .unwrap();
        let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        let mut single = ArrayD::<f32>::zeros(IxDyn(&[n]));
        pool.install(|| {
            single
                .lincomb(0.0, &[], Some(Noise::new(1.0, &mut Rng::new(5))))
                .unwrap()
        });
        assert_eq!(parallel, single);
        // The same variates as a plain sequential draw.
        let mut z = vec![0.0; n];
        Rng::new(5).fill_normal(&mut z);
        assert!(parallel.iter().zip(&z).all(|(a, b)| *a == *b as f32));
    }

    #[test]
    fn transposed_terms_are_read_in_logical_order() {
        let a = Array::from_shape_fn(IxDyn(&[3, 4]), |i| (i[0] * 4 + i[1]) as f64);
        let t = a.t().to_owned().reversed_axes(); // same logical array, Fortran order
        let mut out = ArrayD::<f64>::zeros(IxDyn(&[3, 4]));
        out.lincomb(0.0, &[(1.0, &t)], None).unwrap();
        assert_eq!(out, a);
    }
}
