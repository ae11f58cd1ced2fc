//! LayerNorm (last axis) and GroupNorm (`[batch, channels, spatial...]`).
//!
//! Both normalise contiguous blocks of the row-major input and differ only in the block
//! length and in which affine channel an element belongs to.

use std::mem::MaybeUninit;

use ndarray::ArrayD;
use rayon::prelude::*;

use super::activation::{silu_backward_in_place_seq, silu_in_place_seq};
use crate::error::{NnError, Result, check_shape};
use crate::kernels::{Sink, array, assume_init_mut, std_slice};
use crate::param::{Float, Param, Parameters};

/// Per-block `(mean, 1 / sqrt(var + eps))` of a GroupNorm input, in f64.
#[derive(Clone, Debug, Default)]
pub(crate) struct GroupStats(Vec<(f64, f64)>);

/// What a norm keeps for its backward pass (empty by default: inference keeps nothing).
#[derive(Clone, Debug, Default)]
pub struct NormCache<A> {
    xhat: Vec<A>,
    rstd: Vec<A>,
    shape: Vec<usize>,
}

/// Independent accumulators of the row sums below: they break the add-latency chain and
/// let the compiler vectorise, while the order of additions stays fixed (results do not
/// depend on threads or on the machine's vector width).
const LANES: usize = 8;

/// `sum f(a[i], b[i])` in f64, accumulated in [`LANES`] interleaved lanes combined pairwise.
#[inline(always)]
fn lane_sum<A: Float>(a: &[A], b: &[A], f: impl Fn(f64, f64) -> f64) -> f64 {
    let mut acc = [0.0f64; LANES];
    let (ac, bc) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (ca, cb) in ac.zip(bc) {
        for l in 0..LANES {
            acc[l] += f(ca[l].as_f64(), cb[l].as_f64());
        }
    }
    for (l, (&x, &y)) in ar.iter().zip(br).enumerate() {
        acc[l] += f(x.as_f64(), y.as_f64());
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]))
}

/// `(mean, 1 / sqrt(var + eps))` of a block, in f64.
#[inline(always)]
fn block_stats<A: Float>(x: &[A], eps: f64) -> (f64, f64) {
    let n = x.len() as f64;
    let mean = lane_sum(x, x, |v, _| v) / n;
    let var = lane_sum(x, x, |v, _| (v - mean) * (v - mean)) / n;
    (mean, 1.0 / (var + eps).sqrt())
}

/// `out = (x - mean) * rstd` at the element type's vector width, to within about 1.5 ulp of
/// the f64 result: the mean is split into its nearest element value and the remainder, and
/// `x - hi` is exact whenever `x` is within a factor of two of the mean (Sterbenz). So a
/// mean that is large against the spread costs no accuracy, as it would if the f32-rounded
/// mean were subtracted (up to half an ulp of the mean, times `rstd`, on every output). For
/// f64 `lo` is 0 and this is the plain formula. Measured on dit-tiny's rows (4096 x 192,
/// statistics included): 0.26 -> 0.17 ms against computing every element in f64.
#[inline(always)]
fn normalize_with<A: Float>(x: &[A], mean: f64, rstd: f64, out: &mut [impl Sink<A>]) {
    let hi: A = A::of_f64(mean);
    let lo: A = A::of_f64(mean - hi.as_f64());
    let r: A = A::of_f64(rstd);
    for (o, &v) in out.iter_mut().zip(x) {
        o.put((v - hi - lo) * r);
    }
}

/// `out = normalize(x) * w + b` for one channel's values (the arithmetic of
/// [`normalize_with`] and then the affine map). A function of its own, with the channel's
/// `w` and `b` as values: inlined into a closure that captured them, the loops ran scalar
/// (the captured channel index was reloaded and bounds-checked per element).
#[inline(always)]
fn normalize_affine<A: Float>(x: &[A], mean: f64, rstd: f64, (w, b): (A, A), out: &mut [A]) {
    normalize_with(x, mean, rstd, out);
    for v in out.iter_mut() {
        *v = *v * w + b;
    }
}

/// Each row of `dim` of `x` normalised into `xhat` and its `rstd` into `rstd`, on the
/// calling thread (inside a vectorised dispatch: call it from one).
#[inline(always)]
fn normalize_rows<A: Float>(
    x: &[A],
    dim: usize,
    eps: f64,
    xhat: &mut [MaybeUninit<A>],
    rstd: &mut [MaybeUninit<A>],
) {
    for ((out, x), r) in xhat.chunks_mut(dim).zip(x.chunks(dim)).zip(rstd) {
        let (mean, rs) = block_stats(x, eps);
        normalize_with(x, mean, rs, out);
        r.write(A::of_f64(rs));
    }
}

