//! `diffuse sample`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use diffusion_core::{Denoiser, Element, NoiseLevel, Parameterization, Rng, Tensor};
use diffusion_solvers::{Control, Scheduler};
use ndarray::{ArrayD, IxDyn};
use serde_json::{Value, json};

use crate::io::{NpyArray, write_npy};
use crate::model::{GmmProblem, merge_config};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Analytic Gaussian-mixture problem (a spec JSON as fixtures/gmm/gmm2d_spec.json).
    #[arg(
        long,
        value_name = "SPEC.json",
        required_unless_present = "checkpoint",
        conflicts_with = "checkpoint"
    )]
    pub gmm: Option<PathBuf>,
    /// A model trained by `diffuse train` (its checkpoint directory).
    #[arg(long, value_name = "DIR")]
    pub checkpoint: Option<PathBuf>,
    /// Which of the spec's schedules to pose the problem on (e.g. linear, scaled_linear).
    #[arg(long)]
    pub schedule: Option<String>,
    /// Scheduler: our name or a diffusers class name (see `diffuse schedulers`). Optional
    /// when --config has a `_class_name`.
    #[arg(long)]
    pub scheduler: Option<String>,
    /// A diffusers scheduler_config.json whose keys override the problem's schedule.
    #[arg(long, value_name = "scheduler_config.json")]
    pub config: Option<PathBuf>,
    /// Number of inference steps.
    #[arg(long, default_value_t = 20)]
    pub steps: usize,
    /// Initial noise x_T [samples, ...sample shape] (float32 or float64 .npy); the output has its dtype.
    #[arg(long, value_name = "X_T.npy")]
    pub noise: Option<PathBuf>,
    /// Seed for the initial noise (when --noise is absent) and for stochastic schedulers.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Number of samples to draw when --noise is absent.
    #[arg(long, default_value_t = 512)]
    pub num_samples: usize,
    /// Where to write the final samples (.npy).
    #[arg(long, value_name = "X0.npy")]
    pub out: Option<PathBuf>,
    /// Where to write a picture of the samples: a scatter plot (2-D data) or an image grid (images).
    #[arg(long, value_name = "FILE.png")]
    pub png: Option<PathBuf>,
    /// Print a JSON summary instead of text.
    #[arg(long)]
    pub json: bool,
}

/// A model wrapper that counts evaluations (the NFE).
#[derive(Debug)]
pub struct Counted<M> {
    pub inner: M,
    pub calls: AtomicUsize,
}

impl<M> Counted<M> {
    pub fn new(inner: M) -> Self {
        Self {
            inner,
            calls: AtomicUsize::new(0),
        }
    }
    pub fn count(&self) -> usize {
        self.calls.load(Ordering::Relaxed)
    }
}

impl<T: Tensor, M: Denoiser<T>> Denoiser<T> for Counted<M> {
    fn parameterization(&self) -> Parameterization {
        self.inner.parameterization()
    }
    fn predict(&self, x: &T, level: NoiseLevel) -> diffusion_core::Result<T> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.inner.predict(x, level)
    }
}

/// Builds a scheduler from a name and/or a diffusers config laid over `base`.
pub fn build_scheduler<T: Tensor + 'static>(
    name: Option<&str>,
    config: Option<&Value>,
    base: &Value,
) -> Result<Box<dyn Scheduler<T>>> {
    let merged = merge_config(base, config);
    Ok(match name {
        Some(n) => diffusion_solvers::by_name(n, &merged)?,
        None if merged.get("_class_name").is_some() => diffusion_solvers::from_config_json(&merged)?,
        None => {
            bail!("give --scheduler NAME (or a --config with a _class_name); `diffuse schedulers` lists them")
        }
    })
}

pub fn read_config(path: Option<&PathBuf>) -> Result<Option<Value>> {
    path.map(|p| {
        let text = std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", p.display()))
    })
    .transpose()
}

