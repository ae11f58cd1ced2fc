use diffusion_core::{Convention, NoiseSchedule};

use crate::discrete::softplus;

/// The linear VP SDE (Song et al. 2021): `beta(t) = beta_0 + t (beta_1 - beta_0)`,
/// `log alpha(t) = -t^2 (beta_1 - beta_0) / 4 - t beta_0 / 2`, on `[eps, 1]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinearVp {
    pub beta_0: f64,
    pub beta_1: f64,
    pub t_min: f64,
}

impl Default for LinearVp {
    fn default() -> Self {
        Self {
            beta_0: 0.1,
            beta_1: 20.0,
            t_min: 1e-3,
        }
    }
}

impl LinearVp {
    pub fn log_alpha(&self, t: f64) -> f64 {
        -0.25 * t * t * (self.beta_1 - self.beta_0) - 0.5 * t * self.beta_0
    }
}

impl NoiseSchedule for LinearVp {
    fn alpha(&self, t: f64) -> f64 {
        self.log_alpha(t).exp()
    }
    fn sigma(&self, t: f64) -> f64 {
        (-(2.0 * self.log_alpha(t)).exp_m1()).sqrt()
    }
    fn t_range(&self) -> (f64, f64) {
        (self.t_min, 1.0)
    }
    fn convention(&self) -> Convention {
        Convention::VariancePreserving
    }
    fn t_of_lambda(&self, lambda: f64) -> f64 {
        // Solve b t^2 / 2 + beta_0 t = log(1 + e^{-2 lambda}) for t >= 0.
        let tmp = softplus(-2.0 * lambda);
        let db = self.beta_1 - self.beta_0;
        if db.abs() < 1e-300 {
            return tmp / self.beta_0;
        }
        2.0 * tmp / ((self.beta_0 * self.beta_0 + 2.0 * db * tmp).sqrt() + self.beta_0)
    }
}

/// The cosine VP schedule of improved DDPM (Nichol & Dhariwal 2021) in continuous time,
/// `alpha(t) = cos((t + s)/(1 + s) pi/2) / cos(s/(1 + s) pi/2)`, s = 0.008.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CosineVp {
    pub s: f64,
    pub t_max: f64,
}

impl Default for CosineVp {
    fn default() -> Self {
        // DPM-Solver's t_max keeps log alpha finite.
        Self {
            s: 0.008,
            t_max: 0.9946,
        }
    }
}

impl CosineVp {
    pub fn log_alpha(&self, t: f64) -> f64 {
        let f = |t: f64| {
            ((t + self.s) / (1.0 + self.s) * std::f64::consts::FRAC_PI_2)
                .cos()
                .ln()
        };
        f(t) - f(0.0)
    }
}

impl NoiseSchedule for CosineVp {
    fn alpha(&self, t: f64) -> f64 {
        self.log_alpha(t).exp()
    }
    fn sigma(&self, t: f64) -> f64 {
        (-(2.0 * self.log_alpha(t)).exp_m1()).sqrt()
    }
    fn t_range(&self) -> (f64, f64) {
        (1e-3, self.t_max)
    }
    fn convention(&self) -> Convention {
        Convention::VariancePreserving
    }
    fn t_of_lambda(&self, lambda: f64) -> f64 {
        let log_alpha = -0.5 * softplus(-2.0 * lambda);
        let c0 = (self.s / (1.0 + self.s) * std::f64::consts::FRAC_PI_2).cos().ln();
        let t = 2.0 * (1.0 + self.s) / std::f64::consts::PI * (log_alpha + c0).exp().acos() - self.s;
        t.clamp(0.0, 1.0)
    }
}

/// The sub-VP SDE (Song et al. 2021): the linear VP's mean with `sigma = 1 - alpha^2`.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct SubVp {
    pub vp: LinearVp,
}

impl NoiseSchedule for SubVp {
    fn alpha(&self, t: f64) -> f64 {
        self.vp.alpha(t)
    }
    fn sigma(&self, t: f64) -> f64 {
        -(2.0 * self.vp.log_alpha(t)).exp_m1()
    }
    fn t_range(&self) -> (f64, f64) {
        self.vp.t_range()
    }
    fn convention(&self) -> Convention {
        Convention::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_vp_matches_the_integrated_beta() {
        let s = LinearVp::default();
        // log alpha = -1/2 int_0^t beta(u) du, by the midpoint rule on a fine grid.
        let t = 0.6;
        let n = 100_000;
        let h = t / n as f64;
        let integral: f64 = (0..n)
            .map(|i| s.beta_0 + (i as f64 + 0.5) * h * (s.beta_1 - s.beta_0))
            .sum::<f64>()
            * h;
        assert!((s.log_alpha(t) + 0.5 * integral).abs() < 1e-9);
        for t in [0.001, 0.2, 0.5, 1.0] {
            assert!((s.t_of_lambda(s.lambda(t)) - t).abs() < 1e-10);
            assert!((s.alpha(t).powi(2) + s.sigma(t).powi(2) - 1.0).abs() < 1e-12);
        }
    }

    #[test]
    fn cosine_vp_inverts_and_starts_clean() {
        let s = CosineVp::default();
        assert!((s.alpha(0.0) - 1.0).abs() < 1e-15);
        for t in [0.01, 0.3, 0.7, 0.99] {
            assert!((s.t_of_lambda(s.lambda(t)) - t).abs() < 1e-9, "{t}");
        }
    }

    #[test]
    fn sub_vp_variance_is_below_vp() {
        let (s, v) = (SubVp::default(), LinearVp::default());
        for t in [0.1, 0.5, 0.9] {
            assert!(s.sigma(t) < v.sigma(t));
            assert!((s.sigma(t) - v.sigma(t).powi(2)).abs() < 1e-12);
        }
        // The default bisection inverse works on it.
        assert!((s.t_of_lambda(s.lambda(0.4)) - 0.4).abs() < 1e-9);
    }
}
