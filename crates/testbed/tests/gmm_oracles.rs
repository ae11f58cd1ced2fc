//! The exact mixture model against independent oracles: finite differences of the
//! log-density, closed forms for single Gaussians, numerical normalisation, moments.

use approx::assert_abs_diff_eq;
use diffusion_core::{
    ConditionalDenoiser, Denoiser, NoiseLevel, Parameterization, Rng, param::conversion, predict_as,
};
use diffusion_testbed::{GaussianMixture, GmmDenoiser, GmmSpec, TestbedError, TimestepModel, fixtures};
use ndarray::{Array2, ArrayD, IxDyn, array};

fn spec() -> GmmSpec {
    GmmSpec::from_file(fixtures::path("gmm/gmm2d_spec.json").unwrap()).unwrap()
}

fn gmm2d() -> GaussianMixture {
    GaussianMixture::from_spec(&spec()).unwrap()
}

/// A random full-covariance mixture in `d` dimensions (SPD by construction: B B^T + c I).
fn random_mixture(d: usize, k: usize, seed: u64) -> GaussianMixture {
    let mut rng = Rng::new(seed);
    let mut means = Vec::new();
    let mut covs = Vec::new();
    for _ in 0..k {
        let mut m = vec![0.0; d];
        rng.fill_normal(&mut m);
        means.push(m.iter().map(|v| 2.0 * v).collect());
        let mut b = vec![0.0; d * d];
        rng.fill_normal(&mut b);
        let cov: Vec<Vec<f64>> = (0..d)
            .map(|i| {
                (0..d)
                    .map(|j| {
                        let s: f64 = (0..d).map(|l| b[i * d + l] * b[j * d + l]).sum::<f64>() / d as f64;
                        0.3 * s + if i == j { 0.05 } else { 0.0 }
                    })
                    .collect()
            })
            .collect();
        covs.push(cov);
    }
    let w: Vec<f64> = (0..k).map(|i| (i + 1) as f64).collect();
    let total: f64 = w.iter().sum();
    GaussianMixture::new(w.iter().map(|v| v / total).collect(), means, covs).unwrap()
}

fn points(n: usize, d: usize, scale: f64, seed: u64) -> Array2<f64> {
    let mut rng = Rng::new(seed);
    let mut v = vec![0.0; n * d];
    rng.fill_normal(&mut v);
    Array2::from_shape_vec((n, d), v).unwrap() * scale
}

#[test]
fn score_matches_finite_differences_of_log_density() {
    let cases = [(gmm2d(), 2usize), (random_mixture(5, 3, 1), 5)];
    for (gmm, d) in &cases {
        for &(alpha, sigma) in &[(1.0, 0.0), (0.99, 0.14), (0.6, 0.8), (0.07, 0.9975)] {
            let m = gmm.at_noise(alpha, sigma).unwrap();
            let x = points(16, *d, 3.0 * alpha.max(sigma), 7);
            let score = m.score(x.view()).unwrap();
            let h = 1e-5;
            for i in 0..x.nrows() {
                for j in 0..*d {
                    let (mut xp, mut xm) = (x.clone(), x.clone());
                    xp[[i, j]] += h;
                    xm[[i, j]] -= h;
                    let fd = (m.log_density(xp.view()).unwrap()[i] - m.log_density(xm.view()).unwrap()[i])
                        / (2.0 * h);
                    let s = score[[i, j]];
                    // Central difference: O(h^2) truncation + O(1e-16 / h) rounding.
                    assert!(
                        (fd - s).abs() < 1e-6 * (1.0 + s.abs()),
                        "d={d} alpha={alpha} sigma={sigma} row {i} dim {j}: fd {fd} vs score {s}"
                    );
                }
            }
        }
    }
}

