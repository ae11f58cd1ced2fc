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
//! # Mixed precision: the state is f64, only the model runs in `T`
//!
//! The sampler's state is carried in f64 host vectors whatever the tensor type `T`; only
//! the model's inputs are rounded to `T` (and its outputs widened back). Inversion
//! recomputes the states of sampling to f64 rounding (~1e-16 relative, far below half
//! an f32 ulp), so an f32 model sees bit-identical inputs in both directions and returns
//! bit-identical outputs: its own output noise cancels exactly in the round trip instead
//! of being amplified by BDIA's two-step mode. (With the state in f32, an epsilon model's
//! `x0 = x - sigma eps` at sigma = 80 carries ~1e-7 sigma of rounding noise that differed
//! between inversion and sampling and limited BDIA-EDM's f32 round trip to 1.6e-5 ..
//! 5e-5; now it is ~1e-14, see the crate README.) The latent ([`BdiaLatent`]) and the
//! final state ([`BdiaState`]) carry the f64 state across invert -> sample; the
//! user-facing tensors are its rounding to `T`. A host round trip per model call is the
//! price; the arithmetic is a few streams per call, small beside any real model.
//!
//! For `gamma = 1` the pair form `x_{k+1} = x_{k-1} + G(x_k)` is an additive coupling and
//! could be made bit-exact with a fixed-point state; that was not done because
//! `gamma < 1` (volume-contracting) needs the floating-point path anyway and the f64
//! state already meets the bounds with orders of magnitude to spare.
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
//! cancellation of two `O(sigma_{k-1})` terms. On EDM's sigma = 80 grid this was the
//! 1e-4 .. 3e-4 f32 round-trip error (f64: 5e-13) of the pair form kept in `T`.
//!
//! Both bases are therefore written in denoiser form,
//! `Phi_{k->j}(x) = (sigma_j / sigma_k) x + sum_i c_i D_i` (the `D_i` are model outputs,
//! `O(data)`), and the state at level `k` is carried as
//!
//! - `y_k = x_k / sigma_k`, which every base step moves by `O(data) / sigma` with unit
//!   coefficient (so the scale factors never multiply the state), and
//! - the defect `p_k = x_{k-1} - Phi_{k->k-1}(x_k)`, for which BDIA reads
//!   `x_{k+1} = Phi_{k->k+1}(x_k) + gamma p_k`.
//!
//! The new defect is updated in closed form from differences of model outputs,
//! `p_{k+1} = -(sigma_k / sigma_{k+1}) (c_2 (D_2 - D_1) + gamma p_k) - c_b (D_{k+1} - D_1)`
//! (the `x` terms cancel algebraically), so it is never formed by cancelling two
//! `O(sigma)` numbers. Rounding then only perturbs `y` (which moves the state along the
//! wanted, decaying solution) and the small defect. The map is algebraically the same as
//! the pair form, and its inverse is again explicit. In f64 it keeps the recomputed
//! states within 1e-13 .. 6e-15 of the sampled ones on EDM's grid (measured for an f32
//! model, whose round trip is then bit-exact). With an f64 model the round trip is
//! 3e-14 .. 1.4e-13 (gamma = 1) and 1e-15 .. 8e-15 (gamma = 0.9): there the model's
//! inputs are the f64 states themselves, reproduced only to rounding, so its own
//! rounding noise (~1e-16 sigma_max) does not cancel and the undamped gamma = 1 mode
//! carries it.

use std::borrow::Cow;

use diffusion_core::{Denoiser, NoiseLevel, Parameterization, Tensor};

use crate::error::{InversionError, Result, invalid_param};
use crate::grid::{Grid, ddim_coefficients};
use crate::mixed::{self, combine, scaled};

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
///
/// States returned by sampling also keep the f64 pair they were rounded from;
/// [`Bdia::invert_state`] starts from it while `previous` and `current` still round from
/// it (edit either and inversion starts from the edited `T` values instead).
#[derive(Clone, Debug, PartialEq)]
pub struct BdiaState<T> {
    pub previous: T,
    pub current: T,
    pub index: usize,
    exact: Option<ExactPair>,
}

