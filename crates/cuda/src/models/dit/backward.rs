//! The backward pass of [`GpuDit`]: `Network::backward` of `diffusion-nn`'s DiT (its
//! `head_backward`, block loop and `stem_backward`) step for step on the device.
//!
//! The GPU model splits some CPU layers by rows (attention's q/k/v projections, the six adaLN
//! outputs of a block, the two of the final layer); each part's gradient is recorded under
//! the CPU parameter's name and the parts are joined in row order at the end, so the
//! gradients come out named, shaped and ordered as `Dit`'s `Parameters::visit`.

use diffusion_core::Tensor;

use crate::error::{CudaError, Result};
use crate::grad::{attention_bwd, gate_add_bwd};
use crate::layout::{merge_heads, patch_rows_bwd, patchify, split_heads};
use crate::ops::{NormStats, adaln_modulate_bwd, gelu_tanh_bwd, layer_norm_bwd, silu_bwd};

use super::super::grads::Parts;
use super::super::{GpuLinear, T32};
use super::{GpuDit, GpuDitBlock};

/// What one block's forward pass keeps (the CPU model's `BlockCache`, plus the tensors the
/// fused CPU code recomputes).
#[derive(Debug)]
pub(super) struct BlockCache {
    /// The six adaLN vectors `[batch, d]`: shift, scale, gate of attention, then of the MLP.
    pub m: Vec<T32>,
    /// The block's input (LayerNorm 1's input), its statistics, normalised and modulated.
    pub h0: T32,
    pub ln1: NormStats,
    pub n1: T32,
    pub u1: T32,
    /// Attention per head `[batch * heads, tokens, dh]`, its probabilities
    /// `[batch * heads, tokens, tokens]`, the merged heads (out_proj's input) and out_proj's output.
    pub q: T32,
    pub k: T32,
    pub v: T32,
    pub probs: T32,
    pub merged: T32,
    pub a: T32,
    /// After the attention residual (LayerNorm 2's input), its statistics, normalised and modulated.
    pub h1: T32,
    pub ln2: NormStats,
    pub n2: T32,
    pub u2: T32,
    /// MLP: mlp0's output, gelu of it (mlp2's input), mlp2's output.
    pub f1: T32,
    pub g1: T32,
    pub f2: T32,
}

/// What the head keeps: the final LayerNorm's input and statistics, normalised and modulated
/// tokens, and the adaLN scale.
#[derive(Debug)]
pub(super) struct HeadCache {
    pub h: T32,
    pub ln: NormStats,
    pub n: T32,
    pub u: T32,
    pub scale: T32,
}

/// What [`GpuDit::forward_train`] keeps for [`GpuDit::backward`].
#[derive(Debug)]
pub struct GpuDitCache {
    pub(super) batch: usize,
    pub(super) labels: Option<Vec<usize>>,
    /// x_embed's input rows `[batch * tokens, in_ch * p * p]`.
    pub(super) patches: T32,
    /// The timestep embedding, t_embed.0's output, silu of it, the conditioning c, silu(c).
    pub(super) temb: T32,
    pub(super) z1: T32,
    pub(super) s1: T32,
    pub(super) c: T32,
    pub(super) sc: T32,
    pub(super) blocks: Vec<BlockCache>,
    pub(super) head: HeadCache,
}

/// The gradients of a training step: the input's, and one per parameter of the CPU model.
#[derive(Debug)]
pub struct GpuDitGrads {
    /// dL/dx, `[batch, in_ch, size, size]`.
    pub input: T32,
    /// dL/dp for every parameter, named and shaped as `Dit`'s `Parameters::visit`, in its order.
    pub params: Vec<(String, T32)>,
}

impl GpuDitGrads {
    /// The gradient of the parameter `name`.
    pub fn get(&self, name: &str) -> Option<&T32> {
        self.params.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }
}

/// LayerNorm's (no affine part) input gradient.
fn ln_backward(dy: &T32, x: &T32, stats: &NormStats, rows: usize, d: usize) -> Result<T32> {
    let mut dx = dy.zeros_like();
    layer_norm_bwd(dy, x, rows, d, None, stats, &mut dx, None)?;
    Ok(dx)
}

