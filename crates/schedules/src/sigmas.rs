//! Sigma grids: the VE noise levels `sigma = sqrt((1 - abar) / abar)` of a discrete
//! schedule, their interpolation, and the Karras / exponential / beta / lu-lambda grids.

use serde::{Deserialize, Serialize};

use crate::error::{Result, ScheduleError, invalid};
use crate::spacing::np_linspace;

/// `sqrt((1 - abar) / abar)` in float32, as diffusers computes it from its tensor.
pub fn sigmas_from_alphas_cumprod(alphas_cumprod: &[f32]) -> Vec<f32> {
    alphas_cumprod.iter().map(|&a| ((1.0 - a) / a).sqrt()).collect()
}

/// `np.interp(x, xp, fp)` with `xp` increasing; clamps outside the table.
pub fn interp(x: f64, xp: &[f64], fp: &[f64]) -> f64 {
    let n = xp.len();
    if x <= xp[0] {
        return fp[0];
    }
    if x >= xp[n - 1] {
        return fp[n - 1];
    }
    let hi = xp.partition_point(|&v| v <= x);
    let lo = hi - 1;
    let w = (x - xp[lo]) / (xp[hi] - xp[lo]);
    fp[lo] + w * (fp[hi] - fp[lo])
}

/// Interpolates a per-training-step table at (possibly fractional) timesteps.
pub fn interp_table(timesteps: &[f64], table: &[f32]) -> Vec<f64> {
    let xp: Vec<f64> = (0..table.len()).map(|i| i as f64).collect();
    let fp: Vec<f64> = table.iter().map(|&v| f64::from(v)).collect();
    timesteps.iter().map(|&t| interp(t, &xp, &fp)).collect()
}

/// diffusers' `_sigma_to_t`: the fractional timestep at which the log-sigma table
/// (increasing) reaches `sigma`, by linear interpolation in log sigma.
pub fn sigma_to_t(sigma: f64, log_sigmas: &[f64]) -> f64 {
    let log_sigma = sigma.max(1e-10).ln();
    let n = log_sigmas.len();
    let count = log_sigmas.iter().take_while(|&&l| log_sigma - l >= 0.0).count();
    let low = count.saturating_sub(1).min(n - 2);
    let (lo, hi) = (log_sigmas[low], log_sigmas[low + 1]);
    let w = ((lo - log_sigma) / (lo - hi)).clamp(0.0, 1.0);
    (1.0 - w) * low as f64 + w * (low + 1) as f64
}

/// Karras et al. (2022) eq. 5: `n` sigmas from `sigma_max` down to `sigma_min`,
/// uniform in `sigma^(1/rho)`.
pub fn karras_sigmas(sigma_min: f64, sigma_max: f64, rho: f64, n: usize) -> Vec<f64> {
    let (lo, hi) = (sigma_min.powf(1.0 / rho), sigma_max.powf(1.0 / rho));
    np_linspace(0.0, 1.0, n)
        .into_iter()
        .map(|r| (hi + r * (lo - hi)).powf(rho))
        .collect()
}

/// `n` sigmas uniform in log sigma.
pub fn exponential_sigmas(sigma_min: f64, sigma_max: f64, n: usize) -> Vec<f64> {
    np_linspace(sigma_max.ln(), sigma_min.ln(), n)
        .into_iter()
        .map(f64::exp)
        .collect()
}

/// Beta sigmas (Lee et al. 2024): `sigma_min + ppf(1 - r) (sigma_max - sigma_min)` with
/// the Beta(alpha, beta) quantile function.
pub fn beta_sigmas(sigma_min: f64, sigma_max: f64, n: usize, alpha: f64, beta: f64) -> Vec<f64> {
    np_linspace(0.0, 1.0, n)
        .into_iter()
        .map(|r| sigma_min + beta_ppf(1.0 - r, alpha, beta) * (sigma_max - sigma_min))
        .collect()
}

/// The Beta(a, b) quantile function, by bisection on the regularized incomplete beta
/// function (monotone, so bisection to f64 resolution is exact enough and robust).
pub fn beta_ppf(p: f64, a: f64, b: f64) -> f64 {
    if p <= 0.0 {
        return 0.0;
    }
    if p >= 1.0 {
        return 1.0;
    }
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if mid <= lo || mid >= hi {
            break;
        }
        if statrs::function::beta::beta_reg(a, b, mid) < p {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

/// Lu et al.'s (DPM-Solver++) grid: `n` log-SNR values uniform from `lambda_start`
/// (the noisiest point, lowest SNR) to `lambda_end`.
pub fn lu_lambdas(lambda_start: f64, lambda_end: f64, n: usize) -> Vec<f64> {
    np_linspace(0.0, 1.0, n)
        .into_iter()
        .map(|r| lambda_start + r * (lambda_end - lambda_start))
        .collect()
}

/// Which sigma grid a sampler uses between the table's extremes.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SigmaGrid {
    /// The table's own sigmas at the spaced timesteps.
    Table,
    Karras {
        rho: f64,
    },
    Exponential,
    Beta {
        alpha: f64,
        beta: f64,
    },
    LuLambdas,
}

impl SigmaGrid {
    /// From diffusers' boolean flags; at most one may be set.
    pub fn from_flags(karras: bool, exponential: bool, beta: bool, lu: bool) -> Result<Self> {
        let set = [karras, exponential, beta, lu].iter().filter(|&&b| b).count();
        if set > 1 {
            return Err(invalid(
                "use_karras_sigmas/use_exponential_sigmas/use_beta_sigmas/use_lu_lambdas",
                "only one sigma grid can be chosen",
            ));
        }
        Ok(if karras {
            Self::Karras { rho: 7.0 }
        } else if exponential {
            Self::Exponential
        } else if beta {
            Self::Beta {
                alpha: 0.6,
                beta: 0.6,
            }
        } else if lu {
            Self::LuLambdas
        } else {
            Self::Table
        })
    }

    /// `n` descending sigmas between `sigma_max` and `sigma_min` (not for `Table`).
    pub fn sigmas(self, sigma_min: f64, sigma_max: f64, n: usize) -> Vec<f64> {
        match self {
            Self::Table => np_linspace(sigma_max, sigma_min, n),
            Self::Karras { rho } => karras_sigmas(sigma_min, sigma_max, rho, n),
            Self::Exponential => exponential_sigmas(sigma_min, sigma_max, n),
            Self::Beta { alpha, beta } => beta_sigmas(sigma_min, sigma_max, n, alpha, beta),
            // lambda = -ln sigma for the VE view of a VP schedule.
            Self::LuLambdas => lu_lambdas(-sigma_max.ln(), -sigma_min.ln(), n)
                .into_iter()
                .map(|l| (-l).exp())
                .collect(),
        }
    }
}

/// diffusers' `final_sigmas_type`: what the last step ends at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinalSigmas {
    /// End at sigma = 0 (the clean sample).
    Zero,
    /// End at the smallest training sigma.
    SigmaMin,
}

