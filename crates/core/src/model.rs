//! The model as a solver sees it.

use std::marker::PhantomData;

use crate::param::{Parameterization, conversion};
use crate::tensor::{Tensor, check_same_shape};
use crate::{CoreError, Result};

/// Where on the noise schedule a model is evaluated.
///
/// `timestep` is the value the network itself takes as its time input (a diffusers
/// integer timestep, a fractional one, `0.25 ln sigma` for EDM, a flow time); `alpha`
/// and `sigma` describe the marginal `x = alpha * x0 + sigma * eps` at that point and are
/// what parameterization conversions use.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NoiseLevel {
    pub timestep: f64,
    pub alpha: f64,
    pub sigma: f64,
}

impl NoiseLevel {
    pub fn new(timestep: f64, alpha: f64, sigma: f64) -> Self {
        Self {
            timestep,
            alpha,
            sigma,
        }
    }

    /// Log signal-to-noise ratio `ln(alpha / sigma)`.
    pub fn lambda(&self) -> f64 {
        (self.alpha / self.sigma).ln()
    }
}

/// A denoising model: a prediction of a declared [`Parameterization`] for a batch `x` at
/// a noise level. Conditioning is bound into the model (see [`ConditionalDenoiser`]), so
/// solvers never see it.
pub trait Denoiser<T: Tensor> {
    /// What [`Denoiser::predict`] returns.
    fn parameterization(&self) -> Parameterization;

    /// The model's raw output for `x` at `level`.
    fn predict(&self, x: &T, level: NoiseLevel) -> Result<T>;
}

impl<T: Tensor, D: Denoiser<T> + ?Sized> Denoiser<T> for &D {
    fn parameterization(&self) -> Parameterization {
        (**self).parameterization()
    }
    fn predict(&self, x: &T, level: NoiseLevel) -> Result<T> {
        (**self).predict(x, level)
    }
}

impl<T: Tensor, D: Denoiser<T> + ?Sized> Denoiser<T> for Box<D> {
    fn parameterization(&self) -> Parameterization {
        (**self).parameterization()
    }
    fn predict(&self, x: &T, level: NoiseLevel) -> Result<T> {
        (**self).predict(x, level)
    }
}

/// A closure used as a model; see [`denoiser_fn`].
#[derive(Clone, Copy, Debug)]
pub struct FnDenoiser<F> {
    parameterization: Parameterization,
    f: F,
}

/// Wraps `f(x, level)` as a [`Denoiser`] predicting `parameterization`.
pub fn denoiser_fn<T, F>(parameterization: Parameterization, f: F) -> FnDenoiser<F>
where
    T: Tensor,
    F: Fn(&T, NoiseLevel) -> Result<T>,
{
    FnDenoiser { parameterization, f }
}

impl<T: Tensor, F: Fn(&T, NoiseLevel) -> Result<T>> Denoiser<T> for FnDenoiser<F> {
    fn parameterization(&self) -> Parameterization {
        self.parameterization
    }
    fn predict(&self, x: &T, level: NoiseLevel) -> Result<T> {
        (self.f)(x, level)
    }
}

/// A model that takes optional conditioning (class labels, text embeddings...).
pub trait ConditionalDenoiser<T: Tensor> {
    type Cond;
    fn parameterization(&self) -> Parameterization;
    fn predict_cond(&self, x: &T, level: NoiseLevel, cond: Option<&Self::Cond>) -> Result<T>;

    /// Binds `cond` (or none: the unconditional model) and returns a plain [`Denoiser`].
    fn with_cond<'a>(&'a self, cond: Option<&'a Self::Cond>) -> Conditioned<'a, Self, T>
    where
        Self: Sized,
    {
        Conditioned {
            model: self,
            cond,
            tensor: PhantomData,
        }
    }
}

/// A [`ConditionalDenoiser`] with its conditioning bound.
pub struct Conditioned<'a, M: ?Sized + ConditionalDenoiser<T>, T: Tensor> {
    model: &'a M,
    cond: Option<&'a M::Cond>,
    tensor: PhantomData<fn() -> T>,
}

impl<T: Tensor, M: ConditionalDenoiser<T>> std::fmt::Debug for Conditioned<'_, M, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conditioned")
            .field("has_cond", &self.cond.is_some())
            .finish()
    }
}

impl<T: Tensor, M: ConditionalDenoiser<T>> Denoiser<T> for Conditioned<'_, M, T> {
    fn parameterization(&self) -> Parameterization {
        self.model.parameterization()
    }
    fn predict(&self, x: &T, level: NoiseLevel) -> Result<T> {
        self.model.predict_cond(x, level, self.cond)
    }
}

