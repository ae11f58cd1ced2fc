//! Seeded 2-D toy datasets for sampler comparisons.

use std::f64::consts::{PI, TAU};

use diffusion_core::Rng;
use ndarray::Array2;

use crate::error::{Result, TestbedError};
use crate::gmm::GaussianMixture;

/// A 2-D toy distribution. Every variant samples from an explicit [`Rng`].
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum ToyDataset {
    /// `count` equal-weight isotropic Gaussians with std `std` at angles `2 pi k / count`
    /// on a circle of `radius` (the classic "8 Gaussians"). Has an exact mixture form,
    /// see [`ToyDataset::gmm`].
    Ring { count: usize, radius: f64, std: f64 },
    /// Two interleaved half circles (scikit-learn's `make_moons` geometry: upper moon
    /// `(cos t, sin t)`, lower moon `(1 - cos t, 1/2 - sin t)`, `t ~ U(0, pi)`), plus
    /// isotropic Gaussian noise of std `noise`.
    TwoMoons { noise: f64 },
    /// The 2-D swiss roll `(t cos t, t sin t) * scale`, `t = 1.5 pi (1 + 2u)`,
    /// `u ~ U(0, 1)`, plus Gaussian noise of std `noise` (before scaling).
    SwissRoll { noise: f64, scale: f64 },
    /// Uniform on the 8 dark cells of a 4 x 4 board of unit cells covering `[-2, 2]^2`
    /// (cell (i, j) is dark when i + j is even); density 1/8 there, 0 elsewhere.
    Checkerboard,
}

impl ToyDataset {
    /// The defaults used across the project, by name: `rings`, `moons`, `swiss_roll`,
    /// `checkerboard`.
    pub fn from_name(name: &str) -> Result<Self> {
        Ok(match name {
            "rings" | "ring" | "8gaussians" => Self::Ring {
                count: 8,
                radius: 2.0,
                std: 0.1,
            },
            "moons" | "two_moons" => Self::TwoMoons { noise: 0.05 },
            "swiss_roll" | "swissroll" => Self::SwissRoll {
                noise: 0.25,
                scale: 0.2,
            },
            "checkerboard" => Self::Checkerboard,
            other => {
                return Err(TestbedError::invalid(
                    "dataset",
                    format!(
                        "unknown toy dataset {other:?} (expected rings, moons, swiss_roll or checkerboard)"
                    ),
                ));
            }
        })
    }

    /// The exact mixture form, for the datasets that have one (`Ring`).
    pub fn gmm(&self) -> Option<Result<GaussianMixture>> {
        match *self {
            Self::Ring { count, radius, std } => Some(ring_gmm(count, radius, std)),
            _ => None,
        }
    }

    /// `n` samples, `[n, 2]`.
    pub fn sample(&self, n: usize, rng: &mut Rng) -> Result<Array2<f64>> {
        let mut out = Array2::zeros((n, 2));
        match *self {
            Self::Ring { .. } => {
                let gmm = self.gmm().expect("a ring is a mixture")?;
                return Ok(gmm.sample(n, rng));
            }
            Self::TwoMoons { noise } => {
                check_scale("noise", noise)?;
                for mut row in out.rows_mut() {
                    let upper = rng.uniform() < 0.5;
                    let t = PI * rng.uniform();
                    let (x, y) = if upper {
                        (t.cos(), t.sin())
                    } else {
                        (1.0 - t.cos(), 0.5 - t.sin())
                    };
                    row[0] = x + noise * rng.normal();
                    row[1] = y + noise * rng.normal();
                }
            }
            Self::SwissRoll { noise, scale } => {
                check_scale("noise", noise)?;
                check_scale("scale", scale)?;
                for mut row in out.rows_mut() {
                    let t = 1.5 * PI * (1.0 + 2.0 * rng.uniform());
                    row[0] = scale * (t * t.cos() + noise * rng.normal());
                    row[1] = scale * (t * t.sin() + noise * rng.normal());
                }
            }
            Self::Checkerboard => {
                for mut row in out.rows_mut() {
                    // Pick one of the 8 dark cells, then a uniform point inside it.
                    let cell = ((rng.uniform() * 8.0) as usize).min(7);
                    let i = cell / 2;
                    let j = 2 * (cell % 2) + (i % 2);
                    row[0] = -2.0 + i as f64 + rng.uniform();
                    row[1] = -2.0 + j as f64 + rng.uniform();
                }
            }
        }
        Ok(out)
    }
}

