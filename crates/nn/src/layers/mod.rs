//! Layers: each has a pure `forward(&self, x) -> (y, Cache)` and a
//! `backward(&mut self, &Cache, dy) -> dx` that accumulates parameter gradients.

pub mod activation;
pub mod attention;
pub mod conv;
pub mod embed;
pub mod linear;
pub mod norm;
pub mod whitebox;

pub use activation::{Dropout, Gelu, Silu};
pub use attention::{AttentionCache, MultiheadAttention};
pub use conv::{Conv, ConvCache, Upsample};
pub use embed::{FourierFeatures, patchify, timestep_embedding, unpatchify};
pub use linear::{Linear, LinearCache};
pub use norm::{GroupNorm, LayerNorm, NormCache};
pub use whitebox::{IstaBlock, IstaCache, SubspaceAttention, SubspaceCache};

use diffusion_core::Rng;
use ndarray::{ArrayD, IxDyn};
use rayon::prelude::*;

use crate::param::{Float, cast};

/// Uniform `U(-bound, bound)` values (PyTorch's default Linear/Conv initialisation).
pub(crate) fn uniform_array<A: Float>(shape: &[usize], bound: f64, rng: &mut Rng) -> ArrayD<A> {
    let n: usize = shape.iter().product();
    let v: Vec<A> = (0..n)
        .map(|_| cast((2.0 * rng.uniform() - 1.0) * bound))
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

/// Runs `f(item, dx_item, grad_partial, scratch)` over batch items in parallel. `dx` is
/// split into `batch` equal items; items are processed in fixed contiguous groups, each
/// accumulating into its own zeroed buffer of `grad_len`; the group buffers are then summed
/// in order. `scratch` is reused by the items of a group (its contents are unspecified).
pub(crate) fn par_items_with_grads<A, F>(dx: &mut [A], batch: usize, grad_len: usize, f: F) -> Vec<A>
where
    A: Float,
    F: Fn(usize, &mut [A], &mut [A], &mut Scratch<A>) + Sync,
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
            let mut scratch = Scratch::default();
            let first = gi * items_per;
            let n_items = dxg.len().checked_div(per).unwrap_or(items_per.min(batch - first));
            for j in 0..n_items {
                let item = &mut dxg[j * per..(j + 1) * per];
                f(first + j, item, &mut g, &mut scratch);
            }
            g
        })
        .collect();
    let mut total = vec![A::zero(); grad_len];
    for p in &partials {
        for (t, v) in total.iter_mut().zip(p) {
            *t = *t + *v;
        }
    }
    total
}

/// Two reusable work buffers (e.g. im2col columns and their gradient), so per-item loops
/// do not allocate (and page-fault in) fresh memory for every item.
#[derive(Debug)]
pub(crate) struct Scratch<A> {
    a: Vec<A>,
    b: Vec<A>,
}

impl<A> Default for Scratch<A> {
    fn default() -> Self {
        Self {
            a: Vec::new(),
            b: Vec::new(),
        }
    }
}

impl<A: Float> Scratch<A> {
    /// Two buffers of at least `len_a` and `len_b` elements (contents unspecified).
    pub(crate) fn get(&mut self, len_a: usize, len_b: usize) -> (&mut [A], &mut [A]) {
        if self.a.len() < len_a {
            self.a.resize(len_a, A::zero());
        }
        if self.b.len() < len_b {
            self.b.resize(len_b, A::zero());
        }
        (&mut self.a[..len_a], &mut self.b[..len_b])
    }
}

/// `acc += v` elementwise.
pub(crate) fn add_into<A: Float>(acc: &mut [A], v: &[A]) {
    for (a, b) in acc.iter_mut().zip(v) {
        *a = *a + *b;
    }
}
