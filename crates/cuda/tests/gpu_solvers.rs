//! The same scheduler run on the CPU backend and on the GPU gives the same samples within
//! rounding: deterministic and stochastic schedulers, driven by the exact Gaussian-mixture
//! model (evaluated on the host for both, so only the solver arithmetic and noise differ).
#![cfg(feature = "cuda")]

mod common;

use common::gpu_or_skip;

use diffusion_core::{Denoiser, NoiseLevel, Parameterization, Rng, Tensor};
use diffusion_cuda::CudaTensor;
use diffusion_solvers::{Control, by_name, sample};
use diffusion_testbed::{GaussianMixture, GmmDenoiser};
use ndarray::{ArrayD, IxDyn};

/// The host model seen from the GPU: download, predict, upload.
struct OnHost<'a>(&'a GmmDenoiser);

impl Denoiser<CudaTensor<f32>> for OnHost<'_> {
    fn parameterization(&self) -> Parameterization {
        Denoiser::<ArrayD<f32>>::parameterization(self.0)
    }

    fn predict(&self, x: &CudaTensor<f32>, level: NoiseLevel) -> diffusion_core::Result<CudaTensor<f32>> {
        let host = ArrayD::from_shape_vec(IxDyn(x.shape()), x.to_host()?).expect("shape of a device tensor");
        let out = self.0.predict(&host, level)?;
        let data: Vec<f32> = out.iter().copied().collect();
        Ok(CudaTensor::from_host(x.gpu(), x.shape(), &data)?)
    }
}

/// Whether a difference fails its tolerance (NaN fails).
fn apart(difference: f64, tolerance: f64) -> bool {
    difference.is_nan() || difference >= tolerance
}

#[test]
fn schedulers_give_the_same_samples_on_cpu_and_gpu() {
    let Some(gpu) = gpu_or_skip("schedulers_give_the_same_samples_on_cpu_and_gpu") else {
        return;
    };
    let gmm = GaussianMixture::isotropic(
        vec![0.3, 0.7],
        vec![vec![-1.5, 0.5, 1.0, 0.0], vec![1.0, -1.0, 0.0, 2.0]],
        &[0.3, 0.5],
    )
    .unwrap();
    let model = GmmDenoiser::epsilon(gmm);
    let shape = [512, 4];
    let mut noise = vec![0.0; 512 * 4];
    Rng::new(5).fill_normal(&mut noise);
    let x_cpu = ArrayD::from_shape_vec(IxDyn(&shape), noise.iter().map(|&v| v as f32).collect()).unwrap();
    let x_gpu = CudaTensor::<f32>::from_f64(&gpu, &shape, &noise).unwrap();
    let config = serde_json::json!({});
    let mut failures = Vec::new();
    for name in [
        "ddim",
        "dpm_solver_multistep",
        "unipc",
        "deis",
        "heun",
        "ddpm",
        "euler_ancestral",
    ] {
        let mut cpu_sched = by_name::<ArrayD<f32>>(name, &config).unwrap();
        let mut gpu_sched = by_name::<CudaTensor<f32>>(name, &config).unwrap();
        cpu_sched.set_timesteps(25).unwrap();
        gpu_sched.set_timesteps(25).unwrap();
        let (mut rng_cpu, mut rng_gpu) = (Rng::new(11), Rng::new(11));
        let mut cpu_steps = Vec::new();
        sample(cpu_sched.as_mut(), &model, &x_cpu, Some(&mut rng_cpu), |s| {
            cpu_steps.push(s.sample.to_f64_vec());
            Control::Continue
        })
        .unwrap();
        let mut gpu_steps = Vec::new();
        let gpu_run = sample(
            gpu_sched.as_mut(),
            &OnHost(&model),
            &x_gpu,
            Some(&mut rng_gpu),
            |s| {
                gpu_steps.push(s.sample.to_f64_vec());
                Control::Continue
            },
        );
        // Step by step, so a failure names the first step where the backends part.
        let rel_diff = |g: &[f64], w: &[f64]| {
            let diff: f64 = g.iter().zip(w).map(|(g, w)| (g - w).powi(2)).sum();
            let norm: f64 = w.iter().map(|w| w * w).sum();
            (diff / norm).sqrt()
        };
        let first_apart = gpu_steps
            .iter()
            .zip(&cpu_steps)
            .position(|(g, w)| apart(rel_diff(g, w), 1e-5));
        if let Some(k) = first_apart {
            let bad: Vec<usize> = (0..gpu_steps[k].len())
                .filter(|&j| apart((gpu_steps[k][j] - cpu_steps[k][j]).abs(), 1e-3))
                .take(8)
                .collect();
            failures.push(format!(
                "{name}: step {k} differs (rel {:e}); first differing elements {bad:?}: gpu {:?} cpu {:?}",
                rel_diff(&gpu_steps[k], &cpu_steps[k]),
                bad.iter().map(|&j| gpu_steps[k][j]).collect::<Vec<_>>(),
                bad.iter().map(|&j| cpu_steps[k][j]).collect::<Vec<_>>()
            ));
            continue;
        }
        let got = match gpu_run {
            Ok(got) => got,
            Err(e) => {
                failures.push(format!(
                    "{name}: GPU run failed after {} steps: {e}",
                    gpu_steps.len()
                ));
                continue;
            }
        };
        assert_eq!(
            rng_cpu, rng_gpu,
            "{name}: both backends consume the same noise blocks"
        );
        let rel = rel_diff(&got.to_host_f64().unwrap(), cpu_steps.last().unwrap());
        eprintln!("{name}: relative RMS difference CPU vs GPU {rel:.2e}");
        // The same f32 operations in the same order on both: identical up to a rare last-bit
        // difference in the noise's f64 `log`.
        if apart(rel, 1e-5) {
            failures.push(format!("{name}: CPU and GPU samples differ by {rel:e}"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
