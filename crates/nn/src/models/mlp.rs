//! `mlp`: `concat(x, temb) -> depth x [Linear, SiLU] -> Linear(dim)` (reference `MlpDenoiser`).

use diffusion_core::Rng;
use ndarray::ArrayD;
use rayon::prelude::*;

use crate::error::{NnError, Result};
use crate::layers::activation::{bias_silu_in_place_seq, bias_silu_seq, silu_backward_in_place_seq};
use std::borrow::Cow;

use crate::gemm::{MatMut, MatRef, matmul, matmul_serial};
use crate::layers::embed::TimestepRows;
use crate::layers::{Linear, add_column_sums, add_into, array, std_slice};
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
/// pre-activation of every SiLU. The first layer's input is `x` plus the embedding rows.
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
    pre: Vec<Vec<A>>,
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

    /// The first layer on `concat(x, temb)` for rows `x` whose timesteps are rows `index`
    /// of `proj`: `z = b + x Wx^T + proj[index]`, on the calling thread.
    fn first_layer_rows(&self, x: &[A], index: &[usize], proj: &[A]) -> Vec<A> {
        let layer = &self.layers[0];
        let (d, h) = (self.cfg.dim, layer.out_features());
        let inp = layer.in_features();
        let w = layer.weight.v();
        let zeros = vec![A::zero(); h];
        let bias = layer.bias.as_ref().map_or(&zeros[..], |b| b.v());
        let mut z = Vec::with_capacity(index.len() * h);
        for &r in index {
            let p = proj.get(r * h..(r + 1) * h).unwrap_or(&zeros);
            z.extend(p.iter().zip(bias).map(|(&p, &b)| b + p));
        }
        if d <= DIRECT_INPUT_DIM {
            // x's part is a K = dim product: a broadcast multiply-add per input column.
            let wx_t: Vec<A> = (0..d).flat_map(|k| (0..h).map(move |j| w[j * inp + k])).collect();
            for (zr, xr) in z.chunks_mut(h).zip(x.chunks(d)) {
                for (wk, &xv) in wx_t.chunks(h).zip(xr) {
                    for (z, &wv) in zr.iter_mut().zip(wk) {
                        *z = *z + xv * wv;
                    }
                }
            }
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
        let blocks: Vec<(Vec<A>, Option<BlockCache<A>>)> = (0..batch.div_ceil(ROW_BLOCK))
            .into_par_iter()
            .map(|bi| {
                let (r0, rows) = (bi * ROW_BLOCK, ROW_BLOCK.min(batch - bi * ROW_BLOCK));
                let mut z =
                    self.first_layer_rows(&x[r0 * d..(r0 + rows) * d], &temb.index[r0..r0 + rows], &proj);
                let (mut inputs, mut pre) = (Vec::new(), Vec::new());
                // Each product is computed without its bias, which the activation pass
                // that reads it adds (the last layer's is added at the end).
                let mut bias = None;
                for layer in &self.layers[1..=last] {
                    let h = if keep {
                        let h = bias_silu_seq(&mut z, bias);
                        pre.push(std::mem::take(&mut z));
                        h
                    } else {
                        bias_silu_in_place_seq(&mut z, bias);
                        std::mem::take(&mut z)
                    };
                    z = layer.forward_unbiased(&h, rows, true);
                    bias = layer.bias_values();
                    if keep {
                        inputs.push(h);
                    }
                }
                if let Some(b) = bias {
                    for row in z.chunks_mut(b.len()) {
                        add_into(row, b);
                    }
                }
                (z, keep.then_some(BlockCache { rows, inputs, pre }))
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

    /// Backward of [`Self::first_layer`] from `g = dL/dz`: accumulates the weight and bias
    /// gradients (the embedding part from `g` summed per distinct timestep, in batch
    /// order) and returns dL/dx.
    fn first_layer_backward(&mut self, x: &[A], temb: &TimestepRows<A>, g: &[A], batch: usize) -> Vec<A> {
        let layer = &mut self.layers[0];
        let (d, e, h) = (self.cfg.dim, temb.width(), layer.out_features());
        let mut per_t = vec![A::zero(); temb.distinct() * h];
        for (gr, &r) in g.chunks(h).zip(&temb.index) {
            if let Some(acc) = per_t.get_mut(r * h..(r + 1) * h) {
                add_into(acc, gr);
            }
        }
        let wg = layer.weight.g();
        matmul(
            MatMut::strided(wg, 0, h, d, d + e),
            MatRef::row_major(g, 0, batch, h).t(),
            MatRef::row_major(x, 0, batch, d),
            true,
        );
        matmul(
            MatMut::strided(wg, d, h, e, d + e),
            MatRef::row_major(&per_t, 0, temb.distinct(), h).t(),
            MatRef::row_major(&temb.table, 0, temb.distinct(), e),
            true,
        );
        if let Some(b) = &mut layer.bias {
            add_column_sums(b.g(), g);
        }
        let mut dx = vec![A::zero(); batch * d];
        matmul(
            MatMut::row_major(&mut dx, 0, batch, d),
            MatRef::row_major(g, 0, batch, h),
            MatRef::strided(layer.weight.v(), 0, h, d, d + e),
            false,
        );
        dx
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
        // Per block, on one thread: the gradient at the first layer's output, and the
        // block's share of every later layer's weight and bias gradients (`[W | b]`).
        let layers = &self.layers;
        let per_block: Vec<(Vec<A>, Vec<Vec<A>>)> = cache
            .blocks
            .par_iter()
            .enumerate()
            .map(|(bi, blk)| {
                let r0 = bi * ROW_BLOCK;
                let mut g = dy[r0 * d..(r0 + blk.rows) * d].to_vec();
                let mut shares = Vec::with_capacity(last);
                for i in (1..=last).rev() {
                    shares.push(layers[i].param_grads_serial(&blk.inputs[i - 1], &g, blk.rows));
                    let mut below = layers[i].input_grad(&g, blk.rows, true);
                    silu_backward_in_place_seq(&blk.pre[i - 1], &mut below);
                    g = below;
                }
                shares.reverse();
                (g, shares)
            })
            .collect();
        // Summed block by block, in order (results independent of the thread count).
        for (_, shares) in &per_block {
            for (layer, share) in self.layers[1..].iter_mut().zip(shares) {
                layer.add_param_grads(share);
            }
        }
        let g0: Vec<A> = per_block.iter().flat_map(|(g, _)| g.iter().copied()).collect();
        let dx = self.first_layer_backward(&cache.x, &cache.temb, &g0, cache.batch);
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
