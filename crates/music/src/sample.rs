//! Generation: given cells re-imposed at every step, the rest unmasked in order of the
//! model's confidence, as many per step as the process's mask schedule `gbar_t` leaves.

use diffusion_core::Rng;
use diffusion_discrete::{Process, categorical};

use crate::error::{MusicError, Result};
use crate::grid::Grid;
use crate::model::ColumnTransformer;
use crate::task::{Task, to_columns, to_rows};
use crate::vocab::{EMPTY, Vocab};

/// Sampling settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SampleConfig {
    /// Network evaluations (at most the process's `T`).
    pub steps: usize,
    /// Softmax temperature of the token draws.
    pub temperature: f64,
}

impl Default for SampleConfig {
    fn default() -> Self {
        Self {
            steps: 50,
            temperature: 1.0,
        }
    }
}

/// Checks that the model, the process and the vocabulary fit together and the grid.
pub(crate) fn check_parts(
    model: &ColumnTransformer<f32>,
    process: &Process,
    vocab: &Vocab,
    tracks: usize,
) -> Result<()> {
    let c = model.config();
    if c.vocab != vocab.size() || process.k() != vocab.size() || process.mask() != Some(vocab.mask() as usize)
    {
        return Err(MusicError::Unsupported(format!(
            "model vocabulary {}, process categories {}, vocabulary {} (mask {}) disagree",
            c.vocab,
            process.k(),
            vocab.size(),
            vocab.mask()
        )));
    }
    if c.tracks != tracks {
        return Err(MusicError::Unsupported(format!(
            "model made for {} tracks, grid has {tracks}",
            c.tracks
        )));
    }
    if c.steps != process.steps() {
        return Err(MusicError::Unsupported(format!(
            "model made for {} steps, process has {}",
            c.steps,
            process.steps()
        )));
    }
    Ok(())
}

/// Draws from `softmax(logits / temperature)` over `allowed` tokens; returns token and its
/// probability.
fn draw(logits: &[f32], allowed: &[u32], temperature: f64, u: f64) -> (u32, f64) {
    let max = allowed
        .iter()
        .map(|&a| logits[a as usize] as f64)
        .fold(f64::NEG_INFINITY, f64::max);
    let w: Vec<f64> = allowed
        .iter()
        .map(|&a| ((logits[a as usize] as f64 - max) / temperature).exp())
        .collect();
    let total: f64 = w.iter().sum();
    let i = categorical(&w, u);
    (allowed[i], w[i] / total)
}

