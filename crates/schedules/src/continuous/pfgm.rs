use rand_distr::{Beta, Distribution};

use diffusion_core::Rng;

use crate::error::{Result, invalid};

/// PFGM++ (Xu et al. 2023) with `D` augmented dimensions for `N`-dimensional data.
/// It is tied to EDM by `r = sigma sqrt(D)`; as `D -> infinity` it becomes EDM.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PfgmPlusPlus {
    pub aug_dim: f64,
    pub data_dim: usize,
}

impl PfgmPlusPlus {
    pub fn new(aug_dim: f64, data_dim: usize) -> Result<Self> {
        if !(aug_dim.is_finite() && aug_dim > 2.0) {
            return Err(invalid(
                "aug_dim",
                format!("PFGM++ needs D > 2 for a finite prior variance, got {aug_dim}"),
            ));
        }
        if data_dim == 0 {
            return Err(invalid("data_dim", "must be at least 1"));
        }
        Ok(Self { aug_dim, data_dim })
    }

    pub fn r_of_sigma(&self, sigma: f64) -> f64 {
        sigma * self.aug_dim.sqrt()
    }

    /// `count` draws (row-major, `count x N`) from the perturbation kernel at radius `r`
    /// around the origin, `p_r(x) ∝ (|x|^2 + r^2)^(-(N + D)/2)`: the norm is
    /// `r sqrt(b / (1 - b))` with `b ~ Beta(N/2, D/2)`, the direction uniform.
    pub fn sample_prior(&self, r: f64, count: usize, rng: &mut Rng) -> Vec<f64> {
        let n = self.data_dim;
        let beta = Beta::new(n as f64 / 2.0, self.aug_dim / 2.0).expect("parameters validated in new");
        let mut out = vec![0.0; count * n];
        for row in out.chunks_mut(n) {
            rng.fill_normal(row);
            let norm = row.iter().map(|v| v * v).sum::<f64>().sqrt();
            let b: f64 = beta.sample(rng);
            let radius = r * (b / (1.0 - b)).sqrt();
            row.iter_mut().for_each(|v| *v *= radius / norm);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prior_second_moment_is_exact() {
        // E|x|^2 = r^2 E[b/(1-b)] = r^2 N / (D - 2) for b ~ Beta(N/2, D/2).
        let p = PfgmPlusPlus::new(128.0, 8).unwrap();
        let sigma = 2.0;
        let r = p.r_of_sigma(sigma);
        let count = 20_000;
        let x = p.sample_prior(r, count, &mut Rng::new(3));
        let m2 = x.iter().map(|v| v * v).sum::<f64>() / count as f64;
        let want = r * r * 8.0 / 126.0;
        assert!((m2 / want - 1.0).abs() < 0.03, "{m2} vs {want}");
        assert!(PfgmPlusPlus::new(2.0, 8).is_err());
    }
}
