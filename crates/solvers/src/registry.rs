//! Building schedulers by name, by diffusers class name, or from a config file.

use std::path::Path;

use diffusion_core::Tensor;
use serde_json::Value;

use crate::error::{Result, SolverError};
use crate::scheduler::Scheduler;
use crate::*;

/// `(our name, diffusers class)` of every scheduler.
pub const SCHEDULERS: &[(&str, &str)] = &[
    ("ddim", "DDIMScheduler"),
    ("ddpm", "DDPMScheduler"),
    ("ddim_inverse", "DDIMInverseScheduler"),
    ("deis", "DEISMultistepScheduler"),
    ("dpm_solver_multistep", "DPMSolverMultistepScheduler"),
    (
        "dpm_solver_multistep_inverse",
        "DPMSolverMultistepInverseScheduler",
    ),
    ("dpm_solver_singlestep", "DPMSolverSinglestepScheduler"),
    ("edm_euler", "EDMEulerScheduler"),
    ("euler", "EulerDiscreteScheduler"),
    ("euler_ancestral", "EulerAncestralDiscreteScheduler"),
    ("flow_match_euler", "FlowMatchEulerDiscreteScheduler"),
    ("flow_match_heun", "FlowMatchHeunDiscreteScheduler"),
    ("heun", "HeunDiscreteScheduler"),
    ("lms", "LMSDiscreteScheduler"),
    ("pndm", "PNDMScheduler"),
    ("repaint", "RePaintScheduler"),
    ("unipc", "UniPCMultistepScheduler"),
];

fn known() -> String {
    SCHEDULERS
        .iter()
        .map(|(a, b)| format!("{a} ({b})"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A scheduler by our name or diffusers' class name, configured by `config` (a JSON
/// object of diffusers keys; `{}` for the class defaults).
pub fn by_name<T: Tensor + 'static>(name: &str, config: &Value) -> Result<Box<dyn Scheduler<T>>> {
    let ours = SCHEDULERS
        .iter()
        .find(|(a, b)| *a == name || *b == name)
        .map(|(a, _)| *a)
        .ok_or_else(|| SolverError::UnknownScheduler {
            name: name.into(),
            known: known(),
        })?;
    Ok(match ours {
        "ddim" => Box::new(Ddim::from_json(config)?),
        "ddim_inverse" => Box::new(Ddim::inverse_from_json(config)?),
        "ddpm" => Box::new(Ddpm::from_json(config)?),
        "deis" => Box::new(Deis::<T>::from_json(config)?),
        "dpm_solver_multistep" => Box::new(DpmSolverMultistep::<T>::from_json(config)?),
        "dpm_solver_multistep_inverse" => Box::new(DpmSolverMultistep::<T>::inverse_from_json(config)?),
        "dpm_solver_singlestep" => Box::new(DpmSolverSinglestep::<T>::from_json(config)?),
        "edm_euler" => Box::new(EdmEuler::from_json(config)?),
        "euler" => Box::new(KSampler::<T>::from_json(KMethod::Euler, config)?),
        "euler_ancestral" => Box::new(KSampler::<T>::from_json(KMethod::EulerAncestral, config)?),
        "flow_match_euler" => Box::new(FlowMatch::<T>::from_json(FlowMethod::Euler, config)?),
        "flow_match_heun" => Box::new(FlowMatch::<T>::from_json(FlowMethod::Heun, config)?),
        "heun" => Box::new(KSampler::<T>::from_json(KMethod::Heun, config)?),
        "lms" => Box::new(KSampler::<T>::from_json(KMethod::Lms, config)?),
        "pndm" => Box::new(Pndm::<T>::from_json(config)?),
        "repaint" => Box::new(RePaint::from_json(config)?),
        "unipc" => Box::new(UniPc::<T>::from_json(config)?),
        _ => unreachable!("every SCHEDULERS entry is matched"),
    })
}

/// A scheduler from a `scheduler_config.json` object: `_class_name` picks the class.
pub fn from_config_json<T: Tensor + 'static>(config: &Value) -> Result<Box<dyn Scheduler<T>>> {
    let class = config
        .get("_class_name")
        .and_then(Value::as_str)
        .ok_or_else(|| SolverError::Parse {
            scheduler: "config",
            reason: "missing `_class_name` string".into(),
        })?;
    by_name(class, config)
}

/// [`from_config_json`] reading a file.
pub fn from_config_file<T: Tensor + 'static>(path: impl AsRef<Path>) -> Result<Box<dyn Scheduler<T>>> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|source| SolverError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    // Python's json writes -Infinity (e.g. lambda_min_clipped) as a bare token.
    let text = crate::config::quote_non_finite(&text);
    let json: Value = serde_json::from_str(&text).map_err(|e| SolverError::Parse {
        scheduler: "config",
        reason: format!("{}: {e}", path.display()),
    })?;
    from_config_json(&json)
}
