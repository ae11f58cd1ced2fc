//! The pieces of DiffusionMBIR's data step: conjugate gradient, soft-thresholding, the
//! z-difference operator and one ADMM iteration for
//! `min_x 1/2 |A x - b|^2 + lambda |D_z x|_1` whose split variables persist between calls.

use ndarray::{Array3, Axis, Zip, s};

use crate::error::{Result, shape};

/// `<a, b>` summed in a fixed order.
pub fn dot(a: &Array3<f64>, b: &Array3<f64>) -> f64 {
    a.iter().zip(b.iter()).map(|(x, y)| x * y).sum()
}

/// Solves `M x = b` for a symmetric positive (semi-)definite `M` given as a function, from
/// `x0`, for at most `iters` iterations or until `|r| <= tol |b|`. Returns the solution
/// and the iterations used.
pub fn conjugate_gradient(
    apply: &dyn Fn(&Array3<f64>) -> Result<Array3<f64>>,
    b: &Array3<f64>,
    x0: Array3<f64>,
    iters: usize,
    tol: f64,
) -> Result<(Array3<f64>, usize)> {
    if x0.shape() != b.shape() {
        return Err(shape("CG start", format!("{:?}", b.shape()), x0.shape()));
    }
    let mut x = x0;
    let mut r = b - &apply(&x)?;
    let mut p = r.clone();
    let mut rr = dot(&r, &r);
    let stop = tol * tol * dot(b, b);
    for it in 0..iters {
        if rr <= stop || rr == 0.0 {
            return Ok((x, it));
        }
        let mp = apply(&p)?;
        let pmp = dot(&p, &mp);
        if pmp <= 0.0 {
            return Ok((x, it));
        }
        let alpha = rr / pmp;
        x.scaled_add(alpha, &p);
        r.scaled_add(-alpha, &mp);
        let rr_new = dot(&r, &r);
        let beta = rr_new / rr;
        rr = rr_new;
        Zip::from(&mut p).and(&r).for_each(|p, &r| *p = r + beta * *p);
    }
    Ok((x, iters))
}

/// `sign(v) max(|v| - k, 0)`: the proximal map of `k |.|`.
pub fn soft_threshold(v: f64, k: f64) -> f64 {
    v.signum() * (v.abs() - k).max(0.0)
}

/// Forward differences along z: `[nx, ny, nz]` to `[nx, ny, nz - 1]`.
pub fn dz(x: &Array3<f64>) -> Array3<f64> {
    let nz = x.len_of(Axis(2));
    if nz < 2 {
        let (a, b, _) = x.dim();
        return Array3::zeros((a, b, 0));
    }
    &x.slice(s![.., .., 1..]) - &x.slice(s![.., .., ..nz - 1])
}

/// The adjoint of [`dz`]: `[nx, ny, nz - 1]` to `[nx, ny, nz]`.
pub fn dz_t(d: &Array3<f64>) -> Array3<f64> {
    let (a, b, m) = d.dim();
    let mut out = Array3::zeros((a, b, m + 1));
    out.slice_mut(s![.., .., 1..]).zip_mut_with(d, |o, &v| *o += v);
    out.slice_mut(s![.., .., ..m]).zip_mut_with(d, |o, &v| *o -= v);
    out
}

/// CG stops at this relative residual: on a semi-definite system (the MRI operator is a
/// projection) the iterations after convergence divide rounding noise by rounding noise.
const CG_TOL: f64 = 1e-10;

/// One ADMM iteration per call for `1/2 |A x - b|^2 + lambda |D_z x|_1`, with the
/// split `z = D_z x` and the scaled dual `w` kept across calls (DiffusionMBIR keeps them
/// across diffusion steps):
///
/// - `x = argmin 1/2 |A x - b|^2 + rho/2 |D_z x - z + w|^2`, by `cg_iters` CG iterations
///   started from the caller's estimate (the prior's denoised volume);
/// - `z = soft(D_z x + w, lambda / rho)`;
/// - `w = w + D_z x - z`.
///
/// With `rho = 0` the z-term is off: the x-update is CG on the data term alone.
#[derive(Clone, Debug)]
pub struct AdmmTvZ {
    pub rho: f64,
    pub lambda: f64,
    pub cg_iters: usize,
    /// Weight of an optional proximal term `mu/2 |x - x_init|^2` in the x-update (0 is
    /// DiffusionMBIR's update). It keeps the caller's estimate where `A` sees nothing.
    pub mu: f64,
    z: Option<Array3<f64>>,
    w: Option<Array3<f64>>,
}

