//! Loop kernels the layers and models share: batch-parallel item tasks with per-task
//! gradients, sums in a fixed order (results independent of the thread count), row and
//! column passes at the vector width, and scratch buffers.

use diffusion_core::Rng;
use ndarray::{ArrayD, IxDyn};
use rayon::prelude::*;

use crate::param::Float;

/// Uniform `U(-bound, bound)` values (PyTorch's default Linear/Conv initialisation).
pub(crate) fn uniform_array<A: Float>(shape: &[usize], bound: f64, rng: &mut Rng) -> ArrayD<A> {
    let n: usize = shape.iter().product();
    let v: Vec<A> = (0..n)
        .map(|_| A::of_f64((2.0 * rng.uniform() - 1.0) * bound))
        .collect();
    ArrayD::from_shape_vec(IxDyn(shape), v).expect("length matches shape")
}

/// A contiguous copy of `x`'s data in row-major order (borrowed when already standard).
pub(crate) fn std_slice<A: Float>(x: &ArrayD<A>) -> std::borrow::Cow<'_, [A]> {
    match x.as_slice() {
        Some(s) => std::borrow::Cow::Borrowed(s),
        None => std::borrow::Cow::Owned(x.iter().copied().collect()),
    }
}

/// An array of `shape` holding `data`.
pub(crate) fn array<A>(shape: &[usize], data: Vec<A>) -> ArrayD<A> {
    ArrayD::from_shape_vec(IxDyn(shape), data).expect("length matches shape")
}

/// Number of partial-gradient groups a batch is split into: fixed by the batch size alone,
/// so sums are identical for any number of threads.
const GRAD_GROUPS: usize = 8;

/// Runs `f(item, dx_item, grad_partial)` over batch items in parallel. `dx` is split into
/// `batch` equal items; items are processed in fixed contiguous groups, each accumulating
/// into its own zeroed buffer of `grad_len`; the group buffers are then summed in order.
pub(crate) fn par_items_with_grads<A, D, F>(dx: &mut [D], batch: usize, grad_len: usize, f: F) -> Vec<A>
where
    A: Float,
    D: Send,
    F: Fn(usize, &mut [D], &mut [A]) + Sync,
{
    if batch == 0 {
        return vec![A::zero(); grad_len];
    }
    let per = dx.len() / batch;
    let groups = batch.min(GRAD_GROUPS);
    let items_per = batch.div_ceil(groups);
    let chunk = (items_per * per).max(1);
    let partials: Vec<Vec<A>> = dx
        .par_chunks_mut(chunk)
        .enumerate()
        .map(|(gi, dxg)| {
            let mut g = vec![A::zero(); grad_len];
            let first = gi * items_per;
            let n_items = dxg.len().checked_div(per).unwrap_or(items_per.min(batch - first));
            for j in 0..n_items {
                let item = &mut dxg[j * per..(j + 1) * per];
                f(first + j, item, &mut g);
            }
            g
        })
        .collect();
    sum_in_order(&partials, grad_len)
}

/// The elementwise sum of `len`-element partial results, every element adding them in
/// their order whichever thread adds which chunk (parallel over fixed chunks): identical
/// for any number of threads.
pub(crate) fn sum_in_order<A: Float, P: AsRef<[A]> + Sync>(partials: &[P], len: usize) -> Vec<A> {
    let mut total = vec![A::zero(); len];
    total.par_chunks_mut(FILL_CHUNK).enumerate().for_each(|(i, t)| {
        crate::vmath::wide(
            #[inline(always)]
            || {
                for p in partials {
                    add_into(t, &p.as_ref()[i * FILL_CHUNK..i * FILL_CHUNK + t.len()]);
                }
            },
        )
    });
    total
}

thread_local! {
    /// Per-thread work memory of [`with_scratch`], kept between calls.
    static WORK: std::cell::RefCell<[Vec<u64>; 2]> = const { std::cell::RefCell::new([Vec::new(), Vec::new()]) };
}

