//! Elementwise activations and dropout.

use std::mem::MaybeUninit;

use diffusion_core::Rng;
use ndarray::ArrayD;
use rayon::prelude::*;

use crate::error::{NnError, Result, check_shape};
use crate::kernels::{array, std_slice};
use crate::param::Float;

/// Elements per parallel chunk of an elementwise pass.
const CHUNK: usize = 1 << 14;

/// `out[i] = f(x[i], exp(arg(x[i])))` in one vectorised pass ([`Float::exp_elem`]).
#[inline(always)]
fn exp_map_into<A: Float>(x: &[A], out: &mut [MaybeUninit<A>], arg: impl Fn(A) -> A, f: impl Fn(A, A) -> A) {
    crate::vmath::wide(
        #[inline(always)]
        || {
            for (o, &v) in out.iter_mut().zip(x) {
                o.write(f(v, arg(v).exp_elem()));
            }
        },
    )
}

/// `out[i] = f(x[i], exp(arg(x[i])), dy[i])` (see [`exp_map_into`]).
#[inline(always)]
fn exp_map2_into<A: Float>(
    x: &[A],
    dy: &[A],
    out: &mut [MaybeUninit<A>],
    arg: impl Fn(A) -> A,
    f: impl Fn(A, A, A) -> A,
) {
    crate::vmath::wide(
        #[inline(always)]
        || {
            for ((o, &v), &g) in out.iter_mut().zip(x).zip(dy) {
                o.write(f(v, arg(v).exp_elem(), g));
            }
        },
    )
}

/// Parallel [`exp_map_into`] over fixed chunks into a new vector.
fn par_exp_map<A: Float>(x: &[A], arg: impl Fn(A) -> A + Sync, f: impl Fn(A, A) -> A + Sync) -> Vec<A> {
    let mut y = Vec::with_capacity(x.len());
    y.spare_capacity_mut()[..x.len()]
        .par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .for_each(|(y, x)| exp_map_into(x, y, &arg, &f));
    // SAFETY: the chunks of `y` pair with equally long chunks of `x`, and `exp_map_into`
    // writes one output per input element.
    unsafe { y.set_len(x.len()) };
    y
}

/// Parallel [`exp_map2_into`] over fixed chunks into a new vector.
fn par_exp_map2<A: Float>(
    x: &[A],
    dy: &[A],
    arg: impl Fn(A) -> A + Sync,
    f: impl Fn(A, A, A) -> A + Sync,
) -> Vec<A> {
    assert_eq!(x.len(), dy.len(), "activation input and gradient lengths");
    let mut dx = Vec::with_capacity(x.len());
    dx.spare_capacity_mut()[..x.len()]
        .par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK).zip(dy.par_chunks(CHUNK)))
        .for_each(|(d, (x, dy))| exp_map2_into(x, dy, d, &arg, &f));
    // SAFETY: as in `par_exp_map`, with `dy` as long as `x` (asserted).
    unsafe { dx.set_len(x.len()) };
    dx
}

/// In-place `g[i] = f(x[i], exp(arg(x[i])), g[i])` on the calling thread (a backward pass
/// that reuses the incoming gradient's buffer instead of allocating a new one).
#[inline(always)]
fn exp_map2_in_place<A: Float>(x: &[A], g: &mut [A], arg: impl Fn(A) -> A, f: impl Fn(A, A, A) -> A) {
    crate::vmath::wide(
        #[inline(always)]
        || {
            for (gv, &v) in g.iter_mut().zip(x) {
                *gv = f(v, arg(v).exp_elem(), *gv);
            }
        },
    )
}

/// `sigmoid(v)` from `e = exp(-v)`.
#[inline(always)]
fn sigmoid_of_exp<A: Float>(e: A) -> A {
    A::one() / (A::one() + e)
}

/// `silu(v) = v * sigmoid(v)` from `e = exp(-v)`.
#[inline(always)]
fn silu_of_exp<A: Float>(v: A, e: A) -> A {
    v * sigmoid_of_exp(e)
}

