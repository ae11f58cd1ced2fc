//! Our float32 tables against the `alphas_cumprod` tables diffusers itself produced
//! (stored in the GMM reference problem, `fixtures/gmm/gmm2d_spec.json`).

use approx::assert_relative_eq;
use diffusion_schedules::{BetaSchedule, DiscreteSchedule, DiscreteScheduleConfig};

fn reference_spec() -> serde_json::Value {
    let path = diffusion_testbed::fixtures::path("gmm/gmm2d_spec.json").unwrap();
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).expect("valid reference JSON")
}

#[test]
fn alphas_cumprod_equal_diffusers_to_float32_rounding() {
    let spec = reference_spec();
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
        // torch's vectorised float32 linspace rounds a few betas differently; the
        // tables agree to a few float32 ulps (2^-23 = 1.2e-7 relative).
        for (g, w) in got.iter().zip(&want) {
            assert_relative_eq!(
                f64::from(*g),
                *w,
                epsilon = 0.0,
                max_relative = 4.0 * f64::from(f32::EPSILON)
            );
        }
    }
}
