//! Shared test fixtures: the gmm2d problem, its schedules and the reference files the
//! repository carries in `fixtures/gmm` (a missing file fails the test).
#![allow(dead_code)]

use diffusion_schedules::InterpolatedVp;
use diffusion_testbed::{GaussianMixture, GmmSpec, fixtures, gmm_reference::GmmReference};
use ndarray::{Array2, ArrayD, IxDyn};

/// The 2-D, 8-component mixture of `fixtures/gmm/gmm2d_spec.json`.
pub fn spec() -> GmmSpec {
    GmmSpec::from_file(fixtures::path("gmm/gmm2d_spec.json").unwrap()).unwrap()
}

pub fn mixture() -> GaussianMixture {
    GaussianMixture::from_spec(&spec()).unwrap()
}

/// DPM-Solver's continuous view of the named diffusers table (`scaled_linear`, `linear`).
pub fn schedule(name: &str) -> InterpolatedVp {
    let table: Vec<f32> = spec().schedules[name]
        .alphas_cumprod
        .iter()
        .map(|&v| v as f32)
        .collect();
    InterpolatedVp::new(&table)
}

/// The reference folder `fixtures/gmm`.
pub fn reference() -> GmmReference {
    GmmReference::fixture().unwrap()
}

/// The official research codes' runs on gmm2d (`official_research_solvers_gmm2d.json`):
/// the RMSE of `config` at `nfe`.
pub fn official_rmse(config: &str, nfe: usize) -> f64 {
    let path = fixtures::path("gmm/official_research_solvers_gmm2d.json").unwrap();
    let json: serde_json::Value = serde_json::from_reader(std::fs::File::open(path).unwrap()).unwrap();
    let runs = json["runs"].as_array().unwrap();
    let run = runs
        .iter()
        .find(|r| r["problem"] == "gmm2d" && r["config"] == config && r["nfe"] == nfe)
        .unwrap_or_else(|| panic!("no official gmm2d run {config} at NFE {nfe}"));
    run["rmse"].as_f64().unwrap()
}

pub fn to_dyn(a: &Array2<f64>) -> ArrayD<f64> {
    a.clone().into_dyn()
}

pub fn to_2d(a: &ArrayD<f64>) -> Array2<f64> {
    let d = a.shape()[1..].iter().product();
    Array2::from_shape_vec((a.shape()[0], d), a.iter().copied().collect()).unwrap()
}

pub fn rmse(a: &ArrayD<f64>, b: &ArrayD<f64>) -> f64 {
    assert_eq!(a.shape(), b.shape());
    let n = a.len() as f64;
    (a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum::<f64>() / n).sqrt()
}

pub fn max_abs(a: &ArrayD<f64>, b: &ArrayD<f64>) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

/// `n` standard-normal rows of dimension `d` from an explicit seed.
pub fn normals(n: usize, d: usize, seed: u64) -> ArrayD<f64> {
    let mut v = vec![0.0; n * d];
    diffusion_core::Rng::new(seed).fill_normal(&mut v);
    ArrayD::from_shape_vec(IxDyn(&[n, d]), v).unwrap()
}

use diffusion_continuous::{Dopri5Options, Evaluator, ModelTime, ProbabilityFlow};

/// The papers' end points on a 1000-step table: t = 1 (step 999) to t = 1e-3 (step 0).
pub const T_START: f64 = 1.0;
pub const T_END: f64 = 1e-3;

/// The gmm2d initial noise `fixtures/gmm/gmm2d_xT.npy` [512, 2], on which the official
/// codes and diffusers were run.
pub fn x_t() -> ArrayD<f64> {
    to_dyn(&reference().x_t().unwrap())
}

/// The exact ODE solution of `x` from T_START to `t_end` on `sched` (DoPri5, 1e-10).
pub fn ode_reference(sched: &InterpolatedVp, x: &ArrayD<f64>, t_ends: &[f64]) -> Vec<ArrayD<f64>> {
    let gmm = mixture();
    let flow = ProbabilityFlow::new(Evaluator::new(&gmm, sched, ModelTime::discrete(1000)));
    flow.solve(x, T_START, t_ends, &Dopri5Options::tolerance(1e-10))
        .unwrap()
        .0
}

use diffusion_testbed::GaussianMixture as Mixture;
use diffusion_testbed::metrics::{Projections, mean_and_covariance, sliced_w2_to_gmm};

/// The exact law of `alpha x0 + sigma eps`: components `N(alpha mu_k, alpha^2 Sigma_k + sigma^2 I)`.
pub fn noised_mixture(gmm: &Mixture, alpha: f64, sigma: f64) -> Mixture {
    let d = gmm.dim();
    let means = (0..gmm.n_components())
        .map(|k| gmm.mean(k).iter().map(|m| alpha * m).collect())
        .collect();
    let covs = (0..gmm.n_components())
        .map(|k| {
            let c = gmm.covariance(k);
            (0..d)
                .map(|i| {
                    (0..d)
                        .map(|j| alpha * alpha * c[i * d + j] + if i == j { sigma * sigma } else { 0.0 })
                        .collect()
                })
                .collect()
        })
        .collect();
    Mixture::new(gmm.weights().to_vec(), means, covs).unwrap()
}

