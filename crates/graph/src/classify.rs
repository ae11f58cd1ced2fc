//! Node-classification scores and the softmax cross-entropy they are trained with.

use ndarray::Array2;

/// Row-wise softmax.
pub fn softmax(logits: &Array2<f64>) -> Array2<f64> {
    let mut p = logits.clone();
    for mut row in p.rows_mut() {
        let m = row.fold(f64::NEG_INFINITY, |a, &b| a.max(b));
        row.mapv_inplace(|v| (v - m).exp());
        let s = row.sum();
        row.mapv_inplace(|v| v / s);
    }
    p
}

/// Mean cross-entropy over `nodes` and its gradient with respect to all logits (zero on
/// rows not in `nodes`).
pub fn cross_entropy(logits: &Array2<f64>, labels: &[usize], nodes: &[usize]) -> (f64, Array2<f64>) {
    let p = softmax(logits);
    let mut grad = Array2::zeros(logits.dim());
    let mut loss = 0.0;
    let scale = 1.0 / nodes.len().max(1) as f64;
    for &u in nodes {
        loss -= p[[u, labels[u]]].max(1e-300).ln();
        for c in 0..p.ncols() {
            grad[[u, c]] = scale * (p[[u, c]] - f64::from(u8::from(c == labels[u])));
        }
    }
    (loss * scale, grad)
}

/// Micro-F1, macro-F1 and macro one-vs-rest ROC AUC of class scores on `nodes`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scores {
    pub micro_f1: f64,
    pub macro_f1: f64,
    pub auc: f64,
}

/// Scores of `probs` (one row of class scores per node) against `labels` on `nodes`.
/// Micro-F1 of single-label classification is the accuracy; macro-F1 averages the
/// per-class F1 (0 for a class never predicted nor present, as scikit-learn's
/// `zero_division=0`); AUC is the Mann-Whitney statistic with tied scores counted half.
pub fn scores(probs: &Array2<f64>, labels: &[usize], nodes: &[usize]) -> Scores {
    let classes = probs.ncols();
    let pred: Vec<usize> = nodes
        .iter()
        .map(|&u| {
            let row = probs.row(u);
            (0..classes).fold(0, |b, c| if row[c] > row[b] { c } else { b })
        })
        .collect();
    let correct = nodes.iter().zip(&pred).filter(|&(&u, &p)| labels[u] == p).count();
    let micro_f1 = correct as f64 / nodes.len().max(1) as f64;
    let mut f1_sum = 0.0;
    let mut auc_sum = 0.0;
    let mut auc_classes = 0;
    for c in 0..classes {
        let tp = nodes
            .iter()
            .zip(&pred)
            .filter(|&(&u, &p)| p == c && labels[u] == c)
            .count() as f64;
        let fp = nodes
            .iter()
            .zip(&pred)
            .filter(|&(&u, &p)| p == c && labels[u] != c)
            .count() as f64;
        let fn_ = nodes
            .iter()
            .zip(&pred)
            .filter(|&(&u, &p)| p != c && labels[u] == c)
            .count() as f64;
        f1_sum += if tp == 0.0 {
            0.0
        } else {
            2.0 * tp / (2.0 * tp + fp + fn_)
        };
        let pos: Vec<f64> = nodes
            .iter()
            .filter(|&&u| labels[u] == c)
            .map(|&u| probs[[u, c]])
            .collect();
        let neg: Vec<f64> = nodes
            .iter()
            .filter(|&&u| labels[u] != c)
            .map(|&u| probs[[u, c]])
            .collect();
        if !pos.is_empty() && !neg.is_empty() {
            let mut wins = 0.0;
            for &a in &pos {
                for &b in &neg {
                    wins += if a > b {
                        1.0
                    } else if a == b {
                        0.5
                    } else {
                        0.0
                    };
                }
            }
            auc_sum += wins / (pos.len() * neg.len()) as f64;
            auc_classes += 1;
        }
    }
    Scores {
        micro_f1,
        macro_f1: f1_sum / classes as f64,
        auc: auc_sum / auc_classes.max(1) as f64,
    }
}
