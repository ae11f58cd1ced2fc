//! CG, soft-thresholding, D_z and the TV-z ADMM against closed forms (no prior involved).

use diffusion_core::Rng;
use diffusion_medical3d::admm::*;
use ndarray::Array3;

fn random(shape: (usize, usize, usize), seed: u64) -> Array3<f64> {
    let mut rng = Rng::new(seed);
    let mut v = vec![0.0; shape.0 * shape.1 * shape.2];
    rng.fill_normal(&mut v);
    Array3::from_shape_vec(shape, v).unwrap()
}

#[test]
fn cg_solves_a_known_spd_system() {
    // M = B^T B + I for a random 12x12 B, acting on 12-voxel volumes; b = M x*.
    let n = 12;
    let b_mat = random((n, n, 1), 1);
    let m = |v: &Array3<f64>| -> diffusion_medical3d::Result<Array3<f64>> {
        let flat: Vec<f64> = v.iter().copied().collect();
        let bx: Vec<f64> = (0..n)
            .map(|i| (0..n).map(|j| b_mat[[i, j, 0]] * flat[j]).sum())
            .collect();
        let out: Vec<f64> = (0..n)
            .map(|j| (0..n).map(|i| b_mat[[i, j, 0]] * bx[i]).sum::<f64>() + flat[j])
            .collect();
        Ok(Array3::from_shape_vec((2, 3, 2), out).unwrap())
    };
    let x_star = random((2, 3, 2), 2);
    let b = m(&x_star).unwrap();
    // In exact arithmetic CG converges in at most n iterations.
    let (x, it) = conjugate_gradient(&m, &b, Array3::zeros((2, 3, 2)), 3 * n, 1e-13).unwrap();
    assert!(it <= 2 * n, "{it}");
    let err = x
        .iter()
        .zip(x_star.iter())
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(err < 1e-9, "{err}");
    // Diagonal system: one iteration from zero with equal eigenvalues.
    let two = |v: &Array3<f64>| -> diffusion_medical3d::Result<Array3<f64>> { Ok(v * 2.0) };
    let (x, it) = conjugate_gradient(&two, &b, Array3::zeros((2, 3, 2)), 10, 1e-14).unwrap();
    assert_eq!(it, 1);
    assert!(x.iter().zip(b.iter()).all(|(x, b)| (x - b / 2.0).abs() < 1e-14));
    assert!(conjugate_gradient(&two, &b, Array3::zeros((1, 1, 1)), 3, 0.0).is_err());
}

#[test]
fn soft_threshold_closed_form() {
    assert_eq!(soft_threshold(3.0, 1.0), 2.0);
    assert_eq!(soft_threshold(-3.0, 1.0), -2.0);
    assert_eq!(soft_threshold(0.5, 1.0), 0.0);
    assert_eq!(soft_threshold(-0.5, 1.0), 0.0);
    assert_eq!(soft_threshold(2.0, 0.0), 2.0);
}

#[test]
fn dz_adjoint_dot_product_and_values() {
    let x = random((3, 4, 5), 3);
    let y = random((3, 4, 4), 4);
    let l = dot(&dz(&x), &y);
    let r = dot(&x, &dz_t(&y));
    assert!((l - r).abs() < 1e-12 * l.abs().max(1.0), "{l} vs {r}");
    let ramp = Array3::from_shape_fn((1, 1, 4), |(_, _, k)| (k * k) as f64);
    assert_eq!(dz(&ramp).iter().copied().collect::<Vec<_>>(), vec![1.0, 3.0, 5.0]);
}

#[test]
fn tv_z_prox_keeps_constants_and_matches_the_two_level_closed_form() {
    let c = Array3::from_elem((2, 2, 6), 0.7);
    let out = tv_z_denoise(&c, 0.3, 1.0, 50).unwrap();
    assert!(out.iter().all(|v| (v - 0.7).abs() < 1e-12));
    // A step of height h between two halves of m voxels: the prox of lambda TV moves each
    // half towards the other by lambda / m (while lambda / m < h / 2).
    let (m, h, lambda) = (4usize, 1.0, 0.8);
    let y = Array3::from_shape_fn((1, 3, 2 * m), |(_, j, k)| j as f64 + if k < m { 0.0 } else { h });
    let out = tv_z_denoise(&y, lambda, 2.0, 400).unwrap();
    for j in 0..3 {
        for k in 0..2 * m {
            let want = j as f64
                + if k < m {
                    lambda / m as f64
                } else {
                    h - lambda / m as f64
                };
            assert!(
                (out[[0, j, k]] - want).abs() < 1e-6,
                "{j} {k}: {} vs {want}",
                out[[0, j, k]]
            );
        }
    }
    // Beyond lambda / m = h / 2 the signal is flattened to its mean.
    let out = tv_z_denoise(&y, 3.0, 2.0, 400).unwrap();
    for ((_, j, _), o) in out.indexed_iter() {
        assert!((o - (j as f64 + h / 2.0)).abs() < 1e-6, "{o}");
    }
}

#[test]
fn admm_state_persists_and_rho_zero_is_plain_cg() {
    let y = random((2, 2, 5), 5);
    let identity = |v: &Array3<f64>| -> diffusion_medical3d::Result<Array3<f64>> { Ok(v.clone()) };
    let mut a = AdmmTvZ::new(1.0, 0.5, 10).unwrap();
    assert!(a.state().is_none());
    let x1 = a.step(&identity, &y, &y).unwrap();
    let (z1, w1) = a.state().map(|(z, w)| (z.clone(), w.clone())).unwrap();
    // The first z is the soft-thresholded D_z x of the first iterate, w the residual.
    let d = dz(&x1);
    for ((z, w), d) in z1.iter().zip(w1.iter()).zip(d.iter()) {
        assert!((z - soft_threshold(*d, 0.5)).abs() < 1e-12);
        assert!((w - (d - z)).abs() < 1e-12);
    }
    let _ = a.step(&identity, &y, &x1).unwrap();
    assert_ne!(a.state().unwrap().0, &z1, "state moves between calls");
    let mut plain = AdmmTvZ::new(0.0, 0.5, 10).unwrap();
    let x = plain.step(&identity, &y, &Array3::zeros((2, 2, 5))).unwrap();
    assert!(x.iter().zip(y.iter()).all(|(a, b)| (a - b).abs() < 1e-12));
    assert!(AdmmTvZ::new(-1.0, 0.0, 1).is_err());
    assert!(a.step(&identity, &y, &Array3::zeros((2, 2, 4))).is_err());
}

#[test]
fn proximal_term_pulls_towards_the_start_by_its_closed_form() {
    // A = I, constant b and x_init: D_z x = 0 at the optimum, so the x-update is
    // argmin 1/2 |x - b|^2 + mu/2 |x - x_init|^2 = (b + mu x_init) / (1 + mu).
    let identity = |v: &Array3<f64>| -> diffusion_medical3d::Result<Array3<f64>> { Ok(v.clone()) };
    let b = Array3::from_elem((2, 2, 4), 1.0);
    let start = Array3::from_elem((2, 2, 4), -2.0);
    let mut a = AdmmTvZ::new(0.5, 0.1, 20).unwrap();
    a.mu = 0.25;
    let x = a.step(&identity, &b, &start).unwrap();
    let want = (1.0 + 0.25 * -2.0) / 1.25;
    assert!(x.iter().all(|v| (v - want).abs() < 1e-10), "{x}");
}
