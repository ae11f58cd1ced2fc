//! PFGM++ sampling (Xu et al. 2023) and the EDM Heun sampler it reduces to.
//!
//! PFGM++ perturbs data `y` with the kernel `p_r(x | y) ∝ (|x - y|^2 + r^2)^(-(N + D)/2)`
//! (`N` data dimensions, `D` augmented ones). Its backward ODE `dx/dr = (x - E[y | x])/r`
//! is, with `r = sigma sqrt(D)`, exactly EDM's `dx/dsigma = (x - D(x, sigma)) / sigma`,
//! where the model `D` is the posterior mean under the PFGM++ kernel (a network trained
//! with PFGM++ perturbations, used like an EDM denoiser). Only the prior changes: a draw
//! from the heavy-tailed kernel at `r_max = sigma_max sqrt(D)` instead of a Gaussian. As
//! `D -> infinity` the kernel becomes Gaussian and PFGM++ becomes EDM.

use diffusion_core::{Denoiser, Noise, NoiseSchedule, Rng, Tensor};
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

/// EDM's stochastic "churn" (Karras et al. 2022, Algorithm 2): before each step at
/// `sigma_i` in `[s_tmin, s_tmax]` the sample is noised up to
/// `sigma_hat = (1 + gamma) sigma_i`, `gamma = min(s_churn / N, sqrt 2 - 1)`, with noise of
/// standard deviation `s_noise sqrt(sigma_hat^2 - sigma_i^2)`. `s_churn = 0` is Algorithm 1.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EdmChurn {
    pub s_churn: f64,
    pub s_tmin: f64,
    pub s_tmax: f64,
    pub s_noise: f64,
}

impl Default for EdmChurn {
    /// No churn: the deterministic sampler.
    fn default() -> Self {
        Self {
            s_churn: 0.0,
            s_tmin: 0.0,
            s_tmax: f64::INFINITY,
            s_noise: 1.0,
        }
    }
}

impl EdmChurn {
    fn validate(&self) -> Result<()> {
        let ok = self.s_churn.is_finite()
            && self.s_churn >= 0.0
            && self.s_noise.is_finite()
            && self.s_noise >= 0.0
            && self.s_tmin >= 0.0
            && self.s_tmin <= self.s_tmax;
        if ok {
            Ok(())
        } else {
            Err(invalid(
                "churn",
                format!("need s_churn >= 0, s_noise >= 0 and 0 <= s_tmin <= s_tmax, got {self:?}"),
            ))
        }
    }
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
    edm_heun_churn(eval, x, sigmas, &EdmChurn::default(), None)
}

/// EDM's stochastic Heun sampler (Algorithm 2): [`edm_heun`] with [`EdmChurn`] noise
/// drawn from `rng` (required when churn is on).
pub fn edm_heun_churn<T, D, S>(
    eval: &Evaluator<'_, D, S>,
    x: &T,
    sigmas: &[f64],
    churn: &EdmChurn,
    mut rng: Option<&mut Rng>,
) -> Result<T>
where
    T: Tensor,
    D: Denoiser<T> + ?Sized,
    S: NoiseSchedule + ?Sized,
{
    validate_sigmas(sigmas)?;
    churn.validate()?;
    let probe = sigmas[0];
    let (a, s) = (eval.schedule.alpha(probe), eval.schedule.sigma(probe));
    if (a - 1.0).abs() > 1e-12 || (s - probe).abs() > 1e-12 * probe.max(1.0) {
        return Err(invalid(
            "schedule",
            format!("EDM Heun needs alpha = 1 and sigma(t) = t, got alpha {a}, sigma {s} at t = {probe}"),
        ));
    }
    let steps = (sigmas.len() - 1) as f64;
    let mut x = x.clone();
    for w in sigmas.windows(2) {
        let (mut s0, s1) = (w[0], w[1]);
        let gamma = if churn.s_churn > 0.0 && (churn.s_tmin..=churn.s_tmax).contains(&s0) {
            (churn.s_churn / steps).min(std::f64::consts::SQRT_2 - 1.0)
        } else {
            0.0
        };
        if gamma > 0.0 {
            let s_hat = s0 * (1.0 + gamma);
            let rng = rng
                .as_deref_mut()
                .ok_or_else(|| invalid("rng", "EDM churn draws noise: pass an Rng"))?;
            let scale = churn.s_noise * (s_hat * s_hat - s0 * s0).sqrt();
            x.lincomb(1.0, &[], Some(Noise::new(scale, rng)))?;
            s0 = s_hat;
        }
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
