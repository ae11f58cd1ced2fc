//! Multistep exponential-integrator solvers in the log-SNR domain, in the style of the
//! papers' own code (DPM-Solver's `NoiseScheduleVP`, UniPC's `uni_pc.py`): DPM-Solver++
//! 2M/3M and UniPC (bh1/bh2, orders 1-3, with the UniC corrector).
//!
//! All work on the data prediction `x0(x, t)`. With `lambda = ln(alpha/sigma)` and
//! `h = lambda_t - lambda_s`, first order is
//! `x_t = (sigma_t/sigma_s) x_s - alpha_t expm1(-h) x0_s` (DDIM); higher orders add
//! finite differences of past predictions. Each update is one fused `lincomb`.

use diffusion_core::{Denoiser, NoiseSchedule, Tensor};

use crate::error::{Result, invalid};
use crate::eval::Evaluator;
use crate::grid::TimeGrid;
use crate::linalg::solve;

/// UniPC's `B(h)`: `bh1` is `B(h) = h`, `bh2` is `B(h) = e^h - 1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UniPcVariant {
    Bh1,
    Bh2,
}

/// Which multistep method [`sample`] runs.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum Method {
    /// DPM-Solver++ multistep (order 1 = DDIM, 2 = 2M, 3 = 3M).
    DpmSolverPp { order: usize },
    /// UniPC multistep with predictor order `order` (1-3); `corrector` applies UniC after
    /// every step but the last (which would cost an extra model call).
    UniPc {
        variant: UniPcVariant,
        order: usize,
        corrector: bool,
    },
}

impl Method {
    fn order(&self) -> usize {
        match *self {
            Self::DpmSolverPp { order } | Self::UniPc { order, .. } => order,
        }
    }
}

/// Options shared by the multistep methods.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MultistepOptions {
    /// Lower the order on the last steps (`min(order, steps remaining)`), as the
    /// reference implementations do by default.
    pub lower_order_final: bool,
}

impl Default for MultistepOptions {
    fn default() -> Self {
        Self {
            lower_order_final: true,
        }
    }
}

/// Past data predictions, most recent last.
#[derive(Clone, Debug)]
pub struct History<T> {
    pub times: Vec<f64>,
    pub models: Vec<T>,
}

impl<T> History<T> {
    fn push(&mut self, t: f64, m: T, keep: usize) {
        self.times.push(t);
        self.models.push(m);
        if self.times.len() > keep {
            self.times.remove(0);
            self.models.remove(0);
        }
    }
}

/// Checks a method's order and the grid length.
fn validate(method: &Method, grid: &TimeGrid) -> Result<()> {
    let order = method.order();
    let max = 3;
    if !(1..=max).contains(&order) {
        return Err(invalid("order", format!("must be 1..={max}, got {order}")));
    }
    if grid.steps() == 0 {
        return Err(invalid("steps", "must be at least 1"));
    }
    Ok(())
}

/// Samples from `x` at `grid.times()[0]` to the last grid time. Makes exactly
/// `grid.steps()` model calls.
pub fn sample<T, D, S>(
    eval: &Evaluator<'_, D, S>,
    x: &T,
    grid: &TimeGrid,
    method: Method,
    options: &MultistepOptions,
) -> Result<T>
where
    T: Tensor,
    D: Denoiser<T> + ?Sized,
    S: NoiseSchedule + ?Sized,
{
    validate(&method, grid)?;
    match method {
        Method::DpmSolverPp { order } => dpmpp(eval, x, grid, order, options),
        Method::UniPc {
            variant,
            order,
            corrector,
        } => unipc_sample(eval, x, grid, variant, order, corrector, options, None),
    }
}

/// The predictor order of step `step` (1-based) of `steps`.
fn step_order(order: usize, step: usize, steps: usize, lower_order_final: bool) -> usize {
    let o = order.min(step);
    if lower_order_final {
        o.min(steps + 1 - step)
    } else {
        o
    }
}

