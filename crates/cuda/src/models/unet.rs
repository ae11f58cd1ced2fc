//! UNet inference on the GPU (2-D), the same function as `diffusion_nn::models::UNet::infer`.

use std::sync::Arc;

use diffusion_core::Tensor;
use diffusion_nn::layers::{Conv, GroupNorm, MultiheadAttention, timestep_embedding};
use diffusion_nn::models::UNet;
use diffusion_nn::models::unet::{AttnBlock, ResBlock, Stage};

use crate::Gpu;
use crate::error::{CudaError, Result};
use crate::layout::{add_per_block, concat_channels, merge_heads, split_heads, transpose, upsample2};
use crate::ops::{attention, gemm_shared_a, group_norm, im2col, silu};
use crate::reference::{ConvGeometry, GroupNormShape};

use super::{GpuLinear, T32};

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

    fn forward(&self, x: &Act) -> Result<Act> {
        let geom = ConvGeometry {
            n: x.n,
            c: self.cin,
            h: x.h,
            w: x.w,
            kh: self.k,
            kw: self.k,
            stride: self.stride,
            pad: self.pad,
            dilation: 1,
        };
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

    fn forward(&self, x: &Act, then_silu: bool) -> Result<Act> {
        let shape = GroupNormShape {
            n: x.n,
            c: x.c,
            s: x.h * x.w,
            groups: self.groups,
        };
        let mut y = x.t.zeros_like();
        group_norm(&x.t, shape, Some(&self.gamma), Some(&self.beta), self.eps, &mut y)?;
        if then_silu {
            let mut s = y.zeros_like();
            silu(&y, &mut s)?;
            y = s;
        }
        Ok(Act { t: y, ..*x })
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
    fn forward(&self, x: &Act, ste: &T32) -> Result<Act> {
        let mut h1 = self.c1.forward(&self.n1.forward(x, true)?)?;
        let tp = self.t.forward(ste, x.n)?;
        add_per_block(&mut h1.t, &tp, h1.h * h1.w)?;
        let mut y = self.c2.forward(&self.n2.forward(&h1, true)?)?;
        let skip = match &self.skip {
            Some(s) => s.forward(x)?.t,
            None => x.t.clone(),
        };
        y.t.try_lincomb(1.0, &[(1.0, &skip)], None)?;
        Ok(y)
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
    fn forward(&self, x: &Act) -> Result<Act> {
        let (n, c, s) = (x.n, x.c, x.h * x.w);
        let (heads, dh) = (self.heads, c / self.heads);
        let normed = self.norm.forward(x, false)?;
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
        attention(&q, &k, &v, n * heads, (s, s, dh), &mut o)?;
        let mut merged = o.zeros_like();
        merge_heads(&o, (n, s, heads, dh), &mut merged)?;
        let projected = self.out_proj.forward(&merged, n * s)?;
        let mut y = x.t.zeros_like();
        transpose(&projected, (n, s, c), &mut y)?;
        y.try_lincomb(1.0, &[(1.0, &x.t)], None)?;
        Ok(Act { t: y, ..*x })
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

    fn forward(&self, x: &Act, ste: &T32) -> Result<Act> {
        match self {
            Self::Res(r, a) => {
                let h = r.forward(x, ste)?;
                match a {
                    Some(a) => a.forward(&h),
                    None => Ok(h),
                }
            }
            Self::Down(c) => c.forward(x),
            Self::Up(c) => {
                let mut u = T32::zeros(x.t.gpu(), &[x.n, x.c, 2 * x.h, 2 * x.w]);
                upsample2(&x.t, (x.n * x.c, x.h, x.w), &mut u)?;
                c.forward(&Act {
                    t: u,
                    h: 2 * x.h,
                    w: 2 * x.w,
                    ..*x
                })
            }
        }
    }
}

/// UNet inference on the GPU (2-D models), from a `diffusion-nn` [`UNet`]'s weights, with its
/// skip factors (ScaleLong scales and Skip-Tuning factors) as `UNet::infer` applies them.
pub struct GpuUNet {
    gpu: Arc<Gpu>,
    in_ch: usize,
    size: usize,
    base: usize,
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
    skip_factors: Vec<f32>,
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
        Ok(Self {
            gpu: gpu.clone(),
            in_ch: cfg.in_ch,
            size: cfg.size,
            base: cfg.base,
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
        })
    }

    /// The model's output for images `x: [batch, in_ch, size, size]` at timesteps `t`.
    pub fn infer(&self, x: &T32, t: &[f32]) -> Result<T32> {
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
        let mut skips = vec![Act { t: h.t.clone(), ..h }];
        for st in &self.down {
            h = st.forward(&h, &ste)?;
            skips.push(Act { t: h.t.clone(), ..h });
        }
        h = self.mid0.forward(&h, &ste)?;
        h = self.mid1.forward(&h)?;
        h = self.mid2.forward(&h, &ste)?;
        for st in &self.up {
            if let GpuStage::Res(..) = st {
                let j = skips.len() - 1;
                let skip = skips.pop().expect("one skip per decoder ResBlock");
                let spatial = h.h * h.w;
                let mut cat = T32::zeros(gpu, &[batch, h.c + skip.c, h.h, h.w]);
                concat_channels(
                    &h.t,
                    &skip.t,
                    (batch, h.c, skip.c, spatial),
                    self.skip_factors[j],
                    &mut cat,
                )?;
                h = st.forward(
                    &Act {
                        t: cat,
                        c: h.c + skip.c,
                        ..h
                    },
                    &ste,
                )?;
            } else {
                h = st.forward(&h, &ste)?;
            }
        }
        let out = self.out_conv.forward(&self.out_norm.forward(&h, true)?)?;
        Ok(out.t)
    }
}
