//! Uniform affine (integer) and minifloat quantizers with per-tensor, per-row (output
//! channel of a weight, token of an activation) and per-group scales, estimated by min/max
//! or by an Lp-error search, optionally rounded to powers of two.

use crate::error::{QuantError, Result, invalid};
use crate::fp::MiniFloat;

/// A uniform integer grid of `bits` bits. Symmetric: codes `[-2^(b-1), 2^(b-1) - 1]`,
/// zero point 0, scale `absmax / (2^(b-1) - 1)`. Asymmetric: codes `[0, 2^b - 1]`, the
/// range widened to include 0 so that zero is exact (PyTorch's observers do the same).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IntFormat {
    bits: u32,
    pub symmetric: bool,
}

impl IntFormat {
    /// Bit widths 2 to 8 (the kernels store codes in bytes).
    pub fn new(bits: u32, symmetric: bool) -> Result<Self> {
        if !(2..=8).contains(&bits) {
            return Err(QuantError::UnsupportedBits {
                bits,
                what: "integer quantizer",
                supported: "2..=8",
            });
        }
        Ok(Self { bits, symmetric })
    }

    pub fn bits(&self) -> u32 {
        self.bits
    }

    /// Smallest and largest code.
    pub fn code_range(&self) -> (i32, i32) {
        if self.symmetric {
            (-(1 << (self.bits - 1)), (1 << (self.bits - 1)) - 1)
        } else {
            (0, (1 << self.bits) - 1)
        }
    }

    /// Scale and zero point that map `[lo, hi]` onto the grid (`lo <= 0 <= hi` enforced).
    pub fn params(&self, lo: f32, hi: f32) -> (f32, i32) {
        let (qmin, qmax) = self.code_range();
        if self.symmetric {
            let a = lo.abs().max(hi.abs());
            (nonzero_scale(a / qmax as f32), 0)
        } else {
            let (lo, hi) = (lo.min(0.0), hi.max(0.0));
            let s = nonzero_scale((hi - lo) / (qmax - qmin) as f32);
            let z = (qmin as f32 - lo / s).round_ties_even() as i32;
            (s, z.clamp(qmin, qmax))
        }
    }

    /// The code of `x` (round half to even, as `torch.fake_quantize_*`), clamped.
    #[inline]
    pub fn quantize(&self, x: f32, scale: f32, zero: i32) -> i32 {
        let (qmin, qmax) = self.code_range();
        // Values beyond 2^22 clamp to the code range either way.
        (round_even_small((x / scale).clamp(-BIG, BIG)) as i32)
            .saturating_add(zero)
            .clamp(qmin, qmax)
    }
}

const BIG: f32 = 4_194_304.0; // 2^22

/// `x.round_ties_even()` for `|x| <= 2^22`, without the libm call (`rintf`) that
/// `round_ties_even` becomes on baseline x86-64 (a quarter of a W8A8 layer's time): adding
/// and subtracting 1.5 * 2^23 leaves an integer spacing of 1, and the addition rounds to
/// nearest even.
#[inline(always)]
pub fn round_even_small(x: f32) -> f32 {
    const M: f32 = 12_582_912.0;
    (x + M) - M
}

/// A scale that can be divided by: an all-zero block gets scale 1 (every code 0).
fn nonzero_scale(s: f32) -> f32 {
    if s > 0.0 && s.is_finite() { s } else { 1.0 }
}

/// The grid a quantizer rounds to.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Scheme {
    Int(IntFormat),
    /// A minifloat, scaled so that the block's absolute maximum maps to the format's max.
    Float(MiniFloat),
}

impl Scheme {
    /// Symmetric integers of `bits` bits.
    pub fn int(bits: u32) -> Result<Self> {
        Ok(Self::Int(IntFormat::new(bits, true)?))
    }

    /// Bits per stored value.
    pub fn bits(&self) -> u32 {
        match self {
            Self::Int(f) => f.bits(),
            Self::Float(f) => f.bits(),
        }
    }
}

/// Which values share a scale, for a `[rows, cols]` matrix (a weight `[out, in]`, or
/// activations `[tokens, features]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Granularity {
    PerTensor,
    /// One scale per row: per output channel of a weight, per token of an activation.
    PerRow,
    /// Groups of this many consecutive columns within a row (e.g. 64 or 128).
    PerGroup(usize),
}

