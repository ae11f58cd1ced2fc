//! `diffuse invert`: data to noise with DDIM inversion or exact EDICT inversion, and the
//! round-trip error of regenerating from the result.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use diffusion_inversion::{Edict, Grid, grid};
use diffusion_schedules::{DiscreteSchedule, TimestepSpacing, spacing::ddim_timesteps};
use serde_json::json;

use crate::io::{NpyArray, write_npy};
use crate::model::GmmProblem;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Method {
    /// Plain DDIM inversion (approximate).
    Ddim,
    /// EDICT's coupled sequences (exact to rounding); writes x_T and its partner y_T.
    Edict,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Analytic Gaussian-mixture problem (spec JSON).
    #[arg(long, value_name = "SPEC.json")]
    pub gmm: PathBuf,
    #[arg(long)]
    pub schedule: Option<String>,
    #[arg(long, value_enum, default_value = "edict")]
    pub method: Method,
    #[arg(long, default_value_t = 50)]
    pub steps: usize,
    /// EDICT's mixing parameter, in (0, 1].
    #[arg(long, default_value_t = 0.93)]
    pub p: f64,
    /// Samples to invert [samples, dim] (.npy).
    #[arg(long, value_name = "X0.npy")]
    pub input: PathBuf,
    /// The inverted noise (.npy; EDICT also writes its partner sequence to `<out>.y.npy`).
    #[arg(long, value_name = "X_T.npy")]
    pub out: PathBuf,
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> Result<()> {
    let problem = GmmProblem::load(&args.gmm, args.schedule.as_deref())?;
    let input =
        NpyArray::read(&args.input).with_context(|| format!("cannot read {}", args.input.display()))?;
    if input.shape().len() != 2 || input.shape()[1] != problem.dim() {
        bail!(
            "the input must have shape [samples, {}], got {:?}",
            problem.dim(),
            input.shape()
        );
    }
    let x0 = input.to_f64();
    let acp: Vec<f32> = problem.spec.schedules[&problem.schedule_name]
        .alphas_cumprod
        .iter()
        .map(|&a| a as f32)
        .collect();
    let schedule = DiscreteSchedule::from_alphas_cumprod(acp);
    let n = schedule.num_train_timesteps();
    let timesteps = ddim_timesteps(TimestepSpacing::Trailing, n, args.steps, 0)?;
    // Sampling ends at the first training step (sigma > 0), where inversion starts.
    let grid = Grid::from_discrete(&schedule, &timesteps, schedule.level(0))?;
    let model = problem.denoiser();
    let f32_out = matches!(input, NpyArray::F32(_));
    let (x_t, error) = match args.method {
        Method::Ddim => {
            let x_t = grid::ddim_invert(&model, &grid, &x0)?;
            let back = grid::ddim_sample(&model, &grid, &x_t)?;
            (x_t, grid::relative_rms(&back, &x0)?)
        }
        Method::Edict => {
            let edict = Edict::new(args.p)?;
            let latent = edict.invert(&model, &grid, &x0)?;
            let back = edict.sample_from(&model, &grid, &latent)?;
            let partner = args.out.with_extension("y.npy");
            write_npy(&partner, &latent.pair.y, f32_out)?;
            (latent.pair.x.clone(), grid::relative_rms(&back.x, &x0)?)
        }
    };
    write_npy(&args.out, &x_t, f32_out)?;
    if args.json {
        println!(
            "{}",
            json!({"method": format!("{:?}", args.method).to_lowercase(), "steps": args.steps, "round_trip_relative_rms": error, "out": args.out})
        );
    } else {
        println!(
            "inverted {} samples with {:?} in {} steps; regenerating gives a relative RMS error of {error:.3e}; wrote {}",
            x0.shape()[0],
            args.method,
            args.steps,
            args.out.display()
        );
    }
    Ok(())
}
