//! DPM-Solver-v3 (Zheng et al. 2023): empirical model statistics (EMS) and the
//! predictor-corrector multistep sampler that uses them.
//!
//! In the VE view `y = x / alpha`, `s = e^{-lambda}`, the probability-flow ODE reads
//! `dy/dlambda = -s eps = -(l y + f)` with the rescaled model output `f = s eps - l y`.
//! Per dimension, `l(lambda)` is chosen so `f` depends as little as possible on `y`
//! (`l = E[sigma d eps_d / d x_d]`), and `s(lambda), b(lambda)` so that `f' ~ s f + b`
//! along trajectories (least squares: `s = Cov(f, f') / Var(f)`, `b = E f' - s E f`).
//! Then `g = e^{-S} f - B` (with `S = int s`, `B = int e^{-S} b`) is nearly constant in
//! `lambda`, and the exact solution
//! `y_t = e^{L_s - L_t} y_s - e^{-L_t} int_s^t e^{L+S} (g + B) dlambda`
//! is integrated with `g` expanded in a Taylor series. All integrals are trapezoidal
//! sums on the statistics' own log-SNR grid; sampler times snap to that grid.
//!
//! The statistics are per element of one batch item (shared across the batch), so the
//! updates use per-element coefficients and run on the host (`to_f64_vec`).

use std::path::Path;

use diffusion_core::{Denoiser, NoiseSchedule, Parameterization, Tensor};
use ndarray::{Array2, ArrayD};
use ndarray_npy::{NpzReader, NpzWriter};

use crate::error::{ContinuousError, Result, invalid};
use crate::eval::Evaluator;
use crate::grid::TimeGrid;
use crate::linalg::solve;

/// Empirical model statistics on a uniform log-SNR grid (increasing lambda: from the
/// noisiest time to the cleanest).
#[derive(Clone, Debug, PartialEq)]
pub struct ModelStatistics {
    /// `K + 1` log-SNR values, increasing.
    pub lambdas: Vec<f64>,
    /// `[K + 1, D]` each, `D` = elements per batch item.
    pub l: Array2<f64>,
    pub s: Array2<f64>,
    pub b: Array2<f64>,
}

/// Options of [`ModelStatistics::compute`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EmsOptions {
    /// Number of log-SNR intervals `K` (the paper's CIFAR-10 setting is 1200).
    pub steps: usize,
    /// Finite-difference step for Jacobian diagonals, relative to `sigma`.
    pub jacobian_step: f64,
    /// Finite-difference step in lambda for the total derivative along the ODE.
    pub lambda_step: f64,
}

impl Default for EmsOptions {
    fn default() -> Self {
        Self {
            steps: 1200,
            jacobian_step: 1e-4,
            lambda_step: 1e-4,
        }
    }
}

fn to_rows<T: Tensor>(t: &T) -> Vec<f64> {
    t.to_f64_vec()
}

impl ModelStatistics {
    /// Elements per batch item.
    pub fn dim(&self) -> usize {
        self.l.ncols()
    }

    /// Number of grid intervals `K`.
    pub fn steps(&self) -> usize {
        self.lambdas.len() - 1
    }

