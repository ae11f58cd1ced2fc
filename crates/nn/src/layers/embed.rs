//! Time embeddings, adaLN modulation and patch (un)folding.

use diffusion_core::Rng;
use ndarray::ArrayD;
use rayon::prelude::*;

use crate::error::{NnError, Result};
use crate::kernels::{array, std_slice};
use crate::param::{Float, Param, Parameters};

/// Sinusoidal timestep embedding `[cos(t f_0..f_{h-1}), sin(t f_0..f_{h-1})]`,
/// `f_i = exp(-ln(max_period) i / h)`, `h = dim / 2`: `[batch, 2h]`.
///
/// Computed in f64 and rounded once, so the f32 version is as accurate as f32 allows
/// (t up to 1000 makes an f32 argument lose ~1e-4 absolute otherwise).
pub fn timestep_embedding<A: Float>(t: &[A], dim: usize, max_period: f64) -> ArrayD<A> {
    let rows = TimestepRows::new(t, dim, max_period);
    let width = rows.width();
    let mut out = Vec::with_capacity(t.len() * width);
    for &r in &rows.index {
        out.extend_from_slice(rows.row(r));
    }
    array(&[t.len(), width], out)
}

/// The timestep embedding of a batch as its distinct rows: a batch holds few distinct
/// timesteps (one while sampling, at most the number of training steps while training),
/// so each is computed once, and a layer that projects the embedding can project the
/// distinct rows only.
#[derive(Clone, Debug)]
pub(crate) struct TimestepRows<A> {
    /// `[distinct, width]` embedding rows, in order of first appearance.
    pub table: Vec<A>,
    /// Row of `table` for each batch item.
    pub index: Vec<usize>,
    width: usize,
}

impl<A: Float> TimestepRows<A> {
    /// As [`timestep_embedding`] (`width = 2 * (dim / 2)`).
    pub fn new(t: &[A], dim: usize, max_period: f64) -> Self {
        let half = dim / 2;
        let freqs: Vec<f64> = (0..half)
            .map(|i| (-max_period.ln() * i as f64 / half as f64).exp())
            .collect();
        // Distinct timesteps in order of first appearance, then their rows in parallel
        // (a training batch has up to a thousand; each row is `half` f64 sin/cos pairs, by
        // the vectorised `vmath::sin_cos`).
        let mut rows: std::collections::HashMap<u64, usize> = std::collections::HashMap::new();
        let mut distinct: Vec<f64> = Vec::new();
        let index = t
            .iter()
            .map(|&tv| {
                let tv = tv.as_f64();
                *rows.entry(tv.to_bits()).or_insert_with(|| {
                    distinct.push(tv);
                    distinct.len() - 1
                })
            })
            .collect();
        let mut table = vec![A::zero(); distinct.len() * 2 * half];
        table
            .par_chunks_mut((2 * half).max(1))
            .zip(&distinct)
            .with_min_len(16)
            .for_each(|(row, &tv)| {
                let (cos, sin) = row.split_at_mut(half);
                crate::vmath::wide(
                    #[inline(always)]
                    || {
                        for ((c, s), &f) in cos.iter_mut().zip(sin.iter_mut()).zip(&freqs) {
                            let (sv, cv) = crate::vmath::sin_cos(tv * f);
                            (*c, *s) = (A::of_f64(cv), A::of_f64(sv));
                        }
                    },
                )
            });
        Self {
            table,
            index,
            width: 2 * half,
        }
    }

    pub fn width(&self) -> usize {
        self.width
    }

    pub fn distinct(&self) -> usize {
        self.table.len().checked_div(self.width).unwrap_or(0)
    }

    pub fn row(&self, r: usize) -> &[A] {
        &self.table[r * self.width..(r + 1) * self.width]
    }
}

/// Gaussian Fourier features (Song et al. 2021): `[sin(2 pi t W), cos(2 pi t W)]` with a
/// fixed (non-trainable) `W ~ N(0, scale^2)` of `dim / 2` entries, stored as buffer `W`.
#[derive(Clone, Debug)]
pub struct FourierFeatures<A> {
    pub w: ArrayD<A>,
}

