//! `step` (a new tensor, one fused pass) and `step_in_place` are two write paths of the
//! same update: for every scheduler and a few configurations that take the rarer
//! branches (PRK warm-up, singlestep groups, UniPC corrector orders, SDE noise), both
//! must give the same bits over a whole run. Their values are checked against
//! diffusers in `diffusers_suite.rs` (which uses `step`) and `gmm_parity.rs` (in place).

use diffusion_core::Rng;
use diffusion_solvers::by_name;
use ndarray::{ArrayD, IxDyn};
use serde_json::{Value, json};

type T = ArrayD<f32>;

fn tensor(phase: f32) -> T {
    let n = 2 * 3 * 5;
    ArrayD::from_shape_vec(
        IxDyn(&[2, 3, 5]),
        (0..n).map(|k| (k as f32 * 0.37 + phase).sin()).collect(),
    )
    .unwrap()
}

fn check(name: &str, config: Value) {
    let steps = 12;
    let mut a = by_name::<T>(name, &config).unwrap();
    let mut b = by_name::<T>(name, &config).unwrap();
    a.set_timesteps(steps).unwrap();
    b.set_timesteps(steps).unwrap();
    let (mut ra, mut rb) = (Rng::new(3), Rng::new(3));
    let (mut xa, mut xb) = (tensor(0.1), tensor(0.1));
    for (k, &t) in a.timesteps().to_vec().iter().enumerate() {
        // A model output that depends on the sample, as a real one does.
        let m = xa.mapv(|v| 0.8 * v + 0.05 * k as f32) + tensor(0.3 * k as f32);
        xa = a.step(&m, t, &xa, Some(&mut ra)).unwrap();
        b.step_in_place(&m, t, &mut xb, Some(&mut rb)).unwrap();
        let same = xa.iter().zip(&xb).all(|(p, q)| p.to_bits() == q.to_bits());
        assert!(
            same,
            "{name} {config}: step {k} differs between step and step_in_place"
        );
    }
}

#[test]
fn step_equals_step_in_place_for_every_scheduler() {
    for name in [
        "ddim",
        "ddpm",
        "ddim_inverse",
        "deis",
        "dpm_solver_multistep",
        "dpm_solver_multistep_inverse",
        "dpm_solver_singlestep",
        "edm_euler",
        "euler",
        "euler_ancestral",
        "flow_match_euler",
        "flow_match_heun",
        "heun",
        "lms",
        "pndm",
        "unipc",
    ] {
        check(name, json!({}));
    }
    check("ddim", json!({"eta": 0.5, "clip_sample": true}));
    check(
        "ddim",
        json!({"prediction_type": "v_prediction", "clip_sample": false}),
    );
    check("pndm", json!({"prediction_type": "v_prediction"}));
    check("pndm", json!({"skip_prk_steps": true}));
    check("deis", json!({"solver_order": 3}));
    check("dpm_solver_singlestep", json!({"solver_order": 3}));
    check(
        "dpm_solver_singlestep",
        json!({"solver_order": 2, "algorithm_type": "sde-dpmsolver++"}),
    );
    check(
        "dpm_solver_multistep",
        json!({"solver_order": 3, "algorithm_type": "sde-dpmsolver++"}),
    );
    check("unipc", json!({"solver_order": 3}));
    check(
        "unipc",
        json!({"solver_type": "bh1", "disable_corrector": [0, 3]}),
    );
    check("lms", json!({"order": 4}));
}
