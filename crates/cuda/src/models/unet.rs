//! UNet on the GPU (2-D): inference, the same function as `diffusion_nn::models::UNet::infer`,
//! and the forward pass of a training step (one code path, so both compute the same
//! function). Each layer's forward also returns what its backward needs (`backward.rs`); the
//! model keeps those caches only for training. Named parameters are in `params.rs`.

mod backward;
mod params;

use std::sync::Arc;

use diffusion_core::Tensor;
use diffusion_nn::Parameters;
use diffusion_nn::layers::{Conv, GroupNorm, MultiheadAttention, timestep_embedding};
use diffusion_nn::models::UNet;
use diffusion_nn::models::unet::{AttnBlock, ResBlock, Stage};

use crate::Gpu;
use crate::error::{CudaError, Result};
use crate::layout::{add_per_block, concat_channels, merge_heads, split_heads, transpose, upsample2};
use crate::ops::{NormStats, attention_with_probs, gemm_shared_a, group_norm, im2col, silu};
use crate::oracle::{ConvGeometry, GroupNormShape};

use super::{GpuLinear, T32};

use backward::{AttnCache, NormCache, ResCache, SkipInfo, StageCache};
pub use backward::{GpuUNetCache, GpuUNetGrads};

fn values(p: &diffusion_nn::Param<f32>) -> Vec<f32> {
    p.value.iter().copied().collect()
}

fn unsupported(reason: String) -> CudaError {
    CudaError::InvalidArgument {
        name: "model",
        reason,
    }
}

/// An NCHW activation and its `(batch, channels, height, width)`.
#[derive(Clone, Debug)]
struct Act {
    t: T32,
    n: usize,
    c: usize,
    h: usize,
    w: usize,
}

/// A 2-D convolution: im2col then one product per image against the shared weights.
struct GpuConv {
    weight: T32,
    bias: Option<T32>,
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    pad: usize,
}

impl GpuConv {
    fn from_cpu(gpu: &Arc<Gpu>, c: &Conv<f32>) -> Result<Self> {
        let shape = c.weight.value.shape();
        let (stride, pad) = (c.stride(), c.padding());
        let square = |v: &[usize]| v.len() == 2 && v[0] == v[1];
        if shape.len() != 4 || shape[2] != shape[3] || c.groups() != 1 || !square(stride) || !square(pad) {
            return Err(unsupported(format!(
                "GPU convolutions are 2-D, square and ungrouped with equal strides and padding; got weight \
                 {shape:?}, stride {stride:?}, padding {pad:?}"
            )));
        }
        Ok(Self {
            weight: T32::from_host(
                gpu,
                &[shape[0], shape[1] * shape[2] * shape[3]],
                &values(&c.weight),
            )?,
            bias: c
                .bias
                .as_ref()
                .map(|b| T32::from_host(gpu, &[shape[0]], &values(b)))
                .transpose()?,
            cin: shape[1],
            cout: shape[0],
            k: shape[2],
            stride: stride[0],
            pad: pad[0],
        })
    }

    /// The geometry of this convolution on `x`; `x` must have the layer's input channels.
    fn geometry(&self, x: &Act) -> Result<ConvGeometry> {
        if x.c != self.cin {
            return Err(CudaError::ShapeMismatch {
                context: "GpuUNet convolution input channels",
                expected: vec![self.cin],
                got: vec![x.c],
            });
        }
        Ok(ConvGeometry {
            n: x.n,
            c: self.cin,
            h: x.h,
            w: x.w,
            kh: self.k,
            kw: self.k,
            stride: self.stride,
            pad: self.pad,
            dilation: 1,
        })
    }

    fn forward(&self, x: &Act) -> Result<Act> {
        let geom = self.geometry(x)?;
        let (oh, ow) = geom.output_hw()?;
        let (kk, l) = (self.cin * self.k * self.k, oh * ow);
        let mut y = T32::zeros(x.t.gpu(), &[x.n, self.cout, oh, ow]);
        if self.k == 1 && self.stride == 1 && self.pad == 0 {
            gemm_shared_a(&self.weight, &x.t, x.n, (self.cout, kk, l), false, false, &mut y)?;
        } else {
            let mut cols = T32::zeros(x.t.gpu(), &[x.n, kk, l]);
            im2col(&x.t, geom, &mut cols)?;
            gemm_shared_a(&self.weight, &cols, x.n, (self.cout, kk, l), false, false, &mut y)?;
        }
        if let Some(b) = &self.bias {
            add_per_block(&mut y, b, l)?;
        }
        Ok(Act {
            t: y,
            n: x.n,
            c: self.cout,
            h: oh,
            w: ow,
        })
    }
}

