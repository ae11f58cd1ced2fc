//! Shared test fixtures: the gmm2d problem, its schedules and the shared reference files.
#![allow(dead_code)]

use diffusion_schedules::InterpolatedVp;
use diffusion_testbed::{GaussianMixture, GmmSpec, reference::GmmReference};
use ndarray::{Array2, ArrayD, IxDyn};

/// The 2-D, 8-component mixture of /work/shared/reference/gmm (a copy lives in tests/data).
pub fn spec() -> GmmSpec {
    GmmSpec::from_file(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/gmm2d_spec.json")).unwrap()
}

pub fn mixture() -> GaussianMixture {
    GaussianMixture::from_spec(&spec()).unwrap()
}

/// DPM-Solver's continuous view of the named diffusers table (`scaled_linear`, `linear`).
pub fn schedule(name: &str) -> InterpolatedVp {
    let table: Vec<f32> = spec().schedules[name]
        .alphas_cumprod
        .iter()
        .map(|&v| v as f32)
        .collect();
    InterpolatedVp::new(&table)
}

/// The shared reference folder, or `None` with a printed reason.
pub fn shared() -> Option<GmmReference> {
    let found = GmmReference::locate();
    if found.is_none() {
        eprintln!("SKIP: /work/shared/reference/gmm not found; shared-reference checks skipped");
    }
    found
}

pub fn to_dyn(a: &Array2<f64>) -> ArrayD<f64> {
    a.clone().into_dyn()
}

pub fn to_2d(a: &ArrayD<f64>) -> Array2<f64> {
    let d = a.shape()[1..].iter().product();
    Array2::from_shape_vec((a.shape()[0], d), a.iter().copied().collect()).unwrap()
}

pub fn rmse(a: &ArrayD<f64>, b: &ArrayD<f64>) -> f64 {
    assert_eq!(a.shape(), b.shape());
    let n = a.len() as f64;
    (a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum::<f64>() / n).sqrt()
}

pub fn max_abs(a: &ArrayD<f64>, b: &ArrayD<f64>) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

/// `n` standard-normal rows of dimension `d` from an explicit seed.
pub fn normals(n: usize, d: usize, seed: u64) -> ArrayD<f64> {
    let mut v = vec![0.0; n * d];
    diffusion_core::Rng::new(seed).fill_normal(&mut v);
    ArrayD::from_shape_vec(IxDyn(&[n, d]), v).unwrap()
}

use diffusion_continuous::{Dopri5Options, Evaluator, ModelTime, ProbabilityFlow};

/// The papers' end points on a 1000-step table: t = 1 (step 999) to t = 1e-3 (step 0).
pub const T_START: f64 = 1.0;
pub const T_END: f64 = 1e-3;

/// The gmm2d initial noise (shared x_T when present, else a seeded draw of the same size).
pub fn x_t() -> ArrayD<f64> {
    match GmmReference::locate() {
        Some(r) => to_dyn(&r.x_t().unwrap()),
        None => normals(512, 2, 2024),
    }
}

/// The exact ODE solution of `x` from T_START to `t_end` on `sched` (DoPri5, 1e-10).
pub fn ode_reference(sched: &InterpolatedVp, x: &ArrayD<f64>, t_ends: &[f64]) -> Vec<ArrayD<f64>> {
    let gmm = mixture();
    let flow = ProbabilityFlow::new(Evaluator::new(&gmm, sched, ModelTime::discrete(1000)));
    flow.solve(x, T_START, t_ends, &Dopri5Options::tolerance(1e-10))
        .unwrap()
        .0
}
