//! Shared by the GPU test files: the device or a skip, random weights shared by an f32 and an
//! f64 CPU model (the oracle), and the error measure.
#![allow(dead_code)] // each test file uses a part

use std::collections::HashMap;
use std::sync::Arc;

use diffusion_core::{Rng, Tensor};
use diffusion_cuda::{CudaTensor, Gpu, gpu_required};
use diffusion_nn::{Float, Network, Parameters};
use ndarray::{ArrayD, IxDyn};

type T32 = CudaTensor<f32>;

/// The first GPU, or `None` after printing why the test is skipped (a failure instead when
/// `DIFFUSION_REQUIRE_GPU` is set).
pub fn gpu_or_skip(test: &str) -> Option<Arc<Gpu>> {
    match Gpu::new(0) {
        Ok(gpu) => Some(gpu),
        Err(e) => {
            assert!(
                !gpu_required(),
                "{test}: DIFFUSION_REQUIRE_GPU is set but no GPU is usable: {e}"
            );
            eprintln!("SKIP {test}: no usable GPU ({e})");
            None
        }
    }
}

/// Normal values with standard deviation `scale`, rounded to f32 (so both sides see the same).
pub fn normals(rng: &mut Rng, n: usize, scale: f64) -> Vec<f64> {
    let mut v = vec![0.0; n];
    rng.fill_normal(&mut v);
    v.iter().map(|z| f64::from((scale * z) as f32)).collect()
}

/// The same random weights in every tensor of an f32 and an f64 model (`N(0, 1/fan_in)`:
/// zero-initialised layers such as adaLN-Zero's, or GroupNorm's ones, would hide paths).
pub fn same_random_weights<L: Parameters<f32>, H: Parameters<f64>>(
    mut lo: L,
    mut hi: H,
    rng: &mut Rng,
) -> (L, H) {
    let mut values: HashMap<String, Vec<f64>> = HashMap::new();
    lo.visit_mut(&mut |name, p| {
        let fan_in = p
            .value
            .shape()
            .get(1..)
            .map_or(1, |s| s.iter().product::<usize>())
            .max(1);
        let v = normals(rng, p.value.len(), 1.0 / (fan_in as f64).sqrt());
        for (dst, &x) in p.value.iter_mut().zip(&v) {
            *dst = x as f32;
        }
        values.insert(name.to_string(), v);
    });
    hi.visit_mut(&mut |name, p| {
        for (dst, &x) in p.value.iter_mut().zip(&values[name]) {
            *dst = x;
        }
    });
    (lo, hi)
}

/// max |a - b| / max |b|.
pub fn rel(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "rel: lengths differ");
    let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-300);
    a.iter().zip(b).fold(0.0f64, |m, (x, y)| m.max((x - y).abs())) / scale
}

/// One training step's results on the CPU: output, input gradient, parameter gradients
/// (name, shape, values) in visit order.
pub struct CpuStep {
    pub y: Vec<f64>,
    pub dx: Vec<f64>,
    pub grads: Vec<(String, Vec<usize>, Vec<f64>)>,
}

/// `Network::forward`, then `backward` for the loss `mean((y - target)^2)`, i.e.
/// `dy = 2 (y - target) / n`.
pub fn cpu_step<A: Float, N: Network<A> + Parameters<A>>(
    model: &mut N,
    x: &[f64],
    shape: &[usize],
    t: &[f64],
    labels: Option<&[usize]>,
    target: &[f64],
) -> CpuStep {
    let xa = ArrayD::from_shape_vec(IxDyn(shape), x.iter().map(|&v| A::of_f64(v)).collect()).unwrap();
    let ta: Vec<A> = t.iter().map(|&v| A::of_f64(v)).collect();
    let (y, cache) = model.forward(&xa, &ta, labels).unwrap();
    let n = y.len() as f64;
    let dy: Vec<A> = y
        .iter()
        .zip(target)
        .map(|(&y, &tg)| A::of_f64(2.0 * (y.as_f64() - tg) / n))
        .collect();
    let dy = ArrayD::from_shape_vec(y.raw_dim(), dy).unwrap();
    model.zero_grad();
    let dx = model.backward(&cache, &dy).unwrap();
    let mut grads = Vec::new();
    model.visit(&mut |name, p| {
        grads.push((
            name.to_string(),
            p.grad.shape().to_vec(),
            p.grad.iter().map(|v| v.as_f64()).collect(),
        ))
    });
    CpuStep {
        y: y.iter().map(|v| v.as_f64()).collect(),
        dx: dx.iter().map(|v| v.as_f64()).collect(),
        grads,
    }
}

