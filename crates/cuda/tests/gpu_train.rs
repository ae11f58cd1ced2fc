//! A DiT training step on the GPU against the CPU models of `diffusion-nn` with the same
//! weights: every parameter gradient and the input gradient against the f64 CPU model's
//! backward (the f32 CPU model's error printed beside it: what f32 rounding alone costs),
//! the training forward against inference, the named parameters, the backward building
//! blocks against `diffusion_cuda::oracle`, and AdamW against the CPU formula.
//! Each test skips with a printed message when no GPU is usable.
#![cfg(feature = "cuda")]

mod common;

use common::{
    assert_parameters, compare_step, cpu_parameters, cpu_step, gpu_or_skip, normals, rel, same_random_weights,
};
use std::sync::Arc;

use diffusion_core::Rng;
use diffusion_cuda::grad::{attention_bwd, column_sums, gate_add_bwd};
use diffusion_cuda::layout::{patch_rows, patch_rows_bwd, patchify, unpatchify};
use diffusion_cuda::models::GpuDit;
use diffusion_cuda::ops::attention_with_probs;
use diffusion_cuda::optim::{AdamWConfig, GpuAdamW, adamw_step};
use diffusion_cuda::oracle as cpu;
use diffusion_cuda::{CudaError, CudaTensor, Gpu};
use diffusion_nn::models::{Dit, DitConfig};
use ndarray::{ArrayD, IxDyn};

type T32 = CudaTensor<f32>;

/// Every gradient's relative error (max |gpu - f64| / max |f64|, per tensor) must be below this.
const GRAD_TOL: f64 = 1e-4;

/// The same random weights in every tensor (adaLN-Zero's zeros would hide whole paths) of
/// an f32 and an f64 model.
fn twin_dits(cfg: DitConfig, seed: u64) -> (Dit<f32>, Dit<f64>) {
    let mut rng = Rng::new(seed);
    let lo = Dit::<f32>::new(cfg, &mut rng).unwrap();
    let hi = Dit::<f64>::new(cfg, &mut rng).unwrap();
    same_random_weights(lo, hi, &mut rng)
}

/// Every gradient of a GPU training step against the f64 CPU model; prints one line per
/// tensor (GPU error, the f32 CPU model's error, the gradient's scale), then asserts.
fn check_gradients(gpu: &Arc<Gpu>, cfg: DitConfig, batch: usize, labels: Option<&[usize]>) {
    let (mut lo, mut hi) = twin_dits(cfg, 21);
    let mut rng = Rng::new(22);
    let shape = [batch, cfg.in_ch, cfg.size, cfg.size];
    let len: usize = shape.iter().product();
    let x = normals(&mut rng, len, 1.0);
    let target = normals(&mut rng, len, 1.0);
    let t: Vec<f64> = (0..batch).map(|i| (137 * i % 1000) as f64).collect();
    let t32: Vec<f32> = t.iter().map(|&v| v as f32).collect();
    let model = GpuDit::from_cpu(gpu, &lo).unwrap();
    let want = cpu_step(&mut hi, &x, &shape, &t, labels, &target);
    let cpu32 = cpu_step(&mut lo, &x, &shape, &t, labels, &target);

    let gx = T32::from_f64(gpu, &shape, &x).unwrap();
    let (gy, cache) = model.forward_train(&gx, &t32, labels).unwrap();
    let mut dy = gy.clone();
    let n = len as f64;
    let gtarget = T32::from_f64(gpu, &shape, &target).unwrap();
    dy.try_lincomb(2.0 / n, &[(-2.0 / n, &gtarget)], None).unwrap();
    let grads = model.backward(&cache, &dy).unwrap();

    compare_step(
        &format!("dit {cfg:?} batch {batch} labels {labels:?}"),
        GRAD_TOL,
        &gy,
        &grads.input,
        &grads.params,
        &want,
        &cpu32,
    );
}

#[test]
fn gpu_dit_gradients_match_the_cpu_model() {
    let Some(gpu) = gpu_or_skip("gpu_dit_gradients_match_the_cpu_model") else {
        return;
    };
    let cfg = DitConfig {
        depth: 2,
        ..DitConfig::default()
    };
    check_gradients(&gpu, cfg, 3, None);
    // Class-conditional: the class table's gradient sums the items of a repeated label.
    let classes = DitConfig {
        depth: 1,
        num_classes: 5,
        ..DitConfig::default()
    };
    check_gradients(&gpu, classes, 4, Some(&[1, 3, 1, 0]));
}

