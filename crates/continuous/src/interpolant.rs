//! Stochastic-interpolant samplers (Albergo, Boffi & Vanden-Eijnden 2023): the ODE
//! `dX = b(t, X) dt` and the SDE `dX = [b + eps(t) score] dt + sqrt(2 eps(t)) dW` with a
//! tunable diffusion coefficient `eps(t)`, both from base (`t = 0`) to data (`t = 1`).
//!
//! The interpolant `x_t = a(t) x0 + b(t) x1 + gamma(t) z` with Gaussian base `x0` and
//! latent `z` has the marginal of a diffusion schedule `alpha = b(t)`, `sigma = s(t) =
//! sqrt(a^2 + gamma^2)` (the two Gaussians combine into one noise `eps`). So an ordinary
//! denoiser evaluated at that noise level gives everything: with `x1_hat = E[x1 | x_t]`
//! and `eps_hat = (x_t - b x1_hat) / s`, `E[x0 | x_t] = (a / s) eps_hat` and
//! `E[z | x_t] = (gamma / s) eps_hat`, hence the velocity
//! `b(t, x) = b' x1_hat + s' eps_hat` (with `s s' = a a' + gamma gamma'`) and the score
//! `-eps_hat / s`. [`InterpolantSchedule`] is that schedule in diffusion time
//! `tau = 1 - t`, which is how the model is evaluated. At `t = 0` (`b = 0`) only a model
//! that predicts data (or velocity) determines `x1_hat`; an epsilon model must start at
//! `t > 0` (the conversion reports a singular-conversion error otherwise).

use diffusion_core::{Convention, Denoiser, Noise, NoiseSchedule, Rng, Tensor};
use diffusion_schedules::continuous::Interpolant;

use crate::error::{Result, invalid};
use crate::eval::Evaluator;

/// An [`Interpolant`] as a diffusion [`NoiseSchedule`] in time `tau = 1 - t` (noisier as
/// `tau` grows): `alpha(tau) = b(1 - tau)`, `sigma(tau) = sqrt(a^2 + gamma^2)(1 - tau)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct InterpolantSchedule {
    pub interpolant: Interpolant,
}

/// Marginal coefficients at interpolant time `t`: `alpha = b`, `sigma = s` and their
/// derivatives in `t`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Marginal {
    pub alpha: f64,
    pub sigma: f64,
    pub dalpha: f64,
    pub dsigma: f64,
}

impl InterpolantSchedule {
    pub fn new(interpolant: Interpolant) -> Result<Self> {
        let g = interpolant.gamma_scale;
        if !(g.is_finite() && g >= 0.0) {
            return Err(invalid(
                "gamma_scale",
                format!("must be finite and >= 0, got {g}"),
            ));
        }
        Ok(Self { interpolant })
    }

    /// The marginal at interpolant time `t` (data at `t = 1`).
    pub fn marginal(&self, t: f64) -> Marginal {
        let c = self.interpolant.coefficients(t);
        let sigma = (c.a * c.a + c.gamma * c.gamma).sqrt();
        // gamma gamma' = scale (1 - 2t) / 2 exactly, also where gamma' itself is infinite.
        let gamma_dgamma = 0.5 * self.interpolant.gamma_scale * (1.0 - 2.0 * t);
        Marginal {
            alpha: c.b,
            sigma,
            dalpha: c.db,
            dsigma: (c.a * c.da + gamma_dgamma) / sigma,
        }
    }

    /// The model's time map: networks of an interpolant take `t = 1 - tau`.
    pub fn model_time() -> crate::eval::ModelTime {
        crate::eval::ModelTime::Affine {
            scale: -1.0,
            offset: 1.0,
        }
    }
}

impl NoiseSchedule for InterpolantSchedule {
    fn alpha(&self, tau: f64) -> f64 {
        self.marginal(1.0 - tau).alpha
    }
    fn sigma(&self, tau: f64) -> f64 {
        self.marginal(1.0 - tau).sigma
    }
    fn t_range(&self) -> (f64, f64) {
        (0.0, 1.0)
    }
    fn convention(&self) -> Convention {
        Convention::Other
    }
}

/// The SDE's diffusion coefficient `eps(t)`.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum InterpolantDiffusion {
    /// `eps(t) = c`: the paper's constant choice. The score term `c / s^2` grows without
    /// bound as `t -> 1`, so keep the last time away from 1 or the steps small there.
    Constant(f64),
    /// `eps(t) = c s(t)^2`: noise that vanishes with the marginal's noise level, so the
    /// drift stays bounded up to the data end.
    NoiseScaled(f64),
}

impl InterpolantDiffusion {
    fn at(self, sigma: f64) -> f64 {
        match self {
            Self::Constant(c) => c,
            Self::NoiseScaled(c) => c * sigma * sigma,
        }
    }