/// A consecutive pair of states in f64.
#[derive(Clone, Debug, PartialEq)]
struct ExactPair {
    previous: Vec<f64>,
    current: Vec<f64>,
}

impl<T: Tensor> BdiaState<T> {
    /// A state given in `T` only (for example a trajectory from elsewhere).
    pub fn new(previous: T, current: T, index: usize) -> Self {
        Self {
            previous,
            current,
            index,
            exact: None,
        }
    }

    /// Whether the f64 state this was rounded from is kept and still matches.
    pub fn has_exact_state(&self) -> bool {
        matches!(self.exact_pair(), Ok(Cow::Borrowed(_)))
    }

    /// `current` in f64 before rounding to `T`, when this state came from sampling and
    /// `previous` and `current` were not edited since.
    pub fn exact_current(&self) -> Option<&[f64]> {
        match self.exact_pair() {
            Ok(Cow::Borrowed(e)) => Some(&e.current),
            _ => None,
        }
    }

    /// The f64 pair: the kept one while `previous` and `current` still round from it,
    /// else the `T` values widened.
    fn exact_pair(&self) -> Result<Cow<'_, ExactPair>> {
        if let Some(e) = &self.exact
            && rounds_to(&self.previous, &e.previous)?
            && rounds_to(&self.current, &e.current)?
        {
            return Ok(Cow::Borrowed(e));
        }
        Ok(Cow::Owned(ExactPair {
            previous: self.previous.to_f64_vec(),
            current: self.current.to_f64_vec(),
        }))
    }
}

/// Whether `exact` rounded to `T` gives `t`, bit for bit.
fn rounds_to<T: Tensor>(t: &T, exact: &[f64]) -> Result<bool> {
    if t.len() != exact.len() {
        return Ok(false);
    }
    Ok(t.from_f64_like(exact)?.to_f64_vec() == t.to_f64_vec())
}

/// An inverted latent on a grid with a gamma (sampling refuses others).
///
/// [`Bdia::sample_from`] continues from the f64 state kept inside: `y` and the BDIA
/// defect at the grid's second level, `p_1 = x_0 - Phi_{1->0}(x_1)` (kept instead of
/// being recomputed from the noise, which would cancel two `O(sigma_max)` numbers).
/// [`BdiaLatent::noise`], `x` at the noisiest level rounded to `T`, is the same state
/// written out, e.g. for editing (sample from it alone with [`Bdia::sample`]).
#[derive(Clone, Debug, PartialEq)]
pub struct BdiaLatent<T> {
    grid: Grid,
    gamma: f64,
    noise: T,
    exact: LatentState,
}

#[derive(Clone, Debug, PartialEq)]
enum LatentState {
    /// `y` and the defect at level 1 (grids of two or more steps).
    Level1 { y: Vec<f64>, p: Vec<f64> },
    /// A one-step grid: the pair `(x_0, x_1)` itself.
    OneStep(ExactPair),
}

impl<T> BdiaLatent<T> {
    /// The grid it was inverted on.
    pub fn grid(&self) -> &Grid {
        &self.grid
    }

    /// The gamma it was inverted with.
    pub fn gamma(&self) -> f64 {
        self.gamma
    }

    /// `x` at the noisiest level, rounded to `T`.
    pub fn noise(&self) -> &T {
        &self.noise
    }

    /// The noise, dropping the exact state.
    pub fn into_noise(self) -> T {
        self.noise
    }
}

/// The carried state at level `index >= 0`, in f64: `y = x / sigma`, the defect `p`
/// (`None` at level 0, where there is no previous state) and the model's `D(x)` at this
/// level, which the next step (either direction) reuses.
struct Carried {
    y: Vec<f64>,
    p: Option<Vec<f64>>,
    d: Vec<f64>,
    index: usize,
}