fn check_scale(name: &'static str, v: f64) -> Result<()> {
    if v.is_finite() && v >= 0.0 {
        Ok(())
    } else {
        Err(TestbedError::invalid(
            name,
            format!("{v} (must be finite and >= 0)"),
        ))
    }
}

/// `count` equal-weight isotropic Gaussians on a circle (see [`ToyDataset::Ring`]).
pub fn ring_gmm(count: usize, radius: f64, std: f64) -> Result<GaussianMixture> {
    if count == 0 {
        return Err(TestbedError::invalid(
            "count",
            "a ring needs at least one component",
        ));
    }
    let means = (0..count)
        .map(|k| {
            let a = TAU * k as f64 / count as f64;
            vec![radius * a.cos(), radius * a.sin()]
        })
        .collect();
    GaussianMixture::isotropic(vec![1.0 / count as f64; count], means, &vec![std; count])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_samples() {
        for name in ["rings", "moons", "swiss_roll", "checkerboard"] {
            let d = ToyDataset::from_name(name).unwrap();
            let a = d.sample(100, &mut Rng::new(5)).unwrap();
            let b = d.sample(100, &mut Rng::new(5)).unwrap();
            let c = d.sample(100, &mut Rng::new(6)).unwrap();
            assert_eq!(a, b);
            assert_ne!(a, c);
            assert!(a.iter().all(|v| v.is_finite()));
        }
        assert!(ToyDataset::from_name("spirals").is_err());
    }

    #[test]
    fn checkerboard_fills_the_dark_cells_evenly() {
        let x = ToyDataset::Checkerboard.sample(80_000, &mut Rng::new(1)).unwrap();
        let mut counts = [[0usize; 4]; 4];
        for r in x.rows() {
            let (i, j) = ((r[0] + 2.0).floor() as usize, (r[1] + 2.0).floor() as usize);
            assert!((i + j) % 2 == 0, "sample {r} in a light cell");
            counts[i][j] += 1;
        }
        // Each dark cell holds 1/8 of the mass: 10000 +- 5 sd (sd ~ 94).
        for i in 0..4 {
            for j in 0..4 {
                if (i + j) % 2 == 0 {
                    assert!((counts[i][j] as f64 - 10_000.0).abs() < 470.0, "{counts:?}");
                }
            }
        }
    }

    #[test]
    fn noiseless_moons_and_roll_lie_on_their_curves() {
        let x = ToyDataset::TwoMoons { noise: 0.0 }
            .sample(500, &mut Rng::new(2))
            .unwrap();
        for r in x.rows() {
            let upper = (r[0] * r[0] + r[1] * r[1] - 1.0).abs() < 1e-12;
            let lower = ((r[0] - 1.0).powi(2) + (r[1] - 0.5).powi(2) - 1.0).abs() < 1e-12;
            assert!(upper || lower);
        }
        let y = ToyDataset::SwissRoll {
            noise: 0.0,
            scale: 1.0,
        }
        .sample(500, &mut Rng::new(3))
        .unwrap();
        for r in y.rows() {
            // radius == angle (mod 2 pi) on the roll.
            let t = r[0].hypot(r[1]);
            assert!((1.5 * PI - 1e-9..=4.5 * PI + 1e-9).contains(&t));
            assert!((t.cos() - r[0] / t).abs() < 1e-9 && (t.sin() - r[1] / t).abs() < 1e-9);
        }
    }

    #[test]
    fn ring_matches_its_mixture() {
        let g = ring_gmm(8, 4.0, 0.3).unwrap();
        assert!((g.mean(2)[1] - 4.0).abs() < 1e-15 && g.mean(2)[0].abs() < 1e-15);
        let x = ToyDataset::Ring {
            count: 8,
            radius: 4.0,
            std: 0.3,
        }
        .sample(20_000, &mut Rng::new(4))
        .unwrap();
        let r: f64 = x.rows().into_iter().map(|r| r[0].hypot(r[1])).sum::<f64>() / 20_000.0;
        // E|x| ~ radius + std^2 / (2 radius) for std << radius.
        assert!((r - (4.0 + 0.09 / 8.0)).abs() < 0.01, "{r}");
        assert!(
            ToyDataset::TwoMoons { noise: -1.0 }
                .sample(1, &mut Rng::new(0))
                .is_err()
        );
        assert!(ring_gmm(0, 1.0, 1.0).is_err());
    }
}