#[test]
fn gpu_dit_forward_train_equals_infer() {
    let Some(gpu) = gpu_or_skip("gpu_dit_forward_train_equals_infer") else {
        return;
    };
    let cfg = DitConfig {
        depth: 2,
        ..DitConfig::default()
    };
    let (lo, _) = twin_dits(cfg, 23);
    let model = GpuDit::from_cpu(&gpu, &lo).unwrap();
    let shape = [2, cfg.in_ch, cfg.size, cfg.size];
    let x = normals(&mut Rng::new(24), shape.iter().product(), 1.0);
    let gx = T32::from_f64(&gpu, &shape, &x).unwrap();
    let t = [3.0f32, 999.0];
    let inferred = model.infer(&gx, &t, None).unwrap().to_host_f64().unwrap();
    let (trained, _) = model.forward_train(&gx, &t, None).unwrap();
    let trained = trained.to_host_f64().unwrap();
    let e = rel(&trained, &inferred);
    eprintln!(
        "forward_train vs infer: relative difference {e:.2e} (bitwise equal: {})",
        trained == inferred
    );
    assert!(e <= 1e-6, "forward_train and infer differ by {e:e}");
    // dy of the wrong shape, and a cache from another model, are typed errors.
    let (_, cache) = model.forward_train(&gx, &t, None).unwrap();
    let wrong = T32::zeros(&gpu, &[3, cfg.in_ch, cfg.size, cfg.size]);
    let err = model.backward(&cache, &wrong).unwrap_err();
    assert!(matches!(err, CudaError::ShapeMismatch { .. }), "{err:?}");
    let (deeper, _) = twin_dits(DitConfig::default(), 25);
    let other = GpuDit::from_cpu(&gpu, &deeper).unwrap();
    let dy = T32::zeros(&gpu, &shape);
    let err = other.backward(&cache, &dy).unwrap_err();
    assert!(matches!(err, CudaError::InvalidArgument { .. }), "{err:?}");
}

#[test]
fn gpu_dit_parameters_are_the_cpu_models() {
    let Some(gpu) = gpu_or_skip("gpu_dit_parameters_are_the_cpu_models") else {
        return;
    };
    let cfg = DitConfig {
        depth: 2,
        num_classes: 3,
        ..DitConfig::default()
    };
    let (lo, _) = twin_dits(cfg, 26);
    let mut model = GpuDit::from_cpu(&gpu, &lo).unwrap();
    let want = cpu_parameters(&lo);
    let check = |params: &[(String, T32)], factor: f64| assert_parameters(params, &want, factor);
    let mut params = model.parameters().unwrap();
    check(&params, 1.0);
    // Halving is exact in f32: load halved weights, read them back.
    for (_, p) in &mut params {
        p.try_lincomb(0.5, &[], None).unwrap();
    }
    model.set_parameters(&params).unwrap();
    check(&model.parameters().unwrap(), 0.5);
    // A mismatch is a typed error and changes nothing.
    params.swap(0, 1);
    let err = model.set_parameters(&params).unwrap_err();
    assert!(matches!(err, CudaError::InvalidArgument { .. }), "{err:?}");
    check(&model.parameters().unwrap(), 0.5);
    eprintln!("GpuDit::parameters: {} tensors, exact", want.len());
}

