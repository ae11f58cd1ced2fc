//! Parity with the Gaussian-mixture reference the repository carries (`fixtures/gmm`):
//! the recorded metrics are recomputed from the reference files with this crate's
//! readers, model and metrics. A missing fixture fails the test.

use approx::assert_abs_diff_eq;
use diffusion_core::{Denoiser, NoiseLevel};
use diffusion_testbed::gmm_reference::GmmReference;
use diffusion_testbed::metrics::{gmm_nll, rmse, sliced_w2_to_gmm};
use diffusion_testbed::{GaussianMixture, GmmDenoiser, GmmSpec, TestbedError, fixtures};
use ndarray::{Array2, ArrayD, s};

fn reference() -> GmmReference {
    GmmReference::fixture().unwrap()
}

#[test]
fn reference_opens_the_repository_fixture_and_nothing_else() {
    let r = reference();
    assert_eq!(r.dir(), fixtures::path("gmm").unwrap());
    let spec = GmmSpec::from_file(fixtures::path("gmm/gmm2d_spec.json").unwrap()).unwrap();
    assert_eq!(r.spec().unwrap(), spec);
    let missing = GmmReference::open(fixtures::dir().join("no-such-folder")).unwrap_err();
    assert!(
        matches!(missing, TestbedError::MissingFixture { .. }),
        "{missing}"
    );
    assert!(matches!(
        fixtures::path("gmm/no-such-file.npy").unwrap_err(),
        TestbedError::MissingFixture { .. }
    ));
}

#[test]
fn canonical_reference_nll_and_sw2_match_the_recorded_values() {
    // The recorded floors were computed by the reference's own Python metrics on the
    // exact ODE map of x_T: recomputing them checks the npy reader, the mixture
    // log-density and the exact sliced W2 at once.
    let r = reference();
    let gmm = r.mixture().unwrap();
    let proj = r.sw_projections().unwrap();
    let results = r.results().unwrap();
    for schedule in ["scaled_linear", "linear"] {
        let x0 = r.ode_ref_x0(schedule).unwrap();
        let nll = gmm_nll(x0.view(), &gmm).unwrap();
        let sw2 = sliced_w2_to_gmm(x0.view(), &gmm, &proj).unwrap();
        let want_nll = results.canonical_ref_metric("gmm2d", schedule, "nll").unwrap();
        let want_sw2 = results.canonical_ref_metric("gmm2d", schedule, "sw2").unwrap();
        assert_abs_diff_eq!(nll, want_nll, epsilon = 1e-9);
        assert_abs_diff_eq!(sw2, want_sw2, epsilon = 1e-9);
    }
}

#[test]
fn npz_reference_samples_agree_with_the_full_reference_file() {
    let r = reference();
    let results = r.results().unwrap();
    let full = r.ode_ref_x0("scaled_linear").unwrap();
    let run = results.run("gmm2d.scaled_linear.ddim.trailing.N50").unwrap();
    let (samples, reference) = r.run_and_ref_samples(run).unwrap();
    assert_eq!(samples.shape(), &[128, 2]);
    // The run starts at t = 999 and ends at s = 0, so its reference is the canonical one.
    let head = full.slice(s![..128, ..]);
    assert!(rmse(reference.view(), head).unwrap() < 1e-12);
    // diffusers' DDIM at N = 50 is close to the exact solution (json: RMSE 0.029).
    let e = rmse(samples.view(), reference.view()).unwrap();
    assert!(e < 0.05, "DDIM N=50 rmse on the stored 128 samples: {e}");
    // Every run's stored arrays exist and have the documented shape.
    let mut npz = r.final_samples().unwrap();
    for run in &results.runs {
        let a = npz
            .array_2d(run.run_npz_key.as_deref().unwrap(), [Some(128), Some(2)])
            .unwrap();
        let b = npz
            .array_2d(run.ref_npz_key.as_deref().unwrap(), [Some(128), Some(2)])
            .unwrap();
        assert_eq!(a.iter().all(|v| v.is_finite()), run.finite, "{}", run.id);
        assert!(b.iter().all(|v| v.is_finite()));
    }
    assert!(
        results.configs["ddim"]
            .effective_config("scaled_linear")
            .is_some()
    );
}

