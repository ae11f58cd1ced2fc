//! BDIA (Zhang, Lewis & Kleijn 2023, "Exact diffusion inversion via bi-directional
//! integration approximation"): an exactly invertible sampler.
//!
//! With `Phi_{k->j}(x_k)` the base integrator's estimate of the state at level `j` from
//! `x_k` (one model call at `x_k`), BDIA steps
//!
//! `x_{k+1} = gamma x_{k-1} + (1 - gamma) x_k + (Phi_{k->k+1}(x_k) - x_k) - gamma (Phi_{k->k-1}(x_k) - x_k)`,
//!
//! i.e. it replaces the last step's forward estimate by the backward estimate from
//! `x_k`. The step only needs `x_k` and `x_{k-1}`, so `x_{k-1}` can be recovered from
//! `(x_k, x_{k+1})`: the sampler is exactly invertible. `gamma = 1` is the paper's main
//! setting; `gamma -> 0` tends to the base sampler. The first step is the base sampler's.
//!
//! Bases: DDIM and EDM's Heun sampler on a variance-exploding grid (forward `Phi` = a
//! Heun step, Euler on the last step to `sigma = 0`; backward `Phi` = an Euler step), as
//! in the paper's BDIA-EDM.
//!
//! # How the state is carried (why not the pair `(x_{k-1}, x_k)`)
//!
//! Written as a recurrence in `x`, BDIA is a three-term recurrence
//! `x_{k+1} = gamma x_{k-1} + G_k(x_k)` whose wanted solution decays like `sigma`
//! while its second (parasitic) solution grows like `1 / sigma` while sigma is large:
//! computing it forward from a stored pair is computing a recessive solution of a
//! three-term recurrence in its unstable direction. Any rounding of the stored pair
//! that is not along the wanted solution, about `ulp(x) ~ 1e-7 * sigma_max` in f32, is
//! amplified by `sigma_max / sigma_data`, and each step rounds `x_{k+1}` from the
//! cancellation of two `O(sigma_{k-1})` terms. On EDM's sigma = 80 grid this is the
//! 1e-4 .. 3e-4 f32 round-trip error (f64: 5e-13) of the pair form.
//!
//! Both bases are therefore written in denoiser form,
//! `Phi_{k->j}(x) = (sigma_j / sigma_k) x + sum_i c_i D_i` (the `D_i` are model outputs,
//! `O(data)`), and the state at level `k` is carried as
//!
//! - `y_k = x_k / sigma_k`, which every base step moves by `O(data) / sigma` with unit
//!   coefficient (so the scale factors, rounded to the tensor's precision, never
//!   multiply the state), and
//! - the defect `p_k = x_{k-1} - Phi_{k->k-1}(x_k)`, for which BDIA reads
//!   `x_{k+1} = Phi_{k->k+1}(x_k) + gamma p_k`.
//!
//! The new defect is updated in closed form from differences of model outputs,
//! `p_{k+1} = -(sigma_k / sigma_{k+1}) (c_2 (D_2 - D_1) + gamma p_k) - c_b (D_{k+1} - D_1)`
//! (the `x` terms cancel algebraically), so it is never formed by cancelling two
//! `O(sigma)` numbers. Rounding then only perturbs `y` (which moves the state along the
//! wanted, decaying solution) and the small defect. The map is algebraically the same as
//! the pair form, and its inverse is again explicit.

use diffusion_core::{Denoiser, NoiseLevel, Tensor};

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

/// Two consecutive states of a BDIA trajectory. `current` is at level `index` of the
/// grid, `previous` at `index - 1` (one step noisier).
#[derive(Clone, Debug, PartialEq)]
pub struct BdiaState<T> {
    pub previous: T,
    pub current: T,
    pub index: usize,
}

/// An inverted latent on `grid` with `gamma` (sampling refuses others).
///
/// Sampling continues from `(next, defect)`: `next` is `x` at the grid's second level
/// and `defect = noise - Phi_{1->0}(next)`, the BDIA defect of the first level (kept
/// instead of being recomputed from `noise`, which would cancel two `O(sigma_max)`
/// numbers and lose the precision exact inversion needs). `noise`, `x` at the noisiest
/// level, is the same state written out. With a one-step grid `defect` is unused (zero).
#[derive(Clone, Debug, PartialEq)]
pub struct BdiaLatent<T> {
    pub grid: Grid,
    pub gamma: f64,
    /// `x` at the noisiest level.
    pub noise: T,
    /// `x` at the second level.
    pub next: T,
    /// `noise - Phi_{1->0}(next)`.
    pub defect: T,
}

