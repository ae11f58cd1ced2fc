//! Quick train-step / inference timing of the reference models (best of N, plus CPU seconds
//! per call, which a machine shared with other work inflates much less than wall time).
//! `RAYON_NUM_THREADS=2 cargo run --release -p diffusion-nn --example model_probe [mlp|dit|unet|whitebox]`
//! (`PROBE_INFER_ONLY=1`: run inference only, for a profiler)
mod common;

use std::hint::black_box;
use std::time::Instant;

diffusion_nn::use_mimalloc!();

use diffusion_core::Rng;
use diffusion_nn::Network;
use diffusion_nn::models::{Dit, DitConfig, MlpConfig, MlpDenoiser, UNet, UNetConfig, WhiteBoxDit};
use ndarray::{ArrayD, IxDyn};

fn randn(shape: &[usize], rng: &mut Rng) -> ArrayD<f32> {
    let mut v = vec![0.0; shape.iter().product()];
    rng.fill_normal(&mut v);
    ArrayD::from_shape_vec(IxDyn(shape), v.iter().map(|&x| x as f32).collect()).unwrap()
}

/// Process CPU seconds (user + system) so far.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// (best wall seconds, mean CPU seconds) of `reps` calls.
fn time(reps: usize, mut f: impl FnMut()) -> (f64, f64) {
    f();
    let c0 = cpu_seconds();
    let mut best = f64::INFINITY;
    for _ in 0..reps {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed().as_secs_f64());
    }
    (best, (cpu_seconds() - c0) / reps as f64)
}

fn run<N: Network<f32>>(name: &str, mut model: N, batch: usize, reps: usize, torch: (f64, f64)) {
    let mut rng = Rng::new(0);
    let mut shape = vec![batch];
    shape.extend(model.input_shape());
    let x = randn(&shape, &mut rng);
    let eps = randn(&shape, &mut rng);
    let t: Vec<f32> = (0..batch).map(|i| ((i * 37) % 1000) as f32).collect();
    let n = x.len() as f32;
    if std::env::var_os("PROBE_INFER_ONLY").is_some() {
        // For profilers: inference alone.
        for _ in 0..reps {
            black_box(model.infer(&x, &t, None).unwrap());
        }
        return;
    }
    let m0 = diffusion_nn::gemm_macs();
    black_box(model.infer(&x, &t, None).unwrap());
    let fwd_flops = 2.0 * (diffusion_nn::gemm_macs() - m0) as f64;
    let (train, train_cpu) = time(reps, || {
        model.zero_grad();
        let (y, cache) = model.forward(&x, &t, None).unwrap();
        let dy = (&y - &eps) * (2.0 / n);
        black_box(model.backward(&cache, &dy).unwrap());
    });
    let (infer, infer_cpu) = time(reps, || {
        black_box(model.infer(&x, &t, None).unwrap());
    });
    println!(
        "{name:10} train {:8.1} ms (cpu {:8.1} ms, torch x{:.2})  infer {:8.1} ms (cpu {:8.1} ms, torch x{:.2})  fwd {:.2} GFLOP, infer {:.0} GFLOP/s",
        train * 1e3,
        train_cpu * 1e3,
        torch.0 / train,
        infer * 1e3,
        infer_cpu * 1e3,
        torch.1 / infer,
        fwd_flops / 1e9,
        fwd_flops / infer / 1e9,
    );
}

fn main() {
    diffusion_nn::alloc::keep_freed_memory();
    let which = std::env::args().nth(1).unwrap_or_else(|| "all".into());
    let reps: usize = std::env::args().nth(2).and_then(|v| v.parse().ok()).unwrap_or(5);
    let mut rng = Rng::new(1);
    let want = |m: &str| which == "all" || which == m;
    if want("mlp") {
        let m = MlpDenoiser::<f32>::new(MlpConfig::default(), &mut rng).unwrap();
        run("mlp", m, 4096, reps * 4, (0.0363, 0.00825));
    }
    if want("dit") {
        let m = Dit::<f32>::new(DitConfig::default(), &mut rng).unwrap();
        run("dit-tiny", m, 64, reps, (0.496, 0.153));
    }
    if want("unet") {
        let m = UNet::<f32>::new(UNetConfig::default(), &mut rng).unwrap();
        run("unet-small", m, 16, reps, (0.674, 0.200));
    }
    if want("whitebox") {
        let m = WhiteBoxDit::<f32>::new(Default::default(), &mut rng).unwrap();
        run("wb-dit", m, 64, reps, (f64::NAN, f64::NAN));
    }
}
