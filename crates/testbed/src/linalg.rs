//! Small dense linear algebra on row-major `Vec<f64>` matrices.
//!
//! The testbed needs only a Cholesky factorisation (mixture components, D up to ~64)
//! and a symmetric eigensolver for matrix square roots in the Frechet distance (D small).
//! Both are a few dozen lines, so they are written here rather than pulling a full
//! linear-algebra crate (and its build time) into every test build of the workspace.

/// Lower-triangular Cholesky factor `L` of a symmetric positive definite `A = L L^T`.
#[derive(Clone, Debug, PartialEq)]
pub struct Cholesky {
    dim: usize,
    /// Row-major, upper triangle zero.
    lower: Vec<f64>,
}

impl Cholesky {
    /// Factorises the `dim x dim` row-major matrix `a` (only its lower triangle is read).
    /// Returns `None` if `a` is not numerically positive definite: a pivot that is not
    /// finite or not above `1e-14` times the largest diagonal entry.
    pub fn new(a: &[f64], dim: usize) -> Option<Self> {
        assert_eq!(a.len(), dim * dim, "Cholesky::new: matrix is not dim x dim");
        let max_diag = (0..dim).map(|i| a[i * dim + i].abs()).fold(0.0, f64::max);
        let tiny = 1e-14 * max_diag;
        let mut l = vec![0.0; dim * dim];
        for j in 0..dim {
            let mut d = a[j * dim + j];
            for k in 0..j {
                d -= l[j * dim + k] * l[j * dim + k];
            }
            if !d.is_finite() || d <= tiny || d <= 0.0 {
                return None;
            }
            let djj = d.sqrt();
            l[j * dim + j] = djj;
            for i in j + 1..dim {
                let mut s = a[i * dim + j];
                for k in 0..j {
                    s -= l[i * dim + k] * l[j * dim + k];
                }
                l[i * dim + j] = s / djj;
            }
        }
        Some(Self { dim, lower: l })
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// `ln det A = 2 sum_i ln L_ii`.
    pub fn log_det(&self) -> f64 {
        2.0 * (0..self.dim)
            .map(|i| self.lower[i * self.dim + i].ln())
            .sum::<f64>()
    }

    /// Solves `L z = b` in place (forward substitution).
    pub fn solve_lower(&self, b: &mut [f64]) {
        let n = self.dim;
        for i in 0..n {
            let row = &self.lower[i * n..i * n + i];
            let s: f64 = row.iter().zip(&b[..i]).map(|(l, z)| l * z).sum();
            b[i] = (b[i] - s) / self.lower[i * n + i];
        }
    }

    /// Solves `L^T y = z` in place (back substitution).
    pub fn solve_upper_t(&self, z: &mut [f64]) {
        let n = self.dim;
        for i in (0..n).rev() {
            let mut s = z[i];
            for k in i + 1..n {
                s -= self.lower[k * n + i] * z[k];
            }
            z[i] = s / self.lower[i * n + i];
        }
    }

    /// `out = L z`.
    pub fn mul_lower(&self, z: &[f64], out: &mut [f64]) {
        let n = self.dim;
        for i in 0..n {
            out[i] = self.lower[i * n..i * n + i + 1]
                .iter()
                .zip(&z[..=i])
                .map(|(l, v)| l * v)
                .sum();
        }
    }
}

/// `out = A v` for a row-major `dim x dim` matrix.
pub fn mat_vec(a: &[f64], v: &[f64], out: &mut [f64]) {
    let n = v.len();
    for i in 0..n {
        out[i] = a[i * n..(i + 1) * n].iter().zip(v).map(|(x, y)| x * y).sum();
    }
}

/// `A B` for row-major `n x n` matrices.
pub fn mat_mul(a: &[f64], b: &[f64], n: usize) -> Vec<f64> {
    let mut c = vec![0.0; n * n];
    for i in 0..n {
        for k in 0..n {
            let aik = a[i * n + k];
            for j in 0..n {
                c[i * n + j] += aik * b[k * n + j];
            }
        }
    }
    c
}

/// Eigen-decomposition of a symmetric matrix by cyclic Jacobi rotations.
///
/// Returns `(eigenvalues, eigenvectors)` with eigenvector `j` in column `j` of the
/// row-major matrix. Jacobi is slow for large `n` (O(n^3) per sweep) but accurate to
/// working precision even for tiny eigenvalues, which is what a matrix square root of a
/// nearly singular covariance needs.
pub fn symmetric_eigen(a: &[f64], n: usize) -> (Vec<f64>, Vec<f64>) {
    assert_eq!(a.len(), n * n, "symmetric_eigen: matrix is not n x n");
    // Symmetrise so round-off asymmetry in the input cannot bias the result.
    let mut m: Vec<f64> = (0..n * n)
        .map(|idx| {
            let (i, j) = (idx / n, idx % n);
            0.5 * (a[i * n + j] + a[j * n + i])
        })
        .collect();
    let mut v = vec![0.0; n * n];
    for i in 0..n {
        v[i * n + i] = 1.0;
    }
    let frob: f64 = m.iter().map(|x| x * x).sum::<f64>().sqrt();
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| m[i * n + j] * m[i * n + j])
            .sum::<f64>()
            .sqrt();
        if off <= 1e-15 * frob || off == 0.0 {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = m[p * n + q];
                if apq == 0.0 {
                    continue;
                }
                // Rotation angle that zeroes m[p][q] (Golub & Van Loan, Alg. 8.4.2).
                let theta = (m[q * n + q] - m[p * n + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let (mkp, mkq) = (m[k * n + p], m[k * n + q]);
                    m[k * n + p] = c * mkp - s * mkq;
                    m[k * n + q] = s * mkp + c * mkq;
                }
                for k in 0..n {
                    let (mpk, mqk) = (m[p * n + k], m[q * n + k]);
                    m[p * n + k] = c * mpk - s * mqk;
                    m[q * n + k] = s * mpk + c * mqk;
                }
                for k in 0..n {
                    let (vkp, vkq) = (v[k * n + p], v[k * n + q]);
                    v[k * n + p] = c * vkp - s * vkq;
                    v[k * n + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    let values = (0..n).map(|i| m[i * n + i]).collect();
    (values, v)
}

/// Square root of a symmetric positive semi-definite matrix: `V diag(sqrt(max(l, 0))) V^T`.
/// Negative eigenvalues (round-off of a PSD matrix) are clamped to zero.
pub fn sqrt_psd(a: &[f64], n: usize) -> Vec<f64> {
    let (values, vectors) = symmetric_eigen(a, n);
    let roots: Vec<f64> = values.iter().map(|&l| l.max(0.0).sqrt()).collect();
    let mut out = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            out[i * n + j] = (0..n)
                .map(|k| vectors[i * n + k] * roots[k] * vectors[j * n + k])
                .sum();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random_spd(n: usize, seed: u64) -> Vec<f64> {
        let mut rng = diffusion_core::Rng::new(seed);
        let mut b = vec![0.0; n * n];
        rng.fill_normal(&mut b);
        // B B^T + n I is comfortably positive definite.
        let mut a = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                a[i * n + j] = (0..n).map(|k| b[i * n + k] * b[j * n + k]).sum::<f64>();
            }
            a[i * n + i] += n as f64;
        }
        a
    }

    #[test]
    fn cholesky_reconstructs_and_solves() {
        for &n in &[1, 2, 5, 64] {
            let a = random_spd(n, n as u64);
            let c = Cholesky::new(&a, n).unwrap();
            // L L^T == A
            let mut err: f64 = 0.0;
            for i in 0..n {
                for j in 0..n {
                    let s: f64 = (0..n).map(|k| c.lower[i * n + k] * c.lower[j * n + k]).sum();
                    err = err.max((s - a[i * n + j]).abs());
                }
            }
            assert!(err < 1e-10 * n as f64, "n={n}: {err}");
            // A x = b via the two triangular solves, checked by multiplying back.
            let b: Vec<f64> = (0..n).map(|i| (i as f64 * 0.7).sin()).collect();
            let mut x = b.clone();
            c.solve_lower(&mut x);
            c.solve_upper_t(&mut x);
            let mut ax = vec![0.0; n];
            mat_vec(&a, &x, &mut ax);
            for i in 0..n {
                assert!((ax[i] - b[i]).abs() < 1e-10, "n={n}");
            }
        }
    }

    #[test]
    fn cholesky_log_det_matches_closed_form() {
        // [[4, 2], [2, 3]] has determinant 8.
        let c = Cholesky::new(&[4.0, 2.0, 2.0, 3.0], 2).unwrap();
        assert!((c.log_det() - 8f64.ln()).abs() < 1e-14);
    }

    #[test]
    fn cholesky_rejects_indefinite_and_nan() {
        assert!(Cholesky::new(&[1.0, 2.0, 2.0, 1.0], 2).is_none());
        assert!(Cholesky::new(&[0.0, 0.0, 0.0, 1.0], 2).is_none());
        assert!(Cholesky::new(&[f64::NAN, 0.0, 0.0, 1.0], 2).is_none());
    }

    #[test]
    fn eigen_of_known_matrix() {
        // [[2, 1], [1, 2]]: eigenvalues 1 and 3.
        let (mut vals, _) = symmetric_eigen(&[2.0, 1.0, 1.0, 2.0], 2);
        vals.sort_by(f64::total_cmp);
        assert!((vals[0] - 1.0).abs() < 1e-14 && (vals[1] - 3.0).abs() < 1e-14);
    }

    #[test]
    fn eigen_reconstructs_random_matrix() {
        let n = 6;
        let a = random_spd(n, 11);
        let (vals, v) = symmetric_eigen(&a, n);
        for i in 0..n {
            for j in 0..n {
                let s: f64 = (0..n).map(|k| v[i * n + k] * vals[k] * v[j * n + k]).sum();
                assert!((s - a[i * n + j]).abs() < 1e-11);
            }
        }
    }

    #[test]
    fn sqrt_squares_back() {
        let n = 5;
        let a = random_spd(n, 3);
        let r = sqrt_psd(&a, n);
        let rr = mat_mul(&r, &r, n);
        for (x, y) in rr.iter().zip(&a) {
            assert!((x - y).abs() < 1e-11);
        }
    }
}
