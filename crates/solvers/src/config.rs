//! Reading a diffusers `scheduler_config.json`: the schedule keys go to
//! `diffusion_schedules::DiscreteScheduleConfig`, the solver keys to a per-class serde
//! struct that rejects unknown keys. `null` means "the class default", as in diffusers.

use diffusion_core::Parameterization;
use diffusion_schedules::{DiscreteScheduleConfig, SigmaGrid, TimestepSpacing};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{Result, SolverError, invalid};

/// Splits `json` into the schedule part (if the class has one; `schedule_defaults` are
/// the class's defaults) and the solver part `C`.
/// Every `__init__` argument of diffusers' scheduler classes (0.42). A config written
/// for one class is often loaded into another (Stable Diffusion ships a PNDM config);
/// diffusers ignores the other classes' keys, and so do we. Keys outside this list are
/// typos and are rejected.
pub(crate) const DIFFUSERS_KEYS: &[&str] = &[
    "num_train_timesteps",
    "beta_start",
    "beta_end",
    "beta_schedule",
    "trained_betas",
    "clip_sample",
    "set_alpha_to_one",
    "steps_offset",
    "prediction_type",
    "thresholding",
    "dynamic_thresholding_ratio",
    "clip_sample_range",
    "sample_max_value",
    "timestep_spacing",
    "rescale_betas_zero_snr",
    "solver_order",
    "algorithm_type",
    "solver_type",
    "lower_order_final",
    "euler_at_final",
    "use_karras_sigmas",
    "use_exponential_sigmas",
    "use_beta_sigmas",
    "use_lu_lambdas",
    "use_flow_sigmas",
    "flow_shift",
    "final_sigmas_type",
    "lambda_min_clipped",
    "variance_type",
    "use_dynamic_shifting",
    "time_shift_type",
    "predict_x0",
    "disable_corrector",
    "solver_p",
    "sigma_min",
    "sigma_max",
    "shift_terminal",
    "interpolation_type",
    "timestep_type",
    "skip_prk_steps",
    "shift",
    "base_shift",
    "max_shift",
    "base_image_seq_len",
    "max_image_seq_len",
    "invert_sigmas",
    "stochastic_sampling",
    "sigma_data",
    "sigma_schedule",
    "rho",
    "eta",
];

pub(crate) fn parse<C: DeserializeOwned + serde::Serialize + Default>(
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
    let own = serde_json::to_value(C::default()).expect("config structs serialize");
    let own = own.as_object().expect("config structs are objects");
    let rest: serde_json::Map<String, Value> = obj
        .iter()
        .filter(|(k, v)| {
            let schedule_key =
                schedule_defaults.is_some() && DiscreteScheduleConfig::KEYS.contains(&k.as_str());
            let other_class_key = !own.contains_key(k.as_str()) && DIFFUSERS_KEYS.contains(&k.as_str());
            !k.starts_with('_') && !v.is_null() && !schedule_key && !other_class_key
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let parsed = serde_json::from_value(Value::Object(rest)).map_err(|e| SolverError::Parse {
        scheduler,
        reason: e.to_string(),
    })?;
    Ok((schedule, parsed))
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

/// A float that may be written as a string: Python's `json` writes infinities as the
/// non-JSON tokens `Infinity` / `-Infinity`, which [`quote_non_finite`] turns into
/// strings, and some tools write `"inf"` / `"-inf"`.
pub(crate) fn float_or_inf<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<f64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum F {
        Num(f64),
        Str(String),
    }
    match F::deserialize(d)? {
        F::Num(v) => Ok(v),
        F::Str(s) => match s.trim().to_ascii_lowercase().as_str() {
            "inf" | "+inf" | "infinity" | "+infinity" => Ok(f64::INFINITY),
            "-inf" | "-infinity" => Ok(f64::NEG_INFINITY),
            "nan" => Ok(f64::NAN),
            other => other
                .parse()
                .map_err(|_| serde::de::Error::custom(format!("expected a number, got {s:?}"))),
        },
    }
}

/// Quotes the bare `NaN`, `Infinity` and `-Infinity` tokens Python's `json` module
/// writes (outside strings), so that the text becomes valid JSON.
pub(crate) fn quote_non_finite(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let (mut in_str, mut escaped) = (false, false);
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if in_str {
            out.push(c);
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_str = false,
                _ => {}
            }
            rest = &rest[c.len_utf8()..];
            continue;
        }
        if let Some(tok) = ["-Infinity", "Infinity", "NaN"]
            .iter()
            .find(|t| rest.starts_with(**t))
        {
            out.push('"');
            out.push_str(tok);
            out.push('"');
            rest = &rest[tok.len()..];
            continue;
        }
        if c == '"' {
            in_str = true;
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}
