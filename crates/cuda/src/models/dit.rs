//! DiT inference on the GPU.

use std::collections::HashMap;
use std::sync::Arc;

use diffusion_core::{Denoiser, NoiseLevel, Parameterization, Tensor};
use diffusion_nn::Parameters;
use diffusion_nn::layers::timestep_embedding;
use diffusion_nn::models::{Dit, DitConfig};

use crate::Gpu;
use crate::error::{CudaError, Result};
use crate::layout::{add_periodic, gate_add, merge_heads, patch_rows, split_heads, unpatchify};
use crate::ops::{adaln_modulate, attention, gelu_tanh, layer_norm, silu};

use super::{GpuLinear, T32};

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
        let (w, b) = if prefix.ends_with("in_proj") {
            (
                self.get(&format!("{prefix}_weight"))?,
                self.get(&format!("{prefix}_bias"))?,
            )
        } else {
            (
                self.get(&format!("{prefix}.weight"))?,
                self.get(&format!("{prefix}.bias"))?,
            )
        };
        GpuLinear::from_rows(gpu, w, Some(b), r0, outputs, inputs)
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

/// DiT inference on the GPU: the same function as [`Dit::infer`] of `diffusion-nn`, with
/// cuBLAS products (f32, no TF32) and the kernels of [`crate::ops`] and [`crate::layout`].
pub struct GpuDit {
    gpu: Arc<Gpu>,
    cfg: DitConfig,
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
        if let Some(table) = &self.y_embed {
            let labels = labels.ok_or(CudaError::InvalidArgument {
                name: "labels",
                reason: "a class-conditional DiT needs one label per item".into(),
            })?;
            if labels.len() != batch || labels.iter().any(|&l| l >= cfg.num_classes) {
                return Err(CudaError::InvalidArgument {
                    name: "labels",
                    reason: format!("need {batch} labels below {}, got {labels:?}", cfg.num_classes),
                });
            }
            let rows: Vec<f32> = labels
                .iter()
                .flat_map(|&l| &table[l * d..(l + 1) * d])
                .copied()
                .collect();
            c.try_lincomb(1.0, &[(1.0, &T32::from_host(gpu, &[batch, d], &rows)?)], None)?;
        }
        let mut sc = c.zeros_like();
        silu(&c, &mut sc)?;
        let dh = d / heads;
        let mut normed = h.zeros_like();
        let mut modulated = h.zeros_like();
        let split = |t: &T32| -> Result<T32> {
            let mut out = t.zeros_like();
            split_heads(t, (batch, tok, heads, dh), &mut out)?;
            Ok(out)
        };
        for blk in &self.blocks {
            let m: Vec<T32> = blk
                .ada
                .iter()
                .map(|l| l.forward(&sc, batch))
                .collect::<Result<_>>()?;
            layer_norm(&h, rows, d, None, None, NORM_EPS, &mut normed)?;
            adaln_modulate(&normed, &m[0], &m[1], (batch, tok, d), &mut modulated)?;
            let (q, k, v) = (
                split(&blk.q.forward(&modulated, rows)?)?,
                split(&blk.k.forward(&modulated, rows)?)?,
                split(&blk.v.forward(&modulated, rows)?)?,
            );
            let mut o = q.zeros_like();
            attention(&q, &k, &v, batch * heads, (tok, tok, dh), &mut o)?;
            let mut merged = h.zeros_like();
            merge_heads(&o, (batch, tok, heads, dh), &mut merged)?;
            let a = blk.out_proj.forward(&merged, rows)?;
            gate_add(&mut h, &a, &m[2], (batch, tok, d))?;
            layer_norm(&h, rows, d, None, None, NORM_EPS, &mut normed)?;
            adaln_modulate(&normed, &m[3], &m[4], (batch, tok, d), &mut modulated)?;
            let f1 = blk.mlp0.forward(&modulated, rows)?;
            let mut g1 = f1.zeros_like();
            gelu_tanh(&f1, &mut g1)?;
            let f2 = blk.mlp2.forward(&g1, rows)?;
            gate_add(&mut h, &f2, &m[5], (batch, tok, d))?;
        }
        // Head: final adaLN, projection to patches, images.
        let (shift, scale) = (
            self.ada_f[0].forward(&sc, batch)?,
            self.ada_f[1].forward(&sc, batch)?,
        );
        layer_norm(&h, rows, d, None, None, NORM_EPS, &mut normed)?;
        adaln_modulate(&normed, &shift, &scale, (batch, tok, d), &mut modulated)?;
        let o = self.out.forward(&modulated, rows)?;
        let mut y = T32::zeros(gpu, &[batch, c_in, s, s]);
        unpatchify(&o, (batch, c_in, s, p), &mut y)?;
        Ok(y)
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