/// The sum of a slice, in f64 lanes ([`lane_sum`]) rounded once to the element type.
pub(crate) fn plane_sum<A: Float>(x: &[A]) -> A {
    A::of_f64(lane_sum(x, x, |v, _| v))
}

/// Blocks handed to one rayon task: enough elements to amortise the task.
fn blocks_per_task(block: usize) -> usize {
    (16 * 1024 / block.max(1)).max(1)
}

/// `xhat = (x - mean) / sqrt(var + eps)` per block of `block` elements; statistics in f64.
fn normalize_blocks<A: Float>(x: &[A], block: usize, eps: f64) -> (Vec<A>, Vec<A>) {
    let blocks = x.len() / block.max(1);
    let (mut xhat, mut rstd) = (Vec::with_capacity(blocks * block), Vec::with_capacity(blocks));
    let per_task = blocks_per_task(block);
    xhat.spare_capacity_mut()[..blocks * block]
        .par_chunks_mut((block * per_task).max(1))
        .zip(x.par_chunks((block * per_task).max(1)))
        .zip(rstd.spare_capacity_mut()[..blocks].par_chunks_mut(per_task))
        .for_each(|((out, x), r)| {
            crate::vmath::wide(
                #[inline(always)]
                || normalize_rows(x, block, eps, out, r),
            )
        });
    // SAFETY: every task normalised its whole blocks and wrote one `rstd` per block.
    unsafe {
        xhat.set_len(blocks * block);
        rstd.set_len(blocks);
    }
    (xhat, rstd)
}

/// dL/dx given `g = dL/dxhat`: `rstd * (g - mean(g) - xhat * mean(g * xhat))` per block.
fn normalize_backward<A: Float>(xhat: &[A], rstd: &[A], g: &mut [A], block: usize) {
    let per_task = blocks_per_task(block);
    g.par_chunks_mut(block * per_task)
        .zip(xhat.par_chunks(block * per_task))
        .zip(rstd.par_chunks(per_task))
        .for_each(|((g, xh), r)| {
            crate::vmath::wide(
                #[inline(always)]
                || {
                    for ((g, xh), &r) in g.chunks_mut(block).zip(xh.chunks(block)).zip(r) {
                        normalize_backward_block(g, xh, r);
                    }
                },
            )
        });
}

/// [`normalize_backward`] of one block.
#[inline(always)]
fn normalize_backward_block<A: Float>(g: &mut [A], xh: &[A], r: A) {
    let grad = BlockGradient::new(g, xh, r);
    for (gv, &xv) in g.iter_mut().zip(xh) {
        *gv = grad.at(*gv, xv);
    }
}

/// `acc += dL/dx` of one block given `g = dL/dxhat` (see [`normalize_backward`]).
#[inline(always)]
fn normalize_backward_add_block<A: Float>(g: &[A], xh: &[A], r: A, acc: &mut [A]) {
    let grad = BlockGradient::new(g, xh, r);
    for ((a, &gv), &xv) in acc.iter_mut().zip(g).zip(xh) {
        *a = *a + grad.at(gv, xv);
    }
}

/// A block's `mean(g)` (split like the mean in [`normalize_with`]), `mean(g * xhat)` and
/// `rstd`, from sums in f64: the normalisation's input gradient is then elementwise, at the
/// element type's vector width.
struct BlockGradient<A> {
    mg_hi: A,
    mg_lo: A,
    mgx: A,
    r: A,
}

impl<A: Float> BlockGradient<A> {
    #[inline(always)]
    fn new(g: &[A], xh: &[A], r: A) -> Self {
        let n = g.len() as f64;
        let mg = lane_sum(g, g, |v, _| v) / n;
        let mg_hi: A = A::of_f64(mg);
        Self {
            mg_hi,
            mg_lo: A::of_f64(mg - mg_hi.as_f64()),
            mgx: A::of_f64(lane_sum(g, xh, |a, b| a * b) / n),
            r,
        }
    }

    /// `rstd * (g - mean(g) - xhat * mean(g * xhat))`.
    #[inline(always)]
    fn at(&self, g: A, xh: A) -> A {
        self.r * (g - self.mg_hi - self.mg_lo - xh * self.mgx)
    }
}

/// Per-channel affine transform shared by both norms. `channel_of(i)` maps an element
/// index to its affine channel.
#[derive(Clone, Debug)]
struct Affine<A> {
    weight: Param<A>,
    bias: Param<A>,
}