/// A GPU training step's output, input gradient and named parameter gradients against the
/// f64 CPU model's: prints one line per tensor (GPU error, the f32 CPU model's error, the
/// gradient's scale), then asserts names, order, shapes and every error below `tol`.
pub fn compare_step(
    title: &str,
    tol: f64,
    y: &T32,
    dx: &T32,
    params: &[(String, T32)],
    want: &CpuStep,
    cpu32: &CpuStep,
) {
    eprintln!("{title}: relative errors vs the f64 CPU model");
    eprintln!(
        "  {:<36} {:>18} {:>9} {:>9} {:>9}",
        "tensor", "shape", "GPU f32", "CPU f32", "max |g|"
    );
    let mut failures = Vec::new();
    let mut report = |name: &str, shape: &[usize], got: &[f64], want: &[f64], cpu32: &[f64]| {
        let (e_gpu, e_cpu) = (rel(got, want), rel(cpu32, want));
        let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let ok = e_gpu < tol && got.iter().all(|v| v.is_finite());
        let flag = if ok { "" } else { "  <-- FAIL" };
        eprintln!(
            "  {name:<36} {:>18} {e_gpu:>9.2e} {e_cpu:>9.2e} {scale:>9.2e}{flag}",
            format!("{shape:?}")
        );
        if !ok {
            failures.push(format!("{name}: {e_gpu:e} (CPU f32 {e_cpu:e})"));
        }
    };
    report(
        "output y",
        y.shape(),
        &y.to_host_f64().unwrap(),
        &want.y,
        &cpu32.y,
    );
    report(
        "input gradient dx",
        dx.shape(),
        &dx.to_host_f64().unwrap(),
        &want.dx,
        &cpu32.dx,
    );
    let names: Vec<&str> = params.iter().map(|(n, _)| n.as_str()).collect();
    let cpu_names: Vec<&str> = want.grads.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(
        names, cpu_names,
        "gradient names/order differ from the CPU model's Parameters::visit"
    );
    for ((name, g), ((_, shape, w), (_, _, c))) in params.iter().zip(want.grads.iter().zip(&cpu32.grads)) {
        assert_eq!(g.shape(), shape.as_slice(), "{name}: gradient shape");
        report(name, shape, &g.to_host_f64().unwrap(), w, c);
    }
    assert!(
        failures.is_empty(),
        "{} tensors differ from the f64 CPU model by {tol:e} or more: {failures:#?}",
        failures.len()
    );
}

/// A CPU model's parameters (name, shape, values) in visit order.
pub fn cpu_parameters<N: Parameters<f32>>(model: &N) -> Vec<(String, Vec<usize>, Vec<f64>)> {
    let mut out = Vec::new();
    model.visit(&mut |name, p| {
        out.push((
            name.to_string(),
            p.value.shape().to_vec(),
            p.value.iter().map(|&v| f64::from(v)).collect(),
        ))
    });
    out
}

/// A GPU model's parameter list equals `want` times `factor` exactly: names, order, shapes,
/// values.
pub fn assert_parameters(params: &[(String, T32)], want: &[(String, Vec<usize>, Vec<f64>)], factor: f64) {
    assert_eq!(params.len(), want.len(), "parameter count");
    for ((name, t), (wn, ws, wv)) in params.iter().zip(want) {
        assert_eq!(name, wn, "parameter order");
        assert_eq!(t.shape(), ws.as_slice(), "{name}: shape");
        let got = t.to_host_f64().unwrap();
        let scaled: Vec<f64> = wv.iter().map(|v| v * factor).collect();
        assert!(got == scaled, "{name}: values differ (factor {factor})");
    }
}
