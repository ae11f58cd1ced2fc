//! PFGM++ sampling (Xu et al. 2023) and the EDM Heun sampler it reduces to.
//!
//! PFGM++ perturbs data `y` with the kernel `p_r(x | y) ∝ (|x - y|^2 + r^2)^(-(N + D)/2)`
//! (`N` data dimensions, `D` augmented ones). Its backward ODE `dx/dr = (x - E[y | x])/r`
//! is, with `r = sigma sqrt(D)`, exactly EDM's `dx/dsigma = (x - D(x, sigma)) / sigma`,
//! where the model `D` is the posterior mean under the PFGM++ kernel (a network trained
//! with PFGM++ perturbations, used like an EDM denoiser). Only the prior changes: a draw
//! from the heavy-tailed kernel at `r_max = sigma_max sqrt(D)` instead of a Gaussian. As
//! `D -> infinity` the kernel becomes Gaussian and PFGM++ becomes EDM.

use diffusion_core::{Denoiser, NoiseSchedule, Rng, Tensor};
use diffusion_schedules::continuous::PfgmPlusPlus;

use crate::error::{Result, invalid};
use crate::eval::Evaluator;

/// Checks an EDM sigma grid: finite, non-negative, strictly decreasing, positive but
/// possibly for the last entry.
fn validate_sigmas(sigmas: &[f64]) -> Result<()> {
    if sigmas.len() < 2 {
        return Err(invalid(
            "sigmas",
            format!("need at least 2, got {}", sigmas.len()),
        ));
    }
    if let Some(s) = sigmas.iter().find(|s| !(s.is_finite() && **s >= 0.0)) {
        return Err(invalid("sigmas", format!("must be finite and >= 0, got {s}")));
    }
    if let Some(w) = sigmas.windows(2).find(|w| w[1] >= w[0]) {
        return Err(invalid(
            "sigmas",
            format!("must strictly decrease, got {} then {}", w[0], w[1]),
        ));
    }
    Ok(())
}

/// EDM's deterministic Heun sampler (Karras et al. 2022, Algorithm 1) from `x` at
/// `sigmas[0]` through `sigmas` (decreasing; a final 0 takes an Euler step). The
/// evaluator's schedule must have time = sigma and alpha = 1 (`Edm`). Model calls:
/// `2 (len - 1)`, one less when the grid ends at 0.
pub fn edm_heun<T, D, S>(eval: &Evaluator<'_, D, S>, x: &T, sigmas: &[f64]) -> Result<T>
where
    T: Tensor,
    D: Denoiser<T> + ?Sized,
    S: NoiseSchedule + ?Sized,
{
    validate_sigmas(sigmas)?;
    let probe = sigmas[0];
    let (a, s) = (eval.schedule.alpha(probe), eval.schedule.sigma(probe));
    if (a - 1.0).abs() > 1e-12 || (s - probe).abs() > 1e-12 * probe.max(1.0) {
        return Err(invalid(
            "schedule",
            format!("EDM Heun needs alpha = 1 and sigma(t) = t, got alpha {a}, sigma {s} at t = {probe}"),
        ));
    }
    let mut x = x.clone();
    for w in sigmas.windows(2) {
        let (s0, s1) = (w[0], w[1]);
        let h = s1 - s0;
        let d0 = eval.data(&x, s0)?;
        // Euler: x' = x + h (x - D) / s0.
        let mut pred = x.clone();
        pred.lincomb(1.0 + h / s0, &[(-h / s0, &d0)], None)?;
        if s1 == 0.0 {
            x = pred;
            continue;
        }
        let d1 = eval.data(&pred, s1)?;
        // x + h/2 [(x - D0)/s0 + (x' - D1)/s1].
        let (c0, c1) = (0.5 * h / s0, 0.5 * h / s1);
        x.lincomb(1.0 + c0, &[(-c0, &d0), (c1, &pred), (-c1, &d1)], None)?;
    }
    Ok(x)
}

/// `like`'s batch drawn from the PFGM++ prior at `r = sigma sqrt(D)` (shape and element
/// type of `like`; its values are ignored).
pub fn pfgm_prior<T: Tensor>(pfgm: &PfgmPlusPlus, like: &T, sigma: f64, rng: &mut Rng) -> Result<T> {
    if !(sigma.is_finite() && sigma > 0.0) {
        return Err(invalid("sigma_max", format!("must be positive, got {sigma}")));
    }
    let batch = like.shape().first().copied().unwrap_or(0);
    let per_item = like.len().checked_div(batch).unwrap_or(0);
    if batch == 0 || per_item != pfgm.data_dim {
        return Err(invalid(
            "shape",
            format!(
                "PFGM++ was set up for {} values per item, got shape {:?}",
                pfgm.data_dim,
                like.shape()
            ),
        ));
    }
    let values = pfgm.sample_prior(pfgm.r_of_sigma(sigma), batch, rng);
    Ok(like.from_f64_like(&values)?)
}

/// PFGM++ sampling: a prior draw at `sigmas[0]` (`r_max = sigmas[0] sqrt(D)`), then
/// [`edm_heun`] with the PFGM++-trained denoiser.
pub fn sample_pfgm<T, D, S>(
    eval: &Evaluator<'_, D, S>,
    pfgm: &PfgmPlusPlus,
    like: &T,
    sigmas: &[f64],
    rng: &mut Rng,
) -> Result<T>
where
    T: Tensor,
    D: Denoiser<T> + ?Sized,
    S: NoiseSchedule + ?Sized,
{
    validate_sigmas(sigmas)?;
    let x = pfgm_prior(pfgm, like, sigmas[0], rng)?;
    edm_heun(eval, &x, sigmas)
}