#[test]
fn backward_layouts_invert_their_forward() {
    let Some(gpu) = gpu_or_skip("backward_layouts_invert_their_forward") else {
        return;
    };
    let (b, c, s, p) = (2, 3, 8, 2);
    let img = normals(&mut Rng::new(27), b * c * s * s, 1.0);
    let gimg = T32::from_f64(&gpu, &[b, c, s, s], &img).unwrap();
    let tok = (s / p).pow(2);
    // patchify is diffusion-nn's patchify and the inverse of unpatchify.
    let mut tokens = T32::full(&gpu, &[b, tok, p * p * c], f32::NAN).unwrap();
    patchify(&gimg, (b, c, s, p), &mut tokens).unwrap();
    let cpu_img =
        ArrayD::from_shape_vec(IxDyn(&[b, c, s, s]), img.iter().map(|&v| v as f32).collect()).unwrap();
    let want: Vec<f64> = diffusion_nn::layers::patchify(&cpu_img, p)
        .unwrap()
        .iter()
        .map(|&v| f64::from(v))
        .collect();
    assert_eq!(tokens.to_host_f64().unwrap(), want, "patchify");
    let mut back = T32::full(&gpu, &[b, c, s, s], f32::NAN).unwrap();
    unpatchify(&tokens, (b, c, s, p), &mut back).unwrap();
    assert_eq!(back.to_host_f64().unwrap(), img, "unpatchify(patchify(x))");
    // patch_rows_bwd is the adjoint of patch_rows, a permutation: its inverse.
    let mut rows = T32::full(&gpu, &[b * tok, c * p * p], f32::NAN).unwrap();
    patch_rows(&gimg, (b, c, s, p), &mut rows).unwrap();
    let mut back = T32::full(&gpu, &[b, c, s, s], f32::NAN).unwrap();
    patch_rows_bwd(&rows, (b, c, s, p), &mut back).unwrap();
    assert_eq!(back.to_host_f64().unwrap(), img, "patch_rows_bwd(patch_rows(x))");
    eprintln!("patchify, unpatchify, patch_rows, patch_rows_bwd: exact inverses");
}

#[test]
fn backward_kernels_match_reference() {
    let Some(gpu) = gpu_or_skip("backward_kernels_match_reference") else {
        return;
    };
    let mut rng = Rng::new(28);
    // Column sums (bias gradients).
    let (rows, cols) = (300, 37);
    let x = normals(&mut rng, rows * cols, 1.0);
    let mut sums = T32::full(&gpu, &[cols], f32::NAN).unwrap();
    column_sums(
        &T32::from_f64(&gpu, &[rows, cols], &x).unwrap(),
        rows,
        cols,
        &mut sums,
    )
    .unwrap();
    let want: Vec<f64> = (0..cols)
        .map(|c| (0..rows).map(|r| x[r * cols + c]).sum())
        .collect();
    let e = rel(&sums.to_host_f64().unwrap(), &want);
    eprintln!("column_sums: relative error {e:.2e}");
    assert!(e < 1e-6, "column_sums: {e:e}");
    // The gated residual's backward.
    let (b, l, d) = (3, 17, 40);
    let (dh, f, gate) = (
        normals(&mut rng, b * l * d, 1.0),
        normals(&mut rng, b * l * d, 1.0),
        normals(&mut rng, b * d, 1.0),
    );
    let up = |shape: &[usize], v: &[f64]| T32::from_f64(&gpu, shape, v).unwrap();
    let (mut df, mut dgate) = (
        T32::full(&gpu, &[b, l, d], f32::NAN).unwrap(),
        T32::full(&gpu, &[b, d], f32::NAN).unwrap(),
    );
    gate_add_bwd(
        &up(&[b, l, d], &dh),
        &up(&[b, l, d], &f),
        &up(&[b, d], &gate),
        (b, l, d),
        &mut df,
        &mut dgate,
    )
    .unwrap();
    let (want_df, want_dgate) = cpu::gate_add_bwd(&dh, &f, &gate, b, l, d);
    let (e_df, e_dg) = (
        rel(&df.to_host_f64().unwrap(), &want_df),
        rel(&dgate.to_host_f64().unwrap(), &want_dgate),
    );
    eprintln!("gate_add_bwd: df {e_df:.2e}, dgate {e_dg:.2e}");
    assert!(e_df < 1e-6 && e_dg < 1e-6, "gate_add_bwd: {e_df:e} {e_dg:e}");
    // Attention's backward from the forward's probabilities.
    let (bh, lq, lk, hd) = (6, 50, 70, 32);
    let (q, k, v, dout) = (
        normals(&mut rng, bh * lq * hd, 1.0),
        normals(&mut rng, bh * lk * hd, 1.0),
        normals(&mut rng, bh * lk * hd, 1.0),
        normals(&mut rng, bh * lq * hd, 1.0),
    );
    let (gq, gk, gv) = (
        up(&[bh, lq, hd], &q),
        up(&[bh, lk, hd], &k),
        up(&[bh, lk, hd], &v),
    );
    let mut out = T32::full(&gpu, &[bh, lq, hd], f32::NAN).unwrap();
    let probs = attention_with_probs(&gq, &gk, &gv, bh, (lq, lk, hd), &mut out).unwrap();
    let e_out = rel(
        &out.to_host_f64().unwrap(),
        &cpu::attention(&q, &k, &v, bh, lq, lk, hd),
    );
    let (mut dq, mut dk, mut dv) = (
        T32::full(&gpu, &[bh, lq, hd], f32::NAN).unwrap(),
        T32::full(&gpu, &[bh, lk, hd], f32::NAN).unwrap(),
        T32::full(&gpu, &[bh, lk, hd], f32::NAN).unwrap(),
    );
    attention_bwd(
        &up(&[bh, lq, hd], &dout),
        &gq,
        &gk,
        &gv,
        &probs,
        bh,
        (lq, lk, hd),
        &mut dq,
        &mut dk,
        &mut dv,
    )
    .unwrap();
    let (wq, wk, wv) = cpu::attention_bwd(&dout, &q, &k, &v, bh, lq, lk, hd);
    let errs = [
        rel(&dq.to_host_f64().unwrap(), &wq),
        rel(&dk.to_host_f64().unwrap(), &wk),
        rel(&dv.to_host_f64().unwrap(), &wv),
    ];
    eprintln!(
        "attention_with_probs out {e_out:.2e}; attention_bwd dq {:.2e} dk {:.2e} dv {:.2e}",
        errs[0], errs[1], errs[2]
    );
    assert!(e_out < 1e-5, "attention_with_probs: {e_out:e}");
    assert!(errs.iter().all(|&e| e < 1e-5), "attention_bwd: {errs:?}");
}