/// `acc += t`.
fn add_to(acc: &mut T32, t: &T32) -> Result<()> {
    acc.try_lincomb(1.0, &[(1.0, t)], None)
}

/// Backward of the CPU linear layer `prefix`, split by rows into `layers` applied to the same
/// input `x` (`[rows, inputs]`), given each part's output gradient: records the parameter
/// gradients (parts in row order) and returns `dx = sum_j dy_j W_j`.
fn split_linear_backward(
    prefix: &str,
    layers: &[&GpuLinear],
    x: &T32,
    dys: &[T32],
    rows: usize,
    parts: &mut Parts,
) -> Result<T32> {
    if layers.len() != dys.len() || layers.is_empty() {
        return Err(CudaError::InvalidArgument {
            name: "split_linear_backward",
            reason: format!("{prefix}: {} parts, {} output gradients", layers.len(), dys.len()),
        });
    }
    let mut dxs = Vec::with_capacity(layers.len());
    for (l, dy) in layers.iter().zip(dys) {
        parts.linear(prefix, l.param_grads(x, dy, rows)?);
        dxs.push(l.input_grad(dy, rows)?);
    }
    let mut dx = dxs[0].zeros_like();
    let terms: Vec<(f64, &T32)> = dxs.iter().map(|t| (1.0, t)).collect();
    dx.try_lincomb(0.0, &terms, None)?;
    Ok(dx)
}

impl GpuDit {
    /// The gradients of a loss `L` for the forward pass `cache`, given `dy = dL/dy` for its
    /// output `y` (`[batch, in_ch, size, size]`): the same computation as `Network::backward`
    /// of `diffusion-nn`'s DiT, gradients named as its `Parameters::visit`.
    pub fn backward(&self, cache: &GpuDitCache, dy: &T32) -> Result<GpuDitGrads> {
        let cfg = self.cfg;
        let expected = [cache.batch, cfg.in_ch, cfg.size, cfg.size];
        if dy.shape() != expected {
            return Err(CudaError::ShapeMismatch {
                context: "GpuDit::backward dy [batch, in_ch, size, size]",
                expected: expected.to_vec(),
                got: dy.shape().to_vec(),
            });
        }
        if cache.blocks.len() != self.blocks.len() {
            return Err(CudaError::InvalidArgument {
                name: "GpuDit::backward cache",
                reason: format!(
                    "{} block caches for {} blocks (a cache of another model?)",
                    cache.blocks.len(),
                    self.blocks.len()
                ),
            });
        }
        let mut parts = Parts::default();
        let (mut dh, mut dsc) = self.head_backward(cache, dy, &mut parts)?;
        for (i, (blk, bc)) in self.blocks.iter().zip(&cache.blocks).enumerate().rev() {
            self.block_backward(i, blk, bc, cache, &mut dh, &mut dsc, &mut parts)?;
        }
        let input = self.stem_backward(cache, &dh, &dsc, &mut parts)?;
        let params = parts.assemble(&self.gpu, &self.params, "GpuDit::backward")?;
        Ok(GpuDitGrads { input, params })
    }

    /// `Dit::head_backward`: returns `(dh, dsc)`.
    fn head_backward(&self, cache: &GpuDitCache, dy: &T32, parts: &mut Parts) -> Result<(T32, T32)> {
        let cfg = self.cfg;
        let (batch, c_in, s, p, d) = (cache.batch, cfg.in_ch, cfg.size, cfg.patch, cfg.hidden);
        let tok = (s / p).pow(2);
        let rows = batch * tok;
        let hc = &cache.head;
        let mut dout = T32::zeros(&self.gpu, &[rows, p * p * c_in]);
        patchify(dy, (batch, c_in, s, p), &mut dout)?;
        parts.linear("out", self.out.param_grads(&hc.u, &dout, rows)?);
        let du = self.out.input_grad(&dout, rows)?;
        let mut dn = du.zeros_like();
        let (mut dshift, mut dscale) = (
            T32::zeros(&self.gpu, &[batch, d]),
            T32::zeros(&self.gpu, &[batch, d]),
        );
        adaln_modulate_bwd(
            &du,
            &hc.n,
            &hc.scale,
            (batch, tok, d),
            &mut dn,
            &mut dshift,
            &mut dscale,
        )?;
        let dh = ln_backward(&dn, &hc.h, &hc.ln, rows, d)?;
        let ada_f: Vec<&GpuLinear> = self.ada_f.iter().collect();
        let dsc = split_linear_backward("ada_f.1", &ada_f, &cache.sc, &[dshift, dscale], batch, parts)?;
        Ok((dh, dsc))
    }

