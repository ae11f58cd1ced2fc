//! Diffusion models over gene patches: the white-box DiT (CRATE blocks: subspace
//! self-attention + one ISTA step) and the standard DiT as its baseline, both from
//! `diffusion-nn`; trained with `diffusion-train`, sampled with `diffusion-solvers`' DDIM,
//! optionally conditioned on the cell type with classifier-free guidance.
//!
//! A cell's `G` genes are cut into tokens of `patch` consecutive genes (zero-padded to a
//! square number of tokens `grid^2`) and laid out as a `[patch, grid, grid]` image for the
//! networks' patch-size-1 embedding, so each token is one gene patch and the networks'
//! fixed 2-d sin-cos positions index the tokens.

use std::time::Instant;

use diffusion_core::{ConditionalDenoiser, NoiseLevel, Parameterization, Rng};
use diffusion_nn::Network;
use diffusion_nn::models::{Dit, DitConfig, WhiteBoxDit, WhiteBoxDitConfig};
use diffusion_schedules::{DiscreteSchedule, DiscreteScheduleConfig, TimestepSpacing};
use diffusion_solvers::{ClassifierFreeGuidance, Ddim, DdimConfig, Scheduler, sample_all};
use diffusion_train::{Dataset, EmaConfig, LevelSampler, LrSchedule, StepStats, TrainConfig, Trainer};
use ndarray::{Array2, ArrayD, IxDyn};
use serde::{Deserialize, Serialize};

use crate::error::{Result, ScrnaError};

/// How genes map to tokens and to the networks' image layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GeneLayout {
    pub genes: usize,
    /// Genes per token.
    pub patch: usize,
    /// Tokens per side: `grid^2 >= ceil(genes / patch)`.
    pub grid: usize,
}

impl GeneLayout {
    pub fn new(genes: usize, patch: usize) -> Result<Self> {
        if genes == 0 || patch == 0 {
            return Err(ScrnaError::invalid(
                "GeneLayout",
                "genes and patch must be positive",
            ));
        }
        let tokens = genes.div_ceil(patch);
        let mut grid = (tokens as f64).sqrt().floor() as usize;
        while grid * grid < tokens {
            grid += 1;
        }
        Ok(Self { genes, patch, grid })
    }

    pub fn tokens(&self) -> usize {
        self.grid * self.grid
    }

    /// Where gene `g` sits in the `[patch, grid, grid]` item (flat index).
    fn slot(&self, g: usize) -> usize {
        let (tok, c) = (g / self.patch, g % self.patch);
        c * self.tokens() + tok
    }

    /// Cells x genes -> `[cells, patch, grid, grid]` (f32, padding zero).
    pub fn to_images(&self, x: &Array2<f64>) -> Result<ArrayD<f32>> {
        if x.ncols() != self.genes {
            return Err(ScrnaError::Shape {
                context: "gene layout: genes".into(),
                expected: vec![x.nrows(), self.genes],
                got: x.shape().to_vec(),
            });
        }
        let item = self.patch * self.tokens();
        let mut v = vec![0f32; x.nrows() * item];
        for (row, out) in x.rows().into_iter().zip(v.chunks_mut(item)) {
            for (g, &val) in row.iter().enumerate() {
                out[self.slot(g)] = val as f32;
            }
        }
        Ok(ArrayD::from_shape_vec(IxDyn(&[x.nrows(), self.patch, self.grid, self.grid]), v).expect("sized"))
    }

    /// The inverse of [`Self::to_images`] (padding dropped).
    pub fn from_images(&self, y: &ArrayD<f32>) -> Result<Array2<f64>> {
        let expected = [
            y.shape().first().copied().unwrap_or(0),
            self.patch,
            self.grid,
            self.grid,
        ];
        if y.shape() != expected {
            return Err(ScrnaError::Shape {
                context: "gene layout: images".into(),
                expected: expected.to_vec(),
                got: y.shape().to_vec(),
            });
        }
        let y = y.as_standard_layout();
        let flat = y.as_slice().expect("standard");
        let item = self.patch * self.tokens();
        Ok(Array2::from_shape_fn((expected[0], self.genes), |(c, g)| {
            f64::from(flat[c * item + self.slot(g)])
        }))
    }
}

/// Which transformer blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Arch {
    /// CRATE blocks: multi-head subspace self-attention and one ISTA step.
    WhiteBox,
    /// Standard DiT blocks: multi-head self-attention and a GELU MLP.
    Standard,
}

/// Network sizes; `num_types > 0` makes the model label-conditional, with one extra
/// "no label" class (index `num_types`) for classifier-free guidance.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub arch: Arch,
    pub hidden: usize,
    pub depth: usize,
    pub heads: usize,
    /// The standard block's MLP width ratio.
    pub mlp_ratio: usize,
    pub ista_step: f64,
    pub ista_lambda: f64,
    pub freq_dim: usize,
    pub num_types: usize,
}

