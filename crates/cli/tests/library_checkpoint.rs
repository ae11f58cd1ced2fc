//! A program that depends only on the library (the `diffusion` facade) trains a model,
//! writes the checkpoint as `diffuse train` does, loads it back and samples it; the
//! `diffuse` binary then samples the same file to the same numbers.

use std::process::Command;

use diffusion::core::{Denoiser, NoiseLevel, Parameterization, Rng};
use diffusion::nn::Network;
use diffusion::schedules::BetaSchedule;
use diffusion::solvers::{Scheduler, by_name, sample_all};
use diffusion::testbed::ToyDataset;
use diffusion::train::trained::{self, Architecture, ModelSpec};
use diffusion::train::{Dataset, LevelSampler, TrainConfig, Trainer};
use ndarray::{ArrayD, IxDyn};

#[test]
fn a_checkpoint_written_by_the_library_samples_the_same_in_the_library_and_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("model");

    // Train a few steps through the library and save as `diffuse train` does.
    let data = ToyDataset::from_name("moons")
        .unwrap()
        .sample(256, &mut Rng::new(5))
        .unwrap()
        .into_dyn();
    let spec = ModelSpec::new(
        Architecture::mlp(2, 16, 2),
        Parameterization::Epsilon,
        BetaSchedule::Linear,
    );
    let sampler = LevelSampler::discrete(spec.alphas_cumprod().unwrap()).unwrap();
    let mut trainer = Trainer::new(spec.build(1).unwrap(), sampler, TrainConfig::new(32, 1)).unwrap();
    let stats = trainer
        .train(&Dataset::new(&data).unwrap(), 10, |_| {})
        .unwrap()
        .unwrap();
    assert!(stats.loss.is_finite());
    trainer
        .save(&ckpt, &serde_json::to_value(&spec).unwrap())
        .unwrap();

    // Load through the library alone: the same spec and the trained network's outputs.
    let (loaded_spec, model) = trained::load(&ckpt).unwrap();
    assert_eq!(loaded_spec, spec);
    let mut z = vec![0.0; 16 * 2];
    Rng::new(9).fill_normal(&mut z);
    let x_t = ArrayD::from_shape_vec(IxDyn(&[16, 2]), z).unwrap();
    let level = NoiseLevel::new(500.0, 0.5, 0.75f64.sqrt());
    let want = trainer.model().infer(&x_t, &[500.0; 16], None).unwrap();
    assert_eq!(model.predict(&x_t, level).unwrap(), want);

    // Sample it through the library...
    let mut scheduler = by_name::<ArrayD<f64>>("ddim", &spec.scheduler_base()).unwrap();
    scheduler.set_timesteps(5).unwrap();
    let ours = sample_all(&mut scheduler, &model, &x_t, None).unwrap();
    assert!(ours.iter().all(|v| v.is_finite()));

    // ...and with `diffuse sample --checkpoint` on the same file and noise.
    let (noise_path, out_path) = (dir.path().join("xt.npy"), dir.path().join("x0.npy"));
    diffusion::testbed::io::write_npy(&noise_path, &x_t).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_diffuse"))
        .args([
            "sample",
            "--checkpoint",
            ckpt.to_str().unwrap(),
            "--scheduler",
            "ddim",
        ])
        .args(["--steps", "5", "--noise", noise_path.to_str().unwrap()])
        .args(["--out", out_path.to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let theirs: ArrayD<f64> = diffusion::testbed::io::read_npy(&out_path).unwrap();
    assert_eq!(theirs, ours);
}
