//! BDIA (Zhang, Lewis & Kleijn 2023, "Exact diffusion inversion via bi-directional
//! integration approximation"): an exactly invertible sampler.
//!
//! With `Phi_{k->j}(x_k)` the base integrator's estimate of the state at level `j` from
//! `x_k` (one model call at `x_k`), BDIA steps
//!
//! `x_{k+1} = gamma x_{k-1} + G_k(x_k)`,
//! `G_k(x) = (1 - gamma) x + (Phi_{k->k+1}(x) - x) - gamma (Phi_{k->k-1}(x) - x)`,
//!
//! i.e. it replaces the last step's forward estimate by the backward estimate from
//! `x_k`. Because `G_k` depends on `x_k` alone, `x_{k-1} = (x_{k+1} - G_k(x_k)) / gamma`
//! recovers the past exactly (up to rounding): the state is the pair `(x_k, x_{k+1})`.
//! `gamma = 1` is the paper's main setting; `gamma -> 0` tends to the base sampler.
//! The first step (no `x_{-1}`) is the base sampler's.
//!
//! Bases: DDIM (`Phi` = the DDIM map, eps at `x_k`) and EDM's Heun sampler on a
//! variance-exploding grid (forward `Phi` = a Heun step, Euler on the last step to
//! `sigma = 0`; backward `Phi` = an Euler step), as in the paper's BDIA-EDM.

use diffusion_core::{Denoiser, Tensor};

use crate::error::{InversionError, Result, invalid_param};
use crate::grid::{Grid, ddim_coefficients, denoised, epsilon};

/// The integrator BDIA is built on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BdiaBase {
    /// Deterministic DDIM (any grid).
    Ddim,
    /// EDM's second-order Heun sampler (grid must have `alpha = 1`).
    EdmHeun,
}

/// A BDIA sampler: base integrator and the mixing parameter `gamma` in `(0, 1]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bdia {
    base: BdiaBase,
    gamma: f64,
}

/// The two consecutive states BDIA carries. `current` is at level `index` of the grid,
/// `previous` at `index - 1` (one step noisier).
#[derive(Clone, Debug, PartialEq)]
pub struct BdiaState<T> {
    pub previous: T,
    pub current: T,
    pub index: usize,
}

/// An inverted latent: the state at the top of `grid`, with the grid and gamma it was
/// inverted on (sampling refuses others).
#[derive(Clone, Debug, PartialEq)]
pub struct BdiaLatent<T> {
    pub grid: Grid,
    pub gamma: f64,
    /// `x` at the noisiest level.
    pub noise: T,
    /// `x` at the second level.
    pub next: T,
}

impl Bdia {
    /// Fails unless `0 < gamma <= 1` (gamma = 0 is plain DDIM, which cannot be inverted).
    pub fn new(base: BdiaBase, gamma: f64) -> Result<Self> {
        if !(gamma > 0.0 && gamma <= 1.0) {
            return Err(invalid_param("gamma", gamma, "BDIA needs 0 < gamma <= 1"));
        }
        Ok(Self { base, gamma })
    }

    pub fn gamma(&self) -> f64 {
        self.gamma
    }

    fn check_grid(&self, grid: &Grid) -> Result<()> {
        if self.base == BdiaBase::EdmHeun && grid.levels().iter().any(|l| l.alpha != 1.0) {
            return Err(InversionError::InvalidGrid(
                "BDIA-EDM needs a variance-exploding grid (alpha = 1 at every level)".into(),
            ));
        }
        Ok(())
    }

    /// `c_other * other + scale * G_k(x_k)` in a fresh buffer.
    fn combine<T: Tensor, D: Denoiser<T> + ?Sized>(
        &self,
        model: &D,
        grid: &Grid,
        k: usize,
        x: &T,
        other: (f64, &T),
        scale: f64,
    ) -> Result<T> {
        let lv = grid.levels();
        let g = self.gamma;
        match self.base {
            BdiaBase::Ddim => {
                let (a, b) = ddim_coefficients(lv[k], lv[k + 1]);
                let (ab, bb) = ddim_coefficients(lv[k], lv[k - 1]);
                let mut out = epsilon(model, x, lv[k], k)?;
                out.lincomb(scale * (b - g * bb), &[(scale * (a - g * ab), x), other], None)?;
                Ok(out)
            }
            BdiaBase::EdmHeun => {
                let (d, forward) = self.heun_increment(model, grid, k, x)?;
                let back = lv[k - 1].sigma - lv[k].sigma;
                let mut out = forward;
                out.lincomb(
                    scale,
                    &[(scale * (1.0 - g), x), (-scale * g * back, &d), other],
                    None,
                )?;
                Ok(out)
            }
        }
    }

    /// EDM: the slope `d_k = (x - D(x)) / sigma_k` and the forward Heun increment to `k + 1`.
    fn heun_increment<T: Tensor, D: Denoiser<T> + ?Sized>(
        &self,
        model: &D,
        grid: &Grid,
        k: usize,
        x: &T,
    ) -> Result<(T, T)> {
        let lv = grid.levels();
        let (s, s_next) = (lv[k].sigma, lv[k + 1].sigma);
        let mut d = denoised(model, x, lv[k], k)?;
        d.lincomb(-1.0 / s, &[(1.0 / s, x)], None)?;
        let h = s_next - s;
        let mut inc = d.clone();
        if s_next > 0.0 {
            let mut pred = lincomb_fresh(&[(1.0, x), (h, &d)])?;
            let den = denoised(model, &pred, lv[k + 1], k)?;
            // pred <- slope at the Euler predictor.
            pred.lincomb(1.0 / s_next, &[(-1.0 / s_next, &den)], None)?;
            inc.lincomb(0.5 * h, &[(0.5 * h, &pred)], None)?;
        } else {
            inc.lincomb(h, &[], None)?;
        }
        Ok((d, inc))
    }

