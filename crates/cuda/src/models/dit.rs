//! DiT on the GPU: inference and the forward pass of a training step (one code path, so
//! both compute the same function); the backward pass is in `backward.rs`, the parameters
//! as named tensors in `params.rs`.

mod backward;
mod params;

use std::collections::HashMap;
use std::sync::Arc;

use diffusion_core::{Denoiser, NoiseLevel, Parameterization, Tensor};
use diffusion_nn::Parameters;
use diffusion_nn::layers::timestep_embedding;
use diffusion_nn::models::{Dit, DitConfig};

use crate::Gpu;
use crate::error::{CudaError, Result};
use crate::layout::{add_periodic, gate_add, merge_heads, patch_rows, split_heads, unpatchify};
use crate::ops::{adaln_modulate, attention_with_probs, gelu_tanh, layer_norm, silu};

use super::grads::linear_names;
use super::{GpuLinear, T32};

use backward::{BlockCache, HeadCache};
pub use backward::{GpuDitCache, GpuDitGrads};

/// DiT's LayerNorm epsilon (no affine part), as in the reference model.
const NORM_EPS: f64 = 1e-6;

/// The CPU model's tensors by name (parameters and buffers), as f32.
struct Weights(HashMap<String, (Vec<usize>, Vec<f32>)>);

impl Weights {
    fn of(model: &Dit<f32>) -> Self {
        let mut map = HashMap::new();
        model.visit(&mut |name, p| {
            map.insert(
                name.to_string(),
                (p.value.shape().to_vec(), p.value.iter().copied().collect()),
            );
        });
        model.visit_buffers(&mut |name, b| {
            map.insert(
                name.to_string(),
                (b.shape().to_vec(), b.iter().copied().collect()),
            );
        });
        Self(map)
    }

    fn get(&self, name: &str) -> Result<&[f32]> {
        self.0
            .get(name)
            .map(|(_, v)| v.as_slice())
            .ok_or_else(|| CudaError::InvalidArgument {
                name: "weights",
                reason: format!("the CPU model has no tensor `{name}`"),
            })
    }

    /// Rows `r0 .. r0 + outputs` of the linear layer `prefix` (weight `[*, inputs]`).
    fn linear(
        &self,
        gpu: &Arc<Gpu>,
        prefix: &str,
        r0: usize,
        outputs: usize,
        inputs: usize,
    ) -> Result<GpuLinear> {
        let (w, b) = linear_names(prefix);
        GpuLinear::from_rows(gpu, self.get(&w)?, Some(self.get(&b)?), r0, outputs, inputs)
    }
}

/// One transformer block: adaLN projections split into their six `[d, d]` parts (shift,
/// scale, gate for attention, then for the MLP), attention projections split into q, k, v.
struct GpuDitBlock {
    ada: Vec<GpuLinear>,
    q: GpuLinear,
    k: GpuLinear,
    v: GpuLinear,
    out_proj: GpuLinear,
    mlp0: GpuLinear,
    mlp2: GpuLinear,
}

/// DiT on the GPU: the same function as [`Dit::infer`] of `diffusion-nn`, with cuBLAS
/// products (f32, no TF32) and the kernels of [`crate::ops`] and [`crate::layout`]; and a
/// training step's gradients ([`GpuDit::forward_train`], [`GpuDit::backward`]).
pub struct GpuDit {
    gpu: Arc<Gpu>,
    cfg: DitConfig,
    /// The CPU model's parameter names and shapes, in `Parameters::visit` order: the names
    /// and order of the gradients and of [`GpuDit::parameters`].
    params: Vec<(String, Vec<usize>)>,
    x_embed: GpuLinear,
    pos: T32,
    t_embed0: GpuLinear,
    t_embed2: GpuLinear,
    /// Class embedding table `[classes, d]`, kept on the host: a batch gathers its rows.
    y_embed: Option<Vec<f32>>,
    blocks: Vec<GpuDitBlock>,
    ada_f: Vec<GpuLinear>,
    out: GpuLinear,
}

impl std::fmt::Debug for GpuDit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuDit")
            .field("gpu", &self.gpu)
            .field("cfg", &self.cfg)
            .finish()
    }
}

