//! `mlp`: `concat(x, temb) -> depth x [Linear, SiLU] -> Linear(dim)` (reference `MlpDenoiser`).

use diffusion_core::Rng;
use ndarray::ArrayD;

use rayon::prelude::*;

use crate::error::{NnError, Result};
use crate::layers::activation::{
    bias_silu_in_place_seq, bias_silu_keep_sigmoid_seq, silu_backward_from_sigmoid_seq,
};
use std::borrow::Cow;
use std::mem::MaybeUninit;

use crate::gemm::{MatMut, MatRef, matmul, matmul_serial};
use crate::kernels::{add_into, add_row_bias, array, column_sums_seq, lane_dot, std_slice, sum_in_order};
use crate::layers::Linear;
use crate::layers::embed::TimestepRows;
use crate::network::{Network, check_input};
use crate::param::{Float, Param, Parameters, join_name};

/// Sizes of an [`MlpDenoiser`]; `Default` is the reference `mlp` (231,426 parameters).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MlpConfig {
    pub dim: usize,
    pub hidden: usize,
    pub depth: usize,
    pub temb: usize,
}

impl Default for MlpConfig {
    fn default() -> Self {
        Self {
            dim: 2,
            hidden: 256,
            depth: 4,
            temb: 128,
        }
    }
}

/// A small MLP denoiser for low-dimensional data.
#[derive(Clone, Debug)]
pub struct MlpDenoiser<A> {
    cfg: MlpConfig,
    /// `net.0, net.2, ...` in PyTorch naming (odd indices are the SiLUs).
    pub layers: Vec<Linear<A>>,
}

/// Up to this input dimension the first layer adds `x Wx^T` by broadcast multiply-adds.
const DIRECT_INPUT_DIM: usize = 32;
/// Batch rows per block: a block runs through every layer on one thread, its activations
/// (`ROW_BLOCK x hidden`) staying in that core's cache, with no synchronisation between
/// layers. Fixed, so results do not depend on the thread count.
const ROW_BLOCK: usize = 512;

/// Per row block: the input of every Linear after the first (SiLU outputs) and the
/// sigmoid of every SiLU's input, from which with its output SiLU's gradient follows
/// without an `exp`. The first layer's input is `x` plus the embedding rows.
#[derive(Clone, Debug)]
pub struct MlpCache<A> {
    batch: usize,
    x: Vec<A>,
    temb: TimestepRows<A>,
    blocks: Vec<BlockCache<A>>,
}

#[derive(Clone, Debug)]
struct BlockCache<A> {
    rows: usize,
    inputs: Vec<Vec<A>>,
    sigmoid: Vec<Vec<A>>,
}

impl<A: Float> MlpDenoiser<A> {
    pub fn new(cfg: MlpConfig, rng: &mut Rng) -> Result<Self> {
        if cfg.dim == 0 || cfg.hidden == 0 || !cfg.temb.is_multiple_of(2) {
            return Err(NnError::Config {
                name: "MlpConfig",
                reason: format!("{cfg:?}: dim and hidden must be positive and temb even"),
            });
        }
        let mut layers = Vec::new();
        let mut width = cfg.dim + cfg.temb;
        for _ in 0..cfg.depth {
            layers.push(Linear::new(width, cfg.hidden, true, rng));
            width = cfg.hidden;
        }
        layers.push(Linear::new(width, cfg.dim, true, rng));
        Ok(Self { cfg, layers })
    }

    pub fn config(&self) -> MlpConfig {
        self.cfg
    }

