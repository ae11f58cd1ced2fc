//! `diffuse demo`: the README's main job. Trains a small model on a built-in dataset,
//! samples it with several solvers at NFE 5 / 10 / 20, prints a table (error against the
//! exact ODE solution on the analytic version of the problem, sliced W2 to the data for
//! the trained model) and writes pictures.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use diffusion_core::Rng;
use diffusion_testbed::{GaussianMixture, GmmDenoiser, Projections, metrics};
use ndarray::{ArrayD, IxDyn};

use crate::io::as_2d;

type Sampler<'a> =
    &'a dyn Fn(&mut dyn diffusion_solvers::Scheduler<ArrayD<f64>>) -> Result<(ArrayD<f64>, usize)>;
use crate::presets::Preset;
use crate::sample::{build_scheduler, run_sampler};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Output folder for the checkpoint, tables and pictures.
    #[arg(long, default_value = "out/demo")]
    pub out: PathBuf,
    /// Training steps.
    #[arg(long, default_value_t = 3000)]
    pub train_steps: u64,
    /// Built-in dataset with an exact form (rings).
    #[arg(long, default_value = "rings")]
    pub dataset: String,
    /// Samples per solver run.
    #[arg(long, default_value_t = 2000)]
    pub samples: usize,
    #[arg(long, value_delimiter = ',', default_value = "5,10,20")]
    pub nfe: Vec<usize>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

struct Row {
    label: &'static str,
    nfe: usize,
    exact_rmse: f64,
    trained_sw2: f64,
}