impl AdmmTvZ {
    pub fn new(rho: f64, lambda: f64, cg_iters: usize) -> Result<Self> {
        if !(rho >= 0.0 && lambda >= 0.0 && rho.is_finite() && lambda.is_finite()) {
            return Err(crate::error::invalid(
                "ADMM weights",
                format!("rho {rho} and lambda {lambda} must be finite and >= 0"),
            ));
        }
        Ok(Self {
            rho,
            lambda,
            cg_iters,
            mu: 0.0,
            z: None,
            w: None,
        })
    }

    /// The split variables `(z, w)` (after at least one step).
    pub fn state(&self) -> Option<(&Array3<f64>, &Array3<f64>)> {
        Some((self.z.as_ref()?, self.w.as_ref()?))
    }

    /// One iteration: `normal` applies `A^T A`, `atb` is `A^T b`, `x_init` starts CG.
    pub fn step(
        &mut self,
        normal: &dyn Fn(&Array3<f64>) -> Result<Array3<f64>>,
        atb: &Array3<f64>,
        x_init: &Array3<f64>,
    ) -> Result<Array3<f64>> {
        if x_init.shape() != atb.shape() {
            return Err(shape("ADMM start", format!("{:?}", atb.shape()), x_init.shape()));
        }
        if self.rho == 0.0 {
            let (x, _) = conjugate_gradient(normal, atb, x_init.clone(), self.cg_iters, CG_TOL)?;
            return Ok(x);
        }
        let (nx, ny, nz) = atb.dim();
        let dshape = (nx, ny, nz.saturating_sub(1));
        let z = self.z.get_or_insert_with(|| Array3::zeros(dshape));
        if z.dim() != dshape {
            return Err(shape("ADMM state", format!("{dshape:?}"), x_init.shape()));
        }
        let w = self.w.get_or_insert_with(|| Array3::zeros(dshape));
        let (rho, mu) = (self.rho, self.mu);
        let mut rhs = atb + &(dz_t(&(&*z - &*w)) * rho);
        if mu > 0.0 {
            rhs.scaled_add(mu, x_init);
        }
        let system = |v: &Array3<f64>| -> Result<Array3<f64>> {
            let mut out = normal(v)? + dz_t(&dz(v)) * rho;
            if mu > 0.0 {
                out.scaled_add(mu, v);
            }
            Ok(out)
        };
        let (x, _) = conjugate_gradient(&system, &rhs, x_init.clone(), self.cg_iters, CG_TOL)?;
        let dx = dz(&x);
        let k = self.lambda / rho;
        Zip::from(&mut *z)
            .and(&dx)
            .and(&*w)
            .for_each(|z, &d, &w| *z = soft_threshold(d + w, k));
        Zip::from(&mut *w)
            .and(&dx)
            .and(&*z)
            .for_each(|w, &d, &z| *w += d - z);
        Ok(x)
    }
}

/// The proximal map of `lambda TV_z` at `y` (`A = I`), by `iters` ADMM iterations.
pub fn tv_z_denoise(y: &Array3<f64>, lambda: f64, rho: f64, iters: usize) -> Result<Array3<f64>> {
    let nz = y.len_of(Axis(2));
    let mut admm = AdmmTvZ::new(rho, lambda, nz + 1)?;
    let identity = |v: &Array3<f64>| -> Result<Array3<f64>> { Ok(v.clone()) };
    let mut x = y.clone();
    for _ in 0..iters {
        x = admm.step(&identity, y, &x)?;
    }
    Ok(x)
}
