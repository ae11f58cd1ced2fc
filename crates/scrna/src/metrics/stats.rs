//! One-dimensional statistics: correlations, ranks, Wasserstein-1, Kolmogorov-Smirnov, AUC.

use crate::error::{Result, ScrnaError};

fn same_len(what: &'static str, a: &[f64], b: &[f64]) -> Result<()> {
    if a.len() != b.len() || a.len() < 2 {
        return Err(ScrnaError::Length {
            what,
            of: "values in the first sample (at least 2)",
            expected: a.len(),
            got: b.len(),
        });
    }
    Ok(())
}

/// Pearson's correlation (NaN when either side is constant).
pub fn pearson(a: &[f64], b: &[f64]) -> Result<f64> {
    same_len("pearson", a, b)?;
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        sab += (x - ma) * (y - mb);
        saa += (x - ma) * (x - ma);
        sbb += (y - mb) * (y - mb);
    }
    Ok(sab / (saa * sbb).sqrt())
}

/// Ranks from 1, ties getting their average rank (scipy's `rankdata`).
pub fn ranks(a: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..a.len()).collect();
    idx.sort_by(|&i, &j| a[i].total_cmp(&a[j]));
    let mut r = vec![0.0; a.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && a[idx[j + 1]] == a[idx[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            r[k] = avg;
        }
        i = j + 1;
    }
    r
}

/// Spearman's rank correlation (Pearson of average ranks).
pub fn spearman(a: &[f64], b: &[f64]) -> Result<f64> {
    same_len("spearman", a, b)?;
    pearson(&ranks(a), &ranks(b))
}

fn sorted(a: &[f64]) -> Vec<f64> {
    let mut s = a.to_vec();
    s.sort_by(f64::total_cmp);
    s
}

/// Walks the merged sorted samples, calling `f(gap, F_a, F_b)` for each interval between
/// consecutive distinct points with the empirical CDFs on it.
fn cdf_walk(a: &[f64], b: &[f64], mut f: impl FnMut(f64, f64, f64)) -> Result<()> {
    if a.is_empty() || b.is_empty() {
        return Err(ScrnaError::invalid("empirical distribution", "an empty sample"));
    }
    let (sa, sb) = (sorted(a), sorted(b));
    let (na, nb) = (sa.len() as f64, sb.len() as f64);
    let (mut i, mut j) = (0, 0);
    let mut x = sa[0].min(sb[0]);
    while i < sa.len() || j < sb.len() {
        while i < sa.len() && sa[i] <= x {
            i += 1;
        }
        while j < sb.len() && sb[j] <= x {
            j += 1;
        }
        let next = match (sa.get(i), sb.get(j)) {
            (Some(&u), Some(&v)) => u.min(v),
            (Some(&u), None) => u,
            (None, Some(&v)) => v,
            (None, None) => x,
        };
        f(next - x, i as f64 / na, j as f64 / nb);
        x = next;
    }
    Ok(())
}

/// The 1-Wasserstein distance between two empirical distributions, `int |F_a - F_b|`.
pub fn wasserstein1(a: &[f64], b: &[f64]) -> Result<f64> {
    let mut w = 0.0;
    cdf_walk(a, b, |gap, fa, fb| w += gap * (fa - fb).abs())?;
    Ok(w)
}

/// The two-sample Kolmogorov-Smirnov statistic `sup |F_a - F_b|`.
pub fn ks_statistic(a: &[f64], b: &[f64]) -> Result<f64> {
    let mut d: f64 = 0.0;
    cdf_walk(a, b, |_, fa, fb| d = d.max((fa - fb).abs()))?;
    Ok(d)
}

/// The area under the ROC curve of `scores` for the items marked `positive`
/// (Mann-Whitney U / (n_pos n_neg), ties counted one half).
pub fn auc(scores: &[f64], positive: &[bool]) -> Result<f64> {
    if scores.len() != positive.len() {
        return Err(ScrnaError::Length {
            what: "AUC labels",
            of: "scores",
            expected: scores.len(),
            got: positive.len(),
        });
    }
    let r = ranks(scores);
    let np = positive.iter().filter(|&&p| p).count() as f64;
    let nn = positive.len() as f64 - np;
    if np == 0.0 || nn == 0.0 {
        return Err(ScrnaError::invalid(
            "AUC",
            "needs both positive and negative items",
        ));
    }
    let rank_sum: f64 = r.iter().zip(positive).filter(|(_, p)| **p).map(|(r, _)| r).sum();
    Ok((rank_sum - np * (np + 1.0) / 2.0) / (np * nn))
}

/// The `q`-quantile by linear interpolation between order statistics (numpy's default).
pub fn quantile(a: &[f64], q: f64) -> f64 {
    let s = sorted(a);
    let pos = q.clamp(0.0, 1.0) * (s.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    s[lo] + (s[hi] - s[lo]) * (pos - lo as f64)
}
