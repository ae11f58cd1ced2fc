//! The standard preprocessing (scanpy's defaults) and its inverse for generated cells.
//!
//! Forward: counts -> `normalize_total` (each cell scaled to `target_sum`, 1e4) -> `log1p`
//! -> highly variable genes -> optional per-gene z-scoring. Inverse: un-z-score, clamp at
//! 0, `expm1`, scale back by a library size -> (optionally rounded) counts.

use ndarray::{Array2, Axis};
use serde::{Deserialize, Serialize};

use crate::data::{CellMatrix, Values, check_values};
use crate::error::{Result, ScrnaError};

/// Keeps cells with at least `min_counts` total counts and `min_genes` expressed genes
/// (scanpy's `filter_cells`). Returns the kept cells and their row indices.
pub fn filter_cells(m: &CellMatrix, min_counts: f64, min_genes: usize) -> (CellMatrix, Vec<usize>) {
    let keep: Vec<usize> =
        m.x.rows()
            .into_iter()
            .enumerate()
            .filter(|(_, r)| r.sum() >= min_counts && r.iter().filter(|&&v| v > 0.0).count() >= min_genes)
            .map(|(i, _)| i)
            .collect();
    (m.select_cells(&keep), keep)
}

/// Keeps genes expressed in at least `min_cells` cells with at least `min_counts` counts
/// in total (scanpy's `filter_genes`). Returns the kept genes and their column indices.
pub fn filter_genes(m: &CellMatrix, min_cells: usize, min_counts: f64) -> (CellMatrix, Vec<usize>) {
    let keep: Vec<usize> =
        m.x.columns()
            .into_iter()
            .enumerate()
            .filter(|(_, c)| c.sum() >= min_counts && c.iter().filter(|&&v| v > 0.0).count() >= min_cells)
            .map(|(i, _)| i)
            .collect();
    (m.select_genes(&keep), keep)
}

/// Scales each cell `i` by `target_sum / sizes[i]` in place (`sizes`: the library sizes,
/// usually the row sums; a cell of size 0 stays 0, as in scanpy).
pub fn normalize_total(x: &mut Array2<f64>, target_sum: f64, sizes: &[f64]) -> Result<()> {
    check_sizes(x.nrows(), sizes)?;
    if !(target_sum.is_finite() && target_sum > 0.0) {
        return Err(ScrnaError::invalid(
            "target_sum",
            format!("{target_sum} must be positive"),
        ));
    }
    for (mut row, &s) in x.rows_mut().into_iter().zip(sizes) {
        let f = if s > 0.0 { target_sum / s } else { 0.0 };
        row.mapv_inplace(|v| v * f);
    }
    Ok(())
}

fn check_sizes(cells: usize, sizes: &[f64]) -> Result<()> {
    if sizes.len() != cells {
        return Err(ScrnaError::Length {
            what: "library sizes",
            of: "cells",
            expected: cells,
            got: sizes.len(),
        });
    }
    if let Some((i, &s)) = sizes
        .iter()
        .enumerate()
        .find(|(_, s)| !(s.is_finite() && **s >= 0.0))
    {
        return Err(ScrnaError::invalid(
            "library sizes",
            format!("cell {i} has size {s}"),
        ));
    }
    Ok(())
}

/// `ln(1 + x)` elementwise, in place.
pub fn log1p(x: &mut Array2<f64>) {
    x.mapv_inplace(f64::ln_1p);
}

/// Per-gene mean and unbiased (n - 1) variance, as scanpy's `_get_mean_var`.
pub fn mean_var(x: &Array2<f64>) -> (Vec<f64>, Vec<f64>) {
    let n = x.nrows() as f64;
    x.columns()
        .into_iter()
        .map(|c| {
            let m = c.sum() / n;
            let ss: f64 = c.iter().map(|v| (v - m) * (v - m)).sum();
            (m, ss / (n - 1.0).max(1.0))
        })
        .unzip()
}

/// Settings of [`highly_variable_genes`] (scanpy's defaults for `flavor="seurat"`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HvgOptions {
    /// Take this many genes by normalised dispersion instead of the cut-offs.
    pub n_top_genes: Option<usize>,
    pub min_mean: f64,
    pub max_mean: f64,
    pub min_disp: f64,
    pub n_bins: usize,
}

impl Default for HvgOptions {
    fn default() -> Self {
        Self {
            n_top_genes: None,
            min_mean: 0.0125,
            max_mean: 3.0,
            min_disp: 0.5,
            n_bins: 20,
        }
    }
}

