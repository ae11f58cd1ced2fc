//! Class editing on the analytic mixture (class = component): invert draws of class A
//! under class A, regenerate under class B, and compare the edited sample's whitened
//! coordinates relative to B with the exact answer.
//!
//! Oracle: for Gaussian data N(mu, diag(s^2)) the probability-flow ODE keeps the
//! whitened noisy coordinate `(x_t - alpha_t mu) / sqrt(alpha_t^2 s^2 + sigma_t^2)`
//! constant, so the exact edit maps whitened coordinate `w_A` to
//! `w_B = (alpha_T (mu_A - mu_B) + sqrt(alpha_T^2 s_A^2 + sigma_T^2) w_A) / sqrt(alpha_T^2 s_B^2 + sigma_T^2)`.

mod common;

use common::{gmm3, rows, vp_grid};
use diffusion_core::Rng;
use diffusion_inversion::editing::{EditMethod, edit};
use diffusion_inversion::{Bdia, BdiaBase, Edict};

fn corr(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let cov: f64 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = a.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = b.iter().map(|y| (y - mb).powi(2)).sum();
    cov / (va * vb).sqrt()
}

#[test]
fn class_edit_keeps_the_within_class_position() {
    let g = gmm3();
    let grid = vp_grid(50);
    let top = grid.levels()[0];
    let (from, n) = (0usize, 200);
    let x = g.sample_class(from, n, &mut Rng::new(4)).unwrap();
    let w_a = g.whiten(from, &x);
    let xs = rows(x, 2);
    println!("class {from} -> B, 50 steps: corr(w_A, w_B) | RMS(w_B - exact) | RMS(w_B - w_A)");
    for to in [1usize, 2] {
        // The exact edit, per coordinate.
        let exact: Vec<f64> = w_a
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let d = i % 2;
                let (ma, mb) = (g.mean(from)[d], g.mean(to)[d]);
                let (sa, sb) = (g.std(from)[d], g.std(to)[d]);
                let ca = (top.alpha * top.alpha * sa * sa + top.sigma * top.sigma).sqrt();
                let cb = (top.alpha * top.alpha * sb * sb + top.sigma * top.sigma).sqrt();
                (top.alpha * (ma - mb) + ca * w) / cb
            })
            .collect();
        for (name, method, tol) in [
            ("DDIM", EditMethod::Ddim, 0.1),
            (
                "BDIA",
                EditMethod::Bdia(Bdia::new(BdiaBase::Ddim, 1.0).unwrap()),
                0.02,
            ),
            ("EDICT", EditMethod::Edict(Edict::new(0.93).unwrap()), 0.25),
        ] {
            let out = edit(&g, &grid, &xs, &from, &to, method).unwrap();
            let w_b = g.whiten(to, out.as_slice().unwrap());
            let rms = |a: &[f64], b: &[f64]| {
                (a.iter().zip(b).map(|(p, q)| (p - q).powi(2)).sum::<f64>() / a.len() as f64).sqrt()
            };
            let (c, e, shift) = (corr(&w_a, &w_b), rms(&w_b, &exact), rms(&w_b, &w_a));
            println!("  {name:>5} -> class {to}: {c:.5} | {e:.2e} | {shift:.4}");
            assert!(e < tol, "{name} to {to}: {e}");
            assert!(c > 0.95, "{name} to {to}: correlation {c}");
        }
    }
}