/// Uninitialised room for a task's share of a LayerNorm's [`NormCache`]: its normalised
/// rows and their `rstd`.
pub(crate) type NormRoom<'a, A> = (&'a mut [MaybeUninit<A>], &'a mut [MaybeUninit<A>]);

/// Layer normalisation over the last axis (PyTorch `nn.LayerNorm(dim)`).
#[derive(Clone, Debug)]
pub struct LayerNorm<A> {
    dim: usize,
    eps: f64,
    affine: Option<Affine<A>>,
}

impl<A> NormCache<A> {
    /// The normalised input (before any affine transform).
    pub(crate) fn xhat(&self) -> &[A] {
        &self.xhat
    }

    /// A LayerNorm's cache from its normalised rows and their `rstd`, filled by tasks (see
    /// [`LayerNorm::normalize_modulated_into`]).
    pub(crate) fn from_parts(xhat: Vec<A>, rstd: Vec<A>) -> Self {
        let shape = vec![xhat.len()];
        Self { xhat, rstd, shape }
    }
}

impl<A: Float> LayerNorm<A> {
    /// `elementwise_affine` adds `weight` (ones) and `bias` (zeros).
    pub fn new(dim: usize, eps: f64, elementwise_affine: bool) -> Self {
        Self {
            dim,
            eps,
            affine: elementwise_affine.then(|| Affine {
                weight: Param::new(ArrayD::ones(ndarray::IxDyn(&[dim]))),
                bias: Param::zeros(&[dim]),
            }),
        }
    }

    /// The normalised rows `xhat` (the output when there is no affine part) kept only in
    /// the cache, saving the copy [`LayerNorm::forward_slice`] makes.
    pub(crate) fn normalize(&self, x: &[A]) -> NormCache<A> {
        let (xhat, rstd) = normalize_blocks(x, self.dim, self.eps);
        NormCache {
            xhat,
            rstd,
            shape: vec![x.len()],
        }
    }

    /// `normalize(x) * (1 + scale) + shift` for `x: [batch, tokens, dim]` with per-item
    /// `shift`, `scale` at columns `shift_at`, `scale_at` of rows of stride `ms` of `m` (the
    /// adaLN modulation of `embed::modulate`), in one pass that keeps no cache: the same
    /// arithmetic as [`LayerNorm::normalize`] followed by `modulate`, for inference. On the
    /// calling thread (the DiT runs a few whole items per task).
    pub(crate) fn normalize_modulated(
        &self,
        x: &[A],
        m: &[A],
        at: (usize, usize, usize),
        tokens: usize,
    ) -> Vec<A> {
        let mut y = Vec::with_capacity(x.len());
        self.normalize_modulated_into(x, m, at, tokens, &mut y.spare_capacity_mut()[..x.len()], None);
        // SAFETY: `normalize_modulated_into` writes all of `y`.
        unsafe { y.set_len(x.len()) };
        y
    }

    /// [`LayerNorm::normalize_modulated`] into `y`; `keep` also receives the normalised rows
    /// and their `rstd` (a task's share of a [`NormCache`], see [`NormCache::from_parts`]).
    /// Every element of `y` (and of `keep`) is written.
    pub(crate) fn normalize_modulated_into(
        &self,
        x: &[A],
        m: &[A],
        (ms, shift_at, scale_at): (usize, usize, usize),
        tokens: usize,
        y: &mut [MaybeUninit<A>],
        mut keep: Option<NormRoom<'_, A>>,
    ) {
        let d = self.dim;
        let item = (tokens * d).max(1);
        assert!(
            y.len() == x.len() && m.len() >= x.len() / item * ms,
            "adaLN norm: {} rows of {d} into {}, modulation {} / {ms}",
            x.len() / d.max(1),
            y.len(),
            m.len()
        );
        for (i, ((yb, xb), mb)) in y
            .chunks_mut(item)
            .zip(x.chunks(item))
            .zip(m.chunks(ms.max(1)))
            .enumerate()
        {
            let shift = &mb[shift_at..shift_at + d];
            let gain: Vec<A> = mb[scale_at..scale_at + d].iter().map(|&s| A::one() + s).collect();
            let mut kept = keep.as_mut().map(|(xh, rs)| {
                (
                    &mut xh[i * item..(i + 1) * item],
                    &mut rs[i * tokens..(i + 1) * tokens],
                )
            });
            crate::vmath::wide(
                #[inline(always)]
                || {
                    for (r, (yr, xr)) in yb.chunks_exact_mut(d).zip(xb.chunks_exact(d)).enumerate() {
                        let (mean, rstd) = block_stats(xr, self.eps);
                        normalize_with(xr, mean, rstd, yr);
                        // SAFETY: `normalize_with` wrote the whole row.
                        let yr = unsafe { assume_init_mut(yr) };
                        if let Some((xh, rs)) = kept.as_mut() {
                            for (k, &v) in xh[r * d..(r + 1) * d].iter_mut().zip(yr.iter()) {
                                k.write(v);
                            }
                            rs[r].write(A::of_f64(rstd));
                        }
                        for ((y, &g), &b) in yr.iter_mut().zip(&gain).zip(shift) {
                            *y = *y * g + b;
                        }
                    }
                },
            )
        }
    }