/// Per-gene statistics of [`highly_variable_genes`] (scanpy's `adata.var` columns).
#[derive(Clone, Debug, PartialEq)]
pub struct Hvg {
    /// `log1p` of the mean of `expm1(x)`.
    pub means: Vec<f64>,
    /// `ln(var / mean)` of `expm1(x)`; NaN for a gene without variance.
    pub dispersions: Vec<f64>,
    /// Dispersion z-scored within its mean bin (NaN where undefined).
    pub dispersions_norm: Vec<f64>,
    pub highly_variable: Vec<bool>,
}

impl Hvg {
    /// Columns of the highly variable genes, in gene order.
    pub fn indices(&self) -> Vec<usize> {
        (0..self.highly_variable.len())
            .filter(|&g| self.highly_variable[g])
            .collect()
    }
}

/// Highly variable genes of log-normalised data by scanpy's default `flavor="seurat"`:
/// dispersions of `expm1(x)`, normalised within 20 equal-width bins of the log mean
/// (pandas `cut`); a bin with one gene gets normalised dispersion 1 (scanpy's rule).
pub fn highly_variable_genes(lognorm: &Array2<f64>, opts: HvgOptions) -> Result<Hvg> {
    check_values(lognorm, Values::Real)?;
    if lognorm.nrows() < 2 || opts.n_bins == 0 {
        return Err(ScrnaError::invalid(
            "highly_variable_genes",
            "need two cells and one bin",
        ));
    }
    let (mut mean, var) = mean_var(&lognorm.mapv(f64::exp_m1));
    let mut disp = vec![0.0; mean.len()];
    for g in 0..mean.len() {
        if mean[g] == 0.0 {
            mean[g] = 1e-12;
        }
        let d = var[g] / mean[g];
        disp[g] = if d == 0.0 { f64::NAN } else { d.ln() };
        mean[g] = mean[g].ln_1p();
    }
    // pandas.cut(bins=n): equal-width, right-closed bins over [min, max], the first edge
    // lowered by 0.1% of the range.
    let (lo, hi) = mean
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    let nb = opts.n_bins;
    let edges: Vec<f64> = (0..=nb).map(|k| lo + (hi - lo) * k as f64 / nb as f64).collect();
    let bin = |v: f64| -> usize { (1..=nb).find(|&k| v <= edges[k]).map_or(nb - 1, |k| k - 1) };
    let bins: Vec<usize> = mean.iter().map(|&v| if hi > lo { bin(v) } else { 0 }).collect();
    let mut norm = vec![f64::NAN; mean.len()];
    for b in 0..nb {
        let members: Vec<f64> = (0..mean.len())
            .filter(|&g| bins[g] == b && !disp[g].is_nan())
            .map(|g| disp[g])
            .collect();
        let n = members.len() as f64;
        let m = members.iter().sum::<f64>() / n;
        let sd = (members.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / (n - 1.0)).sqrt();
        // pandas gives NaN std for one member: scanpy then divides by the mean and centres at 0.
        let (avg, dev) = if members.len() == 1 { (0.0, m) } else { (m, sd) };
        for g in 0..mean.len() {
            if bins[g] == b {
                norm[g] = (disp[g] - avg) / dev;
            }
        }
    }
    let highly_variable = match opts.n_top_genes {
        Some(n) => {
            let mut finite: Vec<f64> = norm.iter().copied().filter(|v| !v.is_nan()).collect();
            finite.sort_by(|a, b| b.total_cmp(a));
            let n = n.min(finite.len());
            if n == 0 {
                vec![false; norm.len()]
            } else {
                let cut = finite[n - 1];
                norm.iter().map(|&v| !v.is_nan() && v >= cut).collect()
            }
        }
        None => (0..norm.len())
            .map(|g| mean[g] > opts.min_mean && mean[g] < opts.max_mean && norm[g] > opts.min_disp)
            .collect(),
    };
    Ok(Hvg {
        means: mean,
        dispersions: disp,
        dispersions_norm: norm,
        highly_variable,
    })
}

/// Per-gene z-scoring `(x - mean) / std` (unbiased std, as scanpy's `scale`; a constant
/// gene gets std 1), optionally clipped at `+-clip`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ZScore {
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
    pub clip: Option<f64>,
}

impl ZScore {
    pub fn fit(x: &Array2<f64>, clip: Option<f64>) -> Self {
        let (mean, var) = mean_var(x);
        let std = var
            .iter()
            .map(|&v| if v > 0.0 { v.sqrt() } else { 1.0 })
            .collect();
        Self { mean, std, clip }
    }

