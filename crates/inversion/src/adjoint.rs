//! AdjointDPM (Pan et al. 2023): gradients of a loss on the generated sample with
//! respect to the initial noise and the model's differentiable parameters (weights,
//! conditioning), by solving the adjoint ODE backwards, in memory independent of the
//! number of steps.
//!
//! Exponential-integrator reparameterization: with `rho = sigma / alpha = e^{-lambda}`
//! and `y = x / alpha`, the probability-flow ODE loses its linear part,
//! `dy/drho = eps(alpha y, rho)`. Its adjoint `a = dL/dy` and the parameter
//! accumulator obey
//!
//! ```text
//! da/drho   = -alpha (d eps / dx)^T a
//! da_th/drho = -(d eps / d theta)^T a        (a_th = 0 at the sample)
//! ```
//!
//! The augmented state `(y, a, a_th)` is integrated from the sample back to the noise
//! with the same second-order multistep exponential integrator as the forward sampler
//! ([`sample`]): the right-hand side is taken linear in `lambda` over a step and
//! `int e^{-lambda} (.) dlambda` is done exactly (this is DPM-Solver-2M in noise form,
//! diffusers' `dpmsolver` + `heun`). Only the current state and the previous
//! right-hand side are kept, so memory does not grow with the step count. The `y` part
//! is re-integrated backwards rather than stored, so the gradient equals the exact
//! gradient of the discrete sampler only up to the solver's O(h^2) error.
//!
//! [`unrolled_gradients`] is the reference: exact reverse-mode differentiation of the
//! discrete forward sampler, storing its whole trajectory (memory linear in steps).
//!
//! For gradients exact to rounding at any step count, [`bdia_adjoint`] differentiates
//! BDIA-DDIM sampling (an exactly invertible sampler) with its discrete adjoint,
//! recomputing each state backwards by BDIA inversion instead of storing it: memory is
//! again independent of the step count.

use diffusion_core::{
    Denoiser, NoiseLevel, Parameterization, Tensor,
    model::{DifferentiableDenoiser, Vjp},
    param::conversion,
};

use crate::bdia::{Bdia, BdiaBase, BdiaState};
use crate::error::{InversionError, Result};
use crate::grid::{Grid, ddim_coefficients, epsilon};

/// Gradients of a scalar loss `L(x_end)`.
#[derive(Clone, Debug, PartialEq)]
pub struct Gradients<T> {
    /// `dL / dx` at the grid's first (noisiest) level.
    pub x_start: T,
    /// `dL / dtheta` for the model's declared parameters.
    pub params: Vec<f64>,
}

fn rho(l: NoiseLevel) -> f64 {
    l.sigma / l.alpha
}

/// `1 - (1 + h) e^{-h}` with its limit 1 at `h = +inf` and a series near 0.
fn second_order_weight(h: f64) -> f64 {
    if h == f64::INFINITY {
        1.0
    } else if h.abs() < 1e-4 {
        // h^2/2 - h^3/3 + h^4/8
        h * h * (0.5 - h / 3.0 + h * h / 8.0)
    } else {
        1.0 - (1.0 + h) * (-h).exp()
    }
}

/// Step coefficients `y_to = y_from + c F_from + d (F_from - F_before)`, where `F_before`
/// is the right-hand side at the level before `from` in the direction of travel
/// (`d = 0` without one). Exact for `F` linear in lambda.
fn step_coefficients(from: NoiseLevel, to: NoiseLevel, before: Option<NoiseLevel>) -> (f64, f64) {
    let (rf, rt) = (rho(from), rho(to));
    let c = rt - rf;
    let d = match before {
        Some(b) => {
            let (lb, lf, lt) = (-rho(b).ln(), -rf.ln(), -rt.ln());
            let span = lf - lb;
            if !(span.is_finite() && lf.is_finite()) || span == 0.0 {
                0.0
            } else {
                -rf * second_order_weight(lt - lf) / span
            }
        }
        None => 0.0,
    };
    (c, d)
}