struct GpuGroupNorm {
    gamma: T32,
    beta: T32,
    groups: usize,
    eps: f64,
}

impl GpuGroupNorm {
    fn from_cpu(gpu: &Arc<Gpu>, g: &GroupNorm<f32>) -> Result<Self> {
        Ok(Self {
            gamma: T32::from_host(gpu, &[g.channels()], &values(&g.weight))?,
            beta: T32::from_host(gpu, &[g.channels()], &values(&g.bias))?,
            groups: g.groups(),
            eps: g.eps(),
        })
    }

    fn shape(&self, x: &Act) -> GroupNormShape {
        GroupNormShape {
            n: x.n,
            c: x.c,
            s: x.h * x.w,
            groups: self.groups,
        }
    }

    /// GroupNorm (then SiLU): the output and what the backward needs.
    fn forward(&self, x: &Act, then_silu: bool) -> Result<(Act, NormCache)> {
        let mut y = x.t.zeros_like();
        let stats: NormStats = group_norm(
            &x.t,
            self.shape(x),
            Some(&self.gamma),
            Some(&self.beta),
            self.eps,
            &mut y,
        )?;
        let out = if then_silu {
            let mut s = y.zeros_like();
            silu(&y, &mut s)?;
            s
        } else {
            y.clone()
        };
        let cache = NormCache {
            x: x.clone(),
            normed: y,
            then_silu,
            stats,
        };
        Ok((Act { t: out, ..*x }, cache))
    }
}

struct GpuResBlock {
    n1: GpuGroupNorm,
    c1: GpuConv,
    t: GpuLinear,
    n2: GpuGroupNorm,
    c2: GpuConv,
    skip: Option<GpuConv>,
}

impl GpuResBlock {
    fn from_cpu(gpu: &Arc<Gpu>, r: &ResBlock<f32>) -> Result<Self> {
        Ok(Self {
            n1: GpuGroupNorm::from_cpu(gpu, &r.n1)?,
            c1: GpuConv::from_cpu(gpu, &r.c1)?,
            t: GpuLinear::from_cpu(gpu, &r.t)?,
            n2: GpuGroupNorm::from_cpu(gpu, &r.n2)?,
            c2: GpuConv::from_cpu(gpu, &r.c2)?,
            skip: r.skip.as_ref().map(|s| GpuConv::from_cpu(gpu, s)).transpose()?,
        })
    }

    /// `ste`: silu of the time embedding, `[batch, temb]`.
    fn forward(&self, x: &Act, ste: &T32) -> Result<(Act, ResCache)> {
        let (sa, n1) = self.n1.forward(x, true)?;
        let mut h1 = self.c1.forward(&sa)?;
        let tp = self.t.forward(ste, x.n)?;
        add_per_block(&mut h1.t, &tp, h1.h * h1.w)?;
        let (sb, n2) = self.n2.forward(&h1, true)?;
        let mut y = self.c2.forward(&sb)?;
        let skip = match &self.skip {
            Some(s) => s.forward(x)?.t,
            None => x.t.clone(),
        };
        y.t.try_lincomb(1.0, &[(1.0, &skip)], None)?;
        Ok((y, ResCache { n1, sa, n2, sb }))
    }
}

struct GpuAttnBlock {
    norm: GpuGroupNorm,
    q: GpuLinear,
    k: GpuLinear,
    v: GpuLinear,
    out_proj: GpuLinear,
    heads: usize,
}

impl GpuAttnBlock {
    fn from_cpu(gpu: &Arc<Gpu>, a: &AttnBlock<f32>) -> Result<Self> {
        let mha: &MultiheadAttention<f32> = &a.a;
        let e = mha.embed_dim();
        let (w, b) = (values(&mha.in_proj_weight), values(&mha.in_proj_bias));
        let part = |i: usize| GpuLinear::from_rows(gpu, &w, Some(&b), i * e, e, e);
        Ok(Self {
            norm: GpuGroupNorm::from_cpu(gpu, &a.n)?,
            q: part(0)?,
            k: part(1)?,
            v: part(2)?,
            out_proj: GpuLinear::from_cpu(gpu, &mha.out_proj)?,
            heads: mha.heads(),
        })
    }

