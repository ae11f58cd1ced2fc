//! Evaluating a model at a continuous time of a schedule.

use std::cell::Cell;

use diffusion_core::{Denoiser, NoiseLevel, NoiseSchedule, Parameterization, Tensor, predict_as};

use crate::error::Result;

/// How a continuous time `t` becomes the time input the network itself takes.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
#[non_exhaustive]
pub enum ModelTime {
    /// The network takes `t` itself (continuous-time models, EDM's `sigma`, flows).
    #[default]
    Identity,
    /// `scale * t + offset`; a discrete-time model trained on `N` steps under
    /// DPM-Solver's convention takes `N t - 1` (see `InterpolatedVp::model_timestep`).
    Affine { scale: f64, offset: f64 },
}

impl ModelTime {
    /// DPM-Solver's map for a discrete model with `n` training steps: `n t - 1`.
    pub fn discrete(n: usize) -> Self {
        Self::Affine {
            scale: n as f64,
            offset: -1.0,
        }
    }

    pub fn apply(self, t: f64) -> f64 {
        match self {
            Self::Identity => t,
            Self::Affine { scale, offset } => scale * t + offset,
        }
    }
}

/// A model bound to a schedule: predictions at continuous times, with a call counter.
pub struct Evaluator<'a, D: ?Sized, S: ?Sized> {
    pub model: &'a D,
    pub schedule: &'a S,
    pub time: ModelTime,
    nfe: Cell<usize>,
}

impl<D: ?Sized, S: ?Sized> std::fmt::Debug for Evaluator<'_, D, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Evaluator")
            .field("time", &self.time)
            .field("nfe", &self.nfe.get())
            .finish()
    }
}

impl<'a, D: ?Sized, S: NoiseSchedule + ?Sized> Evaluator<'a, D, S> {
    pub fn new(model: &'a D, schedule: &'a S, time: ModelTime) -> Self {
        Self {
            model,
            schedule,
            time,
            nfe: Cell::new(0),
        }
    }

    /// Model calls made so far.
    pub fn nfe(&self) -> usize {
        self.nfe.get()
    }

    /// The noise level handed to the model at time `t`.
    pub fn level(&self, t: f64) -> NoiseLevel {
        NoiseLevel::new(self.time.apply(t), self.schedule.alpha(t), self.schedule.sigma(t))
    }

    /// The model's prediction at `(x, t)` as `target` (checked for shape and finiteness).
    pub fn predict<T: Tensor>(&self, x: &T, t: f64, target: Parameterization) -> Result<T>
    where
        D: Denoiser<T>,
    {
        self.nfe.set(self.nfe.get() + 1);
        Ok(predict_as(self.model, x, self.level(t), target)?)
    }

    /// The data prediction `x0(x, t)`.
    pub fn data<T: Tensor>(&self, x: &T, t: f64) -> Result<T>
    where
        D: Denoiser<T>,
    {
        self.predict(x, t, Parameterization::Sample)
    }

    /// The noise prediction `eps(x, t)`.
    pub fn noise<T: Tensor>(&self, x: &T, t: f64) -> Result<T>
    where
        D: Denoiser<T>,
    {
        self.predict(x, t, Parameterization::Epsilon)
    }
}
