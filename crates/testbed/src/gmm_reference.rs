//! Readers for the Gaussian-mixture reference data the repository carries in
//! `fixtures/gmm/` (see its README): the spec, the initial noise, the exact ODE
//! solutions, and diffusers' runs on the problem, so a parity test is one call per file.
//! [`GmmReference::fixture`] opens that folder; a missing folder or file is an error.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ndarray::Array2;
use serde::Deserialize;

use crate::error::{Result, TestbedError};
use crate::gmm::GaussianMixture;
use crate::io::{NpzFile, read_npy_2d};
use crate::metrics::Projections;
use crate::spec::GmmSpec;

/// One run of a diffusers scheduler on the problem (`runs` / `convergence_runs`).
/// Metrics are `None` where the run produced NaN.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct RunRecord {
    pub id: String,
    pub problem: String,
    pub schedule: String,
    /// Key into [`DiffusersResults::configs`].
    pub config: String,
    /// `leading`, `trailing`, `linspace` or `karras`.
    pub spacing: String,
    /// Number of inference steps.
    #[serde(rename = "N")]
    pub n: usize,
    pub nfe: usize,
    pub rmse: Option<f64>,
    pub max_abs_err: Option<f64>,
    pub rmse_vs_canonical: Option<f64>,
    pub rmse_penultimate: Option<f64>,
    pub sw2: Option<f64>,
    pub nll: Option<f64>,
    pub t_start: i64,
    pub s_start: f64,
    pub s_penultimate: Option<f64>,
    pub s_end: f64,
    pub init_noise_sigma: f64,
    pub n_unique_timesteps: usize,
    pub ref_key: String,
    pub wall_s: f64,
    pub finite: bool,
    /// Key of the run's first final samples in the npz (absent for convergence runs).
    #[serde(default)]
    pub run_npz_key: Option<String>,
    /// Key of the exact ODE solution between the run's own end points in the npz.
    #[serde(default)]
    pub ref_npz_key: Option<String>,
}

/// A scheduler configuration: class, constructor kwargs, and the full effective
/// diffusers config (`effective_config_<schedule>`, kept as JSON in `effective_configs`).
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct SchedulerConfig {
    pub class: String,
    #[serde(default)]
    pub kwargs: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    pub spacings: Vec<String>,
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub oracle: bool,
    #[serde(default)]
    pub note: String,
    /// Remaining fields; `effective_config_<schedule>` entries live here.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl SchedulerConfig {
    /// The effective diffusers config for `schedule` (e.g. `scaled_linear`), if recorded.
    pub fn effective_config(&self, schedule: &str) -> Option<&serde_json::Value> {
        self.extra.get(&format!("effective_config_{schedule}"))
    }
}

/// A check that x0 / v heads reproduce the epsilon run.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct PredictionTypeCheck {
    pub problem: String,
    pub schedule: String,
    pub config: String,
    pub spacing: String,
    #[serde(rename = "N")]
    pub n: usize,
    pub prediction_type: String,
    pub max_abs_diff_vs_epsilon_run: f64,
    pub rmse_vs_ref: f64,
    pub rmse_vs_ref_epsilon_run: f64,
}

/// `diffusers_gmm2d_results.json`. `meta` and `problems` are kept as JSON (free-form
/// notes); see [`DiffusersResults::canonical_ref_metric`] for the floors.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct DiffusersResults {
    pub meta: serde_json::Value,
    pub configs: BTreeMap<String, SchedulerConfig>,
    pub problems: serde_json::Value,
    pub runs: Vec<RunRecord>,
    #[serde(default)]
    pub convergence_runs: Vec<RunRecord>,
    #[serde(default)]
    pub prediction_type_checks: Vec<PredictionTypeCheck>,
}

impl DiffusersResults {
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        read_json(path.as_ref())
    }

    /// The run with this id (in `runs` or `convergence_runs`).
    pub fn run(&self, id: &str) -> Result<&RunRecord> {
        self.runs
            .iter()
            .chain(&self.convergence_runs)
            .find(|r| r.id == id)
            .ok_or_else(|| TestbedError::invalid("run id", format!("no run {id:?} in the results")))
    }

    /// A metric (`sw2`, `nll`) of the exact ODE map of `x_T` for `problem`/`schedule`:
    /// the floor a perfect solver reaches.
    pub fn canonical_ref_metric(&self, problem: &str, schedule: &str, metric: &str) -> Option<f64> {
        self.problems
            .get(problem)?
            .get("schedules")?
            .get(schedule)?
            .get("canonical_ref_x0")?
            .get(metric)?
            .as_f64()
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|source| TestbedError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| TestbedError::Json {
        origin: path.display().to_string(),
        source,
    })
}