impl GpuDit {
    /// Uploads `model`'s weights to `gpu`.
    pub fn from_cpu(gpu: &Arc<Gpu>, model: &Dit<f32>) -> Result<Self> {
        let cfg = model.config();
        let w = Weights::of(model);
        let mut params = Vec::new();
        model.visit(&mut |name, p| params.push((name.to_string(), p.value.shape().to_vec())));
        let d = cfg.hidden;
        let patch_len = cfg.in_ch * cfg.patch * cfg.patch;
        let blocks = (0..cfg.depth)
            .map(|i| {
                let p = format!("blocks.{i}");
                Ok(GpuDitBlock {
                    ada: (0..6)
                        .map(|j| w.linear(gpu, &format!("{p}.ada.1"), j * d, d, d))
                        .collect::<Result<_>>()?,
                    q: w.linear(gpu, &format!("{p}.attn.in_proj"), 0, d, d)?,
                    k: w.linear(gpu, &format!("{p}.attn.in_proj"), d, d, d)?,
                    v: w.linear(gpu, &format!("{p}.attn.in_proj"), 2 * d, d, d)?,
                    out_proj: w.linear(gpu, &format!("{p}.attn.out_proj"), 0, d, d)?,
                    mlp0: w.linear(gpu, &format!("{p}.mlp.0"), 0, cfg.mlp_ratio * d, d)?,
                    mlp2: w.linear(gpu, &format!("{p}.mlp.2"), 0, d, cfg.mlp_ratio * d)?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            gpu: gpu.clone(),
            cfg,
            params,
            x_embed: w.linear(gpu, "x_embed", 0, d, patch_len)?,
            pos: T32::from_host(gpu, &[model.pos.len()], w.get("pos")?)?,
            t_embed0: w.linear(gpu, "t_embed.0", 0, d, cfg.freq_dim)?,
            t_embed2: w.linear(gpu, "t_embed.2", 0, d, d)?,
            y_embed: (cfg.num_classes > 0)
                .then(|| w.get("y_embed.weight").map(<[f32]>::to_vec))
                .transpose()?,
            blocks,
            ada_f: (0..2)
                .map(|j| w.linear(gpu, "ada_f.1", j * d, d, d))
                .collect::<Result<_>>()?,
            out: w.linear(gpu, "out", 0, patch_len, d)?,
        })
    }

    pub fn config(&self) -> DitConfig {
        self.cfg
    }

    /// The model's output for images `x: [batch, in_ch, size, size]` on this GPU at timesteps
    /// `t` (one per item), with class `labels` for a class-conditional model.
    pub fn infer(&self, x: &T32, t: &[f32], labels: Option<&[usize]>) -> Result<T32> {
        Ok(self.run(x, t, labels, false)?.0)
    }

    /// [`GpuDit::infer`] (the same computation), also keeping what [`GpuDit::backward`] needs.
    pub fn forward_train(&self, x: &T32, t: &[f32], labels: Option<&[usize]>) -> Result<(T32, GpuDitCache)> {
        let (y, cache) = self.run(x, t, labels, true)?;
        let cache = cache.ok_or(CudaError::InvalidArgument {
            name: "forward_train",
            reason: "the forward pass kept no cache".into(),
        })?;
        Ok((y, cache))
    }

    /// The forward pass, as `Dit::run` of `diffusion-nn`; with `keep`, also the cache of
    /// every intermediate the backward pass reads.
    fn run(
        &self,
        x: &T32,
        t: &[f32],
        labels: Option<&[usize]>,
        keep: bool,
    ) -> Result<(T32, Option<GpuDitCache>)> {
        let cfg = self.cfg;
        let (c_in, s, p, d, heads) = (cfg.in_ch, cfg.size, cfg.patch, cfg.hidden, cfg.heads);
        let batch = t.len();
        if x.shape() != [batch, c_in, s, s] {
            return Err(CudaError::ShapeMismatch {
                context: "GpuDit input [batch = t.len(), in_ch, size, size]",
                expected: vec![batch, c_in, s, s],
                got: x.shape().to_vec(),
            });
        }
        let tok = (s / p).pow(2);
        let rows = batch * tok;
        let gpu = &self.gpu;
        // Stem: patch embedding plus positions; conditioning c and silu(c).
        let mut patches = T32::zeros(gpu, &[rows, c_in * p * p]);
        patch_rows(x, (batch, c_in, s, p), &mut patches)?;
        let mut h = self.x_embed.forward(&patches, rows)?;
        add_periodic(&mut h, &self.pos)?;
        let temb: Vec<f32> = timestep_embedding(t, cfg.freq_dim, 10000.0)
            .iter()
            .copied()
            .collect();
        let temb = T32::from_host(gpu, &[batch, cfg.freq_dim], &temb)?;
        let z1 = self.t_embed0.forward(&temb, batch)?;
        let mut s1 = z1.zeros_like();
        silu(&z1, &mut s1)?;
        let mut c = self.t_embed2.forward(&s1, batch)?;
        let labels = self.class_rows(labels, batch, &mut c)?;
        let mut sc = c.zeros_like();
        silu(&c, &mut sc)?;
        // A model without blocks may have zero heads (nothing then divides by them).
        let dh = d / heads.max(1);
        let dims = (batch, tok, d);
        let split = |t: &T32| -> Result<T32> {
            let mut out = t.zeros_like();
            split_heads(t, (batch, tok, heads, dh), &mut out)?;
            Ok(out)
        };
        let mut blocks = Vec::new();
        for blk in &self.blocks {
            let m: Vec<T32> = blk
                .ada
                .iter()
                .map(|l| l.forward(&sc, batch))
                .collect::<Result<_>>()?;
            // Attention branch: h += gate1 * out_proj(attention(modulate(norm(h), shift1, scale1))).
            let h0 = keep.then(|| h.clone());
            let mut n1 = h.zeros_like();
            let ln1 = layer_norm(&h, rows, d, None, None, NORM_EPS, &mut n1)?;
            let mut u1 = h.zeros_like();
            adaln_modulate(&n1, &m[0], &m[1], dims, &mut u1)?;
            let (q, k, v) = (
                split(&blk.q.forward(&u1, rows)?)?,
                split(&blk.k.forward(&u1, rows)?)?,
                split(&blk.v.forward(&u1, rows)?)?,
            );
            let mut o = q.zeros_like();
            let probs = attention_with_probs(&q, &k, &v, batch * heads, (tok, tok, dh), &mut o)?;
            let mut merged = h.zeros_like();
            merge_heads(&o, (batch, tok, heads, dh), &mut merged)?;
            let a = blk.out_proj.forward(&merged, rows)?;
            gate_add(&mut h, &a, &m[2], dims)?;
            // MLP branch: h += gate2 * mlp2(gelu(mlp0(modulate(norm(h), shift2, scale2)))).
            let h1 = keep.then(|| h.clone());
            let mut n2 = h.zeros_like();
            let ln2 = layer_norm(&h, rows, d, None, None, NORM_EPS, &mut n2)?;
            let mut u2 = h.zeros_like();
            adaln_modulate(&n2, &m[3], &m[4], dims, &mut u2)?;
            let f1 = blk.mlp0.forward(&u2, rows)?;
            let mut g1 = f1.zeros_like();
            gelu_tanh(&f1, &mut g1)?;
            let f2 = blk.mlp2.forward(&g1, rows)?;
            gate_add(&mut h, &f2, &m[5], dims)?;
            if let (Some(h0), Some(h1)) = (h0, h1) {
                blocks.push(BlockCache {
                    m,
                    h0,
                    ln1,
                    n1,
                    u1,
                    q,
                    k,
                    v,
                    probs,
                    merged,
                    a,
                    h1,
                    ln2,
                    n2,
                    u2,
                    f1,
                    g1,
                    f2,
                });
            }
        }
        // Head: final adaLN, projection to patches, images.
        let (shift, scale) = (
            self.ada_f[0].forward(&sc, batch)?,
            self.ada_f[1].forward(&sc, batch)?,
        );
        let mut n = h.zeros_like();
        let ln = layer_norm(&h, rows, d, None, None, NORM_EPS, &mut n)?;
        let mut u = h.zeros_like();
        adaln_modulate(&n, &shift, &scale, dims, &mut u)?;
        let o = self.out.forward(&u, rows)?;
        let mut y = T32::zeros(gpu, &[batch, c_in, s, s]);
        unpatchify(&o, (batch, c_in, s, p), &mut y)?;
        let cache = keep.then(|| GpuDitCache {
            batch,
            labels,
            patches,
            temb,
            z1,
            s1,
            c,
            sc,
            blocks,
            head: HeadCache { h, ln, n, u, scale },
        });
        Ok((y, cache))
    }

    /// Adds the class embeddings of `labels` to `c` (`[batch, d]`) for a class-conditional
    /// model; returns the checked labels.
    fn class_rows(&self, labels: Option<&[usize]>, batch: usize, c: &mut T32) -> Result<Option<Vec<usize>>> {
        let Some(table) = &self.y_embed else {
            return Ok(None);
        };
        let (d, classes) = (self.cfg.hidden, self.cfg.num_classes);
        let labels = labels.ok_or(CudaError::InvalidArgument {
            name: "labels",
            reason: "a class-conditional DiT needs one label per item".into(),
        })?;
        if labels.len() != batch || labels.iter().any(|&l| l >= classes) {
            return Err(CudaError::InvalidArgument {
                name: "labels",
                reason: format!("need {batch} labels below {classes}, got {labels:?}"),
            });
        }
        let rows: Vec<f32> = labels
            .iter()
            .flat_map(|&l| &table[l * d..(l + 1) * d])
            .copied()
            .collect();
        c.try_lincomb(
            1.0,
            &[(1.0, &T32::from_host(&self.gpu, &[batch, d], &rows)?)],
            None,
        )?;
        Ok(Some(labels.to_vec()))
    }
}

/// A [`GpuDit`] as a solver's model: the GPU counterpart of `diffusion_nn::NetworkDenoiser`
/// (the noise level's timestep for every item, optional class labels bound in), so every
/// scheduler samples on the device end to end.
#[derive(Debug)]
pub struct GpuDitDenoiser {
    pub model: GpuDit,
    pub parameterization: Parameterization,
    /// Class labels bound into the model (one per batch item), if any.
    pub cond: Option<Vec<usize>>,
}

impl Denoiser<T32> for GpuDitDenoiser {
    fn parameterization(&self) -> Parameterization {
        self.parameterization
    }

    fn predict(&self, x: &T32, level: NoiseLevel) -> diffusion_core::Result<T32> {
        let batch = x.shape().first().copied().unwrap_or(0);
        let t = vec![level.timestep as f32; batch];
        Ok(self.model.infer(x, &t, self.cond.as_deref())?)
    }
}
