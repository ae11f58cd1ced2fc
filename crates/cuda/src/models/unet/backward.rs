//! The backward pass of [`GpuUNet`]: `Network::backward` of `diffusion-nn`'s UNet (and its
//! `ResBlock`, `AttnBlock` and `Stage` backward) step for step on the device. Gradients are
//! recorded under the CPU parameter names (attention's q/k/v parts joined into `in_proj_*`)
//! and come out named, shaped and ordered as `UNet`'s `Parameters::visit`.

use diffusion_core::Tensor;

use crate::error::{CudaError, Result};
use crate::grad::{attention_bwd, channel_sums, conv2d_bwd};
use crate::layout::{merge_heads, split_channels, split_heads, transpose, upsample2_bwd};
use crate::ops::{NormStats, group_norm_bwd, silu_bwd};

use super::super::T32;
use super::super::grads::Parts;
use super::{Act, GpuAttnBlock, GpuConv, GpuGroupNorm, GpuResBlock, GpuStage, GpuUNet};

/// What a GroupNorm (then SiLU) keeps: its input, its output before the SiLU, its statistics.
#[derive(Debug)]
pub(super) struct NormCache {
    pub(super) x: Act,
    pub(super) normed: T32,
    pub(super) then_silu: bool,
    pub(super) stats: NormStats,
}

/// A ResBlock's caches: its two norms (n1's input is the block's input, n2's is `c1`'s
/// output plus the time embedding) and its convolutions' inputs.
#[derive(Debug)]
pub(super) struct ResCache {
    pub(super) n1: NormCache,
    pub(super) sa: Act,
    pub(super) n2: NormCache,
    pub(super) sb: Act,
}

/// An attention block's caches: the norm, the tokens `[batch * positions, channels]` the
/// projections read, the heads `[batch * heads, positions, dh]`, the probabilities and the
/// merged heads (out_proj's input).
#[derive(Debug)]
pub(super) struct AttnCache {
    pub(super) norm: NormCache,
    pub(super) tokens: T32,
    pub(super) q: T32,
    pub(super) k: T32,
    pub(super) v: T32,
    pub(super) probs: T32,
    pub(super) merged: T32,
}

/// A stage's cache: a ResBlock's (and its attention's), or a convolution's input (for `Up`,
/// the upsampled input).
#[derive(Debug)]
pub(super) enum StageCache {
    Res(Box<ResCache>, Option<Box<AttnCache>>),
    Down(Act),
    Up(Act),
}

/// A decoder ResBlock's skip: its index, the channels of `h` before the concatenation, the
/// skip's channels and the factor it was multiplied by.
#[derive(Debug, Clone, Copy)]
pub(super) struct SkipInfo {
    pub(super) j: usize,
    pub(super) hc: usize,
    pub(super) skip_c: usize,
    pub(super) factor: f32,
}

/// What [`GpuUNet::forward_train`] keeps for [`GpuUNet::backward`].
#[derive(Debug)]
pub struct GpuUNetCache {
    pub(super) batch: usize,
    /// The timestep embedding, t_mlp.0's output, silu of it, t_mlp.2's output, silu of it.
    pub(super) temb: T32,
    pub(super) z: T32,
    pub(super) sz: T32,
    pub(super) te: T32,
    pub(super) ste: T32,
    pub(super) x: Act,
    pub(super) down: Vec<StageCache>,
    pub(super) mid0: ResCache,
    pub(super) mid1: AttnCache,
    pub(super) mid2: ResCache,
    pub(super) up: Vec<(StageCache, Option<SkipInfo>)>,
    pub(super) out_norm: NormCache,
    /// The output convolution's input.
    pub(super) os: Act,
}

/// The gradients of a training step: the input's, and one per parameter of the CPU model.
#[derive(Debug)]
pub struct GpuUNetGrads {
    /// dL/dx, `[batch, in_ch, size, size]`.
    pub input: T32,
    /// dL/dp for every parameter, named and shaped as `UNet`'s `Parameters::visit`, in its order.
    pub params: Vec<(String, T32)>,
}