    /// The statistics of `eval`'s model between `t_start` (noisy) and `t_end` (clean),
    /// from data samples `x0` (`[N, ...]`) and standard-normal `noise` of the same shape.
    ///
    /// As the paper's procedure: at every grid lambda, `x = alpha x0 + sigma z`; `l` from
    /// the exact Jacobian diagonal (central differences, one pass per dimension, instead
    /// of a Rademacher probe), `f'` as the total derivative along the ODE (central
    /// difference in lambda), `l'` by differentiating `l` along the grid. The same
    /// `(x0, z)` are used at every lambda, which keeps `l` smooth enough to differentiate.
    pub fn compute<T, D, S>(
        eval: &Evaluator<'_, D, S>,
        x0: &T,
        noise: &T,
        t_start: f64,
        t_end: f64,
        options: &EmsOptions,
    ) -> Result<Self>
    where
        T: Tensor,
        D: Denoiser<T> + ?Sized,
        S: NoiseSchedule + ?Sized,
    {
        let ns = eval.schedule;
        if options.steps < 2 {
            return Err(invalid("steps", "the statistics need at least 2 grid intervals"));
        }
        if x0.shape() != noise.shape() || x0.shape().len() < 2 || x0.shape()[0] < 2 {
            return Err(invalid(
                "samples",
                format!(
                    "x0 {:?} and noise {:?} must be equal [N >= 2, ...] shapes",
                    x0.shape(),
                    noise.shape()
                ),
            ));
        }
        let ordered = t_start > t_end;
        if !ordered {
            return Err(ContinuousError::InvalidGrid(format!(
                "need t_start > t_end, got {t_start}, {t_end}"
            )));
        }
        let n = x0.shape()[0];
        let d = x0.len() / n;
        let (lt, l0) = (ns.lambda(t_start), ns.lambda(t_end));
        let k = options.steps;
        let lambdas: Vec<f64> = (0..=k).map(|i| lt + (l0 - lt) * i as f64 / k as f64).collect();
        let x0v = to_rows(x0);
        let zv = to_rows(noise);
        let at = |lam: f64| {
            let t = ns.t_of_lambda(lam);
            (t, ns.alpha(t), ns.sigma(t))
        };
        let mut l = Array2::zeros((k + 1, d));
        let mut eps_all = Vec::with_capacity(k + 1);
        // Pass 1: l(lambda) and eps at every grid point.
        for (i, &lam) in lambdas.iter().enumerate() {
            let (t, a, sg) = at(lam);
            let xv: Vec<f64> = x0v.iter().zip(&zv).map(|(x, z)| a * x + sg * z).collect();
            let x = x0.from_f64_like(&xv)?;
            let eps = to_rows(&eval.noise(&x, t)?);
            let h = options.jacobian_step * sg;
            for j in 0..d {
                let shifted = |sign: f64| {
                    let mut v = xv.clone();
                    for r in 0..n {
                        v[r * d + j] += sign * h;
                    }
                    x0.from_f64_like(&v)
                };
                let ep = to_rows(&eval.noise(&shifted(1.0)?, t)?);
                let em = to_rows(&eval.noise(&shifted(-1.0)?, t)?);
                let mean: f64 = (0..n)
                    .map(|r| (ep[r * d + j] - em[r * d + j]) / (2.0 * h))
                    .sum::<f64>()
                    / n as f64;
                l[[i, j]] = sg * mean;
            }
            eps_all.push((xv, eps));
        }
        let dl = grid_derivative(&l, &lambdas);
        let mut s_stat = Array2::zeros((k + 1, d));
        let mut b_stat = Array2::zeros((k + 1, d));
        // Pass 2: f and its total derivative f' along the ODE, then the regression.
        for (i, &lam) in lambdas.iter().enumerate() {
            let (_, a, sg) = at(lam);
            let (xv, eps) = &eps_all[i];
            let sr = sg / a;
            let y: Vec<f64> = xv.iter().map(|v| v / a).collect();
            // dy/dlambda = -s eps; points on the trajectory at lambda +- delta.
            let delta = options.lambda_step;
            let mut seps = [vec![], vec![]];
            for (slot, sign) in [1.0, -1.0].into_iter().enumerate() {
                let (t2, a2, s2) = at(lam + sign * delta);
                let xv2: Vec<f64> = y
                    .iter()
                    .zip(eps)
                    .map(|(y, e)| a2 * (y - sign * delta * sr * e))
                    .collect();
                let e2 = to_rows(&eval.noise(&x0.from_f64_like(&xv2)?, t2)?);
                seps[slot] = e2.iter().map(|e| s2 / a2 * e).collect();
            }
            for j in 0..d {
                let (mut sf, mut sfp, mut sff, mut sffp) = (0.0, 0.0, 0.0, 0.0);
                for r in 0..n {
                    let q = r * d + j;
                    let f = sr * eps[q] - l[[i, j]] * y[q];
                    let dseps = (seps[0][q] - seps[1][q]) / (2.0 * delta);
                    let fp = dseps - dl[[i, j]] * y[q] + l[[i, j]] * sr * eps[q];
                    sf += f;
                    sfp += fp;
                    sff += f * f;
                    sffp += f * fp;
                }
                let nf = n as f64;
                let (mf, mfp) = (sf / nf, sfp / nf);
                let var = sff / nf - mf * mf;
                let cov = sffp / nf - mf * mfp;
                let s = if var > 1e-300 { cov / var } else { 0.0 };
                s_stat[[i, j]] = s;
                b_stat[[i, j]] = mfp - s * mf;
            }
        }
        Ok(Self {
            lambdas,
            l,
            s: s_stat,
            b: b_stat,
        })
    }

