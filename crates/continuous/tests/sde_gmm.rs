//! Reverse-SDE Euler-Maruyama and the predictor-corrector sampler on the exact gmm2d model:
//! samples are compared statistically with the exact noised marginal at the end time.

mod common;

use std::time::Instant;

use diffusion_continuous::sde::sde_coefficients;
use diffusion_continuous::{
    Evaluator, GridKind, LangevinOptions, ModelTime, SdeOptions, TimeGrid, sample_sde,
};
use diffusion_core::{NoiseSchedule, Rng};
use diffusion_schedules::continuous::LinearVp;

const N: usize = 4000;
const T_END: f64 = 1e-3;

/// Runs the sampler from exact draws of the marginal at t = 1 (no prior mismatch).
fn run(steps: usize, options: &SdeOptions, seed: u64) -> (common::StatCheck, usize) {
    let gmm = common::mixture();
    let sched = LinearVp::default();
    let x = gmm
        .sample_noised(N, sched.alpha(1.0), sched.sigma(1.0), &mut Rng::new(seed))
        .unwrap()
        .into_dyn();
    let eval = Evaluator::new(&gmm, &sched, ModelTime::Identity);
    let grid = TimeGrid::new(GridKind::TimeUniform, &sched, 1.0, T_END, steps).unwrap();
    let start = Instant::now();
    let out = sample_sde(&eval, &x, &grid, options, &mut Rng::new(seed + 1)).unwrap();
    println!("  sampling {steps} steps: {:.2?}", start.elapsed());
    let target = common::noised_mixture(&gmm, sched.alpha(T_END), sched.sigma(T_END));
    (common::StatCheck::run(&out, &target, 8), eval.nfe())
}

#[test]
fn sde_coefficients_match_the_linear_vp_closed_form() {
    // Linear VP: f = -beta(t)/2, g^2 = beta(t).
    let s = LinearVp::default();
    for t in [1e-3, 0.2, 0.5, 0.9, 1.0] {
        let beta = s.beta_0 + t * (s.beta_1 - s.beta_0);
        let c = sde_coefficients(&s, t);
        assert!((c.drift + 0.5 * beta).abs() < 1e-7 * beta, "t {t}: {c:?}");
        assert!((c.diffusion_sq - beta).abs() < 1e-6 * beta, "t {t}: {c:?}");
    }
}

#[test]
fn euler_maruyama_samples_the_exact_marginal() {
    let start = Instant::now();
    let (check, nfe) = run(500, &SdeOptions::default(), 11);
    println!("EM 500 steps: {check} ({nfe} NFE, {:.2?})", start.elapsed());
    assert_eq!(nfe, 500);
    assert!(check.passes(), "{check}");
    // The check has power: 3 Euler-Maruyama steps are visibly biased.
    let (coarse, _) = run(3, &SdeOptions::default(), 11);
    println!("EM 3 steps: {coarse}");
    assert!(!coarse.passes(), "{coarse}");
}

#[test]
fn predictor_corrector_samples_the_exact_marginal() {
    let start = Instant::now();
    let options = SdeOptions {
        corrector: Some(LangevinOptions { steps: 1, snr: 0.16 }),
        final_denoise: false,
    };
    let (check, nfe) = run(200, &options, 21);
    println!("PC 200 x (1 + 1): {check} ({nfe} NFE, {:.2?})", start.elapsed());
    assert_eq!(nfe, 400);
    assert!(check.passes(), "{check}");
}

#[test]
fn seeded_runs_repeat_exactly() {
    let gmm = common::mixture();
    let sched = LinearVp::default();
    let x = common::normals(64, 2, 5);
    let eval = Evaluator::new(&gmm, &sched, ModelTime::Identity);
    let grid = TimeGrid::new(GridKind::LogSnrUniform, &sched, 1.0, T_END, 20).unwrap();
    let options = SdeOptions {
        corrector: Some(LangevinOptions::default()),
        final_denoise: true,
    };
    let a = sample_sde(&eval, &x, &grid, &options, &mut Rng::new(3)).unwrap();
    let b = sample_sde(&eval, &x, &grid, &options, &mut Rng::new(3)).unwrap();
    let c = sample_sde(&eval, &x, &grid, &options, &mut Rng::new(4)).unwrap();
    assert_eq!(a, b);
    assert!(common::max_abs(&a, &c) > 1e-3);
    let bad = SdeOptions {
        corrector: Some(LangevinOptions { steps: 1, snr: -1.0 }),
        final_denoise: false,
    };
    assert!(sample_sde(&eval, &x, &grid, &bad, &mut Rng::new(3)).is_err());
}