    /// The base sampler's first step from level 0.
    fn first_step<T: Tensor, D: Denoiser<T> + ?Sized>(&self, model: &D, grid: &Grid, x: &T) -> Result<T> {
        let lv = grid.levels();
        match self.base {
            BdiaBase::Ddim => {
                let (a, b) = ddim_coefficients(lv[0], lv[1]);
                let mut out = epsilon(model, x, lv[0], 0)?;
                out.lincomb(b, &[(a, x)], None)?;
                Ok(out)
            }
            BdiaBase::EdmHeun => {
                let (_, mut inc) = self.heun_increment(model, grid, 0, x)?;
                inc.lincomb(1.0, &[(1.0, x)], None)?;
                Ok(inc)
            }
        }
    }

    /// Samples from `noise` at the grid's first level; returns the final state (its
    /// `current` is the sample).
    pub fn sample<T: Tensor, D: Denoiser<T> + ?Sized>(
        &self,
        model: &D,
        grid: &Grid,
        noise: &T,
    ) -> Result<BdiaState<T>> {
        self.check_grid(grid)?;
        let next = self.first_step(model, grid, noise)?;
        self.run_forward(
            model,
            grid,
            BdiaState {
                previous: noise.clone(),
                current: next,
                index: 1,
            },
        )
    }

    /// Samples from an inverted latent; fails if `grid` or gamma differ from the inversion's.
    pub fn sample_from<T: Tensor, D: Denoiser<T> + ?Sized>(
        &self,
        model: &D,
        grid: &Grid,
        latent: &BdiaLatent<T>,
    ) -> Result<BdiaState<T>> {
        self.check_latent(grid, latent)?;
        self.run_forward(
            model,
            grid,
            BdiaState {
                previous: latent.noise.clone(),
                current: latent.next.clone(),
                index: 1,
            },
        )
    }

    fn check_latent<T>(&self, grid: &Grid, latent: &BdiaLatent<T>) -> Result<()> {
        latent.grid.check_same(grid)?;
        if latent.gamma != self.gamma {
            return Err(InversionError::ParameterMismatch {
                name: "gamma",
                inverted: latent.gamma,
                sampling: self.gamma,
            });
        }
        self.check_grid(grid)
    }

    fn run_forward<T: Tensor, D: Denoiser<T> + ?Sized>(
        &self,
        model: &D,
        grid: &Grid,
        mut st: BdiaState<T>,
    ) -> Result<BdiaState<T>> {
        for k in st.index..grid.steps() {
            let next = self.combine(model, grid, k, &st.current, (self.gamma, &st.previous), 1.0)?;
            st.previous = std::mem::replace(&mut st.current, next);
            st.index = k + 1;
        }
        Ok(st)
    }

    /// Exact inversion of a final state (`current` at the last level, `previous` one
    /// level noisier) back to the latent at the top of `grid`.
    pub fn invert_state<T: Tensor, D: Denoiser<T> + ?Sized>(
        &self,
        model: &D,
        grid: &Grid,
        state: &BdiaState<T>,
    ) -> Result<BdiaLatent<T>> {
        self.check_grid(grid)?;
        if state.index != grid.steps() {
            return Err(InversionError::GridMismatch {
                inverted: format!("a state at level {}", state.index),
                sampling: grid.describe(),
            });
        }
        check_shapes(&state.previous, &state.current)?;
        let (mut upper, mut lower) = (state.previous.clone(), state.current.clone());
        // (upper, lower) = (x_k, x_{k+1}) -> (x_{k-1}, x_k).
        for k in (1..grid.steps()).rev() {
            let inv = 1.0 / self.gamma;
            let older = self.combine(model, grid, k, &upper, (inv, &lower), -inv)?;
            lower = std::mem::replace(&mut upper, older);
        }
        Ok(BdiaLatent {
            grid: grid.clone(),
            gamma: self.gamma,
            noise: upper,
            next: lower,
        })
    }

    /// Inverts a data point: the state one level above it comes from a plain DDIM
    /// inversion step (the paper's choice), after which inversion is exact, so sampling
    /// from the latent reproduces `x` to rounding.
    pub fn invert<T: Tensor, D: Denoiser<T> + ?Sized>(
        &self,
        model: &D,
        grid: &Grid,
        x: &T,
    ) -> Result<BdiaLatent<T>> {
        self.check_grid(grid)?;
        let lv = grid.levels();
        let n = grid.steps();
        let (clean, noisy) = (lv[n], lv[n - 1]);
        let (a, b) = ddim_coefficients(clean, noisy);
        let mut previous = epsilon(model, x, if clean.sigma > 0.0 { clean } else { noisy }, n - 1)?;
        previous.lincomb(b, &[(a, x)], None)?;
        self.invert_state(
            model,
            grid,
            &BdiaState {
                previous,
                current: x.clone(),
                index: n,
            },
        )
    }
}

fn lincomb_fresh<T: Tensor>(terms: &[(f64, &T)]) -> Result<T> {
    Ok(diffusion_core::lincomb_new(terms, None)?)
}

fn check_shapes<T: Tensor>(a: &T, b: &T) -> Result<()> {
    Ok(diffusion_core::tensor::check_same_shape(
        "BDIA state",
        a.shape(),
        b.shape(),
    )?)
}