#[test]
fn single_isotropic_gaussian_matches_closed_form() {
    let mu = [1.5, -0.5, 2.0];
    let s0 = 0.7;
    let gmm = GaussianMixture::isotropic(vec![1.0], vec![mu.to_vec()], &[s0]).unwrap();
    let x = points(8, 3, 2.0, 3);
    for &(alpha, sigma) in &[(1.0, 0.0), (0.8, 0.6), (0.0, 1.0), (1.0, 80.0), (0.3, 0.2)] {
        let m = gmm.at_noise(alpha, sigma).unwrap();
        let eps = m.predict(x.view(), Parameterization::Epsilon).unwrap();
        let x0 = m.predict(x.view(), Parameterization::Sample).unwrap();
        let v = m.predict(x.view(), Parameterization::V).unwrap();
        let var = alpha * alpha * s0 * s0 + sigma * sigma;
        for i in 0..x.nrows() {
            for j in 0..3 {
                let r = x[[i, j]] - alpha * mu[j];
                let want_eps = sigma * r / var;
                let want_x0 = mu[j] + alpha * s0 * s0 * r / var;
                let want_v = alpha * want_eps - sigma * want_x0;
                assert!((eps[[i, j]] - want_eps).abs() < 1e-13 * (1.0 + want_eps.abs()));
                assert!((x0[[i, j]] - want_x0).abs() < 1e-13 * (1.0 + want_x0.abs()));
                assert!((v[[i, j]] - want_v).abs() < 1e-12 * (1.0 + want_v.abs()));
            }
            // log N(x; alpha mu, var I), written out.
            let q: f64 = (0..3).map(|j| (x[[i, j]] - alpha * mu[j]).powi(2)).sum::<f64>() / var;
            let want_lp = -0.5 * q - 1.5 * (2.0 * std::f64::consts::PI * var).ln();
            let lp = m.log_density(x.row(i).insert_axis(ndarray::Axis(0))).unwrap()[0];
            assert!((lp - want_lp).abs() < 1e-12 * (1.0 + want_lp.abs()));
        }
    }
}

#[test]
fn full_covariance_gaussian_matches_explicit_2x2_inverse() {
    let (a, b, c) = (0.5, 0.2, 0.3); // Sigma = [[a, b], [b, c]]
    let mu = [1.0, -2.0];
    let gmm = GaussianMixture::new(vec![1.0], vec![mu.to_vec()], vec![vec![vec![a, b], vec![b, c]]]).unwrap();
    let (alpha, sigma) = (0.6, 0.8);
    let (ca, cb, cc) = (
        alpha * alpha * a + sigma * sigma,
        alpha * alpha * b,
        alpha * alpha * c + sigma * sigma,
    );
    let det = ca * cc - cb * cb;
    let x = array![[0.3, -0.9], [2.0, 1.0]];
    let eps = gmm
        .at_noise(alpha, sigma)
        .unwrap()
        .predict(x.view(), Parameterization::Epsilon)
        .unwrap();
    for i in 0..2 {
        let (r0, r1) = (x[[i, 0]] - alpha * mu[0], x[[i, 1]] - alpha * mu[1]);
        let want = [
            sigma * (cc * r0 - cb * r1) / det,
            sigma * (-cb * r0 + ca * r1) / det,
        ];
        for j in 0..2 {
            assert_abs_diff_eq!(eps[[i, j]], want[j], epsilon = 1e-13);
        }
    }
}

#[test]
fn narrow_components_give_eps_near_x_minus_alpha_mu_over_sigma() {
    // Data nearly a point mass at mu: eps -> (x - alpha mu) / sigma, with relative
    // deviation (alpha s0 / sigma)^2 = 1e-6.
    let mu = vec![0.5, -1.0];
    let gmm = GaussianMixture::isotropic(vec![1.0], vec![mu.clone()], &[1e-6]).unwrap();
    let (alpha, sigma) = (0.9999, 1e-3);
    let x = array![[0.5003, -1.0002], [0.49, -0.99]];
    let eps = gmm
        .at_noise(alpha, sigma)
        .unwrap()
        .predict(x.view(), Parameterization::Epsilon)
        .unwrap();
    for i in 0..2 {
        for j in 0..2 {
            let want = (x[[i, j]] - alpha * mu[j]) / sigma;
            assert!(
                (eps[[i, j]] - want).abs() < 2e-6 * want.abs().max(1.0),
                "{} vs {want}",
                eps[[i, j]]
            );
        }
    }
    // Tiny sigma on the real problem: finite everywhere, even far from every component.
    let g = gmm2d();
    let far = array![[40.0, -35.0], [0.0, 0.0], [4.0, 0.0]];
    for &sigma in &[1e-12, 0.0] {
        let m = g.at_noise(1.0, sigma).unwrap();
        for p in [
            Parameterization::Epsilon,
            Parameterization::Sample,
            Parameterization::Score,
        ] {
            assert!(m.predict(far.view(), p).unwrap().iter().all(|v| v.is_finite()));
        }
    }
}