/// Runs `f` with two work buffers of `len_a` and `len_b` elements (contents unspecified:
/// callers overwrite what they read). The memory is the calling thread's and is kept for
/// the next call, so per-item loops (im2col columns and their gradients) neither allocate
/// nor page-fault fresh memory on every call; it grows to the largest request a thread has
/// seen. A nested call on the same thread (rayon may run another item's job while `f`
/// waits on a parallel product) gets fresh buffers instead.
pub(crate) fn with_scratch<A: Float, R>(
    len_a: usize,
    len_b: usize,
    f: impl FnOnce(&mut [A], &mut [A]) -> R,
) -> R {
    fn words<A>(len: usize) -> usize {
        (len * std::mem::size_of::<A>()).div_ceil(8)
    }
    fn view<A: Float>(buf: &mut Vec<u64>, len: usize) -> &mut [A] {
        if buf.len() < words::<A>(len) {
            buf.resize(words::<A>(len), 0);
        }
        &mut bytemuck::cast_slice_mut::<u64, A>(buf)[..len]
    }
    WORK.with(|work| match work.try_borrow_mut() {
        Ok(mut bufs) => {
            let [a, b] = &mut *bufs;
            f(view(a, len_a), view(b, len_b))
        }
        Err(_) => {
            let (mut a, mut b) = (Vec::new(), Vec::new());
            f(view(&mut a, len_a), view(&mut b, len_b))
        }
    })
}

/// Most batch items per task of a layer that runs whole items through several steps on one
/// thread (the DiT's MLP branch, self-attention), so that their intermediate rows stay in
/// that core's cache between the steps. 8 items of 64 tokens are 512 rows: the DiT MLP's
/// hidden rows (768 wide, 1.5 MB in f32) fit a 2 MB L2. Measured on dit-tiny's MLP branch
/// against whole-batch parallel products, alternating in one process (2 threads): 4 items
/// about even, 8 items 3-8% faster at inference and 1-3% in training, 16 no better.
pub(crate) const TASK_ITEMS: usize = 8;
/// Smaller batches take fewer items per task, so that a batch of at least this many items
/// still gives this many tasks (sampling runs small batches on machines with many cores).
const MIN_TASKS: usize = 8;

/// Batch items per task ([`TASK_ITEMS`], fewer for small batches): a function of the batch
/// size alone, so results do not depend on the thread count.
pub(crate) fn task_items(batch: usize) -> usize {
    (batch / MIN_TASKS).clamp(1, TASK_ITEMS)
}

/// Elements per parallel piece of [`repeat_rows`].
const FILL_CHUNK: usize = 1 << 14;

/// `rows` copies of `row`, written once and in parallel (no zeroing first): the bias rows a
/// Linear's output starts from before the GEMM accumulates onto them.
pub(crate) fn repeat_rows<A: Float>(row: &[A], rows: usize) -> Vec<A> {
    let n = row.len();
    let len = rows * n;
    let mut v = Vec::with_capacity(len);
    if len > 0 {
        let chunk = FILL_CHUNK.div_ceil(n) * n;
        v.spare_capacity_mut()[..len].par_chunks_mut(chunk).for_each(|c| {
            // Row by row (a `cycle` over `row` would keep this loop from vectorising).
            for r in c.chunks_mut(n) {
                for (d, &s) in r.iter_mut().zip(row) {
                    d.write(s);
                }
            }
        });
    }
    // SAFETY: the loop above initialised all `len` elements (each chunk is a whole number
    // of rows, and each row is `n = row.len()` long).
    unsafe { v.set_len(len) };
    v
}

/// `acc[j] += sum_i m[i * acc.len() + j]` (a bias gradient): row groups fixed by the row
/// count are summed in parallel, then added in order, so the result does not depend on the
/// thread count.
pub(crate) fn add_column_sums<A: Float>(acc: &mut [A], m: &[A]) {
    let cols = acc.len();
    if cols == 0 {
        return;
    }
    let rows = m.len() / cols;
    let group = rows.div_ceil(GRAD_GROUPS).max(1);
    let partials: Vec<Vec<A>> = m
        .par_chunks(group * cols)
        .map(|block| column_sums_seq(block, cols))
        .collect();
    for p in &partials {
        add_into(acc, p);
    }
}

