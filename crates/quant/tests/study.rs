//! The quality study on the digits data (8x8 images, `data/digits`): an MLP denoiser trained
//! with the project's trainer, then quantized several ways and compared with its full
//! precision self. `cargo test -p diffusion-quant --test study -- --ignored --nocapture`
//! prints the README's table (a few minutes on 2 cores). The data check runs always.

use diffusion_core::{Denoiser, NoiseLevel, Parameterization, Rng};
use diffusion_nn::models::mlp::{MlpConfig, MlpDenoiser};
use diffusion_quant::calib::{self, Calibration, StepSelection};
use diffusion_quant::kernel::Backend;
use diffusion_quant::quantizer::{Estimator, Granularity, IntFormat, Quantizer, Scheme};
use diffusion_quant::{ActMode, ActRecipe, Exec, QuantMlp, Recipe};
use diffusion_schedules::DiscreteSchedule;
use diffusion_schedules::config::DiscreteScheduleConfig;
use diffusion_solvers::{Ddim, DdimConfig, Scheduler, sample_all};
use diffusion_testbed::metrics::{Bandwidth, frechet_distance, mmd2_rbf};
use diffusion_train::{Dataset, LevelSampler, LrSchedule, TrainConfig, Trainer};
use ndarray::{Array2, ArrayD, IxDyn};

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/digits");

/// The digits as `[n, 64]` in [-1, 1] and their labels.
fn digits() -> (Vec<f32>, Vec<u8>) {
    let images: ArrayD<u8> =
        diffusion_testbed::io::read_npy(format!("{DATA}/images_u8.npy")).expect("data/digits/images_u8.npy");
    let labels: ArrayD<u8> =
        diffusion_testbed::io::read_npy(format!("{DATA}/labels_u8.npy")).expect("data/digits/labels_u8.npy");
    assert_eq!(images.shape(), [1797, 8, 8]);
    assert_eq!(labels.shape(), [1797]);
    (
        images.iter().map(|&v| v as f32 / 8.0 - 1.0).collect(),
        labels.iter().copied().collect(),
    )
}

#[test]
fn digits_data_is_in_the_repository() {
    let (x, y) = digits();
    assert!(x.iter().all(|v| (-1.0..=1.0).contains(v)));
    let mut counts = [0usize; 10];
    for &l in &y {
        counts[l as usize] += 1;
    }
    // meta.json's class counts.
    assert_eq!(counts, [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]);
}

fn int_q(bits: u32, sym: bool, g: Granularity) -> Quantizer {
    Quantizer::new(Scheme::Int(IntFormat::new(bits, sym).unwrap()), g)
}

fn static_act(q: Quantizer) -> Option<ActRecipe> {
    Some(ActRecipe {
        quantizer: q,
        mode: ActMode::Static,
    })
}

fn ddim(steps: usize) -> Ddim {
    let mut s = Ddim::new(Ddim::schedule_defaults(), DdimConfig::default()).unwrap();
    Scheduler::<ArrayD<f32>>::set_timesteps(&mut s, steps).unwrap();
    s
}

fn to_2d(v: &[f32], cols: usize) -> Array2<f64> {
    Array2::from_shape_vec((v.len() / cols, cols), v.iter().map(|&x| x as f64).collect()).unwrap()
}

