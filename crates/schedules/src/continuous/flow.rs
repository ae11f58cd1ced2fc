use diffusion_core::{Convention, NoiseSchedule, Rng};

/// Rectified flow (Liu et al. 2022; SD3): `x_t = (1 - t) x0 + t eps`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RectifiedFlow {
    /// The SD3 time shift applied to sampling grids (1 = none).
    pub shift: f64,
}

impl Default for RectifiedFlow {
    fn default() -> Self {
        Self { shift: 1.0 }
    }
}

impl RectifiedFlow {
    /// `n` shifted sampling times from 1 down to 0 (inclusive), uniform before the shift.
    pub fn sampling_times(&self, n: usize) -> Vec<f64> {
        crate::spacing::np_linspace(1.0, 0.0, n + 1)
            .into_iter()
            .map(|t| shift_time(t, self.shift))
            .collect()
    }
}

impl NoiseSchedule for RectifiedFlow {
    fn alpha(&self, t: f64) -> f64 {
        1.0 - t
    }
    fn sigma(&self, t: f64) -> f64 {
        t
    }
    fn t_range(&self) -> (f64, f64) {
        (0.0, 1.0)
    }
    fn convention(&self) -> Convention {
        Convention::Flow
    }
    fn t_of_lambda(&self, lambda: f64) -> f64 {
        1.0 / (1.0 + lambda.exp())
    }
}

/// SD3's shift: `shift t / (1 + (shift - 1) t)`; it spends more steps at high noise.
pub fn shift_time(t: f64, shift: f64) -> f64 {
    shift * t / (1.0 + (shift - 1.0) * t)
}

/// Flux's resolution-dependent shift: `e^mu / (e^mu + (1/t - 1)^exponent)`.
pub fn time_shift_exponential(t: f64, mu: f64, exponent: f64) -> f64 {
    if t <= 0.0 {
        return 0.0;
    }
    mu.exp() / (mu.exp() + (1.0 / t - 1.0).powf(exponent))
}

/// `mu` for an image of `seq_len` latent tokens, linear between
/// (`base_seq_len`, `base_shift`) and (`max_seq_len`, `max_shift`) (diffusers'
/// `calculate_shift`; defaults 256, 4096, 0.5, 1.15).
pub fn dynamic_shift_mu(
    seq_len: usize,
    base_seq_len: usize,
    max_seq_len: usize,
    base_shift: f64,
    max_shift: f64,
) -> f64 {
    let m = (max_shift - base_shift) / (max_seq_len as f64 - base_seq_len as f64);
    let b = base_shift - m * base_seq_len as f64;
    seq_len as f64 * m + b
}

/// Training-time densities over flow time `t` (Esser et al. 2024, section 3.1).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum FlowDensity {
    Uniform,
    /// `t = sigmoid(mean + std * z)`, `z ~ N(0, 1)`.
    LogitNormal {
        mean: f64,
        std: f64,
    },
    /// `t = 1 - u - scale (cos^2(pi u / 2) - 1 + u)`, `u ~ U(0, 1)`; a valid density for
    /// `-1 <= scale <= 2 / (pi - 2)`.
    Mode {
        scale: f64,
    },
}

impl FlowDensity {
    pub fn sample(&self, rng: &mut Rng) -> f64 {
        match *self {
            Self::Uniform => rng.uniform(),
            Self::LogitNormal { mean, std } => 1.0 / (1.0 + (-(mean + std * rng.normal())).exp()),
            Self::Mode { scale } => {
                let u = rng.uniform();
                1.0 - u - scale * ((std::f64::consts::FRAC_PI_2 * u).cos().powi(2) - 1.0 + u)
            }
        }
    }