#[test]
fn posterior_means_decompose_x_and_match_core_conversions() {
    // x = alpha E[x0|x] + sigma E[eps|x] holds exactly for posterior means; the code
    // computes the two from different formulas, so this checks one against the other.
    let g = random_mixture(4, 3, 5);
    let x = points(10, 4, 1.5, 9);
    for &(alpha, sigma) in &[(0.9, 0.43), (0.2, 0.98), (1.0, 5.0)] {
        let m = g.at_noise(alpha, sigma).unwrap();
        let eps = m.predict(x.view(), Parameterization::Epsilon).unwrap();
        let x0 = m.predict(x.view(), Parameterization::Sample).unwrap();
        let recon = &x0 * alpha + &eps * sigma;
        assert!(
            recon
                .iter()
                .zip(x.iter())
                .all(|(a, b)| (a - b).abs() < 1e-12 * (1.0 + b.abs()))
        );
        for p in [
            Parameterization::V,
            Parameterization::Flow,
            Parameterization::Score,
        ] {
            let (cx, cm) = conversion(Parameterization::Epsilon, p, alpha, sigma).unwrap();
            let want = &x * cx + &eps * cm;
            let got = m.predict(x.view(), p).unwrap();
            for (a, b) in got.iter().zip(want.iter()) {
                assert!((a - b).abs() < 1e-11 * (1.0 + b.abs()), "{p:?}: {a} vs {b}");
            }
        }
    }
}

#[test]
fn density_integrates_to_one() {
    // Midpoint rule on [-8, 8]^2 (mass outside is < 1e-12); the integrand is smooth on the
    // grid scale, so the rule is accurate far below the bound.
    let g = gmm2d();
    for &(alpha, sigma) in &[(1.0, 0.0), (0.8, 0.6)] {
        let m = g.at_noise(alpha, sigma).unwrap();
        let (lo, h, n) = (-8.0, 0.02, 800);
        let grid = Array2::from_shape_fn((n * n, 2), |(r, c)| {
            let idx = if c == 0 { r / n } else { r % n };
            lo + (idx as f64 + 0.5) * h
        });
        let total: f64 = m
            .log_density(grid.view())
            .unwrap()
            .iter()
            .map(|l| l.exp())
            .sum::<f64>()
            * h
            * h;
        assert_abs_diff_eq!(total, 1.0, epsilon = 1e-6);
    }
}

#[test]
fn samples_have_the_exact_moments() {
    let g = gmm2d();
    let n = 100_000;
    let (alpha, sigma) = (0.6, 0.8);
    let x = g.sample_noised(n, alpha, sigma, &mut Rng::new(42)).unwrap();
    // Exact mixture moments of alpha x0 + sigma eps.
    let mut mean = [0.0; 2];
    let mut second = [[0.0; 2]; 2];
    for k in 0..g.n_components() {
        let (w, mu, cov) = (g.weights()[k], g.mean(k), g.covariance(k));
        for i in 0..2 {
            mean[i] += w * alpha * mu[i];
            for j in 0..2 {
                second[i][j] += w * (alpha * alpha * (cov[i * 2 + j] + mu[i] * mu[j]));
            }
        }
    }
    for i in 0..2 {
        second[i][i] += sigma * sigma;
    }
    for i in 0..2 {
        let m = x.column(i).mean().unwrap();
        let var = second[i][i] - mean[i] * mean[i];
        // Five standard errors.
        assert!(
            (m - mean[i]).abs() < 5.0 * (var / n as f64).sqrt(),
            "mean {i}: {m} vs {}",
            mean[i]
        );
        for j in 0..2 {
            let s = (x.column(i).to_owned() * x.column(j)).mean().unwrap();
            let se = 5.0 * (second[i][i] * second[j][j] * 3.0 / n as f64).sqrt();
            assert!(
                (s - second[i][j]).abs() < se,
                "E[x{i} x{j}]: {s} vs {}",
                second[i][j]
            );
        }
    }
}