    pub(crate) fn forward_slice(&self, x: &[A]) -> (Vec<A>, NormCache<A>) {
        let (xhat, rstd) = normalize_blocks(x, self.dim, self.eps);
        let y = match &self.affine {
            None => xhat.clone(),
            Some(a) => {
                let (w, b) = (a.weight.v(), a.bias.v());
                xhat.chunks(self.dim)
                    .flat_map(|row| row.iter().zip(w).zip(b).map(|((&v, &w), &b)| v * w + b))
                    .collect()
            }
        };
        (
            y,
            NormCache {
                xhat,
                rstd,
                shape: vec![x.len()],
            },
        )
    }

    pub(crate) fn backward_slice(&mut self, cache: &NormCache<A>, dy: &[A]) -> Vec<A> {
        let d = self.dim;
        let mut g = dy.to_vec();
        if let Some(a) = &mut self.affine {
            let w = a.weight.v().to_vec();
            let gw = a.weight.g();
            for (row, xh) in dy.chunks(d).zip(cache.xhat.chunks(d)) {
                for ((gw, &dy), &xh) in gw.iter_mut().zip(row).zip(xh) {
                    *gw = *gw + dy * xh;
                }
            }
            let gb = a.bias.g();
            for row in dy.chunks(d) {
                crate::kernels::add_into(gb, row);
            }
            for row in g.chunks_mut(d) {
                for (v, &w) in row.iter_mut().zip(&w) {
                    *v = *v * w;
                }
            }
        }
        normalize_backward(&cache.xhat, &cache.rstd, &mut g, d);
        g
    }

