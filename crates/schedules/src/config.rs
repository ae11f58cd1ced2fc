//! The schedule part of a diffusers `scheduler_config.json`: same keys, same defaults.

use serde::{Deserialize, Serialize};

use crate::betas::BetaSchedule;
use crate::error::{Result, ScheduleError, invalid};
use crate::spacing::TimestepSpacing;

/// The keys of a `scheduler_config.json` that define the discrete noise schedule.
/// Defaults are those of diffusers' `DDPMScheduler` (1000 steps, linear 1e-4..0.02,
/// `leading` spacing); solver configs override the per-class defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DiscreteScheduleConfig {
    pub num_train_timesteps: usize,
    pub beta_start: f64,
    pub beta_end: f64,
    pub beta_schedule: BetaSchedule,
    pub trained_betas: Option<Vec<f64>>,
    pub rescale_betas_zero_snr: bool,
    pub timestep_spacing: TimestepSpacing,
    pub steps_offset: usize,
}

impl Default for DiscreteScheduleConfig {
    fn default() -> Self {
        Self {
            num_train_timesteps: 1000,
            beta_start: 0.0001,
            beta_end: 0.02,
            beta_schedule: BetaSchedule::Linear,
            trained_betas: None,
            rescale_betas_zero_snr: false,
            timestep_spacing: TimestepSpacing::Leading,
            steps_offset: 0,
        }
    }
}

impl DiscreteScheduleConfig {
    /// The JSON keys this struct reads (for unknown-key checks by callers that read
    /// the rest of the file).
    pub const KEYS: &'static [&'static str] = &[
        "num_train_timesteps",
        "beta_start",
        "beta_end",
        "beta_schedule",
        "trained_betas",
        "rescale_betas_zero_snr",
        "timestep_spacing",
        "steps_offset",
    ];

    /// Reads the schedule keys of a `scheduler_config.json` (other keys are ignored
    /// here; see [`unknown_keys`] for checking them). `defaults` supplies the values
    /// of absent keys (diffusers' defaults differ per scheduler class).
    pub fn from_json_with_defaults(json: &serde_json::Value, defaults: &Self) -> Result<Self> {
        let obj = json
            .as_object()
            .ok_or_else(|| ScheduleError::Parse("the config must be a JSON object".into()))?;
        let mut merged = serde_json::to_value(defaults).map_err(|e| ScheduleError::Parse(e.to_string()))?;
        let target = merged.as_object_mut().expect("struct serializes to an object");
        for key in Self::KEYS {
            if let Some(v) = obj.get(*key)
                && (!v.is_null() || *key == "trained_betas")
            {
                target.insert((*key).to_string(), v.clone());
            }
        }
        let cfg: Self = serde_json::from_value(merged).map_err(|e| ScheduleError::Parse(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// [`Self::from_json_with_defaults`] with this struct's defaults, from JSON text.
    pub fn from_json_str(text: &str) -> Result<Self> {
        let json: serde_json::Value =
            serde_json::from_str(text).map_err(|e| ScheduleError::Parse(e.to_string()))?;
        Self::from_json_with_defaults(&json, &Self::default())
    }

    /// Checks ranges and consistency.
    pub fn validate(&self) -> Result<()> {
        if self.num_train_timesteps == 0 {
            return Err(invalid("num_train_timesteps", "must be at least 1"));
        }
        if self.trained_betas.is_none() && self.beta_schedule != BetaSchedule::SquaredCosCapV2 {
            if !(self.beta_start.is_finite() && self.beta_end.is_finite()) {
                return Err(invalid("beta_start/beta_end", "must be finite numbers"));
            }
            if self.beta_start <= 0.0 || self.beta_end >= 1.0 {
                return Err(invalid(
                    "beta_start/beta_end",
                    format!(
                        "need 0 < beta_start <= beta_end < 1, got {}..{}",
                        self.beta_start, self.beta_end
                    ),
                ));
            }
            if self.beta_end < self.beta_start {
                return Err(invalid(
                    "beta_end",
                    format!(
                        "beta_end ({}) is smaller than beta_start ({})",
                        self.beta_end, self.beta_start
                    ),
                ));
            }
        }
        if self.steps_offset >= self.num_train_timesteps {
            return Err(invalid(
                "steps_offset",
                "must be smaller than num_train_timesteps",
            ));
        }
        Ok(())
    }
}

/// The keys of `json` that none of `known` lists (keys starting with `_`, such as
/// `_class_name` and `_diffusers_version`, are metadata and always allowed).
pub fn unknown_keys(json: &serde_json::Value, known: &[&[&str]]) -> Vec<String> {
    json.as_object()
        .map(|obj| {
            obj.keys()
                .filter(|k| !k.starts_with('_') && !known.iter().any(|list| list.contains(&k.as_str())))
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stable Diffusion 1.5's `scheduler/scheduler_config.json`.
    const SD15: &str = r#"{
      "_class_name": "PNDMScheduler",
      "_diffusers_version": "0.6.0",
      "beta_end": 0.012,
      "beta_schedule": "scaled_linear",
      "beta_start": 0.00085,
      "num_train_timesteps": 1000,
      "set_alpha_to_one": false,
      "skip_prk_steps": true,
      "steps_offset": 1,
      "trained_betas": null,
      "clip_sample": false
    }"#;

    #[test]
    fn reads_a_diffusers_config() {
        let c = DiscreteScheduleConfig::from_json_str(SD15).unwrap();
        assert_eq!(c.beta_schedule, BetaSchedule::ScaledLinear);
        assert_eq!(c.steps_offset, 1);
        assert_eq!(c.timestep_spacing, TimestepSpacing::Leading);
        let json: serde_json::Value = serde_json::from_str(SD15).unwrap();
        let extra = ["set_alpha_to_one", "skip_prk_steps", "clip_sample"];
        assert!(unknown_keys(&json, &[DiscreteScheduleConfig::KEYS, &extra]).is_empty());
        assert_eq!(unknown_keys(&json, &[DiscreteScheduleConfig::KEYS]).len(), 3);
    }

    #[test]
    fn invalid_configs_are_errors() {
        for bad in [
            r#"{"num_train_timesteps": 0}"#,
            r#"{"beta_start": 0.02, "beta_end": 0.0001}"#,
            r#"{"beta_schedule": "quadratic"}"#,
            r#"{"timestep_spacing": "uniform"}"#,
            r#"{"beta_start": "x"}"#,
            r#"[1, 2]"#,
            r#"{"beta_end": 1.5}"#,
            "{",
        ] {
            assert!(DiscreteScheduleConfig::from_json_str(bad).is_err(), "{bad}");
        }
    }
}