    /// The checked batch size, `x` as a slice and the embedding's distinct rows.
    fn input<'x>(&self, x: &'x ArrayD<A>, t: &[A]) -> Result<(usize, Cow<'x, [A]>, TimestepRows<A>)> {
        let batch = check_input(x, &[self.cfg.dim], t, "MlpDenoiser input")?;
        Ok((batch, std_slice(x), TimestepRows::new(t, self.cfg.temb, 10000.0)))
    }

    /// The embedding part of the first layer, `table Wt^T`, for the distinct timesteps.
    fn project_embeddings(&self, temb: &TimestepRows<A>) -> Vec<A> {
        let layer = &self.layers[0];
        let (d, e, h) = (self.cfg.dim, temb.width(), layer.out_features());
        let mut proj = vec![A::zero(); temb.distinct() * h];
        matmul(
            MatMut::row_major(&mut proj, 0, temb.distinct(), h),
            MatRef::row_major(&temb.table, 0, temb.distinct(), e),
            MatRef::strided(layer.weight.v(), d, h, e, d + e).t(),
            false,
        );
        proj
    }

    /// `Wx^T` (`[dim, hidden]`), the first layer's weights on `x`, when `dim` is small enough
    /// for the direct loops; `None` otherwise.
    fn small_input_weight_t(&self) -> Option<Vec<A>> {
        let layer = &self.layers[0];
        let (d, h, inp) = (self.cfg.dim, layer.out_features(), layer.in_features());
        let w = layer.weight.v();
        (d <= DIRECT_INPUT_DIM).then(|| (0..d).flat_map(|k| (0..h).map(move |j| w[j * inp + k])).collect())
    }

    /// The first layer on `concat(x, temb)` for rows `x` whose timesteps are rows `index`
    /// of `proj`: `z = b + x Wx^T + proj[index]`, on the calling thread.
    fn first_layer_rows(&self, x: &[A], index: &[usize], proj: &[A], wx_t: Option<&[A]>) -> Vec<A> {
        let layer = &self.layers[0];
        let (d, h) = (self.cfg.dim, layer.out_features());
        let inp = layer.in_features();
        let w = layer.weight.v();
        let zeros = vec![A::zero(); h];
        let bias = layer.bias.as_ref().map_or(&zeros[..], |b| b.v());
        let mut z = Vec::with_capacity(index.len() * h);
        let out = &mut z.spare_capacity_mut()[..index.len() * h];
        crate::vmath::wide(
            #[inline(always)]
            || bias_plus_rows(out, index, proj, bias),
        );
        // SAFETY: `bias_plus_rows` wrote a row of `h` for every index.
        unsafe { z.set_len(index.len() * h) };
        if let Some(wx_t) = wx_t {
            crate::vmath::wide(
                #[inline(always)]
                || add_small_product(&mut z, x, wx_t, d),
            );
        } else {
            matmul_serial(
                MatMut::row_major(&mut z, 0, index.len(), h),
                MatRef::row_major(x, 0, index.len(), d),
                MatRef::strided(w, 0, h, d, inp).t(),
                true,
            );
        }
        z
    }

    /// The forward pass by row blocks; `keep` keeps the blocks' caches.
    fn run(&self, x: &[A], temb: &TimestepRows<A>, batch: usize, keep: bool) -> (Vec<A>, Vec<BlockCache<A>>) {
        let d = self.cfg.dim;
        let last = self.layers.len() - 1;
        let proj = self.project_embeddings(temb);
        let wx_t = self.small_input_weight_t();
        // Each layer's weights transposed once for all row blocks (see `crate::transpose`).
        let wts: Vec<Vec<A>> = self.layers[1..].iter().map(Linear::weight_t).collect();
        let blocks: Vec<(Vec<A>, Option<BlockCache<A>>)> = (0..batch.div_ceil(ROW_BLOCK))
            .into_par_iter()
            .map(|bi| {
                let (r0, rows) = (bi * ROW_BLOCK, ROW_BLOCK.min(batch - bi * ROW_BLOCK));
                let mut z = self.first_layer_rows(
                    &x[r0 * d..(r0 + rows) * d],
                    &temb.index[r0..r0 + rows],
                    &proj,
                    wx_t.as_deref(),
                );
                let (mut inputs, mut sigmoid) = (Vec::new(), Vec::new());
                // Each product is computed without its bias, which the activation pass
                // that reads it adds (the last layer's is added at the end).
                let mut bias = None;
                for (layer, wt) in self.layers[1..=last].iter().zip(&wts) {
                    let h = if keep {
                        let h = bias_silu_keep_sigmoid_seq(&mut z, bias);
                        sigmoid.push(std::mem::take(&mut z));
                        h
                    } else {
                        bias_silu_in_place_seq(&mut z, bias);
                        std::mem::take(&mut z)
                    };
                    z = layer.forward_unbiased(&h, rows, true, Some(wt));
                    bias = layer.bias_values();
                    if keep {
                        inputs.push(h);
                    }
                }
                add_row_bias(&mut z, bias);
                (
                    z,
                    keep.then_some(BlockCache {
                        rows,
                        inputs,
                        sigmoid,
                    }),
                )
            })
            .collect();
        let mut out = Vec::with_capacity(batch * d);
        let mut caches = Vec::new();
        for (z, c) in blocks {
            out.extend_from_slice(&z);
            caches.extend(c);
        }
        (out, caches)
    }

    /// The first layer's row-local backward for one block, from `g = dL/dz` (`rows x
    /// hidden`) and the block's `x`, on the calling thread: its share of the gradients
    /// `[dWx (hidden x dim) | db]` (the embedding part is summed per timestep afterwards)
    /// and the block's rows of dL/dx.
    fn first_layer_block_backward(
        &self,
        x: &[A],
        g: &[A],
        rows: usize,
        wx_t: Option<&[A]>,
    ) -> (Vec<A>, Vec<A>) {
        let layer = &self.layers[0];
        let (d, h, inp) = (self.cfg.dim, layer.out_features(), layer.in_features());
        let w = layer.weight.v();
        let mut share = vec![A::zero(); h * d + h];
        let (dwx, db) = share.split_at_mut(h * d);
        let mut dx = vec![A::zero(); rows * d];
        if let Some(wx_t) = wx_t {
            // The bias gradient, K = hidden dot products for dx, and `dim` rank-one updates
            // of `dWx^T`, streaming the block's gradient rows once while they are in cache.
            let mut dwx_t = vec![A::zero(); d * h];
            crate::vmath::wide(
                #[inline(always)]
                || {
                    for ((gr, xr), dxr) in g.chunks(h).zip(x.chunks(d)).zip(dx.chunks_mut(d)) {
                        for (b, &gv) in db.iter_mut().zip(gr) {
                            *b = *b + gv;
                        }
                        let columns = wx_t.chunks(h).zip(dwx_t.chunks_mut(h));
                        for ((dxv, &xv), (wk, acc)) in dxr.iter_mut().zip(xr).zip(columns) {
                            *dxv = lane_dot(gr, wk, |a, b| a * b);
                            for (a, &gv) in acc.iter_mut().zip(gr) {
                                *a = *a + xv * gv;
                            }
                        }
                    }
                },
            );
            for (j, row) in dwx.chunks_mut(d).enumerate() {
                for (k, v) in row.iter_mut().enumerate() {
                    *v = dwx_t[k * h + j];
                }
            }
        } else {
            db.copy_from_slice(&column_sums_seq(g, h));
            matmul_serial(
                MatMut::row_major(dwx, 0, h, d),
                MatRef::row_major(g, 0, rows, h).t(),
                MatRef::row_major(x, 0, rows, d),
                false,
            );
            matmul_serial(
                MatMut::row_major(&mut dx, 0, rows, d),
                MatRef::row_major(g, 0, rows, h),
                MatRef::strided(w, 0, h, d, inp),
                false,
            );
        }
        (share, dx)
    }

    /// The embedding part of the first layer's weight gradient: `g` (row `r` of the batch
    /// is `row(r)`) summed per distinct timestep, in batch order, then `per_t^T table`.
    fn embedding_weight_grad<'g>(&mut self, temb: &TimestepRows<A>, row: impl Fn(usize) -> &'g [A] + Sync)
    where
        A: 'g,
    {
        let layer = &mut self.layers[0];
        let (d, e, h) = (self.cfg.dim, temb.width(), layer.out_features());
        // Batch rows grouped by timestep (a counting sort keeps batch order in each group),
        // so the distinct timesteps' sums run in parallel, each in batch order.
        let mut start = vec![0usize; temb.distinct() + 1];
        for &t in &temb.index {
            start[t + 1] += 1;
        }
        for i in 0..temb.distinct() {
            start[i + 1] += start[i];
        }
        let mut next = start.clone();
        let mut rows_by_t = vec![0usize; temb.index.len()];
        for (r, &t) in temb.index.iter().enumerate() {
            rows_by_t[next[t]] = r;
            next[t] += 1;
        }
        let mut per_t = vec![A::zero(); temb.distinct() * h];
        per_t
            .par_chunks_mut(h.max(1))
            .enumerate()
            .with_min_len(16)
            .for_each(|(t, acc)| {
                for &r in &rows_by_t[start[t]..start[t + 1]] {
                    add_into(acc, row(r));
                }
            });
        matmul(
            MatMut::strided(layer.weight.g(), d, h, e, d + e),
            MatRef::row_major(&per_t, 0, temb.distinct(), h).t(),
            MatRef::row_major(&temb.table, 0, temb.distinct(), e),
            true,
        );
    }
}