impl<A: Float> FourierFeatures<A> {
    pub fn new(dim: usize, scale: f64, rng: &mut Rng) -> Self {
        let mut z = vec![0.0; dim / 2];
        rng.fill_normal(&mut z);
        Self {
            w: array(&[dim / 2], z.iter().map(|v| A::of_f64(v * scale)).collect()),
        }
    }

    /// `[batch, dim]` features of `t` (computed in f64).
    pub fn forward(&self, t: &[A]) -> ArrayD<A> {
        let w: Vec<f64> = self.w.iter().map(|&v| v.as_f64()).collect();
        let mut out = Vec::with_capacity(t.len() * 2 * w.len());
        for &tv in t {
            let args: Vec<f64> = w
                .iter()
                .map(|&f| std::f64::consts::TAU * tv.as_f64() * f)
                .collect();
            out.extend(args.iter().map(|a| A::of_f64(a.sin())));
            out.extend(args.iter().map(|a| A::of_f64(a.cos())));
        }
        array(&[t.len(), 2 * w.len()], out)
    }
}

impl<A> Parameters<A> for FourierFeatures<A> {
    fn visit(&self, _f: &mut dyn FnMut(&str, &Param<A>)) {}
    fn visit_mut(&mut self, _f: &mut dyn FnMut(&str, &mut Param<A>)) {}
    fn visit_buffers(&self, f: &mut dyn FnMut(&str, &ArrayD<A>)) {
        f("W", &self.w);
    }
    fn visit_buffers_mut(&mut self, f: &mut dyn FnMut(&str, &mut ArrayD<A>)) {
        f("W", &mut self.w);
    }
}

/// adaLN modulation `y = x * (1 + scale) + shift` for `x: [batch, tokens, dim]` and
/// per-item `shift`, `scale: [batch, dim]` (rows of stride `ms` starting at column
/// `shift_at` / `scale_at` of a packed modulation matrix). Parallel over batch items.
pub(crate) fn modulate<A: Float>(
    x: &[A],
    m: &[A],
    ms: usize,
    shift_at: usize,
    scale_at: usize,
    tokens: usize,
    dim: usize,
) -> Vec<A> {
    let item = check_items(x.len(), m.len(), ms, tokens, dim);
    let mut y = Vec::with_capacity(x.len());
    y.spare_capacity_mut()[..x.len()]
        .par_chunks_mut(item)
        .zip(x.par_chunks(item))
        .zip(m.par_chunks(ms.max(1)))
        .for_each(|((yb, xb), mb)| {
            let shift = &mb[shift_at..shift_at + dim];
            let gain: Vec<A> = mb[scale_at..scale_at + dim]
                .iter()
                .map(|&s| A::one() + s)
                .collect();
            crate::vmath::wide(
                #[inline(always)]
                || {
                    for (yr, xr) in yb.chunks_exact_mut(dim).zip(xb.chunks_exact(dim)) {
                        for (((y, &x), &g), &b) in yr.iter_mut().zip(xr).zip(&gain).zip(shift) {
                            y.write(x * g + b);
                        }
                    }
                },
            )
        });
    // SAFETY: `check_items`: whole items of whole rows, each item with its modulation
    // row, so every element is written.
    unsafe { y.set_len(x.len()) };
    y
}

/// The item length `tokens * dim` of a token tensor of `len` elements modulated by rows of
/// stride `ms` of `m`, after checking that the tensor is whole items of whole rows and that
/// `m` has a row for every item (the passes above write every element only then).
fn check_items(len: usize, m_len: usize, ms: usize, tokens: usize, dim: usize) -> usize {
    let item = (tokens * dim).max(1);
    assert!(
        len == 0 || (dim > 0 && len.is_multiple_of(item) && m_len >= len / item * ms),
        "adaLN: {len} elements are not items of {tokens} x {dim} with a modulation row each ({m_len} / {ms})"
    );
    item
}

