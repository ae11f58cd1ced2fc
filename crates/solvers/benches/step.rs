//! Per-step cost of the schedulers on f32 latents, against a plain copy of the same
//! bytes (the memory-bandwidth yardstick). The model call is excluded, as in
//! diffusers' timing (fixtures/gmm/diffusers_step_timing.json).

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use diffusion_core::Tensor;
use diffusion_solvers::{Scheduler, by_name};
use ndarray::{ArrayD, IxDyn};
use serde_json::json;

type T = ArrayD<f32>;

fn tensor(shape: &[usize], phase: f32) -> T {
    let n: usize = shape.iter().product();
    let data: Vec<f32> = (0..n).map(|k| (k as f32 * 0.37 + phase).sin()).collect();
    ArrayD::from_shape_vec(IxDyn(shape), data).unwrap()
}

/// A scheduler warmed past its first steps (so multistep history is full), with its
/// timesteps; the bench cycles through the middle of a long schedule.
fn warmed(name: &str, x: &T, m: &T) -> (Box<dyn Scheduler<T>>, Vec<f64>) {
    let mut s = by_name::<T>(name, &json!({"clip_sample": false}))
        .unwrap_or_else(|_| by_name::<T>(name, &json!({})).unwrap());
    s.set_timesteps(1000).unwrap();
    let ts = s.timesteps().to_vec();
    let mut y = x.clone();
    for &t in &ts[..4] {
        s.step_in_place(m, t, &mut y, None).unwrap();
    }
    (s, ts)
}

fn bench(c: &mut Criterion) {
    for shape in [vec![4usize, 64, 64], vec![16, 4, 128, 128]] {
        let label = format!("{shape:?}");
        let x = tensor(&shape, 0.1);
        let m = tensor(&shape, 0.7);
        let mut group = c.benchmark_group(format!("step {label}"));
        group.sample_size(if x.len() > 100_000 { 20 } else { 100 });
        let mut dst = x.zeros_like();
        group.bench_function("copy", |b| {
            b.iter(|| dst.lincomb(0.0, &[(1.0, &x)], None).unwrap())
        });
        group.bench_function("memcpy", |b| {
            b.iter(|| dst.as_slice_mut().unwrap().copy_from_slice(x.as_slice().unwrap()))
        });
        for (name, class) in [
            ("ddim", "DDIMScheduler"),
            ("euler", "EulerDiscreteScheduler"),
            ("dpmpp_2m", "DPMSolverMultistepScheduler"),
            ("unipc", "UniPCMultistepScheduler"),
            ("lms", "LMSDiscreteScheduler"),
            ("deis", "DEISMultistepScheduler"),
            ("pndm", "PNDMScheduler"),
            ("dpm_single", "DPMSolverSinglestepScheduler"),
        ] {
            let (mut s, ts) = warmed(class, &x, &m);
            // Cycle over steps 4..900 of a 1000-step schedule, restarting when done.
            let mut k = 4;
            group.bench_function(BenchmarkId::new("step", name), |b| {
                b.iter(|| {
                    if k >= 900 {
                        let (s2, _) = warmed(class, &x, &m);
                        s = s2;
                        k = 4;
                    }
                    let out = s.step(&m, ts[k], &x, None).unwrap();
                    k += 1;
                    out
                })
            });
            let (mut s, ts) = warmed(class, &x, &m);
            let mut y = x.clone();
            let mut k = 4;
            group.bench_function(BenchmarkId::new("step_in_place", name), |b| {
                b.iter(|| {
                    if k >= 900 {
                        let (s2, _) = warmed(class, &x, &m);
                        s = s2;
                        k = 4;
                        y.lincomb(0.0, &[(1.0, &x)], None).unwrap();
                    }
                    s.step_in_place(&m, ts[k], &mut y, None).unwrap();
                    k += 1;
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
