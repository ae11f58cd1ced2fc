//! `diffuse train`: train the MLP denoiser on a dataset, with checkpoints and resume.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use diffusion_nn::models::MlpDenoiser;
use diffusion_schedules::BetaSchedule;
use diffusion_train::{Dataset, EmaConfig, LevelSampler, LrSchedule, TrainConfig, Trainer};
use serde_json::json;

use crate::trained::ModelSpec;

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// rings, moons, swiss_roll, checkerboard, gmm:SPEC.json or npy:FILE.npy ([samples, dim]).
    #[arg(long, default_value = "rings")]
    pub dataset: String,
    /// Samples drawn from a built-in or mixture dataset.
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
    #[arg(long, default_value_t = 128)]
    pub hidden: usize,
    #[arg(long, default_value_t = 3)]
    pub depth: usize,
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
    let dim: usize = data.samples.shape()[1..].iter().product();
    if data.samples.ndim() != 2 {
        bail!(
            "the MLP trains on vectors [samples, dim]; got {:?}",
            data.samples.shape()
        );
    }
    let schedule = BetaSchedule::from_name(&args.schedule)?;
    let spec = ModelSpec::mlp(dim, args.hidden, args.depth, schedule);
    let sampler = LevelSampler::discrete(spec.alphas_cumprod()?)?;
    let mut trainer: Trainer<f64, MlpDenoiser<f64>> = if args.resume {
        let saved: ModelSpec =
            serde_json::from_value(diffusion_train::checkpoint::read_model_config(&args.out)?)
                .context("the checkpoint's model config")?;
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
            "trained {} steps in {seconds:.1} s; mean loss of the last 100 steps {loss:.4}; checkpoint in {}",
            args.steps,
            args.out.display()
        );
    }
    Ok(())
}