/// `z += bias` on every row of `bias.len()` elements (none: nothing to add).
pub(crate) fn add_row_bias<A: Float>(z: &mut [A], bias: Option<&[A]>) {
    if let Some(b) = bias {
        assert!(
            !b.is_empty() && z.len().is_multiple_of(b.len()),
            "bias rows of {}",
            b.len()
        );
        crate::vmath::wide(
            #[inline(always)]
            || {
                for row in z.chunks_mut(b.len()) {
                    add_into(row, b);
                }
            },
        )
    }
}

/// The column sums of rows of `n` elements, rows added in order on the calling thread.
pub(crate) fn column_sums_seq<A: Float>(m: &[A], n: usize) -> Vec<A> {
    let mut sums = vec![A::zero(); n];
    crate::vmath::wide(
        #[inline(always)]
        || {
            for row in m.chunks(n) {
                for (s, &v) in sums.iter_mut().zip(row) {
                    *s = *s + v;
                }
            }
        },
    );
    sums
}

/// `acc += v` elementwise, in parallel over fixed chunks (for activation-sized tensors).
pub(crate) fn par_add_into<A: Float>(acc: &mut [A], v: &[A]) {
    acc.par_chunks_mut(FILL_CHUNK)
        .zip(v.par_chunks(FILL_CHUNK))
        .for_each(|(a, b)| {
            crate::vmath::wide(
                #[inline(always)]
                || add_into(a, b),
            )
        });
}

/// Independent accumulators of [`lane_dot`] and [`lane_max`]: they break the add-latency
/// chain so the loops vectorise, while the order of operations stays fixed.
const ACC_LANES: usize = 8;

/// `sum f(a[i], b[i])` in [`ACC_LANES`] interleaved lanes combined pairwise.
#[inline(always)]
pub(crate) fn lane_dot<A: Float>(a: &[A], b: &[A], f: impl Fn(A, A) -> A) -> A {
    let mut acc = [A::zero(); ACC_LANES];
    let (ac, bc) = (a.chunks_exact(ACC_LANES), b.chunks_exact(ACC_LANES));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (ca, cb) in ac.zip(bc) {
        for l in 0..ACC_LANES {
            acc[l] = acc[l] + f(ca[l], cb[l]);
        }
    }
    for (l, (&x, &y)) in ar.iter().zip(br).enumerate() {
        acc[l] = acc[l] + f(x, y);
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]))
}

/// The largest element (`-inf` for an empty slice), in [`ACC_LANES`] lanes.
#[inline(always)]
pub(crate) fn lane_max<A: Float>(a: &[A]) -> A {
    let mut acc = [A::neg_infinity(); ACC_LANES];
    let chunks = a.chunks_exact(ACC_LANES);
    for (l, &x) in chunks.remainder().iter().enumerate() {
        acc[l] = acc[l].max(x);
    }
    for c in chunks {
        for l in 0..ACC_LANES {
            acc[l] = acc[l].max(c[l]);
        }
    }
    acc.iter().fold(A::neg_infinity(), |m, &v| m.max(v))
}

/// An output element that a pass writes once: an initialised value, or uninitialised room
/// (`MaybeUninit`) that the pass fills, so that one loop serves both kinds of output.
pub(crate) trait Sink<A>: Sized {
    fn put(&mut self, v: A);
}

impl<A: Float> Sink<A> for A {
    #[inline(always)]
    fn put(&mut self, v: A) {
        *self = v;
    }
}

impl<A: Float> Sink<A> for std::mem::MaybeUninit<A> {
    #[inline(always)]
    fn put(&mut self, v: A) {
        self.write(v);
    }
}

/// `s` as initialised elements (`slice_assume_init_mut`, not yet stable).
///
/// # Safety
/// Every element of `s` has been written.
pub(crate) unsafe fn assume_init_mut<A>(s: &mut [std::mem::MaybeUninit<A>]) -> &mut [A] {
    // SAFETY: `MaybeUninit<A>` has `A`'s layout, and the caller guarantees initialisation.
    unsafe { &mut *(s as *mut [std::mem::MaybeUninit<A>] as *mut [A]) }
}

/// `acc += v` elementwise.
pub(crate) fn add_into<A: Float>(acc: &mut [A], v: &[A]) {
    for (a, b) in acc.iter_mut().zip(v) {
        *a = *a + *b;
    }
}