/// Vector-Jacobian products of a model's raw output, for gradients through a sampler
/// (AdjointDPM) without a tape. `params` is whatever the model declares differentiable,
/// flattened in a fixed order: network weights, a conditioning embedding, or both.
#[derive(Clone, Debug, PartialEq)]
pub struct Vjp<T> {
    /// `g^T d out / d x`, shaped like `x`.
    pub x: T,
    /// `g^T d out / d params`, of length [`DifferentiableDenoiser::num_params`].
    pub params: Vec<f64>,
}

/// A [`Denoiser`] that can pull a cotangent back through [`Denoiser::predict`].
pub trait DifferentiableDenoiser<T: Tensor>: Denoiser<T> {
    /// Length of the flattened differentiable parameter vector (0 if none).
    fn num_params(&self) -> usize;

    /// The products of `cotangent` (shaped like the output) with the Jacobians of the
    /// raw prediction at `(x, level)`.
    fn vjp(&self, x: &T, level: NoiseLevel, cotangent: &T) -> Result<Vjp<T>>;
}

/// Calls `model`, checks the output's shape and finiteness, and converts it to `target`
/// in place (one fused pass, no extra allocation).
pub fn predict_as<T: Tensor, D: Denoiser<T> + ?Sized>(
    model: &D,
    x: &T,
    level: NoiseLevel,
    target: Parameterization,
) -> Result<T> {
    let mut out = model.predict(x, level)?;
    check_same_shape("model output", x.shape(), out.shape())?;
    let bad = out.count_non_finite();
    if bad > 0 {
        return Err(CoreError::NonFiniteModelOutput {
            timestep: level.timestep,
            sigma: level.sigma,
            count: bad,
        });
    }
    let from = model.parameterization();
    if from != target {
        let (cx, cm) = conversion(from, target, level.alpha, level.sigma)?;
        out.lincomb(cm, &[(cx, x)], None)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{ArrayD, IxDyn};

    #[test]
    fn closure_model_converts_to_x0() {
        // An exact epsilon model for data concentrated at x0 = 2.
        let model = denoiser_fn(Parameterization::Epsilon, |x: &ArrayD<f64>, l: NoiseLevel| {
            Ok(x.mapv(|v| (v - l.alpha * 2.0) / l.sigma))
        });
        let x = ArrayD::from_elem(IxDyn(&[4]), 0.3);
        let level = NoiseLevel::new(500.0, 0.6, 0.8);
        let x0 = predict_as(&model, &x, level, Parameterization::Sample).unwrap();
        assert!(x0.iter().all(|v| (v - 2.0).abs() < 1e-12));
    }

    #[test]
    fn nan_and_wrong_shape_are_errors() {
        let nan = denoiser_fn(Parameterization::Epsilon, |x: &ArrayD<f32>, _| {
            Ok(x.mapv(|_| f32::NAN))
        });
        let x = ArrayD::<f32>::zeros(IxDyn(&[2, 2]));
        let level = NoiseLevel::new(1.0, 0.5, 0.5);
        assert!(matches!(
            predict_as(&nan, &x, level, Parameterization::Epsilon),
            Err(CoreError::NonFiniteModelOutput { count: 4, .. })
        ));
        let wrong = denoiser_fn(Parameterization::Epsilon, |_: &ArrayD<f32>, _| {
            Ok(ArrayD::zeros(IxDyn(&[3])))
        });
        assert!(matches!(
            predict_as(&wrong, &x, level, Parameterization::Epsilon),
            Err(CoreError::ShapeMismatch { .. })
        ));
    }

    struct ClassShift;
    impl ConditionalDenoiser<ArrayD<f64>> for ClassShift {
        type Cond = f64;
        fn parameterization(&self) -> Parameterization {
            Parameterization::Sample
        }
        fn predict_cond(&self, x: &ArrayD<f64>, _: NoiseLevel, cond: Option<&f64>) -> Result<ArrayD<f64>> {
            Ok(x.mapv(|v| v + cond.copied().unwrap_or(0.0)))
        }
    }

    #[test]
    fn conditioning_binds_into_a_denoiser() {
        let x = ArrayD::from_elem(IxDyn(&[1]), 1.0);
        let level = NoiseLevel::new(0.0, 1.0, 0.1);
        let m = ClassShift;
        let c = 3.0;
        assert_eq!(m.with_cond(Some(&c)).predict(&x, level).unwrap()[0], 4.0);
        assert_eq!(m.with_cond(None).predict(&x, level).unwrap()[0], 1.0);
    }
}