/// Generates the cells of `grid` that `task` does not give. A (column, track) unit is
/// drawn as a pair: first its pitch row (a pitch token or `EMPTY`), then, for a pitch, its
/// duration; its confidence is the product of both probabilities.
pub fn generate(
    model: &ColumnTransformer<f32>,
    process: &Process,
    vocab: &Vocab,
    grid: &Grid,
    task: &Task,
    config: SampleConfig,
    rng: &mut Rng,
) -> Result<Grid> {
    let (tracks, columns, rows) = (grid.tracks(), grid.columns(), grid.rows());
    check_parts(model, process, vocab, tracks)?;
    if config.steps == 0
        || config.steps > process.steps()
        || config.temperature.is_nan()
        || config.temperature <= 0.0
    {
        return Err(MusicError::Unsupported(format!("sampling config {config:?}")));
    }
    let given = task.given(tracks, columns)?;
    let flags: Vec<f32> = given.iter().map(|&g| if g { 1.0 } else { 0.0 }).collect();
    let source = to_columns(grid.tokens(), rows, columns);
    let mask = vocab.mask();
    let mut tokens = source.clone();
    let mut masked: Vec<(usize, usize)> = Vec::new();
    for c in 0..columns {
        for k in 0..tracks {
            if !given[c * tracks + k] {
                tokens[c * rows + 2 * k] = mask;
                tokens[c * rows + 2 * k + 1] = mask;
                masked.push((c, k));
            }
        }
    }
    let n = masked.len();
    let pitch_allowed: Vec<u32> = std::iter::once(EMPTY)
        .chain((0..vocab.size() as u32).filter(|&t| vocab.is_pitch(t)))
        .collect();
    let dur_allowed: Vec<u32> = (0..vocab.size() as u32)
        .filter(|&t| vocab.is_duration(t))
        .collect();
    let big_t = process.steps();
    let schedule: Vec<usize> = (0..config.steps)
        .map(|k| (big_t * (config.steps - k)).div_ceil(config.steps))
        .collect();
    let kv = vocab.size();
    for (i, &t) in schedule.iter().enumerate() {
        if masked.is_empty() {
            break;
        }
        // Given cells are re-imposed before every evaluation.
        for c in 0..columns {
            for k in 0..tracks {
                if given[c * tracks + k] {
                    tokens[c * rows + 2 * k] = source[c * rows + 2 * k];
                    tokens[c * rows + 2 * k + 1] = source[c * rows + 2 * k + 1];
                }
            }
        }
        let (logits, _) = model.forward(&tokens, &flags, &[t], &[0], columns)?;
        let logits = logits.as_slice().expect("standard");
        let mut drawn: Vec<(f64, usize, u32, u32)> = masked
            .iter()
            .enumerate()
            .map(|(j, &(c, k))| {
                let cell = (c * rows + 2 * k) * kv;
                let (p, cp) = draw(
                    &logits[cell..cell + kv],
                    &pitch_allowed,
                    config.temperature,
                    rng.uniform(),
                );
                let ud = rng.uniform();
                if p == EMPTY {
                    (cp, j, p, EMPTY)
                } else {
                    let (d, cd) = draw(
                        &logits[cell + kv..cell + 2 * kv],
                        &dur_allowed,
                        config.temperature,
                        ud,
                    );
                    (cp * cd, j, p, d)
                }
            })
            .collect();
        let t_next = schedule.get(i + 1).copied().unwrap_or(0);
        let (_, _, g_next) = process.cumulative(t_next)?;
        let keep_masked = if t_next == 0 {
            0
        } else {
            ((g_next * n as f64).round() as usize).min(masked.len())
        };
        let reveal = masked.len() - keep_masked;
        drawn.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let mut revealed = vec![false; masked.len()];
        for &(_, j, p, d) in drawn.iter().take(reveal) {
            let (c, k) = masked[j];
            tokens[c * rows + 2 * k] = p;
            tokens[c * rows + 2 * k + 1] = d;
            revealed[j] = true;
        }
        masked = masked
            .iter()
            .zip(&revealed)
            .filter(|(_, r)| !**r)
            .map(|(m, _)| *m)
            .collect();
    }
    Grid::from_tokens(tracks, columns, to_rows(&tokens, rows, columns), vocab)
}

/// Harmonises a melody: track 0 of `melody` becomes the soprano of a four-voice score
/// (Soprano, Alto, Tenor, Bass; the melody's program for all), and the model writes the
/// other three voices. Tempo, metre and key are kept.
pub fn harmonize(
    model: &ColumnTransformer<f32>,
    process: &Process,
    vocab: &Vocab,
    melody: &crate::score::Score,
    config: SampleConfig,
    rng: &mut Rng,
) -> Result<crate::score::Score> {
    let soprano = melody
        .tracks
        .first()
        .ok_or_else(|| MusicError::Unsupported("the melody file has no notes".into()))?;
    let program = soprano.program;
    let mut meta = melody.meta();
    meta.tracks = ["Soprano", "Alto", "Tenor", "Bass"]
        .iter()
        .map(|n| (n.to_string(), program))
        .collect();
    let notes = vec![soprano.notes.clone(), vec![], vec![], vec![]];
    let score = crate::score::Score::new(meta.clone(), notes, melody.length)?;
    let grid = Grid::encode(&score, vocab)?;
    let out = generate(model, process, vocab, &grid, &Task::harmonize(4), config, rng)?;
    out.decode(vocab, &meta)
}