#[test]
fn nll_of_exact_samples_estimates_the_entropy() {
    // A single Gaussian's entropy is D/2 ln(2 pi e) + ln det(Sigma) / 2.
    let cov = vec![vec![0.5, 0.2, 0.0], vec![0.2, 0.3, 0.1], vec![0.0, 0.1, 0.4]];
    let det: f64 = 0.5 * (0.3 * 0.4 - 0.01) - 0.2 * (0.2 * 0.4 - 0.0);
    let g = GaussianMixture::new(vec![1.0], vec![vec![1.0, 2.0, 3.0]], vec![cov]).unwrap();
    let n = 50_000;
    let x = g.sample(n, &mut Rng::new(3));
    let entropy = 1.5 * (2.0 * std::f64::consts::PI * std::f64::consts::E).ln() + 0.5 * det.ln();
    // -ln p = const + chi2_3 / 2: standard deviation sqrt(6) / 2.
    let se = (6.0f64).sqrt() / 2.0 / (n as f64).sqrt();
    let nll = g.nll(x.view()).unwrap();
    assert!((nll - entropy).abs() < 5.0 * se, "nll {nll} vs entropy {entropy}");
}

#[test]
fn responsibilities_follow_bayes_rule() {
    let g = gmm2d();
    let x = points(20, 2, 3.0, 13);
    let (alpha, sigma) = (0.8, 0.6);
    let m = g.at_noise(alpha, sigma).unwrap();
    let r = m.responsibilities(x.view()).unwrap();
    for i in 0..x.nrows() {
        // w_k N_k(x) via the explicit 2x2 formula, then normalised.
        let terms: Vec<f64> = (0..g.n_components())
            .map(|k| {
                let c = g.covariance(k);
                let (a, b, d) = (
                    alpha * alpha * c[0] + sigma * sigma,
                    alpha * alpha * c[1],
                    alpha * alpha * c[3] + sigma * sigma,
                );
                let det = a * d - b * b;
                let (r0, r1) = (x[[i, 0]] - alpha * g.mean(k)[0], x[[i, 1]] - alpha * g.mean(k)[1]);
                let q = (d * r0 * r0 - 2.0 * b * r0 * r1 + a * r1 * r1) / det;
                g.weights()[k] * (-0.5 * q).exp() / (2.0 * std::f64::consts::PI * det.sqrt())
            })
            .collect();
        let total: f64 = terms.iter().sum();
        for k in 0..g.n_components() {
            assert_abs_diff_eq!(r[[i, k]], terms[k] / total, epsilon = 1e-12);
        }
        let lp = m.log_density(x.row(i).insert_axis(ndarray::Axis(0))).unwrap()[0];
        assert!((lp - total.ln()).abs() < 1e-12 * (1.0 + lp.abs()));
    }
}

