//! Neighbourhood metrics: the kNN real-vs-generated classifier AUC, iLISI, nearest-cell
//! distances and kNN cell-type classification.

use ndarray::{Array2, Axis, concatenate};

use crate::error::{Result, ScrnaError};
use crate::linalg::sq_distances;
use crate::metrics::stats::auc;

/// Indices of the `k` smallest entries of `row`, skipping `skip`, nearest first (ties by index).
fn nearest(row: &[f64], k: usize, skip: Option<usize>) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..row.len()).filter(|&j| Some(j) != skip).collect();
    idx.sort_by(|&a, &b| row[a].total_cmp(&row[b]).then(a.cmp(&b)));
    idx.truncate(k);
    idx
}

fn pooled(a: &Array2<f64>, b: &Array2<f64>) -> Result<Array2<f64>> {
    concatenate(Axis(0), &[a.view(), b.view()]).map_err(|_| ScrnaError::Shape {
        context: "pooled cells: features".into(),
        expected: vec![b.nrows(), a.ncols()],
        got: b.shape().to_vec(),
    })
}

/// The AUC of a leave-one-out `k`-NN classifier telling real cells from generated ones in
/// the pooled set: each cell's score is the fraction of real cells among its `k` nearest
/// other cells. 0.5 means indistinguishable; 1 means separable.
pub fn knn_auc(real: &Array2<f64>, generated: &Array2<f64>, k: usize) -> Result<f64> {
    let all = pooled(real, generated)?;
    let n = all.nrows();
    if k == 0 || k >= n {
        return Err(ScrnaError::invalid("knn_auc", format!("k = {k} for {n} cells")));
    }
    let d = sq_distances(&all, &all)?;
    let is_real: Vec<bool> = (0..n).map(|i| i < real.nrows()).collect();
    let scores: Vec<f64> = (0..n)
        .map(|i| {
            let nb = nearest(d.row(i).as_slice().expect("standard"), k, Some(i));
            nb.iter().filter(|&&j| is_real[j]).count() as f64 / k as f64
        })
        .collect();
    auc(&scores, &is_real)
}

/// Mean iLISI (Korsunsky et al. 2019, the `lisi` package): for each cell, Gaussian weights
/// on the Euclidean distances to its `3 perplexity` nearest other cells, the precision set
/// by bisection so the weights' entropy is `ln(perplexity)`; the cell's LISI is the inverse
/// Simpson index `1 / sum_b p_b^2` of the batch shares `p_b` of the weight. Ranges from 1
/// (no mixing) to the number of batches.
pub fn ilisi(x: &Array2<f64>, batches: &[usize], perplexity: f64) -> Result<f64> {
    let n = x.nrows();
    if batches.len() != n {
        return Err(ScrnaError::Length {
            what: "iLISI batches",
            of: "cells",
            expected: n,
            got: batches.len(),
        });
    }
    if n < 2 || perplexity.is_nan() || perplexity <= 0.0 {
        return Err(ScrnaError::invalid(
            "iLISI",
            "needs two cells and a positive perplexity",
        ));
    }
    let k = ((3.0 * perplexity) as usize).clamp(1, n - 1);
    let nb_types = batches.iter().max().map_or(0, |m| m + 1);
    let d2 = sq_distances(x, x)?;
    let target = perplexity.ln();
    let mut total = 0.0;
    for i in 0..n {
        let idx = nearest(d2.row(i).as_slice().expect("standard"), k, Some(i));
        let dist: Vec<f64> = idx.iter().map(|&j| d2[[i, j]].sqrt()).collect();
        let p = calibrated_weights(&dist, target);
        let mut share = vec![0.0; nb_types];
        for (&j, &w) in idx.iter().zip(&p) {
            share[batches[j]] += w;
        }
        total += 1.0 / share.iter().map(|s| s * s).sum::<f64>();
    }
    Ok(total / n as f64)
}

/// `p_j ∝ exp(-beta d_j)` with `beta` bisected (50 steps, tolerance 1e-5, as `lisi`'s
/// `Hbeta` search) so that the entropy is `target`.
fn calibrated_weights(d: &[f64], target: f64) -> Vec<f64> {
    let (mut beta, mut lo, mut hi) = (1.0, f64::NEG_INFINITY, f64::INFINITY);
    let dmin = d.iter().copied().fold(f64::INFINITY, f64::min);
    let eval = |beta: f64| -> (Vec<f64>, f64) {
        // Shifting by the smallest distance leaves p unchanged and avoids underflow.
        let w: Vec<f64> = d.iter().map(|&v| (-(v - dmin) * beta).exp()).collect();
        let s: f64 = w.iter().sum();
        let h = s.ln() + beta * w.iter().zip(d).map(|(w, v)| w * (v - dmin)).sum::<f64>() / s;
        (w.into_iter().map(|v| v / s).collect(), h)
    };
    let (mut p, mut h) = eval(beta);
    for _ in 0..50 {
        let diff = h - target;
        if diff.abs() < 1e-5 {
            break;
        }
        if diff > 0.0 {
            lo = beta;
            beta = if hi.is_finite() {
                (beta + hi) / 2.0
            } else {
                beta * 2.0
            };
        } else {
            hi = beta;
            beta = if lo.is_finite() {
                (beta + lo) / 2.0
            } else {
                beta / 2.0
            };
        }
        (p, h) = eval(beta);
    }
    p
}

/// For each row of `queries`, the Euclidean distance to its nearest row of `reference`.
pub fn nearest_distances(queries: &Array2<f64>, reference: &Array2<f64>) -> Result<Vec<f64>> {
    if reference.nrows() == 0 {
        return Err(ScrnaError::invalid("nearest_distances", "empty reference"));
    }
    let d = sq_distances(queries, reference)?;
    Ok(d.rows()
        .into_iter()
        .map(|r| r.iter().copied().fold(f64::INFINITY, f64::min).sqrt())
        .collect())
}

/// Majority vote of the `k` nearest training cells (ties to the nearest's label among the tied).
pub fn knn_classify(
    train: &Array2<f64>,
    labels: &[usize],
    queries: &Array2<f64>,
    k: usize,
) -> Result<Vec<usize>> {
    if labels.len() != train.nrows() {
        return Err(ScrnaError::Length {
            what: "training labels",
            of: "training cells",
            expected: train.nrows(),
            got: labels.len(),
        });
    }
    if k == 0 || k > train.nrows() {
        return Err(ScrnaError::invalid(
            "knn_classify",
            format!("k = {k} for {} cells", train.nrows()),
        ));
    }
    let types = labels.iter().max().map_or(0, |m| m + 1);
    let d = sq_distances(queries, train)?;
    Ok(d.rows()
        .into_iter()
        .map(|r| {
            let nb = nearest(r.as_slice().expect("standard"), k, None);
            let mut votes = vec![0usize; types];
            for &j in &nb {
                votes[labels[j]] += 1;
            }
            let best = *votes.iter().max().expect("k >= 1");
            // The first neighbour (nearest first) whose label has the top vote.
            nb.iter()
                .map(|&j| labels[j])
                .find(|&l| votes[l] == best)
                .expect("a top label")
        })
        .collect())
}
