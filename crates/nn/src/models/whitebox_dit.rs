//! White-box DiT: the DiT skeleton (patch embedding, time/class conditioning, adaLN-Zero,
//! final adaLN + projection) with CRATE blocks (Yu et al. 2023) in place of the
//! transformer blocks. Each block is
//!
//! ```text
//! m = ada(silu(c))                          six [B, D] rows: shift1 scale1 gate1 shift2 scale2 gate2
//! h = h + gate1 * MSSA(LN(h) * (1 + scale1) + shift1)   subspace self-attention (compression)
//! h = h + gate2 * ISTA(LN(h) * (1 + scale2) + shift2)   one sparse-coding step (sparsification)
//! ```
//!
//! CRATE applies ISTA without a residual; here both steps are gated residual branches so
//! that adaLN-Zero's zero-initialised gates make every block start as the identity, as in
//! DiT.

use diffusion_core::Rng;
use ndarray::ArrayD;

use super::dit::{Dit, DitConfig, HeadCache, StemCache, zero};
use crate::error::{NnError, Result, check_shape};
use crate::kernels::array;
use crate::kernels::{add_into, std_slice};
use crate::layers::embed::{gate_add, gate_backward, modulate};
use crate::layers::linear::{backward_each, forward_each};
use crate::layers::norm::NormCache;
use crate::layers::{IstaBlock, IstaCache, LayerNorm, Linear, SubspaceAttention, SubspaceCache};
use crate::network::Network;
use crate::param::{Float, Param, Parameters, join_name, visit_child, visit_child_mut};

/// Sizes of a [`WhiteBoxDit`]; `Default` matches `dit-tiny`'s width and depth.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WhiteBoxDitConfig {
    pub in_ch: usize,
    pub size: usize,
    pub patch: usize,
    pub hidden: usize,
    pub depth: usize,
    /// Subspaces of the MSSA step, each `hidden / heads` wide.
    pub heads: usize,
    pub freq_dim: usize,
    /// Class-conditional with this many classes (0: unconditional).
    pub num_classes: usize,
    /// ISTA step size `eta` and sparsity weight `lambda`.
    pub ista_step: f64,
    pub ista_lambda: f64,
}

impl Default for WhiteBoxDitConfig {
    fn default() -> Self {
        Self {
            in_ch: 4,
            size: 16,
            patch: 2,
            hidden: 192,
            depth: 6,
            heads: 3,
            freq_dim: 256,
            num_classes: 0,
            ista_step: 0.1,
            ista_lambda: 0.1,
        }
    }
}

/// One CRATE block with adaLN-Zero modulation (`blocks.i`).
#[derive(Clone, Debug)]
pub struct CrateBlock<A> {
    norm: LayerNorm<A>,
    pub attn: SubspaceAttention<A>,
    pub ista: IstaBlock<A>,
    pub ada: Linear<A>,
}

#[derive(Clone, Debug)]
struct CrateBlockCache<A> {
    m: Vec<A>,
    n1c: NormCache<A>,
    attn: SubspaceCache<A>,
    a: Vec<A>,
    n2c: NormCache<A>,
    ista: IstaCache<A>,
    z: Vec<A>,
}

/// What [`WhiteBoxDit::forward`] keeps for the backward pass.
#[derive(Clone, Debug)]
pub struct WhiteBoxDitCache<A> {
    stem: StemCache<A>,
    blocks: Vec<CrateBlockCache<A>>,
    head: HeadCache<A>,
}

/// DiT with white-box CRATE blocks over `[in_ch, size, size]` images.
#[derive(Clone, Debug)]
pub struct WhiteBoxDit<A> {
    cfg: WhiteBoxDitConfig,
    /// The DiT stem and head (a DiT with no transformer blocks).
    skeleton: Dit<A>,
    pub blocks: Vec<CrateBlock<A>>,
}

