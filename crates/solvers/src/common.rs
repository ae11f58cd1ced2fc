//! Pieces every scheduler shares: the step cursor, the float32 training tables, sigma
//! grids, history buffers and the rare non-linear sample operations.

use std::collections::VecDeque;

use diffusion_core::{Noise, Tensor};
use diffusion_schedules::sigmas::{interp_table, sigma_to_t};
use diffusion_schedules::{DiscreteSchedule, DiscreteScheduleConfig, SigmaGrid};

use crate::error::{Result, SolverError};

/// Rounds to float32 and back: diffusers keeps schedule tables in float32.
pub(crate) fn f32r(v: f64) -> f64 {
    f64::from(v as f32)
}

fn same_timestep(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * (1.0 + a.abs())
}

/// The inference timesteps and where the scheduler is in them.
///
/// Like diffusers, the first `step` locates its timestep in the schedule (taking the
/// second occurrence of a repeated timestep, diffusers' `index_for_timestep` rule, so
/// img2img can start part-way); every later `step` must pass the next timestep.
#[derive(Clone, Debug, Default)]
pub(crate) struct Cursor {
    pub timesteps: Vec<f64>,
    next: Option<usize>,
    ready: bool,
}

impl Cursor {
    pub fn reset(&mut self, timesteps: Vec<f64>) {
        self.timesteps = timesteps;
        self.next = None;
        self.ready = true;
    }

    pub fn require_ready(&self, scheduler: &'static str, what: &'static str) -> Result<()> {
        if self.ready {
            Ok(())
        } else {
            Err(SolverError::NotInitialized { scheduler, what })
        }
    }

    /// diffusers' `index_for_timestep`: the second match if the timestep repeats.
    pub fn find(&self, scheduler: &'static str, t: f64) -> Result<usize> {
        let mut hits = self
            .timesteps
            .iter()
            .enumerate()
            .filter(|(_, v)| same_timestep(**v, t))
            .map(|(i, _)| i);
        let first = hits.next().ok_or(SolverError::TimestepNotInSchedule {
            scheduler,
            timestep: t,
        })?;
        Ok(hits.next().unwrap_or(first))
    }

    /// The index `step(t)` works on, without advancing.
    pub fn index_for_step(&self, scheduler: &'static str, t: f64) -> Result<usize> {
        self.require_ready(scheduler, "step")?;
        match self.next {
            None => self.find(scheduler, t),
            Some(i) if i >= self.timesteps.len() => Err(SolverError::Finished {
                scheduler,
                steps: self.timesteps.len(),
            }),
            Some(i) if same_timestep(self.timesteps[i], t) => Ok(i),
            Some(i) => Err(SolverError::OutOfOrder {
                scheduler,
                expected: self.timesteps[i],
                got: t,
            }),
        }
    }

    /// The index a model query at `t` refers to: the pending step if it matches, else
    /// a lookup (so `scale_model_input` works before the first step).
    pub fn index_for_query(&self, scheduler: &'static str, t: f64) -> Result<usize> {
        self.require_ready(scheduler, "querying a timestep")?;
        match self.next {
            Some(i) if i < self.timesteps.len() && same_timestep(self.timesteps[i], t) => Ok(i),
            _ => self.find(scheduler, t),
        }
    }

    /// Marks step `index` done.
    pub fn advance(&mut self, index: usize) {
        self.next = Some(index + 1);
    }

    pub fn len(&self) -> usize {
        self.timesteps.len()
    }
}

/// diffusers' float32 training tables.
#[derive(Clone, Debug)]
pub(crate) struct Table {
    pub alphas_cumprod: Vec<f32>,
    /// `sqrt((1 - abar) / abar)` in float32.
    pub sigmas: Vec<f32>,
    /// `ln sigma` in float32 (as numpy computes it), held as f64.
    pub log_sigmas: Vec<f64>,
}

impl Table {
    /// `sigma_safe_terminal`: with a zero-terminal-SNR schedule, replace the exact zero
    /// `abar` by `2^-24` as diffusers' sigma-based schedulers do (DDIM-style ones keep 0).
    pub fn new(config: &DiscreteScheduleConfig, sigma_safe_terminal: bool) -> Result<Self> {
        let d = DiscreteSchedule::from_config(config)?;
        let mut alphas_cumprod = d.alphas_cumprod;
        if sigma_safe_terminal
            && config.rescale_betas_zero_snr
            && let Some(last) = alphas_cumprod.last_mut()
        {
            // diffusers replaces the exact zero so that sigma stays finite.
            *last = 2f32.powi(-24);
        }
        let sigmas = diffusion_schedules::sigmas::sigmas_from_alphas_cumprod(&alphas_cumprod);
        let log_sigmas = sigmas.iter().map(|s| f64::from(s.ln())).collect();
        Ok(Self {
            alphas_cumprod,
            sigmas,
            log_sigmas,
        })
    }

