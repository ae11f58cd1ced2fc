//! Continuous-time noise schedules: `x_t = alpha(t) x0 + sigma(t) eps`.

use crate::model::NoiseLevel;

/// The family a schedule belongs to; solvers that assume one (a VP-only formula) check it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Convention {
    /// Variance preserving: `alpha^2 + sigma^2 = 1`.
    VariancePreserving,
    /// Variance exploding: `alpha = 1`.
    VarianceExploding,
    /// Rectified flow: `alpha = 1 - t`, `sigma = t`.
    Flow,
    /// Anything else (sub-VP, stochastic interpolants).
    Other,
}

/// A continuous-time noise schedule on `t` in `[t_min, t_max]`, noisier as `t` grows.
pub trait NoiseSchedule: Send + Sync {
    fn alpha(&self, t: f64) -> f64;
    fn sigma(&self, t: f64) -> f64;

    /// The time domain `(t_min, t_max)`.
    fn t_range(&self) -> (f64, f64);

    fn convention(&self) -> Convention;

    /// Log signal-to-noise ratio `lambda(t) = ln(alpha(t) / sigma(t))`, decreasing in t.
    fn lambda(&self, t: f64) -> f64 {
        (self.alpha(t) / self.sigma(t)).ln()
    }

    /// The inverse of [`NoiseSchedule::lambda`]. The default bisects to f64 resolution;
    /// schedules with a closed form override it.
    fn t_of_lambda(&self, lambda: f64) -> f64 {
        let (mut lo, mut hi) = self.t_range();
        if lambda >= self.lambda(lo) {
            return lo;
        }
        if lambda <= self.lambda(hi) {
            return hi;
        }
        for _ in 0..200 {
            let mid = 0.5 * (lo + hi);
            if mid <= lo || mid >= hi {
                break;
            }
            if self.lambda(mid) > lambda {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        0.5 * (lo + hi)
    }

    /// `sigma / alpha`: the noise level of `x / alpha` (the VE view of any schedule).
    fn sigma_over_alpha(&self, t: f64) -> f64 {
        self.sigma(t) / self.alpha(t)
    }

    /// The [`NoiseLevel`] at `t`, with `t` itself as the model's time input.
    fn level(&self, t: f64) -> NoiseLevel {
        NoiseLevel::new(t, self.alpha(t), self.sigma(t))
    }
}

impl<S: NoiseSchedule + ?Sized> NoiseSchedule for &S {
    fn alpha(&self, t: f64) -> f64 {
        (**self).alpha(t)
    }
    fn sigma(&self, t: f64) -> f64 {
        (**self).sigma(t)
    }
    fn t_range(&self) -> (f64, f64) {
        (**self).t_range()
    }
    fn convention(&self) -> Convention {
        (**self).convention()
    }
    fn lambda(&self, t: f64) -> f64 {
        (**self).lambda(t)
    }
    fn t_of_lambda(&self, lambda: f64) -> f64 {
        (**self).t_of_lambda(lambda)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Cosine;
    impl NoiseSchedule for Cosine {
        fn alpha(&self, t: f64) -> f64 {
            (t * std::f64::consts::FRAC_PI_2).cos()
        }
        fn sigma(&self, t: f64) -> f64 {
            (t * std::f64::consts::FRAC_PI_2).sin()
        }
        fn t_range(&self) -> (f64, f64) {
            (1e-3, 0.999)
        }
        fn convention(&self) -> Convention {
            Convention::VariancePreserving
        }
    }

    #[test]
    fn default_inverse_matches_closed_form() {
        // lambda = -ln tan(pi t / 2)  =>  t = (2/pi) atan(exp(-lambda)).
        for &t in &[0.01, 0.3, 0.5, 0.9] {
            let l = Cosine.lambda(t);
            let closed = std::f64::consts::FRAC_2_PI * (-l).exp().atan();
            assert!((Cosine.t_of_lambda(l) - t).abs() < 1e-12);
            assert!((closed - t).abs() < 1e-12);
        }
    }
}
