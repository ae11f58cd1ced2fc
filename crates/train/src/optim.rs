//! AdamW, the learning-rate schedule, gradient clipping and the EMA of weights.

use ndarray::ArrayD;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError, check_positive, check_range};
use crate::net::{Param, Parameters};
use crate::scalar::Scalar;

/// Elements per parallel task of the AdamW update.
const UPDATE_CHUNK: usize = 1 << 14;

/// A parameter, gradient or moment tensor as a slice: all are created in standard layout.
fn standard<S>(s: Option<S>) -> S {
    s.expect("parameters and optimizer moments are kept in standard layout")
}

/// AdamW hyperparameters; the defaults are PyTorch's (`torch.optim.AdamW`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 1e-2,
        }
    }
}

impl AdamWConfig {
    pub fn validate(&self) -> Result<()> {
        check_range("beta1", self.beta1, 0.0, 1.0, true)?;
        check_range("beta2", self.beta2, 0.0, 1.0, true)?;
        check_positive("eps", self.eps)?;
        check_range("weight_decay", self.weight_decay, 0.0, f64::MAX, false)
    }
}

/// The first and second moments of one parameter.
#[derive(Clone, Debug, PartialEq)]
pub struct Moments<A> {
    pub name: String,
    pub exp_avg: ArrayD<A>,
    pub exp_avg_sq: ArrayD<A>,
}

/// AdamW with decoupled weight decay and bias correction (Loshchilov & Hutter 2019), with
/// `torch.optim.AdamW`'s update order:
///
/// ```text
/// p <- p (1 - lr wd);  m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2
/// p <- p - lr / (1 - b1^k) * m / (sqrt(v) / sqrt(1 - b2^k) + eps)
/// ```
/// Arithmetic is per element in f64, rounded once into the parameter's type.
#[derive(Clone, Debug, PartialEq)]
pub struct AdamW<A> {
    config: AdamWConfig,
    step: u64,
    moments: Vec<Moments<A>>,
}

impl<A: Scalar> AdamW<A> {
    /// Zero moments shaped like `model`'s parameters, step 0.
    pub fn new<M: Parameters<A> + ?Sized>(config: AdamWConfig, model: &M) -> Result<Self> {
        config.validate()?;
        let mut moments = Vec::new();
        model.visit(&mut |name, p| {
            let zeros = ArrayD::from_elem(p.value.raw_dim(), A::default());
            moments.push(Moments {
                name: name.to_string(),
                exp_avg: zeros.clone(),
                exp_avg_sq: zeros,
            });
        });
        Ok(Self {
            config,
            step: 0,
            moments,
        })
    }

    /// Restores a saved state (see [`AdamW::moments`] and [`AdamW::step_count`]).
    pub fn from_state(config: AdamWConfig, step: u64, moments: Vec<Moments<A>>) -> Result<Self> {
        config.validate()?;
        for m in &moments {
            if m.exp_avg.shape() != m.exp_avg_sq.shape() {
                return Err(TrainError::ShapeMismatch {
                    context: "AdamW moments",
                    expected: m.exp_avg.shape().to_vec(),
                    got: m.exp_avg_sq.shape().to_vec(),
                });
            }
        }
        Ok(Self {
            config,
            step,
            moments,
        })
    }

    pub fn config(&self) -> &AdamWConfig {
        &self.config
    }

    /// Number of updates taken so far.
    pub fn step_count(&self) -> u64 {
        self.step
    }

    pub fn moments(&self) -> &[Moments<A>] {
        &self.moments
    }

    /// Checks that `model`'s parameters match the optimizer state, name by name, so a
    /// mismatch is reported before anything is modified.
    fn check_model<M: Parameters<A> + ?Sized>(&self, model: &M) -> Result<()> {
        let mut index = 0;
        let mut error = None;
        model.visit(&mut |name, p| {
            if error.is_none() {
                error = match self.moments.get(index) {
                    None => Some(format!("parameter `{name}` has no optimizer state")),
                    Some(m) if m.name != name || m.exp_avg.shape() != p.value.shape() => Some(format!(
                        "parameter `{name}` {:?} does not match optimizer state `{}` {:?}",
                        p.value.shape(),
                        m.name,
                        m.exp_avg.shape()
                    )),
                    Some(_) if p.grad.shape() != p.value.shape() => Some(format!(
                        "gradient of `{name}` has shape {:?}, the value {:?}",
                        p.grad.shape(),
                        p.value.shape()
                    )),
                    Some(_) => None,
                };
            }
            index += 1;
        });
        if error.is_none() && index != self.moments.len() {
            error = Some(format!(
                "the optimizer holds state for {} parameters but the model has {index}",
                self.moments.len()
            ));
        }
        error.map_or(Ok(()), |e| Err(TrainError::invalid("model", e)))
    }