fn check_grid(grid: &Grid) -> Result<()> {
    if grid.levels()[0].sigma == 0.0 {
        return Err(InversionError::InvalidGrid(
            "the first level must be noisy (sigma > 0)".into(),
        ));
    }
    Ok(())
}

/// The forward sampler the gradients are for: DPM-Solver-2M (noise form) on `grid`
/// from `x_start` at its first level. One model call per step.
pub fn sample<T: Tensor, D: Denoiser<T> + ?Sized>(model: &D, grid: &Grid, x_start: &T) -> Result<T> {
    check_grid(grid)?;
    let lv = grid.levels();
    let mut y = x_start.clone();
    y.lincomb(1.0 / lv[0].alpha, &[], None)?;
    let mut prev_eps: Option<T> = None;
    for k in 0..grid.steps() {
        let mut x = y.clone();
        x.lincomb(lv[k].alpha, &[], None)?;
        let e = epsilon(model, &x, lv[k], k)?;
        let before = (k > 0).then(|| lv[k - 1]);
        let (c, d) = step_coefficients(lv[k], lv[k + 1], before);
        match &prev_eps {
            Some(p) if d != 0.0 => y.lincomb(1.0, &[(c + d, &e), (-d, p)], None)?,
            _ => y.lincomb(1.0, &[(c, &e)], None)?,
        }
        prev_eps = Some(e);
    }
    y.lincomb(lv[grid.steps()].alpha, &[], None)?;
    Ok(y)
}

/// `(eps, (d eps/dx)^T a, (d eps/dtheta)^T a)` at `(x, level)` for any parameterization.
fn eps_and_vjp<T: Tensor, D: DifferentiableDenoiser<T> + ?Sized>(
    model: &D,
    x: &T,
    level: NoiseLevel,
    a: &T,
    step: usize,
) -> Result<(T, Vjp<T>)> {
    let e = epsilon(model, x, level, step)?;
    let (cx, cm) = conversion(
        model.parameterization(),
        Parameterization::Epsilon,
        level.alpha,
        level.sigma,
    )?;
    let mut v = model.vjp(x, level, a)?;
    diffusion_core::tensor::check_same_shape("vjp.x", x.shape(), v.x.shape())?;
    if v.params.len() != model.num_params() {
        return Err(InversionError::Core(diffusion_core::CoreError::Model(format!(
            "vjp returned {} parameter gradients, num_params is {}",
            v.params.len(),
            model.num_params()
        ))));
    }
    // eps = cx x + cm out.
    v.x.lincomb(cm, &[(cx, a)], None)?;
    v.params.iter_mut().for_each(|p| *p *= cm);
    Ok((e, v))
}

/// The right-hand side of the augmented system in rho-time at `y`, `a`.
struct Rhs<T> {
    fy: T,
    fa: T,
    fp: Vec<f64>,
}

fn rhs<T: Tensor, D: DifferentiableDenoiser<T> + ?Sized>(
    model: &D,
    level: NoiseLevel,
    y: &T,
    a: &T,
    step: usize,
) -> Result<Rhs<T>> {
    let mut x = y.clone();
    x.lincomb(level.alpha, &[], None)?;
    let (fy, v) = eps_and_vjp(model, &x, level, a, step)?;
    let mut fa = v.x;
    fa.lincomb(-level.alpha, &[], None)?;
    Ok(Rhs {
        fy,
        fa,
        fp: v.params.iter().map(|p| -p).collect(),
    })
}

