//! Parallel-beam CT, one axial slice at a time: a Joseph-style ray-driven projector, its
//! exact adjoint (the transpose of the same sparse matrix), sparse-view and limited-angle
//! geometries, and filtered back-projection with the ramp (Ram-Lak) filter.
//!
//! Volumes are `[x, y, z]` with unit pixels; sinograms are `[z, angle, detector]`.

use std::f64::consts::PI;

use diffusion_core::Element;
use ndarray::{Array3, ArrayView3, Axis};
use rayon::prelude::*;

use crate::error::{Result, invalid, shape};

/// Angles (radians) and detector of a parallel-beam scan of an `n x n` slice.
#[derive(Clone, Debug, PartialEq)]
pub struct ParallelBeam {
    /// Image side in pixels.
    pub n: usize,
    pub angles: Vec<f64>,
    /// Detector bins (unit spacing, centred on the rotation axis).
    pub n_det: usize,
    /// The angular weight of one view in filtered back-projection (`pi / views` for a
    /// half-turn scan).
    pub dtheta: f64,
}

impl ParallelBeam {
    /// The detector that covers the slice's diagonal.
    pub fn default_detector(n: usize) -> usize {
        (n as f64 * std::f64::consts::SQRT_2).ceil() as usize + 1
    }

    /// `views` angles evenly over the half turn `[0, pi)`.
    pub fn sparse_view(n: usize, views: usize) -> Result<Self> {
        Self::limited_angle(n, views, 180.0)
    }

    /// `views` angles evenly over `[0, range_deg)` degrees (180 is a full scan).
    pub fn limited_angle(n: usize, views: usize, range_deg: f64) -> Result<Self> {
        if !(range_deg > 0.0 && range_deg <= 180.0) {
            return Err(invalid(
                "angular range",
                format!("{range_deg} degrees is outside (0, 180]"),
            ));
        }
        if views == 0 {
            return Err(invalid("views", "need at least one view"));
        }
        let step = range_deg.to_radians() / views as f64;
        let angles = (0..views).map(|k| k as f64 * step).collect();
        Self::new(n, angles, Self::default_detector(n), step)
    }

    pub fn new(n: usize, angles: Vec<f64>, n_det: usize, dtheta: f64) -> Result<Self> {
        if n == 0 || n_det == 0 {
            return Err(invalid("geometry", "image and detector need at least one pixel"));
        }
        if angles.is_empty() || angles.iter().any(|a| !a.is_finite()) || !dtheta.is_finite() {
            return Err(invalid("geometry", "angles must be finite and non-empty"));
        }
        Ok(Self {
            n,
            angles,
            n_det,
            dtheta,
        })
    }
}

/// A sparse matrix in compressed rows, with f64 weights.
#[derive(Clone, Debug)]
struct Csr {
    start: Vec<usize>,
    col: Vec<u32>,
    val: Vec<f64>,
}

impl Csr {
    fn rows(&self) -> usize {
        self.start.len() - 1
    }

    fn mul<A: Element>(&self, x: &[A], out: &mut [A]) {
        for (r, o) in out.iter_mut().enumerate() {
            let mut acc = 0.0;
            for k in self.start[r]..self.start[r + 1] {
                acc += self.val[k] * x[self.col[k] as usize].as_f64();
            }
            *o = A::of_f64(acc);
        }
    }

    fn transpose(&self, cols: usize) -> Csr {
        let mut count = vec![0usize; cols + 1];
        for &c in &self.col {
            count[c as usize + 1] += 1;
        }
        for i in 0..cols {
            count[i + 1] += count[i];
        }
        let mut next = count.clone();
        let mut col = vec![0u32; self.col.len()];
        let mut val = vec![0.0; self.val.len()];
        for r in 0..self.rows() {
            for k in self.start[r]..self.start[r + 1] {
                let c = self.col[k] as usize;
                col[next[c]] = r as u32;
                val[next[c]] = self.val[k];
                next[c] += 1;
            }
        }
        Csr {
            start: count,
            col,
            val,
        }
    }
}

/// The projector of one geometry: `A` (slice to sinogram) and `A^T`, built once.
#[derive(Clone, Debug)]
pub struct CtOperator {
    geometry: ParallelBeam,
    a: Csr,
    at: Csr,
}

impl CtOperator {
    pub fn new(geometry: ParallelBeam) -> Self {
        let a = system_matrix(&geometry);
        let at = a.transpose(geometry.n * geometry.n);
        Self { geometry, a, at }
    }

    pub fn geometry(&self) -> &ParallelBeam {
        &self.geometry
    }

    fn check_volume(&self, s: &[usize]) -> Result<()> {
        let n = self.geometry.n;
        if s.len() != 3 || s[0] != n || s[1] != n || s[2] == 0 {
            return Err(shape("CT volume", format!("[{n}, {n}, z]"), s));
        }
        Ok(())
    }

    /// The sinogram shape `[z, views, detector]` of a volume with `nz` slices.
    pub fn sinogram_shape(&self, nz: usize) -> [usize; 3] {
        [nz, self.geometry.angles.len(), self.geometry.n_det]
    }