    /// One update of every parameter of `model` with learning rate `lr`, using the
    /// gradients accumulated in it.
    pub fn step<M: Parameters<A> + ?Sized>(&mut self, model: &mut M, lr: f64) -> Result<()> {
        check_range("learning rate", lr, 0.0, f64::MAX, false)?;
        let AdamWConfig {
            beta1,
            beta2,
            eps,
            weight_decay,
        } = self.config;
        let k = self.step + 1;
        // Exponents beyond i32 make both corrections exactly 1 in f64 anyway.
        let kexp = k.min(i32::MAX as u64) as i32;
        let bias1 = 1.0 - beta1.powi(kexp);
        let bias2_sqrt = (1.0 - beta2.powi(kexp)).sqrt();
        let step_size = lr / bias1;
        let decay = 1.0 - lr * weight_decay;
        self.check_model(model)?;
        let mut index = 0;
        let update = |w: &mut [A], g: &[A], ea: &mut [A], eas: &mut [A]| {
            for (((w, &g), ea), eas) in w.iter_mut().zip(g).zip(ea).zip(eas) {
                let g = g.as_f64();
                let mean = beta1 * ea.as_f64() + (1.0 - beta1) * g;
                let var = beta2 * eas.as_f64() + (1.0 - beta2) * g * g;
                let denom = var.sqrt() / bias2_sqrt + eps;
                *w = A::of_f64(w.as_f64() * decay - step_size * mean / denom);
                *ea = A::of_f64(mean);
                *eas = A::of_f64(var);
            }
        };
        model.visit_mut(&mut |_, p: &mut Param<A>| {
            let m = &mut self.moments[index];
            index += 1;
            let Param { value, grad } = p;
            let (w, g, ea, eas) = (
                standard(value.as_slice_mut()),
                standard(grad.as_slice()),
                standard(m.exp_avg.as_slice_mut()),
                standard(m.exp_avg_sq.as_slice_mut()),
            );
            // Elementwise, so chunking (and the thread count) cannot change a result.
            if w.len() < UPDATE_CHUNK {
                update(w, g, ea, eas);
            } else {
                w.par_chunks_mut(UPDATE_CHUNK)
                    .zip(g.par_chunks(UPDATE_CHUNK))
                    .zip(
                        ea.par_chunks_mut(UPDATE_CHUNK)
                            .zip(eas.par_chunks_mut(UPDATE_CHUNK)),
                    )
                    .for_each(|((w, g), (ea, eas))| update(w, g, ea, eas));
            }
        });
        self.step = k;
        Ok(())
    }
}

/// Linear warm-up from 0 to `peak` over `warmup_steps`, then half-cosine decay to `min_lr`
/// at `total_steps` (and `min_lr` after). With `min_lr = 0` this is diffusers'
/// `get_cosine_schedule_with_warmup`: `lr(k) = peak * k / warmup` for `k < warmup`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LrSchedule {
    pub peak: f64,
    pub warmup_steps: u64,
    pub total_steps: u64,
    pub min_lr: f64,
}

impl LrSchedule {
    /// A constant learning rate.
    pub fn constant(lr: f64) -> Self {
        Self {
            peak: lr,
            warmup_steps: 0,
            total_steps: 0,
            min_lr: lr,
        }
    }

    pub fn validate(&self) -> Result<()> {
        check_range("peak learning rate", self.peak, 0.0, f64::MAX, false)?;
        check_range("min learning rate", self.min_lr, 0.0, self.peak, false)?;
        if self.total_steps > 0 && self.warmup_steps > self.total_steps {
            return Err(TrainError::invalid(
                "warmup_steps",
                format!("{} exceeds total_steps {}", self.warmup_steps, self.total_steps),
            ));
        }
        Ok(())
    }

    /// The learning rate of (0-based) optimizer step `step`.
    pub fn lr_at(&self, step: u64) -> f64 {
        if step < self.warmup_steps {
            return self.peak * step as f64 / self.warmup_steps as f64;
        }
        let span = self.total_steps.saturating_sub(self.warmup_steps).max(1);
        let progress = ((step - self.warmup_steps) as f64 / span as f64).min(1.0);
        if self.total_steps == 0 {
            return self.peak;
        }
        self.min_lr + (self.peak - self.min_lr) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
    }
}

/// Global L2 norm of all gradients (accumulated in f64, in visit order).
pub fn grad_norm<A: Scalar, M: Parameters<A> + ?Sized>(model: &M) -> f64 {
    let mut sum = 0.0;
    model.visit(&mut |_, p| {
        sum += p.grad.iter().map(|g| g.as_f64() * g.as_f64()).sum::<f64>();
    });
    sum.sqrt()
}