/// Backward of [`modulate`]: returns dx and adds d(shift), d(scale) into `dm` (same packing).
/// Parallel over batch items: each item owns its row of `dm`, so sums keep a fixed order.
pub(crate) fn modulate_backward<A: Float>(
    x: &[A],
    dy: &[A],
    m: &[A],
    dm: &mut [A],
    ms: usize,
    shift_at: usize,
    scale_at: usize,
    tokens: usize,
    dim: usize,
) -> Vec<A> {
    let item = check_items(x.len(), m.len().min(dm.len()), ms, tokens, dim);
    assert_eq!(dy.len(), x.len(), "adaLN gradient length");
    let mut dx = Vec::with_capacity(x.len());
    dx.spare_capacity_mut()[..x.len()]
        .par_chunks_mut(item)
        .zip(x.par_chunks(item).zip(dy.par_chunks(item)))
        .zip(m.par_chunks(ms.max(1)).zip(dm.par_chunks_mut(ms.max(1))))
        .for_each(|((dxb, (xb, dyb)), (mb, dmb))| {
            let gain: Vec<A> = mb[scale_at..scale_at + dim]
                .iter()
                .map(|&s| A::one() + s)
                .collect();
            let (mut dshift, mut dscale) = (vec![A::zero(); dim], vec![A::zero(); dim]);
            crate::vmath::wide(
                #[inline(always)]
                || {
                    for ((dxr, xr), dyr) in dxb
                        .chunks_exact_mut(dim)
                        .zip(xb.chunks_exact(dim))
                        .zip(dyb.chunks_exact(dim))
                    {
                        for (((((dx, &x), &dy), &g), ds), dc) in dxr
                            .iter_mut()
                            .zip(xr)
                            .zip(dyr)
                            .zip(&gain)
                            .zip(&mut dshift)
                            .zip(&mut dscale)
                        {
                            dx.write(dy * g);
                            *ds = *ds + dy;
                            *dc = *dc + dy * x;
                        }
                    }
                },
            );
            for (i, (&ds, &dc)) in dshift.iter().zip(&dscale).enumerate() {
                dmb[shift_at + i] = dmb[shift_at + i] + ds;
                dmb[scale_at + i] = dmb[scale_at + i] + dc;
            }
        });
    // SAFETY: as in `modulate`.
    unsafe { dx.set_len(x.len()) };
    dx
}

/// Gated residual `x += gate * f` (adaLN-Zero's `alpha`); gate rows as in [`modulate`].
pub(crate) fn gate_add<A: Float>(
    x: &mut [A],
    f: &[A],
    m: &[A],
    ms: usize,
    gate_at: usize,
    tokens: usize,
    dim: usize,
) {
    let item = (tokens * dim).max(1);
    x.par_chunks_mut(item)
        .zip(f.par_chunks(item))
        .zip(m.par_chunks(ms.max(1)))
        .for_each(|((xb, fb), mb)| gate_add_seq(xb, fb, mb, ms, gate_at, tokens, dim));
}

/// [`gate_add`] on the calling thread, for the whole items of `x` and their rows of `m`.
pub(crate) fn gate_add_seq<A: Float>(
    x: &mut [A],
    f: &[A],
    m: &[A],
    ms: usize,
    gate_at: usize,
    tokens: usize,
    dim: usize,
) {
    let item = (tokens * dim).max(1);
    assert_eq!(f.len(), x.len(), "adaLN gated branch length");
    crate::vmath::wide(
        #[inline(always)]
        || {
            for ((xb, fb), mb) in x.chunks_mut(item).zip(f.chunks(item)).zip(m.chunks(ms.max(1))) {
                let g = &mb[gate_at..gate_at + dim];
                for (xr, fr) in xb.chunks_exact_mut(dim).zip(fb.chunks_exact(dim)) {
                    for ((x, &f), &g) in xr.iter_mut().zip(fr).zip(g) {
                        *x = *x + g * f;
                    }
                }
            }
        },
    )
}