    fn validate(self) -> Result<()> {
        let (Self::Constant(c) | Self::NoiseScaled(c)) = self;
        if c.is_finite() && c >= 0.0 {
            Ok(())
        } else {
            Err(invalid("diffusion", format!("must be finite and >= 0, got {c}")))
        }
    }
}

/// Checks interpolant times: strictly increasing, in `[0, 1)` (the score is singular at 1).
fn validate_times(times: &[f64]) -> Result<()> {
    if times.len() < 2 {
        return Err(invalid(
            "times",
            format!("need at least 2 times, got {}", times.len()),
        ));
    }
    if let Some(t) = times.iter().find(|t| !(t.is_finite() && (0.0..1.0).contains(*t))) {
        return Err(invalid(
            "times",
            format!("interpolant times must lie in [0, 1) (the data end t = 1 is singular), got {t}"),
        ));
    }
    if let Some(w) = times.windows(2).find(|w| w[1] <= w[0]) {
        return Err(invalid(
            "times",
            format!("must strictly increase, got {} then {}", w[0], w[1]),
        ));
    }
    Ok(())
}

/// The model's data prediction `x1_hat` at interpolant time `t`, and the marginal there.
fn data_prediction<T, D>(eval: &Evaluator<'_, D, InterpolantSchedule>, x: &T, t: f64) -> Result<(T, Marginal)>
where
    T: Tensor,
    D: Denoiser<T> + ?Sized,
{
    let m = eval.schedule.marginal(t);
    Ok((eval.data(x, 1.0 - t)?, m))
}

/// The velocity `b(t, x) = (s'/s) x + (b' - s' b / s) x1_hat` (one model call).
pub fn velocity<T, D>(eval: &Evaluator<'_, D, InterpolantSchedule>, x: &T, t: f64) -> Result<T>
where
    T: Tensor,
    D: Denoiser<T> + ?Sized,
{
    let (mut v, m) = data_prediction(eval, x, t)?;
    let rate = m.dsigma / m.sigma;
    v.lincomb(m.dalpha - rate * m.alpha, &[(rate, x)], None)?;
    Ok(v)
}

/// Integrates the interpolant ODE from `x` at `times[0]` through `times` (increasing in
/// `[0, 1)`) with Heun's method: `2 (len - 1)` model calls.
pub fn sample_ode<T, D>(eval: &Evaluator<'_, D, InterpolantSchedule>, x: &T, times: &[f64]) -> Result<T>
where
    T: Tensor,
    D: Denoiser<T> + ?Sized,
{
    validate_times(times)?;
    let mut x = x.clone();
    for w in times.windows(2) {
        let (t, h) = (w[0], w[1] - w[0]);
        let k1 = velocity(eval, &x, t)?;
        let mut pred = x.clone();
        pred.lincomb(1.0, &[(h, &k1)], None)?;
        let k2 = velocity(eval, &pred, w[1])?;
        x.lincomb(1.0, &[(0.5 * h, &k1), (0.5 * h, &k2)], None)?;
    }
    Ok(x)
}

/// Integrates the interpolant SDE `dX = [b + eps score] dt + sqrt(2 eps) dW` with
/// Euler-Maruyama from `x` at `times[0]` through `times` (one model call per step, one
/// fused update). With `final_denoise`, returns `E[x1 | x_end]` (one more call).
pub fn sample_sde<T, D>(
    eval: &Evaluator<'_, D, InterpolantSchedule>,
    x: &T,
    times: &[f64],
    diffusion: InterpolantDiffusion,
    final_denoise: bool,
    rng: &mut Rng,
) -> Result<T>
where
    T: Tensor,
    D: Denoiser<T> + ?Sized,
{
    validate_times(times)?;
    diffusion.validate()?;
    let mut x = x.clone();
    for w in times.windows(2) {
        let (t, h) = (w[0], w[1] - w[0]);
        let (x1, m) = data_prediction(eval, &x, t)?;
        let eps = diffusion.at(m.sigma);
        // b + eps score with score = -(x - alpha x1) / s^2, collected on x and x1_hat.
        let rate = m.dsigma / m.sigma;
        let pull = eps / (m.sigma * m.sigma);
        let cx = rate - pull;
        let c1 = m.dalpha - rate * m.alpha + pull * m.alpha;
        x.lincomb(
            1.0 + h * cx,
            &[(h * c1, &x1)],
            Some(Noise::new((2.0 * eps * h).sqrt(), rng)),
        )?;
    }
    if final_denoise {
        let t_end = times[times.len() - 1];
        x = eval.data(&x, 1.0 - t_end)?;
    }
    Ok(x)
}
