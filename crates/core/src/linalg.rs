//! The small dense linear solve that solver coefficients need (systems of a few
//! unknowns: multistep and UniPC weights, polynomial fits).

use crate::error::{CoreError, Result};

/// Solves `a x = b` by Gaussian elimination with partial pivoting; a (numerically)
/// singular system is an error, never a NaN.
pub fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Result<Vec<f64>> {
    let n = b.len();
    if a.len() != n || a.iter().any(|row| row.len() != n) {
        return Err(CoreError::InvalidArgument {
            name: "linear system",
            reason: format!("expected a {n} x {n} matrix"),
        });
    }
    for col in 0..n {
        let pivot = (col..n)
            .max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))
            .unwrap_or(col);
        if a[pivot][col].abs() <= 1e-300 || !a[pivot][col].is_finite() {
            return Err(CoreError::InvalidArgument {
                name: "linear system",
                reason: "singular (repeated time points?)".into(),
            });
        }
        a.swap(col, pivot);
        b.swap(col, pivot);
        for row in col + 1..n {
            let f = a[row][col] / a[col][col];
            for k in col..n {
                a[row][k] -= f * a[col][k];
            }
            b[row] -= f * b[col];
        }
    }
    let mut x = vec![0.0; n];
    for row in (0..n).rev() {
        let s: f64 = (row + 1..n).map(|k| a[row][k] * x[k]).sum();
        x[row] = (b[row] - s) / a[row][row];
    }
    Ok(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn solves_a_system_that_needs_pivoting() {
        let x = solve(vec![vec![0.0, 2.0], vec![3.0, 1.0]], vec![4.0, 5.0]).unwrap();
        approx::assert_abs_diff_eq!(x.as_slice(), [1.0, 2.0].as_slice(), epsilon = 1e-14);
    }

    #[test]
    fn singular_and_ragged_systems_are_errors() {
        assert!(solve(vec![vec![1.0, 1.0], vec![1.0, 1.0]], vec![1.0, 2.0]).is_err());
        assert!(solve(vec![vec![1.0, 1.0]], vec![1.0]).is_err());
    }
}