    /// The backward of an adaLN residual step in one pass over each item's rows: from
    /// `dy` = dL/d(`normalize_modulated` output), adds d(shift), d(scale) into `dm` and the
    /// norm's input gradient into `acc` (the residual stream the norm read). With
    /// `gate = Some((f, gate_at))`, `acc` is then the gradient of the residual
    /// `h = x + gate * f` that produced the norm's input (`embed::gate_add`), and this also
    /// returns the branch gradient `df = acc * gate` and its column sums (both empty without
    /// a gate), and adds d(gate) into `dm`. That is the work of `modulate_backward`,
    /// [`Self::backward_slice`] added into `acc`, and `gate_backward`, with the same
    /// arithmetic but without their intermediate tensors. Parallel over whole items.
    pub(crate) fn modulated_backward_add(
        &mut self,
        cache: &NormCache<A>,
        dy: &[A],
        (m, dm, ms): (&[A], &mut [A], usize),
        (shift_at, scale_at): (usize, usize),
        tokens: usize,
        acc: &mut [A],
        gate: Option<(&[A], usize)>,
    ) -> (Vec<A>, Vec<A>) {
        let d = self.dim;
        let item = (tokens * d).max(1);
        let len = acc.len();
        assert!(
            self.affine.is_none()
                && dy.len() == len
                && cache.xhat.len() == len
                && len.is_multiple_of(item)
                && m.len().min(dm.len()) >= len / item * ms
                && gate.is_none_or(|(f, _)| f.len() == len),
            "adaLN norm backward: {len} elements, items of {tokens} x {d}, modulation {} / {ms}",
            m.len()
        );
        let mut df = Vec::with_capacity(if gate.is_some() { len } else { 0 });
        // Each item's room in `df` and its rows of `f` when gated.
        let gated: Vec<_> = match gate {
            Some((f, _)) => df.spare_capacity_mut()[..len]
                .chunks_mut(item)
                .zip(f.chunks(item))
                .map(Some)
                .collect(),
            None => (0..len / item).map(|_| None).collect(),
        };
        let sums: Vec<Vec<A>> = acc
            .par_chunks_mut(item)
            .zip(dy.par_chunks(item))
            .zip(
                cache
                    .xhat
                    .par_chunks(item)
                    .zip(cache.rstd.par_chunks(tokens.max(1))),
            )
            .zip(m.par_chunks(ms.max(1)).zip(dm.par_chunks_mut(ms.max(1))))
            .zip(gated)
            .map(|((((ab, gb), (xb, rb)), (mb, dmb)), gated)| {
                let gain: Vec<A> = mb[scale_at..scale_at + d].iter().map(|&s| A::one() + s).collect();
                let (mut dshift, mut dscale, mut g) =
                    (vec![A::zero(); d], vec![A::zero(); d], vec![A::zero(); d]);
                let mut gated = gated.zip(gate.map(|(_, at)| (at, &mb[at..at + d])));
                let (mut dgate, mut sums) = (vec![A::zero(); d], vec![A::zero(); d]);
                crate::vmath::wide(
                    #[inline(always)]
                    || {
                        for (r, ((ar, dyr), xr)) in ab
                            .chunks_exact_mut(d)
                            .zip(gb.chunks_exact(d))
                            .zip(xb.chunks_exact(d))
                            .enumerate()
                        {
                            let cols = g.iter_mut().zip(dyr).zip(xr).zip(&gain);
                            for ((((g, &dy), &x), &gn), (ds, dc)) in
                                cols.zip(dshift.iter_mut().zip(&mut dscale))
                            {
                                *g = dy * gn;
                                *ds = *ds + dy;
                                *dc = *dc + dy * x;
                            }
                            normalize_backward_add_block(&g, xr, rb[r], ar);
                            if let Some(((dfb, fb), (_, gr))) = &mut gated {
                                let cols = dfb[r * d..(r + 1) * d].iter_mut().zip(&fb[r * d..(r + 1) * d]);
                                for ((((df, &f), &a), &gt), (dg, s)) in
                                    cols.zip(&*ar).zip(*gr).zip(dgate.iter_mut().zip(&mut sums))
                                {
                                    let v = a * gt;
                                    df.write(v);
                                    *s = *s + v;
                                    *dg = *dg + a * f;
                                }
                            }
                        }
                    },
                );
                for (i, (&ds, &dc)) in dshift.iter().zip(&dscale).enumerate() {
                    dmb[shift_at + i] = dmb[shift_at + i] + ds;
                    dmb[scale_at + i] = dmb[scale_at + i] + dc;
                }
                if let Some((_, (at, _))) = gated {
                    for (dm, &dg) in dmb[at..at + d].iter_mut().zip(&dgate) {
                        *dm = *dm + dg;
                    }
                }
                sums
            })
            .collect();
        if gate.is_none() {
            return (df, Vec::new());
        }
        // SAFETY: with a gate, every item wrote all of its rows of `df`.
        unsafe { df.set_len(len) };
        (df, crate::kernels::sum_in_order(&sums, d))
    }

    fn check(&self, shape: &[usize]) -> Result<()> {
        if shape.last() != Some(&self.dim) {
            return Err(NnError::Shape {
                context: format!("LayerNorm({}) input (last axis)", self.dim),
                expected: vec![self.dim],
                got: shape.to_vec(),
            });
        }
        Ok(())
    }

    pub fn forward(&self, x: &ArrayD<A>) -> Result<(ArrayD<A>, NormCache<A>)> {
        self.check(x.shape())?;
        let (y, mut c) = self.forward_slice(&std_slice(x));
        c.shape = x.shape().to_vec();
        Ok((array(x.shape(), y), c))
    }

    pub fn backward(&mut self, cache: &NormCache<A>, dy: &ArrayD<A>) -> Result<ArrayD<A>> {
        check_shape("LayerNorm backward dy", &cache.shape, dy.shape())?;
        Ok(array(&cache.shape, self.backward_slice(cache, &std_slice(dy))))
    }
}

impl<A> Parameters<A> for LayerNorm<A> {
    fn visit(&self, f: &mut dyn FnMut(&str, &Param<A>)) {
        if let Some(a) = &self.affine {
            f("weight", &a.weight);
            f("bias", &a.bias);
        }
    }
    fn visit_mut(&mut self, f: &mut dyn FnMut(&str, &mut Param<A>)) {
        if let Some(a) = &mut self.affine {
            f("weight", &mut a.weight);
            f("bias", &mut a.bias);
        }
    }
}