/// The carried state at level `index >= 0`: `y = x / sigma`, the defect `p` (`None` at
/// level 0, where there is no previous state) and the model's `D(x)` at this level,
/// which the next step (either direction) reuses.
struct Carried<T> {
    y: T,
    p: Option<T>,
    d: T,
    index: usize,
}

/// The model outputs and coefficients of the forward base step from level `k`:
/// `Phi_{k->k+1}(x) = r x + c1 D1 + c2 D2` (`D2` only for a Heun step).
struct ForwardTerms<T> {
    c1: f64,
    second: Option<(f64, T)>,
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

    pub fn base(&self) -> BdiaBase {
        self.base
    }

    fn check_grid(&self, grid: &Grid) -> Result<()> {
        if self.base == BdiaBase::EdmHeun && grid.levels().iter().any(|l| l.alpha != 1.0) {
            return Err(InversionError::InvalidGrid(
                "BDIA-EDM needs a variance-exploding grid (alpha = 1 at every level)".into(),
            ));
        }
        Ok(())
    }

    /// `x = sigma_k y` in a fresh buffer.
    fn x_of<T: Tensor>(y: &T, level: NoiseLevel) -> Result<T> {
        crate::lincomb2((level.sigma, y), (0.0, y))
    }

    /// The forward base step's model terms from `x` at level `k` with `D1 = d1`.
    /// `c1 + c2 = alpha_{k+1} - r alpha_k` (the map is exact for a constant denoiser).
    fn forward_terms<T: Tensor, D: Denoiser<T> + ?Sized>(
        &self,
        model: &D,
        grid: &Grid,
        k: usize,
        x: &T,
        d1: &T,
    ) -> Result<ForwardTerms<T>> {
        let (from, to) = (grid.levels()[k], grid.levels()[k + 1]);
        let r = to.sigma / from.sigma;
        let total = to.alpha - r * from.alpha;
        if self.base == BdiaBase::Ddim || to.sigma == 0.0 {
            // DDIM, or EDM's last step to sigma = 0 (Euler): one model call.
            return Ok(ForwardTerms {
                c1: total,
                second: None,
            });
        }
        // Heun: Euler predictor, then the trapezoid of the two slopes. In denoiser form
        // the D2 coefficient is -h / (2 sigma_{k+1}), h = sigma_{k+1} - sigma_k.
        let pred = crate::lincomb2((r, x), (total, d1))?;
        let d2 = denoised(model, &pred, to, k)?;
        let c2 = -0.5 * (to.sigma - from.sigma) / to.sigma;
        Ok(ForwardTerms {
            c1: total - c2,
            second: Some((c2, d2)),
        })
    }

    /// `a - b` in a fresh buffer (exact when the two are within a factor 2).
    fn diff<T: Tensor>(a: &T, b: &T) -> Result<T> {
        crate::lincomb2((1.0, a), (-1.0, b))
    }

    /// Level 0 from the noise: `y_0` and `D(x_0)`.
    fn start<T: Tensor, D: Denoiser<T> + ?Sized>(
        &self,
        model: &D,
        grid: &Grid,
        noise: &T,
    ) -> Result<Carried<T>> {
        let l0 = grid.levels()[0];
        let d = denoised(model, noise, l0, 0)?;
        let mut y = noise.clone();
        y.lincomb(1.0 / l0.sigma, &[], None)?;
        Ok(Carried {
            y,
            p: None,
            d,
            index: 0,
        })
    }

