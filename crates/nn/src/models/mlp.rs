//! `mlp`: `concat(x, temb) -> depth x [Linear, SiLU] -> Linear(dim)` (reference `MlpDenoiser`).

use diffusion_core::Rng;
use ndarray::ArrayD;
use rayon::prelude::*;

use crate::error::{NnError, Result};
use crate::layers::activation::{silu_backward_in_place, silu_in_place, silu_slice};
use std::borrow::Cow;

use crate::gemm::{MatMut, MatRef, matmul};
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
/// Batch rows per parallel task of the first layer.
const ROWS_PER_TASK: usize = 64;

/// Inputs of each Linear (the first one's as `x` plus the embedding's distinct rows) and
/// pre-activations of each SiLU.
#[derive(Clone, Debug)]
pub struct MlpCache<A> {
    batch: usize,
    inputs: Vec<Vec<A>>,
    temb: TimestepRows<A>,
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

    /// The first layer on `concat(x, temb)`, with the embedding part projected for the
    /// distinct timesteps only: `z = b + x Wx^T + (table Wt^T)[index]`.
    fn first_layer(&self, x: &[A], temb: &TimestepRows<A>, batch: usize) -> Vec<A> {
        let layer = &self.layers[0];
        let (d, e, h) = (self.cfg.dim, temb.width(), layer.out_features());
        let w = layer.weight.v();
        let mut proj = vec![A::zero(); temb.distinct() * h];
        matmul(
            MatMut::row_major(&mut proj, 0, temb.distinct(), h),
            MatRef::row_major(&temb.table, 0, temb.distinct(), e),
            MatRef::strided(w, d, h, e, d + e).t(),
            false,
        );
        let zeros = vec![A::zero(); h];
        let bias = layer.bias.as_ref().map_or(&zeros[..], |b| b.v());
        // x's part is a K = dim product: for the low-dimensional data this MLP is for, a
        // broadcast multiply-add in the same parallel pass beats a GEMM call.
        let direct = d <= DIRECT_INPUT_DIM;
        let wx_t: Vec<A> = if direct {
            (0..d)
                .flat_map(|k| (0..h).map(move |j| w[j * (d + e) + k]))
                .collect()
        } else {
            Vec::new()
        };
        let mut z = vec![A::zero(); batch * h];
        z.par_chunks_mut(ROWS_PER_TASK * h)
            .enumerate()
            .for_each(|(ci, zc)| {
                for (ri, zr) in zc.chunks_mut(h).enumerate() {
                    let b = ci * ROWS_PER_TASK + ri;
                    let r = temb.index[b];
                    let p = proj.get(r * h..(r + 1) * h).unwrap_or(&zeros);
                    for ((z, &p), &bv) in zr.iter_mut().zip(p).zip(bias) {
                        *z = bv + p;
                    }
                    if direct {
                        for (k, wk) in wx_t.chunks(h).enumerate() {
                            let xv = x[b * d + k];
                            for (z, &wv) in zr.iter_mut().zip(wk) {
                                *z = *z + xv * wv;
                            }
                        }
                    }
                }
            });
        if !direct {
            matmul(
                MatMut::row_major(&mut z, 0, batch, h),
                MatRef::row_major(x, 0, batch, d),
                MatRef::strided(w, 0, h, d, d + e).t(),
                true,
            );
        }
        z
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
        let mut inputs = Vec::with_capacity(self.layers.len());
        let mut pre = Vec::with_capacity(self.cfg.depth);
        let last = self.layers.len() - 1;
        let mut h = Vec::new();
        for (i, layer) in self.layers.iter().enumerate() {
            let z = if i == 0 {
                inputs.push(xs.to_vec());
                self.first_layer(&xs, &temb, batch)
            } else {
                let z = layer.forward_slice(&h, batch);
                inputs.push(std::mem::take(&mut h));
                z
            };
            if i < last {
                h = silu_slice(&z);
                pre.push(z);
            } else {
                h = z;
            }
        }
        let cache = MlpCache {
            batch,
            inputs,
            temb,
            pre,
        };
        Ok((array(&[batch, self.cfg.dim], h), cache))
    }

    fn backward(&mut self, cache: &MlpCache<A>, dy: &ArrayD<A>) -> Result<ArrayD<A>> {
        crate::error::check_shape(
            "MlpDenoiser backward dy",
            &[cache.batch, self.cfg.dim],
            dy.shape(),
        )?;
        let mut g = std_slice(dy).into_owned();
        let last = self.layers.len() - 1;
        for i in (1..=last).rev() {
            if i < last {
                silu_backward_in_place(&cache.pre[i], &mut g);
            }
            g = self.layers[i].backward_slice(&cache.inputs[i], &g, cache.batch, true);
        }
        if last > 0 {
            silu_backward_in_place(&cache.pre[0], &mut g);
        }
        let dx = self.first_layer_backward(&cache.inputs[0], &cache.temb, &g, cache.batch);
        Ok(array(&[cache.batch, self.cfg.dim], dx))
    }

    fn input_shape(&self) -> Vec<usize> {
        vec![self.cfg.dim]
    }

    fn infer(&self, x: &ArrayD<A>, t: &[A], _cond: Option<&[usize]>) -> Result<ArrayD<A>> {
        let (batch, xs, temb) = self.input(x, t)?;
        let last = self.layers.len() - 1;
        let mut h = self.first_layer(&xs, &temb, batch);
        for (i, layer) in self.layers.iter().enumerate() {
            if i > 0 {
                h = layer.forward_slice(&h, batch);
            }
            if i < last {
                silu_in_place(&mut h);
            }
        }
        Ok(array(&[batch, self.cfg.dim], h))
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