/// Group normalisation (PyTorch `nn.GroupNorm(groups, channels)`, affine, eps 1e-5 default).
#[derive(Clone, Debug)]
pub struct GroupNorm<A> {
    groups: usize,
    channels: usize,
    eps: f64,
    pub weight: Param<A>,
    pub bias: Param<A>,
}

impl<A: Float> GroupNorm<A> {
    pub fn new(groups: usize, channels: usize, eps: f64) -> Result<Self> {
        if groups == 0 || !channels.is_multiple_of(groups) {
            return Err(NnError::Config {
                name: "GroupNorm groups",
                reason: format!("{groups} groups do not divide {channels} channels"),
            });
        }
        Ok(Self {
            groups,
            channels,
            eps,
            weight: Param::new(ArrayD::ones(ndarray::IxDyn(&[channels]))),
            bias: Param::zeros(&[channels]),
        })
    }

    pub fn channels(&self) -> usize {
        self.channels
    }

    pub fn groups(&self) -> usize {
        self.groups
    }

    pub fn eps(&self) -> f64 {
        self.eps
    }

    /// `x: [batch, channels, spatial...]` as a slice; `spatial` = product of spatial dims.
    pub(crate) fn forward_slice(&self, x: &[A], spatial: usize) -> (Vec<A>, NormCache<A>) {
        let block = self.channels / self.groups * spatial;
        let (xhat, rstd) = normalize_blocks(x, block, self.eps);
        let (w, b) = (self.weight.v(), self.bias.v());
        let mut y = vec![A::zero(); x.len()];
        y.par_chunks_mut(spatial.max(1))
            .zip(xhat.par_chunks(spatial.max(1)))
            .enumerate()
            .for_each(|(i, (y, xh))| {
                let c = i % self.channels;
                for (y, &v) in y.iter_mut().zip(xh) {
                    *y = v * w[c] + b[c];
                }
            });
        (
            y,
            NormCache {
                xhat,
                rstd,
                shape: vec![x.len()],
            },
        )
    }

    /// The per-block statistics of `x` (`[batch, channels, spatial...]` as a slice), in
    /// parallel over blocks: all that `silu(group_norm(x))` keeps of its forward pass.
    pub(crate) fn stats(&self, x: &[A], spatial: usize) -> GroupStats {
        let block = (self.channels / self.groups * spatial).max(1);
        let mut stats = vec![(0.0, 0.0); x.len() / block];
        stats
            .par_iter_mut()
            .zip(x.par_chunks(block))
            .with_min_len(blocks_per_task(block))
            .for_each(|(st, xb)| {
                *st = crate::vmath::wide(
                    #[inline(always)]
                    || block_stats(xb, self.eps),
                )
            });
        GroupStats(stats)
    }