    pub fn apply(&self, x: &Array2<f64>) -> Result<Array2<f64>> {
        self.check(x)?;
        let mut z = x.clone();
        for mut row in z.rows_mut() {
            for (g, v) in row.iter_mut().enumerate() {
                let s = (*v - self.mean[g]) / self.std[g];
                *v = self.clip.map_or(s, |c| s.clamp(-c, c));
            }
        }
        Ok(z)
    }

    /// The inverse (exact where no value was clipped).
    pub fn invert(&self, z: &Array2<f64>) -> Result<Array2<f64>> {
        self.check(z)?;
        let mut x = z.clone();
        for mut row in x.rows_mut() {
            for (g, v) in row.iter_mut().enumerate() {
                *v = *v * self.std[g] + self.mean[g];
            }
        }
        Ok(x)
    }

    fn check(&self, x: &Array2<f64>) -> Result<()> {
        if x.ncols() != self.mean.len() {
            return Err(ScrnaError::Shape {
                context: "z-scoring: genes".into(),
                expected: vec![x.nrows(), self.mean.len()],
                got: x.shape().to_vec(),
            });
        }
        Ok(())
    }
}

/// A fitted preprocessing: the genes kept, the normalisation target and the optional
/// z-scoring, to apply to more cells and to invert for generated ones.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Pipeline {
    pub target_sum: f64,
    /// Columns of the input kept (after normalisation, which uses all genes' sizes).
    pub genes: Vec<usize>,
    pub zscore: Option<ZScore>,
    /// The largest log-normalised value seen in fitting: generated values are clamped to
    /// `[0, max_lognorm]` (an untrained or diverging model must not produce overflowing counts).
    pub max_lognorm: f64,
}

impl Pipeline {
    /// Fits on `counts` with per-cell library sizes `sizes`: normalise + log1p, pick the
    /// genes (`hvg = None` keeps all), then fit the z-scoring when `zscore` is set.
    pub fn fit(
        counts: &Array2<f64>,
        sizes: &[f64],
        target_sum: f64,
        hvg: Option<HvgOptions>,
        zscore: bool,
    ) -> Result<Self> {
        let mut p = Self {
            target_sum,
            genes: (0..counts.ncols()).collect(),
            zscore: None,
            max_lognorm: f64::INFINITY,
        };
        let ln = p.lognorm(counts, sizes)?;
        if let Some(opts) = hvg {
            p.genes = highly_variable_genes(&ln, opts)?.indices();
        }
        if zscore {
            p.zscore = Some(ZScore::fit(&ln.select(Axis(1), &p.genes), None));
        }
        p.max_lognorm = ln.select(Axis(1), &p.genes).iter().copied().fold(0.0, f64::max);
        Ok(p)
    }

    /// `log1p(normalize_total(counts))` over all input genes.
    pub fn lognorm(&self, counts: &Array2<f64>, sizes: &[f64]) -> Result<Array2<f64>> {
        check_values(counts, Values::Counts)?;
        let mut x = counts.clone();
        normalize_total(&mut x, self.target_sum, sizes)?;
        log1p(&mut x);
        Ok(x)
    }

    /// Counts -> the model's space (kept genes, z-scored when fitted so).
    pub fn forward(&self, counts: &Array2<f64>, sizes: &[f64]) -> Result<Array2<f64>> {
        let ln = self.lognorm(counts, sizes)?.select(Axis(1), &self.genes);
        match &self.zscore {
            Some(z) => z.apply(&ln),
            None => Ok(ln),
        }
    }

    /// The model's space -> log-normalised expression, clamped to `[0, max_lognorm]`
    /// (expression is never negative).
    pub fn inverse_lognorm(&self, y: &Array2<f64>) -> Result<Array2<f64>> {
        check_values(y, Values::Real)?;
        let ln = match &self.zscore {
            Some(z) => z.invert(y)?,
            None => y.clone(),
        };
        Ok(ln.mapv(|v| v.clamp(0.0, self.max_lognorm)))
    }

    /// The model's space -> counts of the kept genes for cells of library sizes `sizes`
    /// (`expm1(lognorm) * size / target_sum`), rounded to whole counts when `round`.
    pub fn inverse_counts(&self, y: &Array2<f64>, sizes: &[f64], round: bool) -> Result<Array2<f64>> {
        let mut x = self.inverse_lognorm(y)?.mapv(f64::exp_m1);
        check_sizes(x.nrows(), sizes)?;
        for (mut row, &s) in x.rows_mut().into_iter().zip(sizes) {
            let f = s / self.target_sum;
            row.mapv_inplace(|v| if round { (v * f).round() } else { v * f });
        }
        Ok(x)
    }
}
