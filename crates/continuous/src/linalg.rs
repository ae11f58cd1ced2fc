//! Least-squares polynomial fits for solver coefficients.

use crate::error::{Result, invalid};

/// The one small dense solve, shared with the diffusers-compatible solvers.
pub use diffusion_core::linalg::solve;

/// Least-squares polynomial fit of degree `deg` (coefficients lowest power first).
pub fn polyfit(x: &[f64], y: &[f64], deg: usize) -> Result<Vec<f64>> {
    if x.len() != y.len() || x.len() <= deg {
        return Err(invalid(
            "polynomial fit",
            format!("{} points cannot determine degree {deg}", x.len().min(y.len())),
        ));
    }
    let m = deg + 1;
    let mut ata = vec![vec![0.0; m]; m];
    let mut aty = vec![0.0; m];
    for (&xi, &yi) in x.iter().zip(y) {
        let pows: Vec<f64> = (0..m).map(|k| xi.powi(k as i32)).collect();
        for r in 0..m {
            aty[r] += pows[r] * yi;
            for c in 0..m {
                ata[r][c] += pows[r] * pows[c];
            }
        }
    }
    Ok(solve(ata, aty)?)
}

/// Evaluates a polynomial (lowest power first).
pub fn polyval(coeffs: &[f64], x: f64) -> f64 {
    coeffs.iter().rev().fold(0.0, |acc, c| acc * x + c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn solves_and_fits_exactly() {
        let x = solve(vec![vec![0.0, 2.0], vec![3.0, 1.0]], vec![4.0, 5.0]).unwrap();
        assert!((x[0] - 1.0).abs() < 1e-14 && (x[1] - 2.0).abs() < 1e-14);
        let xs = [0.0, 1.0, 2.0, 3.5];
        let ys: Vec<f64> = xs.iter().map(|x| 1.0 - 2.0 * x + 0.5 * x * x).collect();
        let c = polyfit(&xs, &ys, 2).unwrap();
        assert!((polyval(&c, 5.0) - (1.0 - 10.0 + 12.5)).abs() < 1e-10);
        assert!(solve(vec![vec![1.0, 1.0], vec![1.0, 1.0]], vec![1.0, 2.0]).is_err());
    }
}
