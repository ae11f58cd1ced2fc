//! A 3-D volume with its voxel-to-world affine, `.npy` I/O and intensity windowing.
//!
//! Axes are NIfTI's `(x, y, z)` (`i, j, k` voxel indices); an axial slice is `[.., .., k]`,
//! coronal `[.., j, ..]`, sagittal `[i, .., ..]`.

use std::path::Path;

use ndarray::{Array3, ArrayD, Ix3};

use crate::error::{Result, check_finite, shape};

/// Voxel intensities (f32) and the 4x4 voxel-to-world affine (row-major, last row
/// `[0, 0, 0, 1]`).
#[derive(Clone, Debug, PartialEq)]
pub struct Volume {
    pub data: Array3<f32>,
    pub affine: [[f64; 4]; 4],
}

impl Volume {
    /// A volume with an axis-aligned affine of the given voxel size (mm) and no offset.
    pub fn new(data: Array3<f32>, voxel_size: [f64; 3]) -> Self {
        let mut affine = [[0.0; 4]; 4];
        for (a, &v) in voxel_size.iter().enumerate() {
            affine[a][a] = v;
        }
        affine[3][3] = 1.0;
        Self { data, affine }
    }

    /// The voxel size along each voxel axis: the lengths of the affine's first three columns.
    pub fn voxel_size(&self) -> [f64; 3] {
        std::array::from_fn(|c| (0..3).map(|r| self.affine[r][c].powi(2)).sum::<f64>().sqrt())
    }

    pub fn shape(&self) -> [usize; 3] {
        let s = self.data.shape();
        [s[0], s[1], s[2]]
    }

    /// Fails on NaN or infinite voxels.
    pub fn check_finite(&self) -> Result<()> {
        check_finite("volume", self.data.iter())
    }
}

/// Reads a 3-D `.npy` volume of dtype `u8`, `f32` or `f64` as f32 (unit voxels).
pub fn read_npy_volume(path: impl AsRef<Path>) -> Result<Volume> {
    use diffusion_testbed::io::read_npy;
    let path = path.as_ref();
    let data: ArrayD<f32> = match read_npy::<f32>(path) {
        Ok(a) => a,
        Err(e) if e.to_string().contains("dtype") => match read_npy::<f64>(path) {
            Ok(a) => a.mapv(|v| v as f32),
            Err(_) => read_npy::<u8>(path)?.mapv(f32::from),
        },
        Err(e) => return Err(e.into()),
    };
    let got = data.shape().to_vec();
    let data = data
        .into_dimensionality::<Ix3>()
        .map_err(|_| shape("npy volume", "[x, y, z]", &got))?;
    Ok(Volume::new(data, [1.0; 3]))
}

/// Writes the voxels as a float32 `.npy` atomically (the affine is not stored).
pub fn write_npy_volume(path: impl AsRef<Path>, volume: &Volume) -> Result<()> {
    Ok(diffusion_testbed::io::write_npy(
        path,
        &volume.data.clone().into_dyn(),
    )?)
}

/// Intensity window: `center +- width / 2` mapped linearly to `[0, 1]`, clamped outside.
pub fn window(data: &Array3<f32>, center: f32, width: f32) -> Array3<f32> {
    let lo = center - width / 2.0;
    let w = width.max(f32::MIN_POSITIVE);
    data.mapv(|v| ((v - lo) / w).clamp(0.0, 1.0))
}

/// The window spanning the data's finite minimum to maximum, as `(center, width)`.
pub fn full_window(data: &Array3<f32>) -> (f32, f32) {
    let (lo, hi) = data
        .iter()
        .filter(|v| v.is_finite())
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    if lo > hi {
        return (0.5, 1.0);
    }
    ((lo + hi) / 2.0, (hi - lo).max(f32::MIN_POSITIVE))
}
