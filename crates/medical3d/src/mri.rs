//! Cartesian compressed-sensing MRI: per axial slice, the orthonormal 2-D DFT followed by
//! a sampling mask. `A x = M F x` maps a real volume to k-space (zeros where not sampled);
//! its adjoint (as a map between real vector spaces) is `A^T y = Re(F^H M y)`, and the
//! zero-filled reconstruction is `A^T y`.

use std::sync::Arc;

use diffusion_core::{Element, Rng};
use ndarray::{Array2, Array3, Axis};
use rayon::prelude::*;
use rustfft::num_complex::Complex;
use rustfft::{Fft, FftNum, FftPlanner};

use crate::ct::{axial_slices, stack_axial};
use crate::error::{Result, invalid, shape};

/// A k-space sampling mask of one axial slice, `[kx, ky]` in FFT order (index 0 is the
/// zero frequency).
#[derive(Clone, Debug, PartialEq)]
pub struct KMask {
    pub sampled: Array2<bool>,
}

impl KMask {
    /// Every frequency sampled.
    pub fn full(nx: usize, ny: usize) -> Self {
        Self {
            sampled: Array2::from_elem((nx, ny), true),
        }
    }

    /// Whole `ky` lines at a subset of `kx` (phase-encoding) positions: the
    /// `round(nx * center_fraction)` lowest frequencies, plus randomly chosen others until
    /// `round(nx / acceleration)` lines are sampled (fastMRI's random mask, 4x with 8% and
    /// 8x with 4% centre).
    pub fn cartesian(
        nx: usize,
        ny: usize,
        acceleration: f64,
        center_fraction: f64,
        seed: u64,
    ) -> Result<Self> {
        if !(acceleration >= 1.0 && acceleration.is_finite()) {
            return Err(invalid("acceleration", format!("{acceleration} must be >= 1")));
        }
        if !(0.0..=1.0).contains(&center_fraction) {
            return Err(invalid(
                "center fraction",
                format!("{center_fraction} is outside [0, 1]"),
            ));
        }
        if nx == 0 || ny == 0 {
            return Err(invalid("mask", "empty k-space"));
        }
        let lines = ((nx as f64 / acceleration).round() as usize).clamp(1, nx);
        let center = ((nx as f64 * center_fraction).round() as usize).min(lines);
        // Frequencies by magnitude: 0, 1, -1, 2, -2, ...
        let mut by_freq: Vec<usize> = (0..nx).collect();
        by_freq.sort_by_key(|&i| (i.min(nx - i), i > nx / 2));
        let mut chosen: Vec<usize> = by_freq[..center].to_vec();
        let mut rest: Vec<usize> = by_freq[center..].to_vec();
        // Seeded Fisher-Yates on the remaining lines.
        let mut rng = Rng::new(seed);
        for i in (1..rest.len()).rev() {
            let j = ((rng.uniform() * (i + 1) as f64) as usize).min(i);
            rest.swap(i, j);
        }
        chosen.extend_from_slice(&rest[..lines - center]);
        let mut sampled = Array2::from_elem((nx, ny), false);
        for kx in chosen {
            sampled.row_mut(kx).fill(true);
        }
        Ok(Self { sampled })
    }

    /// Sampled fraction of k-space.
    pub fn fraction(&self) -> f64 {
        self.sampled.iter().filter(|s| **s).count() as f64 / self.sampled.len() as f64
    }
}

/// The CS-MRI operator of a mask (the same mask on every axial slice).
#[derive(Clone)]
pub struct MriOperator {
    mask: KMask,
}

impl std::fmt::Debug for MriOperator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MriOperator")
            .field("shape", &self.mask.sampled.shape())
            .finish()
    }
}

/// Orthonormal 2-D DFT (or its inverse) of a row-major `[nx, ny]` buffer in place.
pub fn fft2<A: FftNum>(data: &mut [Complex<A>], nx: usize, ny: usize, inverse: bool) {
    let mut planner = FftPlanner::<A>::new();
    let mut plan = |n: usize| -> Arc<dyn Fft<A>> {
        if inverse {
            planner.plan_fft_inverse(n)
        } else {
            planner.plan_fft_forward(n)
        }
    };
    let (row, col) = (plan(ny), plan(nx));
    for r in data.chunks_mut(ny) {
        row.process(r);
    }
    let mut column = vec![Complex::new(A::zero(), A::zero()); nx];
    for j in 0..ny {
        for i in 0..nx {
            column[i] = data[i * ny + j];
        }
        col.process(&mut column);
        for i in 0..nx {
            data[i * ny + j] = column[i];
        }
    }
    let scale = A::from_f64(1.0 / ((nx * ny) as f64).sqrt()).expect("finite scale");
    for v in data.iter_mut() {
        *v = *v * scale;
    }
}

impl MriOperator {
    pub fn new(mask: KMask) -> Self {
        Self { mask }
    }

    pub fn mask(&self) -> &KMask {
        &self.mask
    }

    fn check_volume(&self, s: &[usize]) -> Result<()> {
        let m = self.mask.sampled.shape();
        if s.len() != 3 || s[0] != m[0] || s[1] != m[1] || s[2] == 0 {
            return Err(shape("MRI volume", format!("[{}, {}, z]", m[0], m[1]), s));
        }
        Ok(())
    }

    /// Masked k-space of every axial slice: `[nx, ny, z]` to `[z, kx, ky]`.
    pub fn forward<A: Element + FftNum>(&self, volume: &Array3<A>) -> Result<Array3<Complex<A>>> {
        self.check_volume(volume.shape())?;
        let (nx, ny, nz) = volume.dim();
        let slices = axial_slices(volume.view());
        let out: Vec<Vec<Complex<A>>> = slices
            .par_iter()
            .map(|img| {
                let mut k: Vec<Complex<A>> = img.iter().map(|&v| Complex::new(v, A::zero())).collect();
                fft2(&mut k, nx, ny, false);
                for (v, &s) in k.iter_mut().zip(self.mask.sampled.iter()) {
                    if !s {
                        *v = Complex::new(A::zero(), A::zero());
                    }
                }
                k
            })
            .collect();
        let flat: Vec<Complex<A>> = out.into_iter().flatten().collect();
        Ok(Array3::from_shape_vec((nz, nx, ny), flat).expect("sizes match"))
    }

    /// `Re(F^H M y)`: `[z, kx, ky]` to `[nx, ny, z]` (the zero-filled reconstruction).
    pub fn adjoint<A: Element + FftNum>(&self, kspace: &Array3<Complex<A>>) -> Result<Array3<A>> {
        let m = self.mask.sampled.shape();
        let s = kspace.shape();
        if s[1] != m[0] || s[2] != m[1] || s[0] == 0 {
            return Err(shape("MRI k-space", format!("[z, {}, {}]", m[0], m[1]), s));
        }
        let (nx, ny) = (m[0], m[1]);
        let slices: Vec<Vec<A>> = kspace
            .axis_iter(Axis(0))
            .into_par_iter()
            .map(|k| {
                let mut buf: Vec<Complex<A>> = k
                    .iter()
                    .zip(self.mask.sampled.iter())
                    .map(|(&v, &s)| if s { v } else { Complex::new(A::zero(), A::zero()) })
                    .collect();
                fft2(&mut buf, nx, ny, true);
                buf.into_iter().map(|c| c.re).collect()
            })
            .collect();
        Ok(stack_axial(&slices, nx, ny))
    }
}
