use thiserror::Error;

/// Errors from building a schedule.
#[derive(Debug, Error, Clone, PartialEq)]
#[non_exhaustive]
pub enum ScheduleError {
    /// A configuration value is out of range or inconsistent.
    #[error("invalid schedule config `{key}`: {reason}")]
    InvalidConfig { key: &'static str, reason: String },
    /// A name (beta schedule, spacing, sigma grid) that is not known.
    #[error("unknown {kind} {name:?}; expected one of: {expected}")]
    UnknownName {
        kind: &'static str,
        name: String,
        expected: &'static str,
    },
    /// A `scheduler_config.json` that is not valid JSON or has values of the wrong type.
    #[error("cannot read scheduler config: {0}")]
    Parse(String),
}

pub type Result<T, E = ScheduleError> = std::result::Result<T, E>;

pub(crate) fn invalid(key: &'static str, reason: impl Into<String>) -> ScheduleError {
    ScheduleError::InvalidConfig {
        key,
        reason: reason.into(),
    }
}
