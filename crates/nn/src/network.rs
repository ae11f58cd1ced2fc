//! The model interface training code is written against, and its adapter to
//! [`diffusion_core::Denoiser`].

use diffusion_core::{Denoiser, NoiseLevel, Parameterization};
use ndarray::ArrayD;

use crate::error::{NnError, Result, check_shape};
use crate::param::{Float, Parameters};

/// A network with a hand-written backward pass.
pub trait Network<A>: Parameters<A> {
    /// What the forward pass keeps for the backward pass.
    type Cache;

    /// `x`: `[batch, ...input_shape]`; `t`: the model time input, one per batch item;
    /// `cond`: optional class labels, one per item (ignored by unconditional models).
    fn forward(&self, x: &ArrayD<A>, t: &[A], cond: Option<&[usize]>) -> Result<(ArrayD<A>, Self::Cache)>;

    /// Accumulates parameter gradients for the loss whose gradient with respect to the
    /// output is `dy`, and returns dL/dx.
    fn backward(&mut self, cache: &Self::Cache, dy: &ArrayD<A>) -> Result<ArrayD<A>>;

    /// The shape of one input item (the output has the same shape).
    fn input_shape(&self) -> Vec<usize>;

    /// Forward without keeping a cache (models may override with a leaner path).
    fn infer(&self, x: &ArrayD<A>, t: &[A], cond: Option<&[usize]>) -> Result<ArrayD<A>> {
        Ok(self.forward(x, t, cond)?.0)
    }
}

/// Checks `x` is `[batch, ...item]` and that there is one timestep per item; returns the batch.
pub(crate) fn check_input<A>(x: &ArrayD<A>, item: &[usize], t: &[A], context: &str) -> Result<usize> {
    let shape = x.shape();
    let batch = shape.first().copied().unwrap_or(0);
    let mut expected = vec![batch];
    expected.extend_from_slice(item);
    check_shape(context, &expected, shape)?;
    if t.len() != batch {
        return Err(NnError::Input {
            name: "t",
            reason: format!("{context}: {} timesteps for a batch of {batch}", t.len()),
        });
    }
    Ok(batch)
}

/// A [`Network`] seen as a [`Denoiser`]: the scalar `NoiseLevel::timestep` is broadcast
/// to every batch item, and the output is declared to be `parameterization`.
#[derive(Debug, Clone)]
pub struct NetworkDenoiser<N> {
    pub net: N,
    pub parameterization: Parameterization,
    /// Class labels bound into the model (one per batch item), if any.
    pub cond: Option<Vec<usize>>,
}

impl<N> NetworkDenoiser<N> {
    pub fn new(net: N, parameterization: Parameterization) -> Self {
        Self {
            net,
            parameterization,
            cond: None,
        }
    }

    /// Binds class labels (one per batch item).
    pub fn with_cond(mut self, cond: Vec<usize>) -> Self {
        self.cond = Some(cond);
        self
    }
}

impl<A: Float, N: Network<A>> Denoiser<ArrayD<A>> for NetworkDenoiser<N> {
    fn parameterization(&self) -> Parameterization {
        self.parameterization
    }

    fn predict(&self, x: &ArrayD<A>, level: NoiseLevel) -> diffusion_core::Result<ArrayD<A>> {
        let batch = x.shape().first().copied().unwrap_or(0);
        let t = vec![A::of_f64(level.timestep); batch];
        Ok(self.net.infer(x, &t, self.cond.as_deref())?)
    }
}
