//! Trained models: the MLP denoiser of `diffuse train`, its schedule, checkpoints.

use std::path::Path;

use anyhow::{Context, Result, bail};
use diffusion_core::{Parameterization, Rng};
use diffusion_nn::NetworkDenoiser;
use diffusion_nn::models::{MlpConfig, MlpDenoiser};
use diffusion_schedules::{BetaSchedule, DiscreteSchedule, DiscreteScheduleConfig};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// What a checkpoint's `config.json` says about its model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    pub kind: String,
    pub dim: usize,
    pub hidden: usize,
    pub depth: usize,
    pub temb: usize,
    pub prediction_type: Parameterization,
    pub schedule: DiscreteScheduleConfig,
}

impl ModelSpec {
    pub fn mlp(dim: usize, hidden: usize, depth: usize, schedule: BetaSchedule) -> Self {
        let (beta_start, beta_end) = match schedule {
            BetaSchedule::ScaledLinear => (0.00085, 0.012),
            _ => (1e-4, 0.02),
        };
        Self {
            kind: "mlp".into(),
            dim,
            hidden,
            depth,
            temb: 64,
            prediction_type: Parameterization::Epsilon,
            schedule: DiscreteScheduleConfig {
                beta_schedule: schedule,
                beta_start,
                beta_end,
                ..Default::default()
            },
        }
    }

    pub fn build(&self, seed: u64) -> Result<MlpDenoiser<f64>> {
        if self.kind != "mlp" {
            bail!(
                "unsupported model kind {:?} (this build trains and samples \"mlp\")",
                self.kind
            );
        }
        let cfg = MlpConfig {
            dim: self.dim,
            hidden: self.hidden,
            depth: self.depth,
            temb: self.temb,
        };
        Ok(MlpDenoiser::new(cfg, &mut Rng::with_stream(seed, 4))?)
    }

    /// The `alphas_cumprod` table training and sampling share.
    pub fn alphas_cumprod(&self) -> Result<Vec<f64>> {
        let s = DiscreteSchedule::from_config(&self.schedule)?;
        Ok(s.alphas_cumprod.iter().map(|&a| f64::from(a)).collect())
    }

    /// The schedule keys of a diffusers scheduler config matching training.
    pub fn scheduler_base(&self) -> Value {
        let s = &self.schedule;
        json!({
            "num_train_timesteps": s.num_train_timesteps,
            "beta_start": s.beta_start,
            "beta_end": s.beta_end,
            "beta_schedule": s.beta_schedule,
        })
    }
}

/// A trained model loaded from a checkpoint directory (EMA weights when present).
pub fn load(dir: &Path) -> Result<(ModelSpec, NetworkDenoiser<MlpDenoiser<f64>>)> {
    let config = diffusion_train::checkpoint::read_model_config(dir)
        .with_context(|| format!("cannot read the checkpoint in {}", dir.display()))?;
    let spec: ModelSpec = serde_json::from_value(config).context("the checkpoint's model config")?;
    let mut net = spec.build(0)?;
    let dir = diffusion_train::checkpoint::checkpoint_dir(dir)?;
    let ema = dir.join(diffusion_train::checkpoint::EMA_FILE);
    let weights = if ema.exists() {
        ema
    } else {
        dir.join(diffusion_train::checkpoint::MODEL_FILE)
    };
    diffusion_train::load_weights(&mut net, &weights, true)
        .with_context(|| format!("cannot load weights from {}", weights.display()))?;
    let model = NetworkDenoiser::new(net, spec.prediction_type);
    Ok((spec, model))
}
