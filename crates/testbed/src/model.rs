//! The exact mixture model as a [`Denoiser`], and a wrapper that reads the noise level
//! from a diffusers timestep table.

use diffusion_core::{ConditionalDenoiser, Denoiser, Element, NoiseLevel, Parameterization, Tensor};
use ndarray::{ArrayD, ArrayView2, IxDyn};

use crate::error::{Result, TestbedError};
use crate::gmm::GaussianMixture;
use crate::spec::DiscreteVpSchedule;

/// The exact posterior-mean model of a [`GaussianMixture`], predicting `parameterization`.
///
/// Input batches are `[B, ...]` with the trailing axes holding `D` values per item (so a
/// 64-dimensional mixture can be shaped `[B, 1, 8, 8]`). The noise level's own `alpha`
/// and `sigma` are used as given: no schedule convention (VP, VE, flow) is assumed.
///
/// As a [`ConditionalDenoiser`] with `Cond = usize`, class `k` is mixture component `k`:
/// the exact model of the class-conditional distribution.
#[derive(Clone, Debug, PartialEq)]
pub struct GmmDenoiser {
    gmm: GaussianMixture,
    parameterization: Parameterization,
}

impl GmmDenoiser {
    /// Fails for parameterizations the model cannot produce (none today, but core's enum
    /// is non-exhaustive).
    pub fn new(gmm: GaussianMixture, parameterization: Parameterization) -> Result<Self> {
        match parameterization {
            Parameterization::Epsilon
            | Parameterization::Sample
            | Parameterization::V
            | Parameterization::Flow
            | Parameterization::Score => Ok(Self {
                gmm,
                parameterization,
            }),
            other => Err(TestbedError::invalid(
                "parameterization",
                format!("{other:?} is not supported by the exact mixture model"),
            )),
        }
    }

    /// The epsilon-predicting model.
    pub fn epsilon(gmm: GaussianMixture) -> Self {
        Self {
            gmm,
            parameterization: Parameterization::Epsilon,
        }
    }

    pub fn mixture(&self) -> &GaussianMixture {
        &self.gmm
    }

    /// The exact prediction for `x` (any element type) at `level`, as f64 rows.
    fn predict_f64<A: Element>(
        &self,
        gmm: &GaussianMixture,
        x: &ArrayD<A>,
        level: NoiseLevel,
    ) -> Result<ArrayD<A>> {
        let shape = x.shape();
        let d = gmm.dim();
        let per_item: usize = shape.iter().skip(1).product();
        if shape.len() < 2 || per_item != d {
            return Err(TestbedError::shape(
                "mixture model input",
                format!("[batch, ...] with {d} values per item"),
                shape,
            ));
        }
        let rows: Vec<f64> = x.iter().map(|v| v.as_f64()).collect();
        let view = ArrayView2::from_shape((shape[0], d), &rows).expect("length checked above");
        let out = gmm
            .at_noise(level.alpha, level.sigma)?
            .predict(view, self.parameterization)?;
        let data: Vec<A> = out.iter().map(|&v| A::of_f64(v)).collect();
        Ok(ArrayD::from_shape_vec(IxDyn(shape), data).expect("same shape as the input"))
    }
}

impl<A: Element> Denoiser<ArrayD<A>> for GmmDenoiser
where
    ArrayD<A>: Tensor,
{
    fn parameterization(&self) -> Parameterization {
        self.parameterization
    }

    fn predict(&self, x: &ArrayD<A>, level: NoiseLevel) -> diffusion_core::Result<ArrayD<A>> {
        self.predict_f64(&self.gmm, x, level)
            .map_err(TestbedError::into_core)
    }
}

impl<A: Element> ConditionalDenoiser<ArrayD<A>> for GmmDenoiser
where
    ArrayD<A>: Tensor,
{
    /// The class (mixture component) index.
    type Cond = usize;

    fn parameterization(&self) -> Parameterization {
        self.parameterization
    }

    fn predict_cond(
        &self,
        x: &ArrayD<A>,
        level: NoiseLevel,
        cond: Option<&usize>,
    ) -> diffusion_core::Result<ArrayD<A>> {
        let result = match cond {
            None => self.predict_f64(&self.gmm, x, level),
            Some(&k) => self
                .gmm
                .component(k)
                .and_then(|class| self.predict_f64(&class, x, level)),
        };
        result.map_err(TestbedError::into_core)
    }
}

impl<A: Element> Denoiser<ArrayD<A>> for GaussianMixture
where
    ArrayD<A>: Tensor,
{
    /// A bare mixture is the epsilon model (the usual diffusers convention).
    fn parameterization(&self) -> Parameterization {
        Parameterization::Epsilon
    }

    fn predict(&self, x: &ArrayD<A>, level: NoiseLevel) -> diffusion_core::Result<ArrayD<A>> {
        let model = GmmDenoiser {
            gmm: self.clone(),
            parameterization: Parameterization::Epsilon,
        };
        model.predict_f64(self, x, level).map_err(TestbedError::into_core)
    }
}

/// A model that sees only the diffusers timestep, like a trained UNet: the wrapper
/// replaces the solver's `alpha`, `sigma` by the table's values at `level.timestep`.
///
/// This assumes the solver's sample lives in the table's VP space (`alpha^2 + sigma^2 =
/// 1`), which is where diffusers hands samples to the model (after any
/// `scale_model_input`). Use it to reproduce diffusers runs; use the wrapped model
/// directly when the solver's noise level is the truth.
#[derive(Clone, Debug, PartialEq)]
pub struct TimestepModel<M> {
    model: M,
    schedule: DiscreteVpSchedule,
}

impl<M> TimestepModel<M> {
    pub fn new(model: M, schedule: DiscreteVpSchedule) -> Self {
        Self { model, schedule }
    }

    pub fn schedule(&self) -> &DiscreteVpSchedule {
        &self.schedule
    }

    pub fn inner(&self) -> &M {
        &self.model
    }
}

impl<T: Tensor, M: Denoiser<T>> Denoiser<T> for TimestepModel<M> {
    fn parameterization(&self) -> Parameterization {
        self.model.parameterization()
    }

    fn predict(&self, x: &T, level: NoiseLevel) -> diffusion_core::Result<T> {
        let table_level = self
            .schedule
            .level(level.timestep)
            .map_err(TestbedError::into_core)?;
        self.model.predict(x, table_level)
    }
}
