//! Adaptive Dormand-Prince 5(4) integration, and the probability-flow ODE it solves.
//!
//! The integrator is generic over any [`Tensor`] state and right-hand side. Every stage
//! is one fused [`Tensor::lincomb`]. The error of a step is measured in the max norm of
//! `err_i / (atol + rtol * max(|y_i|, |y_new_i|))` over *all* elements: with a batch of
//! independent samples this keeps every sample within tolerance (Hairer's RMS norm would
//! let one sample of many drift).

use diffusion_core::{Denoiser, NoiseSchedule, Tensor};

use crate::error::{ContinuousError, Result, invalid};
use crate::eval::Evaluator;

/// Tolerances and limits of [`integrate`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Dopri5Options {
    pub rtol: f64,
    pub atol: f64,
    /// First trial step (absolute value); `None` picks one from the first derivative.
    pub first_step: Option<f64>,
    /// Accepted plus rejected steps before giving up.
    pub max_steps: usize,
}

impl Default for Dopri5Options {
    fn default() -> Self {
        Self {
            rtol: 1e-6,
            atol: 1e-6,
            first_step: None,
            max_steps: 1_000_000,
        }
    }
}

impl Dopri5Options {
    pub fn tolerance(tol: f64) -> Self {
        Self {
            rtol: tol,
            atol: tol,
            ..Self::default()
        }
    }

    fn validate(&self) -> Result<()> {
        let ok = |v: f64| v.is_finite() && v >= 0.0;
        if !(ok(self.rtol) && ok(self.atol)) || (self.rtol == 0.0 && self.atol == 0.0) {
            return Err(invalid(
                "tolerances",
                format!(
                    "rtol and atol must be finite, non-negative and not both zero (got {} and {})",
                    self.rtol, self.atol
                ),
            ));
        }
        if self.rtol > 0.0 && self.rtol < 1e-14 {
            return Err(invalid("rtol", format!("{} is below f64 resolution", self.rtol)));
        }
        if let Some(h) = self.first_step
            && !(h.is_finite() && h > 0.0)
        {
            return Err(invalid("first_step", format!("must be positive, got {h}")));
        }
        if self.max_steps == 0 {
            return Err(invalid("max_steps", "must be at least 1"));
        }
        Ok(())
    }
}

/// Work done by an integration.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Dopri5Stats {
    pub accepted: usize,
    pub rejected: usize,
    /// Right-hand-side evaluations.
    pub evaluations: usize,
}

// Dormand & Prince (1980) tableau; B is the 5th-order solution (also the 7th stage row,
// which makes the method first-same-as-last), E = B - B_hat of the embedded 4th order.
const C: [f64; 7] = [0.0, 0.2, 0.3, 0.8, 8.0 / 9.0, 1.0, 1.0];
const A2: [f64; 1] = [0.2];
const A3: [f64; 2] = [3.0 / 40.0, 9.0 / 40.0];
const A4: [f64; 3] = [44.0 / 45.0, -56.0 / 15.0, 32.0 / 9.0];
const A5: [f64; 4] = [
    19372.0 / 6561.0,
    -25360.0 / 2187.0,
    64448.0 / 6561.0,
    -212.0 / 729.0,
];
const A6: [f64; 5] = [
    9017.0 / 3168.0,
    -355.0 / 33.0,
    46732.0 / 5247.0,
    49.0 / 176.0,
    -5103.0 / 18656.0,
];
const B: [f64; 6] = [
    35.0 / 384.0,
    0.0,
    500.0 / 1113.0,
    125.0 / 192.0,
    -2187.0 / 6784.0,
    11.0 / 84.0,
];
const E: [f64; 7] = [
    71.0 / 57600.0,
    0.0,
    -71.0 / 16695.0,
    71.0 / 1920.0,
    -17253.0 / 339200.0,
    22.0 / 525.0,
    -1.0 / 40.0,
];

/// `base + h * sum_j a_j k_j` in one fused pass (zero coefficients skipped).
fn stage<T: Tensor>(base: &T, h: f64, a: &[f64], k: &[T]) -> Result<T> {
    let mut terms: Vec<(f64, &T)> = Vec::with_capacity(a.len() + 1);
    terms.push((1.0, base));
    terms.extend(
        a.iter()
            .zip(k)
            .filter(|(c, _)| **c != 0.0)
            .map(|(c, t)| (h * c, t)),
    );
    let mut out = base.zeros_like();
    out.lincomb(0.0, &terms, None)?;
    Ok(out)
}