    /// The degenerate statistics `l = 1, s = b = 0`, with which the sampler is
    /// DPM-Solver++ (a useful ablation).
    pub fn degenerate(lambdas: Vec<f64>, dim: usize) -> Result<Self> {
        let k = lambdas.len();
        let stats = Self {
            l: Array2::ones((k, dim)),
            s: Array2::zeros((k, dim)),
            b: Array2::zeros((k, dim)),
            lambdas,
        };
        stats.validate()?;
        Ok(stats)
    }

    fn validate(&self) -> Result<()> {
        let k = self.lambdas.len();
        if k < 3 {
            return Err(invalid("statistics", "need at least 3 grid points"));
        }
        if !self.lambdas.windows(2).all(|w| w[1] > w[0]) || self.lambdas.iter().any(|v| !v.is_finite()) {
            return Err(invalid("statistics", "lambdas must be finite and increasing"));
        }
        for (name, a) in [("l", &self.l), ("s", &self.s), ("b", &self.b)] {
            if a.nrows() != k || a.ncols() != self.l.ncols() || a.ncols() == 0 {
                return Err(invalid(
                    "statistics",
                    format!("{name} has shape {:?}, want [{k}, D]", a.shape()),
                ));
            }
            if a.iter().any(|v| !v.is_finite()) {
                return Err(invalid("statistics", format!("{name} has non-finite values")));
            }
        }
        Ok(())
    }

    /// Writes the statistics as an `.npz` (`lambda`, `l`, `s`, `b`) atomically.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let io = |source| ContinuousError::Io {
            path: path.to_path_buf(),
            source,
        };
        let fmt = |e: ndarray_npy::WriteNpzError| ContinuousError::Format {
            path: path.to_path_buf(),
            reason: e.to_string(),
        };
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
        {
            let mut npz = NpzWriter::new(tmp.as_file_mut());
            let lam = ndarray::Array1::from_vec(self.lambdas.clone());
            npz.add_array("lambda", &lam).map_err(fmt)?;
            npz.add_array("l", &self.l).map_err(fmt)?;
            npz.add_array("s", &self.s).map_err(fmt)?;
            npz.add_array("b", &self.b).map_err(fmt)?;
            npz.finish().map_err(fmt)?;
        }
        tmp.as_file().sync_all().map_err(io)?;
        tmp.persist(path).map_err(|e| io(e.error))?;
        Ok(())
    }

    /// Reads statistics written by [`ModelStatistics::save`], checking their shapes.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let fmt = |reason: String| ContinuousError::Format {
            path: path.to_path_buf(),
            reason,
        };
        let file = std::fs::File::open(path).map_err(|source| ContinuousError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let mut npz =
            NpzReader::new(std::io::BufReader::new(file)).map_err(|e| fmt(format!("not an npz: {e}")))?;
        let mut get = |name: &str| -> Result<ArrayD<f64>> {
            npz.by_name(&format!("{name}.npy"))
                .or_else(|_| npz.by_name(name))
                .map_err(|e| fmt(format!("array {name}: {e}")))
        };
        let lam = get("lambda")?;
        let two = |a: ArrayD<f64>, name: &str| {
            a.into_dimensionality::<ndarray::Ix2>()
                .map_err(|_| fmt(format!("{name} must be 2-D")))
        };
        let stats = Self {
            lambdas: lam.iter().copied().collect(),
            l: two(get("l")?, "l")?,
            s: two(get("s")?, "s")?,
            b: two(get("b")?, "b")?,
        };
        stats.validate().map_err(|e| fmt(e.to_string()))?;
        Ok(stats)
    }
}

/// Derivative along axis 0 on a (uniform or not) grid: central differences inside,
/// second-order one-sided at the ends (as numpy.gradient with edge_order=2).
fn grid_derivative(v: &Array2<f64>, x: &[f64]) -> Array2<f64> {
    let k = x.len();
    let mut out = Array2::zeros(v.raw_dim());
    for j in 0..v.ncols() {
        for i in 0..k {
            out[[i, j]] = if i == 0 {
                let (h1, h2) = (x[1] - x[0], x[2] - x[1]);
                let c = [
                    -(2.0 * h1 + h2) / (h1 * (h1 + h2)),
                    (h1 + h2) / (h1 * h2),
                    -h1 / (h2 * (h1 + h2)),
                ];
                c[0] * v[[0, j]] + c[1] * v[[1, j]] + c[2] * v[[2, j]]
            } else if i == k - 1 {
                let (h1, h2) = (x[k - 2] - x[k - 3], x[k - 1] - x[k - 2]);
                let c = [
                    h2 / (h1 * (h1 + h2)),
                    -(h1 + h2) / (h1 * h2),
                    (2.0 * h2 + h1) / (h2 * (h1 + h2)),
                ];
                c[0] * v[[k - 3, j]] + c[1] * v[[k - 2, j]] + c[2] * v[[k - 1, j]]
            } else {
                let (h1, h2) = (x[i] - x[i - 1], x[i + 1] - x[i]);
                (h1 * h1 * v[[i + 1, j]] - h2 * h2 * v[[i - 1, j]] + (h2 * h2 - h1 * h1) * v[[i, j]])
                    / (h1 * h2 * (h1 + h2))
            };
        }
    }
    out
}