/// `out` row `i` = `bias + proj[index[i]]` (rows of `bias.len()`; an index past `proj` adds
/// nothing). A function of its own so that its loop, inlined into the vector dispatch,
/// sees its slices as arguments (see `vmath::wide`).
#[inline(always)]
fn bias_plus_rows<A: Float>(out: &mut [MaybeUninit<A>], index: &[usize], proj: &[A], bias: &[A]) {
    let h = bias.len();
    for (zr, &r) in out.chunks_mut(h.max(1)).zip(index) {
        match proj.get(r * h..(r + 1) * h) {
            Some(p) => {
                for ((z, &p), &b) in zr.iter_mut().zip(p).zip(bias) {
                    z.write(b + p);
                }
            }
            None => {
                for (z, &b) in zr.iter_mut().zip(bias) {
                    z.write(b);
                }
            }
        }
    }
}

/// `z += x Wx^T` for rows `x` of a short input (`wx_t` = `Wx^T`, `[d, h]`): a broadcast
/// multiply-add per input column.
#[inline(always)]
fn add_small_product<A: Float>(z: &mut [A], x: &[A], wx_t: &[A], d: usize) {
    let h = (wx_t.len() / d.max(1)).max(1);
    for (zr, xr) in z.chunks_mut(h).zip(x.chunks(d.max(1))) {
        for (wk, &xv) in wx_t.chunks(h).zip(xr) {
            for (z, &wv) in zr.iter_mut().zip(wk) {
                *z = *z + xv * wv;
            }
        }
    }
}