/// Integrates `dy/ds = rhs(s, y)` from `(s0, y0)` through each of `outputs` (monotone,
/// all on one side of `s0`), landing exactly on every output point. Returns the state at
/// each output.
pub fn integrate<T: Tensor>(
    rhs: &mut dyn FnMut(f64, &T) -> Result<T>,
    s0: f64,
    y0: &T,
    outputs: &[f64],
    options: &Dopri5Options,
) -> Result<(Vec<T>, Dopri5Stats)> {
    options.validate()?;
    if outputs.is_empty() {
        return Ok((Vec::new(), Dopri5Stats::default()));
    }
    if !s0.is_finite() || outputs.iter().any(|s| !s.is_finite()) {
        return Err(ContinuousError::InvalidGrid(
            "integration points must be finite".into(),
        ));
    }
    let dir = if outputs[outputs.len() - 1] >= s0 {
        1.0
    } else {
        -1.0
    };
    let mut prev = s0;
    for &s in outputs {
        if (s - prev) * dir < 0.0 {
            return Err(ContinuousError::InvalidGrid(format!(
                "output points must be monotone away from s0 = {s0}; {s} comes after {prev}"
            )));
        }
        prev = s;
    }

    let mut stats = Dopri5Stats::default();
    let mut s = s0;
    let mut y = y0.clone();
    let mut f = rhs(s, &y)?;
    stats.evaluations += 1;
    let span = (outputs[outputs.len() - 1] - s0).abs();
    let mut h = match options.first_step {
        Some(h) => h,
        None => initial_step(&y, &f, span, options),
    };
    let mut results = Vec::with_capacity(outputs.len());
    for &target in outputs {
        while (target - s) * dir > 0.0 {
            if stats.accepted + stats.rejected >= options.max_steps {
                return Err(ContinuousError::IntegrationFailed {
                    at: s,
                    reason: format!("more than {} steps", options.max_steps),
                });
            }
            let remaining = (target - s).abs();
            let last = h >= remaining * (1.0 - 1e-12);
            let step = if last { remaining } else { h };
            if step <= 1e-14 * s.abs().max(span) {
                return Err(ContinuousError::IntegrationFailed {
                    at: s,
                    reason: format!("step size {step} underflowed"),
                });
            }
            let hs = dir * step;
            let mut k: Vec<T> = Vec::with_capacity(7);
            k.push(f.clone());
            for (i, a) in [&A2[..], &A3, &A4, &A5, &A6].into_iter().enumerate() {
                let yi = stage(&y, hs, a, &k)?;
                k.push(rhs(s + C[i + 1] * hs, &yi)?);
            }
            let y_new = stage(&y, hs, &B, &k)?;
            let s_new = if last { target } else { s + hs };
            let f_new = rhs(s_new, &y_new)?;
            k.push(f_new);
            stats.evaluations += 6;
            let err_terms: Vec<(f64, &T)> = E
                .iter()
                .zip(&k)
                .filter(|(e, _)| **e != 0.0)
                .map(|(e, t)| (hs * e, t))
                .collect();
            let mut err = y.zeros_like();
            err.lincomb(0.0, &err_terms, None)?;
            let norm = error_norm(&err, &y, &y_new, options);
            if norm <= 1.0 {
                stats.accepted += 1;
                s = s_new;
                y = y_new;
                f = k.pop().expect("seven stages");
                let grow = if norm == 0.0 {
                    5.0
                } else {
                    (0.9 * norm.powf(-0.2)).clamp(0.2, 5.0)
                };
                // A step cut short to land on an output says nothing about the step size.
                if !last || step >= h {
                    h = step * grow;
                }
            } else {
                stats.rejected += 1;
                let shrink = if norm.is_finite() {
                    (0.9 * norm.powf(-0.2)).clamp(0.1, 0.9)
                } else {
                    0.1
                };
                h = step * shrink;
            }
        }
        results.push(y.clone());
    }
    Ok((results, stats))
}

fn error_norm<T: Tensor>(err: &T, y: &T, y_new: &T, o: &Dopri5Options) -> f64 {
    let (e, a, b) = (err.to_f64_vec(), y.to_f64_vec(), y_new.to_f64_vec());
    let mut worst = 0.0f64;
    for ((e, a), b) in e.iter().zip(&a).zip(&b) {
        let r = e.abs() / (o.atol + o.rtol * a.abs().max(b.abs()));
        if !r.is_finite() {
            return f64::INFINITY;
        }
        worst = worst.max(r);
    }
    worst
}

