//! Bad input gives a typed error, never a panic.

use diffusion_core::{CoreError, NoiseLevel, Parameterization, denoiser_fn};
use diffusion_solvers::{SolverError, by_name, sample_all};
use ndarray::{ArrayD, IxDyn};
use serde_json::json;

type T = ArrayD<f64>;

fn x() -> T {
    ArrayD::from_elem(IxDyn(&[2, 3]), 0.5)
}

#[test]
fn configuration_errors() {
    let e = by_name::<T>("NoSuchScheduler", &json!({})).err().unwrap();
    assert!(matches!(e, SolverError::UnknownScheduler { .. }), "{e}");
    let e = by_name::<T>("DDIMScheduler", &json!({"etaa": 0.5}))
        .err()
        .unwrap();
    assert!(
        matches!(e, SolverError::Parse { .. }) && e.to_string().contains("etaa"),
        "{e}"
    );
    let e = by_name::<T>("dpm_solver_multistep", &json!({"solver_order": 5}))
        .err()
        .unwrap();
    assert!(
        matches!(
            e,
            SolverError::InvalidConfig {
                key: "solver_order",
                ..
            }
        ),
        "{e}"
    );
    let e = by_name::<T>("unipc", &json!({"prediction_type": "noise"}))
        .err()
        .unwrap();
    assert!(e.to_string().contains("noise"), "{e}");
    let e = by_name::<T>("euler", &json!({"beta_schedule": "quadratic"}))
        .err()
        .unwrap();
    assert!(matches!(e, SolverError::Schedule(_)), "{e}");
    let e = by_name::<T>(
        "DPMSolverMultistepInverseScheduler",
        &json!({"use_karras_sigmas": true}),
    )
    .err()
    .unwrap();
    assert!(matches!(e, SolverError::Unsupported { .. }), "{e}");
    let e = by_name::<T>("DDIMInverseScheduler", &json!({"timestep_spacing": "linspace"}))
        .err()
        .unwrap();
    assert!(matches!(e, SolverError::InvalidConfig { .. }), "{e}");
}

#[test]
fn protocol_errors() {
    let mut s = by_name::<T>("ddim", &json!({})).unwrap();
    let m = x();
    assert!(matches!(
        s.step(&m, 900.0, &x(), None),
        Err(SolverError::NotInitialized { .. })
    ));
    assert!(s.set_timesteps(0).is_err());
    s.set_timesteps(10).unwrap();
    assert!(matches!(
        s.step(&m, 901.0, &x(), None),
        Err(SolverError::TimestepNotInSchedule { .. })
    ));
    s.step(&m, 900.0, &x(), None).unwrap();
    assert!(matches!(
        s.step(&m, 700.0, &x(), None),
        Err(SolverError::OutOfOrder { .. })
    ));
    let wrong = ArrayD::from_elem(IxDyn(&[3, 2]), 0.5);
    assert!(matches!(
        s.step(&wrong, 800.0, &x(), None),
        Err(SolverError::Core(CoreError::ShapeMismatch { .. }))
    ));
    let mut k = by_name::<T>("euler", &json!({})).unwrap();
    assert!(matches!(
        k.set_custom_timesteps(&[10.0, 500.0]),
        Err(SolverError::InvalidSchedule { .. })
    ));
    let mut inv = by_name::<T>("dpm_solver_multistep_inverse", &json!({})).unwrap();
    inv.set_timesteps(10).unwrap();
    assert_eq!(inv.timesteps()[0], 0.0);
    inv.step(&m, 0.0, &x(), None).unwrap();
    assert!(matches!(
        inv.step(&m, 500.0, &x(), None),
        Err(SolverError::OutOfOrder { .. })
    ));
    let mut a = by_name::<T>("euler_ancestral", &json!({})).unwrap();
    a.set_timesteps(5).unwrap();
    let t = a.timesteps()[0];
    assert!(matches!(
        a.step(&m, t, &x(), None),
        Err(SolverError::MissingRng { .. })
    ));
}

#[test]
fn nan_model_output_stops_sampling() {
    let nan = denoiser_fn(Parameterization::Epsilon, |x: &T, _: NoiseLevel| {
        Ok(x.mapv(|_| f64::NAN))
    });
    for name in ["ddim", "dpm_solver_multistep", "unipc", "euler", "heun", "lms"] {
        let mut s = by_name::<T>(name, &json!({})).unwrap();
        s.set_timesteps(5).unwrap();
        let e = sample_all(&mut s, &nan, &x(), None).unwrap_err();
        assert!(
            matches!(e, SolverError::Core(CoreError::NonFiniteModelOutput { .. })),
            "{name}: {e}"
        );
    }
}