/// `int_{x_0}^{x_i} w(x) e^{a(x)} dx` by the trapezoid rule, cumulative along axis 0.
fn cumtrapz_exp(a: &Array2<f64>, w: Option<&Array2<f64>>, x: &[f64]) -> Array2<f64> {
    let mut out = Array2::zeros(a.raw_dim());
    for j in 0..a.ncols() {
        let val = |i: usize| w.map_or(1.0, |w| w[[i, j]]) * a[[i, j]].exp();
        for i in 1..x.len() {
            out[[i, j]] = out[[i - 1, j]] + 0.5 * (x[i] - x[i - 1]) * (val(i) + val(i - 1));
        }
    }
    out
}

/// Options of the DPM-Solver-v3 sampler (defaults: the paper's unconditional recipe).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DpmV3Options {
    /// Predictor order (1-3).
    pub order: usize,
    /// Predictor derivatives by divided differences ("pseudo") instead of a Vandermonde solve.
    pub predictor_pseudo: bool,
    pub use_corrector: bool,
    /// Corrector one order above the predictor, by divided differences.
    pub corrector_pseudo: bool,
    pub lower_order_final: bool,
}

impl Default for DpmV3Options {
    fn default() -> Self {
        Self {
            order: 3,
            predictor_pseudo: false,
            use_corrector: true,
            corrector_pseudo: true,
            lower_order_final: true,
        }
    }
}

/// The DPM-Solver-v3 sampler: statistics with their integrals precomputed.
#[derive(Clone, Debug)]
pub struct DpmSolverV3 {
    stats: ModelStatistics,
    /// Cumulative integrals on the grid, `[K + 1, D]`.
    big_l: Array2<f64>,
    big_s: Array2<f64>,
    big_i: Array2<f64>,
    big_b: Array2<f64>,
    big_c: Array2<f64>,
    /// L + S, for the high-order coefficients.
    ls: Array2<f64>,
}

/// One cached point of the trajectory.
struct Point {
    t: f64,
    index: usize,
    x: Vec<f64>,
    eps: Vec<f64>,
}

impl DpmSolverV3 {
    pub fn new(stats: ModelStatistics) -> Result<Self> {
        stats.validate()?;
        let x = &stats.lambdas;
        let zero = Array2::zeros(stats.l.raw_dim());
        let big_l = cumtrapz_exp(&zero, Some(&stats.l), x);
        let big_s = cumtrapz_exp(&zero, Some(&stats.s), x);
        let ls = &big_l + &big_s;
        let big_i = cumtrapz_exp(&ls, None, x);
        let big_b = cumtrapz_exp(&big_s.mapv(|v| -v), Some(&stats.b), x);
        let big_c = cumtrapz_exp(&ls, Some(&big_b), x);
        Ok(Self {
            stats,
            big_l,
            big_s,
            big_i,
            big_b,
            big_c,
            ls,
        })
    }

    pub fn statistics(&self) -> &ModelStatistics {
        &self.stats
    }

    /// Snaps `grid` to the statistics' log-SNR grid: the indices and the times.
    pub fn snap<S: NoiseSchedule + ?Sized>(
        &self,
        schedule: &S,
        grid: &TimeGrid,
    ) -> Result<(Vec<usize>, Vec<f64>)> {
        let lam = &self.stats.lambdas;
        let (lt, l0) = (lam[0], lam[lam.len() - 1]);
        let k = self.stats.steps() as f64;
        let mut idx = Vec::with_capacity(grid.times().len());
        for &t in grid.times() {
            let l = schedule.lambda(t);
            let pos = k * (l - lt) / (l0 - lt);
            if !(-0.5..=k + 0.5).contains(&pos) {
                return Err(ContinuousError::InvalidGrid(format!(
                    "time {t} (lambda {l}) is outside the statistics' range [{lt}, {l0}]"
                )));
            }
            // Ties to even, as torch.round in the paper's code (a logSNR grid hits exact halves).
            idx.push(pos.round_ties_even() as usize);
        }
        if idx.windows(2).any(|w| w[1] <= w[0]) {
            return Err(ContinuousError::InvalidGrid(format!(
                "{} steps are too many for statistics with {} intervals (two times snap together)",
                grid.steps(),
                self.stats.steps()
            )));
        }
        let times = idx.iter().map(|&i| schedule.t_of_lambda(lam[i])).collect();
        Ok((idx, times))
    }