    /// `silu(group_norm(x))` as a map for a consumer that reads `x` by runs of one channel
    /// (`map(item, channel, values, out)`, see `winograd::RowMap`), so the activation is
    /// never stored: the convolutions that follow apply it as they read their input, in the
    /// forward pass and again for their weight gradient.
    pub(crate) fn silu_map<'a>(
        &'a self,
        stats: &'a GroupStats,
    ) -> impl Fn(usize, usize, &[A], &mut [A]) + Sync + 'a {
        let (w, b) = (self.weight.v(), self.bias.v());
        let (groups, per_group) = (self.groups, self.channels / self.groups);
        move |item: usize, c: usize, run: &[A], out: &mut [A]| {
            let (mean, rstd) = stats.0[item * groups + c / per_group];
            let out = &mut out[..run.len()];
            crate::vmath::wide(
                #[inline(always)]
                || normalize_affine(run, mean, rstd, (w[c], b[c]), out),
            );
            silu_in_place_seq(out);
        }
    }

    /// The backward of `silu(group_norm(x))`: dL/dx given `dy` = dL/d(silu output), from
    /// the input `x` and its [`GroupNorm::stats`]. Each block's normalised values and
    /// pre-activations are recomputed while in cache (with the forward's arithmetic), which
    /// costs less than storing and re-reading them.
    pub(crate) fn backward_silu(&mut self, x: &[A], stats: &GroupStats, dy: &[A], spatial: usize) -> Vec<A> {
        let s = spatial.max(1);
        let (ch, per_group) = (self.channels, self.channels / self.groups);
        let block = per_group * s;
        let batch = dy.len() / (ch * s).max(1);
        let (w, bias) = (self.weight.v().to_vec(), self.bias.v().to_vec());
        let mut g = vec![A::zero(); dy.len()];
        // Per (item, channel): (sum of dL/dpre * xhat, sum of dL/dpre), for the affine gradients.
        let mut partial = vec![(0.0, 0.0); batch * ch];
        let per_task = blocks_per_task(block);
        g.par_chunks_mut(block * per_task)
            .zip(
                x.par_chunks(block * per_task)
                    .zip(dy.par_chunks(block * per_task)),
            )
            .zip(stats.0.par_chunks(per_task))
            .zip(partial.par_chunks_mut(per_group * per_task))
            .enumerate()
            .for_each(|(task, (((gt, (xt, dt)), st), parts))| {
                crate::vmath::wide(
                    #[inline(always)]
                    || {
                        let (mut xh, mut pre) = (vec![A::zero(); block], vec![A::zero(); block]);
                        let blocks = gt.chunks_mut(block).zip(xt.chunks(block).zip(dt.chunks(block)));
                        for (j, ((gb, (xb, db)), (&(mean, rstd), pp))) in
                            blocks.zip(st.iter().zip(parts.chunks_mut(per_group))).enumerate()
                        {
                            let group = (task * per_task + j) % self.groups;
                            normalize_with(xb, mean, rstd, &mut xh);
                            for (cc, (p, h)) in pre.chunks_mut(s).zip(xh.chunks(s)).enumerate() {
                                let c = group * per_group + cc;
                                // The channel's scale and shift as values: indexed in the
                                // loop, they were reloaded (and the loop ran scalar).
                                let (wc, bc) = (w[c], bias[c]);
                                for (p, &h) in p.iter_mut().zip(h) {
                                    *p = h * wc + bc;
                                }
                            }
                            gb.copy_from_slice(db);
                            silu_backward_in_place_seq(&pre, gb);
                            for (cc, ((gp, xp), sums)) in
                                gb.chunks_mut(s).zip(xh.chunks(s)).zip(pp).enumerate()
                            {
                                *sums = (lane_sum(gp, xp, |d, x| d * x), lane_sum(gp, gp, |d, _| d));
                                let wc = w[group * per_group + cc];
                                for v in gp {
                                    *v = *v * wc;
                                }
                            }
                            normalize_backward_block(gb, &xh, A::of_f64(rstd));
                        }
                    },
                )
            });
        for c in 0..ch {
            let (mut gw, mut gb) = (0.0, 0.0);
            for b in 0..batch {
                gw += partial[b * ch + c].0;
                gb += partial[b * ch + c].1;
            }
            self.weight.g()[c] = self.weight.g()[c] + A::of_f64(gw);
            self.bias.g()[c] = self.bias.g()[c] + A::of_f64(gb);
        }
        g
    }

    pub(crate) fn backward_slice(&mut self, cache: &NormCache<A>, dy: &[A], spatial: usize) -> Vec<A> {
        let ch = self.channels;
        let s = spatial.max(1);
        let batch = dy.len() / (ch * s);
        // Per-channel sums over (batch, spatial), each channel in a fixed order.
        let sums: Vec<(A, A)> = (0..ch)
            .into_par_iter()
            .map(|c| {
                let (mut gw, mut gb) = (0.0, 0.0);
                for b in 0..batch {
                    let o = (b * ch + c) * s;
                    let (d, xh) = (&dy[o..o + s], &cache.xhat[o..o + s]);
                    gw += lane_sum(d, xh, |d, x| d * x);
                    gb += lane_sum(d, d, |d, _| d);
                }
                (A::of_f64(gw), A::of_f64(gb))
            })
            .collect();
        for (c, (gw, gb)) in sums.into_iter().enumerate() {
            self.weight.g()[c] = self.weight.g()[c] + gw;
            self.bias.g()[c] = self.bias.g()[c] + gb;
        }
        let w = self.weight.v();
        let mut g = vec![A::zero(); dy.len()];
        g.par_chunks_mut(s)
            .zip(dy.par_chunks(s))
            .enumerate()
            .for_each(|(i, (g, d))| {
                let wc = w[i % ch];
                for (g, &d) in g.iter_mut().zip(d) {
                    *g = d * wc;
                }
            });
        normalize_backward(&cache.xhat, &cache.rstd, &mut g, ch / self.groups * s);
        g
    }

    fn spatial(&self, shape: &[usize]) -> Result<usize> {
        if shape.len() < 2 || shape[1] != self.channels {
            return Err(NnError::Shape {
                context: format!(
                    "GroupNorm({}, {}) input [batch, channels, ...]",
                    self.groups, self.channels
                ),
                expected: vec![shape.first().copied().unwrap_or(0), self.channels],
                got: shape.to_vec(),
            });
        }
        Ok(shape[2..].iter().product())
    }

    pub fn forward(&self, x: &ArrayD<A>) -> Result<(ArrayD<A>, NormCache<A>)> {
        let s = self.spatial(x.shape())?;
        let (y, mut c) = self.forward_slice(&std_slice(x), s);
        c.shape = x.shape().to_vec();
        Ok((array(x.shape(), y), c))
    }

    pub fn backward(&mut self, cache: &NormCache<A>, dy: &ArrayD<A>) -> Result<ArrayD<A>> {
        check_shape("GroupNorm backward dy", &cache.shape, dy.shape())?;
        let s = self.spatial(&cache.shape)?;
        Ok(array(&cache.shape, self.backward_slice(cache, &std_slice(dy), s)))
    }
}

