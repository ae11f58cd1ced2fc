//! EDICT (Wallace, Gokul & Naik 2023, "Exact Diffusion Inversion via Coupled
//! Transformations"): two coupled DDIM sequences `(x, y)`, each updated with the model
//! evaluated on the other, then mixed with weight `p`. Every sub-step is affine in the
//! sequence it updates given the other, so the whole step inverts exactly.
//!
//! Step from level `k` to `k + 1`, with the DDIM map `x -> a x + b eps`:
//!
//! ```text
//! x_i = a x + b eps(y)        y_i = a y + b eps(x_i)
//! x'  = p x_i + (1 - p) y_i   y'  = p y_i + (1 - p) x'
//! ```

use diffusion_core::{Denoiser, Tensor};

use crate::error::{InversionError, Result, invalid_param};
use crate::grid::{Grid, ddim_coefficients, epsilon};

/// An EDICT sampler with mixing parameter `p` in `(0, 1]` (the paper uses 0.93).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Edict {
    p: f64,
}

/// The coupled pair EDICT carries.
#[derive(Clone, Debug, PartialEq)]
pub struct EdictPair<T> {
    pub x: T,
    pub y: T,
}

/// An inverted latent: the pair at the top of `grid`, with the grid and `p` it was
/// inverted on (sampling refuses others).
#[derive(Clone, Debug, PartialEq)]
pub struct EdictLatent<T> {
    pub grid: Grid,
    pub p: f64,
    pub pair: EdictPair<T>,
}

impl Edict {
    /// Fails unless `0 < p <= 1` (p = 0 discards a sequence and cannot be inverted).
    pub fn new(p: f64) -> Result<Self> {
        if !(p > 0.0 && p <= 1.0) {
            return Err(invalid_param("p", p, "EDICT needs a mixing weight 0 < p <= 1"));
        }
        Ok(Self { p })
    }

    pub fn p(&self) -> f64 {
        self.p
    }

    /// Samples from `noise` (both sequences start there); returns the final pair.
    pub fn sample<T: Tensor, D: Denoiser<T> + ?Sized>(
        &self,
        model: &D,
        grid: &Grid,
        noise: &T,
    ) -> Result<EdictPair<T>> {
        self.run_forward(
            model,
            grid,
            EdictPair {
                x: noise.clone(),
                y: noise.clone(),
            },
        )
    }

    /// Samples from an inverted latent; fails if `grid` or `p` differ from the inversion's.
    pub fn sample_from<T: Tensor, D: Denoiser<T> + ?Sized>(
        &self,
        model: &D,
        grid: &Grid,
        latent: &EdictLatent<T>,
    ) -> Result<EdictPair<T>> {
        latent.grid.check_same(grid)?;
        if latent.p != self.p {
            return Err(InversionError::ParameterMismatch {
                name: "p",
                inverted: latent.p,
                sampling: self.p,
            });
        }
        self.run_forward(model, grid, latent.pair.clone())
    }

    fn run_forward<T: Tensor, D: Denoiser<T> + ?Sized>(
        &self,
        model: &D,
        grid: &Grid,
        mut pair: EdictPair<T>,
    ) -> Result<EdictPair<T>> {
        diffusion_core::tensor::check_same_shape("EDICT pair", pair.x.shape(), pair.y.shape())?;
        let p = self.p;
        for (k, w) in grid.levels().windows(2).enumerate() {
            let (a, b) = ddim_coefficients(w[0], w[1]);
            let mut x_i = epsilon(model, &pair.y, w[0], k)?;
            x_i.lincomb(b, &[(a, &pair.x)], None)?;
            let mut y_i = epsilon(model, &x_i, w[0], k)?;
            y_i.lincomb(b, &[(a, &pair.y)], None)?;
            // x' into x_i's buffer, then y' into y_i's.
            x_i.lincomb(p, &[(1.0 - p, &y_i)], None)?;
            y_i.lincomb(p, &[(1.0 - p, &x_i)], None)?;
            pair = EdictPair { x: x_i, y: y_i };
        }
        Ok(pair)
    }

    /// Exact inversion of a final pair back to the top of `grid`.
    pub fn invert_pair<T: Tensor, D: Denoiser<T> + ?Sized>(
        &self,
        model: &D,
        grid: &Grid,
        pair: &EdictPair<T>,
    ) -> Result<EdictLatent<T>> {
        diffusion_core::tensor::check_same_shape("EDICT pair", pair.x.shape(), pair.y.shape())?;
        let p = self.p;
        let lv = grid.levels();
        let (mut x, mut y) = (pair.x.clone(), pair.y.clone());
        for k in (0..grid.steps()).rev() {
            let (a, b) = ddim_coefficients(lv[k], lv[k + 1]);
            // y_i = (y' - (1 - p) x') / p into y's buffer; x_i = (x' - (1 - p) y_i) / p into x's.
            y.lincomb(1.0 / p, &[(-(1.0 - p) / p, &x)], None)?;
            x.lincomb(1.0 / p, &[(-(1.0 - p) / p, &y)], None)?;
            // y = (y_i - b eps(x_i)) / a, then x = (x_i - b eps(y)) / a.
            let mut y_prev = epsilon(model, &x, lv[k], k)?;
            y_prev.lincomb(-b / a, &[(1.0 / a, &y)], None)?;
            let mut x_prev = epsilon(model, &y_prev, lv[k], k)?;
            x_prev.lincomb(-b / a, &[(1.0 / a, &x)], None)?;
            x = x_prev;
            y = y_prev;
        }
        Ok(EdictLatent {
            grid: grid.clone(),
            p,
            pair: EdictPair { x, y },
        })
    }

    /// Inverts a data point (both sequences start at `x`).
    pub fn invert<T: Tensor, D: Denoiser<T> + ?Sized>(
        &self,
        model: &D,
        grid: &Grid,
        x: &T,
    ) -> Result<EdictLatent<T>> {
        self.invert_pair(
            model,
            grid,
            &EdictPair {
                x: x.clone(),
                y: x.clone(),
            },
        )
    }
}