/// `silu(x) = x * sigmoid(x)` on a slice.
pub(crate) fn silu_slice<A: Float>(x: &[A]) -> Vec<A> {
    par_exp_map(x, |v| -v, silu_of_exp)
}

/// SiLU in place on the calling thread (for work already split across threads).
pub(crate) fn silu_in_place_seq<A: Float>(x: &mut [A]) {
    exp_map_in_place(x, |v| -v, silu_of_exp);
}

/// `z += bias` on every row (when given), then returns `silu(z)` and leaves `sigmoid(z)` in
/// `z`, on the calling thread. With the output `h`, the sigmoid is all the backward needs
/// ([`silu_backward_from_sigmoid_seq`]): the forward's exponentials are not recomputed.
pub(crate) fn bias_silu_keep_sigmoid_seq<A: Float>(z: &mut [A], bias: Option<&[A]>) -> Vec<A> {
    let n = bias.map_or(z.len(), <[A]>::len).max(1);
    check_rows(z.len(), n, bias);
    let mut y = Vec::with_capacity(z.len());
    let out = &mut y.spare_capacity_mut()[..z.len()];
    crate::vmath::wide(
        #[inline(always)]
        || {
            for (zr, or) in z.chunks_mut(n).zip(out.chunks_mut(n)) {
                biased_in_place_zip(zr, bias, or, |v, u, o| {
                    let s = sigmoid_of_exp((-u).exp_elem());
                    o.write(u * s);
                    *v = s;
                });
            }
        },
    );
    // SAFETY: the rows of `out` pair with the rows of `z`, one output written per element.
    unsafe { y.set_len(z.len()) };
    y
}

/// `f(&mut z[i], z[i] + bias[i], &mut out[i])` over one row (no bias: `z[i]` as is).
#[inline(always)]
fn biased_in_place_zip<A: Float, O>(
    z: &mut [A],
    bias: Option<&[A]>,
    out: &mut [O],
    mut f: impl FnMut(&mut A, A, &mut O),
) {
    match bias {
        Some(b) => {
            for ((v, &bv), o) in z.iter_mut().zip(b).zip(out) {
                let u = *v + bv;
                f(v, u, o);
            }
        }
        None => {
            for (v, o) in z.iter_mut().zip(out) {
                let u = *v;
                f(v, u, o);
            }
        }
    }
}

/// SiLU's backward from its sigmoid `s` and output `h = v s`, on the calling thread:
/// `g *= silu'(v) = s + v s (1 - s) = s + h (1 - s)`.
pub(crate) fn silu_backward_from_sigmoid_seq<A: Float>(s: &[A], h: &[A], g: &mut [A]) {
    assert!(
        s.len() == g.len() && h.len() == g.len(),
        "SiLU backward: sigmoid {}, output {}, gradient {} elements",
        s.len(),
        h.len(),
        g.len()
    );
    crate::vmath::wide(
        #[inline(always)]
        || {
            for ((g, &s), &h) in g.iter_mut().zip(s).zip(h) {
                *g = *g * (s + h * (A::one() - s));
            }
        },
    )
}

/// `z = silu(z + bias)` in place on the calling thread (inference; see [`bias_silu_keep_sigmoid_seq`]).
pub(crate) fn bias_silu_in_place_seq<A: Float>(z: &mut [A], bias: Option<&[A]>) {
    let n = bias.map_or(z.len(), <[A]>::len).max(1);
    check_rows(z.len(), n, bias);
    crate::vmath::wide(
        #[inline(always)]
        || {
            for zr in z.chunks_mut(n) {
                biased_row_in_place(zr, bias, |u| silu_of_exp(u, (-u).exp_elem()));
            }
        },
    )
}

/// `z[i] = f(z[i] + bias[i])` over one row (no bias: `f(z[i])`).
#[inline(always)]
fn biased_row_in_place<A: Float>(z: &mut [A], bias: Option<&[A]>, f: impl Fn(A) -> A) {
    match bias {
        Some(b) => {
            for (v, &bv) in z.iter_mut().zip(b) {
                *v = f(*v + bv);
            }
        }
        None => {
            for v in z.iter_mut() {
                *v = f(*v);
            }
        }
    }
}