    /// One forward step from level `k = st.index`. Returns the new carried state, or the
    /// final sample when the step lands on a `sigma = 0` level (the grid's last).
    fn step_forward<T: Tensor, D: Denoiser<T> + ?Sized>(
        &self,
        model: &D,
        grid: &Grid,
        st: Carried<T>,
    ) -> Result<std::result::Result<Carried<T>, T>> {
        let k = st.index;
        let lv = grid.levels();
        let (from, to) = (lv[k], lv[k + 1]);
        let g = self.gamma;
        let x = Self::x_of(&st.y, from)?;
        let ft = self.forward_terms(model, grid, k, &x, &st.d)?;
        drop(x);
        // inc = Phi_{k->k+1}(x_k) - r x_k + gamma p_k = x_{k+1} - r x_k (x-units).
        let mut inc = st.d.clone();
        {
            let mut terms: Vec<(f64, &T)> = Vec::with_capacity(2);
            if let Some((c2, d2)) = &ft.second {
                terms.push((*c2, d2));
            }
            if let Some(p) = &st.p {
                terms.push((g, p));
            }
            inc.lincomb(ft.c1, &terms, None)?;
        }
        if to.sigma == 0.0 {
            return Ok(Err(inc));
        }
        let mut y = st.y;
        y.lincomb(1.0, &[(1.0 / to.sigma, &inc)], None)?;
        drop(inc);
        let index = k + 1;
        let d_next = if index < grid.steps() {
            denoised(model, &Self::x_of(&y, to)?, to, index)?
        } else {
            // The grid's last level: no further step reads D or the defect.
            return Ok(Ok(Carried {
                y,
                p: None,
                d: st.d,
                index,
            }));
        };
        // p_{k+1} = -(1/r) (c2 (D2 - D1) + gamma p_k) - c_b (D_{k+1} - D1).
        let inv_r = from.sigma / to.sigma;
        let c_b = from.alpha - inv_r * to.alpha;
        let mut p = Self::diff(&d_next, &st.d)?;
        {
            let diff2 = match &ft.second {
                Some((c2, d2)) => Some((*c2, Self::diff(d2, &st.d)?)),
                None => None,
            };
            let mut terms: Vec<(f64, &T)> = Vec::with_capacity(2);
            if let Some((c2, e2)) = &diff2 {
                terms.push((-inv_r * c2, e2));
            }
            if let Some(pk) = &st.p {
                terms.push((-inv_r * g, pk));
            }
            p.lincomb(-c_b, &terms, None)?;
        }
        Ok(Ok(Carried {
            y,
            p: Some(p),
            d: d_next,
            index,
        }))
    }

    /// One inverse step from level `k + 1 = st.index >= 1` (whose defect is known) to level
    /// `k`; the defect at level `k` is computed only when `k >= 1`.
    fn step_back<T: Tensor, D: Denoiser<T> + ?Sized>(
        &self,
        model: &D,
        grid: &Grid,
        st: Carried<T>,
    ) -> Result<Carried<T>> {
        let k = st.index - 1;
        let lv = grid.levels();
        let (from, to) = (lv[k], lv[k + 1]);
        let p_next = st.p.as_ref().ok_or_else(|| {
            InversionError::InvalidGrid("BDIA: inverse step without a defect (internal)".into())
        })?;
        let inv_r = from.sigma / to.sigma;
        let c_b = from.alpha - inv_r * to.alpha;
        // x_k = p_{k+1} + Phi_{k+1->k}(x_{k+1})  <=>  y_k = y_{k+1} + (p_{k+1} + c_b D_{k+1}) / sigma_k.
        let mut y = st.y;
        y.lincomb(
            1.0,
            &[(1.0 / from.sigma, p_next), (c_b / from.sigma, &st.d)],
            None,
        )?;
        let x = Self::x_of(&y, from)?;
        let d = denoised(model, &x, from, k)?;
        if k == 0 {
            return Ok(Carried {
                y,
                p: None,
                d,
                index: 0,
            });
        }
        let ft = self.forward_terms(model, grid, k, &x, &d)?;
        drop(x);
        // gamma p_k = -r (p_{k+1} + c_b (D_{k+1} - D_k)) - c2 (D2 - D_k).
        let r = to.sigma / from.sigma;
        let inv_g = 1.0 / self.gamma;
        let mut p = Self::diff(&st.d, &d)?;
        {
            let diff2 = match &ft.second {
                Some((c2, d2)) => Some((*c2, Self::diff(d2, &d)?)),
                None => None,
            };
            let mut terms: Vec<(f64, &T)> = vec![(-r * inv_g, p_next)];
            if let Some((c2, e2)) = &diff2 {
                terms.push((-c2 * inv_g, e2));
            }
            p.lincomb(-r * c_b * inv_g, &terms, None)?;
        }
        Ok(Carried {
            y,
            p: Some(p),
            d,
            index: k,
        })
    }