#[test]
#[ignore = "slow study: trains a model and prints the README table"]
fn quality_study() {
    let (x, _) = digits();
    let n_train = 1500;
    let (train, held) = x.split_at(n_train * 64);
    let sched = DiscreteSchedule::from_config(&DiscreteScheduleConfig::default()).unwrap();
    let acp: Vec<f64> = sched.alphas_cumprod.iter().map(|&a| a as f64).collect();

    let cfg = MlpConfig {
        dim: 64,
        hidden: 256,
        depth: 3,
        temb: 128,
    };
    let model = MlpDenoiser::<f32>::new(cfg, &mut Rng::new(0)).unwrap();
    let steps = 6000;
    let mut tc = TrainConfig::new(256, 1);
    tc.lr = LrSchedule {
        peak: 2e-3,
        warmup_steps: 200,
        total_steps: steps,
        min_lr: 1e-5,
    };
    tc.clip_grad_norm = Some(1.0);
    let data = ArrayD::from_shape_vec(IxDyn(&[n_train, 64]), train.to_vec()).unwrap();
    let mut trainer = Trainer::new(model, LevelSampler::discrete(acp.clone()).unwrap(), tc).unwrap();
    let t0 = std::time::Instant::now();
    let mut last = 0.0;
    trainer
        .train(&Dataset::new(&data).unwrap(), steps, |s| last = s.loss)
        .unwrap();
    eprintln!(
        "trained {steps} steps in {:.1} s, last loss {last:.4}",
        t0.elapsed().as_secs_f64()
    );
    let net = trainer.into_model();
    let eps = Parameterization::Epsilon;
    let float = QuantMlp::float(&net, eps).unwrap();

    // Calibration sets of 1024 points each.
    let count = 1024;
    let traj = |sel| calib::from_trajectories(&float, &mut ddim(50), &[64], 128, sel, 3).unwrap();
    let uniform = traj(StepSelection::Uniform { count });
    let normal = traj(StepSelection::Normal {
        count,
        mean: 0.6,
        std: 0.2,
    });
    let levels: Vec<NoiseLevel> = uniform.batches.iter().map(|b| b.level).collect();
    let raw = calib::gaussian_noise(64, count, &levels, 4).unwrap();
    let fwd = calib::forward_noised(train, 64, count, &levels, 5, false).unwrap();

    // Recipes (all layers quantized alike).
    let preset = |n| diffusion_quant::preset(n).unwrap();
    let (w8a8, w4a8, w4a8_fp, w4a4, w4a4_svd) = (
        preset("w8a8"),
        preset("w4a8"),
        preset("w4a8-fp"),
        preset("w4a4"),
        preset("w4a4-svd"),
    );
    let w4a8_naive = Recipe {
        weight: Some(int_q(4, true, Granularity::PerTensor)),
        act: static_act(int_q(8, false, Granularity::PerTensor)),
        ..Recipe::default()
    };
    let w6a6 = Recipe {
        weight: Some(int_q(6, true, Granularity::PerRow)),
        act: static_act(int_q(6, false, Granularity::PerTensor).with_estimator(Estimator::LP24)),
        ..Recipe::default()
    };
    let runs: Vec<(&str, Recipe, &Calibration)> = vec![
        ("W8A8 (traj/uniform)", w8a8, &uniform),
        (
            "W4A8-INT naive (per-tensor min/max W, raw-noise A)",
            w4a8_naive,
            &raw,
        ),
        ("W4A8-INT (traj/uniform)", w4a8, &uniform),
        ("W4A8-FP E2M1/E4M3 pow2 (traj/uniform)", w4a8_fp, &uniform),
        ("W4A4 plain", w4a4, &uniform),
        ("W4A4 smooth + rank-32 branch", w4a4_svd, &uniform),
        ("W6A6 static, raw noise calib", w6a6, &raw),
        ("W6A6 static, forward-noised data", w6a6, &fwd),
        ("W6A6 static, traj/normal (PTQ4DM)", w6a6, &normal),
        ("W6A6 static, traj/uniform (Q-Diffusion)", w6a6, &uniform),
    ];

    // Per-timestep epsilon MSE on held-out digits.
    let ts = [999usize, 800, 600, 400, 200, 100, 50, 10];
    let n_held = held.len() / 64;
    let mut rng = Rng::new(6);
    let cases: Vec<(ArrayD<f32>, ArrayD<f32>, NoiseLevel)> = ts
        .iter()
        .map(|&t| {
            let level = sched.level(t);
            let e: Vec<f32> = (0..held.len()).map(|_| rng.normal() as f32).collect();
            let xt: Vec<f32> = held
                .iter()
                .zip(&e)
                .map(|(&x0, &n)| (level.alpha * x0 as f64 + level.sigma * n as f64) as f32)
                .collect();
            let shape = IxDyn(&[n_held, 64]);
            (
                ArrayD::from_shape_vec(shape.clone(), xt).unwrap(),
                ArrayD::from_shape_vec(shape, e).unwrap(),
                level,
            )
        })
        .collect();
    let mse = |a: &ArrayD<f32>, b: &ArrayD<f32>| {
        a.iter()
            .zip(b)
            .map(|(u, v)| ((u - v) as f64).powi(2))
            .sum::<f64>()
            / a.len() as f64
    };
    let fp_out: Vec<ArrayD<f32>> = cases
        .iter()
        .map(|(xt, _, l)| float.predict(xt, *l).unwrap())
        .collect();

    // Sample quality: DDIM-50 from 500 seeded noises against the 1500 training digits.
    let n_s = 500;
    let mut nr = Rng::new(8);
    let x_t = ArrayD::from_shape_vec(
        IxDyn(&[n_s, 64]),
        (0..n_s * 64).map(|_| nr.normal() as f32).collect(),
    )
    .unwrap();
    let reference = to_2d(train, 64);
    let quality = |m: &QuantMlp| {
        let s = sample_all(&mut ddim(50), m, &x_t, None).unwrap();
        let s = to_2d(s.as_slice().unwrap(), 64);
        let (mmd, _) = mmd2_rbf(s.view(), reference.view(), Bandwidth::Fixed(4.0)).unwrap();
        let fd = frechet_distance(s.view(), reference.view()).unwrap();
        (mmd, fd)
    };

    let header = ts
        .iter()
        .map(|t| format!("t={t}"))
        .collect::<Vec<_>>()
        .join(" | ");
    println!("| model | {header} | mean | MMD^2 (h=4) | pixel FD | weight bytes |");
    println!("|---|{}---|---|---|---|", "---|".repeat(ts.len()));
    let own: Vec<f64> = cases
        .iter()
        .zip(&fp_out)
        .map(|((_, e, _), o)| mse(o, e))
        .collect();
    let (mmd, fd) = quality(&float);
    let (held2, _) = (to_2d(held, 64), ());
    let (mmd_data, _) = mmd2_rbf(held2.view(), reference.view(), Bandwidth::Fixed(4.0)).unwrap();
    println!(
        "| f32 (its own eps-MSE vs true noise) | {} | {:.4} | {mmd:.5} | {fd:.3} | {} |",
        own.iter()
            .map(|v| format!("{v:.4}"))
            .collect::<Vec<_>>()
            .join(" | "),
        own.iter().sum::<f64>() / own.len() as f64,
        float.weight_bytes()
    );
    println!(
        "| held-out digits vs training digits | {} | | {mmd_data:.5} | {:.3} | |",
        " | ".repeat(ts.len() - 1),
        frechet_distance(held2.view(), reference.view()).unwrap()
    );
    for (name, recipe, cal) in runs {
        let t0 = std::time::Instant::now();
        let q = QuantMlp::quantize(&net, eps, Some(cal), |_, _| recipe).unwrap();
        let q = if q.layers[0].packed.is_some() && q.layers[0].act.is_some() {
            q.with_exec(Exec::Int(Backend::detect()))
        } else {
            q
        };
        let errs: Vec<f64> = cases
            .iter()
            .zip(&fp_out)
            .map(|((xt, _, l), f)| mse(&q.predict(xt, *l).unwrap(), f))
            .collect();
        let (mmd, fd) = quality(&q);
        println!(
            "| {name}{} | {} | {:.5} | {mmd:.5} | {fd:.3} | {} |",
            if matches!(q.exec, Exec::Int(_)) {
                " [int]"
            } else {
                ""
            },
            errs.iter()
                .map(|v| format!("{v:.5}"))
                .collect::<Vec<_>>()
                .join(" | "),
            errs.iter().sum::<f64>() / errs.len() as f64,
            q.weight_bytes()
        );
        eprintln!("  ({name}: {:.1} s)", t0.elapsed().as_secs_f64());
    }
}
