//! `diffuse eval`: the testbed metrics on two sample sets.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use diffusion_core::Rng;
use diffusion_testbed::{Bandwidth, Projections, metrics};
use serde_json::{Map, Value, json};

use crate::io::{NpyArray, as_2d};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Samples [n, dim] (.npy, float32 or float64).
    pub a: PathBuf,
    /// Samples to compare against [m, dim] (for example data or a reference solution).
    pub b: PathBuf,
    /// Also score both sets under this analytic mixture (NLL, sliced W2 to it).
    #[arg(long, value_name = "SPEC.json")]
    pub gmm: Option<PathBuf>,
    /// Unit projection directions [k, dim] for sliced W2 (default: random ones from --seed).
    #[arg(long, value_name = "P.npy")]
    pub projections: Option<PathBuf>,
    #[arg(long, default_value_t = 128)]
    pub num_projections: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> Result<()> {
    let read = |p: &PathBuf| -> Result<ndarray::Array2<f64>> {
        let a = NpyArray::read(p).with_context(|| format!("cannot read {}", p.display()))?;
        as_2d(&a.to_f64(), &p.display().to_string())
    };
    let (a, b) = (read(&args.a)?, read(&args.b)?);
    if a.ncols() != b.ncols() {
        bail!(
            "the sets have different dimensions: {} and {}",
            a.ncols(),
            b.ncols()
        );
    }
    let proj = match &args.projections {
        Some(p) => Projections::from_npy(p)?,
        None => Projections::random(args.num_projections, a.ncols(), &mut Rng::new(args.seed))?,
    };
    let mut out = Map::new();
    if a.shape() == b.shape() {
        out.insert("rmse".into(), json!(metrics::rmse(a.view(), b.view())?));
    }
    out.insert(
        "sliced_w2".into(),
        json!(metrics::sliced_w2(a.view(), b.view(), &proj)?),
    );
    let (mmd2, bandwidth) = metrics::mmd2_rbf(a.view(), b.view(), Bandwidth::Median)?;
    out.insert("mmd2_rbf".into(), json!(mmd2));
    out.insert("mmd_bandwidth".into(), json!(bandwidth));
    out.insert(
        "frechet".into(),
        json!(metrics::frechet_distance(a.view(), b.view())?),
    );
    if let Some(spec) = &args.gmm {
        let problem = crate::model::GmmProblem::load(spec, None).or_else(|_| {
            // A spec with several schedules is fine here: only the mixture is used.
            let s = diffusion_testbed::GmmSpec::from_file(spec)?;
            let first = s.schedules.keys().next().cloned();
            crate::model::GmmProblem::load(spec, first.as_deref())
        })?;
        for (name, x) in [("a", &a), ("b", &b)] {
            out.insert(
                format!("nll_{name}"),
                json!(metrics::gmm_nll(x.view(), &problem.mixture)?),
            );
            out.insert(
                format!("sliced_w2_{name}_to_gmm"),
                json!(metrics::sliced_w2_to_gmm(x.view(), &problem.mixture, &proj)?),
            );
        }
    }
    if args.json {
        println!("{}", Value::Object(out));
    } else {
        for (k, v) in &out {
            println!(
                "{k:<22} {}",
                v.as_f64().map_or(v.to_string(), |f| format!("{f:.6}"))
            );
        }
    }
    Ok(())
}
