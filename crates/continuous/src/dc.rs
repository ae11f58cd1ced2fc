//! DC-Solver (Zhao et al. 2024): UniPC with dynamic compensation.
//!
//! Before step `i`, the latest model output is replaced by the Lagrange interpolation
//! (in `t`) of the last `dc_order + 1` outputs, evaluated at
//! `t_ = rho_i t_{i-1} + (1 - rho_i) t_{i-2}`; the ratios `rho_i` are searched once on a
//! few trajectories against the exact ODE solution at the grid times (the paper's
//! ground truth), then reused for any sample. A cascade polynomial regression predicts
//! ratios for step counts that were not searched.
//!
//! The search minimises each step's squared error over `rho` by a coarse scan and a
//! golden-section refinement (deterministic; the paper's code runs AdamW for 40
//! iterations). Each trial costs one model call (the corrector's).

use diffusion_core::{Denoiser, NoiseSchedule, Tensor};

use crate::error::{Result, invalid};
use crate::eval::Evaluator;
use crate::grid::TimeGrid;
use crate::linalg::{polyfit, polyval};
use crate::multistep::{History, MultistepOptions, UniPcVariant, dynamic_compensation, unipc_update};

/// The UniPC configuration DC-Solver compensates.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DcSolver {
    pub variant: UniPcVariant,
    pub order: usize,
    /// Degree of the Lagrange interpolation (the paper uses 2).
    pub dc_order: usize,
    pub lower_order_final: bool,
}

impl Default for DcSolver {
    fn default() -> Self {
        Self {
            variant: UniPcVariant::Bh2,
            // Order 2 (the paper's diffusers setting) beats order 3 on gmm2d at NFE 5-10.
            order: 2,
            dc_order: 2,
            lower_order_final: true,
        }
    }
}

/// Search range and resolution for the ratios.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SearchOptions {
    pub min_ratio: f64,
    pub max_ratio: f64,
    /// Points of the coarse scan.
    pub scan_points: usize,
    /// Golden-section iterations after the scan.
    pub refine_iterations: usize,
}

impl Default for SearchOptions {
    fn default() -> Self {
        Self {
            min_ratio: -1.0,
            max_ratio: 3.0,
            scan_points: 41,
            refine_iterations: 30,
        }
    }
}

impl DcSolver {
    fn validate(&self) -> Result<()> {
        if !(1..=3).contains(&self.order) {
            return Err(invalid("order", format!("must be 1..=3, got {}", self.order)));
        }
        if !(1..=3).contains(&self.dc_order) {
            return Err(invalid(
                "dc_order",
                format!("must be 1..=3, got {}", self.dc_order),
            ));
        }
        Ok(())
    }

    fn keep(&self) -> usize {
        self.order.max(self.dc_order + 1)
    }

    /// Samples with `ratios` (one per step; 1 means no compensation).
    pub fn sample<T, D, S>(
        &self,
        eval: &Evaluator<'_, D, S>,
        x: &T,
        grid: &TimeGrid,
        ratios: &[f64],
    ) -> Result<T>
    where
        T: Tensor,
        D: Denoiser<T> + ?Sized,
        S: NoiseSchedule + ?Sized,
    {
        self.validate()?;
        if let Some(r) = ratios.iter().find(|r| !r.is_finite()) {
            return Err(invalid("dc_ratios", format!("ratio {r} is not finite")));
        }
        let opts = MultistepOptions {
            lower_order_final: self.lower_order_final,
        };
        crate::multistep::unipc_sample(
            eval,
            x,
            grid,
            self.variant,
            self.order,
            true,
            &opts,
            Some((ratios, self.dc_order)),
        )
    }

    /// Searches the ratios on the trajectories starting at `x` (a small batch), given the
    /// exact ODE states `targets[i]` at `grid.times()[i + 1]` for every step.
    pub fn search<T, D, S>(
        &self,
        eval: &Evaluator<'_, D, S>,
        x: &T,
        grid: &TimeGrid,
        targets: &[T],
        options: &SearchOptions,
    ) -> Result<Vec<f64>>
    where
        T: Tensor,
        D: Denoiser<T> + ?Sized,
        S: NoiseSchedule + ?Sized,
    {
        self.validate()?;
        let steps = grid.steps();
        if targets.len() != steps {
            return Err(invalid(
                "targets",
                format!("{} targets for {steps} steps", targets.len()),
            ));
        }
        let ordered = options.min_ratio < options.max_ratio;
        if !ordered || options.scan_points < 2 {
            return Err(invalid(
                "search range",
                "need min_ratio < max_ratio and >= 2 scan points",
            ));
        }
        let ts = grid.times();
        let keep = self.keep();
        let mut x = x.clone();
        let mut hist = History {
            times: vec![ts[0]],
            models: vec![eval.data(&x, ts[0])?],
        };
        let mut ratios = Vec::with_capacity(steps);
        for step in 1..=steps {
            let t = ts[step];
            let mut o = self.order.min(step);
            if self.lower_order_final {
                o = o.min(steps + 1 - step);
            }
            let corrector = step < steps;
            let mut ratio = 1.0;
            if hist.times.len() > self.dc_order {
                let target = &targets[step - 1];
                let original = hist.models.last().expect("non-empty").clone();
                let mut loss = |r: f64| -> Result<f64> {
                    let m = dynamic_compensation(&hist, self.dc_order, r)?;
                    let mut trial = hist.clone();
                    *trial.models.last_mut().expect("non-empty") = m;
                    let (xt, _) = unipc_update(eval, &x, &trial, t, o, self.variant, corrector)?;
                    let mut diff = xt;
                    diff.lincomb(1.0, &[(-1.0, target)], None)?;
                    Ok(diff.sum_squares())
                };
                ratio = minimize(&mut loss, options)?;
                *hist.models.last_mut().expect("non-empty") = original;
                let m = dynamic_compensation(&hist, self.dc_order, ratio)?;
                *hist.models.last_mut().expect("non-empty") = m;
            }
            ratios.push(ratio);
            let (next, model) = unipc_update(eval, &x, &hist, t, o, self.variant, corrector)?;
            x = next;
            if step < steps {
                let m = match model {
                    Some(m) => m,
                    None => eval.data(&x, t)?,
                };
                hist.times.push(t);
                hist.models.push(m);
                if hist.times.len() > keep {
                    hist.times.remove(0);
                    hist.models.remove(0);
                }
            }
        }
        Ok(ratios)
    }
}

