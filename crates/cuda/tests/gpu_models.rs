//! Whole models on the GPU against the CPU models of `diffusion-nn` with the same weights:
//! the f64 CPU model is the oracle; the f32 CPU model shows what f32 rounding alone costs.
#![cfg(feature = "cuda")]

mod common;

use common::{gpu_or_skip, normals, rel, same_random_weights};
use std::sync::Arc;

use diffusion_core::Parameterization;
use diffusion_core::{Rng, Tensor};
use diffusion_cuda::layout::{merge_heads, patch_rows, split_heads};
use diffusion_cuda::models::{GpuDit, GpuDitDenoiser, GpuUNet};
use diffusion_cuda::{CudaError, CudaTensor, Gpu};
use diffusion_nn::models::{Dit, DitConfig, SkipScaling, UNet, UNetConfig};
use diffusion_nn::{Network, NetworkDenoiser};
use diffusion_solvers::{by_name, sample_all};
use ndarray::{ArrayD, IxDyn};

/// The same random weights (every tensor, so adaLN-Zero's zeros hide no path) in an f32 and
/// an f64 model.
fn twin_dits(cfg: DitConfig, seed: u64) -> (Dit<f32>, Dit<f64>) {
    let mut rng = Rng::new(seed);
    let lo = Dit::<f32>::new(cfg, &mut rng).unwrap();
    let hi = Dit::<f64>::new(cfg, &mut rng).unwrap();
    same_random_weights(lo, hi, &mut rng)
}

fn check_dit(gpu: &Arc<Gpu>, cfg: DitConfig, batch: usize, labels: Option<&[usize]>) {
    let (lo, hi) = twin_dits(cfg, 3);
    let mut rng = Rng::new(4);
    let shape = [batch, cfg.in_ch, cfg.size, cfg.size];
    let x: Vec<f64> = normals(&mut rng, shape.iter().product(), 1.0)
        .into_iter()
        .map(|v| f64::from(v as f32))
        .collect();
    let t: Vec<f64> = (0..batch).map(|i| (137 * i % 1000) as f64).collect();
    let x64 = ArrayD::from_shape_vec(IxDyn(&shape), x.clone()).unwrap();
    let x32 = x64.mapv(|v| v as f32);
    let t32: Vec<f32> = t.iter().map(|&v| v as f32).collect();
    let want: Vec<f64> = hi.infer(&x64, &t, labels).unwrap().iter().copied().collect();
    let cpu32: Vec<f64> = lo
        .infer(&x32, &t32, labels)
        .unwrap()
        .iter()
        .map(|&v| f64::from(v))
        .collect();
    let model = GpuDit::from_cpu(gpu, &lo).unwrap();
    let gx = CudaTensor::<f32>::from_f64(gpu, &shape, &x).unwrap();
    let got = model.infer(&gx, &t32, labels).unwrap();
    assert_eq!(got.shape(), &shape);
    let got = got.to_host_f64().unwrap();
    assert!(got.iter().all(|v| v.is_finite()), "non-finite GPU output");
    let (e_gpu, e_cpu) = (rel(&got, &want), rel(&cpu32, &want));
    eprintln!(
        "dit {cfg:?} batch {batch}: GPU f32 vs CPU f64 {e_gpu:.2e} (CPU f32 vs CPU f64 {e_cpu:.2e}), output scale {:.2}",
        want.iter().fold(0.0f64, |m, v| m.max(v.abs()))
    );
    assert!(
        e_gpu < 1e-4,
        "GPU DiT differs from the f64 CPU model by {e_gpu:e}"
    );
    assert!(
        e_gpu < 10.0 * e_cpu + 1e-6,
        "GPU error {e_gpu:e} is far above f32 rounding ({e_cpu:e})"
    );
}

#[test]
fn gpu_dit_matches_the_cpu_model() {
    let Some(gpu) = gpu_or_skip("gpu_dit_matches_the_cpu_model") else {
        return;
    };
    check_dit(&gpu, DitConfig::default(), 3, None);
    let classes = DitConfig {
        num_classes: 10,
        depth: 2,
        ..DitConfig::default()
    };
    check_dit(&gpu, classes, 4, Some(&[0, 9, 3, 3]));
}