fn initial_step<T: Tensor>(y: &T, f: &T, span: f64, o: &Dopri5Options) -> f64 {
    let (yv, fv) = (y.to_f64_vec(), f.to_f64_vec());
    let scale = |v: f64, y: f64| v.abs() / (o.atol + o.rtol * y.abs());
    let d0 = yv.iter().map(|v| scale(*v, *v)).fold(0.0, f64::max);
    let d1 = fv.iter().zip(&yv).map(|(f, y)| scale(*f, *y)).fold(0.0, f64::max);
    let h = if d0 < 1e-5 || d1 < 1e-5 {
        1e-6
    } else {
        0.01 * d0 / d1
    };
    h.min(span).max(1e-12 * span)
}

/// The probability-flow ODE of a diffusion model in the variance-exploding view:
/// `y = x / alpha`, `s = sigma / alpha`, `dy/ds = eps(alpha y; t(s))`, valid for any
/// schedule (the model sees `x = alpha(t) y` at `t = t_of_lambda(-ln s)`).
pub struct ProbabilityFlow<'a, D: ?Sized, S: ?Sized> {
    pub eval: Evaluator<'a, D, S>,
}

impl<D: ?Sized, S: ?Sized> std::fmt::Debug for ProbabilityFlow<'_, D, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProbabilityFlow")
            .field("eval", &self.eval)
            .finish()
    }
}

impl<'a, D: ?Sized, S: NoiseSchedule + ?Sized> ProbabilityFlow<'a, D, S> {
    pub fn new(eval: Evaluator<'a, D, S>) -> Self {
        Self { eval }
    }

    /// The schedule time at noise-to-signal ratio `s`.
    pub fn time_of(&self, s: f64) -> f64 {
        self.eval.schedule.t_of_lambda(-s.ln())
    }

    /// `dy/ds` at `(s, y)`.
    pub fn velocity<T: Tensor>(&self, s: f64, y: &T) -> Result<T>
    where
        D: Denoiser<T>,
    {
        let t = self.time_of(s);
        let mut x = y.zeros_like();
        x.lincomb(0.0, &[(self.eval.schedule.alpha(t), y)], None)?;
        self.eval.noise(&x, t)
    }

    /// Solves from `x` at time `t_start` to each of `t_outputs` (decreasing or increasing),
    /// returning samples in the schedule's own (`x`) space. A time `t` whose `s` is 0 is
    /// allowed (the clean end of a VP table).
    pub fn solve<T: Tensor>(
        &self,
        x: &T,
        t_start: f64,
        t_outputs: &[f64],
        options: &Dopri5Options,
    ) -> Result<(Vec<T>, Dopri5Stats)>
    where
        D: Denoiser<T>,
    {
        let sched = self.eval.schedule;
        let s_out: Vec<f64> = t_outputs.iter().map(|&t| sched.sigma_over_alpha(t)).collect();
        self.solve_s(x, t_start, &s_out, options)
    }

    /// As [`ProbabilityFlow::solve`] with the end points given as `s = sigma / alpha`.
    pub fn solve_s<T: Tensor>(
        &self,
        x: &T,
        t_start: f64,
        s_outputs: &[f64],
        options: &Dopri5Options,
    ) -> Result<(Vec<T>, Dopri5Stats)>
    where
        D: Denoiser<T>,
    {
        let sched = self.eval.schedule;
        if let Some(s) = s_outputs.iter().find(|s| !(s.is_finite() && **s >= 0.0)) {
            return Err(invalid(
                "end point",
                format!("s = sigma/alpha must be >= 0, got {s}"),
            ));
        }
        let s0 = sched.sigma_over_alpha(t_start);
        let mut y0 = x.zeros_like();
        y0.lincomb(0.0, &[(1.0 / sched.alpha(t_start), x)], None)?;
        let mut rhs = |s: f64, y: &T| self.velocity(s, y);
        let (ys, stats) = integrate(&mut rhs, s0, &y0, s_outputs, options)?;
        let xs = ys
            .into_iter()
            .zip(s_outputs)
            .map(|(y, &s)| {
                let a = sched.alpha(self.time_of(s));
                let mut out = y.zeros_like();
                out.lincomb(0.0, &[(a, &y)], None)?;
                Ok(out)
            })
            .collect::<Result<Vec<T>>>()?;
        Ok((xs, stats))
    }
}