impl ModelConfig {
    pub fn new(arch: Arch, hidden: usize, depth: usize, heads: usize, num_types: usize) -> Self {
        Self {
            arch,
            hidden,
            depth,
            heads,
            mlp_ratio: 4,
            ista_step: 0.1,
            ista_lambda: 0.1,
            freq_dim: 256,
            num_types,
        }
    }

    fn classes(&self) -> usize {
        if self.num_types > 0 { self.num_types + 1 } else { 0 }
    }

    /// The "no label" class, for conditional models.
    pub fn null_label(&self) -> Option<usize> {
        (self.num_types > 0).then_some(self.num_types)
    }
}

/// The white-box DiT for `layout`.
pub fn white_box(layout: GeneLayout, cfg: &ModelConfig, seed: u64) -> Result<WhiteBoxDit<f32>> {
    Ok(WhiteBoxDit::new(
        WhiteBoxDitConfig {
            in_ch: layout.patch,
            size: layout.grid,
            patch: 1,
            hidden: cfg.hidden,
            depth: cfg.depth,
            heads: cfg.heads,
            freq_dim: cfg.freq_dim,
            num_classes: cfg.classes(),
            ista_step: cfg.ista_step,
            ista_lambda: cfg.ista_lambda,
        },
        &mut Rng::new(seed),
    )?)
}

/// The standard DiT for `layout`.
pub fn standard(layout: GeneLayout, cfg: &ModelConfig, seed: u64) -> Result<Dit<f32>> {
    Ok(Dit::new(
        DitConfig {
            in_ch: layout.patch,
            size: layout.grid,
            patch: 1,
            hidden: cfg.hidden,
            depth: cfg.depth,
            heads: cfg.heads,
            mlp_ratio: cfg.mlp_ratio,
            freq_dim: cfg.freq_dim,
            num_classes: cfg.classes(),
        },
        &mut Rng::new(seed),
    )?)
}

/// The diffusion schedule both training and sampling use: diffusers' default DDPM table
/// (1000 steps, linear betas 1e-4..0.02) with trailing timestep spacing.
pub fn schedule_config() -> DiscreteScheduleConfig {
    DiscreteScheduleConfig {
        timestep_spacing: TimestepSpacing::Trailing,
        ..DiscreteScheduleConfig::default()
    }
}

/// Settings of [`train`].
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainOptions {
    pub steps: u64,
    pub batch: usize,
    pub lr: f64,
    pub warmup: u64,
    pub seed: u64,
    /// Probability that a cell's label is replaced by "no label" in a step (classifier-free
    /// guidance training); ignored for unconditional models.
    pub p_uncond: f64,
    pub ema_decay: Option<f64>,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            steps: 1000,
            batch: 64,
            lr: 1e-3,
            warmup: 50,
            seed: 0,
            p_uncond: 0.1,
            ema_decay: Some(0.999),
        }
    }
}

/// What [`train`] measured.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct TrainReport {
    pub final_loss: f64,
    /// Mean loss of the last 10% of steps.
    pub tail_loss: f64,
    pub seconds_per_step: f64,
}

