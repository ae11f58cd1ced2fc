//! Sample-quality metrics with exact or closed-form meaning.
//!
//! Sample sets are `[n, D]` f64 arrays (one sample per row).

use std::path::Path;

use diffusion_core::Rng;
use ndarray::{Array1, Array2, ArrayView2, Axis};

use crate::error::{Result, TestbedError};
use crate::gmm::GaussianMixture;
use crate::linalg::{mat_mul, sqrt_psd, symmetric_eigen};

fn check_samples(name: &'static str, x: &ArrayView2<'_, f64>, dim: Option<usize>) -> Result<()> {
    if x.nrows() == 0 {
        return Err(TestbedError::invalid(name, "no samples"));
    }
    if let Some(d) = dim
        && x.ncols() != d
    {
        return Err(TestbedError::shape(name, format!("[n, {d}]"), x.shape()));
    }
    if x.iter().any(|v| !v.is_finite()) {
        return Err(TestbedError::invalid(name, "samples contain NaN or infinity"));
    }
    Ok(())
}

/// Root-mean-square difference over all elements of two same-shaped sample sets.
pub fn rmse(x: ArrayView2<'_, f64>, y: ArrayView2<'_, f64>) -> Result<f64> {
    if x.shape() != y.shape() || x.is_empty() {
        return Err(TestbedError::shape(
            "rmse",
            format!("{:?} (non-empty)", x.shape()),
            y.shape(),
        ));
    }
    let sq: f64 = x.iter().zip(y.iter()).map(|(a, b)| (a - b) * (a - b)).sum();
    Ok((sq / x.len() as f64).sqrt())
}

/// Largest absolute element-wise difference of two same-shaped sample sets.
pub fn max_abs_err(x: ArrayView2<'_, f64>, y: ArrayView2<'_, f64>) -> Result<f64> {
    if x.shape() != y.shape() || x.is_empty() {
        return Err(TestbedError::shape(
            "max_abs_err",
            format!("{:?} (non-empty)", x.shape()),
            y.shape(),
        ));
    }
    Ok(x.iter()
        .zip(y.iter())
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max))
}

/// Unit projection directions for sliced Wasserstein distances, `[P, D]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Projections {
    dirs: Array2<f64>,
}

impl Projections {
    /// Uses the rows of `dirs` (normalised to unit length; zero or non-finite rows are errors).
    pub fn new(mut dirs: Array2<f64>) -> Result<Self> {
        if dirs.nrows() == 0 || dirs.ncols() == 0 {
            return Err(TestbedError::invalid(
                "projections",
                "need at least one direction",
            ));
        }
        for (i, mut row) in dirs.rows_mut().into_iter().enumerate() {
            let norm = row.dot(&row).sqrt();
            if !(norm.is_finite() && norm > 0.0) {
                return Err(TestbedError::invalid(
                    "projections",
                    format!("row {i} has norm {norm}"),
                ));
            }
            row /= norm;
        }
        Ok(Self { dirs })
    }

    /// `count` directions uniform on the unit sphere in `dim` dimensions (normalised
    /// Gaussian vectors from `rng`).
    pub fn random(count: usize, dim: usize, rng: &mut Rng) -> Result<Self> {
        let mut v = vec![0.0; count * dim];
        rng.fill_normal(&mut v);
        let dirs = Array2::from_shape_vec((count, dim), v)
            .map_err(|e| TestbedError::invalid("projections", e.to_string()))?;
        Self::new(dirs)
    }

    /// Reads directions from a `[P, D]` `.npy` file (e.g. `gmm2d_sw_projections.npy`).
    pub fn from_npy(path: impl AsRef<Path>) -> Result<Self> {
        Self::new(crate::io::read_npy_2d(path, [None, None])?)
    }

    pub fn directions(&self) -> &Array2<f64> {
        &self.dirs
    }

    pub fn dim(&self) -> usize {
        self.dirs.ncols()
    }

    fn project_sorted(&self, x: &ArrayView2<'_, f64>) -> Vec<Vec<f64>> {
        let proj = x.dot(&self.dirs.t()); // [n, P]
        proj.columns()
            .into_iter()
            .map(|c| {
                let mut v = c.to_vec();
                v.sort_by(f64::total_cmp);
                v
            })
            .collect()
    }
}

