//! Elementwise activations and dropout.

use diffusion_core::Rng;
use ndarray::ArrayD;
use rayon::prelude::*;

use super::{array, std_slice};
use crate::error::{NnError, Result, check_shape};
use crate::param::{Float, cast};

/// Elements per parallel chunk of an elementwise pass.
const CHUNK: usize = 1 << 14;

fn map<A: Float>(x: &[A], f: impl Fn(A) -> A + Sync) -> Vec<A> {
    let mut y = vec![A::zero(); x.len()];
    y.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .for_each(|(y, x)| y.iter_mut().zip(x).for_each(|(y, &x)| *y = f(x)));
    y
}

fn map2<A: Float>(x: &[A], dy: &[A], f: impl Fn(A, A) -> A + Sync) -> Vec<A> {
    let mut dx = vec![A::zero(); x.len()];
    dx.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK).zip(dy.par_chunks(CHUNK)))
        .for_each(|(d, (x, dy))| {
            for ((d, &x), &g) in d.iter_mut().zip(x).zip(dy) {
                *d = f(x, g);
            }
        });
    dx
}

#[inline]
fn sigmoid<A: Float>(x: A) -> A {
    A::one() / (A::one() + (-x).exp())
}

/// `silu(x) = x * sigmoid(x)` on a slice.
pub(crate) fn silu_slice<A: Float>(x: &[A]) -> Vec<A> {
    map(x, |v| v * sigmoid(v))
}

/// dL/dx of SiLU given the input `x` and `dy`.
pub(crate) fn silu_backward_slice<A: Float>(x: &[A], dy: &[A]) -> Vec<A> {
    map2(x, dy, |v, g| {
        let s = sigmoid(v);
        g * s * (A::one() + v * (A::one() - s))
    })
}

/// `gelu(x)` with PyTorch's `approximate="tanh"`.
pub(crate) fn gelu_slice<A: Float>(x: &[A]) -> Vec<A> {
    let c: A = cast(0.797_884_560_802_865_4); // sqrt(2 / pi)
    let k: A = cast(0.044715);
    let half: A = cast(0.5);
    map(x, move |v| {
        half * v * (A::one() + (c * (v + k * v * v * v)).tanh())
    })
}

/// dL/dx of tanh-GELU.
pub(crate) fn gelu_backward_slice<A: Float>(x: &[A], dy: &[A]) -> Vec<A> {
    let c: A = cast(0.797_884_560_802_865_4);
    let k: A = cast(0.044715);
    let k3: A = cast(3.0 * 0.044715);
    let half: A = cast(0.5);
    map2(x, dy, move |v, g| {
        let th = (c * (v + k * v * v * v)).tanh();
        let d = half * (A::one() + th) + half * v * (A::one() - th * th) * c * (A::one() + k3 * v * v);
        g * d
    })
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
        let keep: A = cast(1.0 / (1.0 - self.p));
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