/// AdjointDPM: given the sample `x_end` at the grid's last level (from [`sample`]) and
/// `grad_end = dL/dx_end`, integrates the augmented adjoint system back to the first
/// level. Memory: a fixed number of tensors, whatever the step count.
pub fn adjoint<T: Tensor, D: DifferentiableDenoiser<T> + ?Sized>(
    model: &D,
    grid: &Grid,
    x_end: &T,
    grad_end: &T,
) -> Result<Gradients<T>> {
    check_grid(grid)?;
    diffusion_core::tensor::check_same_shape("loss gradient", x_end.shape(), grad_end.shape())?;
    let lv = grid.levels();
    let n = grid.steps();
    let alpha_end = lv[n].alpha;
    let mut y = x_end.clone();
    y.lincomb(1.0 / alpha_end, &[], None)?;
    // a = dL/dy = alpha dL/dx.
    let mut a = grad_end.clone();
    a.lincomb(alpha_end, &[], None)?;
    let mut ap = vec![0.0; model.num_params()];
    let mut prev: Option<Rhs<T>> = None;
    for k in (1..=n).rev() {
        let f = rhs(model, lv[k], &y, &a, k)?;
        let before = (k < n).then(|| lv[k + 1]);
        let (c, d) = step_coefficients(lv[k], lv[k - 1], before);
        match prev.as_ref().filter(|_| d != 0.0) {
            Some(p) => {
                y.lincomb(1.0, &[(c + d, &f.fy), (-d, &p.fy)], None)?;
                a.lincomb(1.0, &[(c + d, &f.fa), (-d, &p.fa)], None)?;
                for ((acc, fi), pi) in ap.iter_mut().zip(&f.fp).zip(&p.fp) {
                    *acc += (c + d) * fi - d * pi;
                }
            }
            None => {
                y.lincomb(1.0, &[(c, &f.fy)], None)?;
                a.lincomb(1.0, &[(c, &f.fa)], None)?;
                for (acc, fi) in ap.iter_mut().zip(&f.fp) {
                    *acc += c * fi;
                }
            }
        }
        prev = Some(f);
    }
    // dL/dx_start = a / alpha_start.
    a.lincomb(1.0 / lv[0].alpha, &[], None)?;
    Ok(Gradients {
        x_start: a,
        params: ap,
    })
}

/// Exact reverse-mode gradients of [`sample`] (the discrete sampler), storing the
/// trajectory: the reference [`adjoint`] is checked against. Returns the sample too.
pub fn unrolled_gradients<T: Tensor, D: DifferentiableDenoiser<T> + ?Sized>(
    model: &D,
    grid: &Grid,
    x_start: &T,
    loss_grad: impl FnOnce(&T) -> Result<T>,
) -> Result<(T, Gradients<T>)> {
    check_grid(grid)?;
    let lv = grid.levels();
    let n = grid.steps();
    // Forward, keeping y_k and the step coefficients.
    let mut ys = Vec::with_capacity(n + 1);
    let mut coef = Vec::with_capacity(n);
    let mut y = x_start.clone();
    y.lincomb(1.0 / lv[0].alpha, &[], None)?;
    let mut prev_eps: Option<T> = None;
    for k in 0..n {
        let mut x = y.clone();
        x.lincomb(lv[k].alpha, &[], None)?;
        let e = epsilon(model, &x, lv[k], k)?;
        let (c, d) = step_coefficients(lv[k], lv[k + 1], (k > 0).then(|| lv[k - 1]));
        let d = if prev_eps.is_some() { d } else { 0.0 };
        ys.push(y.clone());
        match &prev_eps {
            Some(p) => y.lincomb(1.0, &[(c + d, &e), (-d, p)], None)?,
            None => y.lincomb(1.0, &[(c, &e)], None)?,
        }
        coef.push((c, d));
        prev_eps = Some(e);
    }
    let mut x_end = y;
    x_end.lincomb(lv[n].alpha, &[], None)?;
    let g = loss_grad(&x_end)?;
    // Reverse: E_k enters y_{k+1} with (c_k + d_k) and y_{k+2} with -d_{k+1}.
    let mut ybar_next = g.clone();
    ybar_next.lincomb(lv[n].alpha, &[], None)?; // adjoint of y_n
    let mut ybar_next2: Option<T> = None; // adjoint of y_{k+2}
    let mut params = vec![0.0; model.num_params()];
    for k in (0..n).rev() {
        let (c, d) = coef[k];
        let mut ebar = ybar_next.clone();
        ebar.lincomb(c + d, &[], None)?;
        if let Some(y2) = &ybar_next2 {
            let d_next = coef[k + 1].1;
            ebar.lincomb(1.0, &[(-d_next, y2)], None)?;
        }
        let mut x = ys[k].clone();
        x.lincomb(lv[k].alpha, &[], None)?;
        let (_, v) = eps_and_vjp(model, &x, lv[k], &ebar, k)?;
        for (acc, p) in params.iter_mut().zip(&v.params) {
            *acc += p;
        }
        let mut ybar = ybar_next.clone();
        ybar.lincomb(1.0, &[(lv[k].alpha, &v.x)], None)?;
        ybar_next2 = Some(std::mem::replace(&mut ybar_next, ybar));
    }
    ybar_next.lincomb(1.0 / lv[0].alpha, &[], None)?;
    Ok((
        x_end,
        Gradients {
            x_start: ybar_next,
            params,
        },
    ))
}