fn dpmpp<T, D, S>(
    eval: &Evaluator<'_, D, S>,
    x: &T,
    grid: &TimeGrid,
    order: usize,
    options: &MultistepOptions,
) -> Result<T>
where
    T: Tensor,
    D: Denoiser<T> + ?Sized,
    S: NoiseSchedule + ?Sized,
{
    let ns = eval.schedule;
    let ts = grid.times();
    let steps = grid.steps();
    let mut x = x.clone();
    let mut hist = History {
        times: vec![],
        models: vec![],
    };
    hist.push(ts[0], eval.data(&x, ts[0])?, order);
    for step in 1..=steps {
        let t = ts[step];
        let o = step_order(order, step, steps, options.lower_order_final);
        let n = hist.times.len();
        let lam = |t: f64| ns.lambda(t);
        let (t0, m0) = (hist.times[n - 1], &hist.models[n - 1]);
        let h = lam(t) - lam(t0);
        let (alpha_t, ratio) = (ns.alpha(t), ns.sigma(t) / ns.sigma(t0));
        let phi1 = (-h).exp_m1();
        let mut terms: Vec<(f64, &T)> = vec![(ratio, &x), (-alpha_t * phi1, m0)];
        match o {
            1 => {}
            2 => {
                // D1 = (m0 - m1) / r0, x_t -= 0.5 alpha_t phi1 D1.
                let m1 = &hist.models[n - 2];
                let r0 = (lam(t0) - lam(hist.times[n - 2])) / h;
                let c = -0.5 * alpha_t * phi1 / r0;
                terms.push((c, m0));
                terms.push((-c, m1));
            }
            _ => {
                let (m1, m2) = (&hist.models[n - 2], &hist.models[n - 3]);
                let (l0, l1, l2) = (lam(t0), lam(hist.times[n - 2]), lam(hist.times[n - 3]));
                let (r0, r1) = ((l0 - l1) / h, (l1 - l2) / h);
                let phi2 = phi1 / h + 1.0;
                let phi3 = phi2 / h - 0.5;
                // D1_0 = (m0 - m1)/r0, D1_1 = (m1 - m2)/r1,
                // D1 = D1_0 + r0/(r0 + r1) (D1_0 - D1_1), D2 = (D1_0 - D1_1)/(r0 + r1),
                // x_t += alpha_t phi2 D1 - alpha_t phi3 D2.
                let (a, b) = (alpha_t * phi2, -alpha_t * phi3);
                let c_d10 = a * (1.0 + r0 / (r0 + r1)) + b / (r0 + r1);
                let c_d11 = -a * r0 / (r0 + r1) - b / (r0 + r1);
                terms.push((c_d10 / r0, m0));
                terms.push((-c_d10 / r0 + c_d11 / r1, m1));
                terms.push((-c_d11 / r1, m2));
            }
        }
        let mut next = x.zeros_like();
        next.lincomb(0.0, &terms, None)?;
        x = next;
        if step < steps {
            let m = eval.data(&x, t)?;
            hist.push(t, m, order);
        }
    }
    Ok(x)
}

/// One UniPC update from the last history entry to `t` (official `multistep_uni_pc_bh_update`,
/// data prediction). With `corrector`, the model is called at the predicted point and
/// the corrected sample is returned with that model output (reused by the next step).
pub fn unipc_update<T, D, S>(
    eval: &Evaluator<'_, D, S>,
    x: &T,
    hist: &History<T>,
    t: f64,
    order: usize,
    variant: UniPcVariant,
    corrector: bool,
) -> Result<(T, Option<T>)>
where
    T: Tensor,
    D: Denoiser<T> + ?Sized,
    S: NoiseSchedule + ?Sized,
{
    let ns = eval.schedule;
    let n = hist.times.len();
    if order == 0 || order > n {
        return Err(invalid(
            "order",
            format!("{order} needs {order} past model outputs, have {n}"),
        ));
    }
    let t0 = hist.times[n - 1];
    let m0 = &hist.models[n - 1];
    let l0 = ns.lambda(t0);
    let h = ns.lambda(t) - l0;
    let alpha_t = ns.alpha(t);
    let ratio = ns.sigma(t) / ns.sigma(t0);
    let hh = -h;
    let h_phi_1 = hh.exp_m1();
    let b_h = match variant {
        UniPcVariant::Bh1 => hh,
        UniPcVariant::Bh2 => hh.exp_m1(),
    };
    let mut rks: Vec<f64> = (1..order)
        .map(|i| (ns.lambda(hist.times[n - 1 - i]) - l0) / h)
        .collect();
    rks.push(1.0);
    let mut rmat = Vec::with_capacity(order);
    let mut bvec = Vec::with_capacity(order);
    let mut h_phi_k = h_phi_1 / hh - 1.0;
    let mut factorial = 1.0;
    for i in 1..=order {
        rmat.push(rks.iter().map(|r| r.powi(i as i32 - 1)).collect::<Vec<f64>>());
        bvec.push(h_phi_k * factorial / b_h);
        factorial *= (i + 1) as f64;
        h_phi_k = h_phi_k / hh - 1.0 / factorial;
    }
    // x_t_ = ratio x - alpha_t h_phi_1 m0; residual terms D1_k = (m_k - m0) / r_k.
    let base: Vec<(f64, &T)> = vec![(ratio, x), (-alpha_t * h_phi_1, m0)];
    let mut pred_terms = base.clone();
    if order >= 2 {
        let rhos_p = if order == 2 {
            vec![0.5]
        } else {
            let sub: Vec<Vec<f64>> = rmat[..order - 1]
                .iter()
                .map(|r| r[..order - 1].to_vec())
                .collect();
            solve(sub, bvec[..order - 1].to_vec())?
        };
        push_residuals(&mut pred_terms, hist, &rhos_p, &rks, -alpha_t * b_h);
    }
    let mut x_t = x.zeros_like();
    x_t.lincomb(0.0, &pred_terms, None)?;
    if !corrector {
        return Ok((x_t, None));
    }
    let model_t = eval.data(&x_t, t)?;
    let rhos_c = if order == 1 { vec![0.5] } else { solve(rmat, bvec)? };
    let mut corr_terms = base;
    push_residuals(&mut corr_terms, hist, &rhos_c[..order - 1], &rks, -alpha_t * b_h);
    let c_last = -alpha_t * b_h * rhos_c[order - 1];
    corr_terms.push((c_last, &model_t));
    corr_terms.push((-c_last, m0));
    x_t.lincomb(0.0, &corr_terms, None)?;
    Ok((x_t, Some(model_t)))
}