    /// Runs forward from `st` to the end of the grid; returns the final pair.
    fn run_forward<T: Tensor, D: Denoiser<T> + ?Sized>(
        &self,
        model: &D,
        grid: &Grid,
        mut st: Carried<T>,
    ) -> Result<BdiaState<T>> {
        let n = grid.steps();
        let lv = grid.levels();
        if st.index >= n {
            return Err(InversionError::InvalidGrid(
                "BDIA: nothing to sample (internal)".into(),
            ));
        }
        loop {
            let k = st.index;
            let previous = if k + 1 == n {
                Some(Self::x_of(&st.y, lv[k])?)
            } else {
                None
            };
            match self.step_forward(model, grid, st)? {
                Ok(next) if next.index < n => st = next,
                Ok(last) => {
                    return Ok(BdiaState {
                        previous: previous.expect("set on the last step"),
                        current: Self::x_of(&last.y, lv[n])?,
                        index: n,
                    });
                }
                Err(sample) => {
                    return Ok(BdiaState {
                        previous: previous.expect("set on the last step"),
                        current: sample,
                        index: n,
                    });
                }
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
        let st = self.start(model, grid, noise)?;
        self.run_forward(model, grid, st)
    }

    /// Samples from an inverted latent; fails if `grid` or gamma differ from the inversion's.
    pub fn sample_from<T: Tensor, D: Denoiser<T> + ?Sized>(
        &self,
        model: &D,
        grid: &Grid,
        latent: &BdiaLatent<T>,
    ) -> Result<BdiaState<T>> {
        self.check_latent(grid, latent)?;
        check_shapes(&latent.noise, &latent.next)?;
        check_shapes(&latent.noise, &latent.defect)?;
        if grid.steps() == 1 {
            return Ok(BdiaState {
                previous: latent.noise.clone(),
                current: latent.next.clone(),
                index: 1,
            });
        }
        let l1 = grid.levels()[1];
        let d = denoised(model, &latent.next, l1, 1)?;
        let mut y = latent.next.clone();
        y.lincomb(1.0 / l1.sigma, &[], None)?;
        let st = Carried {
            y,
            p: Some(latent.defect.clone()),
            d,
            index: 1,
        };
        self.run_forward(model, grid, st)
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

    /// Exact inversion of a final state (`current` at the last level, `previous` one
    /// level noisier) back to the latent at the top of `grid`.
    pub fn invert_state<T: Tensor, D: Denoiser<T> + ?Sized>(
        &self,
        model: &D,
        grid: &Grid,
        state: &BdiaState<T>,
    ) -> Result<BdiaLatent<T>> {
        self.check_grid(grid)?;
        let n = grid.steps();
        if state.index != n {
            return Err(InversionError::GridMismatch {
                inverted: format!("a state at level {}", state.index),
                sampling: grid.describe(),
            });
        }
        check_shapes(&state.previous, &state.current)?;
        if n == 1 {
            return Ok(BdiaLatent {
                grid: grid.clone(),
                gamma: self.gamma,
                noise: state.previous.clone(),
                next: state.current.clone(),
                defect: state.current.zeros_like(),
            });
        }
        // The pair at the bottom -> (y, defect) at level n - 1:
        // gamma p_{n-1} = x_n - Phi_{n-1->n}(x_{n-1}). Both are O(data) here.
        let lv = grid.levels();
        let k = n - 1;
        let (from, to) = (lv[k], lv[n]);
        let x = &state.previous;
        let d = denoised(model, x, from, k)?;
        let ft = self.forward_terms(model, grid, k, x, &d)?;
        let inv_g = 1.0 / self.gamma;
        let mut p = state.current.clone();
        {
            let mut terms: Vec<(f64, &T)> = vec![(-inv_g * to.sigma / from.sigma, x), (-inv_g * ft.c1, &d)];
            if let Some((c2, d2)) = &ft.second {
                terms.push((-inv_g * c2, d2));
            }
            p.lincomb(inv_g, &terms, None)?;
        }
        let mut y = x.clone();
        y.lincomb(1.0 / from.sigma, &[], None)?;
        let mut st = Carried {
            y,
            p: Some(p),
            d,
            index: k,
        };
        while st.index > 1 {
            st = self.step_back(model, grid, st)?;
        }
        let next = Self::x_of(&st.y, lv[1])?;
        let defect = st.p.clone().expect("level 1 carries its defect");
        let top = self.step_back(model, grid, st)?;
        Ok(BdiaLatent {
            grid: grid.clone(),
            gamma: self.gamma,
            noise: Self::x_of(&top.y, lv[0])?,
            next,
            defect,
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

fn check_shapes<T: Tensor>(a: &T, b: &T) -> Result<()> {
    Ok(diffusion_core::tensor::check_same_shape(
        "BDIA state",
        a.shape(),
        b.shape(),
    )?)
}