    /// One block of `Dit`'s backward loop: updates `dh` and `dsc` in place.
    fn block_backward(
        &self,
        i: usize,
        blk: &GpuDitBlock,
        bc: &BlockCache,
        cache: &GpuDitCache,
        dh: &mut T32,
        dsc: &mut T32,
        parts: &mut Parts,
    ) -> Result<()> {
        let cfg = self.cfg;
        let (batch, d, heads) = (cache.batch, cfg.hidden, cfg.heads);
        let (tok, hd) = ((cfg.size / cfg.patch).pow(2), d / heads);
        let (rows, dims, head_dims) = (batch * tok, (batch, tok, d), (batch, tok, heads, hd));
        let gpu = &self.gpu;
        let pre = format!("blocks.{i}");
        if bc.m.len() != 6 {
            return Err(CudaError::InvalidArgument {
                name: "GpuDit::backward cache",
                reason: format!("block {i} keeps {} adaLN vectors, not 6", bc.m.len()),
            });
        }
        let zeros_bd = || T32::zeros(gpu, &[batch, d]);
        // MLP branch: h += gate2 * mlp2(gelu(mlp0(u2))).
        let (mut df2, mut dgate2) = (dh.zeros_like(), zeros_bd());
        gate_add_bwd(dh, &bc.f2, &bc.m[5], dims, &mut df2, &mut dgate2)?;
        parts.linear(&format!("{pre}.mlp.2"), blk.mlp2.param_grads(&bc.g1, &df2, rows)?);
        let dg1 = blk.mlp2.input_grad(&df2, rows)?;
        let mut df1 = dg1.zeros_like();
        gelu_tanh_bwd(&dg1, &bc.f1, &mut df1)?;
        parts.linear(&format!("{pre}.mlp.0"), blk.mlp0.param_grads(&bc.u2, &df1, rows)?);
        let du2 = blk.mlp0.input_grad(&df1, rows)?;
        let (mut dn2, mut dshift2, mut dscale2) = (du2.zeros_like(), zeros_bd(), zeros_bd());
        adaln_modulate_bwd(&du2, &bc.n2, &bc.m[4], dims, &mut dn2, &mut dshift2, &mut dscale2)?;
        add_to(dh, &ln_backward(&dn2, &bc.h1, &bc.ln2, rows, d)?)?;
        // Attention branch: h += gate1 * out_proj(attention(q, k, v)), q, k, v from u1.
        let (mut da, mut dgate1) = (dh.zeros_like(), zeros_bd());
        gate_add_bwd(dh, &bc.a, &bc.m[2], dims, &mut da, &mut dgate1)?;
        parts.linear(
            &format!("{pre}.attn.out_proj"),
            blk.out_proj.param_grads(&bc.merged, &da, rows)?,
        );
        let dmerged = blk.out_proj.input_grad(&da, rows)?;
        let mut d_o = bc.q.zeros_like();
        split_heads(&dmerged, head_dims, &mut d_o)?;
        let (mut dq, mut dk, mut dv) = (bc.q.zeros_like(), bc.k.zeros_like(), bc.v.zeros_like());
        attention_bwd(
            &d_o,
            &bc.q,
            &bc.k,
            &bc.v,
            &bc.probs,
            batch * heads,
            (tok, tok, hd),
            &mut dq,
            &mut dk,
            &mut dv,
        )?;
        let merge = |t: &T32| -> Result<T32> {
            let mut out = dh.zeros_like();
            merge_heads(t, head_dims, &mut out)?;
            Ok(out)
        };
        let dqkv = [merge(&dq)?, merge(&dk)?, merge(&dv)?];
        let du1 = split_linear_backward(
            &format!("{pre}.attn.in_proj"),
            &[&blk.q, &blk.k, &blk.v],
            &bc.u1,
            &dqkv,
            rows,
            parts,
        )?;
        let (mut dn1, mut dshift1, mut dscale1) = (du1.zeros_like(), zeros_bd(), zeros_bd());
        adaln_modulate_bwd(&du1, &bc.n1, &bc.m[1], dims, &mut dn1, &mut dshift1, &mut dscale1)?;
        add_to(dh, &ln_backward(&dn1, &bc.h0, &bc.ln1, rows, d)?)?;
        // adaLN: m = ada(silu(c)), packed (shift1, scale1, gate1, shift2, scale2, gate2).
        let ada: Vec<&GpuLinear> = blk.ada.iter().collect();
        let dm = [dshift1, dscale1, dgate1, dshift2, dscale2, dgate2];
        let dsc_blk = split_linear_backward(&format!("{pre}.ada.1"), &ada, &cache.sc, &dm, batch, parts)?;
        add_to(dsc, &dsc_blk)
    }