#[test]
fn denoiser_f32_and_f64_agree_and_convert_through_core() {
    let g = gmm2d();
    let model = GmmDenoiser::epsilon(g.clone());
    let x64 = ArrayD::from_shape_vec(IxDyn(&[3, 2]), vec![0.1, 3.9, -2.5, 2.0, 1.0, -1.0]).unwrap();
    let x32 = x64.mapv(|v| v as f32);
    let level = NoiseLevel::new(500.0, 0.8, 0.6);
    let e64: ArrayD<f64> = model.predict(&x64, level).unwrap();
    let e32: ArrayD<f32> = model.predict(&x32, level).unwrap();
    for (a, b) in e64.iter().zip(e32.iter()) {
        assert!((a - f64::from(*b)).abs() < 1e-6 * (1.0 + a.abs()));
    }
    // The x0 head built directly equals core's conversion of the epsilon head.
    let x0_model = GmmDenoiser::new(g.clone(), Parameterization::Sample).unwrap();
    let direct: ArrayD<f64> = x0_model.predict(&x64, level).unwrap();
    let via_core = predict_as(&model, &x64, level, Parameterization::Sample).unwrap();
    for (a, b) in direct.iter().zip(via_core.iter()) {
        assert_abs_diff_eq!(a, b, epsilon = 1e-12);
    }
    // A bare mixture is the epsilon model.
    let bare: ArrayD<f64> = g.predict(&x64, level).unwrap();
    assert_eq!(bare, e64);
    // Image-shaped batches are accepted when the trailing axes hold D values.
    let img = x64.clone().into_shape_with_order(IxDyn(&[3, 1, 2])).unwrap();
    let out: ArrayD<f64> = model.predict(&img, level).unwrap();
    assert_eq!(out.shape(), &[3, 1, 2]);
    assert_eq!(
        out.iter().copied().collect::<Vec<_>>(),
        e64.iter().copied().collect::<Vec<_>>()
    );
}

#[test]
fn class_conditional_model_is_the_component_model() {
    let g = gmm2d();
    let model = GmmDenoiser::epsilon(g.clone());
    let x = ArrayD::from_shape_vec(IxDyn(&[2, 2]), vec![0.1, 3.9, -2.5, 2.0]).unwrap();
    let level = NoiseLevel::new(0.0, 0.8, 0.6);
    let k = 1;
    let got: ArrayD<f64> = model.with_cond(Some(&k)).predict(&x, level).unwrap();
    // One full-covariance Gaussian: eps = sigma C^-1 (x - alpha mu) by the 2x2 inverse.
    let (c, mu) = (g.covariance(k), g.mean(k));
    let (a, b, d) = (0.64 * c[0] + 0.36, 0.64 * c[1], 0.64 * c[3] + 0.36);
    let det = a * d - b * b;
    for i in 0..2 {
        let (r0, r1) = (x[[i, 0]] - 0.8 * mu[0], x[[i, 1]] - 0.8 * mu[1]);
        assert_abs_diff_eq!(got[[i, 0]], 0.6 * (d * r0 - b * r1) / det, epsilon = 1e-12);
        assert_abs_diff_eq!(got[[i, 1]], 0.6 * (-b * r0 + a * r1) / det, epsilon = 1e-12);
    }
    let uncond: ArrayD<f64> = model.with_cond(None).predict(&x, level).unwrap();
    assert_eq!(uncond, model.predict(&x, level).unwrap());
    assert!(model.with_cond(Some(&8)).predict(&x, level).is_err());
}

#[test]
fn timestep_model_reads_the_table() {
    let spec = spec();
    let sched = spec.schedule("scaled_linear").unwrap();
    let abar = spec.schedules["scaled_linear"].alphas_cumprod[700];
    let model = TimestepModel::new(GmmDenoiser::epsilon(gmm2d()), sched);
    let x = ArrayD::from_shape_vec(IxDyn(&[1, 2]), vec![1.0, 2.0]).unwrap();
    // The solver's alpha and sigma are ignored: only the timestep counts.
    let got: ArrayD<f64> = model.predict(&x, NoiseLevel::new(700.0, 0.1, 0.2)).unwrap();
    let want: ArrayD<f64> = gmm2d()
        .predict(&x, NoiseLevel::new(700.0, abar.sqrt(), (1.0 - abar).sqrt()))
        .unwrap();
    assert_eq!(got, want);
    assert!(model.predict(&x, NoiseLevel::new(1000.0, 0.1, 0.2)).is_err());
}

#[test]
fn results_do_not_depend_on_thread_count() {
    let g = random_mixture(8, 4, 2);
    let x = points(2000, 8, 2.0, 4);
    let run = |threads| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| {
                g.at_noise(0.7, 0.7)
                    .unwrap()
                    .predict(x.view(), Parameterization::Epsilon)
                    .unwrap()
            })
    };
    assert_eq!(run(1), run(3));
}