    /// `x + MHA(GroupNorm(x))` over the `h * w` positions.
    fn forward(&self, x: &Act) -> Result<(Act, AttnCache)> {
        let (n, c, s) = (x.n, x.c, x.h * x.w);
        if self.heads == 0 || !c.is_multiple_of(self.heads) {
            return Err(unsupported(format!("{c} channels in {} heads", self.heads)));
        }
        let (heads, dh) = (self.heads, c / self.heads);
        let (normed, norm) = self.norm.forward(x, false)?;
        let mut tokens = normed.t.zeros_like();
        transpose(&normed.t, (n, c, s), &mut tokens)?;
        let split = |t: &T32| -> Result<T32> {
            let mut out = t.zeros_like();
            split_heads(t, (n, s, heads, dh), &mut out)?;
            Ok(out)
        };
        let q = split(&self.q.forward(&tokens, n * s)?)?;
        let k = split(&self.k.forward(&tokens, n * s)?)?;
        let v = split(&self.v.forward(&tokens, n * s)?)?;
        let mut o = q.zeros_like();
        let probs = attention_with_probs(&q, &k, &v, n * heads, (s, s, dh), &mut o)?;
        let mut merged = o.zeros_like();
        merge_heads(&o, (n, s, heads, dh), &mut merged)?;
        let projected = self.out_proj.forward(&merged, n * s)?;
        let mut y = x.t.zeros_like();
        transpose(&projected, (n, s, c), &mut y)?;
        y.try_lincomb(1.0, &[(1.0, &x.t)], None)?;
        let cache = AttnCache {
            norm,
            tokens,
            q,
            k,
            v,
            probs,
            merged,
        };
        Ok((Act { t: y, ..*x }, cache))
    }
}

enum GpuStage {
    Res(Box<GpuResBlock>, Option<Box<GpuAttnBlock>>),
    Down(GpuConv),
    Up(GpuConv),
}

impl GpuStage {
    fn from_cpu(gpu: &Arc<Gpu>, s: &Stage<f32>) -> Result<Self> {
        Ok(match s {
            Stage::Res(r, a) => Self::Res(
                Box::new(GpuResBlock::from_cpu(gpu, r)?),
                a.as_ref()
                    .map(|a| GpuAttnBlock::from_cpu(gpu, a).map(Box::new))
                    .transpose()?,
            ),
            Stage::Down(c) => Self::Down(GpuConv::from_cpu(gpu, c)?),
            Stage::Up(c) => Self::Up(GpuConv::from_cpu(gpu, c)?),
        })
    }

    fn forward(&self, x: &Act, ste: &T32) -> Result<(Act, StageCache)> {
        match self {
            Self::Res(r, a) => {
                let (h, rc) = r.forward(x, ste)?;
                match a {
                    Some(a) => {
                        let (h, ac) = a.forward(&h)?;
                        Ok((h, StageCache::Res(Box::new(rc), Some(Box::new(ac)))))
                    }
                    None => Ok((h, StageCache::Res(Box::new(rc), None))),
                }
            }
            Self::Down(c) => Ok((c.forward(x)?, StageCache::Down(x.clone()))),
            Self::Up(c) => {
                let mut u = T32::zeros(x.t.gpu(), &[x.n, x.c, 2 * x.h, 2 * x.w]);
                upsample2(&x.t, (x.n * x.c, x.h, x.w), &mut u)?;
                let u = Act {
                    t: u,
                    h: 2 * x.h,
                    w: 2 * x.w,
                    ..*x
                };
                Ok((c.forward(&u)?, StageCache::Up(u)))
            }
        }
    }
}