/// `x[i] = f(x[i], exp(arg(x[i])))` in place on the calling thread (see [`exp_map_into`]).
#[inline(always)]
fn exp_map_in_place<A: Float>(x: &mut [A], arg: impl Fn(A) -> A, f: impl Fn(A, A) -> A) {
    crate::vmath::wide(
        #[inline(always)]
        || {
            for v in x.iter_mut() {
                *v = f(*v, arg(*v).exp_elem());
            }
        },
    )
}

#[inline(always)]
fn silu_grad<A: Float>(v: A, e: A, g: A) -> A {
    let s = sigmoid_of_exp(e);
    g * s * (A::one() + v * (A::one() - s))
}

/// dL/dx of SiLU given the input `x` and `dy`.
pub(crate) fn silu_backward_slice<A: Float>(x: &[A], dy: &[A]) -> Vec<A> {
    par_exp_map2(x, dy, |v| -v, silu_grad)
}

/// [`silu_backward_in_place`] on the calling thread.
pub(crate) fn silu_backward_in_place_seq<A: Float>(x: &[A], g: &mut [A]) {
    exp_map2_in_place(x, g, |v| -v, silu_grad)
}

const GELU_C: f64 = 0.797_884_560_802_865_4; // sqrt(2 / pi)
const GELU_K: f64 = 0.044715;

/// `-2u` for tanh-GELU's `u = c (v + k v^3)`: `0.5 (1 + tanh u) = sigmoid(2u)`, so
/// `gelu(v) = v * sigmoid(2u)` needs one `exp` and has no cancellation near 0.
///
/// The constants are cast inside (folded at compile time) rather than captured: a loop
/// that reads captured constants through the closure's reference while writing a `&mut`
/// slice reloads them every element and does not vectorise.
#[inline(always)]
fn gelu_arg<A: Float>(v: A) -> A {
    let (c2, k): (A, A) = (A::of_f64(2.0 * GELU_C), A::of_f64(GELU_K));
    -(c2 * (v + k * v * v * v))
}

#[inline(always)]
fn gelu_of_exp<A: Float>(v: A, e: A) -> A {
    v * sigmoid_of_exp(e)
}

/// tanh-GELU's gradient `g (s + 2 v s (1 - s) c (1 + 3 k v^2))` with `s = sigmoid(2u)`.
#[inline(always)]
fn gelu_grad<A: Float>(v: A, e: A, g: A) -> A {
    let (c2, k3): (A, A) = (A::of_f64(2.0 * GELU_C), A::of_f64(3.0 * GELU_K));
    let s = sigmoid_of_exp(e);
    g * (s + c2 * v * s * (A::one() - s) * (A::one() + k3 * v * v))
}

/// `gelu(x)` with PyTorch's `approximate="tanh"`.
pub(crate) fn gelu_slice<A: Float>(x: &[A]) -> Vec<A> {
    par_exp_map(x, gelu_arg, gelu_of_exp)
}

/// Chunks of whole rows of `n` elements, about [`CHUNK`] long.
fn row_chunk(n: usize) -> usize {
    CHUNK.div_ceil(n.max(1)) * n.max(1)
}

/// `z += bias` on every row of `n` elements (none: no bias), then `out = gelu(z)`, leaving
/// `z` biased (the backward's input); row by row on the calling thread, each row's bias,
/// `exp` and output in one visit while it is in cache.
pub(crate) fn bias_gelu_seq<A: Float>(z: &mut [A], n: usize, bias: Option<&[A]>, out: &mut [MaybeUninit<A>]) {
    check_rows(z.len(), n, bias);
    assert_eq!(out.len(), z.len(), "bias_gelu output length");
    crate::vmath::wide(
        #[inline(always)]
        || {
            for (zr, yr) in z.chunks_mut(n).zip(out.chunks_mut(n)) {
                biased_in_place_zip(zr, bias, yr, |v, u, o| {
                    *v = u;
                    o.write(gelu_of_exp(u, gelu_arg(u).exp_elem()));
                });
            }
        },
    )
}

