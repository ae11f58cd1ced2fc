//! A UNet training step on the GPU against the CPU models of `diffusion-nn` with the same
//! weights: every parameter gradient and the input gradient against the f64 CPU model's
//! backward (the f32 CPU model's error printed beside it: what f32 rounding alone costs),
//! the training forward against inference, the named parameters, and the new backward
//! building blocks (convolution, upsampling, skip split, sums) against
//! `diffusion_cuda::oracle`. Each test skips with a printed message when no GPU is usable.
#![cfg(feature = "cuda")]

mod common;

use common::{
    assert_parameters, compare_step, cpu_parameters, cpu_step, gpu_or_skip, normals, rel, same_random_weights,
};
use std::sync::Arc;

use diffusion_core::{Rng, Tensor};
use diffusion_cuda::grad::{batch_sums, channel_sums, conv2d_bwd};
use diffusion_cuda::layout::{split_channels, upsample2_bwd};
use diffusion_cuda::models::GpuUNet;
use diffusion_cuda::oracle::{self as cpu, ConvGeometry};
use diffusion_cuda::{CudaError, CudaTensor, Gpu};
use diffusion_nn::models::{SkipScaling, UNet, UNetConfig};

type T32 = CudaTensor<f32>;

/// Every gradient's relative error (max |gpu - f64| / max |f64|, per tensor) must be below this.
const GRAD_TOL: f64 = 1e-4;

/// The small 2-D UNet of these tests: two levels, attention at the last, one ResBlock each.
fn small(skip_scaling: SkipScaling) -> UNetConfig {
    UNetConfig {
        in_ch: 3,
        size: 16,
        dims: 2,
        base: 32,
        mults: vec![1, 2],
        nres: 1,
        temb: 64,
        attn_levels: vec![1],
        heads: 4,
        groups: 8,
        skip_scaling,
    }
}

/// The same random weights in every tensor (GroupNorm's ones and zeros would hide paths) of
/// an f32 and an f64 model.
fn twin_unets(cfg: &UNetConfig, seed: u64) -> (UNet<f32>, UNet<f64>) {
    let mut rng = Rng::new(seed);
    let lo = UNet::<f32>::new(cfg.clone(), &mut rng).unwrap();
    let hi = UNet::<f64>::new(cfg.clone(), &mut rng).unwrap();
    same_random_weights(lo, hi, &mut rng)
}

/// Every gradient of a GPU training step against the f64 CPU model; prints one line per
/// tensor (GPU error, the f32 CPU model's error, the gradient's scale), then asserts.
fn check_gradients(gpu: &Arc<Gpu>, cfg: &UNetConfig, batch: usize) {
    let (mut lo, mut hi) = twin_unets(cfg, 31);
    let mut rng = Rng::new(32);
    let shape = [batch, cfg.in_ch, cfg.size, cfg.size];
    let len: usize = shape.iter().product();
    let x = normals(&mut rng, len, 1.0);
    let target = normals(&mut rng, len, 1.0);
    let t: Vec<f64> = (0..batch).map(|i| (137 * i % 1000) as f64).collect();
    let t32: Vec<f32> = t.iter().map(|&v| v as f32).collect();
    let model = GpuUNet::from_cpu(gpu, &lo).unwrap();
    let want = cpu_step(&mut hi, &x, &shape, &t, None, &target);
    let cpu32 = cpu_step(&mut lo, &x, &shape, &t, None, &target);

    let gx = T32::from_f64(gpu, &shape, &x).unwrap();
    let (gy, cache) = model.forward_train(&gx, &t32).unwrap();
    let mut dy = gy.clone();
    let n = len as f64;
    let gtarget = T32::from_f64(gpu, &shape, &target).unwrap();
    dy.try_lincomb(2.0 / n, &[(-2.0 / n, &gtarget)], None).unwrap();
    let grads = model.backward(&cache, &dy).unwrap();

    compare_step(
        &format!(
            "unet base {} mults {:?} {:?} batch {batch}",
            cfg.base, cfg.mults, cfg.skip_scaling
        ),
        GRAD_TOL,
        &gy,
        &grads.input,
        &grads.params,
        &want,
        &cpu32,
    );
}

#[test]
fn gpu_unet_gradients_match_the_cpu_model() {
    let Some(gpu) = gpu_or_skip("gpu_unet_gradients_match_the_cpu_model") else {
        return;
    };
    check_gradients(&gpu, &small(SkipScaling::None), 2);
    // ScaleLong's constant skip scales: the skip gradients are scaled the same way.
    check_gradients(&gpu, &small(SkipScaling::Constant(0.7)), 3);
}