/// Squared 1-D W2 between two empirical distributions given sorted samples: the
/// integral over u of (Qa(u) - Qb(u))^2, with breakpoints tracked in integer units of
/// 1 / (n m) so sizes may differ.
fn w2_sq_sorted(a: &[f64], b: &[f64]) -> f64 {
    let (n, m) = (a.len() as u128, b.len() as u128);
    let (mut i, mut j) = (0usize, 0usize);
    let mut pos: u128 = 0;
    let mut acc = 0.0;
    while i < a.len() && j < b.len() {
        let next_a = (i as u128 + 1) * m;
        let next_b = (j as u128 + 1) * n;
        let next = next_a.min(next_b);
        let d = a[i] - b[j];
        acc += d * d * (next - pos) as f64;
        pos = next;
        if next_a == next {
            i += 1;
        }
        if next_b == next {
            j += 1;
        }
    }
    acc / (n * m) as f64
}

/// Sliced Wasserstein-2 between two sample sets: `sqrt(mean_p W2^2(p.x, p.y))`, each
/// 1-D W2 exact for the two empirical distributions (sizes may differ).
pub fn sliced_w2(x: ArrayView2<'_, f64>, y: ArrayView2<'_, f64>, proj: &Projections) -> Result<f64> {
    check_samples("x", &x, Some(proj.dim()))?;
    check_samples("y", &y, Some(proj.dim()))?;
    let (px, py) = (proj.project_sorted(&x), proj.project_sorted(&y));
    let total: f64 = px.iter().zip(&py).map(|(a, b)| w2_sq_sorted(a, b)).sum();
    Ok((total / px.len() as f64).sqrt())
}

const SQRT_2: f64 = std::f64::consts::SQRT_2;

fn std_normal_pdf(z: f64) -> f64 {
    if z.is_infinite() {
        0.0
    } else {
        (-0.5 * z * z).exp() / (2.0 * std::f64::consts::PI).sqrt()
    }
}

/// P(a < Z < b) for a standard normal, from the tail on the accurate side.
fn normal_mass(a: f64, b: f64) -> f64 {
    if a > 0.0 {
        0.5 * (libm::erfc(a / SQRT_2) - libm::erfc(b / SQRT_2))
    } else {
        0.5 * (libm::erfc(-b / SQRT_2) - libm::erfc(-a / SQRT_2))
    }
}

/// A 1-D Gaussian mixture (the projection of a D-dimensional one).
struct Mixture1d {
    w: Vec<f64>,
    m: Vec<f64>,
    s: Vec<f64>,
}

impl Mixture1d {
    fn cdf(&self, t: f64) -> f64 {
        self.w
            .iter()
            .zip(&self.m)
            .zip(&self.s)
            .map(|((w, m), s)| w * 0.5 * libm::erfc(-(t - m) / (s * SQRT_2)))
            .sum()
    }

    fn pdf(&self, t: f64) -> f64 {
        self.w
            .iter()
            .zip(&self.m)
            .zip(&self.s)
            .map(|((w, m), s)| w * std_normal_pdf((t - m) / s) / s)
            .sum()
    }

    /// Quantile `F^-1(u)` by Newton's method safeguarded with bisection, searching
    /// upward from `lo` (quantiles are requested in increasing order).
    fn quantile(&self, u: f64, mut lo: f64, mut hi: f64) -> f64 {
        let mut t = lo.max(self.m.iter().copied().fold(f64::INFINITY, f64::min));
        if t >= hi {
            t = 0.5 * (lo + hi);
        }
        for _ in 0..200 {
            let f = self.cdf(t) - u;
            if f == 0.0 {
                return t;
            }
            if f < 0.0 {
                lo = t;
            } else {
                hi = t;
            }
            let p = self.pdf(t);
            let mut next = if p > 0.0 { t - f / p } else { f64::NAN };
            if !(next > lo && next < hi) {
                next = 0.5 * (lo + hi);
            }
            if (next - t).abs() <= 1e-15 * (1.0 + t.abs()) || hi - lo <= 1e-15 * (1.0 + t.abs()) {
                return next;
            }
            t = next;
        }
        t
    }

    /// `int_lo^hi (t - x)^2 f(t) dt` in closed form (truncated Gaussian moments about x).
    fn second_moment_about(&self, x: f64, lo: f64, hi: f64) -> f64 {
        let mut acc = 0.0;
        for ((w, m), s) in self.w.iter().zip(&self.m).zip(&self.s) {
            let (a, b) = ((lo - m) / s, (hi - m) / s);
            let mass = normal_mass(a, b);
            let (pa, pb) = (std_normal_pdf(a), std_normal_pdf(b));
            let apa = if a.is_infinite() { 0.0 } else { a * pa };
            let bpb = if b.is_infinite() { 0.0 } else { b * pb };
            let c = m - x;
            acc += w * (c * c * mass + 2.0 * c * s * (pa - pb) + s * s * (mass + apa - bpb));
        }
        acc
    }
}

