//! Dense row-stochastic transition matrices, for inspection and for tests against the
//! closed forms the process uses internally.

use crate::error::{DiscreteError, Result};

/// A dense `K x K` matrix, row-major: `get(i, j) = q(x_t = j | x_s = i)` for a transition.
#[derive(Clone, Debug, PartialEq)]
pub struct Matrix {
    k: usize,
    data: Vec<f64>,
}

impl Matrix {
    /// The `k x k` identity.
    pub fn identity(k: usize) -> Self {
        let mut data = vec![0.0; k * k];
        for i in 0..k {
            data[i * k + i] = 1.0;
        }
        Self { k, data }
    }

    /// A matrix from row-major entries (`k * k` of them).
    pub fn from_rows(k: usize, data: Vec<f64>) -> Result<Self> {
        if data.len() != k * k {
            return Err(DiscreteError::LengthMismatch {
                context: "Matrix::from_rows",
                expected: k * k,
                got: data.len(),
            });
        }
        Ok(Self { k, data })
    }

    /// The number of categories.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Entry `(i, j)`.
    pub fn get(&self, i: usize, j: usize) -> f64 {
        self.data[i * self.k + j]
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> &[f64] {
        &self.data[i * self.k..(i + 1) * self.k]
    }

    /// The product `self * other` (apply `self`, then `other`).
    pub fn matmul(&self, other: &Matrix) -> Result<Matrix> {
        if other.k != self.k {
            return Err(DiscreteError::LengthMismatch {
                context: "Matrix::matmul",
                expected: self.k,
                got: other.k,
            });
        }
        let k = self.k;
        let mut data = vec![0.0; k * k];
        for i in 0..k {
            for l in 0..k {
                let a = self.data[i * k + l];
                if a != 0.0 {
                    for j in 0..k {
                        data[i * k + j] += a * other.data[l * k + j];
                    }
                }
            }
        }
        Ok(Matrix { k, data })
    }

    /// The largest absolute entry-wise difference.
    pub fn max_abs_diff(&self, other: &Matrix) -> f64 {
        self.data
            .iter()
            .zip(&other.data)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max)
    }
}