/// Trains `net` (epsilon objective, AdamW with warm-up + cosine decay, gradient clipping
/// at 1, optional EMA copied into the returned network) on cells `x` (model space, cells x
/// genes). `labels` (one per cell, below `null_label`) train a conditional model, each
/// replaced by `null_label` with probability `p_uncond` in every step.
pub fn train<N: Network<f32>>(
    net: N,
    layout: GeneLayout,
    x: &Array2<f64>,
    labels: Option<(&[usize], usize)>,
    opts: &TrainOptions,
    mut progress: impl FnMut(&StepStats),
) -> Result<(N, TrainReport)> {
    let images = layout.to_images(x)?;
    let table = DiscreteSchedule::from_config(&schedule_config())
        .map_err(|e| ScrnaError::invalid("schedule", e.to_string()))?;
    let sampler = LevelSampler::discrete(table.alphas_cumprod.iter().map(|&a| f64::from(a)).collect())?;
    let mut config = TrainConfig::new(opts.batch, opts.seed);
    config.lr = LrSchedule {
        peak: opts.lr,
        warmup_steps: opts.warmup,
        total_steps: opts.steps,
        min_lr: opts.lr * 0.05,
    };
    config.clip_grad_norm = Some(1.0);
    config.ema = opts.ema_decay.map(|decay| EmaConfig { decay, warmup: true });
    let mut trainer = Trainer::new(net, sampler, config)?;
    let mut drop_rng = Rng::with_stream(opts.seed, 17);
    let mut losses = Vec::with_capacity(opts.steps as usize);
    let start = Instant::now();
    for _ in 0..opts.steps {
        let stats = match labels {
            Some((l, null)) => {
                if let Some(&bad) = l.iter().find(|&&c| c >= null) {
                    return Err(ScrnaError::invalid(
                        "labels",
                        format!("label {bad} is not below {null}"),
                    ));
                }
                let dropped: Vec<usize> = l
                    .iter()
                    .map(|&c| {
                        if drop_rng.uniform() < opts.p_uncond {
                            null
                        } else {
                            c
                        }
                    })
                    .collect();
                trainer.step(&Dataset::new(&images)?.with_labels(&dropped)?)?
            }
            None => trainer.step(&Dataset::new(&images)?)?,
        };
        losses.push(stats.loss);
        progress(&stats);
    }
    let secs = start.elapsed().as_secs_f64();
    let ema = trainer.ema().cloned();
    let mut net = trainer.into_model();
    if let Some(ema) = ema {
        ema.copy_to(&mut net)?;
    }
    let tail = &losses[losses.len() - (losses.len() / 10).max(1).min(losses.len())..];
    Ok((
        net,
        TrainReport {
            final_loss: losses.last().copied().unwrap_or(f64::NAN),
            tail_loss: tail.iter().sum::<f64>() / tail.len().max(1) as f64,
            seconds_per_step: secs / opts.steps.max(1) as f64,
        },
    ))
}

/// A network as a label-conditional denoiser (epsilon prediction): `None` runs it with
/// the "no label" class (or without labels for an unconditional network).
#[derive(Debug)]
pub struct GeneDenoiser<'a, N> {
    pub net: &'a N,
    pub null_label: Option<usize>,
}

impl<N: Network<f32>> ConditionalDenoiser<ArrayD<f32>> for GeneDenoiser<'_, N> {
    type Cond = Vec<usize>;

    fn parameterization(&self) -> Parameterization {
        Parameterization::Epsilon
    }

    fn predict_cond(
        &self,
        x: &ArrayD<f32>,
        level: NoiseLevel,
        cond: Option<&Vec<usize>>,
    ) -> diffusion_core::Result<ArrayD<f32>> {
        let batch = x.shape().first().copied().unwrap_or(0);
        let t = vec![level.timestep as f32; batch];
        let labels = match (cond, self.null_label) {
            (Some(c), _) => Some(c.clone()),
            (None, Some(null)) => Some(vec![null; batch]),
            (None, None) => None,
        };
        Ok(self.net.infer(x, &t, labels.as_deref())?)
    }
}

/// Settings of [`sample`].
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct SampleOptions {
    /// DDIM steps (eta = 0).
    pub steps: usize,
    /// Classifier-free guidance scale (1 = conditional model only).
    pub guidance: f64,
    pub seed: u64,
}

/// Draws `n` cells (model space, cells x genes) with DDIM; `labels` (one per cell) sample
/// a conditional model with guidance `opts.guidance`; without labels a conditional model
/// samples with its "no label" class.
pub fn sample<N: Network<f32>>(
    net: &N,
    layout: GeneLayout,
    n: usize,
    labels: Option<&[usize]>,
    null_label: Option<usize>,
    opts: &SampleOptions,
) -> Result<Array2<f64>> {
    if let Some(l) = labels
        && l.len() != n
    {
        return Err(ScrnaError::Length {
            what: "sampling labels",
            of: "cells to draw",
            expected: n,
            got: l.len(),
        });
    }
    let mut noise = vec![0.0; n * layout.patch * layout.tokens()];
    Rng::new(opts.seed).fill_normal(&mut noise);
    let x_t = ArrayD::from_shape_vec(
        IxDyn(&[n, layout.patch, layout.grid, layout.grid]),
        noise.into_iter().map(|v| v as f32).collect(),
    )
    .expect("sized");
    let mut ddim = Ddim::new(
        schedule_config(),
        DdimConfig {
            clip_sample: false,
            ..DdimConfig::default()
        },
    )?;
    Scheduler::<ArrayD<f32>>::set_timesteps(&mut ddim, opts.steps)?;
    let model = GeneDenoiser { net, null_label };
    let y = match labels {
        Some(l) => {
            let cond = l.to_vec();
            let guided = ClassifierFreeGuidance::new(&model, &cond, opts.guidance, 0.0)?;
            sample_all(&mut ddim, &guided, &x_t, None)?
        }
        None => sample_all(&mut ddim, &model.with_cond(None), &x_t, None)?,
    };
    layout.from_images(&y)
}