impl GpuUNetGrads {
    /// The gradient of the parameter `name`.
    pub fn get(&self, name: &str) -> Option<&T32> {
        self.params.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }
}

/// `acc += t`.
fn add_to(acc: &mut T32, t: &T32) -> Result<()> {
    acc.try_lincomb(1.0, &[(1.0, t)], None)
}

fn bad_cache(reason: String) -> CudaError {
    CudaError::InvalidArgument {
        name: "GpuUNet::backward cache",
        reason,
    }
}

impl GpuConv {
    /// Records `prefix.weight` (and `prefix.bias`) and returns dL/dx for the input `x`.
    fn backward(&self, x: &Act, dy: &T32, prefix: &str, parts: &mut Parts) -> Result<T32> {
        let g = self.geometry(x)?;
        let grads = conv2d_bwd(&x.t, &self.weight, dy, g, self.cout)?;
        parts.push(format!("{prefix}.weight"), grads.dweight);
        if self.bias.is_some() {
            parts.push(format!("{prefix}.bias"), grads.dbias);
        }
        Ok(grads.dx)
    }
}

impl GpuGroupNorm {
    /// Records `prefix.weight` and `prefix.bias` and returns dL/dx (through the SiLU first
    /// when the forward applied one).
    fn backward(&self, c: &NormCache, dy: &T32, prefix: &str, parts: &mut Parts) -> Result<T32> {
        let dnormed = if c.then_silu {
            let mut d = dy.zeros_like();
            silu_bwd(dy, &c.normed, &mut d)?;
            d
        } else {
            dy.clone()
        };
        let mut dx = c.x.t.zeros_like();
        let (mut dgamma, mut dbeta) = (self.gamma.zeros_like(), self.beta.zeros_like());
        group_norm_bwd(
            &dnormed,
            &c.x.t,
            self.shape(&c.x),
            Some(&self.gamma),
            &c.stats,
            &mut dx,
            &mut dgamma,
            &mut dbeta,
        )?;
        parts.push(format!("{prefix}.weight"), dgamma);
        parts.push(format!("{prefix}.bias"), dbeta);
        Ok(dx)
    }
}

impl GpuResBlock {
    /// `ResBlock::backward`: returns dL/dx and adds d(silu(temb)) into `dste`.
    fn backward(
        &self,
        c: &ResCache,
        dy: &T32,
        ste: &T32,
        dste: &mut T32,
        prefix: &str,
        parts: &mut Parts,
    ) -> Result<T32> {
        let dsb = self.c2.backward(&c.sb, dy, &format!("{prefix}.c2"), parts)?;
        let dh1 = self.n2.backward(&c.n2, &dsb, &format!("{prefix}.n2"), parts)?;
        // The time embedding was added to every position of a channel plane.
        let h1 = &c.n2.x;
        let mut dtp = T32::zeros(dy.gpu(), &[h1.n, h1.c]);
        channel_sums(&dh1, (1, h1.n * h1.c, h1.h * h1.w), &mut dtp)?;
        parts.linear(&format!("{prefix}.t"), self.t.param_grads(ste, &dtp, h1.n)?);
        add_to(dste, &self.t.input_grad(&dtp, h1.n)?)?;
        let dsa = self.c1.backward(&c.sa, &dh1, &format!("{prefix}.c1"), parts)?;
        let mut dx = self.n1.backward(&c.n1, &dsa, &format!("{prefix}.n1"), parts)?;
        match &self.skip {
            Some(s) => add_to(
                &mut dx,
                &s.backward(&c.n1.x, dy, &format!("{prefix}.skip"), parts)?,
            )?,
            None => add_to(&mut dx, dy)?,
        }
        Ok(dx)
    }
}

