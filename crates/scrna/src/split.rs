//! Seeded, stratified train / held-out splits.

use diffusion_core::Rng;

/// Splits `0..labels.len()` into (train, held-out) with `frac` of each label's cells held
/// out (rounded, at least one when a label has two or more cells), shuffled by `seed`.
/// Both index lists are sorted.
pub fn stratified_split(labels: &[usize], frac: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let types = labels.iter().copied().max().map_or(0, |m| m + 1);
    let mut rng = Rng::new(seed);
    let (mut train, mut held) = (Vec::new(), Vec::new());
    for t in 0..types {
        let mut idx: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == t).collect();
        // Fisher-Yates with uniforms from the counter-based generator.
        for i in (1..idx.len()).rev() {
            let j = ((rng.uniform() * (i + 1) as f64) as usize).min(i);
            idx.swap(i, j);
        }
        let mut k = (frac * idx.len() as f64).round() as usize;
        if k == 0 && idx.len() >= 2 && frac > 0.0 {
            k = 1;
        }
        held.extend_from_slice(&idx[..k]);
        train.extend_from_slice(&idx[k..]);
    }
    train.sort_unstable();
    held.sort_unstable();
    (train, held)
}