    /// The probability density at `t` in (0, 1) (closed form; `Mode` by inverting its map).
    pub fn pdf(&self, t: f64) -> f64 {
        match *self {
            Self::Uniform => 1.0,
            Self::LogitNormal { mean, std } => {
                let l = (t / (1.0 - t)).ln();
                (-(l - mean).powi(2) / (2.0 * std * std)).exp()
                    / (std * (2.0 * std::f64::consts::PI).sqrt() * t * (1.0 - t))
            }
            Self::Mode { scale } => {
                // t = f(u) is decreasing; density = 1 / |f'(u)| at u = f^-1(t).
                let f =
                    |u: f64| 1.0 - u - scale * ((std::f64::consts::FRAC_PI_2 * u).cos().powi(2) - 1.0 + u);
                let (mut lo, mut hi) = (0.0f64, 1.0f64);
                for _ in 0..100 {
                    let mid = 0.5 * (lo + hi);
                    if f(mid) > t { lo = mid } else { hi = mid }
                }
                let u = 0.5 * (lo + hi);
                let df =
                    -1.0 - scale * (1.0 - std::f64::consts::FRAC_PI_2 * (std::f64::consts::PI * u).sin());
                1.0 / df.abs()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shifted_grids_match_diffusers() {
        // diffusers-scheduler-suite.md: shift 1 gives 1.0, 0.889, ..., 0.112, 0.001, 0 over
        // an unshifted grid that ends at 1/N; check the shift formula on its endpoints
        // and one interior value of the shift-3 row.
        let sigma_min = shift_time(1.0 / 1000.0, 3.0);
        let lin = crate::spacing::np_linspace(1.0, sigma_min, 10);
        let shifted: Vec<f64> = lin.iter().map(|&t| shift_time(t, 3.0)).collect();
        assert!((shifted[1] - 0.960129).abs() < 1e-6);
        assert!((shifted[8] - 0.278049).abs() < 1e-6);
        assert!((shifted[9] - 0.00892857).abs() < 1e-8);
        let g = RectifiedFlow { shift: 1.0 }.sampling_times(4);
        assert_eq!(g, vec![1.0, 0.75, 0.5, 0.25, 0.0]);
    }

    #[test]
    fn densities_integrate_to_one_and_match_their_samples() {
        for d in [
            FlowDensity::Uniform,
            FlowDensity::LogitNormal { mean: 0.0, std: 1.0 },
            FlowDensity::LogitNormal { mean: 0.5, std: 0.7 },
            FlowDensity::Mode { scale: 1.29 },
        ] {
            let n = 20_000;
            let h = 1.0 / n as f64;
            let (mass, mean) = (0..n).fold((0.0, 0.0), |(m, e), i| {
                let t = (i as f64 + 0.5) * h;
                (m + d.pdf(t) * h, e + t * d.pdf(t) * h)
            });
            assert!((mass - 1.0).abs() < 2e-3, "{d:?} mass {mass}");
            let mut rng = Rng::new(11);
            let k = 40_000;
            let sample_mean = (0..k).map(|_| d.sample(&mut rng)).sum::<f64>() / k as f64;
            // Standard error <= 0.5 / sqrt(k) = 2.5e-3.
            assert!(
                (sample_mean - mean).abs() < 0.01,
                "{d:?}: {sample_mean} vs {mean}"
            );
        }
    }

    #[test]
    fn dynamic_shift_endpoints() {
        assert!((dynamic_shift_mu(256, 256, 4096, 0.5, 1.15) - 0.5).abs() < 1e-12);
        assert!((dynamic_shift_mu(4096, 256, 4096, 0.5, 1.15) - 1.15).abs() < 1e-12);
        // With exponent 1 the exponential shift equals the SD3 shift with shift = e^mu.
        let mu: f64 = 1.1;
        assert!((time_shift_exponential(0.3, mu, 1.0) - shift_time(0.3, mu.exp())).abs() < 1e-12);
        let f = RectifiedFlow::default();
        assert!((f.t_of_lambda(f.lambda(0.3)) - 0.3).abs() < 1e-12);
    }
}