impl GpuAttnBlock {
    /// `AttnBlock::backward` (`x + MHA(GroupNorm(x))`): returns dL/dx.
    fn backward(&self, c: &AttnCache, dy: &T32, prefix: &str, parts: &mut Parts) -> Result<T32> {
        let x = &c.norm.x;
        let (n, ch, s) = (x.n, x.c, x.h * x.w);
        let (heads, rows) = (self.heads, n * s);
        let head_dims = (n, s, heads, ch / heads.max(1));
        let mut dproj = T32::zeros(dy.gpu(), &[rows, ch]);
        transpose(dy, (n, ch, s), &mut dproj)?;
        parts.linear(
            &format!("{prefix}.a.out_proj"),
            self.out_proj.param_grads(&c.merged, &dproj, rows)?,
        );
        let dmerged = self.out_proj.input_grad(&dproj, rows)?;
        let mut d_o = c.q.zeros_like();
        split_heads(&dmerged, head_dims, &mut d_o)?;
        let (mut dq, mut dk, mut dv) = (c.q.zeros_like(), c.k.zeros_like(), c.v.zeros_like());
        attention_bwd(
            &d_o,
            &c.q,
            &c.k,
            &c.v,
            &c.probs,
            n * heads,
            (s, s, head_dims.3),
            &mut dq,
            &mut dk,
            &mut dv,
        )?;
        // The q, k, v projections are row blocks of the CPU's packed in_proj, in that order.
        let mut dtokens = T32::zeros(dy.gpu(), &[rows, ch]);
        for (l, d) in [(&self.q, &dq), (&self.k, &dk), (&self.v, &dv)] {
            let mut dm = T32::zeros(dy.gpu(), &[rows, ch]);
            merge_heads(d, head_dims, &mut dm)?;
            parts.linear(
                &format!("{prefix}.a.in_proj"),
                l.param_grads(&c.tokens, &dm, rows)?,
            );
            add_to(&mut dtokens, &l.input_grad(&dm, rows)?)?;
        }
        let mut dnormed = x.t.zeros_like();
        transpose(&dtokens, (n, s, ch), &mut dnormed)?;
        let mut dx = self
            .norm
            .backward(&c.norm, &dnormed, &format!("{prefix}.n"), parts)?;
        add_to(&mut dx, dy)?;
        Ok(dx)
    }
}

impl GpuStage {
    /// `Stage::backward`: returns dL/dx of the stage's input.
    fn backward(
        &self,
        c: &StageCache,
        dy: &T32,
        ste: &T32,
        dste: &mut T32,
        prefix: &str,
        parts: &mut Parts,
    ) -> Result<T32> {
        match (self, c) {
            (Self::Res(r, a), StageCache::Res(rc, ac)) => {
                let dh = match (a, ac) {
                    (Some(a), Some(ac)) => a.backward(ac, dy, &format!("{prefix}.1"), parts)?,
                    (None, None) => dy.clone(),
                    _ => return Err(bad_cache(format!("{prefix}: attention and cache disagree"))),
                };
                r.backward(rc, &dh, ste, dste, &format!("{prefix}.0"), parts)
            }
            (Self::Down(conv), StageCache::Down(x)) => conv.backward(x, dy, &format!("{prefix}.0"), parts),
            (Self::Up(conv), StageCache::Up(u)) => {
                let du = conv.backward(u, dy, &format!("{prefix}.1"), parts)?;
                let (h, w) = (u.h / 2, u.w / 2);
                let mut dx = T32::zeros(dy.gpu(), &[u.n, u.c, h, w]);
                upsample2_bwd(&du, (u.n * u.c, h, w), &mut dx)?;
                Ok(dx)
            }
            _ => Err(bad_cache(format!(
                "{prefix}: the cache is of another kind of stage"
            ))),
        }
    }
}