#[test]
fn gpu_unet_forward_train_equals_infer() {
    let Some(gpu) = gpu_or_skip("gpu_unet_forward_train_equals_infer") else {
        return;
    };
    let cfg = small(SkipScaling::Constant(0.8));
    let (mut lo, _) = twin_unets(&cfg, 33);
    let model = GpuUNet::from_cpu(&gpu, &lo).unwrap();
    let shape = [2, cfg.in_ch, cfg.size, cfg.size];
    let x = normals(&mut Rng::new(34), shape.iter().product(), 1.0);
    let gx = T32::from_f64(&gpu, &shape, &x).unwrap();
    let t = [3.0f32, 999.0];
    let inferred = model.infer(&gx, &t).unwrap().to_host_f64().unwrap();
    let (trained, cache) = model.forward_train(&gx, &t).unwrap();
    let trained = trained.to_host_f64().unwrap();
    let e = rel(&trained, &inferred);
    eprintln!(
        "unet forward_train vs infer: relative difference {e:.2e} (bitwise equal: {})",
        trained == inferred
    );
    assert!(e <= 1e-6, "forward_train and infer differ by {e:e}");
    // dy of the wrong shape is a typed error.
    let wrong = T32::zeros(&gpu, &[3, cfg.in_ch, cfg.size, cfg.size]);
    let err = model.backward(&cache, &wrong).unwrap_err();
    assert!(matches!(err, CudaError::ShapeMismatch { .. }), "{err:?}");
    // Skip-Tuning factors apply at inference only: training keeps the ScaleLong scales.
    lo.inference_skip_scales = Some(vec![1.0, 0.5, 0.5, 0.5]);
    let tuned = GpuUNet::from_cpu(&gpu, &lo).unwrap();
    let (trained_tuned, _) = tuned.forward_train(&gx, &t).unwrap();
    assert_eq!(
        trained_tuned.to_host_f64().unwrap(),
        trained,
        "Skip-Tuning leaked into training"
    );
    let e = rel(&tuned.infer(&gx, &t).unwrap().to_host_f64().unwrap(), &inferred);
    assert!(e > 1e-6, "Skip-Tuning changed nothing at inference");
    // Learnable skip scales infer but do not train on the GPU: a typed error.
    let (learnable, _) = twin_unets(&small(SkipScaling::Learnable(0.7)), 35);
    let model = GpuUNet::from_cpu(&gpu, &learnable).unwrap();
    model.infer(&gx, &t).unwrap();
    let err = model.forward_train(&gx, &t).unwrap_err();
    assert!(matches!(err, CudaError::InvalidArgument { .. }), "{err:?}");
}

#[test]
fn gpu_unet_parameters_are_the_cpu_models() {
    let Some(gpu) = gpu_or_skip("gpu_unet_parameters_are_the_cpu_models") else {
        return;
    };
    let (lo, _) = twin_unets(&small(SkipScaling::None), 36);
    let mut model = GpuUNet::from_cpu(&gpu, &lo).unwrap();
    let want = cpu_parameters(&lo);
    let check = |params: &[(String, T32)], factor: f64| assert_parameters(params, &want, factor);
    let mut params = model.parameters().unwrap();
    check(&params, 1.0);
    // Halving is exact in f32: load halved weights, read them back, and the model computes
    // with them (the output of a network whose every weight is halved changes).
    let x = T32::from_f64(&gpu, &[1, 3, 16, 16], &normals(&mut Rng::new(37), 768, 1.0)).unwrap();
    let before = model.infer(&x, &[5.0]).unwrap().to_host_f64().unwrap();
    for (_, p) in &mut params {
        p.try_lincomb(0.5, &[], None).unwrap();
    }
    model.set_parameters(&params).unwrap();
    check(&model.parameters().unwrap(), 0.5);
    let after = model.infer(&x, &[5.0]).unwrap().to_host_f64().unwrap();
    assert!(
        rel(&after, &before) > 1e-3,
        "set_parameters did not reach the layers"
    );
    // A mismatch is a typed error and changes nothing.
    params.swap(0, 1);
    let err = model.set_parameters(&params).unwrap_err();
    assert!(matches!(err, CudaError::InvalidArgument { .. }), "{err:?}");
    check(&model.parameters().unwrap(), 0.5);
    eprintln!("GpuUNet::parameters: {} tensors, exact", want.len());
}

