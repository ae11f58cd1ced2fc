//! Discrete beta schedules, bit-for-bit as diffusers builds them in float32.

use serde::{Deserialize, Serialize};

use crate::error::{Result, ScheduleError, invalid};

/// diffusers' `beta_schedule`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BetaSchedule {
    Linear,
    ScaledLinear,
    /// `squaredcos_cap_v2`: the improved-DDPM cosine schedule, betas capped at 0.999.
    #[serde(rename = "squaredcos_cap_v2")]
    SquaredCosCapV2,
    Sigmoid,
}

impl BetaSchedule {
    pub fn from_name(name: &str) -> Result<Self> {
        Ok(match name {
            "linear" => Self::Linear,
            "scaled_linear" => Self::ScaledLinear,
            "squaredcos_cap_v2" | "cosine" => Self::SquaredCosCapV2,
            "sigmoid" => Self::Sigmoid,
            other => {
                return Err(ScheduleError::UnknownName {
                    kind: "beta_schedule",
                    name: other.into(),
                    expected: "linear, scaled_linear, squaredcos_cap_v2, sigmoid",
                });
            }
        })
    }
}

/// `torch.linspace(start, end, n, dtype=float32)` on the CPU: the step and both halves
/// are computed in float32, the second half counted back from `end`.
pub fn torch_linspace_f32(start: f32, end: f32, n: usize) -> Vec<f32> {
    if n == 1 {
        return vec![start];
    }
    let step = (end - start) / (n - 1) as f32;
    let halfway = n / 2;
    (0..n)
        .map(|i| {
            if i < halfway {
                start + step * i as f32
            } else {
                end - step * (n - 1 - i) as f32
            }
        })
        .collect()
}

/// The improved-DDPM cosine `alpha_bar(t)` with offset s = 0.008.
pub fn cosine_alpha_bar(t: f64) -> f64 {
    ((t + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2).cos().powi(2)
}

/// The betas of a schedule, as diffusers' float32 tensor.
pub fn betas(schedule: BetaSchedule, beta_start: f64, beta_end: f64, n: usize) -> Result<Vec<f32>> {
    if n == 0 {
        return Err(invalid("num_train_timesteps", "must be at least 1"));
    }
    if !(beta_start.is_finite() && beta_end.is_finite()) {
        return Err(invalid("beta_start/beta_end", "must be finite numbers"));
    }
    if schedule != BetaSchedule::SquaredCosCapV2 {
        if !(beta_start > 0.0 && beta_end < 1.0) {
            return Err(invalid(
                "beta_start/beta_end",
                format!("need 0 < beta_start and beta_end < 1, got {beta_start}..{beta_end}"),
            ));
        }
        if beta_end < beta_start {
            return Err(invalid(
                "beta_end",
                format!("beta_end ({beta_end}) is smaller than beta_start ({beta_start})"),
            ));
        }
    }
    Ok(match schedule {
        BetaSchedule::Linear => torch_linspace_f32(beta_start as f32, beta_end as f32, n),
        BetaSchedule::ScaledLinear => torch_linspace_f32(beta_start.sqrt() as f32, beta_end.sqrt() as f32, n)
            .into_iter()
            .map(|b| b * b)
            .collect(),
        // Computed in Python floats (f64), then converted: integer division here is the
        // classic bug that yields betas 0, ..., 0, 0.999.
        BetaSchedule::SquaredCosCapV2 => (0..n)
            .map(|i| {
                let t1 = i as f64 / n as f64;
                let t2 = (i + 1) as f64 / n as f64;
                (1.0 - cosine_alpha_bar(t2) / cosine_alpha_bar(t1)).min(0.999) as f32
            })
            .collect(),
        BetaSchedule::Sigmoid => {
            let (start, end) = (beta_start as f32, beta_end as f32);
            torch_linspace_f32(-6.0, 6.0, n)
                .into_iter()
                .map(|x| 1.0 / (1.0 + (-x).exp()) * (end - start) + start)
                .collect()
        }
    })
}

/// `torch.cumprod(1 - betas)` in float32. torch's CPU kernel accumulates in double and
/// rounds each partial product to float32; against tables diffusers wrote this agrees
/// to 2.3e-7 relative (2 ulp), closer than a float32 accumulation (6e-7).
pub fn alphas_cumprod(betas: &[f32]) -> Vec<f32> {
    let mut acc = 1.0f64;
    betas
        .iter()
        .map(|&b| {
            acc *= f64::from(1.0f32 - b);
            acc as f32
        })
        .collect()
}

/// Rescales betas to zero terminal SNR (Lin et al. 2023, Algorithm 1), in float32 as diffusers.
pub fn rescale_zero_terminal_snr(betas: &[f32]) -> Vec<f32> {
    let abar = alphas_cumprod(betas);
    let sqrt: Vec<f32> = abar.iter().map(|a| a.sqrt()).collect();
    let (first, last) = (sqrt[0], sqrt[sqrt.len() - 1]);
    let scaled: Vec<f32> = sqrt.iter().map(|s| (s - last) * first / (first - last)).collect();
    let bar: Vec<f32> = scaled.iter().map(|s| s * s).collect();
    let mut out = Vec::with_capacity(bar.len());
    out.push(1.0 - bar[0]);
    for i in 1..bar.len() {
        out.push(1.0 - bar[i] / bar[i - 1]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linspace_halves_meet() {
        let v = torch_linspace_f32(0.0, 1.0, 11);
        assert_eq!(v[0], 0.0);
        assert_eq!(v[10], 1.0);
        assert!((v[5] - 0.5).abs() < 1e-7);
    }

    #[test]
    fn cosine_interior_betas_are_not_integer_divided() {
        // Closed form from the improved-DDPM paper at i = 500 of 1000.
        let b = betas(BetaSchedule::SquaredCosCapV2, 0.0, 0.0, 1000).unwrap();
        let want = 1.0 - cosine_alpha_bar(0.501) / cosine_alpha_bar(0.5);
        assert!((f64::from(b[500]) - want).abs() < 1e-9, "{} vs {want}", b[500]);
        assert!(b[0] > 0.0 && b[0] < 1e-4);
        assert!(b[1..999].iter().all(|&x| x > 0.0 && x < 0.999));
        assert_eq!(b[999], 0.999);
    }

    #[test]
    fn zero_snr_rescale_ends_at_zero_and_keeps_the_start() {
        let b = betas(BetaSchedule::ScaledLinear, 0.00085, 0.012, 1000).unwrap();
        let r = rescale_zero_terminal_snr(&b);
        let (a, ar) = (alphas_cumprod(&b), alphas_cumprod(&r));
        assert_eq!(ar[999], 0.0);
        assert!((a[0] - ar[0]).abs() < 1e-6);
        assert!(ar.windows(2).all(|w| w[1] <= w[0]));
    }

    #[test]
    fn invalid_betas_are_errors() {
        assert!(betas(BetaSchedule::Linear, 0.02, 0.0001, 10).is_err());
        assert!(betas(BetaSchedule::Linear, f64::NAN, 0.02, 10).is_err());
        assert!(betas(BetaSchedule::Linear, 0.0001, 0.02, 0).is_err());
        assert!(BetaSchedule::from_name("quadratic").is_err());
    }
}