    /// `Dit::stem_backward`: the time (and class) embedding's and the patch embedding's
    /// gradients; returns dL/dx.
    fn stem_backward(&self, cache: &GpuDitCache, dh: &T32, dsc: &T32, parts: &mut Parts) -> Result<T32> {
        let cfg = self.cfg;
        let (batch, c_in, s, p) = (cache.batch, cfg.in_ch, cfg.size, cfg.patch);
        let rows = batch * (s / p).pow(2);
        let mut dc = dsc.zeros_like();
        silu_bwd(dsc, &cache.c, &mut dc)?;
        if self.y_embed.is_some() {
            parts.push("y_embed.weight".into(), self.class_grad(cache, &dc)?);
        }
        parts.linear("t_embed.2", self.t_embed2.param_grads(&cache.s1, &dc, batch)?);
        let ds1 = self.t_embed2.input_grad(&dc, batch)?;
        let mut dz1 = ds1.zeros_like();
        silu_bwd(&ds1, &cache.z1, &mut dz1)?;
        parts.linear("t_embed.0", self.t_embed0.param_grads(&cache.temb, &dz1, batch)?);
        // The patch embedding (a convolution with kernel = stride = patch) is x_embed on the
        // patch rows: its weight gradient is dh^T rows, its input gradient dh W back to images.
        parts.linear("x_embed", self.x_embed.param_grads(&cache.patches, dh, rows)?);
        let drows = self.x_embed.input_grad(dh, rows)?;
        let mut dx = T32::zeros(&self.gpu, &[batch, c_in, s, s]);
        patch_rows_bwd(&drows, (batch, c_in, s, p), &mut dx)?;
        Ok(dx)
    }

    /// The class table's gradient `[classes, d]`: row `label_b` gets `dc[b]`, items in
    /// order, as the CPU model adds them. The table lives on the host, and so does this sum
    /// (`batch * d` values).
    fn class_grad(&self, cache: &GpuDitCache, dc: &T32) -> Result<T32> {
        let (d, classes) = (self.cfg.hidden, self.cfg.num_classes);
        let labels = cache.labels.as_deref().ok_or(CudaError::InvalidArgument {
            name: "GpuDit::backward cache",
            reason: "a class-conditional model's cache holds no labels".into(),
        })?;
        let dc = dc.to_host()?;
        if dc.len() != labels.len() * d || labels.iter().any(|&l| l >= classes) {
            return Err(CudaError::ShapeMismatch {
                context: "GpuDit::backward class labels and dc [batch, d]",
                expected: vec![labels.len(), d],
                got: vec![dc.len()],
            });
        }
        let mut g = vec![0.0f64; classes * d];
        for (&l, row) in labels.iter().zip(dc.chunks_exact(d.max(1))) {
            for (acc, &v) in g[l * d..(l + 1) * d].iter_mut().zip(row) {
                *acc += f64::from(v);
            }
        }
        T32::from_f64(&self.gpu, &[classes, d], &g)
    }
}
