//! Rank-`r` factors of a matrix by SVD (nalgebra's Golub-Kahan SVD in f64): the SVDQuant
//! branch (of the smoothed weight itself) and LoRC (of the quantization error).

use nalgebra::DMatrix;

use crate::error::{QuantError, Result, invalid};

/// `M ~ B A` with `A: [rank, cols]` and `B: [rows, rank]` (row-major f32), the best rank-`r`
/// approximation in the Frobenius norm (Eckart-Young); the singular values go into `B`.
#[derive(Clone, Debug, PartialEq)]
pub struct LowRank {
    pub rank: usize,
    pub rows: usize,
    pub cols: usize,
    pub a: Vec<f32>,
    pub b: Vec<f32>,
}

impl LowRank {
    /// The top-`rank` SVD factors of the `[rows, cols]` matrix `m`.
    pub fn of(m: &[f32], rows: usize, cols: usize, rank: usize) -> Result<Self> {
        crate::quantizer::check_matrix(m, rows, cols, "low-rank input")?;
        if rank == 0 || rank > rows.min(cols) {
            return Err(invalid(
                "rank",
                format!(
                    "{rank} must be in 1..={} for a {rows}x{cols} matrix",
                    rows.min(cols)
                ),
            ));
        }
        if m.iter().any(|v| !v.is_finite()) {
            return Err(QuantError::NonFinite("low-rank input".into()));
        }
        let mat = DMatrix::from_row_iterator(rows, cols, m.iter().map(|&v| v as f64));
        let svd = mat.svd(true, true);
        let (u, vt) = match (svd.u, svd.v_t) {
            (Some(u), Some(vt)) => (u, vt),
            _ => return Err(invalid("SVD", "did not return singular vectors")),
        };
        // nalgebra does not promise sorted singular values: take the largest `rank`.
        let mut order: Vec<usize> = (0..svd.singular_values.len()).collect();
        order.sort_by(|&i, &j| svd.singular_values[j].total_cmp(&svd.singular_values[i]));
        let mut a = Vec::with_capacity(rank * cols);
        let mut b = vec![0f32; rows * rank];
        for (k, &i) in order.iter().take(rank).enumerate() {
            let s = svd.singular_values[i];
            a.extend((0..cols).map(|c| vt[(i, c)] as f32));
            for r in 0..rows {
                b[r * rank + k] = (u[(r, i)] * s) as f32;
            }
        }
        Ok(Self {
            rank,
            rows,
            cols,
            a,
            b,
        })
    }

    /// `B A` as a `[rows, cols]` matrix (f64 sums).
    pub fn product(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.rows * self.cols];
        for r in 0..self.rows {
            for c in 0..self.cols {
                let s: f64 = (0..self.rank)
                    .map(|k| self.b[r * self.rank + k] as f64 * self.a[k * self.cols + c] as f64)
                    .sum();
                out[r * self.cols + c] = s as f32;
            }
        }
        out
    }

    /// Checks the factor lengths against the declared shape.
    pub fn check(&self, tensor: &str) -> Result<()> {
        for (found, expected, what) in [
            (self.a.len(), self.rank * self.cols, "lowrank_a"),
            (self.b.len(), self.rows * self.rank, "lowrank_b"),
        ] {
            if found != expected {
                return Err(QuantError::ScaleMismatch {
                    tensor: format!("{tensor}.{what}"),
                    expected,
                    found,
                });
            }
        }
        Ok(())
    }
}