/// A folder laid out as `fixtures/gmm/` and typed access to each of its files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GmmReference {
    dir: PathBuf,
}

impl GmmReference {
    /// The fixture folder the repository carries, `fixtures/gmm/`
    /// ([`crate::fixtures::path`]`("gmm")`); an error if it is missing.
    ///
    /// ```
    /// use diffusion_core::{Denoiser, NoiseLevel};
    /// use diffusion_testbed::{GmmDenoiser, GmmReference, metrics};
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let r = GmmReference::fixture()?;
    /// let model = GmmDenoiser::epsilon(r.mixture()?);
    /// let x_t = r.x_t()?.into_dyn(); // [512, 2]
    /// // One DDIM jump from t = 999 straight to 0 with the exact model (a 1-step solver):
    /// let abar = r.spec()?.schedules["scaled_linear"].alphas_cumprod[999];
    /// let (a, s) = (abar.sqrt(), (1.0 - abar).sqrt());
    /// let eps = model.predict(&x_t, NoiseLevel::new(999.0, a, s))?;
    /// let x0 = ((&x_t - &(eps * s)) / a).into_dimensionality()?;
    /// let err = metrics::rmse(x0.view(), r.ode_ref_x0("scaled_linear")?.view())?;
    /// assert!(err > 0.1, "one step is far from the exact ODE map: {err}");
    /// # Ok(())
    /// # }
    /// ```
    pub fn fixture() -> Result<Self> {
        Self::open(crate::fixtures::path("gmm")?)
    }

    /// A folder with the same layout as `fixtures/gmm/` (which must exist; its files are
    /// read, and checked, only when asked for).
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        if !dir.is_dir() {
            return Err(TestbedError::MissingFixture { path: dir });
        }
        Ok(Self { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn spec(&self) -> Result<GmmSpec> {
        GmmSpec::from_file(self.dir.join("gmm2d_spec.json"))
    }

    pub fn mixture(&self) -> Result<GaussianMixture> {
        GaussianMixture::from_spec(&self.spec()?)
    }

    /// The initial noise `x_T`, [512, 2].
    pub fn x_t(&self) -> Result<Array2<f64>> {
        read_npy_2d(self.dir.join("gmm2d_xT.npy"), [Some(512), Some(2)])
    }

    /// The 128 sliced-W2 directions, [128, 2].
    pub fn sw_projections(&self) -> Result<Projections> {
        Projections::new(read_npy_2d(
            self.dir.join("gmm2d_sw_projections.npy"),
            [Some(128), Some(2)],
        )?)
    }

    /// The exact ODE map of `x_T` from t = 999 to s = 0 for `schedule` (`scaled_linear`
    /// or `linear`), [512, 2].
    pub fn ode_ref_x0(&self, schedule: &str) -> Result<Array2<f64>> {
        if !matches!(schedule, "scaled_linear" | "linear") {
            return Err(TestbedError::invalid(
                "schedule",
                format!("{schedule:?} (the reference has scaled_linear and linear)"),
            ));
        }
        read_npy_2d(
            self.dir.join(format!("gmm2d_{schedule}_ode_ref_x0.npy")),
            [Some(512), Some(2)],
        )
    }

    pub fn results(&self) -> Result<DiffusersResults> {
        DiffusersResults::from_file(self.dir.join("diffusers_gmm2d_results.json"))
    }

    /// The npz of stored final samples (`run/<id>`, `ref/...`).
    pub fn final_samples(&self) -> Result<NpzFile> {
        NpzFile::open(self.dir.join("diffusers_gmm2d_final_samples.npz"))
    }

    /// `(run samples, exact reference between the run's end points)`, both [128, 2]:
    /// the first 128 of the run's 512 trajectories.
    pub fn run_and_ref_samples(&self, run: &RunRecord) -> Result<(Array2<f64>, Array2<f64>)> {
        let missing = |what| TestbedError::invalid("run", format!("run {} has no {what}", run.id));
        let run_key = run.run_npz_key.as_deref().ok_or_else(|| missing("run_npz_key"))?;
        let ref_key = run.ref_npz_key.as_deref().ok_or_else(|| missing("ref_npz_key"))?;
        let mut npz = self.final_samples()?;
        Ok((
            npz.array_2d(run_key, [None, Some(2)])?,
            npz.array_2d(ref_key, [None, Some(2)])?,
        ))
    }
}
