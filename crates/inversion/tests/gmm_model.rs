//! The differentiable mixture against independent oracles: the testbed's exact mixture
//! (a separate implementation with full-covariance Cholesky algebra) for the epsilon,
//! central finite differences in f64 for every vector-Jacobian product.

mod common;

use common::{gmm3, normal_rows};
use diffusion_core::{ConditionalDenoiser, Denoiser, NoiseLevel, model::DifferentiableDenoiser};
use diffusion_testbed::{GaussianMixture, GmmDenoiser};
use ndarray::ArrayD;

fn testbed_copy(g: &diffusion_inversion::gmm::DiagonalGmm) -> GaussianMixture {
    let k = g.n_components();
    let means = (0..k).map(|i| g.mean(i).to_vec()).collect();
    let covs = (0..k)
        .map(|i| {
            let s = g.std(i);
            vec![vec![s[0] * s[0], 0.0], vec![0.0, s[1] * s[1]]]
        })
        .collect();
    GaussianMixture::new(g.weights(), means, covs).unwrap()
}

const LEVELS: [(f64, f64); 4] = [(0.999, 0.0447), (0.8, 0.6), (0.3, 0.954), (0.02, 0.9998)];

#[test]
fn epsilon_matches_the_testbed_mixture() {
    let g = gmm3();
    let tb = GmmDenoiser::epsilon(testbed_copy(&g));
    let x = normal_rows(16, 3);
    for (a, s) in LEVELS {
        let l = NoiseLevel::new(0.0, a, s);
        let ours: ArrayD<f64> = g.predict(&x, l).unwrap();
        let theirs: ArrayD<f64> = tb.predict(&x, l).unwrap();
        for (p, q) in ours.iter().zip(theirs.iter()) {
            assert!(
                (p - q).abs() < 1e-11 * (1.0 + q.abs()),
                "{p} vs {q} at ({a}, {s})"
            );
        }
        for k in 0..3 {
            let ours: ArrayD<f64> = g.predict_cond(&x, l, Some(&k)).unwrap();
            let theirs: ArrayD<f64> = tb.predict_cond(&x, l, Some(&k)).unwrap();
            for (p, q) in ours.iter().zip(theirs.iter()) {
                assert!((p - q).abs() < 1e-11 * (1.0 + q.abs()));
            }
        }
    }
}

#[test]
fn vjp_matches_central_finite_differences() {
    let mut g = gmm3();
    let x = normal_rows(5, 7);
    let u = normal_rows(5, 8);
    let dot = |a: &ArrayD<f64>, b: &ArrayD<f64>| a.iter().zip(b.iter()).map(|(p, q)| p * q).sum::<f64>();
    let h = 1e-5;
    for (a, s) in LEVELS {
        let l = NoiseLevel::new(0.0, a, s);
        let v = g.vjp(&x, l, &u).unwrap();
        // d/dx_i of u . eps(x).
        for i in 0..x.len() {
            let (mut xp, mut xm) = (x.clone(), x.clone());
            xp.as_slice_mut().unwrap()[i] += h;
            xm.as_slice_mut().unwrap()[i] -= h;
            let fd =
                (dot(&u, &g.predict(&xp, l).unwrap()) - dot(&u, &g.predict(&xm, l).unwrap())) / (2.0 * h);
            let got = v.x.as_slice().unwrap()[i];
            assert!(
                (got - fd).abs() < 1e-7 * (1.0 + fd.abs()),
                "x[{i}] at ({a},{s}): {got} vs {fd}"
            );
        }
        // d/dtheta_j.
        let p0 = g.params();
        assert_eq!(v.params.len(), p0.len());
        for j in 0..p0.len() {
            let mut pp = p0.clone();
            pp[j] += h;
            g.set_params(&pp).unwrap();
            let fp = dot(&u, &g.predict(&x, l).unwrap());
            pp[j] -= 2.0 * h;
            g.set_params(&pp).unwrap();
            let fm = dot(&u, &g.predict(&x, l).unwrap());
            g.set_params(&p0).unwrap();
            let fd = (fp - fm) / (2.0 * h);
            assert!(
                (v.params[j] - fd).abs() < 1e-7 * (1.0 + fd.abs()),
                "param {j} at ({a},{s}): {} vs {fd}",
                v.params[j]
            );
        }
    }
}

#[test]
fn bad_inputs_are_errors() {
    use diffusion_inversion::gmm::DiagonalGmm;
    assert!(DiagonalGmm::new(&[1.0], vec![vec![0.0]], vec![vec![0.0]]).is_err());
    assert!(DiagonalGmm::new(&[-1.0], vec![vec![0.0]], vec![vec![1.0]]).is_err());
    assert!(DiagonalGmm::new(&[1.0, 1.0], vec![vec![0.0]], vec![vec![1.0]]).is_err());
    let g = gmm3();
    let x = ArrayD::<f64>::zeros(ndarray::IxDyn(&[2, 3]));
    let r: diffusion_core::Result<ArrayD<f64>> = g.predict(&x, NoiseLevel::new(0.0, 0.5, 0.5));
    assert!(r.is_err());
    let x = normal_rows(2, 1);
    let r: diffusion_core::Result<ArrayD<f64>> = g.predict_cond(&x, NoiseLevel::new(0.0, 0.5, 0.5), Some(&7));
    assert!(r.is_err());
}