// ---------------------------------------------------------------------------------------
// Discrete adjoint of an exactly invertible sampler.

/// The BDIA-DDIM step coefficients at interior level `k >= 1`:
/// `x_{k+1} = gamma x_{k-1} + A x_k + B eps(x_k)`.
fn bdia_coefficients(grid: &Grid, gamma: f64, k: usize) -> (f64, f64) {
    let lv = grid.levels();
    let (a, b) = ddim_coefficients(lv[k], lv[k + 1]);
    let (ab, bb) = ddim_coefficients(lv[k], lv[k - 1]);
    (a - gamma * ab, b - gamma * bb)
}

fn check_bdia_ddim(bdia: &Bdia) -> Result<()> {
    if bdia.base() != BdiaBase::Ddim {
        return Err(InversionError::Unsupported {
            key: "BDIA base",
            reason: "the exact adjoint is implemented for BDIA-DDIM".into(),
        });
    }
    Ok(())
}

/// Exact gradients of BDIA-DDIM sampling ([`Bdia::sample`]) in memory independent of
/// the step count: the discrete adjoint of the sampler, walking its trajectory back by
/// exact BDIA inversion instead of storing it.
///
/// `end` is the final state returned by [`Bdia::sample`] (its `current` is the sample)
/// and `grad_end = dL/d(end.current)`. Each step costs one model call with its VJP.
/// Because the states are recomputed exactly (up to rounding), the result equals
/// reverse-mode differentiation of the unrolled sampler ([`bdia_unrolled_gradients`])
/// to rounding, at any step count.
pub fn bdia_adjoint<T: Tensor, D: DifferentiableDenoiser<T> + ?Sized>(
    model: &D,
    bdia: &Bdia,
    grid: &Grid,
    end: &BdiaState<T>,
    grad_end: &T,
) -> Result<Gradients<T>> {
    check_bdia_ddim(bdia)?;
    check_grid(grid)?;
    let n = grid.steps();
    if end.index != n {
        return Err(InversionError::GridMismatch {
            inverted: format!("a state at level {}", end.index),
            sampling: grid.describe(),
        });
    }
    diffusion_core::tensor::check_same_shape("BDIA state", end.current.shape(), end.previous.shape())?;
    diffusion_core::tensor::check_same_shape("loss gradient", end.current.shape(), grad_end.shape())?;
    let lv = grid.levels();
    let g = bdia.gamma();
    // (x_k, x_{k+1}) and their adjoints; x_{k+1}'s is complete when step k is reversed.
    let (mut x_k, mut x_next) = (end.previous.clone(), end.current.clone());
    let mut bar_next = grad_end.clone();
    let mut bar_k = grad_end.zeros_like();
    let mut params = vec![0.0; model.num_params()];
    for k in (1..n).rev() {
        let (a, b) = bdia_coefficients(grid, g, k);
        let mut weighted = bar_next.clone();
        weighted.lincomb(b, &[], None)?;
        let (e, v) = eps_and_vjp(model, &x_k, lv[k], &weighted, k)?;
        drop(weighted);
        bar_k.lincomb(1.0, &[(a, &bar_next), (1.0, &v.x)], None)?;
        params.iter_mut().zip(&v.params).for_each(|(acc, p)| *acc += p);
        // x_{k-1} = (x_{k+1} - A x_k - B eps(x_k)) / gamma; its adjoint starts at gamma bar_{k+1}.
        let mut x_prev = e;
        x_prev.lincomb(-b / g, &[(-a / g, &x_k), (1.0 / g, &x_next)], None)?;
        let mut bar_prev = bar_next;
        bar_prev.lincomb(g, &[], None)?;
        x_next = std::mem::replace(&mut x_k, x_prev);
        bar_next = std::mem::replace(&mut bar_k, bar_prev);
    }
    // The first step is plain DDIM: x_1 = a x_0 + b eps(x_0).
    let (a, b) = ddim_coefficients(lv[0], lv[1]);
    let mut weighted = bar_next.clone();
    weighted.lincomb(b, &[], None)?;
    let (_, v) = eps_and_vjp(model, &x_k, lv[0], &weighted, 0)?;
    bar_k.lincomb(1.0, &[(a, &bar_next), (1.0, &v.x)], None)?;
    params.iter_mut().zip(&v.params).for_each(|(acc, p)| *acc += p);
    Ok(Gradients {
        x_start: bar_k,
        params,
    })
}