/// Squared W2 between the empirical distribution of sorted `x` and a 1-D mixture:
/// the integral over u of (x_(ceil(n u)) - F^-1(u))^2, cell by cell in closed form.
fn w2_sq_to_mixture(x: &[f64], mix: &Mixture1d) -> f64 {
    let n = x.len();
    let spread = mix.s.iter().copied().fold(0.0, f64::max);
    let (glo, ghi) = (
        mix.m.iter().copied().fold(f64::INFINITY, f64::min) - 40.0 * spread,
        mix.m.iter().copied().fold(f64::NEG_INFINITY, f64::max) + 40.0 * spread,
    );
    let mut lo_edge = f64::NEG_INFINITY;
    let mut search_lo = glo;
    let mut acc = 0.0;
    for (i, &xi) in x.iter().enumerate() {
        let hi_edge = if i + 1 == n {
            f64::INFINITY
        } else {
            let q = mix.quantile((i + 1) as f64 / n as f64, search_lo, ghi);
            search_lo = q;
            q
        };
        acc += mix.second_moment_about(xi, lo_edge, hi_edge);
        lo_edge = hi_edge;
    }
    acc
}

/// Sliced W2 between samples and a Gaussian mixture's exact law:
/// `sqrt(mean_p W2^2(p.x, p#gmm))` with each 1-D W2 between the empirical distribution
/// and the exact projected mixture (no sampling error from the reference side).
///
/// With `gmm2d_sw_projections.npy` this is the reference data's `sw2` metric.
pub fn sliced_w2_to_gmm(x: ArrayView2<'_, f64>, gmm: &GaussianMixture, proj: &Projections) -> Result<f64> {
    if proj.dim() != gmm.dim() {
        return Err(TestbedError::shape(
            "projections",
            format!("[P, {}]", gmm.dim()),
            proj.dirs.shape(),
        ));
    }
    check_samples("x", &x, Some(gmm.dim()))?;
    let sorted = proj.project_sorted(&x);
    let d = gmm.dim();
    let mut total = 0.0;
    for (p, xs) in proj.dirs.rows().into_iter().zip(&sorted) {
        let p = p.to_vec();
        let mix = Mixture1d {
            w: gmm.weights().to_vec(),
            m: (0..gmm.n_components())
                .map(|k| gmm.mean(k).iter().zip(&p).map(|(a, b)| a * b).sum())
                .collect(),
            s: (0..gmm.n_components())
                .map(|k| {
                    let c = gmm.covariance(k);
                    let mut q = 0.0;
                    for i in 0..d {
                        for j in 0..d {
                            q += p[i] * c[i * d + j] * p[j];
                        }
                    }
                    q.sqrt()
                })
                .collect(),
        };
        total += w2_sq_to_mixture(xs, &mix);
    }
    Ok((total / sorted.len() as f64).sqrt())
}

/// Exact mean negative log-likelihood (nats per sample) of `x` under `gmm`.
pub fn gmm_nll(x: ArrayView2<'_, f64>, gmm: &GaussianMixture) -> Result<f64> {
    check_samples("x", &x, Some(gmm.dim()))?;
    gmm.nll(x)
}

/// Kernel bandwidth for [`mmd2_rbf`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Bandwidth {
    /// The median pairwise distance of the pooled samples (over at most the first 2048
    /// pooled points, taken with a fixed stride, to bound the cost).
    Median,
    /// A given length scale `h > 0`.
    Fixed(f64),
}

