//! Our float32 tables against the `alphas_cumprod` tables diffusers itself produced
//! (stored in the shared GMM reference problem).

use diffusion_schedules::{BetaSchedule, DiscreteSchedule, DiscreteScheduleConfig};

fn shared_spec() -> Option<serde_json::Value> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/reference/gmm/gmm2d_spec.json"
    );
    match std::fs::read_to_string(path) {
        Ok(text) => Some(serde_json::from_str(&text).expect("valid reference JSON")),
        Err(_) => {
            eprintln!("skipping: {path} not found (the shared reference folder is absent)");
            None
        }
    }
}

#[test]
fn alphas_cumprod_equal_diffusers_to_float32_rounding() {
    let Some(spec) = shared_spec() else { return };
    for (name, schedule, start, end) in [
        ("linear", BetaSchedule::Linear, 1e-4, 0.02),
        ("scaled_linear", BetaSchedule::ScaledLinear, 0.00085, 0.012),
    ] {
        let want: Vec<f64> = spec["schedules"][name]["alphas_cumprod"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let cfg = DiscreteScheduleConfig {
            beta_schedule: schedule,
            beta_start: start,
            beta_end: end,
            ..Default::default()
        };
        let got = DiscreteSchedule::from_config(&cfg).unwrap().alphas_cumprod;
        assert_eq!(got.len(), want.len());
        let worst = got
            .iter()
            .zip(&want)
            .map(|(g, w)| ((f64::from(*g) - w) / w).abs())
            .fold(0.0, f64::max);
        // torch's vectorised float32 linspace rounds a few betas differently; the
        // tables agree to a few float32 ulps (2^-23 = 1.2e-7 relative).
        assert!(
            worst < 4.0 * f64::from(f32::EPSILON),
            "{name}: worst relative error {worst:e}"
        );
    }
}
