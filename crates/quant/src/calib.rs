//! Calibration sets for diffusion models: the network's inputs `(x_t, t)` taken from the
//! full-precision model's own sampling trajectories, at steps chosen as in PTQ4DM (a normal
//! distribution over the step index) or Q-Diffusion (uniformly spaced), or the baselines
//! (raw Gaussian noise, forward-noised data).

use std::cell::RefCell;

use diffusion_core::{Denoiser, NoiseLevel, Parameterization, Rng};
use diffusion_solvers::{Scheduler, sample_all};
use ndarray::{ArrayD, IxDyn};

use crate::error::{QuantError, Result, invalid};

/// Model inputs at one noise level: `x` is `[rows, item]`, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct CalibBatch {
    pub x: Vec<f32>,
    pub item: usize,
    pub level: NoiseLevel,
}

impl CalibBatch {
    pub fn rows(&self) -> usize {
        self.x.len() / self.item.max(1)
    }
}

/// A calibration set: batches of model inputs, each at one noise level.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Calibration {
    pub batches: Vec<CalibBatch>,
}

impl Calibration {
    /// Whether it holds no input rows.
    pub fn is_empty(&self) -> bool {
        self.batches.iter().all(|b| b.x.is_empty())
    }

    /// Number of input rows.
    pub fn len(&self) -> usize {
        self.batches.iter().map(CalibBatch::rows).sum()
    }
}

/// How calibration steps are picked from a trajectory of `n` model calls (call 0 is the
/// noisiest).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum StepSelection {
    /// Q-Diffusion: `count` points on evenly spaced calls.
    Uniform { count: usize },
    /// PTQ4DM: `count` calls drawn from a normal over the call index with `mean` and `std`
    /// given as fractions of the trajectory (rounded, clamped to the trajectory).
    Normal { count: usize, mean: f64, std: f64 },
}

impl StepSelection {
    fn count(&self) -> usize {
        match *self {
            Self::Uniform { count } | Self::Normal { count, .. } => count,
        }
    }

    /// The call index of each of the `count` points, for a trajectory of `n` calls.
    pub fn select(&self, n: usize, rng: &mut Rng) -> Result<Vec<usize>> {
        if n == 0 || self.count() == 0 {
            return Err(QuantError::EmptyCalibration(format!(
                "{} points from a trajectory of {n} model calls",
                self.count()
            )));
        }
        Ok(match *self {
            Self::Uniform { count } => (0..count).map(|j| j * n / count).collect(),
            Self::Normal { count, mean, std } => {
                if !(std > 0.0 && mean.is_finite() && std.is_finite()) {
                    return Err(invalid(
                        "normal step selection",
                        format!("mean {mean}, std {std}"),
                    ));
                }
                (0..count)
                    .map(|_| {
                        let v = (mean + std * rng.normal()) * (n - 1) as f64;
                        v.round().clamp(0.0, (n - 1) as f64) as usize
                    })
                    .collect()
            }
        })
    }
}

/// Records the inputs of every call it forwards.
struct Recorder<'a, M: ?Sized> {
    model: &'a M,
    calls: RefCell<Vec<(ArrayD<f32>, NoiseLevel)>>,
}

impl<M: Denoiser<ArrayD<f32>> + ?Sized> Denoiser<ArrayD<f32>> for Recorder<'_, M> {
    fn parameterization(&self) -> Parameterization {
        self.model.parameterization()
    }

    fn predict(&self, x: &ArrayD<f32>, level: NoiseLevel) -> diffusion_core::Result<ArrayD<f32>> {
        self.calls.borrow_mut().push((x.clone(), level));
        self.model.predict(x, level)
    }
}

/// Samples `samples` trajectories of `model` with `scheduler` (its timesteps already set)
/// from seeded noise of shape `[samples, item...]`, and keeps the model inputs at the
/// selected calls: point `j` is trajectory `j mod samples` at call `select[j]`.
pub fn from_trajectories<M, S>(
    model: &M,
    scheduler: &mut S,
    item_shape: &[usize],
    samples: usize,
    selection: StepSelection,
    seed: u64,
) -> Result<Calibration>
where
    M: Denoiser<ArrayD<f32>> + ?Sized,
    S: Scheduler<ArrayD<f32>> + ?Sized,
{
    if samples == 0 {
        return Err(QuantError::EmptyCalibration("zero trajectories".into()));
    }
    let item: usize = item_shape.iter().product();
    let mut rng = Rng::new(seed);
    let mut shape = vec![samples];
    shape.extend_from_slice(item_shape);
    let noise: Vec<f32> = (0..samples * item).map(|_| rng.normal() as f32).collect();
    let x_t = ArrayD::from_shape_vec(IxDyn(&shape), noise).expect("length matches the shape");
    let rec = Recorder {
        model,
        calls: RefCell::new(Vec::new()),
    };
    sample_all(scheduler, &rec, &x_t, Some(&mut rng))?;
    let calls = rec.calls.into_inner();
    let picks = selection.select(calls.len(), &mut rng)?;
    let mut batches: Vec<CalibBatch> = Vec::new();
    let mut slot = vec![usize::MAX; calls.len()];
    for (j, &c) in picks.iter().enumerate() {
        let (x, level) = &calls[c];
        let xs = x.as_slice().expect("sampler tensors are in standard layout");
        let r = j % samples;
        if slot[c] == usize::MAX {
            slot[c] = batches.len();
            batches.push(CalibBatch {
                x: Vec::new(),
                item,
                level: *level,
            });
        }
        batches[slot[c]]
            .x
            .extend_from_slice(&xs[r * item..(r + 1) * item]);
    }
    Ok(Calibration { batches })
}

/// The raw-noise baseline: `count` standard normal inputs, point `j` at `levels[j mod n]`.
pub fn gaussian_noise(item: usize, count: usize, levels: &[NoiseLevel], seed: u64) -> Result<Calibration> {
    forward_noised(&vec![0.0; item], item, count, levels, seed, true)
}

/// Forward-noised data: point `j` is `alpha x0 + sigma eps` for data row `j mod n` at
/// `levels[j mod levels]` (with `pure_noise`, `x0` is ignored and `x = eps`).
pub fn forward_noised(
    data: &[f32],
    item: usize,
    count: usize,
    levels: &[NoiseLevel],
    seed: u64,
    pure_noise: bool,
) -> Result<Calibration> {
    if data.is_empty() || levels.is_empty() || count == 0 || item == 0 {
        return Err(QuantError::EmptyCalibration("no data, levels or points".into()));
    }
    let n = data.len() / item;
    let mut rng = Rng::new(seed);
    let mut batches: Vec<CalibBatch> = levels
        .iter()
        .map(|&level| CalibBatch {
            x: Vec::new(),
            item,
            level,
        })
        .collect();
    for j in 0..count {
        let b = &mut batches[j % levels.len()];
        let x0 = &data[(j % n) * item..(j % n + 1) * item];
        let (a, s) = if pure_noise {
            (0.0, 1.0)
        } else {
            (b.level.alpha, b.level.sigma)
        };
        b.x.extend(x0.iter().map(|&v| (a * v as f64 + s * rng.normal()) as f32));
    }
    batches.retain(|b| !b.x.is_empty());
    Ok(Calibration { batches })
}