    /// `int_{lambda_s}^{lambda_t} e^{(L+S)(l) - (L+S)(lambda_s)} (l - lambda_s)^n / n! dl`.
    fn high_order_coefficient(&self, is: usize, it: usize, n: usize, j: usize) -> f64 {
        let lam = &self.stats.lambdas;
        let fact: f64 = (1..=n).map(|v| v as f64).product();
        let val =
            |i: usize| (self.ls[[i, j]] - self.ls[[is, j]]).exp() * (lam[i] - lam[is]).powi(n as i32) / fact;
        (is + 1..=it)
            .map(|i| 0.5 * (lam[i] - lam[i - 1]) * (val(i) + val(i - 1)))
            .sum()
    }

    /// The update from `points[0]` (base `s`) to `(t, it)` using all of `points` for the
    /// Taylor expansion of `g` (DPM-Solver-v3 predictor and corrector share it).
    fn update<S: NoiseSchedule + ?Sized>(
        &self,
        ns: &S,
        points: &[&Point],
        t: f64,
        it: usize,
        pseudo: bool,
    ) -> Result<Vec<f64>> {
        let d = self.stats.dim();
        let base = points[0];
        let is = base.index;
        let (alpha_s, alpha_t) = (ns.alpha(base.t), ns.alpha(t));
        let lam: Vec<f64> = points.iter().map(|p| self.stats.lambdas[p.index]).collect();
        let n = points.len() - 1;
        // Weights turning g_0..g_n into g^(1)..g^(n) (each a combination of the g_i).
        let deriv_weights = derivative_weights(&lam, n, pseudo)?;
        let len = base.x.len();
        let mut out = vec![0.0; len];
        let mut g = vec![0.0; points.len()];
        for q in 0..len {
            let j = q % d;
            for (m, p) in points.iter().enumerate() {
                let (a, sg) = (ns.alpha(p.t), ns.sigma(p.t));
                let f = (sg * p.eps[q] - self.stats.l[[p.index, j]] * p.x[q]) / a;
                let i = p.index;
                g[m] = (self.big_s[[is, j]] - self.big_s[[i, j]]).exp() * f
                    - self.big_s[[is, j]].exp() * (self.big_b[[i, j]] - self.big_b[[is, j]]);
            }
            let (ls, lt) = (self.big_l[[is, j]], self.big_l[[it, j]]);
            let di = self.big_i[[it, j]] - self.big_i[[is, j]];
            let mut v = alpha_t / alpha_s * (ls - lt).exp() * base.x[q]
                - alpha_t * (-lt - self.big_s[[is, j]]).exp() * di * g[0]
                - alpha_t
                    * (-lt).exp()
                    * (self.big_c[[it, j]] - self.big_c[[is, j]] - self.big_b[[is, j]] * di);
            for (k, w) in deriv_weights.iter().enumerate() {
                let gk: f64 = w.iter().zip(&g).map(|(w, g)| w * g).sum();
                v -= alpha_t * (ls - lt).exp() * self.high_order_coefficient(is, it, k + 1, j) * gk;
            }
            out[q] = v;
        }
        Ok(out)
    }