    pub fn len(&self) -> usize {
        self.alphas_cumprod.len()
    }

    /// `abar` at an integer timestep, as f64.
    pub fn abar(&self, t: usize) -> f64 {
        f64::from(self.alphas_cumprod[t])
    }

    /// Table sigmas at (possibly fractional) timesteps, linear interpolation as numpy.
    pub fn interp_sigmas(&self, timesteps: &[f64]) -> Vec<f64> {
        interp_table(timesteps, &self.sigmas)
    }

    pub fn sigma_min(&self) -> f64 {
        f64::from(self.sigmas[0])
    }

    pub fn sigma_max(&self) -> f64 {
        f64::from(self.sigmas[self.sigmas.len() - 1])
    }

    /// A non-table sigma grid over the table's range and the (fractional) timesteps
    /// that `_sigma_to_t` maps it to.
    pub fn grid(
        &self,
        grid: SigmaGrid,
        n: usize,
        sigma_min: Option<f64>,
        sigma_max: Option<f64>,
    ) -> (Vec<f64>, Vec<f64>) {
        let lo = sigma_min.unwrap_or(self.sigma_min());
        let hi = sigma_max.unwrap_or(self.sigma_max());
        let sigmas = grid.sigmas(lo, hi, n);
        let ts = sigmas.iter().map(|&s| sigma_to_t(s, &self.log_sigmas)).collect();
        (sigmas, ts)
    }

    /// The table position of a sigma (fractional timestep).
    pub fn sigma_to_t(&self, sigma: f64) -> f64 {
        sigma_to_t(sigma, &self.log_sigmas)
    }
}

/// `(alpha_t, sigma_t)` of the VP sample whose VE noise level is `sigma`.
pub(crate) fn vp_alpha_sigma(sigma: f64) -> (f64, f64) {
    let alpha = 1.0 / (sigma * sigma + 1.0).sqrt();
    (alpha, sigma * alpha)
}

/// `ln(alpha / sigma)` (infinite at sigma = 0).
pub(crate) fn log_snr(alpha: f64, sigma: f64) -> f64 {
    alpha.ln() - sigma.ln()
}

/// Checks user timesteps: non-empty, finite, strictly decreasing, within `[lo, hi]`.
pub(crate) fn check_custom(scheduler: &'static str, values: &[f64], lo: f64, hi: f64) -> Result<()> {
    let bad = |reason: String| SolverError::InvalidSchedule { scheduler, reason };
    if values.is_empty() {
        return Err(bad("no values given".into()));
    }
    if let Some(v) = values.iter().find(|v| !v.is_finite() || **v < lo || **v > hi) {
        return Err(bad(format!("{v} is outside [{lo}, {hi}]")));
    }
    if let Some(w) = values.windows(2).find(|w| w[1] >= w[0]) {
        return Err(bad(format!(
            "values must strictly decrease, got {} then {}",
            w[0], w[1]
        )));
    }
    Ok(())
}

/// A bounded history of same-shaped tensors whose buffers are recycled: the oldest
/// entry's storage receives the newest value, so a full history allocates nothing.
#[derive(Clone, Debug)]
pub(crate) struct History<T> {
    items: VecDeque<T>,
    capacity: usize,
}

impl<T: Tensor> History<T> {
    pub fn new(capacity: usize) -> Self {
        Self {
            items: VecDeque::with_capacity(capacity + 1),
            capacity: capacity.max(1),
        }
    }

