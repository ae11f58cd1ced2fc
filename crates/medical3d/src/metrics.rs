//! PSNR and SSIM per slice orientation (axial, coronal, sagittal), averaged over slices.

use ndarray::{Array3, ArrayView2, Axis};

use crate::error::{Result, shape};

/// A slice orientation of an `[x, y, z]` volume.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plane {
    /// Slices `[.., .., k]`.
    Axial,
    /// Slices `[.., j, ..]`.
    Coronal,
    /// Slices `[i, .., ..]`.
    Sagittal,
}

impl Plane {
    pub const ALL: [Plane; 3] = [Plane::Axial, Plane::Coronal, Plane::Sagittal];

    fn axis(self) -> Axis {
        match self {
            Plane::Axial => Axis(2),
            Plane::Coronal => Axis(1),
            Plane::Sagittal => Axis(0),
        }
    }
}

fn check(a: &Array3<f64>, b: &Array3<f64>) -> Result<()> {
    if a.shape() != b.shape() {
        return Err(shape("metric", format!("{:?}", b.shape()), a.shape()));
    }
    Ok(())
}

/// PSNR of one image against a reference, `10 log10(range^2 / mse)` (capped at 100 dB
/// for identical images).
pub fn psnr_2d(x: ArrayView2<'_, f64>, reference: ArrayView2<'_, f64>, data_range: f64) -> f64 {
    let mse = x
        .iter()
        .zip(reference.iter())
        .map(|(a, b)| (a - b).powi(2))
        .sum::<f64>()
        / x.len().max(1) as f64;
    if mse == 0.0 {
        100.0
    } else {
        (10.0 * (data_range * data_range / mse).log10()).min(100.0)
    }
}

/// SSIM of one image (Wang et al. 2004) with scikit-image's defaults: 7x7 uniform
/// window, `K1 = 0.01`, `K2 = 0.03`, sample covariances, mean over the valid windows.
pub fn ssim_2d(x: ArrayView2<'_, f64>, reference: ArrayView2<'_, f64>, data_range: f64) -> f64 {
    let (h, w) = x.dim();
    let win = 7usize;
    if h < win || w < win {
        return f64::NAN;
    }
    let (c1, c2) = ((0.01 * data_range).powi(2), (0.03 * data_range).powi(2));
    let np = (win * win) as f64;
    let cov_norm = np / (np - 1.0);
    let mut total = 0.0;
    let mut count = 0usize;
    for i in 0..=h - win {
        for j in 0..=w - win {
            let (mut sx, mut sy, mut sxx, mut syy, mut sxy) = (0.0, 0.0, 0.0, 0.0, 0.0);
            for di in 0..win {
                for dj in 0..win {
                    let a = x[[i + di, j + dj]];
                    let b = reference[[i + di, j + dj]];
                    sx += a;
                    sy += b;
                    sxx += a * a;
                    syy += b * b;
                    sxy += a * b;
                }
            }
            let (mx, my) = (sx / np, sy / np);
            let vx = cov_norm * (sxx / np - mx * mx);
            let vy = cov_norm * (syy / np - my * my);
            let vxy = cov_norm * (sxy / np - mx * my);
            total += ((2.0 * mx * my + c1) * (2.0 * vxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2));
            count += 1;
        }
    }
    total / count as f64
}

/// The slices of one orientation whose reference is not constant (empty slices beyond
/// the object would score 100 dB for any method that returns zero there).
fn content_slices(reference: &Array3<f64>, ax: Axis) -> Vec<usize> {
    (0..reference.len_of(ax))
        .filter(|&k| {
            let s = reference.index_axis(ax, k);
            let (lo, hi) = s.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
                (a.min(v), b.max(v))
            });
            hi > lo
        })
        .collect()
}

fn mean_over_slices(
    x: &Array3<f64>,
    reference: &Array3<f64>,
    plane: Plane,
    f: impl Fn(ArrayView2<'_, f64>, ArrayView2<'_, f64>) -> f64,
) -> Result<f64> {
    check(x, reference)?;
    let ax = plane.axis();
    let ks = content_slices(reference, ax);
    if ks.is_empty() {
        return Err(crate::error::invalid("reference", "every slice is constant"));
    }
    Ok(ks
        .iter()
        .map(|&k| f(x.index_axis(ax, k), reference.index_axis(ax, k)))
        .sum::<f64>()
        / ks.len() as f64)
}

/// Mean PSNR over the (non-constant reference) slices of one orientation.
pub fn psnr(x: &Array3<f64>, reference: &Array3<f64>, plane: Plane, data_range: f64) -> Result<f64> {
    mean_over_slices(x, reference, plane, |a, b| psnr_2d(a, b, data_range))
}

/// Mean SSIM over the (non-constant reference) slices of one orientation.
pub fn ssim(x: &Array3<f64>, reference: &Array3<f64>, plane: Plane, data_range: f64) -> Result<f64> {
    mean_over_slices(x, reference, plane, |a, b| ssim_2d(a, b, data_range))
}

/// `[psnr, ssim]` for axial, coronal, sagittal.
pub fn three_planes(x: &Array3<f64>, reference: &Array3<f64>, data_range: f64) -> Result<[[f64; 2]; 3]> {
    let mut out = [[0.0; 2]; 3];
    for (o, plane) in out.iter_mut().zip(Plane::ALL) {
        *o = [
            psnr(x, reference, plane, data_range)?,
            ssim(x, reference, plane, data_range)?,
        ];
    }
    Ok(out)
}
