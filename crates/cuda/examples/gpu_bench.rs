//! Times the fused solver step against the device's own copy bandwidth, and cuBLAS sgemm.
//!   cargo run --release -p diffusion-cuda --features cuda --example gpu_bench [-- ELEMENTS]
//! Bandwidth counts the fewest bytes each operation must move (every input read once, the
//! output written once). Each sample is 10 back-to-back launches between synchronizations;
//! the median of 9 samples is reported, after 3 warm-up launches.

use std::sync::Arc;
use std::time::Instant;

use diffusion_core::{Noise, Rng};
use diffusion_cuda::models::{GpuDit, GpuUNet};
use diffusion_cuda::optim::{AdamWConfig, GpuAdamW};
use diffusion_cuda::{CudaTensor, Gpu, Result, ops};
use diffusion_nn::Parameters;
use diffusion_nn::models::{Dit, DitConfig, UNet, UNetConfig};

const LAUNCHES: usize = 10;
const SAMPLES: usize = 9;

fn median_seconds(gpu: &Gpu, mut op: impl FnMut() -> Result<()>) -> Result<f64> {
    for _ in 0..3 {
        op()?;
    }
    gpu.synchronize()?;
    let mut times = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        let start = Instant::now();
        for _ in 0..LAUNCHES {
            op()?;
        }
        gpu.synchronize()?;
        times.push(start.elapsed().as_secs_f64() / LAUNCHES as f64);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[SAMPLES / 2])
}

fn random(gpu: &Arc<Gpu>, n: usize, seed: u64) -> Result<CudaTensor<f32>> {
    let mut t = CudaTensor::<f32>::zeros(gpu, &[n]);
    t.try_lincomb(0.0, &[], Some(Noise::new(1.0, &mut Rng::new(seed))))?;
    Ok(t)
}