#[test]
fn gpu_dit_rejects_bad_input() {
    let Some(gpu) = gpu_or_skip("gpu_dit_rejects_bad_input") else {
        return;
    };
    let (lo, _) = twin_dits(DitConfig::default(), 5);
    let model = GpuDit::from_cpu(&gpu, &lo).unwrap();
    let x = CudaTensor::<f32>::zeros(&gpu, &[2, 4, 16, 16]);
    let err = model.infer(&x, &[1.0, 2.0, 3.0], None).unwrap_err();
    assert!(matches!(err, CudaError::ShapeMismatch { .. }), "{err:?}");
}

#[test]
fn layout_permutations_match_their_index_formulas() {
    let Some(gpu) = gpu_or_skip("layout_permutations_match_their_index_formulas") else {
        return;
    };
    let (b, t, h, dh) = (3, 5, 2, 7);
    let x: Vec<f64> = (0..b * t * h * dh).map(|i| i as f64).collect();
    let gx = CudaTensor::<f32>::from_f64(&gpu, &[x.len()], &x).unwrap();
    let mut split = CudaTensor::<f32>::full(&gpu, &[x.len()], f32::NAN).unwrap();
    split_heads(&gx, (b, t, h, dh), &mut split).unwrap();
    let got = split.to_host_f64().unwrap();
    for bi in 0..b {
        for hi in 0..h {
            for ti in 0..t {
                for e in 0..dh {
                    let want = x[((bi * t + ti) * h + hi) * dh + e];
                    assert_eq!(got[((bi * h + hi) * t + ti) * dh + e], want);
                }
            }
        }
    }
    let mut back = CudaTensor::<f32>::full(&gpu, &[x.len()], f32::NAN).unwrap();
    merge_heads(&split, (b, t, h, dh), &mut back).unwrap();
    assert_eq!(back.to_host_f64().unwrap(), x);
    // Patch rows in Conv2d weight order (c, kh, kw), tokens row-major over the patch grid.
    let (bb, c, s, p) = (2, 3, 4, 2);
    let img: Vec<f64> = (0..bb * c * s * s).map(|i| i as f64).collect();
    let gi = CudaTensor::<f32>::from_f64(&gpu, &[bb, c, s, s], &img).unwrap();
    let g = s / p;
    let mut rows = CudaTensor::<f32>::full(&gpu, &[bb * g * g, c * p * p], f32::NAN).unwrap();
    patch_rows(&gi, (bb, c, s, p), &mut rows).unwrap();
    let got = rows.to_host_f64().unwrap();
    for bi in 0..bb {
        for (ti, tj) in (0..g).flat_map(|i| (0..g).map(move |j| (i, j))) {
            for ci in 0..c {
                for kh in 0..p {
                    for kw in 0..p {
                        let token = (bi * g + ti) * g + tj;
                        let want = img[((bi * c + ci) * s + ti * p + kh) * s + tj * p + kw];
                        assert_eq!(got[token * c * p * p + (ci * p + kh) * p + kw], want);
                    }
                }
            }
        }
    }
}

/// Sampling end to end on the device (scheduler steps and the DiT both on the GPU) gives the
/// samples of the same scheduler and model on the CPU, deterministic and ancestral.
#[test]
fn gpu_dit_samples_like_the_cpu_model() {
    let Some(gpu) = gpu_or_skip("gpu_dit_samples_like_the_cpu_model") else {
        return;
    };
    let cfg = DitConfig {
        depth: 2,
        ..DitConfig::default()
    };
    let (lo, _) = twin_dits(cfg, 7);
    let gpu_model = GpuDitDenoiser {
        model: GpuDit::from_cpu(&gpu, &lo).unwrap(),
        parameterization: Parameterization::Epsilon,
        cond: None,
    };
    let cpu_model = NetworkDenoiser::new(lo, Parameterization::Epsilon);
    let shape = [2, cfg.in_ch, cfg.size, cfg.size];
    let noise: Vec<f64> = normals(&mut Rng::new(8), shape.iter().product(), 1.0);
    let x_cpu = ArrayD::from_shape_vec(IxDyn(&shape), noise.iter().map(|&v| v as f32).collect()).unwrap();
    let x_gpu = CudaTensor::<f32>::from_f64(&gpu, &shape, &noise).unwrap();
    for name in ["dpm_solver_multistep", "euler_ancestral"] {
        let config = serde_json::json!({});
        let mut cpu_s = by_name::<ArrayD<f32>>(name, &config).unwrap();
        let mut gpu_s = by_name::<CudaTensor<f32>>(name, &config).unwrap();
        cpu_s.set_timesteps(10).unwrap();
        gpu_s.set_timesteps(10).unwrap();
        let want = sample_all(cpu_s.as_mut(), &cpu_model, &x_cpu, Some(&mut Rng::new(9))).unwrap();
        let got = sample_all(gpu_s.as_mut(), &gpu_model, &x_gpu, Some(&mut Rng::new(9))).unwrap();
        let want: Vec<f64> = want.iter().map(|&v| f64::from(v)).collect();
        let e = rel(&got.to_host_f64().unwrap(), &want);
        eprintln!("{name}: 10 steps with dit on the GPU vs the CPU: relative difference {e:.2e}");
        assert!(e < 1e-4, "{name}: GPU and CPU samples differ by {e:e}");
    }
}