/// Backward of [`gate_add`] for the gated branch: returns df and its column sums (the bias
/// gradient of the layer that produced `f`, summed per item while the rows are in cache,
/// then in item order), and adds d(gate) into `dm`.
pub(crate) fn gate_backward<A: Float>(
    dy: &[A],
    f: &[A],
    m: &[A],
    dm: &mut [A],
    ms: usize,
    gate_at: usize,
    tokens: usize,
    dim: usize,
) -> (Vec<A>, Vec<A>) {
    let item = check_items(dy.len(), m.len().min(dm.len()), ms, tokens, dim);
    assert_eq!(f.len(), dy.len(), "adaLN gated branch length");
    let mut df = Vec::with_capacity(dy.len());
    let sums: Vec<Vec<A>> = df.spare_capacity_mut()[..dy.len()]
        .par_chunks_mut(item)
        .zip(f.par_chunks(item).zip(dy.par_chunks(item)))
        .zip(m.par_chunks(ms.max(1)).zip(dm.par_chunks_mut(ms.max(1))))
        .map(|((dfb, (fb, dyb)), (mb, dmb))| {
            let g = &mb[gate_at..gate_at + dim];
            let (mut dgate, mut sums) = (vec![A::zero(); dim], vec![A::zero(); dim]);
            crate::vmath::wide(
                #[inline(always)]
                || {
                    let rows = dfb
                        .chunks_exact_mut(dim)
                        .zip(fb.chunks_exact(dim))
                        .zip(dyb.chunks_exact(dim));
                    for ((dfr, fr), dyr) in rows {
                        let cols = dfr
                            .iter_mut()
                            .zip(fr)
                            .zip(dyr)
                            .zip(g)
                            .zip(&mut dgate)
                            .zip(&mut sums);
                        for (((((df, &f), &dy), &g), dg), s) in cols {
                            let v = dy * g;
                            df.write(v);
                            *s = *s + v;
                            *dg = *dg + dy * f;
                        }
                    }
                },
            );
            for (dm, &dg) in dmb[gate_at..gate_at + dim].iter_mut().zip(&dgate) {
                *dm = *dm + dg;
            }
            sums
        })
        .collect();
    // SAFETY: as in `modulate`.
    unsafe { df.set_len(dy.len()) };
    (df, crate::kernels::sum_in_order(&sums, dim))
}

fn patch_dims(shape: &[usize], p: usize) -> Result<(usize, usize, usize, usize)> {
    if shape.len() != 4 || p == 0 || !shape[2].is_multiple_of(p) || !shape[3].is_multiple_of(p) {
        return Err(NnError::Shape {
            context: format!("patchify: [batch, channels, H, W] with H, W multiples of patch {p}"),
            expected: vec![],
            got: shape.to_vec(),
        });
    }
    Ok((shape[0], shape[1], shape[2], shape[3]))
}

/// `[B, C, H, W]` -> `[B, (H/p)(W/p), p*p*C]`, token `(gi, gj)` row-major, feature
/// `(pi, pj, c)` row-major: the inverse of DiT's final unpatchify.
pub fn patchify<A: Float>(x: &ArrayD<A>, p: usize) -> Result<ArrayD<A>> {
    let (b, c, h, w) = patch_dims(x.shape(), p)?;
    let xs = std_slice(x);
    let (gh, gw) = (h / p, w / p);
    let mut out = vec![A::zero(); xs.len()];
    for bi in 0..b {
        for ci in 0..c {
            for y in 0..h {
                for xx in 0..w {
                    let tok = (y / p) * gw + xx / p;
                    let feat = ((y % p) * p + xx % p) * c + ci;
                    out[(bi * gh * gw + tok) * p * p * c + feat] = xs[((bi * c + ci) * h + y) * w + xx];
                }
            }
        }
    }
    Ok(array(&[b, gh * gw, p * p * c], out))
}

/// The `p x p` patches of images `[B, C, H, W]` (`x.len() / (C H W)` of them) as rows
/// `[B * T, C p p]`, tokens in raster order, each row in the order of a convolution's
/// flattened kernel `[D, C, p, p]` (channel, row, column): a stride-`p` patch convolution is
/// then one product with its weight as a `[D, C p p]` matrix. `H` and `W` must be multiples
/// of `p`.
pub(crate) fn conv_patches<A: Float>(x: &[A], (c, h, w): (usize, usize, usize), p: usize) -> Vec<A> {
    let item = (c * h * w).max(1);
    let mut rows = vec![A::zero(); x.len()];
    rows.par_chunks_mut(item)
        .zip(x.par_chunks(item))
        .for_each(|(rb, xb)| patch_elements((c, h, w), p, |i, r| rb[r] = xb[i]));
    rows
}

