use diffusion_core::{Convention, NoiseSchedule};

/// The variance-exploding SDE (Song et al. 2021): `alpha = 1`,
/// `sigma(t) = sigma_min (sigma_max / sigma_min)^t`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ve {
    pub sigma_min: f64,
    pub sigma_max: f64,
}

impl Default for Ve {
    fn default() -> Self {
        Self {
            sigma_min: 0.01,
            sigma_max: 50.0,
        }
    }
}

impl NoiseSchedule for Ve {
    fn alpha(&self, _: f64) -> f64 {
        1.0
    }
    fn sigma(&self, t: f64) -> f64 {
        self.sigma_min * (self.sigma_max / self.sigma_min).powf(t)
    }
    fn t_range(&self) -> (f64, f64) {
        (0.0, 1.0)
    }
    fn convention(&self) -> Convention {
        Convention::VarianceExploding
    }
    fn t_of_lambda(&self, lambda: f64) -> f64 {
        ((-lambda).exp() / self.sigma_min).ln() / (self.sigma_max / self.sigma_min).ln()
    }
}

/// EDM (Karras et al. 2022): time is sigma (`alpha = 1`, `sigma(t) = t`), with the
/// network preconditioning of Table 1 and the rho-spaced sampling grid.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Edm {
    pub sigma_min: f64,
    pub sigma_max: f64,
    pub sigma_data: f64,
    pub rho: f64,
}

impl Default for Edm {
    fn default() -> Self {
        Self {
            sigma_min: 0.002,
            sigma_max: 80.0,
            sigma_data: 0.5,
            rho: 7.0,
        }
    }
}

/// EDM's preconditioning coefficients: `D(x) = c_skip x + c_out F(c_in x, c_noise)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EdmPrecond {
    pub c_skip: f64,
    pub c_out: f64,
    pub c_in: f64,
    pub c_noise: f64,
}

impl EdmPrecond {
    /// Table 1 of Karras et al. (2022), "EDM" column, for noise level `sigma` and data
    /// standard deviation `sigma_data` (both must be positive and finite).
    pub fn new(sigma: f64, sigma_data: f64) -> crate::Result<Self> {
        for (key, v) in [("sigma", sigma), ("sigma_data", sigma_data)] {
            if !(v.is_finite() && v > 0.0) {
                return Err(crate::error::invalid(
                    key,
                    format!("must be positive and finite, got {v}"),
                ));
            }
        }
        Ok(Self::unchecked(sigma, sigma_data))
    }

    fn unchecked(sigma: f64, sigma_data: f64) -> Self {
        let sd2 = sigma_data * sigma_data;
        let s2 = sigma * sigma;
        Self {
            c_skip: sd2 / (s2 + sd2),
            c_out: sigma * sigma_data / (s2 + sd2).sqrt(),
            c_in: 1.0 / (s2 + sd2).sqrt(),
            c_noise: 0.25 * sigma.ln(),
        }
    }

    /// EDM's loss weight `lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2`.
    pub fn loss_weight(sigma: f64, sigma_data: f64) -> f64 {
        (sigma * sigma + sigma_data * sigma_data) / (sigma * sigma_data).powi(2)
    }
}

impl Edm {
    pub fn precond(&self, sigma: f64) -> EdmPrecond {
        EdmPrecond::unchecked(sigma, self.sigma_data)
    }

    /// EDM's loss weight at `sigma` (see [`EdmPrecond::loss_weight`]).
    pub fn loss_weight(&self, sigma: f64) -> f64 {
        EdmPrecond::loss_weight(sigma, self.sigma_data)
    }

    /// The sampling grid of eq. 5: `n` sigmas from sigma_max to sigma_min, then 0.
    pub fn sampling_sigmas(&self, n: usize) -> Vec<f64> {
        let mut s = crate::sigmas::karras_sigmas(self.sigma_min, self.sigma_max, self.rho, n);
        s.push(0.0);
        s
    }
}

impl NoiseSchedule for Edm {
    fn alpha(&self, _: f64) -> f64 {
        1.0
    }
    fn sigma(&self, t: f64) -> f64 {
        t
    }
    fn t_range(&self) -> (f64, f64) {
        (self.sigma_min, self.sigma_max)
    }
    fn convention(&self) -> Convention {
        Convention::VarianceExploding
    }
    fn t_of_lambda(&self, lambda: f64) -> f64 {
        (-lambda).exp()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edm_preconditioning_is_unit_variance() {
        let e = Edm::default();
        for sigma in [0.01, 0.5, 3.0, 80.0] {
            let p = e.precond(sigma);
            let sd2 = e.sigma_data.powi(2);
            // Var(c_in x) = 1 for x = y + n, Var y = sd^2, Var n = sigma^2.
            assert!((p.c_in.powi(2) * (sd2 + sigma * sigma) - 1.0).abs() < 1e-12);
            // Effective training target has unit variance: c_out^2 = Var(y - c_skip x).
            let target_var = (1.0 - p.c_skip).powi(2) * sd2 + p.c_skip.powi(2) * sigma * sigma;
            assert!((p.c_out.powi(2) - target_var).abs() < 1e-10 * (1.0 + target_var));
            // lambda(sigma) = 1 / c_out^2.
            assert!((e.loss_weight(sigma) * p.c_out.powi(2) - 1.0).abs() < 1e-12);
        }
    }

    #[test]
    fn edm_grid_and_ve_inverse() {
        let g = Edm::default().sampling_sigmas(18);
        assert_eq!(g.len(), 19);
        assert!((g[0] - 80.0).abs() < 1e-9 && (g[17] - 0.002).abs() < 1e-12 && g[18] == 0.0);
        let ve = Ve::default();
        for t in [0.0, 0.3, 1.0] {
            assert!((ve.t_of_lambda(ve.lambda(t)) - t).abs() < 1e-12);
        }
    }
}
