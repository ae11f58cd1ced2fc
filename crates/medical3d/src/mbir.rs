//! DiffusionMBIR (Chung et al., CVPR 2023): a 2-D diffusion prior applied to every axial
//! slice, interleaved with one ADMM iteration of `1/2 |A x - b|^2 + lambda |D_z x|_1` per
//! diffusion step. The diffusion side is deterministic DDIM on the timesteps and levels of
//! `diffusion-solvers`' `DDIMScheduler`: at each step the prior's denoised slices are
//! stacked into a volume, moved by the ADMM step (CG started from them, then the z-split
//! and dual updates, kept across steps), and the next sample is
//! `alpha_prev x0_corrected + sigma_prev eps_prior` (the decomposed form of Chung et al.'s
//! DDS, which keeps the prior's noise estimate).
//!
//! Volumes are `[x, y, z]` with intensities in `[0, 1]`; the prior sees
//! `[z, 1, x, y]` in `[-1, 1]`.

use diffusion_core::{Denoiser, Noise, Parameterization, Rng, Tensor, predict_as};
use diffusion_solvers::Scheduler;
use ndarray::{Array3, ArrayD, IxDyn};

use crate::admm::AdmmTvZ;
use crate::error::{Result, check_finite};
use crate::prior::{from_model_scale, to_model_scale};

/// Settings of one reconstruction.
#[derive(Clone, Debug, PartialEq)]
pub struct MbirConfig {
    /// DDIM steps (each one prior call and one ADMM iteration).
    pub steps: usize,
    /// ADMM penalty; 0 turns the z-term off (per-slice diffusion with data consistency).
    pub rho: f64,
    /// Weight of the z total variation.
    pub lambda: f64,
    /// CG iterations of each x-update.
    pub cg_iters: usize,
    /// Weight of the proximal term towards the prior's estimate in the x-update
    /// ([`AdmmTvZ::mu`]; 0 is DiffusionMBIR's update).
    pub mu: f64,
    /// Seed of the initial noise.
    pub seed: u64,
}

impl Default for MbirConfig {
    fn default() -> Self {
        Self {
            steps: 20,
            rho: 0.05,
            lambda: 0.01,
            cg_iters: 20,
            mu: 0.0,
            seed: 0,
        }
    }
}

fn to_prior_layout(v: &Array3<f64>) -> ArrayD<f32> {
    let (nx, ny, nz) = v.dim();
    ArrayD::from_shape_fn(IxDyn(&[nz, 1, nx, ny]), |ix| {
        to_model_scale(v[[ix[2], ix[3], ix[0]]]) as f32
    })
}

fn from_prior_layout(x: &ArrayD<f32>) -> Array3<f64> {
    let s = x.shape();
    Array3::from_shape_fn((s[2], s[3], s[0]), |(i, j, k)| {
        from_model_scale(f64::from(x[[k, 0, i, j]]))
    })
}

/// Reconstructs a volume from `A^T b` (`atb`) and `A^T A` (`normal`) with a 2-D slice
/// prior. `progress(step, steps)` is called after each step.
pub fn reconstruct<P: Denoiser<ArrayD<f32>> + ?Sized>(
    prior: &P,
    normal: &dyn Fn(&Array3<f64>) -> Result<Array3<f64>>,
    atb: &Array3<f64>,
    config: &MbirConfig,
    mut progress: impl FnMut(usize, usize),
) -> Result<Array3<f64>> {
    check_finite("A^T b", atb.iter())?;
    let mut scheduler = diffusion_solvers::by_name::<ArrayD<f32>>(
        "DDIMScheduler",
        &serde_json::json!({"prediction_type": "sample", "clip_sample": false, "timestep_spacing": "leading"}),
    )?;
    scheduler.set_timesteps(config.steps)?;
    let (nx, ny, nz) = atb.dim();
    let mut x = ArrayD::<f32>::zeros(IxDyn(&[nz, 1, nx, ny]));
    let mut rng = Rng::new(config.seed);
    x.lincomb(0.0, &[], Some(Noise::new(1.0, &mut rng)))?;
    let mut admm = AdmmTvZ::new(config.rho, config.lambda, config.cg_iters)?;
    admm.mu = config.mu;
    let mut volume = Array3::zeros((nx, ny, nz));
    let timesteps = scheduler.timesteps().to_vec();
    for (i, &t) in timesteps.iter().enumerate() {
        let level = scheduler.noise_level(t)?;
        let x0 = predict_as(prior, &x, level, Parameterization::Sample)?;
        volume = admm.step(normal, atb, &from_prior_layout(&x0))?;
        // DDS's update: the corrected x0 with the prior's own noise estimate
        // eps = (x_t - alpha x0_prior) / sigma (recomputing eps from the corrected x0
        // would amplify the correction by alpha / sigma at low noise).
        let (a_prev, s_prev) = match timesteps.get(i + 1) {
            Some(&next) => {
                let l = scheduler.noise_level(next)?;
                (l.alpha, l.sigma)
            }
            None => (1.0, 0.0),
        };
        let corrected = to_prior_layout(&volume);
        let (a, sg) = (level.alpha, level.sigma);
        x.lincomb(
            s_prev / sg,
            &[(a_prev, &corrected), (-s_prev * a / sg, &x0)],
            None,
        )?;
        progress(i + 1, timesteps.len());
    }
    Ok(volume)
}
