//! `diffuse train`: train an MLP, UNet or DiT denoiser on a dataset, with checkpoints and resume.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use diffusion_core::Parameterization;
use diffusion_schedules::BetaSchedule;
use diffusion_train::{
    Dataset, EmaConfig, LevelSampler, LrSchedule, Objective, TrainConfig, Trainer, Weighting,
};
use serde_json::json;

use diffusion_train::trained::{AnyNet, Architecture, ModelSpec, TrainingData};

/// The network to train.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ModelKind {
    /// MLP on vectors [samples, dim] (--hidden, --depth).
    Mlp,
    /// UNet on square images [samples, channels, size, size] (--channels).
    Unet,
    /// DiT on square images [samples, channels, size, size] (--hidden, --depth, --patch).
    Dit,
}

/// What the network predicts (the regression target of the loss).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Prediction {
    /// The noise (DDPM).
    Epsilon,
    /// v = alpha * eps - sigma * x0.
    V,
    /// The clean sample x0.
    Sample,
}

impl Prediction {
    pub fn parameterization(self) -> Parameterization {
        match self {
            Self::Epsilon => Parameterization::Epsilon,
            Self::V => Parameterization::V,
            Self::Sample => Parameterization::Sample,
        }
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// rings, moons, swiss_roll, checkerboard, gmm:SPEC.json (vectors); shapes[:SIZE],
    /// shapes_rgb[:SIZE] (1 or 3 x SIZE x SIZE images, SIZE 16 by default); npy:FILE.npy
    /// ([samples, dim] for the MLP, [samples, channels, size, size] for UNet and DiT).
    #[arg(long, default_value = "rings")]
    pub dataset: String,
    /// The network.
    #[arg(long, value_enum, default_value_t = ModelKind::Mlp)]
    pub model: ModelKind,
    /// What the network predicts (recorded in the checkpoint, declared to the samplers).
    #[arg(long, value_enum, default_value_t = Prediction::Epsilon)]
    pub prediction: Prediction,
    /// Samples drawn from a built-in, mixture or shapes dataset.
    #[arg(long, default_value_t = 8192)]
    pub num_data: usize,
    /// Training noise schedule (diffusers beta_schedule).
    #[arg(long, default_value = "linear")]
    pub schedule: String,
    /// Optimizer steps in total, counting those of a resumed run. With --resume the run
    /// continues to this many steps and its cosine decay is re-targeted to end here (warm-up,
    /// peak and final rate kept); the saved run's own length continues it bit-identically.
    #[arg(long, default_value_t = 3000)]
    pub steps: u64,
    #[arg(long, default_value_t = 256)]
    pub batch: usize,
    /// Peak learning rate (linear warm-up over 2% of the steps, cosine decay to 5%). Ignored
    /// with --resume, which keeps the saved run's learning rates and batch size.
    #[arg(long, default_value_t = 2e-3)]
    pub lr: f64,
    /// Width of the MLP or DiT.
    #[arg(long, default_value_t = 128)]
    pub hidden: usize,
    /// Hidden layers of the MLP, blocks of the DiT.
    #[arg(long, default_value_t = 3)]
    pub depth: usize,
    /// Channels of the UNet's first level (the second has twice as many).
    #[arg(long, default_value_t = 32)]
    pub channels: usize,
    /// DiT patch size (must divide the image size).
    #[arg(long, default_value_t = 2)]
    pub patch: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Checkpoint directory (model.safetensors, ema.safetensors, optimizer state, config).
    #[arg(long, default_value = "out/model")]
    pub out: PathBuf,
    /// Save a checkpoint every this many steps (and at the end).
    #[arg(long, default_value_t = 1000)]
    pub save_every: u64,
    /// Continue the run saved in --out up to --steps steps in total (the learning-rate
    /// schedule is stretched or shortened to end there). Model and schedule options must
    /// match the saved run; its training options (--lr, --batch) are kept.
    #[arg(long)]
    pub resume: bool,
    #[arg(long)]
    pub json: bool,
}

/// Trains (or resumes) and returns the final checkpoint's spec and mean loss of the last 100 steps.
pub fn train(args: &Args, progress: bool) -> Result<(ModelSpec, f64)> {
    let data = crate::data::load(&args.dataset, args.num_data, args.seed)?;
    let architecture = architecture(args, data.samples.shape())?;
    let schedule = BetaSchedule::from_name(&args.schedule)?;
    let data_record = TrainingData::of(&args.dataset, &data.samples);
    let spec = ModelSpec {
        data: Some(data_record.clone()),
        ..ModelSpec::new(architecture, args.prediction.parameterization(), schedule)
    };
    let sampler = LevelSampler::discrete(spec.alphas_cumprod()?)?;
    let mut trainer: Trainer<f64, AnyNet> = if args.resume {
        let saved = diffusion_train::trained::read_spec(&args.out)?;
        let model_options = |s: &ModelSpec| ModelSpec {
            data: None,
            ..s.clone()
        };
        if model_options(&saved) != model_options(&spec) {
            bail!("--resume with different model or schedule options than the saved run: {saved:?}");
        }
        // Other data would continue the run silently on a different dataset (checkpoints
        // written before the record existed have nothing to compare).
        if let Some(d) = saved.data.as_ref().filter(|d| !d.same_samples(&data_record)) {
            bail!(
                "--resume must train on the run's data: it started with --dataset {} ({:?} samples), \
                 and --dataset {} --num-data {} --seed {} loads {:?} samples with other values",
                d.dataset,
                d.shape,
                args.dataset,
                args.num_data,
                args.seed,
                data_record.shape
            );
        }
        let mut trainer = Trainer::resume(&args.out, spec.build(args.seed)?, sampler)?;
        let done = trainer.steps_done();
        if done >= args.steps {
            bail!(
                "the run in {} already has {done} steps; ask for more with --steps",
                args.out.display()
            );
        }
        // --steps is the run's new length: the cosine decay ends there, not at the length
        // the run was started with (a no-op when they agree, keeping resume bit-identical).
        trainer.set_total_steps(args.steps).with_context(|| {
            format!(
                "cannot continue the run in {} to {} steps",
                args.out.display(),
                args.steps
            )
        })?;
        trainer
    } else {
        let mut config = TrainConfig::new(args.batch, args.seed);
        config.lr = LrSchedule {
            peak: args.lr,
            warmup_steps: (args.steps / 50).max(1),
            total_steps: args.steps,
            min_lr: args.lr * 0.05,
        };
        config.objective = Objective::Predict {
            target: spec.prediction_type,
            weighting: Weighting::Uniform,
        };
        config.clip_grad_norm = Some(1.0);
        config.ema = Some(EmaConfig {
            decay: 0.995,
            warmup: true,
        });
        Trainer::new(spec.build(args.seed)?, sampler, config)?
    };
    let dataset = Dataset::new(&data.samples)?;
    let done = trainer.steps_done();
    let bar = if progress {
        let b = indicatif::ProgressBar::new(args.steps);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "training {bar:30} {pos}/{len} steps  loss {msg}  {elapsed}",
            )
            .expect("valid template"),
        );
        b.set_position(done);
        b
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut recent = std::collections::VecDeque::new();
    let model_config = serde_json::to_value(&spec)?;
    while trainer.steps_done() < args.steps {
        let chunk =
            (args.save_every - trainer.steps_done() % args.save_every).min(args.steps - trainer.steps_done());
        trainer.train(&dataset, chunk, |s| {
            recent.push_back(s.loss);
            if recent.len() > 100 {
                recent.pop_front();
            }
            bar.set_position(s.step);
            if s.step % 25 == 0 {
                bar.set_message(format!("{:.4}", recent.iter().sum::<f64>() / recent.len() as f64));
            }
        })?;
        trainer.save(&args.out, &model_config)?;
    }
    bar.finish_and_clear();
    let loss = recent.iter().sum::<f64>() / recent.len().max(1) as f64;
    Ok((spec, loss))
}