impl Granularity {
    /// Number of blocks along rows and along columns.
    pub fn blocks(&self, rows: usize, cols: usize) -> Result<(usize, usize)> {
        match *self {
            Self::PerTensor => Ok((1, 1)),
            Self::PerRow => Ok((rows, 1)),
            Self::PerGroup(g) => {
                if g == 0 || !cols.is_multiple_of(g) {
                    return Err(invalid(
                        "group size",
                        format!("{g} does not divide the {cols} columns"),
                    ));
                }
                Ok((rows, cols / g))
            }
        }
    }
}

/// How a block's scale is chosen.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Estimator {
    /// The block's min and max (absolute max when symmetric).
    MinMax,
    /// The clipping range `alpha * [min, max]`, `alpha` on a grid of `steps` values in
    /// (0, 1], that minimises `sum |x - q(x)|^p` (p = 2.4 in BRECQ / Q-Diffusion).
    Lp { p: f64, steps: usize },
}

impl Estimator {
    /// The Lp search with Q-Diffusion's p = 2.4 over 100 clipping ratios.
    pub const LP24: Self = Self::Lp { p: 2.4, steps: 100 };
}

/// A complete quantizer description: grid, granularity, scale estimation, and whether scales
/// are rounded up to powers of two (ZeroQuant-FP: the rescaling becomes an exponent add).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Quantizer {
    pub scheme: Scheme,
    pub granularity: Granularity,
    pub estimator: Estimator,
    pub pow2_scales: bool,
}

/// Scales (and zero points, all 0 unless asymmetric) of one matrix: `row_blocks x
/// col_blocks` blocks in row-major order.
#[derive(Clone, Debug, PartialEq)]
pub struct Scales {
    pub scheme: Scheme,
    pub granularity: Granularity,
    pub rows: usize,
    pub cols: usize,
    pub scale: Vec<f32>,
    pub zero: Vec<i32>,
}

impl Quantizer {
    pub fn new(scheme: Scheme, granularity: Granularity) -> Self {
        Self {
            scheme,
            granularity,
            estimator: Estimator::MinMax,
            pow2_scales: false,
        }
    }

    pub fn with_estimator(mut self, estimator: Estimator) -> Self {
        self.estimator = estimator;
        self
    }

    pub fn with_pow2_scales(mut self, pow2: bool) -> Self {
        self.pow2_scales = pow2;
        self
    }

    /// Scales for the `[rows, cols]` matrix `x` (row-major).
    pub fn fit(&self, x: &[f32], rows: usize, cols: usize) -> Result<Scales> {
        check_matrix(x, rows, cols, "quantizer input")?;
        if x.is_empty() {
            return Err(QuantError::EmptyCalibration("no values to fit scales to".into()));
        }
        let (rb, cb) = self.granularity.blocks(rows, cols)?;
        let mut scale = Vec::with_capacity(rb * cb);
        let mut zero = Vec::with_capacity(rb * cb);
        let mut block = Vec::new();
        for bi in 0..rb * cb {
            block.clear();
            for_block(rows, cols, rb, cb, bi, |r, c0, c1| {
                block.extend_from_slice(&x[r * cols + c0..r * cols + c1])
            });
            let (s, z) = self.fit_block(&block)?;
            scale.push(s);
            zero.push(z);
        }
        Ok(Scales {
            scheme: self.scheme,
            granularity: self.granularity,
            rows,
            cols,
            scale,
            zero,
        })
    }

    /// Scale and zero point from a range `[lo, hi]` (running min/max, static activations).
    pub fn params_from_range(&self, lo: f32, hi: f32) -> (f32, i32) {
        let (s, z) = range_params(self.scheme, lo, hi);
        self.finish(s, z, lo)
    }

    fn finish(&self, s: f32, z: i32, lo: f32) -> (f32, i32) {
        if !self.pow2_scales {
            return (s, z);
        }
        // Round up, so the range still fits (no extra clipping).
        let s2 = 2f32.powi(s.log2().ceil() as i32);
        match self.scheme {
            Scheme::Int(f) if !f.symmetric => {
                let (qmin, qmax) = f.code_range();
                let z = (qmin as f32 - lo.min(0.0) / s2).round_ties_even() as i32;
                (s2, z.clamp(qmin, qmax))
            }
            _ => (s2, z),
        }
    }

