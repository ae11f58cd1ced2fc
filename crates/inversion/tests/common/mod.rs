//! Shared test problems.
#![allow(dead_code)]

use diffusion_core::{NoiseSchedule, Rng};
use diffusion_inversion::{Grid, gmm::DiagonalGmm};
use diffusion_schedules::{BetaSchedule, DiscreteSchedule, DiscreteScheduleConfig};
use ndarray::{ArrayD, IxDyn};

/// A 2-D, three-class mixture with unequal, anisotropic spreads.
pub fn gmm3() -> DiagonalGmm {
    DiagonalGmm::new(
        &[0.5, 0.3, 0.2],
        vec![vec![-1.5, 0.5], vec![1.0, 1.2], vec![0.3, -1.4]],
        vec![vec![0.35, 0.2], vec![0.25, 0.4], vec![0.3, 0.3]],
    )
    .unwrap()
}

/// Stable Diffusion's scaled-linear table.
pub fn sd_schedule() -> DiscreteSchedule {
    DiscreteSchedule::from_config(&DiscreteScheduleConfig {
        beta_schedule: BetaSchedule::ScaledLinear,
        beta_start: 0.00085,
        beta_end: 0.012,
        ..Default::default()
    })
    .unwrap()
}

/// `steps + 1` levels uniform in log-SNR over the table's continuous view, from
/// t = 1 (noise) to the first training step.
pub fn vp_grid(steps: usize) -> Grid {
    let s = sd_schedule().continuous();
    let (t0, t1) = s.t_range();
    Grid::uniform_lambda(&s, t1, t0, steps).unwrap()
}

/// Batch of `n` rows of standard normals, shape [n, 2].
pub fn normal_rows(n: usize, seed: u64) -> ArrayD<f64> {
    let mut v = vec![0.0; n * 2];
    Rng::new(seed).fill_normal(&mut v);
    ArrayD::from_shape_vec(IxDyn(&[n, 2]), v).unwrap()
}

pub fn rows(data: Vec<f64>, dim: usize) -> ArrayD<f64> {
    let n = data.len() / dim;
    ArrayD::from_shape_vec(IxDyn(&[n, dim]), data).unwrap()
}

/// `L(x) = sum w_i x_i + 0.5 sum x_i^2`: gradient `w + x`.
pub fn weights(like: &ArrayD<f64>) -> ArrayD<f64> {
    ArrayD::from_shape_fn(like.raw_dim(), |i| {
        0.3 + 0.1 * (i[0] as f64) - 0.7 * (i[1] as f64)
    })
}

pub fn loss(x: &ArrayD<f64>) -> f64 {
    let w = weights(x);
    x.iter().zip(w.iter()).map(|(v, w)| w * v + 0.5 * v * v).sum()
}

pub fn loss_grad(x: &ArrayD<f64>) -> ArrayD<f64> {
    weights(x) + x
}

pub fn vec_rel(a: &[f64], b: &[f64]) -> f64 {
    let d: f64 = a
        .iter()
        .zip(b)
        .map(|(p, q)| (p - q) * (p - q))
        .sum::<f64>()
        .sqrt();
    d / b.iter().map(|q| q * q).sum::<f64>().sqrt()
}