/// `diffusion-train`'s `AdamW::step` for one f32 element, in its order of operations (f64,
/// rounded once into f32): returns the new (p, m, v).
fn cpu_adamw(p: f32, g: f32, m: f32, v: f32, cfg: &AdamWConfig, k: u64, lr: f64) -> (f32, f32, f32) {
    let kexp = k.min(i32::MAX as u64) as i32;
    let bias1 = 1.0 - cfg.beta1.powi(kexp);
    let bias2_sqrt = (1.0 - cfg.beta2.powi(kexp)).sqrt();
    let step_size = lr / bias1;
    let decay = 1.0 - lr * cfg.weight_decay;
    let g = f64::from(g);
    let mean = cfg.beta1 * f64::from(m) + (1.0 - cfg.beta1) * g;
    let var = cfg.beta2 * f64::from(v) + (1.0 - cfg.beta2) * g * g;
    let denom = var.sqrt() / bias2_sqrt + cfg.eps;
    let p = f64::from(p) * decay - step_size * mean / denom;
    (p as f32, mean as f32, var as f32)
}

/// Max |a - b| / max |b| and the number of elements that differ at all.
fn compare(got: &T32, want: &[f32]) -> (f64, usize) {
    let got = got.to_host().unwrap();
    let w64: Vec<f64> = want.iter().map(|&v| f64::from(v)).collect();
    let g64: Vec<f64> = got.iter().map(|&v| f64::from(v)).collect();
    let differ = got
        .iter()
        .zip(want)
        .filter(|(a, b)| a.to_bits() != b.to_bits())
        .count();
    (rel(&g64, &w64), differ)
}

