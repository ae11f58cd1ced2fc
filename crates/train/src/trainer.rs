//! The training loop.

use diffusion_core::Rng;
use ndarray::{ArrayD, Axis, IxDyn};
use rand_core::RngCore;
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError, check_positive};
use crate::net::{Network, Parameters};
use crate::objective::{Objective, weighted_mse};
use crate::optim::{AdamW, AdamWConfig, Ema, LrSchedule, clip_grad_norm, grad_norm};
use crate::sampler::LevelSampler;
use crate::scalar::Scalar;

/// EMA settings (see [`Ema`]).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct EmaConfig {
    pub decay: f64,
    pub warmup: bool,
}

/// Everything that determines a training run besides the model, data and level sampler.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub batch_size: usize,
    /// Seeds the one [`Rng`] that draws minibatches, noise levels and noise.
    pub seed: u64,
    pub objective: Objective,
    pub optimizer: AdamWConfig,
    pub lr: LrSchedule,
    /// Global gradient-norm clipping threshold.
    pub clip_grad_norm: Option<f64>,
    pub ema: Option<EmaConfig>,
}

impl TrainConfig {
    /// Epsilon prediction, PyTorch AdamW defaults, constant learning rate 1e-3, no clipping, no EMA.
    pub fn new(batch_size: usize, seed: u64) -> Self {
        Self {
            batch_size,
            seed,
            objective: Objective::epsilon(),
            optimizer: AdamWConfig::default(),
            lr: LrSchedule::constant(1e-3),
            clip_grad_norm: None,
            ema: None,
        }
    }

    pub fn validate(&self) -> Result<()> {
        if self.batch_size == 0 {
            return Err(TrainError::invalid("batch_size", "must be at least 1"));
        }
        self.objective.validate()?;
        self.optimizer.validate()?;
        self.lr.validate()?;
        if let Some(c) = self.clip_grad_norm {
            check_positive("clip_grad_norm", c)?;
        }
        if let Some(e) = self.ema {
            crate::error::check_range("EMA decay", e.decay, 0.0, 1.0, false)?;
        }
        Ok(())
    }
}

/// Training samples `[N, ...input_shape]` with optional class labels.
#[derive(Clone, Copy, Debug)]
pub struct Dataset<'a, A> {
    samples: &'a ArrayD<A>,
    labels: Option<&'a [usize]>,
}

impl<'a, A: Scalar> Dataset<'a, A> {
    pub fn new(samples: &'a ArrayD<A>) -> Result<Self> {
        if samples.ndim() < 2 || samples.shape()[0] == 0 {
            return Err(TrainError::invalid(
                "dataset",
                format!("need shape [N >= 1, ...sample shape], got {:?}", samples.shape()),
            ));
        }
        let bad = samples.iter().filter(|v| !v.as_f64().is_finite()).count();
        if bad > 0 {
            return Err(TrainError::invalid("dataset", format!("{bad} non-finite values")));
        }
        Ok(Self {
            samples,
            labels: None,
        })
    }

    /// Attaches one class label per sample.
    pub fn with_labels(mut self, labels: &'a [usize]) -> Result<Self> {
        if labels.len() != self.len() {
            return Err(TrainError::ShapeMismatch {
                context: "dataset labels",
                expected: vec![self.len()],
                got: vec![labels.len()],
            });
        }
        self.labels = Some(labels);
        Ok(self)
    }

    pub fn len(&self) -> usize {
        self.samples.shape()[0]
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn sample_shape(&self) -> &[usize] {
        &self.samples.shape()[1..]
    }
}

/// What one optimizer step reports to the progress callback.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepStats {
    /// 1-based number of the step just taken.
    pub step: u64,
    pub loss: f64,
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
}

/// Model, optimizer, EMA and random stream of a training run.
#[derive(Debug)]
pub struct Trainer<A, N> {
    pub(crate) model: N,
    pub(crate) optimizer: AdamW<A>,
    pub(crate) ema: Option<Ema<A>>,
    pub(crate) sampler: LevelSampler,
    pub(crate) config: TrainConfig,
    pub(crate) rng: Rng,
    pub(crate) step: u64,
}

impl<A: Scalar, N: Network<A>> Trainer<A, N> {
    /// A fresh run starting from `model`'s current weights.
    pub fn new(model: N, sampler: LevelSampler, config: TrainConfig) -> Result<Self> {
        config.validate()?;
        let optimizer = AdamW::new(config.optimizer, &model)?;
        let ema = config
            .ema
            .map(|e| Ema::new(&model, e.decay, e.warmup))
            .transpose()?;
        Ok(Self {
            rng: Rng::new(config.seed),
            model,
            optimizer,
            ema,
            sampler,
            config,
            step: 0,
        })
    }

    pub fn model(&self) -> &N {
        &self.model
    }

    pub fn model_mut(&mut self) -> &mut N {
        &mut self.model
    }

    pub fn into_model(self) -> N {
        self.model
    }

