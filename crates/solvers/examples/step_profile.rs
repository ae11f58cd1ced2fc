//! Runs many scheduler steps on a [4, 64, 64] f32 latent, for instruction-count
//! profiling of the per-step overhead (timings on a shared machine are too noisy):
//!
//! `cargo build --release -p diffusion-solvers --example step_profile`
//! `valgrind --tool=callgrind target/release/examples/step_profile DPMSolverMultistepScheduler step 200`

use diffusion_solvers::{Scheduler, by_name};
use ndarray::{ArrayD, IxDyn};
use serde_json::json;

type T = ArrayD<f32>;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let class = args.get(1).map_or("EulerDiscreteScheduler", String::as_str);
    let in_place = args.get(2).is_some_and(|a| a == "in_place");
    let steps: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(200);
    let n = 4 * 64 * 64;
    let x = T::from_shape_vec(
        IxDyn(&[4, 64, 64]),
        (0..n).map(|k| (k as f32 * 0.37).sin()).collect(),
    )
    .expect("shape");
    let m = x.mapv(|v| v * 0.5 + 0.1);
    let mut s = by_name::<T>(class, &json!({"clip_sample": false}))
        .or_else(|_| by_name::<T>(class, &json!({})))
        .expect("scheduler");
    s.set_timesteps(steps + 1).expect("timesteps");
    let ts = s.timesteps().to_vec();
    let mut y = x.clone();
    let mut checksum = 0.0f64;
    for &t in &ts[..steps] {
        if in_place {
            s.step_in_place(&m, t, &mut y, None).expect("step");
        } else {
            let out = s.step(&m, t, &x, None).expect("step");
            checksum += f64::from(out.as_slice().expect("contiguous")[7]);
        }
    }
    println!(
        "{class}: {steps} steps, checksum {checksum:.6e} {:.6e}",
        y[[0, 0, 7]]
    );
}