fn check_unet(gpu: &Arc<Gpu>, cfg: UNetConfig, batch: usize, skip_tuning: Option<Vec<f64>>) {
    let mut rng = Rng::new(11);
    let lo = UNet::<f32>::new(cfg.clone(), &mut rng).unwrap();
    let hi = UNet::<f64>::new(cfg.clone(), &mut rng).unwrap();
    let (mut lo, mut hi) = same_random_weights(lo, hi, &mut rng);
    lo.inference_skip_scales = skip_tuning.clone();
    hi.inference_skip_scales = skip_tuning;
    let shape = [batch, cfg.in_ch, cfg.size, cfg.size];
    let x: Vec<f64> = normals(&mut Rng::new(12), shape.iter().product(), 1.0)
        .into_iter()
        .map(|v| f64::from(v as f32))
        .collect();
    let t: Vec<f64> = (0..batch).map(|i| (311 * i % 1000) as f64).collect();
    let x64 = ArrayD::from_shape_vec(IxDyn(&shape), x.clone()).unwrap();
    let t32: Vec<f32> = t.iter().map(|&v| v as f32).collect();
    let want: Vec<f64> = hi.infer(&x64, &t, None).unwrap().iter().copied().collect();
    let cpu32: Vec<f64> = lo
        .infer(&x64.mapv(|v| v as f32), &t32, None)
        .unwrap()
        .iter()
        .map(|&v| f64::from(v))
        .collect();
    let model = GpuUNet::from_cpu(gpu, &lo).unwrap();
    let got = model
        .infer(&CudaTensor::<f32>::from_f64(gpu, &shape, &x).unwrap(), &t32)
        .unwrap();
    assert_eq!(got.shape(), &shape);
    let got = got.to_host_f64().unwrap();
    let (e_gpu, e_cpu) = (rel(&got, &want), rel(&cpu32, &want));
    eprintln!(
        "unet base {} mults {:?} {:?} batch {batch}: GPU f32 vs CPU f64 {e_gpu:.2e} (CPU f32 vs CPU f64 {e_cpu:.2e})",
        cfg.base, cfg.mults, cfg.skip_scaling
    );
    assert!(
        e_gpu < 1e-4,
        "GPU UNet differs from the f64 CPU model by {e_gpu:e}"
    );
    assert!(
        e_gpu < 10.0 * e_cpu + 1e-6,
        "GPU error {e_gpu:e} is far above f32 rounding ({e_cpu:e})"
    );
}

#[test]
fn gpu_unet_matches_the_cpu_model() {
    let Some(gpu) = gpu_or_skip("gpu_unet_matches_the_cpu_model") else {
        return;
    };
    check_unet(&gpu, UNetConfig::default(), 2, None);
    // ScaleLong skips and Skip-Tuning factors, a smaller net.
    let small = UNetConfig {
        base: 32,
        size: 16,
        groups: 8,
        skip_scaling: SkipScaling::Constant(0.7),
        ..UNetConfig::default()
    };
    check_unet(&gpu, small, 3, Some(vec![1.0, 0.9, 0.8, 1.1, 0.95, 1.05, 0.85]));
}
