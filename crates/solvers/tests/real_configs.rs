//! Every effective `scheduler_config` that diffusers 0.42.1 wrote for the GMM study
//! (`fixtures/gmm/diffusers_gmm2d_results.json`, `configs[*].effective`) builds here:
//! keys diffusers accepts are accepted even when they do not change the algorithm. Truly
//! unknown keys are still rejected.

use diffusion_solvers::{SolverError, by_name, from_config_json};
use ndarray::ArrayD;
use serde_json::{Value, json};

type T = ArrayD<f64>;

#[test]
fn every_effective_config_builds() {
    let path = diffusion_testbed::fixtures::path("gmm/diffusers_gmm2d_results.json").unwrap();
    let text = std::fs::read_to_string(path).unwrap();
    let results: Value = serde_json::from_str(&text).unwrap();
    let mut built = 0;
    for (name, cfg) in results["configs"].as_object().unwrap() {
        let class = cfg["class"].as_str().unwrap();
        let eff = cfg
            .as_object()
            .unwrap()
            .iter()
            .find(|(k, v)| k.contains("effective") && v.is_object())
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("{name}: no effective config"));
        let mut eff = eff;
        eff["_class_name"] = json!(class);
        let mut s = from_config_json::<T>(&eff).unwrap_or_else(|e| panic!("{name} ({class}): {e}\n{eff}"));
        s.set_timesteps(10).unwrap();
        built += 1;
    }
    assert!(built >= 20, "only {built} configs");
}

#[test]
fn unknown_keys_are_still_rejected() {
    for class in [
        "DDPMScheduler",
        "PNDMScheduler",
        "DEISMultistepScheduler",
        "DPMSolverSinglestepScheduler",
        "FlowMatchEulerDiscreteScheduler",
        "EDMEulerScheduler",
        "UniPCMultistepScheduler",
        "EulerDiscreteScheduler",
    ] {
        let e = by_name::<T>(class, &json!({"no_such_key": 1})).err().unwrap();
        assert!(matches!(e, SolverError::Parse { .. }), "{class}: {e}");
    }
}

/// Stable Diffusion 1.5's scheduler_config.json (a PNDM config) loads into other
/// classes, whose diffusers `from_config` ignores PNDM's keys.
#[test]
fn stable_diffusion_config_loads_into_other_classes() {
    let sd = json!({
        "_class_name": "PNDMScheduler", "_diffusers_version": "0.6.0", "beta_end": 0.012,
        "beta_schedule": "scaled_linear", "beta_start": 0.00085, "num_train_timesteps": 1000,
        "set_alpha_to_one": false, "skip_prk_steps": true, "steps_offset": 1,
        "trained_betas": null, "clip_sample": false
    });
    for class in [
        "PNDMScheduler",
        "EulerDiscreteScheduler",
        "DPMSolverMultistepScheduler",
        "DDIMScheduler",
        "UniPCMultistepScheduler",
        "DEISMultistepScheduler",
        "DDPMScheduler",
        "EulerAncestralDiscreteScheduler",
    ] {
        let mut s = by_name::<T>(class, &sd).unwrap_or_else(|e| panic!("{class}: {e}"));
        s.set_timesteps(20).unwrap();
    }
}

/// Python's json writes `-Infinity` as a bare token; config files with it load.
#[test]
fn python_infinity_tokens_load() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("scheduler_config.json");
    std::fs::write(
        &path,
        r#"{"_class_name": "DPMSolverMultistepScheduler", "lambda_min_clipped": -Infinity, "prediction_type": "epsilon"}"#,
    )
    .unwrap();
    let mut s = diffusion_solvers::from_config_file::<T>(&path).unwrap();
    s.set_timesteps(10).unwrap();
}
