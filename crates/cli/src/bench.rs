//! `diffuse bench`: solver accuracy against NFE on an analytic problem.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use diffusion_testbed::metrics;
use ndarray::ArrayD;
use serde_json::json;

use crate::io::{NpyArray, as_2d};
use crate::model::GmmProblem;
use crate::sample::{build_scheduler, read_config, run_sampler};

/// Deterministic schedulers compared by default.
pub const DEFAULT_SCHEDULERS: &[&str] = &[
    "ddim",
    "euler",
    "heun",
    "dpmpp_2m",
    "dpmpp_2m_karras",
    "unipc_bh2",
];

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Analytic Gaussian-mixture problem (spec JSON).
    #[arg(long, value_name = "SPEC.json")]
    pub gmm: PathBuf,
    #[arg(long)]
    pub schedule: Option<String>,
    /// Initial noise x_T [samples, dim] (.npy).
    #[arg(long, value_name = "X_T.npy")]
    pub noise: PathBuf,
    /// The exact probability-flow ODE solution from the same noise [samples, dim] (.npy).
    #[arg(long, value_name = "X0_REF.npy")]
    pub reference: PathBuf,
    /// Schedulers to compare (comma-separated; our names or diffusers class names).
    #[arg(long, value_delimiter = ',')]
    pub schedulers: Option<Vec<String>>,
    /// Extra diffusers config keys for every scheduler (for example timestep_spacing).
    #[arg(long, value_name = "scheduler_config.json")]
    pub config: Option<PathBuf>,
    /// Step counts.
    #[arg(long, value_delimiter = ',', default_value = "5,10,20,50")]
    pub steps: Vec<usize>,
    /// Output folder for table.md, results.json and error_vs_nfe.png.
    #[arg(long, default_value = "out/bench")]
    pub out: PathBuf,
    #[arg(long)]
    pub json: bool,
}

/// One (scheduler, steps) run.
#[derive(Clone, Debug, serde::Serialize)]
pub struct BenchRow {
    pub scheduler: String,
    pub steps: usize,
    pub nfe: usize,
    pub rmse: f64,
}

/// Runs every scheduler at every step count from `x_t` and scores against `reference`.
pub fn accuracy_table(
    problem: &GmmProblem,
    schedulers: &[String],
    config: Option<&serde_json::Value>,
    steps: &[usize],
    x_t: &ArrayD<f64>,
    reference: &ndarray::Array2<f64>,
) -> Result<Vec<BenchRow>> {
    let model = problem.denoiser();
    let mut rows = Vec::new();
    for name in schedulers {
        for &n in steps {
            let mut s = build_scheduler::<ArrayD<f64>>(Some(name), config, &problem.schedule_config())
                .with_context(|| format!("scheduler {name}"))?;
            s.set_timesteps(n)?;
            let (x0, nfe) = run_sampler(s.as_mut(), &model, x_t, 0, false)?;
            let rmse = metrics::rmse(as_2d(&x0, "samples")?.view(), reference.view())?;
            rows.push(BenchRow {
                scheduler: name.clone(),
                steps: n,
                nfe,
                rmse,
            });
        }
    }
    Ok(rows)
}

/// A markdown table: one row per scheduler, one column per step count ("RMSE (NFE)").
pub fn markdown(rows: &[BenchRow], steps: &[usize]) -> String {
    let mut s = String::from("| scheduler |");
    for n in steps {
        s += &format!(" N={n} |");
    }
    s += "\n|---|";
    s += &"---|".repeat(steps.len());
    s += "\n";
    let mut names: Vec<&str> = rows.iter().map(|r| r.scheduler.as_str()).collect();
    names.dedup();
    for name in names {
        s += &format!("| {name} |");
        for n in steps {
            match rows.iter().find(|r| r.scheduler == name && r.steps == *n) {
                Some(r) => s += &format!(" {:.3e} ({}) |", r.rmse, r.nfe),
                None => s += " |",
            }
        }
        s += "\n";
    }
    s
}

pub fn run(args: Args) -> Result<()> {
    let problem = GmmProblem::load(&args.gmm, args.schedule.as_deref())?;
    let x_t = NpyArray::read(&args.noise)
        .with_context(|| format!("cannot read {}", args.noise.display()))?
        .to_f64();
    let reference = as_2d(
        &NpyArray::read(&args.reference)
            .with_context(|| format!("cannot read {}", args.reference.display()))?
            .to_f64(),
        "the reference",
    )?;
    if x_t.shape() != reference.shape() {
        bail!(
            "noise {:?} and reference {:?} must have the same shape",
            x_t.shape(),
            reference.shape()
        );
    }
    let config = read_config(args.config.as_ref())?;
    let schedulers: Vec<String> = args
        .schedulers
        .clone()
        .unwrap_or_else(|| DEFAULT_SCHEDULERS.iter().map(|s| s.to_string()).collect());
    let rows = accuracy_table(
        &problem,
        &schedulers,
        config.as_ref(),
        &args.steps,
        &x_t,
        &reference,
    )?;
    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    let table = markdown(&rows, &args.steps);
    crate::io::write_atomic(&args.out.join("table.md"), table.as_bytes())?;
    crate::io::write_atomic(
        &args.out.join("results.json"),
        serde_json::to_string_pretty(&rows)?.as_bytes(),
    )?;
    let series: Vec<(String, Vec<[f64; 2]>)> = schedulers
        .iter()
        .map(|name| {
            let pts = rows
                .iter()
                .filter(|r| &r.scheduler == name)
                .map(|r| [r.nfe as f64, r.rmse])
                .collect();
            (name.clone(), pts)
        })
        .collect();
    let png = args.out.join("error_vs_nfe.png");
    crate::plot::error_chart_png(&png, "RMSE against the exact ODE solution", &series)?;
    if args.json {
        println!("{}", json!({ "rows": rows, "out": args.out }));
    } else {
        println!("{table}\nwrote {}", args.out.display());
    }
    Ok(())
}