/// A UNet on the GPU (2-D models), from a `diffusion-nn` [`UNet`]'s weights: inference with
/// its skip factors (ScaleLong scales and Skip-Tuning factors) as `UNet::infer` applies them,
/// and a training step's gradients ([`GpuUNet::forward_train`], [`GpuUNet::backward`]) with
/// the training-time factors, as `Network::forward` / `backward`. Learnable skip scales
/// (`SkipScaling::Learnable`) run inference only: training them is a typed error.
pub struct GpuUNet {
    gpu: Arc<Gpu>,
    in_ch: usize,
    size: usize,
    base: usize,
    temb: usize,
    /// The CPU model's parameter names and shapes, in `Parameters::visit` order: the names
    /// and order of the gradients and of [`GpuUNet::parameters`].
    params: Vec<(String, Vec<usize>)>,
    t_mlp0: GpuLinear,
    t_mlp2: GpuLinear,
    inp: GpuConv,
    down: Vec<GpuStage>,
    mid0: GpuResBlock,
    mid1: GpuAttnBlock,
    mid2: GpuResBlock,
    up: Vec<GpuStage>,
    out_norm: GpuGroupNorm,
    out_conv: GpuConv,
    /// Skip factors at inference (with Skip-Tuning) and in training (without).
    skip_factors: Vec<f32>,
    train_skip_factors: Vec<f32>,
    learnable_skips: bool,
}

impl std::fmt::Debug for GpuUNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuUNet")
            .field("gpu", &self.gpu)
            .field("in_ch", &self.in_ch)
            .field("size", &self.size)
            .finish()
    }
}

impl GpuUNet {
    /// Uploads `model`'s weights to `gpu`. Only 2-D UNets run on the GPU.
    pub fn from_cpu(gpu: &Arc<Gpu>, model: &UNet<f32>) -> Result<Self> {
        let cfg = model.config();
        if cfg.dims != 2 {
            return Err(unsupported(format!(
                "GpuUNet runs 2-D UNets; this one has {} axes",
                cfg.dims
            )));
        }
        let stages = |list: &[Stage<f32>]| {
            list.iter()
                .map(|s| GpuStage::from_cpu(gpu, s))
                .collect::<Result<Vec<_>>>()
        };
        let mut params = Vec::new();
        model.visit(&mut |name, p| params.push((name.to_string(), p.value.shape().to_vec())));
        Ok(Self {
            gpu: gpu.clone(),
            in_ch: cfg.in_ch,
            size: cfg.size,
            base: cfg.base,
            temb: cfg.temb,
            params,
            t_mlp0: GpuLinear::from_cpu(gpu, &model.t_mlp0)?,
            t_mlp2: GpuLinear::from_cpu(gpu, &model.t_mlp2)?,
            inp: GpuConv::from_cpu(gpu, &model.inp)?,
            down: stages(&model.down)?,
            mid0: GpuResBlock::from_cpu(gpu, &model.mid0)?,
            mid1: GpuAttnBlock::from_cpu(gpu, &model.mid1)?,
            mid2: GpuResBlock::from_cpu(gpu, &model.mid2)?,
            up: stages(&model.up)?,
            out_norm: GpuGroupNorm::from_cpu(gpu, &model.out_norm)?,
            out_conv: GpuConv::from_cpu(gpu, &model.out_conv)?,
            skip_factors: (0..model.num_skips())
                .map(|j| model.skip_factor(j, true))
                .collect(),
            train_skip_factors: (0..model.num_skips())
                .map(|j| model.skip_factor(j, false))
                .collect(),
            learnable_skips: model.skip_scales.is_some(),
        })
    }

    /// The model's output for images `x: [batch, in_ch, size, size]` at timesteps `t`.
    pub fn infer(&self, x: &T32, t: &[f32]) -> Result<T32> {
        Ok(self.run(x, t, &self.skip_factors, false)?.0)
    }

    /// The training forward pass (`Network::forward` of the CPU model: skip factors without
    /// Skip-Tuning), also keeping what [`GpuUNet::backward`] needs. Without Skip-Tuning
    /// factors it is [`GpuUNet::infer`]'s computation.
    pub fn forward_train(&self, x: &T32, t: &[f32]) -> Result<(T32, GpuUNetCache)> {
        self.check_trainable()?;
        let (y, cache) = self.run(x, t, &self.train_skip_factors, true)?;
        let cache = cache.ok_or(CudaError::InvalidArgument {
            name: "forward_train",
            reason: "the forward pass kept no cache".into(),
        })?;
        Ok((y, cache))
    }