    pub fn optimizer(&self) -> &AdamW<A> {
        &self.optimizer
    }

    pub fn ema(&self) -> Option<&Ema<A>> {
        self.ema.as_ref()
    }

    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    pub fn rng(&self) -> &Rng {
        &self.rng
    }

    /// Optimizer steps taken so far.
    pub fn steps_done(&self) -> u64 {
        self.step
    }

    /// Moves the end of the learning-rate decay to optimizer step `total_steps` (counting the
    /// steps already taken), e.g. to extend a resumed run beyond the length it was started
    /// with. Warm-up length, peak and final rate are kept, so the steps still to come follow
    /// the schedule the run would have had with this length from the start (the rate jumps
    /// at the change: up when a cosine decay is stretched). The new length is saved with the
    /// next checkpoint. Setting the current length changes nothing, so a resumed run stays
    /// bit-identical to an uninterrupted one. A schedule without decay (`total_steps == 0`,
    /// e.g. [`LrSchedule::constant`]) is left as it is.
    ///
    /// Errors: `total_steps` below [`Trainer::steps_done`] or below the warm-up length.
    pub fn set_total_steps(&mut self, total_steps: u64) -> Result<()> {
        if total_steps < self.step {
            return Err(TrainError::invalid(
                "total_steps",
                format!("{total_steps} is below the {} steps already taken", self.step),
            ));
        }
        if self.config.lr.total_steps == 0 {
            return Ok(());
        }
        let lr = LrSchedule {
            total_steps,
            ..self.config.lr
        };
        lr.validate()?;
        self.config.lr = lr;
        Ok(())
    }

    /// One optimizer step on a minibatch drawn (with replacement) from `data`.
    ///
    /// Random draws, in order: batch indices, noise levels, noise. An error may leave the
    /// random stream advanced; the weights change only after a finite loss and gradient.
    pub fn step(&mut self, data: &Dataset<'_, A>) -> Result<StepStats> {
        let expected = self.model.input_shape();
        if data.sample_shape() != expected.as_slice() {
            return Err(TrainError::ShapeMismatch {
                context: "dataset sample shape vs model input",
                expected,
                got: data.sample_shape().to_vec(),
            });
        }
        let b = self.config.batch_size;
        let n = data.len() as u128;
        // Multiply-shift maps 64 random bits to [0, n) with bias below n / 2^64.
        let indices: Vec<usize> = (0..b)
            .map(|_| ((u128::from(self.rng.next_u64()) * n) >> 64) as usize)
            .collect();
        let x0 = data.samples.select(Axis(0), &indices);
        let labels: Option<Vec<usize>> = data.labels.map(|l| indices.iter().map(|&i| l[i]).collect());
        let levels = self.sampler.sample(&mut self.rng, b);
        let mut z = vec![0.0; x0.len()];
        self.rng.fill_normal(&mut z);
        let eps =
            ArrayD::from_shape_vec(IxDyn(x0.shape()), z.into_iter().map(A::of_f64).collect()).expect("sized");
        let batch = self.config.objective.prepare(&x0, &eps, &levels)?;

        self.model.visit_mut(&mut |_, p| p.grad.fill(A::default()));
        let (out, cache) = self.model.forward(&batch.input, &batch.time, labels.as_deref())?;
        let (loss, dout) = weighted_mse(&out, &batch.target, &batch.weights)?;
        let step = self.step + 1;
        if !loss.is_finite() {
            return Err(TrainError::NonFinite { what: "loss", step });
        }
        self.model.backward(&cache, &dout)?;
        let norm = match self.config.clip_grad_norm {
            Some(max) => clip_grad_norm(&mut self.model, max).map_err(|_| TrainError::NonFinite {
                what: "gradient",
                step,
            })?,
            None => grad_norm(&self.model),
        };
        if !norm.is_finite() {
            return Err(TrainError::NonFinite {
                what: "gradient",
                step,
            });
        }
        let lr = self.config.lr.lr_at(self.step);
        self.optimizer.step(&mut self.model, lr)?;
        if let Some(ema) = &mut self.ema {
            ema.update(&self.model)?;
        }
        self.step = step;
        Ok(StepStats {
            step,
            loss,
            lr,
            grad_norm: norm,
        })
    }

    /// Runs `steps` optimizer steps, calling `progress` after each; returns the last stats.
    pub fn train(
        &mut self,
        data: &Dataset<'_, A>,
        steps: u64,
        mut progress: impl FnMut(&StepStats),
    ) -> Result<Option<StepStats>> {
        let mut last = None;
        for _ in 0..steps {
            let stats = self.step(data)?;
            progress(&stats);
            last = Some(stats);
        }
        Ok(last)
    }
}

/// `model`'s parameter count.
pub fn parameter_count<A, M: Parameters<A> + ?Sized>(model: &M) -> usize {
    let mut n = 0;
    model.visit(&mut |_, p| n += p.value.len());
    n
}