    fn fit_block(&self, block: &[f32]) -> Result<(f32, i32)> {
        if let Some(bad) = block.iter().find(|v| !v.is_finite()) {
            return Err(QuantError::NonFinite(format!("quantizer input ({bad})")));
        }
        let lo = block.iter().copied().fold(f32::INFINITY, f32::min);
        let hi = block.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        match self.estimator {
            Estimator::MinMax => Ok(self.params_from_range(lo, hi)),
            Estimator::Lp { p, steps } => {
                if p.is_nan() || p <= 0.0 || steps == 0 {
                    return Err(invalid("Lp estimator", format!("p = {p}, steps = {steps}")));
                }
                let mut best = (f64::INFINITY, self.params_from_range(lo, hi));
                for i in 1..=steps {
                    let alpha = i as f32 / steps as f32;
                    let (s, z) = self.params_from_range(alpha * lo, alpha * hi);
                    let err: f64 = block
                        .iter()
                        .map(|&v| ((v - fake_one(self.scheme, v, s, z)).abs() as f64).powf(p))
                        .sum();
                    if err < best.0 {
                        best = (err, (s, z));
                    }
                }
                Ok(best.1)
            }
        }
    }
}

fn range_params(scheme: Scheme, lo: f32, hi: f32) -> (f32, i32) {
    match scheme {
        Scheme::Int(f) => f.params(lo, hi),
        Scheme::Float(f) => (nonzero_scale(lo.abs().max(hi.abs()) / f.max_value() as f32), 0),
    }
}

/// `x` quantized and dequantized with scale `s` and zero point `z`.
#[inline]
pub fn fake_one(scheme: Scheme, x: f32, s: f32, z: i32) -> f32 {
    match scheme {
        Scheme::Int(f) => (f.quantize(x, s, z) - z) as f32 * s,
        // Finite inputs only (checked by the callers), so encoding cannot fail.
        Scheme::Float(f) => f.decode(f.encode(x / s).unwrap_or(0)) * s,
    }
}

/// Calls `f(row, col_start, col_end)` for each row segment of block `bi`.
fn for_block(
    rows: usize,
    cols: usize,
    rb: usize,
    cb: usize,
    bi: usize,
    mut f: impl FnMut(usize, usize, usize),
) {
    let (br, bc) = (bi / cb, bi % cb);
    let rows_per = rows / rb.max(1);
    let cols_per = cols / cb.max(1);
    let (r0, r1) = if rb == 1 {
        (0, rows)
    } else {
        (br * rows_per, (br + 1) * rows_per)
    };
    for r in r0..r1 {
        f(r, bc * cols_per, (bc + 1) * cols_per);
    }
}

pub(crate) fn check_matrix(x: &[f32], rows: usize, cols: usize, context: &str) -> Result<()> {
    if x.len() != rows * cols {
        return Err(QuantError::Shape {
            context: context.into(),
            expected: vec![rows, cols],
            got: vec![x.len()],
        });
    }
    Ok(())
}

impl Scales {
    /// The block holding element `(r, c)`.
    #[inline]
    fn block_of(&self, r: usize, c: usize) -> usize {
        match self.granularity {
            Granularity::PerTensor => 0,
            Granularity::PerRow => r,
            Granularity::PerGroup(g) => r * (self.cols / g) + c / g,
        }
    }

    /// Checks that these scales belong to a `[rows, cols]` matrix.
    pub fn check_fits(&self, rows: usize, cols: usize, tensor: &str) -> Result<()> {
        let (rb, cb) = self.granularity.blocks(rows, cols)?;
        for (found, what) in [(self.scale.len(), "scales"), (self.zero.len(), "zero points")] {
            if found != rb * cb || self.rows != rows || self.cols != cols {
                return Err(QuantError::ScaleMismatch {
                    tensor: format!("{tensor} ({what})"),
                    expected: rb * cb,
                    found,
                });
            }
        }
        Ok(())
    }