    pub fn clear(&mut self) {
        self.items.clear();
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Writes the linear combination `sum c_i t_i` as the newest entry.
    pub fn push_lincomb(&mut self, terms: &[(f64, &T)]) -> Result<()> {
        self.push_with(terms[0].1, |buf| Ok(buf.lincomb(0.0, terms, None)?))
    }

    /// Makes `write` fill the newest entry, handing it the oldest buffer when the history
    /// is full (else a new one shaped like `like`). `write` must overwrite every element.
    pub fn push_with(&mut self, like: &T, write: impl FnOnce(&mut T) -> Result<()>) -> Result<()> {
        let recycled = if self.items.len() >= self.capacity {
            self.items.pop_front().filter(|b| b.shape() == like.shape())
        } else {
            None
        };
        let mut buf = recycled.unwrap_or_else(|| like.zeros_like());
        write(&mut buf)?;
        self.items.push_back(buf);
        Ok(())
    }

    /// Appends an already-computed tensor; returns the evicted oldest buffer, if any,
    /// for reuse.
    pub fn push_owned(&mut self, value: T) -> Option<T> {
        let evicted = if self.items.len() >= self.capacity {
            self.items.pop_front()
        } else {
            None
        };
        self.items.push_back(value);
        evicted
    }

    /// The `k`-th newest entry (0 = newest).
    pub fn get(&self, k: usize) -> &T {
        &self.items[self.items.len() - 1 - k]
    }
}

/// Dynamic thresholding (Imagen): per batch item, `s` = the `ratio` quantile of `|x|`
/// (linear interpolation, as `torch.quantile`), clamped to `[1, max_value]`; then
/// `x = clamp(x, -s, s) / s`. A host round trip: only for the rare configs that use it.
pub(crate) fn threshold<T: Tensor>(x: &T, ratio: f64, max_value: f64) -> Result<T> {
    Ok(x.map_batch_items(&|item: &mut [f64]| {
        let mut abs: Vec<f64> = item.iter().map(|v| v.abs()).collect();
        abs.sort_by(f64::total_cmp);
        let pos = ratio * (abs.len() - 1) as f64;
        let lo = pos.floor() as usize;
        let hi = (lo + 1).min(abs.len() - 1);
        let q = abs[lo] + (pos - lo as f64) * (abs[hi] - abs[lo]);
        // torch.clamp(q, min=1, max=max_value): the max wins when max_value < 1.
        let s = q.max(1.0).min(max_value);
        for v in item.iter_mut() {
            *v = v.clamp(-s, s) / s;
        }
    })?)
}

/// `clamp(x, -range, range)` elementwise (diffusers' `clip_sample`).
pub(crate) fn clip<T: Tensor>(x: &T, range: f64) -> Result<T> {
    Ok(x.map_batch_items(&|item: &mut [f64]| {
        for v in item.iter_mut() {
            *v = v.clamp(-range, range);
        }
    })?)
}

/// Thresholding options shared by the VP solvers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Thresholding {
    pub enabled: bool,
    pub ratio: f64,
    pub max_value: f64,
}

impl Thresholding {
    /// From diffusers' `thresholding`, `dynamic_thresholding_ratio`, `sample_max_value`.
    pub fn new(enabled: bool, ratio: f64, max_value: f64) -> Self {
        Self {
            enabled,
            ratio,
            max_value,
        }
    }
}

/// An integer training timestep inside a table of `len` entries.
pub(crate) fn table_index(scheduler: &'static str, t: f64, len: usize) -> Result<usize> {
    if t.fract() == 0.0 && t >= 0.0 && (t as usize) < len {
        Ok(t as usize)
    } else {
        Err(SolverError::TimestepNotInSchedule {
            scheduler,
            timestep: t,
        })
    }
}

/// Where a step writes its update: the caller's sample (`step_in_place`) or a new tensor
/// (`step`). The new tensor is made by the update itself (`Tensor::lincomb_to_new`), so
/// `step` costs one pass, not a copy plus an in-place pass.
pub(crate) enum Target<'a, T> {
    InPlace(&'a mut T),
    New(&'a T, Option<T>),
}

impl<T: Tensor> Target<'_, T> {
    /// The current sample (the input until the first update).
    pub fn sample(&self) -> &T {
        match self {
            Self::InPlace(x) => x,
            Self::New(_, Some(r)) => r,
            Self::New(x, None) => x,
        }
    }

    /// `sample = keep * sample + sum c_i t_i + noise`.
    pub fn lincomb(&mut self, keep: f64, terms: &[(f64, &T)], noise: Option<Noise<'_>>) -> Result<()> {
        match self {
            Self::InPlace(x) => x.lincomb(keep, terms, noise)?,
            Self::New(_, Some(r)) => r.lincomb(keep, terms, noise)?,
            Self::New(x, r) => *r = Some(x.lincomb_to_new(keep, terms, noise)?),
        }
        Ok(())
    }

    /// The sample as a mutable tensor (a copy of the input on the first call for `New`).
    pub fn as_mut(&mut self) -> &mut T {
        match self {
            Self::InPlace(x) => x,
            Self::New(x, r) => r.get_or_insert_with(|| (*x).clone()),
        }
    }

    /// Moves the current sample into `slot`, reusing the buffer already there: in place
    /// the storage is swapped (no copy), while a `New` target copies its input. The
    /// target's contents are then unspecified until a `lincomb` with `keep = 0`
    /// overwrites them.
    pub fn move_sample_to(&mut self, slot: &mut Option<T>) -> Result<()> {
        let like = self.sample();
        let buf = slot
            .take()
            .filter(|b| b.shape() == like.shape())
            .unwrap_or_else(|| like.zeros_like());
        *slot = Some(match self {
            Self::InPlace(x) => std::mem::replace(*x, buf),
            Self::New(_, Some(r)) => std::mem::replace(r, buf),
            Self::New(x, None) => {
                let mut buf = buf;
                buf.lincomb(0.0, &[(1.0, *x)], None)?;
                buf
            }
        });
        Ok(())
    }

    /// The result of a `New` target.
    pub fn into_new(self) -> T {
        match self {
            Self::InPlace(x) => x.clone(),
            Self::New(x, r) => r.unwrap_or_else(|| x.clone()),
        }
    }
}
