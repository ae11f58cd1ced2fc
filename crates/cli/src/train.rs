//! `diffuse train`: train an MLP, UNet or DiT denoiser on a dataset, with checkpoints and resume.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Result, bail};
use diffusion_core::Parameterization;
use diffusion_schedules::BetaSchedule;
use diffusion_train::{
    Dataset, EmaConfig, LevelSampler, LrSchedule, Objective, TrainConfig, Trainer, Weighting,
};
use serde_json::json;

use crate::trained::{AnyNet, Architecture, ModelSpec};

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
    /// Optimizer steps (in total, counting those of a resumed run).
    #[arg(long, default_value_t = 3000)]
    pub steps: u64,
    #[arg(long, default_value_t = 256)]
    pub batch: usize,
    /// Peak learning rate (linear warm-up over 2% of the steps, cosine decay to 5%).
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
    /// Continue the run saved in --out.
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
    let spec = ModelSpec::new(architecture, args.prediction.parameterization(), schedule);
    let sampler = LevelSampler::discrete(spec.alphas_cumprod()?)?;
    let mut trainer: Trainer<f64, AnyNet> = if args.resume {
        let saved = crate::trained::read_spec(&args.out)?;
        if saved != spec {
            bail!("--resume with different model or schedule options than the saved run: {saved:?}");
        }
        Trainer::resume(&args.out, spec.build(args.seed)?, sampler)?
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
    if done >= args.steps {
        bail!(
            "the run in {} already has {done} steps; ask for more with --steps",
            args.out.display()
        );
    }
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
