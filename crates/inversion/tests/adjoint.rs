//! AdjointDPM against two independent oracles, in f64: central finite differences of
//! the discrete sampler, and exact reverse-mode differentiation of the same sampler
//! through its stored trajectory (`unrolled_gradients`). The adjoint solves the
//! continuous adjoint ODE, so it meets the unrolled gradient up to the solver's O(h^2)
//! error: the test checks both the 1e-4 agreement and the second-order convergence.

mod common;

use common::{gmm3, loss, loss_grad, normal_rows, vec_rel, vp_grid};
use diffusion_inversion::adjoint::{Gradients, adjoint, sample, unrolled_gradients};
use diffusion_inversion::{Grid, grid::relative_rms};
use ndarray::ArrayD;

fn adjoint_grads(grid: &Grid, x_t: &ArrayD<f64>) -> Gradients<ArrayD<f64>> {
    let model = gmm3();
    let x0 = sample(&model, grid, x_t).unwrap();
    adjoint(&model, grid, &x0, &loss_grad(&x0)).unwrap()
}

#[test]
fn unrolled_gradients_match_finite_differences() {
    let mut model = gmm3();
    let grid = vp_grid(12);
    let x_t = normal_rows(3, 21);
    let (x0, g) = unrolled_gradients(&model, &grid, &x_t, |x| Ok(loss_grad(x))).unwrap();
    assert!(relative_rms(&x0, &sample(&model, &grid, &x_t).unwrap()).unwrap() < 1e-15);
    let h = 1e-5;
    for i in 0..x_t.len() {
        let (mut p, mut m) = (x_t.clone(), x_t.clone());
        p.as_slice_mut().unwrap()[i] += h;
        m.as_slice_mut().unwrap()[i] -= h;
        let fd = (loss(&sample(&model, &grid, &p).unwrap()) - loss(&sample(&model, &grid, &m).unwrap()))
            / (2.0 * h);
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
        let lp = loss(&sample(&model, &grid, &x_t).unwrap());
        pp[j] -= 2.0 * h;
        model.set_params(&pp).unwrap();
        let lm = loss(&sample(&model, &grid, &x_t).unwrap());
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
fn adjoint_matches_unrolled_backprop_and_converges_at_second_order() {
    let model = gmm3();
    let x_t = normal_rows(4, 33);
    println!("steps | rel err dL/dx_T | rel err dL/dlogits (conditioning) | rel err dL/dmeans (weights)");
    let mut prev: Option<(f64, f64)> = None;
    for steps in [100, 200, 400, 800, 1600] {
        let grid = vp_grid(steps);
        let (_, reference) = unrolled_gradients(&model, &grid, &x_t, |x| Ok(loss_grad(x))).unwrap();
        let got = adjoint_grads(&grid, &x_t);
        let ex = relative_rms(&got.x_start, &reference.x_start).unwrap();
        let k = model.n_components();
        let ec = vec_rel(&got.params[..k], &reference.params[..k]);
        let ew = vec_rel(&got.params[k..], &reference.params[k..]);
        println!("{steps:>5} | {ex:>15.3e} | {ec:>33.3e} | {ew:>27.3e}");
        if let Some((px, pw)) = prev {
            // Doubling the steps divides an O(h^2) error by about 4.
            assert!(
                ex < px / 3.0 && ew < pw / 3.0,
                "not second order: {px:e} -> {ex:e}, {pw:e} -> {ew:e}"
            );
        }
        prev = Some((ex, ew));
        if steps >= 1600 {
            assert!(
                ex < 1e-4 && ec < 1e-4 && ew < 1e-4,
                "{steps} steps: {ex:e} {ec:e} {ew:e}"
            );
        }
    }
}
