//! Training the column transformer with the discrete variational loss (plus the auxiliary
//! `x0` term) on random windows of scores, random tasks and transpositions.

use diffusion_core::Rng;
use diffusion_discrete::{Process, TimestepSampler};
use diffusion_nn::Parameters;
use diffusion_train::{AdamW, AdamWConfig, LrSchedule, clip_grad_norm};
use ndarray::{ArrayD, IxDyn};

use crate::chorale::transpose;
use crate::error::{MusicError, Result};
use crate::grid::Grid;
use crate::model::ColumnTransformer;
use crate::sample::check_parts;
use crate::score::Score;
use crate::task::{Task, to_columns};
use crate::vocab::Vocab;

/// Training settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TrainConfig {
    pub steps: usize,
    pub batch: usize,
    /// Columns per training window.
    pub window: usize,
    pub lr: LrSchedule,
    /// Weight of the auxiliary `x0` cross-entropy (VQ-Diffusion's adaptive factor applied).
    pub aux_weight: f64,
    /// Loss weight of given (condition) cells; targets weigh 1.
    pub condition_weight: f64,
    /// Transpositions drawn uniformly from `-transpose..=transpose` semitones.
    pub transpose: i32,
    pub clip_grad_norm: f64,
    pub seed: u64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            steps: 1000,
            batch: 8,
            window: 64,
            lr: LrSchedule {
                peak: 1e-3,
                warmup_steps: 100,
                total_steps: 1000,
                min_lr: 1e-5,
            },
            aux_weight: 0.05,
            condition_weight: 0.0,
            transpose: 5,
            clip_grad_norm: 1.0,
            seed: 0,
        }
    }
}

/// A random task for one training window: half the time a random subset of tracks given
/// (never all), a quarter harmonisation (only track 0 given), a quarter infilling a span
/// of one bar (16 columns) or a quarter of the window.
fn random_task(tracks: usize, window: usize, rng: &mut Rng) -> Task {
    let u = rng.uniform();
    if u < 0.5 {
        let mut g: Vec<bool> = (0..tracks).map(|_| rng.uniform() < 0.5).collect();
        if g.iter().all(|&x| x) {
            g[(rng.uniform() * tracks as f64) as usize % tracks] = false;
        }
        Task::Tracks(g)
    } else if u < 0.75 {
        Task::harmonize(tracks)
    } else {
        let len = 16.min(window).max(window / 4);
        let start = (rng.uniform() * (window - len + 1) as f64) as usize;
        Task::Infill { start, len }
    }
}

/// Trains `model` on `scores` (all with the model's track count and at least `window`
/// columns). `progress(step, loss)` sees the batch's mean loss per target cell.
pub fn train(
    model: &mut ColumnTransformer<f32>,
    process: &Process,
    vocab: &Vocab,
    scores: &[Score],
    config: &TrainConfig,
    mut progress: impl FnMut(usize, f64),
) -> Result<Vec<f64>> {
    let tracks = model.config().tracks;
    check_parts(model, process, vocab, tracks)?;
    let usable: Vec<&Score> = scores
        .iter()
        .filter(|s| s.tracks.len() == tracks && s.length as usize >= config.window)
        .collect();
    if usable.is_empty() || config.batch == 0 || config.window == 0 {
        return Err(MusicError::Unsupported(format!(
            "no score with {tracks} tracks and at least {} columns to train on",
            config.window
        )));
    }
    let mut rng = Rng::new(config.seed);
    let mut sampler = TimestepSampler::new(process.steps())?;
    let mut opt = AdamW::new(AdamWConfig::default(), model)?;
    let (rows, k, w) = (2 * tracks, vocab.size(), config.window);
    let mut losses = Vec::with_capacity(config.steps);
    for step in 0..config.steps {
        let mut tokens = Vec::with_capacity(config.batch * w * rows);
        let mut clean = Vec::with_capacity(config.batch * w * rows);
        let mut flags = Vec::with_capacity(config.batch * w * tracks);
        let mut weights = Vec::with_capacity(config.batch * w * rows);
        let mut ts = Vec::with_capacity(config.batch);
        let mut imp = Vec::with_capacity(config.batch);
        let mut starts = Vec::with_capacity(config.batch);
        for _ in 0..config.batch {
            let score = usable[(rng.uniform() * usable.len() as f64) as usize % usable.len()];
            let shift = (rng.uniform() * (2 * config.transpose + 1) as f64) as i32 - config.transpose;
            let grid = match transpose(score, shift).and_then(|s| Grid::encode(&s, vocab)) {
                Ok(g) => g,
                Err(_) => Grid::encode(score, vocab)?,
            };
            let start = (rng.uniform() * (grid.columns() - w + 1) as f64) as usize;
            let x0 = to_columns(grid.window(start, w).tokens(), rows, w);
            let given = random_task(tracks, w, &mut rng).given(tracks, w)?;
            let (t, iw) = sampler.sample(&mut rng);
            let x0u: Vec<usize> = x0.iter().map(|&x| x as usize).collect();
            let mut xt = process.sample_forward(t, &x0u, &mut rng)?;
            for c in 0..w {
                for r in 0..rows {
                    let g = given[c * tracks + r / 2];
                    if g {
                        xt[c * rows + r] = x0u[c * rows + r];
                    }
                    weights.push(if g { config.condition_weight } else { 1.0 });
                }
                for kk in 0..tracks {
                    flags.push(if given[c * tracks + kk] { 1.0 } else { 0.0 });
                }
            }
            tokens.extend(xt.iter().map(|&x| x as u32));
            clean.extend(x0u);
            ts.push(t);
            imp.push(iw);
            starts.push(start);
        }
        model.zero_grad();
        let (logits, cache) = model.forward(&tokens, &flags, &ts, &starts, w)?;
        let logits64: Vec<f64> = logits.iter().map(|&v| v as f64).collect();
        let cells = w * rows;
        let mut grad = vec![0.0f32; logits64.len()];
        let mut g64 = vec![0.0f64; cells * k];
        let mut batch_loss = 0.0;
        for b in 0..config.batch {
            let span = b * cells..(b + 1) * cells;
            let wts = &weights[span.clone()];
            let n_target = wts.iter().filter(|&&x| x == 1.0).count().max(1) as f64;
            let t = ts[b];
            let aux = config.aux_weight * (1.0 + (1.0 - t as f64 / process.steps() as f64));
            let xt: Vec<usize> = tokens[span.clone()].iter().map(|&x| x as usize).collect();
            let loss = process.loss(
                t,
                &clean[span.clone()],
                &xt,
                &logits64[b * cells * k..(b + 1) * cells * k],
                wts,
                aux,
                Some(&mut g64),
            )?;
            sampler.record(t, loss.vb / n_target)?;
            batch_loss += loss.total / n_target / config.batch as f64;
            let scale = imp[b] / n_target / config.batch as f64;
            for (g, v) in grad[b * cells * k..(b + 1) * cells * k].iter_mut().zip(&g64) {
                *g = (v * scale) as f32;
            }
        }
        if !batch_loss.is_finite() {
            return Err(MusicError::Unsupported(format!("non-finite loss at step {step}")));
        }
        let dy = ArrayD::from_shape_vec(IxDyn(logits.shape()), grad).expect("shape");
        model.backward(&cache, &dy)?;
        clip_grad_norm(model, config.clip_grad_norm)?;
        opt.step(model, config.lr.lr_at(step as u64))?;
        losses.push(batch_loss);
        progress(step, batch_loss);
    }
    Ok(losses)
}