impl<A: Float> WhiteBoxDit<A> {
    /// Builds the model; adaLN and output layers are zero-initialised (adaLN-Zero).
    pub fn new(cfg: WhiteBoxDitConfig, rng: &mut Rng) -> Result<Self> {
        if !(cfg.ista_step.is_finite() && cfg.ista_step > 0.0 && cfg.ista_lambda.is_finite())
            || cfg.ista_lambda < 0.0
        {
            return Err(NnError::Config {
                name: "WhiteBoxDitConfig",
                reason: format!(
                    "ISTA step {} must be positive and lambda {} non-negative",
                    cfg.ista_step, cfg.ista_lambda
                ),
            });
        }
        let skeleton = Dit::new(
            DitConfig {
                in_ch: cfg.in_ch,
                size: cfg.size,
                patch: cfg.patch,
                hidden: cfg.hidden,
                depth: 0,
                heads: cfg.heads,
                mlp_ratio: 1,
                freq_dim: cfg.freq_dim,
                num_classes: cfg.num_classes,
            },
            rng,
        )?;
        let d = cfg.hidden;
        let mut blocks = Vec::with_capacity(cfg.depth);
        for _ in 0..cfg.depth {
            let mut ada = Linear::new(d, 6 * d, true, rng);
            zero(&mut ada);
            blocks.push(CrateBlock {
                norm: LayerNorm::new(d, 1e-6, false),
                attn: SubspaceAttention::new(d, cfg.heads, d / cfg.heads, rng)?,
                ista: IstaBlock::new(d, cfg.ista_step, cfg.ista_lambda, rng),
                ada,
            });
        }
        Ok(Self {
            cfg,
            skeleton,
            blocks,
        })
    }

    pub fn config(&self) -> WhiteBoxDitConfig {
        self.cfg
    }

    fn run(&self, x: &ArrayD<A>, t: &[A], cond: Option<&[usize]>) -> Result<(Vec<A>, WhiteBoxDitCache<A>)> {
        let (d, tok) = (self.cfg.hidden, self.skeleton.tokens());
        let (mut h, stem) = self.skeleton.stem(x, t, cond)?;
        let (batch, sc) = (stem.batch, &stem.sc);
        let shape = [batch, tok, d];
        let mut caches = Vec::with_capacity(self.blocks.len());
        let ada: Vec<&Linear<A>> = self.blocks.iter().map(|b| &b.ada).collect();
        for (blk, m) in self.blocks.iter().zip(forward_each(&ada, sc, batch)) {
            let n1c = blk.norm.normalize(&h);
            let u = modulate(n1c.xhat(), &m, 6 * d, 0, d, tok, d);
            let (a, attn) = blk.attn.forward(&array(&shape, u))?;
            let a = std_slice(&a).into_owned();
            gate_add(&mut h, &a, &m, 6 * d, 2 * d, tok, d);
            let n2c = blk.norm.normalize(&h);
            let v = modulate(n2c.xhat(), &m, 6 * d, 3 * d, 4 * d, tok, d);
            let (z, ista) = blk.ista.forward(&array(&shape, v))?;
            let z = std_slice(&z).into_owned();
            gate_add(&mut h, &z, &m, 6 * d, 5 * d, tok, d);
            caches.push(CrateBlockCache {
                m,
                n1c,
                attn,
                a,
                n2c,
                ista,
                z,
            });
        }
        let (o, head) = self.skeleton.head(&h, sc, batch);
        Ok((
            o,
            WhiteBoxDitCache {
                stem,
                blocks: caches,
                head,
            },
        ))
    }
}

impl<A: Float> Network<A> for WhiteBoxDit<A> {
    type Cache = WhiteBoxDitCache<A>;

    fn forward(
        &self,
        x: &ArrayD<A>,
        t: &[A],
        cond: Option<&[usize]>,
    ) -> Result<(ArrayD<A>, WhiteBoxDitCache<A>)> {
        let (o, cache) = self.run(x, t, cond)?;
        Ok((self.skeleton.unpatch(o, cache.stem.batch)?, cache))
    }

