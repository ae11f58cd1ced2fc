//! The per-tile transforms of F(2x2, 3x3), written once for any [`Arith`] value: a single
//! tile (edge tiles, odd sizes) or [`Lanes`] of consecutive tiles of a tile row, which the
//! compiler turns into vector code.
//!
//! Inputs come from zero-padded input rows split into even and odd columns (`e`, `o`), so
//! the 4 columns of tile `t` are `e[t], o[t], e[t + 1], o[t + 1]`: contiguous across tiles.

use std::ops::{Add, Neg, Sub};

use crate::param::Float;

/// What the transforms compute with.
pub(super) trait Arith: Copy + Add<Output = Self> + Sub<Output = Self> + Neg<Output = Self> {}
impl<T: Copy + Add<Output = T> + Sub<Output = T> + Neg<Output = T>> Arith for T {}

/// The values of `N` consecutive tiles, transformed together.
#[derive(Clone, Copy, Debug)]
pub(super) struct Lanes<A, const N: usize>(pub [A; N]);

impl<A: Float, const N: usize> Lanes<A, N> {
    /// `s[at..at + N]`.
    #[inline(always)]
    pub fn load(s: &[A], at: usize) -> Self {
        Self(s[at..at + N].try_into().expect("N values"))
    }

    /// `s[at + 2 l + parity]` for `l < N`: the even (`parity` 0) or odd columns of `2 N`
    /// values from `at`.
    #[inline(always)]
    pub fn load_strided(s: &[A], at: usize, parity: usize) -> Self {
        let s = &s[at..at + 2 * N];
        let mut v = [A::zero(); N];
        for (l, d) in v.iter_mut().enumerate() {
            *d = s[2 * l + parity];
        }
        Self(v)
    }

    #[inline(always)]
    pub fn store(self, s: &mut [A], at: usize) {
        s[at..at + N].copy_from_slice(&self.0);
    }
}

impl<A: Float, const N: usize> Add for Lanes<A, N> {
    type Output = Self;
    #[inline(always)]
    fn add(mut self, o: Self) -> Self {
        for l in 0..N {
            self.0[l] = self.0[l] + o.0[l];
        }
        self
    }
}

impl<A: Float, const N: usize> Sub for Lanes<A, N> {
    type Output = Self;
    #[inline(always)]
    fn sub(mut self, o: Self) -> Self {
        for l in 0..N {
            self.0[l] = self.0[l] - o.0[l];
        }
        self
    }
}

impl<A: Float, const N: usize> Neg for Lanes<A, N> {
    type Output = Self;
    #[inline(always)]
    fn neg(mut self) -> Self {
        for v in &mut self.0 {
            *v = -*v;
        }
        self
    }
}

/// `B^T d` for 4 consecutive inputs.
#[inline(always)]
fn b_apply<T: Arith>(d: [T; 4]) -> [T; 4] {
    [d[0] - d[2], d[1] + d[2], d[2] - d[1], d[1] - d[3]]
}

/// `A^T m`: the 2 outputs of 4 transformed values.
#[inline(always)]
fn a_apply<T: Arith>(m: [T; 4]) -> [T; 2] {
    [m[0] + m[1] + m[2], m[1] - m[2] - m[3]]
}

/// `A y`, the adjoint of [`a_apply`].
#[inline(always)]
fn a_adjoint<T: Arith>(y: [T; 2]) -> [T; 4] {
    [y[0], y[0] + y[1], y[0] - y[1], -y[1]]
}

/// `V = B^T d B` of the 4x4 tile `d[row][column]`, as points `4 i + j`.
#[inline(always)]
pub(super) fn input<T: Arith>(d: [[T; 4]; 4]) -> [T; 16] {
    let h = [b_apply(d[0]), b_apply(d[1]), b_apply(d[2]), b_apply(d[3])];
    let mut v = [h[0][0]; 16];
    for j in 0..4 {
        let t = b_apply([h[0][j], h[1][j], h[2][j], h[3][j]]);
        for i in 0..4 {
            v[i * 4 + j] = t[i];
        }
    }
    v
}

/// `Y = A^T M A` of the points `m[4 i + k]`: the 2x2 outputs `[row][column]`.
#[inline(always)]
pub(super) fn output<T: Arith>(m: [T; 16]) -> [[T; 2]; 2] {
    // Rows of A^T M for each column k, then A^T across k.
    let cols = [
        a_apply([m[0], m[4], m[8], m[12]]),
        a_apply([m[1], m[5], m[9], m[13]]),
        a_apply([m[2], m[6], m[10], m[14]]),
        a_apply([m[3], m[7], m[11], m[15]]),
    ];
    [
        a_apply([cols[0][0], cols[1][0], cols[2][0], cols[3][0]]),
        a_apply([cols[0][1], cols[1][1], cols[2][1], cols[3][1]]),
    ]
}

/// `dM = A dY A^T` of the 2x2 output gradient `dy[row][column]`, as points `4 i + k`.
#[inline(always)]
pub(super) fn output_grad<T: Arith>(dy: [[T; 2]; 2]) -> [T; 16] {
    let even = a_adjoint([dy[0][0], dy[1][0]]);
    let odd = a_adjoint([dy[0][1], dy[1][1]]);
    let mut m = [even[0]; 16];
    for i in 0..4 {
        let q = a_adjoint([even[i], odd[i]]);
        m[i * 4..i * 4 + 4].copy_from_slice(&q);
    }
    m
}