/// `z = gelu(z + bias)` in place (inference), with [`bias_gelu_seq`]'s arithmetic.
pub(crate) fn bias_gelu_in_place_seq<A: Float>(z: &mut [A], n: usize, bias: Option<&[A]>) {
    check_rows(z.len(), n, bias);
    crate::vmath::wide(
        #[inline(always)]
        || {
            for zr in z.chunks_mut(n) {
                biased_row_in_place(zr, bias, |u| gelu_of_exp(u, gelu_arg(u).exp_elem()));
            }
        },
    )
}

fn check_rows<A>(len: usize, n: usize, bias: Option<&[A]>) {
    assert!(
        n > 0 && len.is_multiple_of(n) && bias.is_none_or(|b| b.len() == n),
        "rows of {n}: {len} elements, bias of {:?}",
        bias.map(|b| b.len())
    );
}

/// dL/dx of tanh-GELU.
pub(crate) fn gelu_backward_slice<A: Float>(x: &[A], dy: &[A]) -> Vec<A> {
    par_exp_map2(x, dy, gelu_arg, gelu_grad)
}

/// [`gelu_backward_slice`] overwriting `g` (dy in, dx out), for rows of `n` elements;
/// returns the column sums of the result (the bias gradient of the layer below), summed
/// per fixed chunk of rows while it is in cache, then chunk by chunk in order.
pub(crate) fn gelu_backward_in_place_column_sums<A: Float>(x: &[A], g: &mut [A], n: usize) -> Vec<A> {
    assert!(
        n > 0 && x.len() == g.len() && g.len().is_multiple_of(n),
        "GELU backward: {} inputs, {} gradients, rows of {n}",
        x.len(),
        g.len()
    );
    let partials: Vec<Vec<A>> = g
        .par_chunks_mut(row_chunk(n))
        .zip(x.par_chunks(row_chunk(n)))
        .map(|(g, x)| {
            exp_map2_in_place(x, g, gelu_arg, gelu_grad);
            crate::kernels::column_sums_seq(g, n)
        })
        .collect();
    crate::kernels::sum_in_order(&partials, n)
}

macro_rules! activation {
    ($name:ident, $fwd:ident, $bwd:ident, $doc:literal) => {
        #[doc = $doc]
        #[derive(Clone, Copy, Debug, Default)]
        pub struct $name;

        impl $name {
            /// Returns `(y, cache)`; the cache is the input.
            pub fn forward<A: Float>(&self, x: &ArrayD<A>) -> (ArrayD<A>, ArrayD<A>) {
                (array(x.shape(), $fwd(&std_slice(x))), x.clone())
            }

            /// dL/dx from the cached input.
            pub fn backward<A: Float>(&self, x: &ArrayD<A>, dy: &ArrayD<A>) -> Result<ArrayD<A>> {
                check_shape(stringify!($name), x.shape(), dy.shape())?;
                Ok(array(x.shape(), $bwd(&std_slice(x), &std_slice(dy))))
            }
        }
    };
}

activation!(
    Silu,
    silu_slice,
    silu_backward_slice,
    "SiLU (swish): `x * sigmoid(x)`."
);
activation!(
    Gelu,
    gelu_slice,
    gelu_backward_slice,
    "GELU, tanh approximation (PyTorch `approximate=\"tanh\"`)."
);

/// Inverted dropout with an explicit random stream: kept elements are scaled by `1/(1-p)`.
#[derive(Clone, Copy, Debug)]
pub struct Dropout {
    p: f64,
}

impl Dropout {
    pub fn new(p: f64) -> Result<Self> {
        if !(0.0..1.0).contains(&p) {
            return Err(NnError::Config {
                name: "dropout p",
                reason: format!("{p} is not in [0, 1)"),
            });
        }
        Ok(Self { p })
    }

