//! The exact (discrete) adjoint of BDIA-DDIM sampling against two independent oracles in
//! f64: central finite differences of `Bdia::sample`, and reverse-mode differentiation of
//! the sampler written out in pair form with its trajectory stored.

mod common;

use common::{gmm3, loss, loss_grad, normal_rows, vec_rel, vp_grid};
use diffusion_inversion::adjoint::{bdia_adjoint, bdia_unrolled_gradients};
use diffusion_inversion::{Bdia, BdiaBase, InversionError, grid::relative_rms};
use ndarray::ArrayD;

#[test]
fn unrolled_bdia_gradients_match_finite_differences() {
    let mut model = gmm3();
    let grid = vp_grid(12);
    let b = Bdia::new(BdiaBase::Ddim, 0.9).unwrap();
    let x_t = normal_rows(3, 21);
    let run = |m: &diffusion_inversion::gmm::DiagonalGmm, x: &ArrayD<f64>| {
        loss(&b.sample(m, &grid, x).unwrap().current)
    };
    let (x0, g) = bdia_unrolled_gradients(&model, &b, &grid, &x_t, |x| Ok(loss_grad(x))).unwrap();
    let sampled = b.sample(&model, &grid, &x_t).unwrap().current;
    assert!(relative_rms(&x0, &sampled).unwrap() < 1e-13);
    let h = 1e-5;
    for i in 0..x_t.len() {
        let (mut p, mut m) = (x_t.clone(), x_t.clone());
        p.as_slice_mut().unwrap()[i] += h;
        m.as_slice_mut().unwrap()[i] -= h;
        let fd = (run(&model, &p) - run(&model, &m)) / (2.0 * h);
        let got = g.x_start.as_slice().unwrap()[i];
        assert!(
            (got - fd).abs() < 1e-7 * (1.0 + fd.abs()),
            "x_T[{i}]: {got} vs {fd}"
        );
    }
    let p0 = model.params();
    for j in 0..p0.len() {
        let mut pp = p0.clone();
        pp[j] += h;
        model.set_params(&pp).unwrap();
        let lp = run(&model, &x_t);
        pp[j] -= 2.0 * h;
        model.set_params(&pp).unwrap();
        let lm = run(&model, &x_t);
        model.set_params(&p0).unwrap();
        let fd = (lp - lm) / (2.0 * h);
        assert!(
            (g.params[j] - fd).abs() < 1e-7 * (1.0 + fd.abs()),
            "param {j}: {} vs {fd}",
            g.params[j]
        );
    }
}

#[test]
fn exact_adjoint_matches_unrolled_backprop_at_any_step_count() {
    let model = gmm3();
    let x_t = normal_rows(4, 33);
    println!("steps | gamma | rel err dL/dx_T | rel err dL/dlogits | rel err dL/dmeans");
    for gamma in [1.0, 0.9] {
        let b = Bdia::new(BdiaBase::Ddim, gamma).unwrap();
        for steps in [10, 25, 100] {
            let grid = vp_grid(steps);
            let (_, reference) =
                bdia_unrolled_gradients(&model, &b, &grid, &x_t, |x| Ok(loss_grad(x))).unwrap();
            let end = b.sample(&model, &grid, &x_t).unwrap();
            let got = bdia_adjoint(&model, &b, &grid, &end, &loss_grad(&end.current)).unwrap();
            let ex = relative_rms(&got.x_start, &reference.x_start).unwrap();
            let k = model.n_components();
            let ec = vec_rel(&got.params[..k], &reference.params[..k]);
            let ew = vec_rel(&got.params[k..], &reference.params[k..]);
            println!("{steps:>5} | {gamma:>5} | {ex:>15.3e} | {ec:>18.3e} | {ew:>17.3e}");
            // The issue asks for 1e-4; the discrete adjoint is exact up to rounding.
            assert!(
                ex < 1e-10 && ec < 1e-10 && ew < 1e-10,
                "{steps} steps: {ex:e} {ec:e} {ew:e}"
            );
        }
    }
}

#[test]
fn exact_adjoint_rejects_what_it_does_not_support() {
    let model = gmm3();
    let grid = vp_grid(5);
    let x_t = normal_rows(2, 1);
    let b = Bdia::new(BdiaBase::Ddim, 1.0).unwrap();
    let mut end = b.sample(&model, &grid, &x_t).unwrap();
    let edm = Bdia::new(BdiaBase::EdmHeun, 1.0).unwrap();
    assert!(matches!(
        bdia_adjoint(&model, &edm, &grid, &end, &end.current),
        Err(InversionError::Unsupported { .. })
    ));
    end.index = 3;
    assert!(matches!(
        bdia_adjoint(&model, &b, &grid, &end, &end.current),
        Err(InversionError::GridMismatch { .. })
    ));
}
