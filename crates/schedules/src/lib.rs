//! Noise schedules.