#[test]
fn dimension_64_is_accurate() {
    // Finite differences on a 64-D full-covariance mixture, a few coordinates.
    let g = random_mixture(64, 3, 8);
    let m = g.at_noise(0.9, 0.4).unwrap();
    let x = points(2, 64, 1.0, 1);
    let s = m.score(x.view()).unwrap();
    let h = 1e-5;
    for &j in &[0, 31, 63] {
        let (mut xp, mut xm) = (x.clone(), x.clone());
        xp[[0, j]] += h;
        xm[[0, j]] -= h;
        let fd = (m.log_density(xp.view()).unwrap()[0] - m.log_density(xm.view()).unwrap()[0]) / (2.0 * h);
        assert!(
            (fd - s[[0, j]]).abs() < 1e-5 * (1.0 + fd.abs()),
            "{fd} vs {}",
            s[[0, j]]
        );
    }
}

#[test]
fn bad_specs_and_inputs_are_typed_errors() {
    assert!(matches!(
        GmmSpec::from_json_str("{\"weights\": [1.0], ", "x"),
        Err(TestbedError::Json { .. })
    ));
    assert!(matches!(
        GmmSpec::from_file("/nonexistent/spec.json"),
        Err(TestbedError::Io { .. })
    ));
    let eye = || vec![vec![1.0, 0.0], vec![0.0, 1.0]];
    // Mismatched counts and dimensions.
    assert!(matches!(
        GaussianMixture::new(vec![0.5, 0.5], vec![vec![0.0, 0.0]], vec![eye()]),
        Err(TestbedError::InvalidSpec(_))
    ));
    assert!(matches!(
        GaussianMixture::new(vec![1.0], vec![vec![0.0, 0.0, 0.0]], vec![eye()]),
        Err(TestbedError::InvalidSpec(_))
    ));
    // Non-SPD and asymmetric covariances.
    assert!(matches!(
        GaussianMixture::new(
            vec![1.0],
            vec![vec![0.0, 0.0]],
            vec![vec![vec![1.0, 2.0], vec![2.0, 1.0]]]
        ),
        Err(TestbedError::NotPositiveDefinite { component: 0, .. })
    ));
    assert!(matches!(
        GaussianMixture::new(
            vec![1.0],
            vec![vec![0.0, 0.0]],
            vec![vec![vec![1.0, 0.5], vec![0.0, 1.0]]]
        ),
        Err(TestbedError::NotPositiveDefinite { .. })
    ));
    // Weights.
    assert!(GaussianMixture::new(vec![0.7], vec![vec![0.0, 0.0]], vec![eye()]).is_err());
    assert!(GaussianMixture::new(vec![-1.0, 2.0], vec![vec![0.0, 0.0]; 2], vec![eye(), eye()]).is_err());
    // Declared dim disagrees.
    let mut spec = spec();
    spec.dim = Some(3);
    assert!(GaussianMixture::from_spec(&spec).is_err());
    // Noise levels and input shapes.
    let g = gmm2d();
    assert!(g.at_noise(f64::NAN, 1.0).is_err());
    assert!(g.at_noise(0.0, 0.0).is_err());
    assert!(g.at_noise(1.0, -0.1).is_err());
    let m = g.at_noise(0.5, 0.5).unwrap();
    assert!(matches!(
        m.score(Array2::zeros((3, 5)).view()),
        Err(TestbedError::ShapeMismatch { .. })
    ));
    let model = GmmDenoiser::epsilon(g);
    let bad = ArrayD::<f64>::zeros(IxDyn(&[4, 3]));
    assert!(model.predict(&bad, NoiseLevel::new(0.0, 0.5, 0.5)).is_err());
    let flat = ArrayD::<f64>::zeros(IxDyn(&[2]));
    assert!(model.predict(&flat, NoiseLevel::new(0.0, 0.5, 0.5)).is_err());
}

#[test]
fn spec_round_trips_through_json() {
    let g = gmm2d();
    let text = serde_json::to_string(&g.to_spec()).unwrap();
    let back = GaussianMixture::from_spec(&GmmSpec::from_json_str(&text, "round trip").unwrap()).unwrap();
    assert_eq!(back, g);
}