    /// Training needs every parameter on the device: learnable skip scales are not.
    fn check_trainable(&self) -> Result<()> {
        if self.learnable_skips {
            return Err(unsupported(
                "GpuUNet does not train learnable skip scales (SkipScaling::Learnable); \
                 use SkipScaling::Constant or None"
                    .into(),
            ));
        }
        Ok(())
    }

    /// The forward pass, as `UNet::run` of `diffusion-nn`, with skip `j` multiplied by
    /// `factors[j]`; with `keep`, also the cache of every intermediate the backward reads.
    fn run(&self, x: &T32, t: &[f32], factors: &[f32], keep: bool) -> Result<(T32, Option<GpuUNetCache>)> {
        let (batch, c, s) = (t.len(), self.in_ch, self.size);
        if x.shape() != [batch, c, s, s] {
            return Err(CudaError::ShapeMismatch {
                context: "GpuUNet input [batch = t.len(), in_ch, size, size]",
                expected: vec![batch, c, s, s],
                got: x.shape().to_vec(),
            });
        }
        let gpu = &self.gpu;
        let temb: Vec<f32> = timestep_embedding(t, self.base, 10000.0)
            .iter()
            .copied()
            .collect();
        let temb = T32::from_host(gpu, &[batch, self.base], &temb)?;
        let z = self.t_mlp0.forward(&temb, batch)?;
        let mut sz = z.zeros_like();
        silu(&z, &mut sz)?;
        let te = self.t_mlp2.forward(&sz, batch)?;
        let mut ste = te.zeros_like();
        silu(&te, &mut ste)?;
        let x = Act {
            t: x.clone(),
            n: batch,
            c,
            h: s,
            w: s,
        };
        let mut h = self.inp.forward(&x)?;
        // Skips share their buffers with `h` (copy-on-write): no copies.
        let mut skips = vec![h.clone()];
        let mut down = Vec::new();
        for st in &self.down {
            let (nh, sc) = st.forward(&h, &ste)?;
            h = nh;
            skips.push(h.clone());
            if keep {
                down.push(sc);
            }
        }
        // The middle block's caches are at the lowest resolution: kept either way.
        let (h1, mid0) = self.mid0.forward(&h, &ste)?;
        let (h2, mid1) = self.mid1.forward(&h1)?;
        let (mut h, mid2) = self.mid2.forward(&h2, &ste)?;
        let mut up = Vec::new();
        for st in &self.up {
            let mut skip_info = None;
            let input = if let GpuStage::Res(..) = st {
                let j = skips
                    .len()
                    .checked_sub(1)
                    .ok_or_else(|| unsupported("more decoder ResBlocks than encoder skips".into()))?;
                let factor = *factors.get(j).ok_or_else(|| {
                    unsupported(format!("no skip factor for skip {j} of {}", factors.len()))
                })?;
                let skip = skips.pop().ok_or_else(|| unsupported("no skip left".into()))?;
                let spatial = h.h * h.w;
                if skip.h != h.h || skip.w != h.w || skip.n != h.n {
                    return Err(CudaError::ShapeMismatch {
                        context: "GpuUNet skip [batch, channels, h, w] against the decoder's",
                        expected: vec![h.n, skip.c, h.h, h.w],
                        got: vec![skip.n, skip.c, skip.h, skip.w],
                    });
                }
                let mut cat = T32::zeros(gpu, &[batch, h.c + skip.c, h.h, h.w]);
                concat_channels(&h.t, &skip.t, (batch, h.c, skip.c, spatial), factor, &mut cat)?;
                skip_info = Some(SkipInfo {
                    j,
                    hc: h.c,
                    skip_c: skip.c,
                    factor,
                });
                Act {
                    t: cat,
                    c: h.c + skip.c,
                    ..h
                }
            } else {
                h
            };
            let (nh, sc) = st.forward(&input, &ste)?;
            h = nh;
            if keep {
                up.push((sc, skip_info));
            }
        }
        let (os, out_norm) = self.out_norm.forward(&h, true)?;
        let out = self.out_conv.forward(&os)?;
        let cache = keep.then(|| GpuUNetCache {
            batch,
            temb,
            z,
            sz,
            te,
            ste,
            x,
            down,
            mid0,
            mid1,
            mid2,
            up,
            out_norm,
            os,
        });
        Ok((out.t, cache))
    }
}