fn main() -> Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .map_or(1 << 28, |a| a.parse().expect("ELEMENTS"));
    let gpu = Gpu::new(0)?;
    println!(
        "device: {} ({}), {n} f32 elements per tensor",
        gpu.name(),
        gpu.arch()
    );
    let (a, b, c) = (random(&gpu, n, 1)?, random(&gpu, n, 2)?, random(&gpu, n, 3)?);
    let mut x = random(&gpu, n, 4)?;
    let bytes = |tensors: usize| (tensors * n * 4) as f64;
    let mut rows: Vec<(String, f64, f64)> = Vec::new();

    let copy = median_seconds(&gpu, || x.copy_from(&a))?;
    rows.push(("device-to-device copy (memcpy)".into(), copy, bytes(2)));
    let mut rng = Rng::new(7);
    let cases: [(&str, usize); 4] = [
        ("x = a x + b e (DDIM/Euler step)", 3),
        ("x = a x + b e0 + c e1 (DPM++ 2M)", 4),
        ("x = a x + b e0 + c e1 + d e2 (3rd order)", 5),
        ("x = a x + b e + s z (ancestral, Philox noise)", 3),
    ];
    for (i, (label, tensors)) in cases.iter().enumerate() {
        let t = median_seconds(&gpu, || match i {
            0 => x.try_lincomb(0.99, &[(0.01, &a)], None),
            1 => x.try_lincomb(0.99, &[(0.01, &a), (-0.005, &b)], None),
            2 => x.try_lincomb(0.99, &[(0.01, &a), (-0.005, &b), (0.002, &c)], None),
            _ => x.try_lincomb(0.99, &[(0.01, &a)], Some(Noise::new(0.01, &mut rng))),
        })?;
        rows.push(((*label).into(), t, bytes(*tensors)));
    }
    println!("| operation | time (ms) | GB/s | of copy bandwidth |");
    println!("|---|---|---|---|");
    let copy_bw = bytes(2) / copy;
    for (label, t, moved) in &rows {
        let bw = moved / t;
        println!(
            "| {label} | {:.3} | {:.0} | {:.0}% |",
            t * 1e3,
            bw / 1e9,
            100.0 * bw / copy_bw
        );
    }

    for size in [1024usize, 4096] {
        let ga = random(&gpu, size * size, 8)?;
        let gb = random(&gpu, size * size, 9)?;
        let mut gc = CudaTensor::<f32>::zeros(&gpu, &[size * size]);
        let t = median_seconds(&gpu, || {
            ops::gemm_batched(&ga, &gb, 1, (size, size, size), false, false, &mut gc)
        })?;
        let flops = 2.0 * (size as f64).powi(3);
        println!(
            "sgemm {size}^3 (cuBLAS, f32): {:.3} ms, {:.1} TFLOP/s",
            t * 1e3,
            flops / t / 1e12
        );
    }

    // The reference models' inference at the CPU benchmark's batches (compare:
    // scripts/torch_gpu.py), random weights in every layer so adaLN-Zero's zeros take no
    // shortcut.
    let mut rng = Rng::new(1);
    let mut randomize = |p: &mut diffusion_nn::Param<f32>| {
        let mut z = vec![0.0; p.value.len()];
        rng.fill_normal(&mut z);
        for (v, z) in p.value.iter_mut().zip(z) {
            *v = (0.05 * z) as f32;
        }
    };
    let mut dit = Dit::<f32>::new(DitConfig::default(), &mut Rng::new(2)).expect("dit-tiny");
    dit.visit_mut(&mut |_, p| randomize(p));
    let mut dit = GpuDit::from_cpu(&gpu, &dit)?;
    let mut unet = UNet::<f32>::new(UNetConfig::default(), &mut Rng::new(3)).expect("unet-small");
    unet.visit_mut(&mut |_, p| randomize(p));
    let mut unet = GpuUNet::from_cpu(&gpu, &unet)?;
    let timesteps = |batch: usize| -> Vec<f32> { (0..batch).map(|i| ((i * 37) % 1000) as f32).collect() };
    let (batch, t) = (64, timesteps(64));
    let x = random(&gpu, batch * 4 * 16 * 16, 10)?.reshape(&[batch, 4, 16, 16])?;
    let secs = median_seconds(&gpu, || dit.infer(&x, &t, None).map(|_| ()))?;
    println!("dit-tiny inference, batch {batch} (GpuDit): {:.3} ms", secs * 1e3);
    // A training step as PyTorch's: forward, MSE gradient, backward, AdamW, weights back.
    let target = random(&gpu, batch * 4 * 16 * 16, 12)?.reshape(&[batch, 4, 16, 16])?;
    let mut params = dit.parameters()?;
    let mut adamw = GpuAdamW::new(AdamWConfig::default(), &params)?;
    let n = (batch * 4 * 16 * 16) as f64;
    let secs = median_seconds(&gpu, || {
        let (mut dy, cache) = dit.forward_train(&x, &t, None)?;
        dy.try_lincomb(2.0 / n, &[(-2.0 / n, &target)], None)?;
        let grads = dit.backward(&cache, &dy)?;
        adamw.step(&mut params, &grads.params, 1e-4)?;
        dit.set_parameters(&params)
    })?;
    println!(
        "dit-tiny training step, batch {batch} (GpuDit + GpuAdamW): {:.3} ms",
        secs * 1e3
    );
    let (batch, t) = (16, timesteps(16));
    let x = random(&gpu, batch * 3 * 32 * 32, 11)?.reshape(&[batch, 3, 32, 32])?;
    let secs = median_seconds(&gpu, || unet.infer(&x, &t).map(|_| ()))?;
    println!(
        "unet-small inference, batch {batch} (GpuUNet): {:.3} ms",
        secs * 1e3
    );
    let target = random(&gpu, batch * 3 * 32 * 32, 13)?.reshape(&[batch, 3, 32, 32])?;
    let mut params = unet.parameters()?;
    let mut adamw = GpuAdamW::new(AdamWConfig::default(), &params)?;
    let n = (batch * 3 * 32 * 32) as f64;
    let secs = median_seconds(&gpu, || {
        let (mut dy, cache) = unet.forward_train(&x, &t)?;
        dy.try_lincomb(2.0 / n, &[(-2.0 / n, &target)], None)?;
        let grads = unet.backward(&cache, &dy)?;
        adamw.step(&mut params, &grads.params, 1e-4)?;
        unet.set_parameters(&params)
    })?;
    println!(
        "unet-small training step, batch {batch} (GpuUNet + GpuAdamW): {:.3} ms",
        secs * 1e3
    );
    Ok(())
}
