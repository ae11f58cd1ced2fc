//! Generation metrics for single cells, and one call that computes them all.

pub mod kernel;
pub mod neighbors;
pub mod stats;

use ndarray::Array2;
use serde::Serialize;

pub use kernel::mmd_multi_rbf;
pub use neighbors::{ilisi, knn_auc, knn_classify, nearest_distances};
pub use stats::{auc, ks_statistic, pearson, quantile, ranks, spearman, wasserstein1};

use crate::error::{Result, ScrnaError};
use crate::linalg::Pca;
use crate::prep::mean_var;

/// The cells a comparison needs. `*_ln`: log-normalised expression (`log1p` of counts per
/// 1e4), cells x the same genes; `*_counts`: counts of those genes (zero fraction and
/// library size are properties of counts).
#[derive(Clone, Copy, Debug)]
pub struct Cells<'a> {
    pub ln: &'a Array2<f64>,
    pub counts: &'a Array2<f64>,
}

/// Settings of [`evaluate`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EvalOptions {
    /// Principal components (fitted on the real and generated cells together, so that
    /// neither compared set is favoured) for MMD, kNN AUC, iLISI and distances.
    pub pcs: usize,
    pub knn: usize,
    pub perplexity: f64,
    pub seed: u64,
}

impl Default for EvalOptions {
    fn default() -> Self {
        Self {
            pcs: 50,
            knn: 5,
            perplexity: 30.0,
            seed: 0,
        }
    }
}

/// Every metric of one generated (or real) set against the real reference cells.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    pub gene_mean_pearson: f64,
    pub gene_mean_spearman: f64,
    pub gene_var_pearson: f64,
    pub gene_var_spearman: f64,
    /// Mean over genes of the 1-D Wasserstein distance of the log-normalised values.
    pub mean_gene_w1: f64,
    /// scDiffusion's multi-bandwidth RBF MMD in PC space.
    pub mmd: f64,
    pub zero_fraction_real: f64,
    pub zero_fraction_generated: f64,
    /// KS statistic between the per-cell zero fractions.
    pub zero_fraction_ks: f64,
    /// KS statistic between the library sizes (sums of counts over the genes).
    pub library_size_ks: f64,
    /// 1-D Wasserstein distance between library sizes, relative to the real mean size.
    pub library_size_w1_rel: f64,
    /// Leave-one-out kNN real-vs-generated classifier AUC in PC space (ideal 0.5).
    pub knn_auc: f64,
    /// Mean iLISI of real vs generated in PC space (ideal 2 for equal sizes).
    pub ilisi: f64,
    /// Median distance (PC space) from a generated cell to its nearest training cell, and
    /// from a held-out real cell to its nearest training cell; their ratio (a memorising
    /// model has a ratio well below 1).
    pub nn_dist_generated: f64,
    pub nn_dist_real: f64,
    pub nn_dist_ratio: f64,
    /// Fraction of generated cells nearer to a training cell than the 5th percentile of the
    /// held-out cells' distances (about 0.05 when not memorising).
    pub frac_below_real_p5: f64,
}

fn per_cell_zero_fraction(counts: &Array2<f64>) -> Vec<f64> {
    let g = counts.ncols() as f64;
    counts
        .rows()
        .into_iter()
        .map(|r| r.iter().filter(|&&v| v == 0.0).count() as f64 / g)
        .collect()
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// Compares `generated` with the `real` reference cells; `train_ln` are the cells the model
/// saw (the memorisation check measures distances to them).
pub fn evaluate(
    real: Cells<'_>,
    generated: Cells<'_>,
    train_ln: &Array2<f64>,
    opts: EvalOptions,
) -> Result<Report> {
    for (what, c) in [("real", &real), ("generated", &generated)] {
        if c.ln.dim() != c.counts.dim() {
            return Err(ScrnaError::Shape {
                context: format!("{what} cells: counts vs log-normalised"),
                expected: c.ln.shape().to_vec(),
                got: c.counts.shape().to_vec(),
            });
        }
    }
    if generated.ln.ncols() != real.ln.ncols() || train_ln.ncols() != real.ln.ncols() {
        return Err(ScrnaError::Shape {
            context: "evaluate: genes of generated / training cells".into(),
            expected: vec![generated.ln.nrows(), real.ln.ncols()],
            got: generated.ln.shape().to_vec(),
        });
    }
    let (mr, vr) = mean_var(real.ln);
    let (mg, vg) = mean_var(generated.ln);
    let w1: Vec<f64> = (0..real.ln.ncols())
        .map(|g| wasserstein1(&real.ln.column(g).to_vec(), &generated.ln.column(g).to_vec()))
        .collect::<Result<_>>()?;
    let both =
        ndarray::concatenate(ndarray::Axis(0), &[real.ln.view(), generated.ln.view()]).expect("same genes");
    let pca = Pca::fit(&both, opts.pcs.min(real.ln.ncols()), opts.seed)?;
    let (pr, pg, pt) = (
        pca.transform(real.ln)?,
        pca.transform(generated.ln)?,
        pca.transform(train_ln)?,
    );
    let (zr, zg) = (
        per_cell_zero_fraction(real.counts),
        per_cell_zero_fraction(generated.counts),
    );
    let lib = |c: &Array2<f64>| -> Vec<f64> { c.rows().into_iter().map(|r| r.sum()).collect() };
    let (lr, lg) = (lib(real.counts), lib(generated.counts));
    let batches: Vec<usize> = (0..pr.nrows() + pg.nrows())
        .map(|i| usize::from(i >= pr.nrows()))
        .collect();
    let pooled = ndarray::concatenate(ndarray::Axis(0), &[pr.view(), pg.view()]).expect("same PCs");
    let (dg, dr) = (nearest_distances(&pg, &pt)?, nearest_distances(&pr, &pt)?);
    let p5 = quantile(&dr, 0.05);
    let (med_g, med_r) = (quantile(&dg, 0.5), quantile(&dr, 0.5));
    Ok(Report {
        gene_mean_pearson: pearson(&mr, &mg)?,
        gene_mean_spearman: spearman(&mr, &mg)?,
        gene_var_pearson: pearson(&vr, &vg)?,
        gene_var_spearman: spearman(&vr, &vg)?,
        mean_gene_w1: mean(&w1),
        mmd: mmd_multi_rbf(&pr, &pg, 2.0, 5)?,
        zero_fraction_real: mean(&zr),
        zero_fraction_generated: mean(&zg),
        zero_fraction_ks: ks_statistic(&zr, &zg)?,
        library_size_ks: ks_statistic(&lr, &lg)?,
        library_size_w1_rel: wasserstein1(&lr, &lg)? / mean(&lr),
        knn_auc: knn_auc(&pr, &pg, opts.knn)?,
        ilisi: ilisi(&pooled, &batches, opts.perplexity)?,
        nn_dist_generated: med_g,
        nn_dist_real: med_r,
        nn_dist_ratio: med_g / med_r,
        frac_below_real_p5: dg.iter().filter(|&&d| d < p5).count() as f64 / dg.len() as f64,
    })
}

/// Accuracy of `predicted` against `truth`.
pub fn accuracy(predicted: &[usize], truth: &[usize]) -> f64 {
    let hits = predicted.iter().zip(truth).filter(|(a, b)| a == b).count();
    hits as f64 / truth.len().max(1) as f64
}