/// Exact mean and covariance (row-major) of a mixture.
pub fn mixture_moments(gmm: &Mixture) -> (Vec<f64>, Vec<f64>) {
    let d = gmm.dim();
    let mut mean = vec![0.0; d];
    let mut second = vec![0.0; d * d];
    for k in 0..gmm.n_components() {
        let (w, mu, c) = (gmm.weights()[k], gmm.mean(k), gmm.covariance(k));
        for i in 0..d {
            mean[i] += w * mu[i];
            for j in 0..d {
                second[i * d + j] += w * (c[i * d + j] + mu[i] * mu[j]);
            }
        }
    }
    let cov = (0..d * d)
        .map(|ij| second[ij] - mean[ij / d] * mean[ij % d])
        .collect();
    (mean, cov)
}

/// A statistical comparison of `samples` with the exact law `target`.
///
/// - Mode occupancy: each sample goes to its most responsible component; the counts are
///   compared with the exact occupancy probabilities (from 40k exact draws) by Pearson's
///   chi-square, which must stay below `(K - 1) + 5 sqrt(2 (K - 1))` (5 sd of its null).
/// - Means within 5 standard errors `sqrt(var / n)` (exact variance); variances within 5
///   standard errors `2 var sqrt(2 / n)` (the Gaussian-tail error doubled for safety).
/// - Sliced W2 against the exact law is reported with its null bound (mean + 5 sd of the
///   metric on exact draws of the same size) and must stay below it.
pub struct StatCheck {
    pub chi2: f64,
    pub chi2_bound: f64,
    pub sw2: f64,
    pub sw2_bound: f64,
    pub mean_z: f64,
    pub var_z: f64,
}

fn occupancy(x: &ndarray::Array2<f64>, target: &Mixture) -> Vec<f64> {
    let r = target
        .at_noise(1.0, 0.0)
        .unwrap()
        .responsibilities(x.view())
        .unwrap();
    let mut counts = vec![0.0; target.n_components()];
    for row in r.rows() {
        let k = (0..row.len()).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap();
        counts[k] += 1.0;
    }
    counts
}

impl StatCheck {
    pub fn run(samples: &ArrayD<f64>, target: &Mixture, null_sets: u64) -> Self {
        let x = to_2d(samples);
        let n = x.nrows();
        let big = target.sample(40_000, &mut diffusion_core::Rng::new(999));
        let p: Vec<f64> = occupancy(&big, target).iter().map(|c| c / 40_000.0).collect();
        let counts = occupancy(&x, target);
        let chi2 = counts
            .iter()
            .zip(&p)
            .map(|(c, p)| (c - n as f64 * p).powi(2) / (n as f64 * p))
            .sum();
        let dof = (target.n_components() - 1) as f64;
        let proj = Projections::random(16, target.dim(), &mut diffusion_core::Rng::new(77)).unwrap();
        let sw2 = sliced_w2_to_gmm(x.view(), target, &proj).unwrap();
        let null: Vec<f64> = (0..null_sets)
            .map(|s| {
                let y = target.sample(n, &mut diffusion_core::Rng::new(1000 + s));
                sliced_w2_to_gmm(y.view(), target, &proj).unwrap()
            })
            .collect();
        let m = null.iter().sum::<f64>() / null.len() as f64;
        let sd = (null.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (null.len() - 1) as f64).sqrt();
        let (mean, cov) = mean_and_covariance(x.view()).unwrap();
        let (tm, tc) = mixture_moments(target);
        let d = target.dim();
        let mut mean_z: f64 = 0.0;
        let mut var_z: f64 = 0.0;
        for i in 0..d {
            let v = tc[i * d + i];
            mean_z = mean_z.max((mean[i] - tm[i]).abs() / (v / n as f64).sqrt());
            var_z = var_z.max((cov[i * d + i] - v).abs() / (2.0 * v * (2.0 / n as f64).sqrt()));
        }
        Self {
            chi2,
            chi2_bound: dof + 5.0 * (2.0 * dof).sqrt(),
            sw2,
            sw2_bound: m + 5.0 * sd,
            mean_z,
            var_z,
        }
    }

    pub fn passes(&self) -> bool {
        self.chi2 <= self.chi2_bound && self.sw2 <= self.sw2_bound && self.mean_z < 5.0 && self.var_z < 5.0
    }
}

impl std::fmt::Display for StatCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "occupancy chi2 {:.1} (bound {:.1}), SW2 {:.4} (bound {:.4}), mean |z| {:.2}, var |z| {:.2}",
            self.chi2, self.chi2_bound, self.sw2, self.sw2_bound, self.mean_z, self.var_z
        )
    }
}