/// Runs the scheduler's loop from `x_t` with a progress bar; returns the samples and NFE.
pub fn run_sampler<A: Element, M: Denoiser<ArrayD<A>>>(
    scheduler: &mut dyn Scheduler<ArrayD<A>>,
    model: &M,
    x_t: &ArrayD<A>,
    seed: u64,
    progress: bool,
) -> Result<(ArrayD<A>, usize)> {
    let counted = Counted::new(model);
    let bar = if progress {
        indicatif::ProgressBar::new(scheduler.timesteps().len() as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut rng = Rng::with_stream(seed, 1);
    let out = diffusion_solvers::sample(scheduler, &counted, x_t, Some(&mut rng), |_| {
        bar.inc(1);
        Control::Continue
    })?;
    bar.finish_and_clear();
    Ok((out, counted.count()))
}

fn standard_normal(shape: &[usize], seed: u64) -> ArrayD<f64> {
    let n = shape.iter().product();
    let mut z = vec![0.0; n];
    Rng::new(seed).fill_normal(&mut z);
    ArrayD::from_shape_vec(IxDyn(shape), z).expect("sizes agree")
}

/// The model being sampled and what is known about its data.
enum Source {
    Gmm(GmmProblem),
    Trained(
        diffusion_train::trained::ModelSpec,
        diffusion_nn::NetworkDenoiser<diffusion_train::trained::AnyNet>,
    ),
}

pub fn run(args: Args) -> Result<()> {
    let source = match (&args.gmm, &args.checkpoint) {
        (Some(spec), _) => Source::Gmm(GmmProblem::load(spec, args.schedule.as_deref())?),
        (None, Some(dir)) => {
            let (spec, model) = diffusion_train::trained::load(dir)?;
            Source::Trained(spec, model)
        }
        (None, None) => bail!("give --gmm SPEC.json or --checkpoint DIR"),
    };
    let (item, base) = match &source {
        Source::Gmm(p) => (vec![p.dim()], p.schedule_config()),
        Source::Trained(spec, _) => (spec.model.sample_shape(), spec.scheduler_base()),
    };
    let config = read_config(args.config.as_ref())?;
    let noise = match &args.noise {
        Some(p) => NpyArray::read(p).with_context(|| format!("cannot use {} as noise", p.display()))?,
        None => {
            let shape: Vec<usize> = std::iter::once(args.num_samples)
                .chain(item.iter().copied())
                .collect();
            NpyArray::F64(standard_normal(&shape, args.seed))
        }
    };
    if noise.shape().len() != item.len() + 1 || noise.shape()[1..] != item[..] {
        bail!(
            "the noise must have shape [samples, {}] for this model, got {:?}",
            item.iter().map(usize::to_string).collect::<Vec<_>>().join(", "),
            noise.shape()
        );
    }
    let images = item.len() == 3;
    let start = Instant::now();
    let f32_out = matches!(noise, NpyArray::F32(_));
    let (samples, nfe) = match (&source, &noise) {
        (Source::Gmm(p), NpyArray::F32(x)) => {
            let (s, n) = sample_typed(&args, &p.denoiser(), &base, config.as_ref(), x)?;
            (s.mapv(f64::from), n)
        }
        (Source::Gmm(p), NpyArray::F64(x)) => sample_typed(&args, &p.denoiser(), &base, config.as_ref(), x)?,
        (Source::Trained(_, m), x) => sample_typed(&args, m, &base, config.as_ref(), &x.to_f64())?,
    };
    let seconds = start.elapsed().as_secs_f64();
    if let Some(out) = &args.out {
        write_npy(out, &samples, f32_out)?;
    }
    let exact = match &source {
        Source::Gmm(p) => Some(&p.mixture),
        Source::Trained(..) => None,
    };
    let mut summary = json!({
        "scheduler": args.scheduler,
        "steps": args.steps,
        "nfe": nfe,
        "samples": samples.shape()[0],
        "seconds": seconds,
        "out": args.out,
        "png": args.png,
    });
    if let Some(gmm) = exact {
        let x2 = crate::io::as_2d(&samples, "samples")?;
        let dim = gmm.dim();
        let proj = diffusion_testbed::Projections::random(128, dim, &mut Rng::with_stream(args.seed, 2))?;
        summary["nll"] = json!(diffusion_testbed::metrics::gmm_nll(x2.view(), gmm)?);
        summary["sliced_w2_to_data"] = json!(diffusion_testbed::metrics::sliced_w2_to_gmm(
            x2.view(),
            gmm,
            &proj
        )?);
    }
    match &args.png {
        Some(png) if images => crate::plot::image_grid_png(png, &samples)?,
        Some(png) => crate::plot::scatter_png(
            png,
            &format!("{} steps, NFE {nfe}", args.steps),
            &[(&crate::io::as_2d(&samples, "samples")?, 0)],
            exact,
        )?,
        None => {}
    }
    if args.json {
        println!("{summary}");
    } else {
        print!(
            "{} samples, {} steps, NFE {nfe}, {seconds:.3} s",
            samples.shape()[0],
            args.steps
        );
        if let (Some(nll), Some(sw)) = (summary["nll"].as_f64(), summary["sliced_w2_to_data"].as_f64()) {
            print!("; NLL under the data {nll:.4}, sliced W2 to the data {sw:.4}");
        }
        println!();
        if let Some(out) = &args.out {
            println!("wrote {}", out.display());
        }
    }
    Ok(())
}

fn sample_typed<A: Element, M: Denoiser<ArrayD<A>>>(
    args: &Args,
    model: &M,
    base: &Value,
    config: Option<&Value>,
    x_t: &ArrayD<A>,
) -> Result<(ArrayD<A>, usize)> {
    let mut scheduler = build_scheduler::<ArrayD<A>>(args.scheduler.as_deref(), config, base)?;
    scheduler.set_timesteps(args.steps)?;
    run_sampler(scheduler.as_mut(), model, x_t, args.seed, !args.json)
}