/// The network `args` ask for, sized for data of `shape` ([samples, ...]).
fn architecture(args: &Args, shape: &[usize]) -> Result<Architecture> {
    if args.hidden == 0 || args.channels < 2 || args.patch == 0 {
        bail!("--hidden and --patch must be at least 1, --channels at least 2");
    }
    match (args.model, shape) {
        (ModelKind::Mlp, &[_, dim]) => Ok(Architecture::mlp(dim, args.hidden, args.depth)),
        (ModelKind::Mlp, _) => bail!(
            "--model mlp trains on vectors [samples, dim]; the dataset has shape {shape:?} \
             (use --model unet or dit for images)"
        ),
        (ModelKind::Unet | ModelKind::Dit, &[_, c, h, w]) if h == w => Ok(if args.model == ModelKind::Unet {
            Architecture::small_unet(c, h, args.channels)
        } else {
            Architecture::small_dit(c, h, args.hidden, args.depth, args.patch)
        }),
        (ModelKind::Unet | ModelKind::Dit, _) => bail!(
            "--model {} trains on square images [samples, channels, size, size]; the dataset has \
             shape {shape:?}",
            if args.model == ModelKind::Unet {
                "unet"
            } else {
                "dit"
            }
        ),
    }
}

pub fn run(args: Args) -> Result<()> {
    let start = Instant::now();
    let (spec, loss) = train(&args, !args.json)?;
    let seconds = start.elapsed().as_secs_f64();
    if args.json {
        println!(
            "{}",
            json!({"steps": args.steps, "loss": loss, "seconds": seconds, "out": args.out, "model": spec})
        );
    } else {
        println!(
            "trained the {} for {} steps in {seconds:.1} s; mean loss of the last 100 steps {loss:.4}; \
             checkpoint in {}",
            spec.model.kind(),
            args.steps,
            args.out.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use diffusion_nn::Parameters;
    use diffusion_train::TensorFile;
    use diffusion_train::checkpoint::{CONFIG_FILE, EMA_FILE, MODEL_FILE, TRAINER_FILE};
    use serde_json::Value;

    fn tiny_dit(out: PathBuf, steps: u64, resume: bool) -> Args {
        Args {
            dataset: "shapes_rgb:8".into(),
            model: ModelKind::Dit,
            prediction: Prediction::Epsilon,
            num_data: 32,
            schedule: "linear".into(),
            steps,
            batch: 8,
            lr: 1e-2,
            hidden: 16,
            depth: 1,
            channels: 4,
            patch: 2,
            seed: 3,
            out,
            save_every: 1000,
            resume,
            json: true,
        }
    }

    fn read_json(path: PathBuf) -> Value {
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    }

    #[test]
    fn resume_to_more_steps_stretches_the_schedule() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("dit");
        train(&tiny_dit(out.clone(), 4, false), false).unwrap();
        let lr = |out: &PathBuf| read_json(out.join(CONFIG_FILE))["train"]["lr"].clone();
        assert_eq!(lr(&out)["total_steps"], 4);
        assert_eq!(lr(&out)["warmup_steps"], 1);

        // --lr differs on resume: ignored, the saved run's rates are kept.
        let mut more = tiny_dit(out.clone(), 10, true);
        more.lr = 5.0;
        train(&more, false).unwrap();
        assert_eq!(read_json(out.join(TRAINER_FILE))["step"], 10);
        assert_eq!(
            lr(&out)["total_steps"],
            10,
            "the decay now ends at the new --steps"
        );
        assert_eq!(lr(&out)["warmup_steps"], 1, "warm-up kept");
        assert_eq!(lr(&out)["peak"], 1e-2, "peak kept");

        // Asking for no more steps than done is refused.
        let err = train(&tiny_dit(out.clone(), 10, true), false).unwrap_err();
        assert!(err.to_string().contains("already has 10 steps"), "{err}");
    }

    #[test]
    fn resume_refuses_other_data() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("dit");
        train(&tiny_dit(out.clone(), 2, false), false).unwrap();
        let recorded = diffusion_train::trained::read_spec(&out).unwrap().data.unwrap();
        assert_eq!(recorded.dataset, "shapes_rgb:8");
        assert_eq!(recorded.shape, [32, 3, 8, 8]);
        for change in [(|a: &mut Args| a.num_data = 64) as fn(&mut Args), |a| a.seed = 4] {
            let mut other = tiny_dit(out.clone(), 4, true);
            change(&mut other);
            let err = train(&other, false).unwrap_err().to_string();
            assert!(err.contains("must train on the run's data"), "{err}");
            assert!(
                err.contains("started with --dataset shapes_rgb:8 ([32, 3, 8, 8] samples)"),
                "{err}"
            );
        }
        // The same data resumes.
        train(&tiny_dit(out.clone(), 4, true), false).unwrap();
        assert_eq!(read_json(out.join(TRAINER_FILE))["step"], 4);
        // A checkpoint written before the data record existed resumes (nothing to compare),
        // and records its data from then on.
        let mut config = read_json(out.join(CONFIG_FILE));
        config["model"].as_object_mut().unwrap().remove("data");
        std::fs::write(out.join(CONFIG_FILE), serde_json::to_vec(&config).unwrap()).unwrap();
        let mut other_seed = tiny_dit(out.clone(), 6, true);
        other_seed.seed = 4;
        train(&other_seed, false).unwrap();
        assert_eq!(read_json(out.join(TRAINER_FILE))["step"], 6);
        assert!(diffusion_train::trained::read_spec(&out).unwrap().data.is_some());
    }

    /// The sampler's model is the EMA file verbatim: averaged parameters and the buffers
    /// (DiT's `pos`), with nothing laid over from model.safetensors.
    #[test]
    fn sampling_loads_the_complete_ema_state_dict() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("dit");
        train(&tiny_dit(out.clone(), 6, false), false).unwrap();
        let ema = TensorFile::open(out.join(EMA_FILE)).unwrap();
        let raw = TensorFile::open(out.join(MODEL_FILE)).unwrap();
        assert_eq!(ema.names(), raw.names());
        assert!(ema.names().iter().any(|n| n == "pos"));

        let (_, model) = diffusion_train::trained::load(&out).unwrap();
        let (mut params, mut buffers, mut differs_from_raw) = (0, 0, false);
        model.net.visit(&mut |name, p| {
            let want = ema.get::<f64>(name, p.value.shape()).unwrap();
            assert_eq!(p.value, want, "{name}");
            differs_from_raw |= raw.get::<f64>(name, p.value.shape()).unwrap() != want;
            params += 1;
        });
        model.net.visit_buffers(&mut |name, b| {
            assert_eq!(*b, ema.get::<f64>(name, b.shape()).unwrap(), "{name}");
            buffers += 1;
        });
        assert!(params > 0 && buffers == 1 && differs_from_raw);
    }
}