/// The adjoint of [`conv_patches`]: patch-row gradients back to the images' gradient (every
/// image element lies in exactly one patch, so it is the inverse copy).
pub(crate) fn conv_patches_adjoint<A: Float>(
    rows: &[A],
    (c, h, w): (usize, usize, usize),
    p: usize,
) -> Vec<A> {
    let item = (c * h * w).max(1);
    let mut x = vec![A::zero(); rows.len()];
    x.par_chunks_mut(item)
        .zip(rows.par_chunks(item))
        .for_each(|(xb, rb)| patch_elements((c, h, w), p, |i, r| xb[i] = rb[r]));
    x
}

/// Calls `f(image index, patch-row index)` for every element of one `[C, H, W]` image,
/// in image order.
fn patch_elements((c, h, w): (usize, usize, usize), p: usize, mut f: impl FnMut(usize, usize)) {
    let (cpp, gw) = (c * p * p, w / p);
    for ci in 0..c {
        for y in 0..h {
            let row0 = (y / p) * gw * cpp + (ci * p + y % p) * p;
            for xx in 0..w {
                f((ci * h + y) * w + xx, row0 + (xx / p) * cpp + xx % p);
            }
        }
    }
}

/// The inverse of [`patchify`]: `[B, T, p*p*C]` -> `[B, C, H, W]`.
pub fn unpatchify<A: Float>(
    tokens: &ArrayD<A>,
    p: usize,
    channels: usize,
    h: usize,
    w: usize,
) -> Result<ArrayD<A>> {
    let s = tokens.shape();
    let b = s.first().copied().unwrap_or(0);
    patch_dims(&[b, channels, h, w], p)?;
    let expected = [b, (h / p) * (w / p), p * p * channels];
    crate::error::check_shape("unpatchify tokens", &expected, s)?;
    let ts = std_slice(tokens);
    let gw = w / p;
    let mut out = vec![A::zero(); ts.len()];
    let gh = h / p;
    for bi in 0..b {
        for ci in 0..channels {
            for y in 0..h {
                for xx in 0..w {
                    let tok = (y / p) * gw + xx / p;
                    let feat = ((y % p) * p + xx % p) * channels + ci;
                    out[((bi * channels + ci) * h + y) * w + xx] =
                        ts[(bi * gh * gw + tok) * p * p * channels + feat];
                }
            }
        }
    }
    Ok(array(&[b, channels, h, w], out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conv_patches_give_a_stride_p_convolution_and_their_adjoint() {
        let (b, c, h, w, p, d) = (2, 3, 4, 6, 2, 5);
        let mut rng = Rng::new(4);
        let mut normals = |n: usize| (0..n).map(|_| rng.normal()).collect::<Vec<f64>>();
        let (x, wt) = (normals(b * c * h * w), normals(d * c * p * p));
        let rows = conv_patches(&x, (c, h, w), p);
        let (cpp, gw, tok) = (c * p * p, w / p, (h / p) * (w / p));
        for bi in 0..b {
            for t in 0..tok {
                let (ty, tx) = (t / gw, t % gw);
                for o in 0..d {
                    // The convolution's definition: weight [o, ci, ky, kx] over the patch.
                    let mut want = 0.0;
                    for ci in 0..c {
                        for ky in 0..p {
                            for kx in 0..p {
                                let xv = x[((bi * c + ci) * h + ty * p + ky) * w + tx * p + kx];
                                want += wt[((o * c + ci) * p + ky) * p + kx] * xv;
                            }
                        }
                    }
                    let row = &rows[(bi * tok + t) * cpp..(bi * tok + t + 1) * cpp];
                    let got: f64 = row
                        .iter()
                        .zip(&wt[o * cpp..(o + 1) * cpp])
                        .map(|(a, b)| a * b)
                        .sum();
                    assert!((got - want).abs() < 1e-12, "item {bi} token {t} channel {o}");
                }
            }
        }
        // <patches(x), r> = <x, adjoint(r)>.
        let r = normals(rows.len());
        let lhs: f64 = rows.iter().zip(&r).map(|(a, b)| a * b).sum();
        let rhs: f64 = x
            .iter()
            .zip(&conv_patches_adjoint(&r, (c, h, w), p))
            .map(|(a, b)| a * b)
            .sum();
        assert!((lhs - rhs).abs() < 1e-12 * lhs.abs().max(1.0));
    }
}