    /// Projects every axial slice: `[n, n, z]` to `[z, views, detector]`.
    pub fn forward<A: Element>(&self, volume: &Array3<A>) -> Result<Array3<A>> {
        self.check_volume(volume.shape())?;
        let [nz, v, d] = self.sinogram_shape(volume.shape()[2]);
        let mut sino = Array3::from_elem((nz, v, d), A::default());
        let slices = axial_slices(volume.view());
        sino.axis_iter_mut(Axis(0))
            .into_par_iter()
            .zip(slices.par_iter())
            .for_each(|(mut out, img)| {
                let out = out.as_slice_mut().expect("standard layout");
                self.a.mul(img, out);
            });
        Ok(sino)
    }

    /// The exact adjoint: `[z, views, detector]` to `[n, n, z]`.
    pub fn adjoint<A: Element>(&self, sino: &Array3<A>) -> Result<Array3<A>> {
        let s = sino.shape();
        let (v, d) = (self.geometry.angles.len(), self.geometry.n_det);
        if s[1] != v || s[2] != d || s[0] == 0 {
            return Err(shape("CT sinogram", format!("[z, {v}, {d}]"), s));
        }
        let n = self.geometry.n;
        let slices: Vec<Vec<A>> = sino
            .axis_iter(Axis(0))
            .into_par_iter()
            .map(|p| {
                let p = p.as_standard_layout();
                let mut img = vec![A::default(); n * n];
                self.at.mul(p.as_slice().expect("standard layout"), &mut img);
                img
            })
            .collect();
        Ok(stack_axial(&slices, n, n))
    }

    /// Filtered back-projection: each view convolved with the Ram-Lak kernel (Kak & Slaney
    /// eq. 3.61, unit detector spacing), back-projected by `A^T`, times the view weight.
    pub fn fbp<A: Element>(&self, sino: &Array3<A>) -> Result<Array3<A>> {
        let d = self.geometry.n_det;
        if sino.ndim() != 3 || sino.shape()[2] != d {
            return Err(shape("CT sinogram", format!("[z, views, {d}]"), sino.shape()));
        }
        let kernel: Vec<f64> = (0..d)
            .map(|k| match k {
                0 => 0.25,
                k if k % 2 == 1 => -1.0 / (PI * k as f64).powi(2),
                _ => 0.0,
            })
            .collect();
        let mut filtered = sino.mapv(|v| v.as_f64());
        filtered.lanes_mut(Axis(2)).into_iter().for_each(|mut lane| {
            let p: Vec<f64> = lane.to_vec();
            for (k, out) in lane.iter_mut().enumerate() {
                *out = (0..d).map(|l| kernel[k.abs_diff(l)] * p[l]).sum();
            }
        });
        let back = self.adjoint(&filtered)?;
        let w = self.geometry.dtheta;
        Ok(back.mapv(|v| A::of_f64(v * w)))
    }
}

/// Axial slices as contiguous row-major `[x, y]` buffers (index `x * ny + y`).
pub(crate) fn axial_slices<A: Element>(volume: ArrayView3<'_, A>) -> Vec<Vec<A>> {
    (0..volume.shape()[2])
        .into_par_iter()
        .map(|k| volume.index_axis(Axis(2), k).iter().copied().collect())
        .collect()
}

/// The inverse of [`axial_slices`].
pub(crate) fn stack_axial<A: Element>(slices: &[Vec<A>], nx: usize, ny: usize) -> Array3<A> {
    let nz = slices.len();
    Array3::from_shape_fn((nx, ny, nz), |(i, j, k)| slices[k][i * ny + j])
}

/// Joseph's method: along each ray, step through the rows (or columns, whichever the ray
/// crosses more steeply) and split the path length `1 / |cos|` between the two nearest
/// pixels by linear interpolation. Pixel `(i, j)` has centre `(i - c, j - c)`,
/// `c = (n - 1) / 2`; the ray of angle `theta` at detector offset `s` is
/// `x cos(theta) + y sin(theta) = s`.
fn system_matrix(g: &ParallelBeam) -> Csr {
    let n = g.n;
    let c = (n as f64 - 1.0) / 2.0;
    let cd = (g.n_det as f64 - 1.0) / 2.0;
    let rows: Vec<Vec<(u32, f64)>> = g
        .angles
        .par_iter()
        .flat_map_iter(|&theta| {
            let (sin, cos) = theta.sin_cos();
            (0..g.n_det).map(move |k| {
                let s = k as f64 - cd;
                let mut row = Vec::with_capacity(2 * n);
                let steep = cos.abs() >= sin.abs();
                let (a, b) = if steep { (cos, sin) } else { (sin, cos) };
                let scale = 1.0 / a.abs();
                for m in 0..n {
                    // Position along the crossed axis, then the fractional index across.
                    let fixed = m as f64 - c;
                    let u = (s - fixed * b) / a + c;
                    let i0 = u.floor();
                    let f = u - i0;
                    for (idx, w) in [(i0, 1.0 - f), (i0 + 1.0, f)] {
                        if w > 0.0 && idx >= 0.0 && idx < n as f64 {
                            let idx = idx as usize;
                            let pixel = if steep { idx * n + m } else { m * n + idx };
                            row.push((pixel as u32, w * scale));
                        }
                    }
                }
                row
            })
        })
        .collect();
    let mut start = Vec::with_capacity(rows.len() + 1);
    start.push(0);
    let (mut col, mut val) = (Vec::new(), Vec::new());
    for r in &rows {
        for &(p, w) in r {
            col.push(p);
            val.push(w);
        }
        start.push(col.len());
    }
    Csr { start, col, val }
}
