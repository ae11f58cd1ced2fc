//! The adaptive Dormand-Prince solver against closed forms and the DOP853 reference in
//! `fixtures/gmm`.

mod common;

use diffusion_continuous::{Dopri5Options, Evaluator, ModelTime, ProbabilityFlow, integrate};
use diffusion_core::NoiseSchedule;
use diffusion_schedules::continuous::LinearVp;
use diffusion_testbed::GaussianMixture;
use ndarray::{ArrayD, IxDyn};

/// Scalar ODE with a known solution: y' = -2 s y, y = exp(-s^2); fifth order means the
/// global error falls like tol and stays within a small multiple of it.
#[test]
fn scalar_gaussian_decay_meets_tolerance() {
    let y0 = ArrayD::from_elem(IxDyn(&[1]), 1.0);
    let mut rhs = |s: f64, y: &ArrayD<f64>| Ok(y.mapv(|v| -2.0 * s * v));
    for tol in [1e-6, 1e-9, 1e-12] {
        let outs = [0.5, 1.0, 2.0];
        let (ys, stats) = integrate(&mut rhs, 0.0, &y0, &outs, &Dopri5Options::tolerance(tol)).unwrap();
        for (y, s) in ys.iter().zip(outs) {
            let err = (y[0] - (-s * s).exp()).abs();
            assert!(err < 20.0 * tol, "tol {tol}: error {err} at s = {s} ({stats:?})");
        }
    }
}

/// Single Gaussian data N(mu, diag(v)): the PF-ODE in y = x/alpha, s = sigma/alpha is
/// y(s) = mu + sqrt((v + s^2) / (v + s0^2)) (y0 - mu), per dimension.
#[test]
fn single_gaussian_matches_closed_form() {
    let (mu, var) = ([1.5, -0.7], [0.09, 0.5]);
    let gmm = GaussianMixture::new(
        vec![1.0],
        vec![mu.to_vec()],
        vec![vec![vec![var[0], 0.0], vec![0.0, var[1]]]],
    )
    .unwrap();
    let sched = LinearVp::default();
    let flow = ProbabilityFlow::new(Evaluator::new(&gmm, &sched, ModelTime::Identity));
    let x = common::normals(64, 2, 7);
    let (t0, outs) = (1.0, [0.5, 0.1, 1e-3]);
    let (xs, stats) = flow
        .solve(&x, t0, &outs, &Dopri5Options::tolerance(1e-10))
        .unwrap();
    let s0 = sched.sigma_over_alpha(t0);
    for (xt, &t) in xs.iter().zip(&outs) {
        let (s, a) = (sched.sigma_over_alpha(t), sched.alpha(t));
        let mut worst = 0.0f64;
        for i in 0..64 {
            for d in 0..2 {
                let y0 = x[[i, d]] / sched.alpha(t0);
                let y = mu[d] + ((var[d] + s * s) / (var[d] + s0 * s0)).sqrt() * (y0 - mu[d]);
                worst = worst.max((xt[[i, d]] - a * y).abs());
            }
        }
        assert!(worst < 1e-8, "t = {t}: max error {worst} ({stats:?})");
    }
}

/// The fixture's reference (scipy's DOP853 at rtol = atol = 1e-10 from t = 999 to s = 0).
#[test]
fn matches_scipy_dop853_reference() {
    let reference = common::reference();
    let gmm = common::mixture();
    let x_t = common::to_dyn(&reference.x_t().unwrap());
    for name in ["scaled_linear", "linear"] {
        let sched = common::schedule(name);
        let want = common::to_dyn(&reference.ode_ref_x0(name).unwrap());
        let flow = ProbabilityFlow::new(Evaluator::new(&gmm, &sched, ModelTime::discrete(1000)));
        let (xs, stats) = flow
            .solve_s(&x_t, 1.0, &[0.0], &Dopri5Options::tolerance(1e-9))
            .unwrap();
        let err = common::max_abs(&xs[0], &want);
        println!("{name}: max |DoPri5(1e-9) - DOP853(1e-10)| = {err:.2e}, {stats:?}");
        assert!(err < 1e-6, "{name}: {err}");
    }
}

/// Exact NLL through the ODE: with the prior equal to the true noised marginal, the
/// change of variables must return the data density itself, in closed form for a
/// single Gaussian and for the 8-component mixture (exact scores, so exact flow).
#[test]
fn likelihood_matches_exact_density() {
    use diffusion_continuous::{LikelihoodOptions, log_likelihood};
    use ndarray::{Array2, ArrayView2};
    let single = GaussianMixture::new(
        vec![1.0],
        vec![vec![0.5, -1.0]],
        vec![vec![vec![0.3, 0.1], vec![0.1, 0.2]]],
    )
    .unwrap();
    for (name, gmm) in [("single Gaussian", single), ("gmm2d", common::mixture())] {
        let sched = LinearVp::default();
        let flow = ProbabilityFlow::new(Evaluator::new(&gmm, &sched, ModelTime::Identity));
        let x0 = gmm.sample(16, &mut diffusion_core::Rng::new(3));
        let (t_data, t_prior) = (1e-3, 1.0);
        let noised = gmm.at_noise(sched.alpha(t_prior), sched.sigma(t_prior)).unwrap();
        let prior = |v: &[f64]| {
            let row = Array2::from_shape_vec((1, v.len()), v.to_vec()).unwrap();
            noised.log_density(row.view()).unwrap()[0]
        };
        let x = x0.clone().into_dyn();
        let (got, stats) =
            log_likelihood(&flow, &x, t_data, t_prior, &prior, &LikelihoodOptions::default()).unwrap();
        let data = gmm.at_noise(sched.alpha(t_data), sched.sigma(t_data)).unwrap();
        let want = data.log_density(ArrayView2::from(&x0.view())).unwrap();
        let worst = got
            .iter()
            .zip(want.iter())
            .map(|(g, w)| (g - w).abs())
            .fold(0.0, f64::max);
        println!("{name}: max |ln p_ode - ln p_exact| = {worst:.2e} ({stats:?})");
        assert!(worst < 1e-5, "{name}: {worst}");
    }
}