#[test]
fn unet_backward_kernels_match_reference() {
    let Some(gpu) = gpu_or_skip("unet_backward_kernels_match_reference") else {
        return;
    };
    let mut rng = Rng::new(38);
    let up = |shape: &[usize], v: &[f64]| T32::from_f64(&gpu, shape, v).unwrap();
    let host = |t: &T32| t.to_host_f64().unwrap();
    // Convolutions: 3x3 stride 1 and 2 (padding 1), and 1x1 (the columns are the image).
    for (k, stride, pad) in [(3, 1, 1), (3, 2, 1), (1, 1, 0)] {
        let g = ConvGeometry {
            n: 3,
            c: 5,
            h: 9,
            w: 8,
            kh: k,
            kw: k,
            stride,
            pad,
            dilation: 1,
        };
        let cout = 7;
        let (oh, ow) = g.output_hw().unwrap();
        let kk = g.c * k * k;
        let (x, w, dy) = (
            normals(&mut rng, g.image_len(), 1.0),
            normals(&mut rng, cout * kk, 0.3),
            normals(&mut rng, g.n * cout * oh * ow, 1.0),
        );
        let got = conv2d_bwd(
            &up(&[g.n, g.c, g.h, g.w], &x),
            &up(&[cout, kk], &w),
            &up(&[g.n, cout, oh, ow], &dy),
            g,
            cout,
        )
        .unwrap();
        let (wdx, wdw, wdb) = cpu::conv2d_bwd(&x, &w, &dy, g, cout).unwrap();
        let errs = [
            rel(&host(&got.dx), &wdx),
            rel(&host(&got.dweight), &wdw),
            rel(&host(&got.dbias), &wdb),
        ];
        eprintln!(
            "conv2d_bwd k{k} s{stride} p{pad}: dx {:.2e} dW {:.2e} db {:.2e}",
            errs[0], errs[1], errs[2]
        );
        assert_eq!(got.dx.shape(), [g.n, g.c, g.h, g.w]);
        assert!(
            errs.iter().all(|&e| e < 1e-5),
            "conv2d_bwd k{k} s{stride}: {errs:?}"
        );
    }
    // upsample2's adjoint, the skip split, the sums (NaN-poisoned outputs: all written).
    let (planes, h, w) = (6, 5, 7);
    let d = normals(&mut rng, planes * 4 * h * w, 1.0);
    let mut dx = T32::full(&gpu, &[planes, h, w], f32::NAN).unwrap();
    upsample2_bwd(&up(&[planes, 2 * h, 2 * w], &d), (planes, h, w), &mut dx).unwrap();
    let e = rel(&host(&dx), &cpu::upsample2_bwd(&d, planes, h, w));
    eprintln!("upsample2_bwd: {e:.2e}");
    assert!(e < 1e-6, "upsample2_bwd: {e:e}");
    let (n, ca, cb, s, scale) = (3, 4, 6, 10, 0.7f32);
    let cat = normals(&mut rng, n * (ca + cb) * s, 1.0);
    let mut a = T32::full(&gpu, &[n, ca, s], f32::NAN).unwrap();
    let mut b = T32::full(&gpu, &[n, cb, s], f32::NAN).unwrap();
    split_channels(&up(&[n, ca + cb, s], &cat), (n, ca, cb, s), scale, &mut a, &mut b).unwrap();
    let (wa, wb) = cpu::split_channels(&cat, n, ca, cb, s, f64::from(scale));
    let (ea, eb) = (rel(&host(&a), &wa), rel(&host(&b), &wb));
    eprintln!("split_channels: {ea:.2e} {eb:.2e}");
    assert!(ea == 0.0 && eb < 1e-7, "split_channels: {ea:e} {eb:e}");
    let mut sums = T32::full(&gpu, &[ca + cb], f32::NAN).unwrap();
    channel_sums(&up(&[n, ca + cb, s], &cat), (n, ca + cb, s), &mut sums).unwrap();
    let e_c = rel(&host(&sums), &cpu::channel_sums(&cat, n, ca + cb, s));
    let mut bs = T32::full(&gpu, &[(ca + cb) * s], f32::NAN).unwrap();
    batch_sums(&up(&[n, (ca + cb) * s], &cat), n, (ca + cb) * s, &mut bs).unwrap();
    let e_b = rel(&host(&bs), &cpu::batch_sums(&cat, n, (ca + cb) * s));
    eprintln!("channel_sums {e_c:.2e}, batch_sums {e_b:.2e}");
    assert!(e_c < 1e-6 && e_b < 1e-6, "sums: {e_c:e} {e_b:e}");
}
