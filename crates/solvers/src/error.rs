//! The one error type of this crate.

use diffusion_core::CoreError;
use diffusion_schedules::ScheduleError;
use thiserror::Error;

/// Everything that can go wrong while configuring or running a scheduler.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SolverError {
    /// A tensor or model problem reported by `diffusion-core` (shape mismatch, non-finite
    /// model output, singular parameterization conversion).
    #[error(transparent)]
    Core(#[from] CoreError),
    /// An invalid schedule configuration.
    #[error(transparent)]
    Schedule(#[from] ScheduleError),
    /// A configuration value is out of range or inconsistent with another.
    #[error("invalid {scheduler} config `{key}`: {reason}")]
    InvalidConfig {
        scheduler: &'static str,
        key: &'static str,
        reason: String,
    },
    /// A config file could not be parsed (bad JSON, wrong value type, unknown key).
    #[error("cannot read {scheduler} config: {reason}")]
    Parse { scheduler: &'static str, reason: String },
    /// A scheduler name or diffusers class name we do not know.
    #[error("unknown scheduler {name:?}; known: {known}")]
    UnknownScheduler { name: String, known: String },
    /// `step` (or a query) before `set_timesteps`.
    #[error("{scheduler}: call set_timesteps before {what}")]
    NotInitialized {
        scheduler: &'static str,
        what: &'static str,
    },
    /// A timestep that is not in the current schedule.
    #[error("{scheduler}: timestep {timestep} is not in the schedule")]
    TimestepNotInSchedule { scheduler: &'static str, timestep: f64 },
    /// `step` called with a timestep other than the next one.
    #[error("{scheduler}: step called out of order: expected timestep {expected}, got {got}")]
    OutOfOrder {
        scheduler: &'static str,
        expected: f64,
        got: f64,
    },
    /// `step` after the last timestep of the schedule.
    #[error("{scheduler}: the schedule is finished ({steps} steps); call set_timesteps again")]
    Finished { scheduler: &'static str, steps: usize },
    /// Custom timesteps or sigmas that are not strictly decreasing, out of range, or empty.
    #[error("{scheduler}: invalid custom schedule: {reason}")]
    InvalidSchedule { scheduler: &'static str, reason: String },
    /// A stochastic step without a random generator.
    #[error("{scheduler}: this step injects noise and needs an Rng")]
    MissingRng { scheduler: &'static str },
    /// A feature diffusers has that this port does not implement.
    #[error("{scheduler}: {what} is not supported")]
    Unsupported { scheduler: &'static str, what: String },
    /// Reading a config file failed.
    #[error("cannot read {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Result with [`SolverError`].
pub type Result<T, E = SolverError> = std::result::Result<T, E>;

pub(crate) fn invalid(scheduler: &'static str, key: &'static str, reason: impl Into<String>) -> SolverError {
    SolverError::InvalidConfig {
        scheduler,
        key,
        reason: reason.into(),
    }
}