/// Squared maximum mean discrepancy with the kernel `exp(-|a - b|^2 / (2 h^2))`
/// (biased V-statistic: zero for identical sets, never negative). Returns
/// `(mmd2, h)`. O((n + m)^2) kernel evaluations.
pub fn mmd2_rbf(x: ArrayView2<'_, f64>, y: ArrayView2<'_, f64>, bandwidth: Bandwidth) -> Result<(f64, f64)> {
    check_samples("x", &x, None)?;
    check_samples("y", &y, Some(x.ncols()))?;
    let sq = |a: ndarray::ArrayView1<'_, f64>, b: ndarray::ArrayView1<'_, f64>| -> f64 {
        a.iter().zip(b.iter()).map(|(u, v)| (u - v) * (u - v)).sum()
    };
    let h = match bandwidth {
        Bandwidth::Fixed(h) if h.is_finite() && h > 0.0 => h,
        Bandwidth::Fixed(h) => return Err(TestbedError::invalid("bandwidth", format!("{h} (must be > 0)"))),
        Bandwidth::Median => {
            let pooled: Vec<_> = x.rows().into_iter().chain(y.rows()).collect();
            let stride = pooled.len().div_ceil(2048);
            let pts: Vec<_> = pooled.into_iter().step_by(stride).collect();
            let mut d: Vec<f64> = (0..pts.len())
                .flat_map(|i| (0..i).map(move |j| (i, j)))
                .map(|(i, j)| sq(pts[i], pts[j]).sqrt())
                .collect();
            if d.is_empty() {
                return Err(TestbedError::invalid(
                    "bandwidth",
                    "the median heuristic needs two points",
                ));
            }
            let mid = d.len() / 2;
            let (_, med, _) = d.select_nth_unstable_by(mid, f64::total_cmp);
            let med = *med;
            if med <= 0.0 {
                return Err(TestbedError::invalid(
                    "bandwidth",
                    "median pairwise distance is 0",
                ));
            }
            med
        }
    };
    let gamma = 1.0 / (2.0 * h * h);
    let mean_kernel = |a: &ArrayView2<'_, f64>, b: &ArrayView2<'_, f64>| -> f64 {
        let mut s = 0.0;
        for ra in a.rows() {
            for rb in b.rows() {
                s += (-gamma * sq(ra, rb)).exp();
            }
        }
        s / (a.nrows() * b.nrows()) as f64
    };
    let mmd2 = mean_kernel(&x, &x) + mean_kernel(&y, &y) - 2.0 * mean_kernel(&x, &y);
    Ok((mmd2.max(0.0), h))
}

/// Mean and unbiased (n - 1) covariance of the rows of `x` (row-major D x D).
pub fn mean_and_covariance(x: ArrayView2<'_, f64>) -> Result<(Array1<f64>, Vec<f64>)> {
    check_samples("x", &x, None)?;
    if x.nrows() < 2 {
        return Err(TestbedError::invalid(
            "x",
            "a covariance needs at least two samples",
        ));
    }
    let mean = x.mean_axis(Axis(0)).expect("non-empty");
    let centred = &x - &mean;
    let cov = centred.t().dot(&centred) / (x.nrows() - 1) as f64;
    Ok((mean, cov.iter().copied().collect()))
}

/// Squared Frechet distance between Gaussians (what FID reports):
/// `|m1 - m2|^2 + tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2)`, clamped at 0.
pub fn frechet_distance_gaussians(m1: &[f64], s1: &[f64], m2: &[f64], s2: &[f64]) -> Result<f64> {
    let d = m1.len();
    if m2.len() != d || s1.len() != d * d || s2.len() != d * d {
        return Err(TestbedError::shape(
            "frechet_distance_gaussians",
            format!("means [{d}], covariances [{d}, {d}]"),
            &[m2.len(), s1.len(), s2.len()],
        ));
    }
    let mean_term: f64 = m1.iter().zip(m2).map(|(a, b)| (a - b) * (a - b)).sum();
    let trace = |m: &[f64]| (0..d).map(|i| m[i * d + i]).sum::<f64>();
    // S1^1/2 S2 S1^1/2 is symmetric PSD and has the same eigenvalues as S1 S2.
    let r1 = sqrt_psd(s1, d);
    let inner = mat_mul(&mat_mul(&r1, s2, d), &r1, d);
    let (eig, _) = symmetric_eigen(&inner, d);
    let tr_sqrt: f64 = eig.iter().map(|l| l.max(0.0).sqrt()).sum();
    Ok((mean_term + trace(s1) + trace(s2) - 2.0 * tr_sqrt).max(0.0))
}