/// Reference for [`bdia_adjoint`]: BDIA-DDIM sampling written out in its pair form,
/// storing the whole trajectory, then reverse-mode differentiated step by step (memory
/// linear in steps). Returns the sample and the gradients.
pub fn bdia_unrolled_gradients<T: Tensor, D: DifferentiableDenoiser<T> + ?Sized>(
    model: &D,
    bdia: &Bdia,
    grid: &Grid,
    x_start: &T,
    loss_grad: impl FnOnce(&T) -> Result<T>,
) -> Result<(T, Gradients<T>)> {
    check_bdia_ddim(bdia)?;
    check_grid(grid)?;
    let lv = grid.levels();
    let n = grid.steps();
    let g = bdia.gamma();
    let mut xs = vec![x_start.clone()];
    let (a, b) = ddim_coefficients(lv[0], lv[1]);
    let mut x1 = epsilon(model, x_start, lv[0], 0)?;
    x1.lincomb(b, &[(a, x_start)], None)?;
    xs.push(x1);
    for k in 1..n {
        let (a, b) = bdia_coefficients(grid, g, k);
        let mut next = epsilon(model, &xs[k], lv[k], k)?;
        next.lincomb(b, &[(a, &xs[k]), (g, &xs[k - 1])], None)?;
        xs.push(next);
    }
    let sample = xs[n].clone();
    let mut bars: Vec<T> = xs.iter().map(|x| x.zeros_like()).collect();
    bars[n] = loss_grad(&sample)?;
    let mut params = vec![0.0; model.num_params()];
    for k in (0..n).rev() {
        let (a, b) = if k == 0 {
            ddim_coefficients(lv[0], lv[1])
        } else {
            bdia_coefficients(grid, g, k)
        };
        let mut weighted = bars[k + 1].clone();
        weighted.lincomb(b, &[], None)?;
        let (_, v) = eps_and_vjp(model, &xs[k], lv[k], &weighted, k)?;
        let upstream = bars[k + 1].clone();
        bars[k].lincomb(1.0, &[(a, &upstream), (1.0, &v.x)], None)?;
        if k > 0 {
            bars[k - 1].lincomb(1.0, &[(g, &upstream)], None)?;
        }
        params.iter_mut().zip(&v.params).for_each(|(acc, p)| *acc += p);
    }
    let x_start_bar = bars.swap_remove(0);
    Ok((
        sample,
        Gradients {
            x_start: x_start_bar,
            params,
        },
    ))
}