    /// Training-mode forward; the cache is the scaled mask (0 or `1/(1-p)`). Element `n`
    /// (row-major) is kept iff uniform variate `n` of `rng` is at least `p`.
    pub fn forward<A: Float>(&self, x: &ArrayD<A>, rng: &mut Rng) -> (ArrayD<A>, ArrayD<A>) {
        let keep: A = A::of_f64(1.0 / (1.0 - self.p));
        let mask: Vec<A> = (0..x.len())
            .map(|_| if rng.uniform() >= self.p { keep } else { A::zero() })
            .collect();
        let mask = array(x.shape(), mask);
        let y = x * &mask;
        (y, mask)
    }

    /// dL/dx = dy * mask.
    pub fn backward<A: Float>(&self, mask: &ArrayD<A>, dy: &ArrayD<A>) -> Result<ArrayD<A>> {
        check_shape("Dropout", mask.shape(), dy.shape())?;
        Ok(dy * mask)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bias_gelu_is_gelu_of_the_biased_rows() {
        // Rows wider than one exp block, with and without a bias.
        let (rows, n) = (31, 300);
        let z: Vec<f32> = (0..rows * n)
            .map(|i| ((i * 7919) % 2001) as f32 * 0.004 - 4.0)
            .collect();
        let bias: Vec<f32> = (0..n).map(|j| j as f32 * 0.01 - 1.5).collect();
        for b in [Some(&bias[..]), None] {
            let biased: Vec<f32> = z
                .chunks(n)
                .flat_map(|r| r.iter().enumerate().map(|(j, v)| v + b.map_or(0.0, |b| b[j])))
                .collect();
            let want = gelu_slice(&biased);
            let mut zt = z.clone();
            let mut y = Vec::with_capacity(z.len());
            bias_gelu_seq(&mut zt, n, b, &mut y.spare_capacity_mut()[..z.len()]);
            // SAFETY: `bias_gelu_seq` writes every output element.
            unsafe { y.set_len(z.len()) };
            assert_eq!(y, want);
            assert_eq!(zt, biased, "the pre-activation is left biased");
            let mut zi = z.clone();
            bias_gelu_in_place_seq(&mut zi, n, b);
            assert_eq!(zi, want);
        }
    }

    #[test]
    fn silu_from_its_sigmoid_matches_silu_and_its_gradient() {
        // f64, inputs over [-40, 40] (saturated sigmoids included), 700 elements: several
        // exp blocks and a partial one, rows of 7 for the bias.
        let z: Vec<f64> = (0..700)
            .map(|i| ((i * 7919) % 1601) as f64 * 0.05 - 40.0)
            .collect();
        let g: Vec<f64> = (0..700)
            .map(|i| ((i * 104_729) % 997) as f64 / 997.0 - 0.5)
            .collect();
        let bias: Vec<f64> = (0..7).map(|j| j as f64 * 0.3 - 1.0).collect();
        let biased: Vec<f64> = z
            .chunks(7)
            .flat_map(|r| r.iter().zip(&bias).map(|(v, b)| v + b))
            .collect();
        let mut s = z.clone();
        let h = bias_silu_keep_sigmoid_seq(&mut s, Some(&bias));
        let mut dx = g.clone();
        silu_backward_from_sigmoid_seq(&s, &h, &mut dx);
        for (i, &v) in biased.iter().enumerate() {
            // Independent closed forms: sigmoid by `tanh`, SiLU' = s (1 + v (1 - s)).
            let sig = 0.5 * (1.0 + (0.5 * v).tanh());
            let (want_h, want_dx) = (v * sig, g[i] * sig * (1.0 + v * (1.0 - sig)));
            assert!((s[i] - sig).abs() <= 1e-15, "sigmoid({v}): {} vs {sig}", s[i]);
            assert!((h[i] - want_h).abs() <= 1e-14 * (1.0 + want_h.abs()), "silu({v})");
            assert!(
                (dx[i] - want_dx).abs() <= 1e-14 * (1.0 + want_dx.abs()),
                "silu'({v}): {} vs {want_dx}",
                dx[i]
            );
        }
    }
}