/// The model terms of the forward base step from level `k`:
/// `Phi_{k->k+1}(x) = r x + c1 D1 + c2 D2` (`D2` only for a Heun step).
struct ForwardTerms {
    c1: f64,
    second: Option<(f64, Vec<f64>)>,
}

/// What a forward step produced.
enum Forward {
    /// The carried state at the next level.
    Level(Carried),
    /// The final sample, on a `sigma = 0` level.
    Sample(Vec<f64>),
}

/// `(1 / r, c_b)` of the backward (Euler / DDIM) estimate from level `k + 1` to `k`:
/// `Phi_{k+1->k}(x) = (1 / r) x + c_b D`, `r = sigma_{k+1} / sigma_k`.
fn backward_coefficients(from: NoiseLevel, to: NoiseLevel) -> (f64, f64) {
    let inv_r = from.sigma / to.sigma;
    (inv_r, from.alpha - inv_r * to.alpha)
}

/// `c2 * (d2 - d)` at element `i`, or 0 without a second model output.
fn second_diff(second: &Option<(f64, Vec<f64>)>, d: &[f64], i: usize) -> f64 {
    second.as_ref().map_or(0.0, |(c2, d2)| c2 * (d2[i] - d[i]))
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

    /// The forward base step's model terms from `x` at level `k` with `D1 = d1`.
    /// `c1 + c2 = alpha_{k+1} - r alpha_k` (the map is exact for a constant denoiser).
    fn forward_terms<T: Tensor, D: Denoiser<T> + ?Sized>(
        &self,
        model: &D,
        like: &T,
        grid: &Grid,
        k: usize,
        x: &[f64],
        d1: &[f64],
    ) -> Result<ForwardTerms> {
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
        let pred = combine(&[(r, x), (total, d1)]);
        let d2 = mixed::denoised(model, like, &pred, to, k)?;
        let c2 = -0.5 * (to.sigma - from.sigma) / to.sigma;
        Ok(ForwardTerms {
            c1: total - c2,
            second: Some((c2, d2)),
        })
    }

    /// Level 0 from the noise: `y_0` and `D(x_0)`.
    fn start<T: Tensor, D: Denoiser<T> + ?Sized>(
        &self,
        model: &D,
        grid: &Grid,
        noise: &T,
    ) -> Result<Carried> {
        let l0 = grid.levels()[0];
        let x = noise.to_f64_vec();
        let d = mixed::denoised(model, noise, &x, l0, 0)?;
        Ok(Carried {
            y: scaled(1.0 / l0.sigma, &x),
            p: None,
            d,
            index: 0,
        })
    }

    /// One forward step from level `k = st.index`.
    fn step_forward<T: Tensor, D: Denoiser<T> + ?Sized>(
        &self,
        model: &D,
        like: &T,
        grid: &Grid,
        st: Carried,
    ) -> Result<Forward> {
        let k = st.index;
        let lv = grid.levels();
        let (from, to) = (lv[k], lv[k + 1]);
        let g = self.gamma;
        let x = scaled(from.sigma, &st.y);
        let ft = self.forward_terms(model, like, grid, k, &x, &st.d)?;
        drop(x);
        // inc = Phi_{k->k+1}(x_k) - r x_k + gamma p_k = x_{k+1} - r x_k (x-units).
        let inc: Vec<f64> = (0..st.y.len())
            .map(|i| {
                let mut v = ft.c1 * st.d[i];
                if let Some((c2, d2)) = &ft.second {
                    v += c2 * d2[i];
                }
                if let Some(p) = &st.p {
                    v += g * p[i];
                }
                v
            })
            .collect();
        if to.sigma == 0.0 {
            return Ok(Forward::Sample(inc));
        }
        let mut y = st.y;
        mixed::accumulate(&mut y, 1.0, &[(1.0 / to.sigma, &inc)]);
        drop(inc);
        let index = k + 1;
        if index == grid.steps() {
            // The grid's last level: no further step reads D or the defect.
            return Ok(Forward::Level(Carried {
                y,
                p: None,
                d: st.d,
                index,
            }));
        }
        let d_next = mixed::denoised(model, like, &scaled(to.sigma, &y), to, index)?;
        // p_{k+1} = -(1/r) (c2 (D2 - D1) + gamma p_k) - c_b (D_{k+1} - D1).
        let (inv_r, c_b) = backward_coefficients(from, to);
        let p: Vec<f64> = (0..y.len())
            .map(|i| {
                let pk = st.p.as_ref().map_or(0.0, |p| g * p[i]);
                -inv_r * (second_diff(&ft.second, &st.d, i) + pk) - c_b * (d_next[i] - st.d[i])
            })
            .collect();
        Ok(Forward::Level(Carried {
            y,
            p: Some(p),
            d: d_next,
            index,
        }))
    }

    /// `y_k` from the carried state at level `k + 1 = st.index >= 1` and its defect:
    /// `x_k = p_{k+1} + Phi_{k+1->k}(x_{k+1})  <=>  y_k = y_{k+1} + (p_{k+1} + c_b D_{k+1}) / sigma_k`.
    fn y_back(grid: &Grid, st: &Carried, p_next: &[f64]) -> Vec<f64> {
        let k = st.index - 1;
        let (from, to) = (grid.levels()[k], grid.levels()[k + 1]);
        let (_, c_b) = backward_coefficients(from, to);
        combine(&[
            (1.0, &st.y),
            (1.0 / from.sigma, p_next),
            (c_b / from.sigma, &st.d),
        ])
    }

    /// The defect a carried state at level >= 1 must have.
    fn defect(st: &Carried) -> Result<&[f64]> {
        st.p.as_deref().ok_or_else(|| {
            InversionError::InvalidGrid("BDIA: inverse step without a defect (internal)".into())
        })
    }

    /// One inverse step from level `k + 1 = st.index >= 2` (whose defect is known) to
    /// level `k >= 1`, with its defect.
    fn step_back<T: Tensor, D: Denoiser<T> + ?Sized>(
        &self,
        model: &D,
        like: &T,
        grid: &Grid,
        st: Carried,
    ) -> Result<Carried> {
        let k = st.index - 1;
        let lv = grid.levels();
        let (from, to) = (lv[k], lv[k + 1]);
        let p_next = Self::defect(&st)?;
        let y = Self::y_back(grid, &st, p_next);
        let x = scaled(from.sigma, &y);
        let d = mixed::denoised(model, like, &x, from, k)?;
        let ft = self.forward_terms(model, like, grid, k, &x, &d)?;
        drop(x);
        // gamma p_k = -r (p_{k+1} + c_b (D_{k+1} - D_k)) - c2 (D2 - D_k).
        let r = to.sigma / from.sigma;
        let (_, c_b) = backward_coefficients(from, to);
        let inv_g = 1.0 / self.gamma;
        let p: Vec<f64> = (0..y.len())
            .map(|i| inv_g * (-r * (p_next[i] + c_b * (st.d[i] - d[i])) - second_diff(&ft.second, &d, i)))
            .collect();
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
        like: &T,
        grid: &Grid,
        mut st: Carried,
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
            let previous = (k + 1 == n).then(|| scaled(lv[k].sigma, &st.y));
            let current = match self.step_forward(model, like, grid, st)? {
                Forward::Level(next) if next.index < n => {
                    st = next;
                    continue;
                }
                Forward::Level(last) => scaled(lv[n].sigma, &last.y),
                Forward::Sample(sample) => sample,
            };
            let previous = previous.expect("set on the last step");
            return Ok(BdiaState {
                previous: like.from_f64_like(&previous)?,
                current: like.from_f64_like(&current)?,
                index: n,
                exact: Some(ExactPair { previous, current }),
            });
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
        self.run_forward(model, noise, grid, st)
    }

    /// Samples from an inverted latent (continuing from its f64 state); fails if `grid`
    /// or gamma differ from the inversion's.
    pub fn sample_from<T: Tensor, D: Denoiser<T> + ?Sized>(
        &self,
        model: &D,
        grid: &Grid,
        latent: &BdiaLatent<T>,
    ) -> Result<BdiaState<T>> {
        self.check_latent(grid, latent)?;
        let like = &latent.noise;
        match (&latent.exact, grid.steps()) {
            (LatentState::OneStep(pair), 1) => Ok(BdiaState {
                previous: like.from_f64_like(&pair.previous)?,
                current: like.from_f64_like(&pair.current)?,
                index: 1,
                exact: Some(pair.clone()),
            }),
            (LatentState::Level1 { y, p }, n) if n >= 2 => {
                let l1 = grid.levels()[1];
                let d = mixed::denoised(model, like, &scaled(l1.sigma, y), l1, 1)?;
                let st = Carried {
                    y: y.clone(),
                    p: Some(p.clone()),
                    d,
                    index: 1,
                };
                self.run_forward(model, like, grid, st)
            }
            _ => Err(InversionError::InvalidGrid(
                "BDIA: latent state does not fit the grid (internal)".into(),
            )),
        }
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
    /// level noisier) back to the latent at the top of `grid`. Starts from the state's
    /// f64 pair when it has one (see [`BdiaState`]).
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
        let pair = state.exact_pair()?;
        let like = &state.current;
        if n == 1 {
            return Ok(BdiaLatent {
                grid: grid.clone(),
                gamma: self.gamma,
                noise: like.from_f64_like(&pair.previous)?,
                exact: LatentState::OneStep(pair.into_owned()),
            });
        }
        // The pair at the bottom -> (y, defect) at level n - 1:
        // gamma p_{n-1} = x_n - Phi_{n-1->n}(x_{n-1}). Both are O(data) here. The model
        // sees `x_{n-1}` itself, as sampling's last step did.
        let lv = grid.levels();
        let k = n - 1;
        let (from, to) = (lv[k], lv[n]);
        let (x, x_end) = (&pair.previous, &pair.current);
        let d = mixed::denoised(model, like, x, from, k)?;
        let ft = self.forward_terms(model, like, grid, k, x, &d)?;
        let (r, inv_g) = (to.sigma / from.sigma, 1.0 / self.gamma);
        let p: Vec<f64> = (0..x.len())
            .map(|i| {
                let second = ft.second.as_ref().map_or(0.0, |(c2, d2)| c2 * d2[i]);
                inv_g * (x_end[i] - r * x[i] - ft.c1 * d[i] - second)
            })
            .collect();
        let mut st = Carried {
            y: scaled(1.0 / from.sigma, x),
            p: Some(p),
            d,
            index: k,
        };
        while st.index > 1 {
            st = self.step_back(model, like, grid, st)?;
        }
        // Level 0 needs only y (no model call): x_0 is the noise.
        let p = Self::defect(&st)?;
        let noise = like.from_f64_like(&scaled(lv[0].sigma, &Self::y_back(grid, &st, p)))?;
        let p = p.to_vec();
        Ok(BdiaLatent {
            grid: grid.clone(),
            gamma: self.gamma,
            noise,
            exact: LatentState::Level1 { y: st.y, p },
        })
    }

    /// Inverts a data point: the state one level above it comes from a plain DDIM
    /// inversion step (the paper's choice, in f64 from the model's output), after which
    /// inversion is exact, so sampling from the latent reproduces `x` to rounding.
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
        let current = x.to_f64_vec();
        let eval = if clean.sigma > 0.0 { clean } else { noisy };
        let eps = mixed::predict(model, x, &current, eval, n - 1, Parameterization::Epsilon)?;
        let previous = combine(&[(b, &eps), (a, &current)]);
        self.invert_state(
            model,
            grid,
            &BdiaState {
                previous: x.from_f64_like(&previous)?,
                current: x.clone(),
                index: n,
                exact: Some(ExactPair { previous, current }),
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