/// DDIM (eta = 0, "trailing" spacing, set_alpha_to_one) written out from the DDIM paper
/// and diffusers' timestep rule, driven by the exact model.
fn ddim_trailing(gmm: &GaussianMixture, abar: &[f64], x_t: &Array2<f64>, steps: usize) -> Array2<f64> {
    let model = GmmDenoiser::epsilon(gmm.clone());
    let t_train = abar.len();
    let ratio = t_train as f64 / steps as f64;
    let timesteps: Vec<i64> = (0..steps)
        .map(|i| (t_train as f64 - i as f64 * ratio).round() as i64 - 1)
        .collect();
    let mut x: ArrayD<f64> = x_t.clone().into_dyn();
    for &t in &timesteps {
        let a_t = abar[t as usize];
        let prev = t - (t_train / steps) as i64;
        let a_prev = if prev >= 0 { abar[prev as usize] } else { 1.0 };
        let level = NoiseLevel::new(t as f64, a_t.sqrt(), (1.0 - a_t).sqrt());
        let eps = model.predict(&x, level).unwrap();
        let x0 = (&x - &(&eps * (1.0 - a_t).sqrt())) / a_t.sqrt();
        x = x0 * a_prev.sqrt() + eps * (1.0 - a_prev).sqrt();
    }
    x.into_dimensionality().unwrap()
}

#[test]
fn exact_model_reproduces_diffusers_ddim_runs() {
    // A float64 DDIM on our exact model must land on diffusers' numbers: the recorded
    // full-batch (512) RMSE, SW2 and NLL, and the stored first 128 samples (the README's
    // tolerance for float64 ports is 1e-4; we observe < 1e-7 and assert 1e-6).
    let r = reference();
    let gmm = r.mixture().unwrap();
    let spec = r.spec().unwrap();
    let proj = r.sw_projections().unwrap();
    let results = r.results().unwrap();
    let x_t = r.x_t().unwrap();
    for schedule in ["scaled_linear", "linear"] {
        let abar = &spec.schedules[schedule].alphas_cumprod;
        let reference = r.ode_ref_x0(schedule).unwrap();
        for steps in [5, 10, 50] {
            let run = results
                .run(&format!("gmm2d.{schedule}.ddim.trailing.N{steps}"))
                .unwrap();
            let ours = ddim_trailing(&gmm, abar, &x_t, steps);
            let e = rmse(ours.view(), reference.view()).unwrap();
            let want = run.rmse.unwrap();
            assert_abs_diff_eq!(e, want, epsilon = 1e-6);
            let sw2 = sliced_w2_to_gmm(ours.view(), &gmm, &proj).unwrap();
            assert_abs_diff_eq!(sw2, run.sw2.unwrap(), epsilon = 1e-6);
            let nll = gmm_nll(ours.view(), &gmm).unwrap();
            assert_abs_diff_eq!(nll, run.nll.unwrap(), epsilon = 1e-5);
            let (stored, _) = r.run_and_ref_samples(run).unwrap();
            let diff = ours
                .slice(s![..128, ..])
                .iter()
                .zip(stored.iter())
                .map(|(a, b)| (a - b).abs() / (1.0 + b.abs()))
                .fold(0.0, f64::max);
            assert!(diff < 1e-6, "{}: max relative sample difference {diff}", run.id);
            eprintln!(
                "{}: |rmse - json| = {:.1e}, |sw2 - json| = {:.1e}, |nll - json| = {:.1e}, max rel sample diff {diff:.1e}",
                run.id,
                (e - want).abs(),
                (sw2 - run.sw2.unwrap()).abs(),
                (nll - run.nll.unwrap()).abs()
            );
        }
    }
}