    /// Samples from `x` along `grid` (snapped to the statistics' grid, see
    /// [`DpmSolverV3::snap`]); `grid.steps()` model calls.
    pub fn sample<T, D, S>(
        &self,
        eval: &Evaluator<'_, D, S>,
        x: &T,
        grid: &TimeGrid,
        options: &DpmV3Options,
    ) -> Result<T>
    where
        T: Tensor,
        D: Denoiser<T> + ?Sized,
        S: NoiseSchedule + ?Sized,
    {
        if !(1..=3).contains(&options.order) {
            return Err(invalid("order", format!("must be 1..=3, got {}", options.order)));
        }
        let per_item: usize = x.shape().iter().skip(1).product();
        if x.shape().len() < 2 || per_item != self.stats.dim() {
            return Err(invalid(
                "x",
                format!(
                    "shape {:?} does not hold {} values per item",
                    x.shape(),
                    self.stats.dim()
                ),
            ));
        }
        let ns = eval.schedule;
        let (idx, times) = self.snap(ns, grid)?;
        let steps = grid.steps();
        let mut cache: Vec<Point> = Vec::new();
        let mut xv = x.to_f64_vec();
        let mut p_order = 0usize;
        for step in 1..=steps {
            let (t_prev, i_prev) = (times[step - 1], idx[step - 1]);
            let xt = x.from_f64_like(&xv)?;
            let eps = eval.predict(&xt, t_prev, Parameterization::Epsilon)?.to_f64_vec();
            cache.push(Point {
                t: t_prev,
                index: i_prev,
                x: xv.clone(),
                eps,
            });
            if cache.len() > options.order + 1 {
                cache.remove(0);
            }
            if options.use_corrector {
                let c_order = p_order + usize::from(options.corrector_pseudo);
                if c_order > 1 {
                    let m = cache.len();
                    let mut pts: Vec<&Point> = vec![&cache[m - 2], &cache[m - 1]];
                    pts.extend((2..c_order).map(|i| &cache[m - 1 - i]));
                    let corrected = self.update(ns, &pts, t_prev, i_prev, options.corrector_pseudo)?;
                    // Keep f = sigma eps - l x unchanged by the correction (as the paper's code).
                    let last = cache.last_mut().expect("non-empty");
                    let sg = ns.sigma(t_prev);
                    let d = self.stats.dim();
                    for q in 0..corrected.len() {
                        let l = self.stats.l[[i_prev, q % d]];
                        let n_old = sg * last.eps[q] - l * last.x[q];
                        last.eps[q] = (n_old + l * corrected[q]) / sg;
                    }
                    last.x = corrected;
                }
            }
            p_order = step.min(options.order);
            if options.lower_order_final {
                p_order = p_order.min(steps + 1 - step);
            }
            let m = cache.len();
            let pts: Vec<&Point> = (0..p_order).map(|i| &cache[m - 1 - i]).collect();
            xv = self.update(ns, &pts, times[step], idx[step], options.predictor_pseudo)?;
        }
        Ok(x.from_f64_like(&xv)?)
    }
}

/// Rows `w_k` with `g^(k+1) = sum_i w_k[i] g_i` from values at `lam[0..=n]` (Taylor
/// around `lam[0]`): a Vandermonde solve, or Newton divided differences ("pseudo").
fn derivative_weights(lam: &[f64], n: usize, pseudo: bool) -> Result<Vec<Vec<f64>>> {
    let m = n + 1;
    let mut out = Vec::with_capacity(n);
    if n == 0 {
        return Ok(out);
    }
    if pseudo {
        // D[0][j] = g_j; D[i][j] = (D[i-1][j] - D[i-1][j+1]) / (lam[j] - lam[i+j]);
        // track each D[i][j] as weights over the g's.
        let mut level: Vec<Vec<f64>> = (0..m)
            .map(|j| (0..m).map(|i| f64::from(u8::from(i == j))).collect())
            .collect();
        let mut fact = 1.0;
        for i in 1..=n {
            let next: Vec<Vec<f64>> = (0..m - i)
                .map(|j| {
                    let den = lam[j] - lam[i + j];
                    level[j]
                        .iter()
                        .zip(&level[j + 1])
                        .map(|(a, b)| (a - b) / den)
                        .collect()
                })
                .collect();
            fact *= i as f64;
            out.push(next[0].iter().map(|w| w * fact).collect());
            level = next;
        }
    } else {
        // (g_i - g_0) = sum_k (lam_i - lam_0)^k / k! g^(k), i = 1..n.
        let r: Vec<Vec<f64>> = (1..m)
            .map(|i| (1..=n).map(|k| (lam[i] - lam[0]).powi(k as i32)).collect())
            .collect();
        let mut fact = 1.0;
        let mut cols = Vec::with_capacity(n);
        // Inverse of R column by column: solution for unit right-hand sides.
        for i in 0..n {
            let e: Vec<f64> = (0..n).map(|k| f64::from(u8::from(k == i))).collect();
            cols.push(solve(r.clone(), e)?);
        }
        for k in 0..n {
            fact *= (k + 1) as f64;
            let mut w = vec![0.0; m];
            for i in 0..n {
                w[i + 1] += cols[i][k] * fact;
                w[0] -= cols[i][k] * fact;
            }
            out.push(w);
        }
    }
    Ok(out)
}
