//! Training the real `diffusion-nn` MLP: results independent of the rayon thread count,
//! and the EDM objective end to end (Karras sigmas, Euler sampling of the preconditioned
//! denoiser) scored by sliced Wasserstein distance.

mod common;

use common::{eight_gaussians, sliced_wasserstein};
use diffusion_core::Rng;
use diffusion_nn::models::{MlpConfig, MlpDenoiser};
use diffusion_train::{
    Dataset, EdmPrecond, EmaConfig, LevelSampler, LrSchedule, Network, Objective, Parameters, TrainConfig,
    Trainer, weighted_mse,
};
use ndarray::{ArrayD, IxDyn};

fn mlp(seed: u64) -> MlpDenoiser<f32> {
    mlp_sized(seed, 64, 2)
}

fn mlp_sized(seed: u64, hidden: usize, depth: usize) -> MlpDenoiser<f32> {
    let cfg = MlpConfig {
        dim: 2,
        hidden,
        depth,
        temb: 32,
    };
    MlpDenoiser::new(cfg, &mut Rng::new(seed)).unwrap()
}

fn flat(model: &MlpDenoiser<f32>) -> Vec<u32> {
    let mut v = Vec::new();
    model.visit(&mut |_, p| v.extend(p.value.iter().map(|x| x.to_bits())));
    v
}

fn edm_config(seed: u64) -> TrainConfig {
    let mut c = TrainConfig::new(256, seed);
    c.objective = Objective::Edm { sigma_data: 1.4 };
    c.lr = LrSchedule {
        peak: 3e-3,
        warmup_steps: 20,
        total_steps: 800,
        min_lr: 1e-4,
    };
    c.clip_grad_norm = Some(1.0);
    c.ema = Some(EmaConfig {
        decay: 0.99,
        warmup: true,
    });
    c
}

#[test]
fn training_is_independent_of_thread_count() {
    let data = eight_gaussians(512, 2.0, 0.1, &mut Rng::new(1)).mapv(|v| v as f32);
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let sampler = LevelSampler::edm_log_normal(-1.2, 1.2).unwrap();
            let mut t = Trainer::new(mlp(3), sampler, edm_config(9)).unwrap();
            let mut losses = Vec::new();
            t.train(&Dataset::new(&data).unwrap(), 15, |s| {
                losses.push(s.loss.to_bits())
            })
            .unwrap();
            (losses, flat(t.model()))
        })
    };
    assert_eq!(run(1), run(3));
}

/// `D(x; sigma) = c_skip x + c_out F(c_in x, c_noise)`.
fn denoise(model: &MlpDenoiser<f32>, x: &ArrayD<f64>, sigma: f64, sigma_data: f64) -> ArrayD<f64> {
    let p = EdmPrecond::new(sigma, sigma_data).unwrap();
    let n = x.shape()[0];
    let input = x.mapv(|v| (p.c_in * v) as f32);
    let (f, _) = model.forward(&input, &vec![p.c_noise as f32; n], None).unwrap();
    x * p.c_skip + &(f.mapv(f64::from) * p.c_out)
}

/// Deterministic Euler on the probability-flow ODE over Karras et al.'s sigmas (rho = 7).
fn edm_sample(model: &MlpDenoiser<f32>, n: usize, steps: usize, seed: u64) -> ArrayD<f64> {
    let (smin, smax, rho) = (0.002f64, 80.0f64, 7.0);
    let sig = |i: usize| {
        let a = smax.powf(1.0 / rho);
        let b = smin.powf(1.0 / rho);
        (a + i as f64 / (steps - 1) as f64 * (b - a)).powf(rho)
    };
    let mut z = vec![0.0; 2 * n];
    Rng::new(seed).fill_normal(&mut z);
    let mut x = ArrayD::from_shape_vec(IxDyn(&[n, 2]), z).unwrap() * smax;
    for i in 0..steps {
        let (s, s_next) = (sig(i), if i + 1 < steps { sig(i + 1) } else { 0.0 });
        let d = (&x - &denoise(model, &x, s, 1.4)) / s;
        x = &x + &(d * (s_next - s));
    }
    x
}

/// Slow (~1 min): with EDM's normalisation the easy part of denoising is done by c_skip,
/// so the loss plateaus near 1 for ~1200 steps before the MLP finds the ring structure;
/// the Bayes-optimal loss for this data and sigma distribution is 0.557 (Monte Carlo).
#[test]
#[ignore = "slow study: cargo test -p diffusion-train --test nn_mlp -- --ignored"]
fn real_mlp_learns_eight_gaussians_with_edm() {
    let data = eight_gaussians(4096, 2.0, 0.1, &mut Rng::new(2)).mapv(|v| v as f32);
    let sampler = LevelSampler::edm_log_normal(-1.2, 1.2).unwrap();
    let mut config = edm_config(44);
    config.batch_size = 512;
    config.lr = LrSchedule::constant(3e-3);
    let untrained = mlp_sized(5, 128, 3);
    let mut trainer = Trainer::new(untrained.clone(), sampler.clone(), config.clone()).unwrap();
    trainer
        .train(&Dataset::new(&data).unwrap(), 3000, |_| {})
        .unwrap();

    // Held-out loss on fixed draws.
    let held_out = |model: &MlpDenoiser<f32>| {
        let mut rng = Rng::with_stream(1234, 9);
        let x0 = eight_gaussians(2048, 2.0, 0.1, &mut rng).mapv(|v| v as f32);
        let levels = sampler.sample(&mut rng, 2048);
        let mut z = vec![0.0; 4096];
        rng.fill_normal(&mut z);
        let eps = ArrayD::from_shape_vec(IxDyn(&[2048, 2]), z.iter().map(|&v| v as f32).collect()).unwrap();
        let b = config.objective.prepare(&x0, &eps, &levels).unwrap();
        let (out, _) = model.forward(&b.input, &b.time, None).unwrap();
        weighted_mse(&out, &b.target, &b.weights).unwrap().0
    };
    let (before, after) = (held_out(&untrained), held_out(trainer.model()));
    eprintln!("held-out EDM loss: untrained {before:.4}, trained {after:.4}");
    assert!(after < 0.65, "loss {before} -> {after} (optimum 0.557)");

    let mut ema_model = trainer.model().clone();
    trainer.ema().unwrap().copy_to(&mut ema_model).unwrap();
    let reference = eight_gaussians(1000, 2.0, 0.1, &mut Rng::new(80)).mapv(f64::from);
    let sw_untrained = sliced_wasserstein(&edm_sample(&untrained, 1000, 30, 7), &reference, 64);
    let sw_trained = sliced_wasserstein(&edm_sample(trainer.model(), 1000, 30, 7), &reference, 64);
    let sw_ema = sliced_wasserstein(&edm_sample(&ema_model, 1000, 30, 7), &reference, 64);
    eprintln!("EDM sliced W2: untrained {sw_untrained:.3}, trained {sw_trained:.3}, EMA {sw_ema:.3}");
    // Untrained, D = c_skip x already gives a Gaussian with the data's variance (SW ~0.5).
    assert!(
        sw_trained < 0.5 * sw_untrained && sw_trained < 0.3,
        "SW {sw_untrained} -> {sw_trained}"
    );
    assert!(sw_ema < 0.3, "EMA SW {sw_ema}");
}
