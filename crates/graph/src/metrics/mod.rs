//! The statistics and scores graph-generation papers report, as a reusable module.
//!
//! - [`stats`]: degree histograms, clustering coefficients and their histogram.
//! - [`orbit`]: per-node counts of the 15 orbits of 2-4 node graphlets (ORCA's numbering).
//! - [`spectral`]: normalised-Laplacian eigenvalues and their histogram.
//! - [`mmd`]: MMD^2 with the Gaussian-EMD, Gaussian-TV and Gaussian kernels of the
//!   GraphRNN / GRAN / GDSS evaluation code, and [`mmd::evaluate`], which scores a set of
//!   generated graphs against reference graphs the way those papers do.
//! - [`vun`]: validity, uniqueness and novelty with an exact isomorphism test; planarity.

pub mod mmd;
pub mod orbit;
pub mod spectral;
pub mod stats;
pub mod vun;

/// numpy's `np.histogram(values, bins, range=(lo, hi))` counts: equal-width bins with
/// numpy's edges (`linspace`), the last bin closed, values outside `[lo, hi]` dropped.
pub fn histogram(values: &[f64], bins: usize, lo: f64, hi: f64) -> Vec<f64> {
    let mut counts = vec![0.0; bins];
    if bins == 0 {
        return counts;
    }
    let step = (hi - lo) / bins as f64;
    let edge = |i: usize| if i == bins { hi } else { lo + i as f64 * step };
    let norm = bins as f64 / (hi - lo);
    for &x in values {
        if !(x >= lo && x <= hi) {
            continue;
        }
        // numpy computes the index by scaling, then corrects it against the true edges.
        let mut i = (((x - lo) * norm) as usize).min(bins - 1);
        if x < edge(i) {
            i -= 1;
        } else if i + 1 < bins && x >= edge(i + 1) {
            i += 1;
        }
        counts[i] += 1.0;
    }
    counts
}
