//! Training works end to end: `diffusion-nn`'s MLP learns the 8-Gaussian ring. Measured by the held-out
//! loss and by the sliced Wasserstein distance of DDIM samples to fresh data.

mod common;

use std::sync::Arc;

use common::{eight_gaussians, linear_alphas_cumprod, sliced_wasserstein};
use diffusion_core::{Convention, NoiseSchedule, Rng};
use diffusion_nn::models::{MlpConfig, MlpDenoiser};
use diffusion_train::{
    Dataset, LevelSampler, LrSchedule, Network, Objective, TimeDistribution, TrainConfig, Trainer,
    weighted_mse,
};
use ndarray::{ArrayD, IxDyn};

fn randn(rng: &mut Rng, shape: &[usize]) -> ArrayD<f64> {
    let mut v = vec![0.0; shape.iter().product()];
    rng.fill_normal(&mut v);
    ArrayD::from_shape_vec(IxDyn(shape), v).unwrap()
}

/// The `diffusion-nn` MLP denoiser (the reference architecture, smaller).
fn mlp(seed: u64) -> MlpDenoiser<f64> {
    let cfg = MlpConfig {
        dim: 2,
        hidden: 64,
        depth: 2,
        temb: 32,
    };
    MlpDenoiser::new(cfg, &mut Rng::new(seed)).unwrap()
}

/// Mean objective loss of `model` on a fixed held-out batch (same draws for every model).
fn held_out_loss(model: &impl Network<f64>, objective: &Objective, sampler: &LevelSampler) -> f64 {
    let mut rng = Rng::with_stream(1234, 9);
    let x0 = eight_gaussians(2048, 2.0, 0.1, &mut rng);
    let levels = sampler.sample(&mut rng, 2048);
    let eps = randn(&mut rng, &[2048, 2]);
    let batch = objective.prepare(&x0, &eps, &levels).unwrap();
    let (out, _) = model.forward(&batch.input, &batch.time, None).unwrap();
    weighted_mse(&out, &batch.target, &batch.weights).unwrap().0
}

/// Deterministic DDIM (eta = 0) on the discrete schedule with an epsilon model.
fn ddim(model: &impl Network<f64>, acp: &[f64], steps: usize, n: usize, seed: u64) -> ArrayD<f64> {
    let mut x = randn(&mut Rng::new(seed), &[n, 2]);
    let ts: Vec<usize> = (0..steps)
        .rev()
        .map(|k| k * acp.len() / steps + (acp.len() / steps - 1))
        .collect();
    for (k, &t) in ts.iter().enumerate() {
        let (eps, _) = model.forward(&x, &vec![t as f64; n], None).unwrap();
        let a_t = acp[t];
        let a_prev = ts.get(k + 1).map_or(1.0, |&p| acp[p]);
        let x0 = (&x - &(&eps * (1.0 - a_t).sqrt())) / a_t.sqrt();
        x = &x0 * a_prev.sqrt() + &eps * (1.0 - a_prev).sqrt();
    }
    x
}

#[test]
fn mlp_learns_eight_gaussians_with_epsilon_objective() {
    let data = eight_gaussians(4096, 2.0, 0.1, &mut Rng::new(1));
    let acp = linear_alphas_cumprod(1000);
    let sampler = LevelSampler::discrete(acp.clone()).unwrap();
    let mut config = TrainConfig::new(256, 42);
    config.lr = LrSchedule {
        peak: 3e-3,
        warmup_steps: 20,
        total_steps: 800,
        min_lr: 1e-4,
    };
    config.clip_grad_norm = Some(1.0);
    let untrained = mlp(3);
    let mut trainer = Trainer::new(untrained.clone(), sampler.clone(), config.clone()).unwrap();
    let mut log = Vec::new();
    trainer
        .train(&Dataset::new(&data).unwrap(), 800, |s| {
            log.push((s.step, s.loss, s.lr))
        })
        .unwrap();
    assert_eq!(log.len(), 800);
    assert_eq!(log[0].0, 1);
    assert_eq!(log[0].2, 0.0, "warm-up starts at lr 0");
    assert!((log[20].2 - 3e-3).abs() < 1e-12);

    let before = held_out_loss(&untrained, &config.objective, &sampler);
    let after = held_out_loss(trainer.model(), &config.objective, &sampler);
    eprintln!("held-out epsilon loss: untrained {before:.4}, trained {after:.4}");
    // An untrained net sits near E|eps|^2 = 1; a net predicting 0 scores exactly 1 on average.
    assert!(after < 0.5 * before && after < 0.6, "loss {before} -> {after}");

    let reference = eight_gaussians(1000, 2.0, 0.1, &mut Rng::new(77));
    let floor = sliced_wasserstein(
        &eight_gaussians(1000, 2.0, 0.1, &mut Rng::new(78)),
        &reference,
        64,
    );
    let sw_untrained = sliced_wasserstein(&ddim(&untrained, &acp, 50, 1000, 5), &reference, 64);
    let sw_trained = sliced_wasserstein(&ddim(trainer.model(), &acp, 50, 1000, 5), &reference, 64);
    eprintln!(
        "sliced W2: untrained {sw_untrained:.3}, trained {sw_trained:.3}, data-vs-data floor {floor:.3}"
    );
    assert!(
        sw_trained < 0.3 * sw_untrained,
        "SW {sw_untrained} -> {sw_trained}"
    );
    // Within 3x of the sampling noise floor of two independent 1000-point data sets (0.13).
    assert!(
        sw_trained < 0.4,
        "trained samples too far from data: SW {sw_trained}"
    );
}

