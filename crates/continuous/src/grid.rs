//! Time grids: the decreasing sequence of times `t_0 > t_1 > ... > t_N` a sampler visits.

use diffusion_core::NoiseSchedule;

use crate::error::{ContinuousError, Result, invalid};

/// How to place the grid points between the start and end times.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum GridKind {
    /// Uniform in `t` (DPM-Solver's `time_uniform`).
    TimeUniform,
    /// Uniform in `lambda = ln(alpha / sigma)` (DPM-Solver's `logSNR`).
    LogSnrUniform,
    /// Karras et al. (EDM): uniform in `(sigma / alpha)^(1 / rho)`.
    Karras { rho: f64 },
}

/// A strictly decreasing sequence of times, from the noisiest to the cleanest.
#[derive(Clone, Debug, PartialEq)]
pub struct TimeGrid {
    times: Vec<f64>,
}

impl TimeGrid {
    /// Checks that `times` has at least two finite, strictly decreasing entries.
    pub fn from_times(times: Vec<f64>) -> Result<Self> {
        if times.len() < 2 {
            return Err(ContinuousError::InvalidGrid(format!(
                "a grid needs at least 2 times (1 step), got {}",
                times.len()
            )));
        }
        if let Some(i) = times.iter().position(|t| !t.is_finite()) {
            return Err(ContinuousError::InvalidGrid(format!("time {i} is {}", times[i])));
        }
        if let Some(i) = times.windows(2).position(|w| w[1] >= w[0]) {
            return Err(ContinuousError::InvalidGrid(format!(
                "times must strictly decrease, but t[{i}] = {} and t[{}] = {}",
                times[i],
                i + 1,
                times[i + 1]
            )));
        }
        Ok(Self { times })
    }

    /// `steps` steps from `t_start` down to `t_end` on `schedule`.
    pub fn new<S: NoiseSchedule + ?Sized>(
        kind: GridKind,
        schedule: &S,
        t_start: f64,
        t_end: f64,
        steps: usize,
    ) -> Result<Self> {
        if steps == 0 {
            return Err(invalid("steps", "must be at least 1"));
        }
        if !(t_start.is_finite() && t_end.is_finite() && t_start > t_end) {
            return Err(ContinuousError::InvalidGrid(format!(
                "need finite t_start > t_end, got {t_start} and {t_end}"
            )));
        }
        let n = steps as f64;
        let times = match kind {
            GridKind::TimeUniform => (0..=steps)
                .map(|i| t_start + (t_end - t_start) * i as f64 / n)
                .collect(),
            GridKind::LogSnrUniform => {
                let (l0, l1) = (schedule.lambda(t_start), schedule.lambda(t_end));
                let mut v: Vec<f64> = (0..=steps)
                    .map(|i| schedule.t_of_lambda(l0 + (l1 - l0) * i as f64 / n))
                    .collect();
                // The ends exactly as asked, not as the inverse rounds them.
                v[0] = t_start;
                v[steps] = t_end;
                v
            }
            GridKind::Karras { rho } => {
                if !(rho.is_finite() && rho > 0.0) {
                    return Err(invalid("rho", format!("must be positive, got {rho}")));
                }
                let (a, b) = (
                    schedule.sigma_over_alpha(t_start).powf(1.0 / rho),
                    schedule.sigma_over_alpha(t_end).powf(1.0 / rho),
                );
                let mut v: Vec<f64> = (0..=steps)
                    .map(|i| {
                        let s = (a + (b - a) * i as f64 / n).powf(rho);
                        schedule.t_of_lambda(-s.ln())
                    })
                    .collect();
                v[0] = t_start;
                v[steps] = t_end;
                v
            }
        };
        Self::from_times(times)
    }

    pub fn times(&self) -> &[f64] {
        &self.times
    }

    /// Number of steps (one less than the number of times).
    pub fn steps(&self) -> usize {
        self.times.len() - 1
    }
}
