//! The serde form of a Gaussian-mixture problem (`gmm2d_spec.json`) and its discrete
//! diffusers-style noise tables.

use std::collections::BTreeMap;
use std::path::Path;

use diffusion_core::NoiseLevel;
use serde::{Deserialize, Serialize};

use crate::error::{Result, TestbedError};

/// A Gaussian mixture as stored on disk: `weights` `[K]`, `means` `[K][D]`,
/// `covariances` `[K][D][D]`, plus optional named discrete schedules. Other fields of the
/// file (descriptions, file pointers) are ignored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GmmSpec {
    #[serde(default)]
    pub name: Option<String>,
    /// Declared dimension; checked against `means` when present.
    #[serde(default)]
    pub dim: Option<usize>,
    pub weights: Vec<f64>,
    pub means: Vec<Vec<f64>>,
    pub covariances: Vec<Vec<Vec<f64>>>,
    #[serde(default)]
    pub schedules: BTreeMap<String, ScheduleSpec>,
}

/// A diffusers discrete beta schedule with its exact `alphas_cumprod` table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScheduleSpec {
    pub beta_schedule: String,
    pub beta_start: f64,
    pub beta_end: f64,
    pub num_train_timesteps: usize,
    /// diffusers' float32 table, stored exactly as float64 numbers.
    pub alphas_cumprod: Vec<f64>,
}

impl GmmSpec {
    /// Parses a spec from JSON text. `origin` names the source in error messages.
    pub fn from_json_str(text: &str, origin: &str) -> Result<Self> {
        serde_json::from_str(text).map_err(|source| TestbedError::Json {
            origin: origin.to_string(),
            source,
        })
    }

    /// Reads a spec file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| TestbedError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_json_str(&text, &path.display().to_string())
    }

    /// The named schedule's timestep table.
    pub fn schedule(&self, name: &str) -> Result<DiscreteVpSchedule> {
        let spec = self.schedules.get(name).ok_or_else(|| {
            TestbedError::invalid(
                "schedule",
                format!(
                    "no schedule {name:?} in the spec (have {:?})",
                    self.schedules.keys().collect::<Vec<_>>()
                ),
            )
        })?;
        DiscreteVpSchedule::from_spec(spec)
    }
}

/// A discrete variance-preserving schedule given by its `alphas_cumprod` table:
/// timestep `t` has `alpha = sqrt(abar_t)`, `sigma = sqrt(1 - abar_t)`.
///
/// Fractional timesteps interpolate `ln s`, `s = sigma / alpha`, linearly between the
/// neighbouring integers (the rule the reference problem documents).
#[derive(Clone, Debug, PartialEq)]
pub struct DiscreteVpSchedule {
    alphas_cumprod: Vec<f64>,
}

impl DiscreteVpSchedule {
    /// Validates and wraps a table: non-empty, every entry in (0, 1], non-increasing.
    pub fn new(alphas_cumprod: Vec<f64>) -> Result<Self> {
        if alphas_cumprod.is_empty() {
            return Err(TestbedError::InvalidSpec("alphas_cumprod is empty".into()));
        }
        for (t, &a) in alphas_cumprod.iter().enumerate() {
            if !(a > 0.0 && a <= 1.0) {
                return Err(TestbedError::InvalidSpec(format!(
                    "alphas_cumprod[{t}] = {a} is outside (0, 1]"
                )));
            }
            if t > 0 && a > alphas_cumprod[t - 1] {
                return Err(TestbedError::InvalidSpec(format!(
                    "alphas_cumprod increases at t = {t} ({} -> {a})",
                    alphas_cumprod[t - 1]
                )));
            }
        }
        Ok(Self { alphas_cumprod })
    }

    pub fn from_spec(spec: &ScheduleSpec) -> Result<Self> {
        if spec.alphas_cumprod.len() != spec.num_train_timesteps {
            return Err(TestbedError::InvalidSpec(format!(
                "alphas_cumprod has {} entries but num_train_timesteps is {}",
                spec.alphas_cumprod.len(),
                spec.num_train_timesteps
            )));
        }
        Self::new(spec.alphas_cumprod.clone())
    }

    pub fn alphas_cumprod(&self) -> &[f64] {
        &self.alphas_cumprod
    }

    pub fn num_train_timesteps(&self) -> usize {
        self.alphas_cumprod.len()
    }

    /// `s = sigma / alpha = sqrt((1 - abar) / abar)` at integer timestep `t`.
    fn s_at(&self, t: usize) -> f64 {
        let a = self.alphas_cumprod[t];
        ((1.0 - a) / a).sqrt()
    }

    /// `abar` at timestep `t` in `[0, T - 1]` (integer: table lookup; fractional:
    /// `ln s` linear between the neighbouring integers).
    pub fn alpha_bar(&self, t: f64) -> Result<f64> {
        let last = (self.alphas_cumprod.len() - 1) as f64;
        if !(t.is_finite() && (0.0..=last).contains(&t)) {
            return Err(TestbedError::invalid(
                "timestep",
                format!("{t} is outside the table's range [0, {last}]"),
            ));
        }
        let lo = t.floor() as usize;
        let frac = t - lo as f64;
        if frac == 0.0 {
            return Ok(self.alphas_cumprod[lo]);
        }
        let (s0, s1) = (self.s_at(lo), self.s_at(lo + 1));
        // abar = 1 exactly has s = 0 and ln s = -inf: interpolate s itself there.
        let s = if s0 > 0.0 {
            (s0.ln() * (1.0 - frac) + s1.ln() * frac).exp()
        } else {
            s1 * frac
        };
        Ok(1.0 / (1.0 + s * s))
    }

    /// The VP noise level at timestep `t` (the model's time input is `t` itself).
    pub fn level(&self, t: f64) -> Result<NoiseLevel> {
        let abar = self.alpha_bar(t)?;
        Ok(NoiseLevel::new(t, abar.sqrt(), (1.0 - abar).sqrt()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_timesteps_read_the_table_and_fractions_interpolate_log_s() {
        let sched = DiscreteVpSchedule::new(vec![0.99, 0.9, 0.5]).unwrap();
        let l = sched.level(1.0).unwrap();
        assert!((l.alpha - 0.9f64.sqrt()).abs() < 1e-15 && (l.sigma - 0.1f64.sqrt()).abs() < 1e-15);
        // Midway between t=1 and t=2: s is the geometric mean of the two s values.
        let s_mid = ((0.1 / 0.9f64).sqrt() * (0.5f64 / 0.5).sqrt()).sqrt();
        let abar = sched.alpha_bar(1.5).unwrap();
        assert!((abar - 1.0 / (1.0 + s_mid * s_mid)).abs() < 1e-15);
        assert!(sched.level(2.5).is_err());
        assert!(sched.level(-0.1).is_err());
        assert!(sched.level(f64::NAN).is_err());
    }

    #[test]
    fn bad_tables_are_rejected() {
        assert!(DiscreteVpSchedule::new(vec![]).is_err());
        assert!(DiscreteVpSchedule::new(vec![0.5, 0.9]).is_err());
        assert!(DiscreteVpSchedule::new(vec![1.5]).is_err());
        assert!(DiscreteVpSchedule::new(vec![0.0]).is_err());
    }
}