pub fn run(args: Args) -> Result<()> {
    let start = Instant::now();
    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    let checkpoint = args.out.join("model");
    let train = crate::train::Args {
        dataset: args.dataset.clone(),
        num_data: 8192,
        schedule: "linear".into(),
        steps: args.train_steps,
        batch: 256,
        lr: 2e-3,
        hidden: 128,
        depth: 3,
        model: crate::train::ModelKind::Mlp,
        prediction: crate::train::Prediction::Epsilon,
        channels: 32,
        patch: 2,
        seed: args.seed,
        out: checkpoint.clone(),
        save_every: args.train_steps,
        resume: false,
        json: false,
    };
    println!(
        "1/3 training a {}-layer MLP on {:?} for {} steps",
        train.depth, args.dataset, train.steps
    );
    if checkpoint.exists() {
        std::fs::remove_dir_all(&checkpoint)
            .with_context(|| format!("cannot replace {}", checkpoint.display()))?;
    }
    let (_, loss) = crate::train::train(&train, true)?;
    println!(
        "    done in {:.1} s, final loss {loss:.4}",
        start.elapsed().as_secs_f64()
    );
    let (spec, trained) = diffusion_train::trained::load(&checkpoint)?;
    let data = crate::data::load(&args.dataset, 2000, args.seed)?;
    let gmm: GaussianMixture = data
        .exact
        .context("the demo needs a dataset with an exact form (rings)")?;
    let exact = GmmDenoiser::epsilon(gmm.clone());
    let acp = spec.alphas_cumprod()?;
    let base = spec.scheduler_base();

    println!("2/3 exact probability-flow solution (adaptive Dormand-Prince, tol 1e-8)");
    let mut z = vec![0.0; args.samples * 2];
    Rng::with_stream(args.seed, 7).fill_normal(&mut z);
    let x_t = ArrayD::from_shape_vec(IxDyn(&[args.samples, 2]), z)?;
    let reference = as_2d(
        &crate::exact::ode_solution(&exact, &acp, &x_t, 1e-8)?,
        "reference",
    )?;
    let proj = Projections::random(128, 2, &mut Rng::with_stream(args.seed, 8))?;

    println!(
        "3/3 sampling with {} solvers at NFE {:?}",
        crate::presets::all().len(),
        args.nfe
    );
    let mut rows = Vec::new();
    let mut pictures = Vec::new();
    for preset in crate::presets::all() {
        for &nfe in &args.nfe {
            let run = |model: Sampler<'_>| {
                let mut s =
                    build_scheduler::<ArrayD<f64>>(Some(preset.scheduler), Some(&preset.config), &base)?;
                s.set_timesteps(preset.steps_for_nfe(nfe))?;
                model(s.as_mut())
            };
            let (x_exact, nfe_used) = run(&|s| run_sampler(s, &exact, &x_t, args.seed, false))?;
            let (x_trained, _) = run(&|s| run_sampler(s, &trained, &x_t, args.seed, false))?;
            let x_trained = as_2d(&x_trained, "samples")?;
            rows.push(Row {
                label: preset.label,
                nfe: nfe_used,
                exact_rmse: metrics::rmse(as_2d(&x_exact, "samples")?.view(), reference.view())?,
                trained_sw2: metrics::sliced_w2_to_gmm(x_trained.view(), &gmm, &proj)?,
            });
            if nfe == 10 {
                pictures.push((preset.clone(), x_trained));
            }
        }
    }
    let table = render(&rows, &args.nfe);
    println!("\n{table}");
    write_pictures(&args, &gmm, &data.samples, &rows, &pictures)?;
    crate::io::write_atomic(&args.out.join("table.md"), table.as_bytes())?;
    println!(
        "wrote {} (table.md, *.png, model/) in {:.1} s",
        args.out.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

fn render(rows: &[Row], nfes: &[usize]) -> String {
    let table = |title: &str, value: fn(&Row) -> f64| {
        let mut s = format!("{title}\n\n| solver |");
        for n in nfes {
            s += &format!(" NFE {n} |");
        }
        s += "\n|---|";
        s += &"---|".repeat(nfes.len());
        s += "\n";
        for chunk in rows.chunks(nfes.len()) {
            s += &format!("| {} |", chunk[0].label);
            for r in chunk {
                let note = if nfes.contains(&r.nfe) {
                    String::new()
                } else {
                    format!(" ({} NFE)", r.nfe)
                };
                s += &format!(" {:.4}{note} |", value(r));
            }
            s += "\n";
        }
        s
    };
    format!(
        "{}\n{}",
        table(
            "Analytic model (the exact mixture): RMSE against the exact ODE solution",
            |r| r.exact_rmse
        ),
        table("Trained MLP: sliced W2 to the data distribution", |r| r
            .trained_sw2)
    )
}

fn write_pictures(
    args: &Args,
    gmm: &GaussianMixture,
    data: &ArrayD<f64>,
    rows: &[Row],
    pictures: &[(Preset, ndarray::Array2<f64>)],
) -> Result<()> {
    let data = as_2d(data, "data")?;
    crate::plot::scatter_png(
        &args.out.join("data.png"),
        "training data",
        &[(&data, 7)],
        Some(gmm),
    )?;
    for (i, (preset, x)) in pictures.iter().enumerate() {
        let name = preset.label.to_lowercase().replace([' ', '+'], "_");
        let title = format!("trained model, {}, NFE 10", preset.label);
        crate::plot::scatter_png(
            &args.out.join(format!("samples_{name}.png")),
            &title,
            &[(x, i)],
            Some(gmm),
        )?;
    }
    let series = |f: fn(&Row) -> f64| -> Vec<(String, Vec<[f64; 2]>)> {
        let mut labels: Vec<&str> = rows.iter().map(|r| r.label).collect();
        labels.dedup();
        labels
            .into_iter()
            .map(|l| {
                (
                    l.to_string(),
                    rows.iter()
                        .filter(|r| r.label == l)
                        .map(|r| [r.nfe as f64, f(r)])
                        .collect(),
                )
            })
            .collect()
    };
    crate::plot::error_chart_png(
        &args.out.join("error_vs_nfe.png"),
        "analytic model: RMSE to the exact ODE solution",
        &series(|r| r.exact_rmse),
    )?;
    crate::plot::error_chart_png(
        &args.out.join("sw2_vs_nfe.png"),
        "trained model: sliced W2 to the data",
        &series(|r| r.trained_sw2),
    )?;
    Ok(())
}