/// Squared Frechet distance between Gaussians fitted to two sample sets.
pub fn frechet_distance(x: ArrayView2<'_, f64>, y: ArrayView2<'_, f64>) -> Result<f64> {
    check_samples("y", &y, Some(x.ncols()))?;
    let (m1, s1) = mean_and_covariance(x)?;
    let (m2, s2) = mean_and_covariance(y)?;
    frechet_distance_gaussians(
        m1.as_slice().expect("owned"),
        &s1,
        m2.as_slice().expect("owned"),
        &s2,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    fn normals(n: usize, d: usize, seed: u64) -> Array2<f64> {
        let mut v = vec![0.0; n * d];
        Rng::new(seed).fill_normal(&mut v);
        Array2::from_shape_vec((n, d), v).unwrap()
    }

    #[test]
    fn rmse_and_max_abs_err_by_hand() {
        let x = array![[0.0, 0.0], [1.0, 1.0]];
        let y = array![[3.0, 0.0], [1.0, 5.0]];
        // (9 + 0 + 0 + 16) / 4
        assert!((rmse(x.view(), y.view()).unwrap() - (25.0f64 / 4.0).sqrt()).abs() < 1e-15);
        assert_eq!(max_abs_err(x.view(), y.view()).unwrap(), 4.0);
        assert!(rmse(x.view(), y.slice(ndarray::s![..1, ..])).is_err());
    }

    #[test]
    fn one_d_w2_of_empirical_sets_by_hand() {
        assert_eq!(w2_sq_sorted(&[0.0, 1.0], &[0.0, 1.0]), 0.0);
        // Shift by 2: W2^2 = 4.
        assert!((w2_sq_sorted(&[0.0, 1.0], &[2.0, 3.0]) - 4.0).abs() < 1e-15);
        // Sizes 2 and 1: {0, 2} vs {1}: each half-mass moves by 1.
        assert!((w2_sq_sorted(&[0.0, 2.0], &[1.0]) - 1.0).abs() < 1e-15);
        // Sizes 3 vs 2: {0,1,2} vs {0,2}: u in [1/3,1/2) pairs 1 with 0, [1/2,2/3) pairs 1 with 2.
        assert!((w2_sq_sorted(&[0.0, 1.0, 2.0], &[0.0, 2.0]) - (1.0 / 6.0 + 1.0 / 6.0)).abs() < 1e-15);
    }

    #[test]
    fn sliced_w2_identical_is_zero_and_shift_is_its_length() {
        let x = normals(500, 2, 1);
        let proj = Projections::random(64, 2, &mut Rng::new(9)).unwrap();
        assert_eq!(sliced_w2(x.view(), x.view(), &proj).unwrap(), 0.0);
        // A rigid shift by m moves every projection by p.m: SW2^2 = mean_p (p.m)^2.
        let m = array![0.3, -0.4];
        let y = &x + &m;
        let want = (proj.directions().dot(&m).mapv(|v| v * v).mean().unwrap()).sqrt();
        assert!((sliced_w2(x.view(), y.view(), &proj).unwrap() - want).abs() < 1e-12);
    }

    #[test]
    fn w2_to_exact_gaussian_converges_to_shift() {
        // 1-D: samples of N(m, 1) against the exact N(0, 1): W2 -> |m| as n grows.
        let n = 20_000;
        let m = 0.7;
        let x = normals(n, 1, 2) + m;
        let g = GaussianMixture::isotropic(vec![1.0], vec![vec![0.0]], &[1.0]).unwrap();
        let proj = Projections::new(array![[1.0]]).unwrap();
        let w = sliced_w2_to_gmm(x.view(), &g, &proj).unwrap();
        // The empirical-quantile error is O(sqrt(log n / n)) ~ 0.02 here.
        assert!((w - m).abs() < 0.03, "w2 {w} vs {m}");
        // A deterministic oracle: samples placed at the exact quantile midpoints of
        // N(m, 1) are at W2 distance from N(0, 1) equal to m plus the quantisation error
        // of N(0, 1) at n points; shifting both by m changes nothing else.
        let mut xs: Vec<f64> = x.column(0).to_vec();
        xs.sort_by(f64::total_cmp);
        let mix0 = Mixture1d {
            w: vec![1.0],
            m: vec![0.0],
            s: vec![1.0],
        };
        let mix_m = Mixture1d {
            w: vec![1.0],
            m: vec![m],
            s: vec![1.0],
        };
        let shifted: Vec<f64> = xs.iter().map(|v| v - m).collect();
        assert!((w2_sq_to_mixture(&xs, &mix_m) - w2_sq_to_mixture(&shifted, &mix0)).abs() < 1e-10);
    }

    #[test]
    fn quantile_cell_moments_are_exact_for_a_single_point_set() {
        // One sample x: W2^2 to N(mu, s^2) is (x - mu)^2 + s^2.
        let mix = Mixture1d {
            w: vec![0.3, 0.7],
            m: vec![-1.0, 2.0],
            s: vec![0.5, 1.5],
        };
        let x = 0.4;
        let second = 0.3 * ((x + 1.0f64).powi(2) + 0.25) + 0.7 * ((x - 2.0f64).powi(2) + 2.25);
        assert!((w2_sq_to_mixture(&[x], &mix) - second).abs() < 1e-14);
        // Quantiles invert the CDF.
        for &u in &[1e-6, 0.1, 0.5, 0.77, 1.0 - 1e-9] {
            let q = mix.quantile(u, -60.0, 60.0);
            assert!((mix.cdf(q) - u).abs() < 1e-14, "u {u}: F(q) = {}", mix.cdf(q));
        }
    }

    #[test]
    fn mmd_identical_is_zero_and_grows_with_shift() {
        let x = normals(200, 2, 3);
        let (m0, h) = mmd2_rbf(x.view(), x.view(), Bandwidth::Median).unwrap();
        assert!(m0.abs() < 1e-14 && h > 0.0);
        // Two single points at distance r with h = 1: 2 - 2 exp(-r^2 / 2).
        let a = array![[0.0, 0.0]];
        let b = array![[1.0, 1.0]];
        let (m, _) = mmd2_rbf(a.view(), b.view(), Bandwidth::Fixed(1.0)).unwrap();
        assert!((m - (2.0 - 2.0 * (-1.0f64).exp())).abs() < 1e-15);
        let y = &x + &array![1.0, 0.0];
        let (m1, _) = mmd2_rbf(x.view(), y.view(), Bandwidth::Fixed(h)).unwrap();
        let (m2, _) = mmd2_rbf(x.view(), (&x + &array![2.0, 0.0]).view(), Bandwidth::Fixed(h)).unwrap();
        assert!(m2 > m1 && m1 > 0.01);
        assert!(mmd2_rbf(x.view(), y.view(), Bandwidth::Fixed(0.0)).is_err());
    }

    #[test]
    fn frechet_of_gaussians_matches_closed_forms() {
        // Commuting (diagonal) covariances: sum_i (sqrt(a_i) - sqrt(b_i))^2 + |dm|^2.
        let s1 = [4.0, 0.0, 0.0, 9.0];
        let s2 = [1.0, 0.0, 0.0, 16.0];
        let got = frechet_distance_gaussians(&[0.0, 0.0], &s1, &[1.0, 2.0], &s2).unwrap();
        assert!((got - (1.0 + 1.0 + 5.0)).abs() < 1e-12, "{got}");
        // Identical Gaussians (full covariance): 0.
        let s = [2.0, 0.7, 0.7, 1.0];
        assert!(frechet_distance_gaussians(&[1.0, 1.0], &s, &[1.0, 1.0], &s).unwrap() < 1e-12);
        // Non-commuting pair in 2-D: tr sqrt(S1^1/2 S2 S1^1/2) = sqrt(tr(S1 S2) + 2 sqrt(det S1 S2)).
        let t = [1.0, 0.0, 0.0, 4.0];
        let det: f64 = (2.0 * 1.0 - 0.49) * 4.0;
        let tr12 = 2.0 * 1.0 + 0.7 * 0.0 + 0.7 * 0.0 + 1.0 * 4.0;
        let want = 3.0 + 5.0 - 2.0 * (tr12 + 2.0 * det.sqrt()).sqrt();
        let got = frechet_distance_gaussians(&[0.0, 0.0], &s, &[0.0, 0.0], &t).unwrap();
        assert!((got - want).abs() < 1e-12, "{got} vs {want}");
        // Sample version: identical sets give 0.
        let x = normals(100, 3, 5);
        assert!(frechet_distance(x.view(), x.view()).unwrap() < 1e-10);
    }

    #[test]
    fn bad_inputs_are_errors() {
        let x = normals(10, 2, 1);
        let p3 = Projections::random(4, 3, &mut Rng::new(1)).unwrap();
        assert!(sliced_w2(x.view(), x.view(), &p3).is_err());
        assert!(Projections::new(array![[0.0, 0.0]]).is_err());
        let mut nan = x.clone();
        nan[[0, 0]] = f64::NAN;
        let p2 = Projections::random(4, 2, &mut Rng::new(1)).unwrap();
        assert!(sliced_w2(nan.view(), x.view(), &p2).is_err());
        assert!(mean_and_covariance(x.slice(ndarray::s![..1, ..])).is_err());
        let g = GaussianMixture::isotropic(vec![1.0], vec![vec![0.0; 3]], &[1.0]).unwrap();
        assert!(sliced_w2_to_gmm(x.view(), &g, &p2).is_err());
        assert!(gmm_nll(x.view(), &g).is_err());
    }
}