/// Adds `scale * sum_k rho_k D1_k` with `D1_k = (m_k - m_0) / r_k` (m_0 the latest output).
fn push_residuals<'a, T>(
    terms: &mut Vec<(f64, &'a T)>,
    hist: &'a History<T>,
    rhos: &[f64],
    rks: &[f64],
    scale: f64,
) {
    let n = hist.models.len();
    for (k, rho) in rhos.iter().enumerate() {
        let c = scale * rho / rks[k];
        terms.push((c, &hist.models[n - 2 - k]));
        terms.push((-c, &hist.models[n - 1]));
    }
}

/// Lagrange interpolation (in `t`) of the last `dc_order + 1` model outputs at
/// `t_ = ratio t_last + (1 - ratio) t_prev`: DC-Solver's dynamic compensation.
pub fn dynamic_compensation<T: Tensor>(hist: &History<T>, dc_order: usize, ratio: f64) -> Result<T> {
    let n = hist.times.len();
    if n < dc_order + 1 || n < 2 {
        return Err(invalid(
            "dc_order",
            format!("needs {} past outputs, have {n}", dc_order + 1),
        ));
    }
    let target = ratio * hist.times[n - 1] + (1.0 - ratio) * hist.times[n - 2];
    let idx: Vec<usize> = (0..=dc_order).map(|i| n - 1 - i).collect();
    let mut terms = Vec::with_capacity(idx.len());
    for &i in &idx {
        let mut c = 1.0;
        for &j in &idx {
            if i != j {
                c *= (target - hist.times[j]) / (hist.times[i] - hist.times[j]);
            }
        }
        terms.push((c, &hist.models[i]));
    }
    let mut out = hist.models[n - 1].zeros_like();
    out.lincomb(0.0, &terms, None)?;
    Ok(out)
}

/// The UniPC sampling loop (official `sample(method='multistep')`), optionally with
/// DC-Solver's per-step compensation ratios (`(ratios, dc_order)`; ratio 1 = none).
#[allow(clippy::type_complexity)]
pub(crate) fn unipc_sample<T, D, S>(
    eval: &Evaluator<'_, D, S>,
    x: &T,
    grid: &TimeGrid,
    variant: UniPcVariant,
    order: usize,
    corrector: bool,
    options: &MultistepOptions,
    dc: Option<(&[f64], usize)>,
) -> Result<T>
where
    T: Tensor,
    D: Denoiser<T> + ?Sized,
    S: NoiseSchedule + ?Sized,
{
    let ts = grid.times();
    let steps = grid.steps();
    if let Some((ratios, _)) = dc
        && ratios.len() != steps
    {
        return Err(invalid(
            "dc_ratios",
            format!("{} ratios for {steps} steps", ratios.len()),
        ));
    }
    let keep = order.max(dc.map_or(0, |(_, o)| o + 1));
    let mut x = x.clone();
    let mut hist = History {
        times: vec![],
        models: vec![],
    };
    hist.push(ts[0], eval.data(&x, ts[0])?, keep);
    for step in 1..=steps {
        let t = ts[step];
        if let Some((ratios, dc_order)) = dc {
            let r = ratios[step - 1];
            if r != 1.0 && hist.times.len() > dc_order {
                let m = dynamic_compensation(&hist, dc_order, r)?;
                *hist.models.last_mut().expect("non-empty") = m;
            }
        }
        let o = step_order(order, step, steps, options.lower_order_final);
        let use_corrector = corrector && step < steps;
        let (next, model) = unipc_update(eval, &x, &hist, t, o, variant, use_corrector)?;
        x = next;
        if step < steps {
            let m = match model {
                Some(m) => m,
                None => eval.data(&x, t)?,
            };
            hist.push(t, m, keep);
        }
    }
    Ok(x)
}
