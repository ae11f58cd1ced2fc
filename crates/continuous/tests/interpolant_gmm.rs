//! Stochastic-interpolant ODE and SDE samplers: the ODE against the closed-form Gaussian
//! flow and against the DoPri5 probability-flow reference (an independent formulation:
//! VE view, epsilon form); the SDE statistically against the exact GMM marginal.

mod common;

use diffusion_continuous::interpolant::{sample_ode, sample_sde};
use diffusion_continuous::{
    Dopri5Options, Evaluator, InterpolantDiffusion, InterpolantSchedule, ProbabilityFlow,
};
use diffusion_core::Parameterization;
use diffusion_core::Rng;
use diffusion_schedules::continuous::{Interpolant, InterpolantPath};
use diffusion_testbed::{GaussianMixture, GmmDenoiser};
use ndarray::ArrayD;

fn schedules() -> Vec<InterpolantSchedule> {
    let mut out = Vec::new();
    for path in [InterpolantPath::Linear, InterpolantPath::Trigonometric] {
        for gamma_scale in [0.0, 1.0] {
            out.push(InterpolantSchedule::new(Interpolant { path, gamma_scale }).unwrap());
        }
    }
    out
}

/// The exact model predicting data: at t = 0 (alpha = b = 0) an epsilon model cannot
/// give `E[x1 | x]`, a data-predicting one can.
fn data_model(gmm: GaussianMixture) -> GmmDenoiser {
    GmmDenoiser::new(gmm, Parameterization::Sample).unwrap()
}

fn uniform(t0: f64, t1: f64, steps: usize) -> Vec<f64> {
    (0..=steps)
        .map(|i| t0 + (t1 - t0) * i as f64 / steps as f64)
        .collect()
}

/// Gaussian data N(mu, sd^2 I): the flow keeps `(x - b mu) / sqrt(b^2 sd^2 + s^2)` fixed.
#[test]
fn ode_matches_the_gaussian_closed_form_at_second_order() {
    let (mu, sd) = ([1.0, -0.5], 0.7);
    let gauss = data_model(GaussianMixture::isotropic(vec![1.0], vec![mu.to_vec()], &[sd]).unwrap());
    let z = common::normals(256, 2, 9);
    let t_end = 0.97;
    for sched in schedules() {
        let eval = Evaluator::new(&gauss, &sched, InterpolantSchedule::model_time());
        let m = sched.marginal(t_end);
        let scale = (m.alpha * m.alpha * sd * sd + m.sigma * m.sigma).sqrt();
        let mut exact = z.clone();
        for (row, e) in z.outer_iter().zip(exact.outer_iter_mut()) {
            let mut e = e;
            for i in 0..2 {
                e[i] = m.alpha * mu[i] + scale * row[i];
            }
        }
        let err = |steps| {
            common::max_abs(
                &sample_ode(&eval, &z, &uniform(0.0, t_end, steps)).unwrap(),
                &exact,
            )
        };
        let (e1, e2) = (err(100), err(200));
        println!(
            "{:?}: Heun 100 steps {e1:.2e}, 200 steps {e2:.2e}, ratio {:.2}",
            sched.interpolant,
            e1 / e2
        );
        assert!(e2 < 2e-4, "{e2}");
        // Second order: halving the step divides the error by ~4.
        assert!((3.2..4.8).contains(&(e1 / e2)), "{}", e1 / e2);
    }
}

#[test]
fn ode_matches_the_dopri5_reference_on_gmm2d() {
    let gmm = data_model(common::mixture());
    let (t0, t_end) = (0.02, 0.95);
    let x: ArrayD<f64> = common::normals(256, 2, 4);
    for sched in schedules() {
        let eval = Evaluator::new(&gmm, &sched, InterpolantSchedule::model_time());
        let m0 = sched.marginal(t0);
        // Start from a point of the marginal at t0 (scale of the noise right).
        let x0 = x.mapv(|v| v * m0.sigma);
        let flow = ProbabilityFlow::new(Evaluator::new(&gmm, &sched, InterpolantSchedule::model_time()));
        let reference = flow
            .solve(&x0, 1.0 - t0, &[1.0 - t_end], &Dopri5Options::tolerance(1e-10))
            .unwrap()
            .0
            .remove(0);
        let ours = sample_ode(&eval, &x0, &uniform(t0, t_end, 400)).unwrap();
        let err = common::max_abs(&ours, &reference);
        println!("{:?}: Heun 400 steps vs DoPri5 {err:.2e}", sched.interpolant);
        assert!(err < 5e-4, "{err}");
    }
}

#[test]
fn sde_samples_the_exact_marginal() {
    let gmm = data_model(common::mixture());
    let t_end = 0.95;
    let n = 4000;
    // At t = 0 the marginal is exactly the N(0, I) base.
    let x = common::normals(n, 2, 31);
    for (path, diffusion) in [
        (InterpolantPath::Linear, InterpolantDiffusion::Constant(0.5)),
        (
            InterpolantPath::Trigonometric,
            InterpolantDiffusion::NoiseScaled(1.0),
        ),
    ] {
        let sched = InterpolantSchedule::new(Interpolant {
            path,
            gamma_scale: 1.0,
        })
        .unwrap();
        let eval = Evaluator::new(&gmm, &sched, InterpolantSchedule::model_time());
        let out = sample_sde(
            &eval,
            &x,
            &uniform(0.0, t_end, 400),
            diffusion,
            false,
            &mut Rng::new(8),
        )
        .unwrap();
        let m = sched.marginal(t_end);
        let check = common::StatCheck::run(&out, &common::noised_mixture(gmm.mixture(), m.alpha, m.sigma), 6);
        println!("{path:?} {diffusion:?}: {check}");
        assert!(check.passes(), "{check}");
    }
}

#[test]
fn bad_interpolant_input_is_an_error() {
    let gmm = data_model(common::mixture());
    let sched = InterpolantSchedule::new(Interpolant {
        path: InterpolantPath::Linear,
        gamma_scale: 1.0,
    })
    .unwrap();
    let eval = Evaluator::new(&gmm, &sched, InterpolantSchedule::model_time());
    let x = common::normals(4, 2, 1);
    assert!(sample_ode(&eval, &x, &[0.0, 1.0]).is_err());
    assert!(sample_ode(&eval, &x, &[0.5, 0.2]).is_err());
    assert!(sample_ode(&eval, &x, &[0.5]).is_err());
    let bad = InterpolantDiffusion::Constant(-1.0);
    assert!(sample_sde(&eval, &x, &[0.0, 0.5], bad, false, &mut Rng::new(1)).is_err());
    assert!(
        InterpolantSchedule::new(Interpolant {
            path: InterpolantPath::Linear,
            gamma_scale: f64::NAN
        })
        .is_err()
    );
}