/// Rectified flow with the time scaled by 1000 so the MLP's sinusoidal embedding sees the
/// same range as for integer timesteps: alpha = 1 - t/1000, sigma = t/1000.
struct ScaledFlow;
impl NoiseSchedule for ScaledFlow {
    fn alpha(&self, t: f64) -> f64 {
        1.0 - t / 1000.0
    }
    fn sigma(&self, t: f64) -> f64 {
        t / 1000.0
    }
    fn t_range(&self) -> (f64, f64) {
        (0.0, 1000.0)
    }
    fn convention(&self) -> Convention {
        Convention::Other
    }
}

#[test]
fn mlp_learns_eight_gaussians_with_flow_matching() {
    let data = eight_gaussians(4096, 2.0, 0.1, &mut Rng::new(2));
    let sampler = LevelSampler::continuous(
        Arc::new(ScaledFlow),
        TimeDistribution::LogitNormal { mean: 0.0, std: 1.0 },
    )
    .unwrap();
    let mut config = TrainConfig::new(256, 43);
    config.objective = Objective::Predict {
        target: diffusion_core::Parameterization::Flow,
        weighting: diffusion_train::Weighting::Uniform,
    };
    config.lr = LrSchedule {
        peak: 3e-3,
        warmup_steps: 20,
        total_steps: 800,
        min_lr: 1e-4,
    };
    let untrained = mlp(4);
    let mut trainer = Trainer::new(untrained.clone(), sampler.clone(), config.clone()).unwrap();
    trainer.train(&Dataset::new(&data).unwrap(), 800, |_| {}).unwrap();
    let before = held_out_loss(&untrained, &config.objective, &sampler);
    let after = held_out_loss(trainer.model(), &config.objective, &sampler);
    eprintln!("held-out flow loss: untrained {before:.4}, trained {after:.4}");
    // The flow target eps - x0 keeps a large irreducible variance, so the drop is modest.
    assert!(after < 0.9 * before, "loss {before} -> {after}");

    // Euler from t = 1000 (noise) to 0 along the learned velocity u = eps - x0.
    let euler = |model: &MlpDenoiser<f64>| {
        let n = 1000;
        let mut x = randn(&mut Rng::new(6), &[n, 2]);
        let steps = 50;
        for k in 0..steps {
            let t = 1000.0 * (1.0 - k as f64 / steps as f64);
            let (u, _) = model.forward(&x, &vec![t; n], None).unwrap();
            x = &x - &(&u * (1.0 / steps as f64));
        }
        x
    };
    let reference = eight_gaussians(1000, 2.0, 0.1, &mut Rng::new(79));
    let sw_untrained = sliced_wasserstein(&euler(&untrained), &reference, 64);
    let sw_trained = sliced_wasserstein(&euler(trainer.model()), &reference, 64);
    eprintln!("flow sliced W2: untrained {sw_untrained:.3}, trained {sw_trained:.3}");
    // Untrained, the sampler returns roughly its N(0, I) input, already fairly close in SW.
    assert!(
        sw_trained < 0.5 * sw_untrained && sw_trained < 0.3,
        "SW {sw_untrained} -> {sw_trained}"
    );
}
