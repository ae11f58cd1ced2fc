//! PFGM++ and EDM Heun on gmm2d.
//!
//! The oracle model is the exact PFGM++ posterior mean. The PFGM++ kernel
//! `(|x - y|^2 + r^2)^(-(N + D)/2)` is a multivariate Student-t with `D` degrees of
//! freedom and scale `sigma = r / sqrt(D)`, i.e. a Gaussian scale mixture: noise
//! `sigma sqrt(D / w) z` with `w ~ chi^2_D`. So `E[y | x]` is a 1-D integral over `w` of
//! the exact Gaussian-mixture posterior means, weighted by `p(w) p(x | w)`; we integrate
//! in `u = ln(w / D)` by the trapezoid rule (exponentially accurate for this smooth,
//! rapidly decaying integrand).

mod common;

use diffusion_continuous::{Dopri5Options, Evaluator, ModelTime, ProbabilityFlow, edm_heun, sample_pfgm};
use diffusion_core::{Denoiser, NoiseLevel, Parameterization, Rng};
use diffusion_schedules::continuous::{Edm, PfgmPlusPlus};
use diffusion_schedules::sigmas::karras_sigmas;
use diffusion_testbed::GaussianMixture;
use ndarray::{Array2, ArrayD, IxDyn};

struct ExactPfgmDenoiser {
    gmm: GaussianMixture,
    /// Quadrature nodes `u_j` with `ln(trapezoid weight * density of u)`.
    nodes: Vec<(f64, f64)>,
}

impl ExactPfgmDenoiser {
    fn new(gmm: GaussianMixture, aug_dim: f64, count: usize) -> Self {
        // Density of u = ln(w / D), w ~ chi^2_D: ∝ exp(-(D/2)(e^u - u - 1)), sd ~ sqrt(2/D).
        let sd = (2.0 / aug_dim).sqrt();
        let (lo, hi) = ((-40.0 * sd).max(-8.0), (40.0 * sd).min(3.0));
        let h = (hi - lo) / (count - 1) as f64;
        let nodes = (0..count)
            .map(|j| {
                let u = lo + h * j as f64;
                let end = if j == 0 || j + 1 == count { 0.5 } else { 1.0 };
                (u, (end * h).ln() - 0.5 * aug_dim * (u.exp_m1() - u))
            })
            .collect();
        Self { gmm, nodes }
    }
}

impl Denoiser<ArrayD<f64>> for ExactPfgmDenoiser {
    fn parameterization(&self) -> Parameterization {
        Parameterization::Sample
    }

    fn predict(&self, x: &ArrayD<f64>, level: NoiseLevel) -> diffusion_core::Result<ArrayD<f64>> {
        let (n, d) = (x.shape()[0], self.gmm.dim());
        let rows = Array2::from_shape_vec((n, d), x.iter().copied().collect()).unwrap();
        let mut log_w = vec![Vec::new(); n];
        let mut means = Vec::new();
        for &(u, log_q) in &self.nodes {
            // tau^2 = sigma^2 D / w = sigma^2 e^{-u}.
            let tau = level.sigma * (-0.5 * u).exp();
            let noised = self.gmm.at_noise(1.0, tau).unwrap();
            let lp = noised.log_density(rows.view()).unwrap();
            for (i, l) in lp.iter().enumerate() {
                log_w[i].push(log_q + l);
            }
            means.push(noised.predict(rows.view(), Parameterization::Sample).unwrap());
        }
        let mut out = vec![0.0; n * d];
        for i in 0..n {
            let top = log_w[i].iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let w: Vec<f64> = log_w[i].iter().map(|l| (l - top).exp()).collect();
            let total: f64 = w.iter().sum();
            for (wj, m) in w.iter().zip(&means) {
                for k in 0..d {
                    out[i * d + k] += wj / total * m[[i, k]];
                }
            }
        }
        Ok(ArrayD::from_shape_vec(IxDyn(x.shape()), out).unwrap())
    }
}

fn edm() -> Edm {
    Edm::default()
}

/// EDM Heun converges to the DoPri5 probability-flow reference on the EDM schedule.
#[test]
fn edm_heun_matches_the_reference_ode() {
    let gmm = common::mixture();
    let sched = edm();
    let eval = Evaluator::new(&gmm, &sched, ModelTime::Identity);
    let x = common::normals(256, 2, 3).mapv(|v| 80.0 * v);
    let flow = ProbabilityFlow::new(Evaluator::new(&gmm, &sched, ModelTime::Identity));
    let reference = flow
        .solve(&x, 80.0, &[0.002], &Dopri5Options::tolerance(1e-10))
        .unwrap()
        .0
        .remove(0);
    let err = |steps: usize| {
        let ours = edm_heun(&eval, &x, &karras_sigmas(0.002, 80.0, 7.0, steps + 1)).unwrap();
        common::max_abs(&ours, &reference)
    };
    let (e1, e2) = (err(128), err(256));
    assert_eq!(eval.nfe(), 2 * (128 + 256));
    println!(
        "EDM Heun vs DoPri5: 128 steps {e1:.2e}, 256 steps {e2:.2e}, ratio {:.2}",
        e1 / e2
    );
    assert!(e2 < 3e-3, "{e2}");
    // Second order.
    assert!((3.2..4.8).contains(&(e1 / e2)), "{}", e1 / e2);
}

