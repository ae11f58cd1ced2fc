//! A 2-D slice prior with an exact denoiser: the training slices blurred by an isotropic
//! Gaussian of width `tau` (a kernel density estimate), whose posterior mean
//! `E[x0 | x_t]` is a closed form. It needs no training and serves as the reference prior
//! of the reconstruction tests and studies; any `Denoiser` over `[batch, 1, nx, ny]`
//! (for example a UNet from `diffusion-nn`) can take its place.

use diffusion_core::{CoreError, Denoiser, NoiseLevel, Parameterization};
use ndarray::{Array3, ArrayD, Axis, IxDyn};
use rayon::prelude::*;

use crate::error::{Result, invalid};

/// Slices in model scale (`[-1, 1]`), each row-major `[nx, ny]`.
#[derive(Clone, Debug)]
pub struct KdeSlicePrior {
    slices: Vec<Vec<f64>>,
    nx: usize,
    ny: usize,
    tau: f64,
}

/// Volume intensity in `[0, 1]` to model scale `[-1, 1]`.
pub fn to_model_scale(v: f64) -> f64 {
    2.0 * v - 1.0
}

/// Model scale back to volume intensity.
pub fn from_model_scale(x: f64) -> f64 {
    (x + 1.0) / 2.0
}

impl KdeSlicePrior {
    /// The axial slices of `volume` (intensities in `[0, 1]`) at the given `z` indices,
    /// each also mirrored left-right, with kernel width `tau` (model scale).
    pub fn from_axial(volume: &Array3<f64>, zs: impl IntoIterator<Item = usize>, tau: f64) -> Result<Self> {
        if !(tau > 0.0 && tau.is_finite()) {
            return Err(invalid("kernel width", format!("tau {tau} must be > 0")));
        }
        let (nx, ny, nz) = volume.dim();
        let mut slices = Vec::new();
        for k in zs {
            if k >= nz {
                return Err(invalid("slice index", format!("{k} >= {nz}")));
            }
            let s = volume.index_axis(Axis(2), k);
            slices.push(s.iter().map(|&v| to_model_scale(v)).collect());
            slices.push(
                (0..nx)
                    .flat_map(|i| (0..ny).map(move |j| (i, j)))
                    .map(|(i, j)| to_model_scale(s[[nx - 1 - i, j]]))
                    .collect(),
            );
        }
        if slices.is_empty() {
            return Err(invalid("training slices", "none given"));
        }
        Ok(Self { slices, nx, ny, tau })
    }

    pub fn len(&self) -> usize {
        self.slices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slices.is_empty()
    }

    /// The posterior mean of one flattened slice.
    fn denoise(&self, x: &[f64], alpha: f64, sigma: f64) -> Vec<f64> {
        let var = alpha * alpha * self.tau * self.tau + sigma * sigma;
        let logw: Vec<f64> = self
            .slices
            .iter()
            .map(|s| -x.iter().zip(s).map(|(a, b)| (a - alpha * b).powi(2)).sum::<f64>() / (2.0 * var))
            .collect();
        let max = logw.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let w: Vec<f64> = logw.iter().map(|l| (l - max).exp()).collect();
        let total: f64 = w.iter().sum();
        let gain = alpha * self.tau * self.tau / var;
        let mut out = vec![0.0; x.len()];
        for (s, wi) in self.slices.iter().zip(&w) {
            let wi = wi / total;
            if wi < 1e-300 {
                continue;
            }
            for ((o, &sv), &xv) in out.iter_mut().zip(s).zip(x) {
                *o += wi * (sv + gain * (xv - alpha * sv));
            }
        }
        out
    }
}

impl Denoiser<ArrayD<f32>> for KdeSlicePrior {
    fn parameterization(&self) -> Parameterization {
        Parameterization::Sample
    }

    fn predict(&self, x: &ArrayD<f32>, level: NoiseLevel) -> diffusion_core::Result<ArrayD<f32>> {
        let s = x.shape();
        if s.len() != 4 || s[1] != 1 || s[2] != self.nx || s[3] != self.ny {
            return Err(CoreError::ShapeMismatch {
                context: "slice prior input",
                expected: vec![s.first().copied().unwrap_or(0), 1, self.nx, self.ny],
                got: s.to_vec(),
            });
        }
        let per = self.nx * self.ny;
        let flat: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
        let out: Vec<f32> = flat
            .par_chunks(per)
            .flat_map_iter(|item| {
                self.denoise(item, level.alpha, level.sigma)
                    .into_iter()
                    .map(|v| v as f32)
            })
            .collect();
        Ok(ArrayD::from_shape_vec(IxDyn(s), out).expect("same size"))
    }
}