impl<A> Parameters<A> for GroupNorm<A> {
    fn visit(&self, f: &mut dyn FnMut(&str, &Param<A>)) {
        f("weight", &self.weight);
        f("bias", &self.bias);
    }
    fn visit_mut(&mut self, f: &mut dyn FnMut(&str, &mut Param<A>)) {
        f("weight", &mut self.weight);
        f("bias", &mut self.bias);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// f32 rows whose mean dwarfs their spread normalise to within f32 rounding of the f64
    /// result: the mean is subtracted in f64, never after rounding it to f32.
    #[test]
    fn f32_rows_with_a_large_mean_stay_at_f32_rounding() {
        let (rows, dim) = (8, 192);
        let mut z = vec![0.0; rows * dim];
        diffusion_core::Rng::new(1).fill_normal(&mut z);
        let x: Vec<f32> = z.iter().map(|v| (1000.0 + v) as f32).collect();
        let norm = LayerNorm::<f32>::new(dim, 1e-6, false);
        let got = norm.normalize(&x);
        for (row, out) in x.chunks(dim).zip(got.xhat.chunks(dim)) {
            let mean = row.iter().map(|&v| f64::from(v)).sum::<f64>() / dim as f64;
            let var = row.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / dim as f64;
            for (&v, &o) in row.iter().zip(out) {
                let want = (f64::from(v) - mean) / (var + 1e-6).sqrt();
                assert!(
                    (f64::from(o) - want).abs() <= 2e-7 * want.abs().max(1.0),
                    "{o} vs {want}"
                );
            }
        }
    }

    /// The fused adaLN residual backward is the arithmetic of its three steps run one
    /// after another (modulation backward, the norm's input gradient added into the residual
    /// stream, gated-residual backward), for items split over several parallel tasks, with
    /// and without the gate.
    #[test]
    fn modulated_backward_add_is_its_steps_in_sequence() {
        use crate::layers::embed::{gate_backward, modulate_backward};
        let (items, tokens, dim) = (5, 7, 24);
        let (len, ms) = (items * tokens * dim, 6 * dim);
        let mut z = vec![0.0; 4 * len + items * ms];
        diffusion_core::Rng::new(2).fill_normal(&mut z);
        let z: Vec<f32> = z.iter().map(|&v| v as f32).collect();
        let (x, rest) = z.split_at(len);
        let (dy, rest) = rest.split_at(len);
        let (acc, rest) = rest.split_at(len);
        let (f, m) = rest.split_at(len);
        let mut norm = LayerNorm::<f32>::new(dim, 1e-6, false);
        let cache = norm.normalize(x);
        for gated in [false, true] {
            let mut want_dm: Vec<f32> = (0..items * ms).map(|i| i as f32 * 1e-3).collect();
            let dn = modulate_backward(
                cache.xhat(),
                dy,
                m,
                &mut want_dm,
                ms,
                3 * dim,
                4 * dim,
                tokens,
                dim,
            );
            let mut want = acc.to_vec();
            crate::kernels::add_into(&mut want, &norm.backward_slice(&cache, &dn));
            let want_df = gated.then(|| gate_backward(&want, f, m, &mut want_dm, ms, 2 * dim, tokens, dim));

            let mut dm: Vec<f32> = (0..items * ms).map(|i| i as f32 * 1e-3).collect();
            let mut got = acc.to_vec();
            let gate = gated.then_some((f, 2 * dim));
            let df = norm.modulated_backward_add(
                &cache,
                dy,
                (m, &mut dm, ms),
                (3 * dim, 4 * dim),
                tokens,
                &mut got,
                gate,
            );
            assert_eq!(got, want);
            assert_eq!(dm, want_dm);
            assert_eq!(df, want_df.unwrap_or_default());
        }
    }
}
