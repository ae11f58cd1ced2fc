//! The stochastic samplers draw from the right distribution: on an exact 2-D Gaussian
//! mixture, samples of DDPM, Euler ancestral and SDE-DPM-Solver++ have the mixture's
//! mean and a sliced W2 distance to it comparable to an exact sample of the same size.

use diffusion_core::{Parameterization, Rng};
use diffusion_solvers::{by_name, sample_all};
use diffusion_testbed::metrics::sliced_w2_to_gmm;
use diffusion_testbed::{GaussianMixture, GmmDenoiser, Projections};
use ndarray::{Axis, Ix2};
use serde_json::json;

#[test]
fn stochastic_samplers_match_the_mixture() {
    let gmm = GaussianMixture::isotropic(
        vec![0.3, 0.7],
        vec![vec![-2.0, 1.0], vec![2.0, -0.5]],
        &[0.5, 0.7],
    )
    .unwrap();
    let model = GmmDenoiser::new(gmm.clone(), Parameterization::Epsilon).unwrap();
    let n = 2000;
    let mut rng = Rng::new(7);
    let proj = Projections::random(64, 2, &mut rng).unwrap();
    // The finite-sample floor: an exact sample's distance to the mixture.
    let floor = sliced_w2_to_gmm(gmm.sample(n, &mut rng).view(), &gmm, &proj).unwrap();
    let mean = [0.3 * -2.0 + 0.7 * 2.0, 0.3 * 1.0 + 0.7 * -0.5];
    for (name, cfg, steps) in [
        ("DDPMScheduler", json!({"clip_sample": false}), 200),
        (
            "DDPMScheduler",
            json!({"clip_sample": false, "variance_type": "fixed_large"}),
            200,
        ),
        ("EulerAncestralDiscreteScheduler", json!({}), 100),
        (
            "DPMSolverMultistepScheduler",
            json!({"algorithm_type": "sde-dpmsolver++"}),
            50,
        ),
    ] {
        let mut s = by_name::<ndarray::ArrayD<f64>>(name, &cfg).unwrap();
        s.set_timesteps(steps).unwrap();
        let x_t = gmm.sample_noised(n, 0.0, 1.0, &mut rng).unwrap().into_dyn();
        let out = sample_all(&mut s, &model, &x_t, Some(&mut rng)).unwrap();
        let out = out.into_dimensionality::<Ix2>().unwrap();
        let m = out.mean_axis(Axis(0)).unwrap();
        let sw2 = sliced_w2_to_gmm(out.view(), &gmm, &proj).unwrap();
        println!(
            "{name} {cfg}: mean {m} (want {mean:?}), sliced W2 {sw2:.4} (exact-sample floor {floor:.4})"
        );
        // Per-coordinate std <= 2.1, so 4 standard errors of the mean are < 0.2.
        for k in 0..2 {
            assert!(
                (m[k] - mean[k]).abs() < 4.0 * 2.1 / (n as f64).sqrt(),
                "{name}: mean {m}"
            );
        }
        assert!(sw2 < floor + 0.05, "{name}: sliced W2 {sw2} vs floor {floor}");
    }
}