#[test]
fn gpu_adamw_matches_the_cpu_formula() {
    let Some(gpu) = gpu_or_skip("gpu_adamw_matches_the_cpu_formula") else {
        return;
    };
    let mut rng = Rng::new(29);
    let cfg = AdamWConfig {
        beta1: 0.9,
        beta2: 0.99,
        eps: 1e-8,
        weight_decay: 0.1,
    };
    let f32s = |v: Vec<f64>| -> Vec<f32> { v.into_iter().map(|x| x as f32).collect() };
    // One step from arbitrary moments (k = 5), an odd length.
    let n = 4099;
    let (p, g, m) = (
        f32s(normals(&mut rng, n, 1.0)),
        f32s(normals(&mut rng, n, 0.1)),
        f32s(normals(&mut rng, n, 0.1)),
    );
    let v: Vec<f32> = f32s(normals(&mut rng, n, 0.01)).iter().map(|x| x * x).collect();
    let up = |v: &[f32]| T32::from_host(&gpu, &[v.len()], v).unwrap();
    let (mut gp, gg, mut gm, mut gv) = (up(&p), up(&g), up(&m), up(&v));
    let shared = gp.clone();
    adamw_step(&mut gp, &gg, &mut gm, &mut gv, &cfg, 5, 1e-2).unwrap();
    let want: Vec<(f32, f32, f32)> = (0..n)
        .map(|i| cpu_adamw(p[i], g[i], m[i], v[i], &cfg, 5, 1e-2))
        .collect();
    let results = [
        ("p", compare(&gp, &want.iter().map(|w| w.0).collect::<Vec<_>>())),
        ("m", compare(&gm, &want.iter().map(|w| w.1).collect::<Vec<_>>())),
        ("v", compare(&gv, &want.iter().map(|w| w.2).collect::<Vec<_>>())),
    ];
    for (what, (e, differ)) in results {
        eprintln!("adamw_step {what}: relative error {e:.2e}, {differ} of {n} elements not bit-identical");
        assert!(e < 1e-6, "adamw_step {what}: {e:e}");
        assert_eq!(
            differ, 0,
            "adamw_step {what}: the CPU's rounding is not reproduced"
        );
    }
    // Copy-on-write: a clone taken before the step keeps the old values.
    assert_eq!(
        shared.to_host().unwrap(),
        p,
        "the in-place update leaked into a clone"
    );
    let err = adamw_step(&mut gp, &gg, &mut gm, &mut gv, &cfg, 0, 1e-2).unwrap_err();
    assert!(matches!(err, CudaError::InvalidArgument { .. }), "{err:?}");

    // Three steps of the named-state optimizer from zero moments, two tensors.
    let shapes: [(&str, Vec<usize>); 2] = [("a.weight", vec![3, 5]), ("a.bias", vec![3])];
    let mut host: Vec<(Vec<f32>, Vec<f32>, Vec<f32>)> = shapes
        .iter()
        .map(|(_, s)| {
            let len = s.iter().product();
            (f32s(normals(&mut rng, len, 1.0)), vec![0.0; len], vec![0.0; len])
        })
        .collect();
    let mut params: Vec<(String, T32)> = shapes
        .iter()
        .zip(&host)
        .map(|((name, s), (p, _, _))| (name.to_string(), T32::from_host(&gpu, s, p).unwrap()))
        .collect();
    let mut opt = GpuAdamW::new(cfg, &params).unwrap();
    for step in 1..=3u64 {
        let grads: Vec<(String, T32, Vec<f32>)> = shapes
            .iter()
            .map(|(name, s)| {
                let g = f32s(normals(&mut rng, s.iter().product(), 0.1));
                (name.to_string(), T32::from_host(&gpu, s, &g).unwrap(), g)
            })
            .collect();
        let named: Vec<(String, T32)> = grads.iter().map(|(n, t, _)| (n.clone(), t.clone())).collect();
        opt.step(&mut params, &named, 1e-3).unwrap();
        for ((p, m, v), (_, _, g)) in host.iter_mut().zip(&grads) {
            for i in 0..p.len() {
                (p[i], m[i], v[i]) = cpu_adamw(p[i], g[i], m[i], v[i], &cfg, step, 1e-3);
            }
        }
    }
    assert_eq!(opt.step_count(), 3);
    for ((name, t), (p, _, _)) in params.iter().zip(&host) {
        let (e, differ) = compare(t, p);
        eprintln!("GpuAdamW 3 steps {name}: relative error {e:.2e}, {differ} not bit-identical");
        assert!(e < 1e-6 && differ == 0, "GpuAdamW {name}: {e:e}, {differ} differ");
    }
    for (mo, (_, m, v)) in opt.moments().iter().zip(&host) {
        assert_eq!(compare(&mo.exp_avg, m).1, 0, "{}: exp_avg", mo.name);
        assert_eq!(compare(&mo.exp_avg_sq, v).1, 0, "{}: exp_avg_sq", mo.name);
    }
    // Mismatched names are refused before anything changes.
    let before: Vec<Vec<f32>> = params.iter().map(|(_, t)| t.to_host().unwrap()).collect();
    let wrong: Vec<(String, T32)> = params.iter().map(|(_, t)| ("x".to_string(), t.clone())).collect();
    let err = opt.step(&mut params, &wrong, 1e-3).unwrap_err();
    assert!(matches!(err, CudaError::InvalidArgument { .. }), "{err:?}");
    let after: Vec<Vec<f32>> = params.iter().map(|(_, t)| t.to_host().unwrap()).collect();
    assert_eq!(before, after, "a refused step changed the parameters");
    assert_eq!(opt.step_count(), 3);
}