/// PFGM++ (D = 128) with the exact PFGM++ denoiser samples gmm2d.
#[test]
fn pfgm_samples_the_exact_mixture() {
    let gmm = common::mixture();
    let pfgm = PfgmPlusPlus::new(128.0, 2).unwrap();
    let model = ExactPfgmDenoiser::new(gmm.clone(), pfgm.aug_dim, 48);
    let sched = edm();
    let eval = Evaluator::new(&model, &sched, ModelTime::Identity);
    let like = ArrayD::<f64>::zeros(IxDyn(&[2000, 2]));
    let sigmas = edm().sampling_sigmas(24);
    let out = sample_pfgm(&eval, &pfgm, &like, &sigmas, &mut Rng::new(12)).unwrap();
    let check = common::StatCheck::run(&out, &gmm, 6);
    println!("PFGM++ D = 128, 47 NFE: {check}");
    assert!(check.passes(), "{check}");
}

/// As D grows the exact PFGM++ denoiser becomes the Gaussian one, and PFGM++ sampling
/// from the same start becomes EDM Heun.
#[test]
fn large_d_agrees_with_edm() {
    let gmm = common::mixture();
    let x = common::normals(128, 2, 5).mapv(|v| 80.0 * v);
    let sigmas = edm().sampling_sigmas(12);
    let sched = edm();
    let edm_out = edm_heun(&Evaluator::new(&gmm, &sched, ModelTime::Identity), &x, &sigmas).unwrap();
    let mut last = f64::INFINITY;
    for aug_dim in [1e3, 1e5] {
        let model = ExactPfgmDenoiser::new(gmm.clone(), aug_dim, 48);
        let out = edm_heun(&Evaluator::new(&model, &sched, ModelTime::Identity), &x, &sigmas).unwrap();
        let diff = common::max_abs(&out, &edm_out);
        println!("D = {aug_dim:e}: max |PFGM++ - EDM| = {diff:.2e}");
        assert!(diff < last);
        last = diff;
    }
    assert!(last < 1e-3, "{last}");
    // The prior's second moment tends to EDM's sigma^2 N.
    let pfgm = PfgmPlusPlus::new(1e6, 2).unwrap();
    let like = ArrayD::<f64>::zeros(IxDyn(&[20_000, 2]));
    let prior = diffusion_continuous::pfgm::pfgm_prior(&pfgm, &like, 2.0, &mut Rng::new(1)).unwrap();
    let m2 = prior.iter().map(|v| v * v).sum::<f64>() / 20_000.0;
    assert!((m2 / 8.0 - 1.0).abs() < 0.05, "{m2}");
}

#[test]
fn bad_pfgm_input_is_an_error() {
    let gmm = common::mixture();
    let sched = edm();
    let eval = Evaluator::new(&gmm, &sched, ModelTime::Identity);
    let pfgm = PfgmPlusPlus::new(128.0, 2).unwrap();
    let wrong = ArrayD::<f64>::zeros(IxDyn(&[4, 3]));
    assert!(sample_pfgm(&eval, &pfgm, &wrong, &[80.0, 0.0], &mut Rng::new(1)).is_err());
    let x = ArrayD::<f64>::zeros(IxDyn(&[4, 2]));
    assert!(edm_heun(&eval, &x, &[1.0, 2.0]).is_err());
    assert!(edm_heun(&eval, &x, &[1.0]).is_err());
    // A VP schedule is not sigma-time.
    let vp = diffusion_schedules::continuous::LinearVp::default();
    let vp_eval = Evaluator::new(&gmm, &vp, ModelTime::Identity);
    assert!(edm_heun(&vp_eval, &x, &[0.9, 0.1]).is_err());
}

/// EDM Algorithm 2: churn 0 is Algorithm 1 bit for bit; with churn the samples still
/// follow the exact mixture; churn without an Rng or with bad settings is an error.
#[test]
fn edm_stochastic_heun_samples_the_exact_mixture() {
    use diffusion_continuous::{EdmChurn, edm_heun_churn};
    let gmm = common::mixture();
    let model = diffusion_testbed::GmmDenoiser::epsilon(gmm.clone());
    let sched = edm();
    let eval = Evaluator::new(&model, &sched, ModelTime::Identity);
    let sigmas = edm().sampling_sigmas(32);
    let x = common::normals(2000, 2, 21).mapv(|v| v * sigmas[0]);
    let plain = edm_heun(&eval, &x, &sigmas).unwrap();
    let none = edm_heun_churn(&eval, &x, &sigmas, &EdmChurn::default(), None).unwrap();
    assert_eq!(plain, none);
    let churn = EdmChurn {
        s_churn: 40.0,
        s_tmin: 0.05,
        s_tmax: 50.0,
        s_noise: 1.003,
    };
    let out = edm_heun_churn(&eval, &x, &sigmas, &churn, Some(&mut Rng::new(3))).unwrap();
    assert_ne!(out, plain);
    let check = common::StatCheck::run(&out, &gmm, 6);
    println!("EDM Algorithm 2, churn 40, 63 NFE: {check}");
    assert!(check.passes(), "{check}");
    assert!(edm_heun_churn(&eval, &x, &sigmas, &churn, None).is_err());
    let bad = EdmChurn {
        s_churn: -1.0,
        ..churn
    };
    assert!(edm_heun_churn(&eval, &x, &sigmas, &bad, Some(&mut Rng::new(3))).is_err());
}