    fn backward(&mut self, cache: &WhiteBoxDitCache<A>, dy: &ArrayD<A>) -> Result<ArrayD<A>> {
        check_shape("WhiteBoxDit backward dy", &self.batch_shape(cache), dy.shape())?;
        let batch = cache.stem.batch;
        let (d, tok) = (self.cfg.hidden, self.skeleton.tokens());
        let shape = [batch, tok, d];
        let sc = &cache.stem.sc;
        let (mut dh, mut dsc) = self.skeleton.head_backward(&cache.head, sc, dy, batch)?;
        let mut dms = Vec::with_capacity(self.blocks.len());
        for (blk, bc) in self.blocks.iter_mut().zip(&cache.blocks).rev() {
            let mut dm = vec![A::zero(); batch * 6 * d];
            let (dz, _) = gate_backward(&dh, &bc.z, &bc.m, &mut dm, 6 * d, 5 * d, tok, d);
            let dv = blk.ista.backward(&bc.ista, &array(&shape, dz))?;
            let modulation = (&bc.m[..], &mut dm[..], 6 * d);
            let (da, _) = blk.norm.modulated_backward_add(
                &bc.n2c,
                &std_slice(&dv),
                modulation,
                (3 * d, 4 * d),
                tok,
                &mut dh,
                Some((&bc.a, 2 * d)),
            );
            let du = blk.attn.backward(&bc.attn, &array(&shape, da))?;
            let modulation = (&bc.m[..], &mut dm[..], 6 * d);
            blk.norm
                .modulated_backward_add(&bc.n1c, &std_slice(&du), modulation, (0, d), tok, &mut dh, None);
            dms.push(dm);
        }
        dms.reverse();
        let mut ada: Vec<&mut Linear<A>> = self.blocks.iter_mut().map(|b| &mut b.ada).collect();
        add_into(&mut dsc, &backward_each(&mut ada, sc, &dms, batch));
        self.skeleton.stem_backward(&cache.stem, &dh, &dsc)
    }

    fn input_shape(&self) -> Vec<usize> {
        vec![self.cfg.in_ch, self.cfg.size, self.cfg.size]
    }
}

impl<A: Float> WhiteBoxDit<A> {
    fn batch_shape(&self, cache: &WhiteBoxDitCache<A>) -> Vec<usize> {
        let mut s = vec![cache.stem.batch];
        s.extend(self.input_shape());
        s
    }
}

impl<A> Parameters<A> for WhiteBoxDit<A> {
    fn visit(&self, f: &mut dyn FnMut(&str, &Param<A>)) {
        self.skeleton.visit_stem(f);
        for (i, b) in self.blocks.iter().enumerate() {
            let p = format!("blocks.{i}");
            visit_child(&join_name(&p, "attn"), &b.attn, f);
            visit_child(&join_name(&p, "ista"), &b.ista, f);
            visit_child(&join_name(&p, "ada.1"), &b.ada, f);
        }
        self.skeleton.visit_head(f);
    }
    fn visit_mut(&mut self, f: &mut dyn FnMut(&str, &mut Param<A>)) {
        self.skeleton.visit_stem_mut(f);
        for (i, b) in self.blocks.iter_mut().enumerate() {
            let p = format!("blocks.{i}");
            visit_child_mut(&join_name(&p, "attn"), &mut b.attn, f);
            visit_child_mut(&join_name(&p, "ista"), &mut b.ista, f);
            visit_child_mut(&join_name(&p, "ada.1"), &mut b.ada, f);
        }
        self.skeleton.visit_head_mut(f);
    }
    fn visit_buffers(&self, f: &mut dyn FnMut(&str, &ArrayD<A>)) {
        self.skeleton.visit_buffers(f);
    }
    fn visit_buffers_mut(&mut self, f: &mut dyn FnMut(&str, &mut ArrayD<A>)) {
        self.skeleton.visit_buffers_mut(f);
    }
}
