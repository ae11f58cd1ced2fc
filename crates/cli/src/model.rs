//! The models a command can sample: the analytic Gaussian mixture of a spec file.

use std::path::Path;

use anyhow::{Context, Result, bail};
use diffusion_testbed::{GaussianMixture, GmmDenoiser, GmmSpec};
use serde_json::{Value, json};

/// An analytic mixture problem: the exact model and the schedule it is posed on.
#[derive(Debug)]
pub struct GmmProblem {
    pub spec: GmmSpec,
    pub mixture: GaussianMixture,
    pub schedule_name: String,
}

impl GmmProblem {
    /// Loads `path`; `schedule` picks one of the spec's schedules (required when it has several).
    pub fn load(path: &Path, schedule: Option<&str>) -> Result<Self> {
        let spec =
            GmmSpec::from_file(path).with_context(|| format!("cannot load GMM spec {}", path.display()))?;
        let names: Vec<String> = spec.schedules.keys().cloned().collect();
        let schedule_name = match schedule {
            Some(s) if names.iter().any(|n| n == s) => s.to_string(),
            Some(s) => bail!("the spec has no schedule {s:?} (it has: {})", names.join(", ")),
            None if names.len() == 1 => names[0].clone(),
            None => bail!("--schedule is required: the spec has {}", names.join(", ")),
        };
        let mixture = GaussianMixture::from_spec(&spec).context("invalid mixture in the spec")?;
        Ok(Self {
            spec,
            mixture,
            schedule_name,
        })
    }

    pub fn dim(&self) -> usize {
        self.mixture.dim()
    }

    /// The exact epsilon model.
    pub fn denoiser(&self) -> GmmDenoiser {
        GmmDenoiser::epsilon(self.mixture.clone())
    }

    /// The schedule keys of a diffusers `scheduler_config.json` that pose this problem.
    pub fn schedule_config(&self) -> Value {
        let s = &self.spec.schedules[&self.schedule_name];
        json!({
            "num_train_timesteps": s.num_train_timesteps,
            "beta_start": s.beta_start,
            "beta_end": s.beta_end,
            "beta_schedule": s.beta_schedule,
        })
    }
}

/// `base` with the keys of `overrides` (a diffusers config) laid over it.
pub fn merge_config(base: &Value, overrides: Option<&Value>) -> Value {
    let mut out = base.clone();
    if let (Some(o), Some(obj)) = (overrides.and_then(Value::as_object), out.as_object_mut()) {
        for (k, v) in o {
            obj.insert(k.clone(), v.clone());
        }
    }
    out
}
