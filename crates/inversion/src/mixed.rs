//! Mixed precision for exactly invertible samplers: the sampler's state lives in f64
//! host vectors while the model runs in its own tensor type `T` (like fp32 master
//! weights beside a bf16 model). Only the model's inputs are rounded to `T`.
//!
//! Why: inversion recomputes the states of sampling. If the recomputed f64 state agrees
//! with the sampled one to far below half a `T` ulp, the model sees bit-identical
//! inputs in both directions and returns bit-identical outputs, so its own rounding
//! noise (e.g. an epsilon model's `x - sigma eps` at sigma = 80 in f32) cancels exactly
//! instead of entering the reconstruction.
//!
//! The arithmetic here is plain serial loops: it is a few streams per model call, and it
//! keeps results independent of any thread count.

use diffusion_core::{Denoiser, NoiseLevel, Parameterization, Tensor, param::conversion};

use crate::Result;

/// `sum_i c_i t_i`, summed left to right per element, into a new vector.
pub(crate) fn combine(terms: &[(f64, &[f64])]) -> Vec<f64> {
    let len = terms.first().map_or(0, |t| t.1.len());
    debug_assert!(terms.iter().all(|t| t.1.len() == len), "same length (internal)");
    let mut out = vec![0.0; len];
    accumulate(&mut out, 1.0, terms);
    out
}

/// `acc = keep acc + sum_i c_i t_i`, in place.
pub(crate) fn accumulate(acc: &mut [f64], keep: f64, terms: &[(f64, &[f64])]) {
    for (i, a) in acc.iter_mut().enumerate() {
        let mut v = keep * *a;
        for (c, t) in terms {
            v += c * t[i];
        }
        *a = v;
    }
}

/// `c v` in a new vector.
pub(crate) fn scaled(c: f64, v: &[f64]) -> Vec<f64> {
    v.iter().map(|x| c * x).collect()
}

/// The model's prediction converted to `target`, at the f64 point `x` rounded to `T`
/// (shaped like `like`). The conversion is applied in f64 to the rounded input the model
/// actually saw, so the result is a deterministic function of that `T` input.
pub(crate) fn predict<T: Tensor, D: Denoiser<T> + ?Sized>(
    model: &D,
    like: &T,
    x: &[f64],
    level: NoiseLevel,
    step: usize,
    target: Parameterization,
) -> Result<Vec<f64>> {
    let input = like.from_f64_like(x)?;
    let out = crate::checked_predict(model, &input, level, step)?.to_f64_vec();
    let from = model.parameterization();
    if from == target {
        return Ok(out);
    }
    let (cx, cm) = conversion(from, target, level.alpha, level.sigma)?;
    let seen = input.to_f64_vec();
    Ok(combine(&[(cm, &out), (cx, &seen)]))
}

/// The model's x0 prediction (EDM's `D`) at `x` rounded to `T`.
pub(crate) fn denoised<T: Tensor, D: Denoiser<T> + ?Sized>(
    model: &D,
    like: &T,
    x: &[f64],
    level: NoiseLevel,
    step: usize,
) -> Result<Vec<f64>> {
    predict(model, like, x, level, step, Parameterization::Sample)
}