impl<A: Float> Network<A> for MlpDenoiser<A> {
    type Cache = MlpCache<A>;

    fn forward(&self, x: &ArrayD<A>, t: &[A], _cond: Option<&[usize]>) -> Result<(ArrayD<A>, MlpCache<A>)> {
        let (batch, xs, temb) = self.input(x, t)?;
        let (out, blocks) = self.run(&xs, &temb, batch, true);
        let cache = MlpCache {
            batch,
            x: xs.into_owned(),
            temb,
            blocks,
        };
        Ok((array(&[batch, self.cfg.dim], out), cache))
    }

    fn backward(&mut self, cache: &MlpCache<A>, dy: &ArrayD<A>) -> Result<ArrayD<A>> {
        crate::error::check_shape(
            "MlpDenoiser backward dy",
            &[cache.batch, self.cfg.dim],
            dy.shape(),
        )?;
        let dy = std_slice(dy);
        let (d, last) = (self.cfg.dim, self.layers.len() - 1);
        let wx_t = self.small_input_weight_t();
        // Per block, on one thread: the gradient at the first layer's output, the block's
        // share of every layer's parameter gradients (one vector, layer 0's first, then
        // `[W | b]` of each later layer) and its rows of dL/dx.
        let this = &*self;
        let per_block: Vec<(Vec<A>, Vec<A>, Vec<A>)> = cache
            .blocks
            .par_iter()
            .enumerate()
            .map(|(bi, blk)| {
                let r0 = bi * ROW_BLOCK;
                let mut g = dy[r0 * d..(r0 + blk.rows) * d].to_vec();
                let mut later = Vec::with_capacity(last);
                for i in (1..=last).rev() {
                    let layer = &this.layers[i];
                    later.push(layer.param_grads_serial(&blk.inputs[i - 1], &g, blk.rows));
                    let mut below = layer.input_grad(&g, blk.rows, true);
                    silu_backward_from_sigmoid_seq(&blk.sigmoid[i - 1], &blk.inputs[i - 1], &mut below);
                    g = below;
                }
                let x = &cache.x[r0 * d..(r0 + blk.rows) * d];
                let (mut shares, dx) = this.first_layer_block_backward(x, &g, blk.rows, wx_t.as_deref());
                for share in later.iter().rev() {
                    shares.extend_from_slice(share);
                }
                (g, shares, dx)
            })
            .collect();
        // Block shares summed in block order (results independent of the thread count).
        let shares: Vec<&[A]> = per_block.iter().map(|(_, s, _)| &s[..]).collect();
        let total = sum_in_order(&shares, shares.first().map_or(0, |s| s.len()));
        let h = self.layers[0].out_features();
        let (first, mut rest) = total.split_at(h * d + h);
        {
            let layer = &mut self.layers[0];
            let inp = layer.in_features();
            for (wrow, srow) in layer.weight.g().chunks_mut(inp).zip(first.chunks(d)) {
                add_into(&mut wrow[..d], srow);
            }
            if let Some(b) = &mut layer.bias {
                add_into(b.g(), &first[h * d..]);
            }
        }
        for layer in &mut self.layers[1..] {
            let len = layer.weight.value.len() + layer.bias.as_ref().map_or(0, |b| b.value.len());
            let (share, tail) = rest.split_at(len);
            layer.add_param_grads(share);
            rest = tail;
        }
        let g_row = |r: usize| {
            let g = &per_block[r / ROW_BLOCK].0;
            let i = r % ROW_BLOCK;
            &g[i * h..(i + 1) * h]
        };
        self.embedding_weight_grad(&cache.temb, g_row);
        let dx: Vec<A> = per_block
            .iter()
            .flat_map(|(_, _, dx)| dx.iter().copied())
            .collect();
        Ok(array(&[cache.batch, d], dx))
    }

    fn input_shape(&self) -> Vec<usize> {
        vec![self.cfg.dim]
    }

    fn infer(&self, x: &ArrayD<A>, t: &[A], _cond: Option<&[usize]>) -> Result<ArrayD<A>> {
        let (batch, xs, temb) = self.input(x, t)?;
        let (out, _) = self.run(&xs, &temb, batch, false);
        Ok(array(&[batch, self.cfg.dim], out))
    }
}

impl<A> Parameters<A> for MlpDenoiser<A> {
    fn visit(&self, f: &mut dyn FnMut(&str, &Param<A>)) {
        for (i, l) in self.layers.iter().enumerate() {
            l.visit(&mut |n, p| f(&join_name(&format!("net.{}", 2 * i), n), p));
        }
    }
    fn visit_mut(&mut self, f: &mut dyn FnMut(&str, &mut Param<A>)) {
        for (i, l) in self.layers.iter_mut().enumerate() {
            l.visit_mut(&mut |n, p| f(&join_name(&format!("net.{}", 2 * i), n), p));
        }
    }
}
