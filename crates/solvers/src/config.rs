//! Reading a diffusers `scheduler_config.json`: the schedule keys go to
//! `diffusion_schedules::DiscreteScheduleConfig`, the solver keys to a per-class serde
//! struct that rejects unknown keys. `null` means "the class default", as in diffusers.

use diffusion_core::Parameterization;
use diffusion_schedules::{DiscreteScheduleConfig, SigmaGrid, TimestepSpacing};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{Result, SolverError, invalid};

/// Splits `json` into the schedule part (if the class has one; `schedule_defaults` are
/// the class's defaults) and the solver part `C`.
pub(crate) fn parse<C: DeserializeOwned>(
    scheduler: &'static str,
    json: &Value,
    schedule_defaults: Option<&DiscreteScheduleConfig>,
) -> Result<(DiscreteScheduleConfig, C)> {
    let obj = json.as_object().ok_or_else(|| SolverError::Parse {
        scheduler,
        reason: "the config must be a JSON object".into(),
    })?;
    let schedule = match schedule_defaults {
        Some(d) => DiscreteScheduleConfig::from_json_with_defaults(json, d)?,
        None => DiscreteScheduleConfig::default(),
    };
    let rest: serde_json::Map<String, Value> = obj
        .iter()
        .filter(|(k, v)| {
            let schedule_key =
                schedule_defaults.is_some() && DiscreteScheduleConfig::KEYS.contains(&k.as_str());
            !k.starts_with('_') && !v.is_null() && !schedule_key
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let own = serde_json::from_value(Value::Object(rest)).map_err(|e| SolverError::Parse {
        scheduler,
        reason: e.to_string(),
    })?;
    Ok((schedule, own))
}

/// A diffusers `prediction_type` restricted to what a class accepts.
pub(crate) fn prediction(
    scheduler: &'static str,
    name: &str,
    allowed: &[Parameterization],
) -> Result<Parameterization> {
    let p = Parameterization::from_name(name)?;
    if allowed.contains(&p) {
        Ok(p)
    } else {
        Err(invalid(
            scheduler,
            "prediction_type",
            format!("{name:?} is not supported here (allowed: {allowed:?})"),
        ))
    }
}

/// The schedule defaults most classes share: linear 1e-4..0.02 over 1000 steps.
pub(crate) fn schedule_defaults(spacing: TimestepSpacing) -> DiscreteScheduleConfig {
    DiscreteScheduleConfig {
        timestep_spacing: spacing,
        ..DiscreteScheduleConfig::default()
    }
}

/// The sigma grid chosen by diffusers' `use_*_sigmas` flags.
pub(crate) fn sigma_grid(
    scheduler: &'static str,
    karras: bool,
    exponential: bool,
    beta: bool,
    lu: bool,
) -> Result<SigmaGrid> {
    SigmaGrid::from_flags(karras, exponential, beta, lu)
        .map_err(|e| invalid(scheduler, "use_*_sigmas", e.to_string()))
}

pub(crate) fn check_range(
    scheduler: &'static str,
    key: &'static str,
    v: f64,
    lo: f64,
    hi: f64,
) -> Result<()> {
    if v.is_finite() && v >= lo && v <= hi {
        Ok(())
    } else {
        Err(invalid(scheduler, key, format!("{v} is outside [{lo}, {hi}]")))
    }
}
