//! Multi-bandwidth RBF maximum mean discrepancy, as scDiffusion computes it.

use ndarray::{Array2, Axis, concatenate};

use crate::error::{Result, ScrnaError};
use crate::linalg::sq_distances;

/// scDiffusion's MMD (the DAN kernel): over the pooled samples, the base bandwidth is the
/// mean squared distance between distinct points divided by `mul^(num / 2)`; the kernel is
/// `sum_i exp(-d^2 / (base mul^i))` for `i < num`; the value is
/// `mean K(x, x) + mean K(y, y) - 2 mean K(x, y)` (biased; scDiffusion's `mean(XX + YY - XY - YX)`
/// for equal sample sizes). scDiffusion uses `mul = 2`, `num = 5`.
pub fn mmd_multi_rbf(x: &Array2<f64>, y: &Array2<f64>, mul: f64, num: usize) -> Result<f64> {
    if x.nrows() == 0 || y.nrows() == 0 || num == 0 || mul <= 0.0 {
        return Err(ScrnaError::invalid(
            "MMD",
            "needs two non-empty samples and kernels",
        ));
    }
    let total = concatenate(Axis(0), &[x.view(), y.view()]).map_err(|_| ScrnaError::Shape {
        context: "MMD: features".into(),
        expected: vec![y.nrows(), x.ncols()],
        got: y.shape().to_vec(),
    })?;
    let n = total.nrows();
    let d2 = sq_distances(&total, &total)?;
    let base = d2.sum() / (n * n - n) as f64 / mul.powi((num / 2) as i32);
    if base.is_nan() || base <= 0.0 {
        return Err(ScrnaError::invalid("MMD", "all points coincide"));
    }
    let k = d2.mapv(|d| {
        (0..num)
            .map(|i| (-d / (base * mul.powi(i as i32))).exp())
            .sum::<f64>()
    });
    let nx = x.nrows();
    let block_mean = |r: std::ops::Range<usize>, c: std::ops::Range<usize>| {
        let b = k.slice(ndarray::s![r, c]);
        b.sum() / b.len() as f64
    };
    Ok(block_mean(0..nx, 0..nx) + block_mean(nx..n, nx..n) - 2.0 * block_mean(0..nx, nx..n))
}