impl FinalSigmas {
    pub fn from_name(name: &str) -> Result<Self> {
        match name {
            "zero" => Ok(Self::Zero),
            "sigma_min" => Ok(Self::SigmaMin),
            other => Err(ScheduleError::UnknownName {
                kind: "final_sigmas_type",
                name: other.into(),
                expected: "zero, sigma_min",
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::betas::{BetaSchedule, alphas_cumprod, betas};

    fn close(got: &[f64], want: &[f64], rel: f64) {
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() <= rel * w.abs().max(1e-30), "{got:?}\nvs\n{want:?}");
        }
    }

    fn table(schedule: BetaSchedule, start: f64, end: f64) -> Vec<f32> {
        sigmas_from_alphas_cumprod(&alphas_cumprod(&betas(schedule, start, end, 1000).unwrap()))
    }

    #[test]
    fn dpm_sigmas_linear_match_diffusers() {
        let s = table(BetaSchedule::Linear, 1e-4, 0.02);
        let ts = [
            999.0, 899.0, 799.0, 699.0, 599.0, 500.0, 400.0, 300.0, 200.0, 100.0,
        ];
        let got = interp_table(&ts, &s);
        let want = [
            157.407, 60.2714, 25.5285, 11.9395, 6.13521, 3.44297, 2.04109, 1.24016, 0.723591, 0.342261,
        ];
        close(&got, &want, 1e-5);
        assert!((f64::from(s[0]) - 0.0100013).abs() < 1e-7);
    }

    #[test]
    fn karras_grids_match_diffusers() {
        let s = table(BetaSchedule::Linear, 1e-4, 0.02);
        let got = karras_sigmas(f64::from(s[0]), f64::from(s[999]), 7.0, 10);
        let want = [
            157.407, 85.7107, 44.0476, 21.1056, 9.27474, 3.65264, 1.24636, 0.349706, 0.0739302, 0.0100013,
        ];
        close(&got, &want, 1e-5);
        let log: Vec<f64> = s.iter().map(|&v| f64::from(v).ln()).collect();
        let ts: Vec<i64> = got.iter().map(|&g| sigma_to_t(g, &log).round() as i64).collect();
        assert_eq!(ts, vec![999, 937, 864, 775, 663, 511, 301, 102, 18, 0]);

        let sd = table(BetaSchedule::ScaledLinear, 0.00085, 0.012);
        let got = karras_sigmas(f64::from(sd[0]), f64::from(sd[999]), 7.0, 10);
        let want = [
            14.6147, 9.10294, 5.47841, 3.16861, 1.74942, 0.914077, 0.446921, 0.2014, 0.081911, 0.0291675,
        ];
        close(&got, &want, 1e-5);
    }

    #[test]
    fn euler_sigmas_match_diffusers() {
        let s = sigmas_from_alphas_cumprod(&alphas_cumprod(
            &betas(BetaSchedule::Linear, 1e-4, 0.02, 1100).unwrap(),
        ));
        let ts = crate::spacing::euler_timesteps(crate::TimestepSpacing::Linspace, 1100, 10, 0).unwrap();
        let got = interp_table(&ts, &s);
        let want = [
            261.056, 81.4057, 29.1121, 11.9126, 5.53582, 2.86488, 1.58682, 0.874083, 0.400163, 0.0100013,
        ];
        close(&got, &want, 1e-5);
    }

    #[test]
    fn other_grids_have_the_right_ends_and_shape() {
        let e = exponential_sigmas(0.01, 100.0, 5);
        close(&e, &[100.0, 10.0, 1.0, 0.1, 0.01], 1e-12);
        let b = beta_sigmas(0.01, 100.0, 7, 0.6, 0.6);
        assert!((b[0] - 100.0).abs() < 1e-9 && (b[6] - 0.01).abs() < 1e-9);
        assert!(b.windows(2).all(|w| w[1] < w[0]));
        // Beta(0.6, 0.6) is symmetric: the median is 1/2.
        assert!((beta_ppf(0.5, 0.6, 0.6) - 0.5).abs() < 1e-12);
        // Beta(1, 1) is uniform.
        assert!((beta_ppf(0.3, 1.0, 1.0) - 0.3).abs() < 1e-12);
        let lu = SigmaGrid::LuLambdas.sigmas(0.01, 100.0, 5);
        close(&lu, &e, 1e-12);
        assert!(SigmaGrid::from_flags(true, true, false, false).is_err());
    }
}