/// Scales all gradients so their global norm is at most `max_norm`, as
/// `torch.nn.utils.clip_grad_norm_`: the factor is `max_norm / (norm + 1e-6)`, applied only
/// when below 1. Returns the norm before clipping; a non-finite norm is an error.
pub fn clip_grad_norm<A: Scalar, M: Parameters<A> + ?Sized>(model: &mut M, max_norm: f64) -> Result<f64> {
    check_positive("max_norm", max_norm)?;
    let norm = grad_norm(model);
    if !norm.is_finite() {
        return Err(TrainError::invalid("gradients", format!("global norm is {norm}")));
    }
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        model.visit_mut(&mut |_, p| p.grad.mapv_inplace(|g| A::of_f64(g.as_f64() * coef)));
    }
    Ok(norm)
}

/// An exponential moving average of a model's weights:
/// `shadow <- d shadow + (1 - d) param`, with `d = decay`, or with warm-up
/// `d = min(decay, (1 + n) / (10 + n))` after `n` earlier updates (diffusers' `EMAModel`
/// with `use_ema_warmup=False` semantics for the warm-up formula).
#[derive(Clone, Debug, PartialEq)]
pub struct Ema<A> {
    decay: f64,
    warmup: bool,
    updates: u64,
    shadow: Vec<(String, ArrayD<A>)>,
}

impl<A: Scalar> Ema<A> {
    /// Starts the average at the model's current weights.
    pub fn new<M: Parameters<A> + ?Sized>(model: &M, decay: f64, warmup: bool) -> Result<Self> {
        check_range("EMA decay", decay, 0.0, 1.0, false)?;
        let mut shadow = Vec::new();
        model.visit(&mut |name, p| shadow.push((name.to_string(), p.value.clone())));
        Ok(Self {
            decay,
            warmup,
            updates: 0,
            shadow,
        })
    }

    /// Restores a saved average.
    pub fn from_state(
        decay: f64,
        warmup: bool,
        updates: u64,
        shadow: Vec<(String, ArrayD<A>)>,
    ) -> Result<Self> {
        check_range("EMA decay", decay, 0.0, 1.0, false)?;
        Ok(Self {
            decay,
            warmup,
            updates,
            shadow,
        })
    }

    /// The decay the next update uses.
    pub fn current_decay(&self) -> f64 {
        if self.warmup {
            let n = self.updates as f64;
            self.decay.min((1.0 + n) / (10.0 + n))
        } else {
            self.decay
        }
    }

    pub fn updates(&self) -> u64 {
        self.updates
    }

    pub fn decay(&self) -> f64 {
        self.decay
    }

    pub fn warmup(&self) -> bool {
        self.warmup
    }

    /// The averaged weights, by name in the model's order.
    pub fn weights(&self) -> &[(String, ArrayD<A>)] {
        &self.shadow
    }

    /// Checks that `model` has this average's parameter names and shapes, in order.
    fn check_model<M: Parameters<A> + ?Sized>(&self, model: &M) -> Result<()> {
        let mut index = 0;
        let mut error = None;
        model.visit(&mut |name, p| {
            let ok =
                matches!(self.shadow.get(index), Some((n, s)) if n == name && s.shape() == p.value.shape());
            if !ok && error.is_none() {
                error = Some(format!(
                    "EMA has no entry named `{name}` with shape {:?}",
                    p.value.shape()
                ));
            }
            index += 1;
        });
        if error.is_none() && index != self.shadow.len() {
            error = Some(format!(
                "EMA holds {} tensors, the model {index}",
                self.shadow.len()
            ));
        }
        error.map_or(Ok(()), |e| Err(TrainError::invalid("model", e)))
    }

    /// Folds the model's current weights into the average.
    pub fn update<M: Parameters<A> + ?Sized>(&mut self, model: &M) -> Result<()> {
        self.check_model(model)?;
        let d = self.current_decay();
        let mut shadow = self.shadow.iter_mut();
        model.visit(&mut |_, p| {
            let (_, s) = shadow.next().expect("checked");
            ndarray::Zip::from(s)
                .and(&p.value)
                .for_each(|s, &w| *s = A::of_f64(d * s.as_f64() + (1.0 - d) * w.as_f64()));
        });
        self.updates += 1;
        Ok(())
    }

    /// Copies the averaged weights into `model` (for sampling or export).
    pub fn copy_to<M: Parameters<A> + ?Sized>(&self, model: &mut M) -> Result<()> {
        self.check_model(model)?;
        let mut shadow = self.shadow.iter();
        model.visit_mut(&mut |_, p| p.value.assign(&shadow.next().expect("checked").1));
        Ok(())
    }
}