/// Coarse scan, then golden-section search around the best scan point.
fn minimize(loss: &mut dyn FnMut(f64) -> Result<f64>, o: &SearchOptions) -> Result<f64> {
    let n = o.scan_points;
    let xs: Vec<f64> = (0..n)
        .map(|i| o.min_ratio + (o.max_ratio - o.min_ratio) * i as f64 / (n - 1) as f64)
        .collect();
    let mut best = (f64::INFINITY, 1.0);
    let mut best_i = 0;
    for (i, &x) in xs.iter().enumerate() {
        let v = loss(x)?;
        if v < best.0 {
            best = (v, x);
            best_i = i;
        }
    }
    let (mut a, mut b) = (xs[best_i.saturating_sub(1)], xs[(best_i + 1).min(n - 1)]);
    let g = 0.5 * (5f64.sqrt() - 1.0);
    let (mut c, mut d) = (b - g * (b - a), a + g * (b - a));
    let (mut fc, mut fd) = (loss(c)?, loss(d)?);
    for _ in 0..o.refine_iterations {
        if fc < fd {
            b = d;
            d = c;
            fd = fc;
            c = b - g * (b - a);
            fc = loss(c)?;
        } else {
            a = c;
            c = d;
            fc = fd;
            d = a + g * (b - a);
            fd = loss(d)?;
        }
    }
    let (v, x) = if fc < fd { (fc, c) } else { (fd, d) };
    Ok(if v < best.0 { x } else { best.1 })
}

/// Cascade polynomial regression: per searched step count `N`, the ratios as a
/// polynomial (degree `inner_degree`) of the step position `u = i / N`; then each
/// coefficient as a polynomial (degree `outer_degree`) of `N`.
#[derive(Clone, Debug, PartialEq)]
pub struct CascadeRegression {
    /// `outer[k]`: coefficients (in N) of the inner coefficient of `u^k`.
    pub outer: Vec<Vec<f64>>,
    /// Ratios at steps before this index (1-based) are 1 (warm-up, no compensation).
    pub first_step: usize,
}

impl CascadeRegression {
    /// Fits from `(N, ratios)` pairs; steps before `first_step` (1-based) are ignored.
    pub fn fit(
        runs: &[(usize, Vec<f64>)],
        first_step: usize,
        inner_degree: usize,
        outer_degree: usize,
    ) -> Result<Self> {
        if runs.len() <= outer_degree {
            return Err(invalid(
                "runs",
                format!("{} step counts cannot fit degree {outer_degree} in N", runs.len()),
            ));
        }
        let mut inner = Vec::with_capacity(runs.len());
        for (n, ratios) in runs {
            if ratios.len() != *n {
                return Err(invalid("runs", format!("{} ratios for N = {n}", ratios.len())));
            }
            let (u, r): (Vec<f64>, Vec<f64>) = (first_step..=*n)
                .map(|i| (i as f64 / *n as f64, ratios[i - 1]))
                .unzip();
            inner.push(polyfit(&u, &r, inner_degree)?);
        }
        let ns: Vec<f64> = runs.iter().map(|(n, _)| *n as f64).collect();
        let outer = (0..=inner_degree)
            .map(|k| {
                let ck: Vec<f64> = inner.iter().map(|c| c[k]).collect();
                polyfit(&ns, &ck, outer_degree)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { outer, first_step })
    }

    /// Predicted ratios for `n` steps.
    pub fn predict(&self, n: usize) -> Vec<f64> {
        let coeffs: Vec<f64> = self.outer.iter().map(|c| polyval(c, n as f64)).collect();
        (1..=n)
            .map(|i| {
                if i < self.first_step {
                    1.0
                } else {
                    polyval(&coeffs, i as f64 / n as f64)
                }
            })
            .collect()
    }
}