impl GpuUNet {
    /// The gradients of a loss `L` for the forward pass `cache`, given `dy = dL/dy` for its
    /// output (`[batch, in_ch, size, size]`): the same computation as `Network::backward` of
    /// `diffusion-nn`'s UNet, gradients named as its `Parameters::visit`.
    pub fn backward(&self, cache: &GpuUNetCache, dy: &T32) -> Result<GpuUNetGrads> {
        self.check_trainable()?;
        let batch = cache.batch;
        let expected = [batch, self.in_ch, self.size, self.size];
        if dy.shape() != expected {
            return Err(CudaError::ShapeMismatch {
                context: "GpuUNet::backward dy [batch, in_ch, size, size]",
                expected: expected.to_vec(),
                got: dy.shape().to_vec(),
            });
        }
        if cache.down.len() != self.down.len() || cache.up.len() != self.up.len() {
            return Err(bad_cache(format!(
                "{} encoder and {} decoder stage caches for {} and {} stages (a cache of another model?)",
                cache.down.len(),
                cache.up.len(),
                self.down.len(),
                self.up.len()
            )));
        }
        let gpu = &self.gpu;
        let mut parts = Parts::default();
        let mut dste = T32::zeros(gpu, &[batch, self.temb]);
        let ste = &cache.ste;
        let dos = self.out_conv.backward(&cache.os, dy, "out.2", &mut parts)?;
        let mut dh = self
            .out_norm
            .backward(&cache.out_norm, &dos, "out.0", &mut parts)?;
        // The gradient reaching each skip tensor (encoder order), from its decoder ResBlock.
        let mut dskips: Vec<Option<T32>> = vec![None; self.down.len() + 1];
        for (i, (st, (sc, info))) in self.up.iter().zip(&cache.up).enumerate().rev() {
            let dcat = st.backward(sc, &dh, ste, &mut dste, &format!("up.{i}"), &mut parts)?;
            dh = match info {
                Some(k) => {
                    let (hh, hw) = match sc {
                        StageCache::Res(rc, _) => (rc.n1.x.h, rc.n1.x.w),
                        _ => return Err(bad_cache(format!("up.{i}: a skip into a non-ResBlock stage"))),
                    };
                    let slot = dskips
                        .get_mut(k.j)
                        .ok_or_else(|| bad_cache(format!("up.{i}: skip {} out of range", k.j)))?;
                    let mut dnh = T32::zeros(gpu, &[batch, k.hc, hh, hw]);
                    let mut dsk = T32::zeros(gpu, &[batch, k.skip_c, hh, hw]);
                    split_channels(
                        &dcat,
                        (batch, k.hc, k.skip_c, hh * hw),
                        k.factor,
                        &mut dnh,
                        &mut dsk,
                    )?;
                    *slot = Some(dsk);
                    dnh
                }
                None => dcat,
            };
        }
        dh = self
            .mid2
            .backward(&cache.mid2, &dh, ste, &mut dste, "mid.2", &mut parts)?;
        dh = self.mid1.backward(&cache.mid1, &dh, "mid.1", &mut parts)?;
        dh = self
            .mid0
            .backward(&cache.mid0, &dh, ste, &mut dste, "mid.0", &mut parts)?;
        for (i, (st, sc)) in self.down.iter().zip(&cache.down).enumerate().rev() {
            // Skip i + 1 is this stage's output.
            if let Some(ds) = &dskips[i + 1] {
                add_to(&mut dh, ds)?;
            }
            dh = st.backward(sc, &dh, ste, &mut dste, &format!("down.{i}"), &mut parts)?;
        }
        if let Some(ds) = &dskips[0] {
            add_to(&mut dh, ds)?;
        }
        let input = self.inp.backward(&cache.x, &dh, "inp", &mut parts)?;
        // The time MLP: ste = silu(t_mlp2(silu(t_mlp0(temb)))); temb has no gradient.
        let mut dte = dste.zeros_like();
        silu_bwd(&dste, &cache.te, &mut dte)?;
        parts.linear("t_mlp.2", self.t_mlp2.param_grads(&cache.sz, &dte, batch)?);
        let dsz = self.t_mlp2.input_grad(&dte, batch)?;
        let mut dz = dsz.zeros_like();
        silu_bwd(&dsz, &cache.z, &mut dz)?;
        parts.linear("t_mlp.0", self.t_mlp0.param_grads(&cache.temb, &dz, batch)?);
        let params = parts.assemble(gpu, &self.params, "GpuUNet::backward")?;
        Ok(GpuUNetGrads { input, params })
    }
}