    /// `x` quantized and dequantized in place.
    pub fn fake_quantize(&self, x: &mut [f32]) -> Result<()> {
        check_matrix(x, self.rows, self.cols, "fake_quantize")?;
        if let Some(bad) = x.iter().find(|v| !v.is_finite()) {
            return Err(QuantError::NonFinite(format!("fake_quantize input ({bad})")));
        }
        for r in 0..self.rows {
            for c in 0..self.cols {
                let b = self.block_of(r, c);
                let v = &mut x[r * self.cols + c];
                *v = fake_one(self.scheme, *v, self.scale[b], self.zero[b]);
            }
        }
        Ok(())
    }

    /// Values of `codes` (integer codes, or minifloat codes as their byte value), checked
    /// against the format's code range.
    pub fn dequantize(&self, codes: &[i32]) -> Result<Vec<f32>> {
        check_matrix_i32(codes, self.rows, self.cols, "dequantize")?;
        let mut out = Vec::with_capacity(codes.len());
        for r in 0..self.rows {
            for c in 0..self.cols {
                let b = self.block_of(r, c);
                let q = codes[r * self.cols + c];
                let v = match self.scheme {
                    Scheme::Int(f) => {
                        let (lo, hi) = f.code_range();
                        if q < lo || q > hi {
                            return Err(invalid("code", format!("{q} outside [{lo}, {hi}]")));
                        }
                        (q - self.zero[b]) as f32 * self.scale[b]
                    }
                    Scheme::Float(f) => {
                        if q < 0 || q >= 1 << f.bits() {
                            return Err(invalid("code", format!("{q} is not a {} code", f.name)));
                        }
                        f.decode(q as u8) * self.scale[b]
                    }
                };
                out.push(v);
            }
        }
        Ok(out)
    }

    /// Integer codes of `x` (integer schemes only).
    pub fn quantize_int(&self, x: &[f32]) -> Result<Vec<i32>> {
        check_matrix(x, self.rows, self.cols, "quantize_int")?;
        let Scheme::Int(f) = self.scheme else {
            return Err(invalid("scheme", "integer codes need an integer scheme"));
        };
        let mut q = Vec::with_capacity(x.len());
        for r in 0..self.rows {
            for c in 0..self.cols {
                let b = self.block_of(r, c);
                q.push(f.quantize(x[r * self.cols + c], self.scale[b], self.zero[b]));
            }
        }
        Ok(q)
    }
}

/// Running min/max of a stream of activations (optionally an exponential moving average
/// with `momentum`, PyTorch's `MovingAverageMinMaxObserver`), for static scales.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunningMinMax {
    pub lo: f32,
    pub hi: f32,
    pub batches: usize,
    pub momentum: Option<f32>,
}

impl RunningMinMax {
    pub fn new(momentum: Option<f32>) -> Self {
        Self {
            lo: 0.0,
            hi: 0.0,
            batches: 0,
            momentum,
        }
    }

    /// Folds one batch in (empty batches are ignored).
    pub fn update(&mut self, x: &[f32]) -> Result<()> {
        if x.is_empty() {
            return Ok(());
        }
        if x.iter().any(|v| !v.is_finite()) {
            return Err(QuantError::NonFinite("observed activations".into()));
        }
        let lo = x.iter().copied().fold(f32::INFINITY, f32::min);
        let hi = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        match (self.batches, self.momentum) {
            (0, _) => (self.lo, self.hi) = (lo, hi),
            (_, Some(m)) => {
                self.lo += m * (lo - self.lo);
                self.hi += m * (hi - self.hi);
            }
            (_, None) => {
                self.lo = self.lo.min(lo);
                self.hi = self.hi.max(hi);
            }
        }
        self.batches += 1;
        Ok(())
    }

    /// Per-tensor scale and zero point of the observed range.
    pub fn params(&self, q: &Quantizer) -> Result<(f32, i32)> {
        if self.batches == 0 {
            return Err(QuantError::EmptyCalibration("no activations observed".into()));
        }
        Ok(q.params_from_range(self.lo, self.hi))
    }
}

pub(crate) fn check_matrix_i32(x: &[i32], rows: usize, cols: usize, context: &str) -> Result<()> {
    if x.len() != rows * cols {
        return Err(QuantError::Shape {
            context: context.into(),
            expected: vec![rows, cols],
            got: vec![x.len()],
        });
    }
    Ok(())
}
