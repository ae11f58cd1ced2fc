//! UNet (reference `unet-small`), generic over 1, 2 or 3 spatial axes: ResBlocks with time
//! embedding, multi-head attention at low resolution, long concatenation skips with
//! optional ScaleLong scaling (constant or learnable) and Skip-Tuning at inference.

use diffusion_core::Rng;
use ndarray::ArrayD;
use rayon::prelude::*;

use crate::error::{NnError, Result, check_shape};
use crate::kernels::{add_into, array, par_add_into, std_slice};
use crate::layers::activation::{silu_backward_slice, silu_slice};
use crate::layers::attention::AttentionCache;
use crate::layers::norm::GroupStats;
use crate::layers::norm::{NormCache, plane_sum};
use crate::layers::{Conv, GroupNorm, Linear, MultiheadAttention, Upsample, timestep_embedding};
use crate::network::{Network, check_input};
use crate::param::{Float, Param, Parameters, visit_child, visit_child_mut};

/// How long skip connections are scaled before concatenation.
#[derive(Clone, Debug, PartialEq)]
pub enum SkipScaling {
    /// Plain concatenation (the reference model).
    None,
    /// ScaleLong "CS": skip `j` (0-based, in the order the encoder produces them) is
    /// multiplied by `kappa^(j+1)`.
    Constant(f64),
    /// ScaleLong "LS"-style: one learnable scalar per skip (parameter `skip_scales`),
    /// initialised to `kappa^(j+1)`.
    Learnable(f64),
}

/// Sizes of a [`UNet`]; `Default` is the reference `unet-small` (6,472,195 parameters).
#[derive(Clone, Debug, PartialEq)]
pub struct UNetConfig {
    pub in_ch: usize,
    pub size: usize,
    /// Number of spatial axes (1, 2 or 3).
    pub dims: usize,
    pub base: usize,
    pub mults: Vec<usize>,
    pub nres: usize,
    pub temb: usize,
    /// Levels (indices into `mults`) with attention; the middle block always has it.
    pub attn_levels: Vec<usize>,
    pub heads: usize,
    pub groups: usize,
    pub skip_scaling: SkipScaling,
}

impl Default for UNetConfig {
    fn default() -> Self {
        Self {
            in_ch: 3,
            size: 32,
            dims: 2,
            base: 64,
            mults: vec![1, 2, 2],
            nres: 2,
            temb: 256,
            attn_levels: vec![2],
            heads: 4,
            groups: 32,
            skip_scaling: SkipScaling::None,
        }
    }
}

/// An activation with its shape.
#[derive(Clone, Debug)]
struct Act<A> {
    d: Vec<A>,
    s: Vec<usize>,
}

impl<A> Act<A> {
    fn spatial(&self) -> usize {
        self.s[2..].iter().product()
    }
}

/// `GroupNorm -> SiLU -> Conv -> (+ Linear(silu(temb))) -> GroupNorm -> SiLU -> Conv`, plus skip.
#[derive(Clone, Debug)]
pub struct ResBlock<A> {
    pub n1: GroupNorm<A>,
    pub c1: Conv<A>,
    pub t: Linear<A>,
    pub n2: GroupNorm<A>,
    pub c2: Conv<A>,
    pub skip: Option<Conv<A>>,
}

/// The norm + SiLU activations are not stored: the convolutions apply them as they read
/// `x` and `h1`, forward and backward.
#[derive(Clone, Debug)]
struct ResCache<A> {
    /// The block input and its first norm's statistics.
    x: Act<A>,
    st1: GroupStats,
    /// The second norm's input (first convolution + time embedding; empty in inference)
    /// and its statistics.
    h1: Act<A>,
    st2: GroupStats,
}

impl<A: Float> ResBlock<A> {
    fn new(dims: usize, cin: usize, cout: usize, temb: usize, groups: usize, rng: &mut Rng) -> Result<Self> {
        Ok(Self {
            n1: GroupNorm::new(groups, cin, 1e-5)?,
            c1: Conv::square(dims, cin, cout, 3, 1, 1, rng)?,
            t: Linear::new(temb, cout, true, rng),
            n2: GroupNorm::new(groups, cout, 1e-5)?,
            c2: Conv::square(dims, cout, cout, 3, 1, 1, rng)?,
            skip: if cin != cout {
                Some(Conv::square(dims, cin, cout, 1, 1, 0, rng)?)
            } else {
                None
            },
        })
    }

    /// With `keep = false` (inference) the second convolution's input is not stored.
    fn forward(&self, x: Act<A>, ste: &[A], keep: bool) -> Result<(Act<A>, ResCache<A>)> {
        let sp = x.spatial();
        let batch = x.s[0];
        let st1 = self.n1.stats(&x.d, sp);
        let (mut h1, s1) = self
            .c1
            .forward_mapped(&x.d, &x.s, Some(&self.n1.silu_map(&st1)))?;
        let tp = self.t.forward_slice(ste, batch);
        let cout = self.c1.out_channels();
        h1.par_chunks_mut(sp.max(1)).zip(&tp).for_each(|(plane, &v)| {
            plane.iter_mut().for_each(|p| *p = *p + v);
        });
        let st2 = self.n2.stats(&h1, sp);
        let (mut y, ys) = self.c2.forward_mapped(&h1, &s1, Some(&self.n2.silu_map(&st2)))?;
        match &self.skip {
            Some(sk) => par_add_into(&mut y, &sk.forward_slice(&x.d, &x.s)?.0),
            None => par_add_into(&mut y, &x.d),
        }
        debug_assert_eq!(tp.len(), batch * cout);
        let h1 = Act {
            d: if keep { h1 } else { Vec::new() },
            s: s1,
        };
        Ok((Act { d: y, s: ys }, ResCache { x, st1, h1, st2 }))
    }

    /// Returns dx; adds d(silu(temb)) into `dste`.
    fn backward(&mut self, c: &ResCache<A>, dy: &[A], ste: &[A], dste: &mut [A]) -> Result<Vec<A>> {
        let sp = c.x.spatial();
        let batch = c.x.s[0];
        let dsb = {
            let map = self.n2.silu_map(&c.st2);
            self.c2.backward_mapped(&c.h1.d, &c.h1.s, Some(&map), dy, true)?
        };
        let dh1 = self.n2.backward_silu(&c.h1.d, &c.st2, &dsb, sp);
        let dtp: Vec<A> = dh1.par_chunks(sp.max(1)).map(plane_sum).collect();
        add_into(dste, &self.t.backward_slice(ste, &dtp, batch, true));
        let dsa = {
            let map = self.n1.silu_map(&c.st1);
            self.c1.backward_mapped(&c.x.d, &c.x.s, Some(&map), &dh1, true)?
        };
        let mut dx = self.n1.backward_silu(&c.x.d, &c.st1, &dsa, sp);
        match &mut self.skip {
            Some(sk) => par_add_into(&mut dx, &sk.backward_slice(&c.x.d, &c.x.s, dy, true)?),
            None => par_add_into(&mut dx, dy),
        }
        Ok(dx)
    }
}

impl<A> Parameters<A> for ResBlock<A> {
    fn visit(&self, f: &mut dyn FnMut(&str, &Param<A>)) {
        visit_child("n1", &self.n1, f);
        visit_child("c1", &self.c1, f);
        visit_child("t", &self.t, f);
        visit_child("n2", &self.n2, f);
        visit_child("c2", &self.c2, f);
        if let Some(s) = &self.skip {
            visit_child("skip", s, f);
        }
    }
    fn visit_mut(&mut self, f: &mut dyn FnMut(&str, &mut Param<A>)) {
        visit_child_mut("n1", &mut self.n1, f);
        visit_child_mut("c1", &mut self.c1, f);
        visit_child_mut("t", &mut self.t, f);
        visit_child_mut("n2", &mut self.n2, f);
        visit_child_mut("c2", &mut self.c2, f);
        if let Some(s) = &mut self.skip {
            visit_child_mut("skip", s, f);
        }
    }
}

/// `x + MHA(GroupNorm(x))` over the flattened spatial positions.
#[derive(Clone, Debug)]
pub struct AttnBlock<A> {
    pub n: GroupNorm<A>,
    pub a: MultiheadAttention<A>,
}

#[derive(Clone, Debug)]
struct AttnBlockCache<A> {
    nc: NormCache<A>,
    ac: AttentionCache<A>,
}

/// `[B, C, S]` <-> `[B, S, C]`.
fn transpose_cs<A: Float>(x: &[A], batch: usize, rows: usize, cols: usize) -> Vec<A> {
    let mut y = vec![A::zero(); x.len()];
    for b in 0..batch {
        let (xb, yb) = (
            &x[b * rows * cols..(b + 1) * rows * cols],
            &mut y[b * rows * cols..(b + 1) * rows * cols],
        );
        for r in 0..rows {
            for c in 0..cols {
                yb[c * rows + r] = xb[r * cols + c];
            }
        }
    }
    y
}

impl<A: Float> AttnBlock<A> {
    fn forward(&self, x: Act<A>) -> (Act<A>, AttnBlockCache<A>) {
        let (b, c, sp) = (x.s[0], x.s[1], x.spatial());
        let (n, nc) = self.n.forward_slice(&x.d, sp);
        let (h, ac) = self.a.forward_slice(transpose_cs(&n, b, c, sp), b, sp, None);
        let mut y = transpose_cs(&h, b, sp, c);
        par_add_into(&mut y, &x.d);
        (Act { d: y, s: x.s }, AttnBlockCache { nc, ac })
    }

    fn backward(&mut self, c: &AttnBlockCache<A>, shape: &[usize], dy: &[A]) -> Vec<A> {
        let (b, ch, sp) = (shape[0], shape[1], shape[2..].iter().product());
        let (dh, _) = self.a.backward_slice(&c.ac, &transpose_cs(dy, b, ch, sp), None);
        let dn = transpose_cs(&dh, b, sp, ch);
        let mut dx = self.n.backward_slice(&c.nc, &dn, sp);
        par_add_into(&mut dx, dy);
        dx
    }
}

impl<A> Parameters<A> for AttnBlock<A> {
    fn visit(&self, f: &mut dyn FnMut(&str, &Param<A>)) {
        visit_child("n", &self.n, f);
        visit_child("a", &self.a, f);
    }
    fn visit_mut(&mut self, f: &mut dyn FnMut(&str, &mut Param<A>)) {
        visit_child_mut("n", &mut self.n, f);
        visit_child_mut("a", &mut self.a, f);
    }
}

/// One entry of the encoder or decoder list (`down.i` / `up.i`).
#[derive(Clone, Debug)]
pub enum Stage<A> {
    /// `i.0`: ResBlock, `i.1`: optional attention.
    Res(Box<ResBlock<A>>, Option<Box<AttnBlock<A>>>),
    /// `i.0`: stride-2 convolution.
    Down(Conv<A>),
    /// nearest x2 upsample, then `i.1`: convolution.
    Up(Conv<A>),
}

#[derive(Clone, Debug)]
enum StageCache<A> {
    Res(Box<ResCache<A>>, Option<Box<(AttnBlockCache<A>, Vec<usize>)>>),
    Conv(Act<A>),
    Up(Vec<usize>, Act<A>),
}

impl<A: Float> Stage<A> {
    fn forward(&self, x: Act<A>, ste: &[A], keep: bool) -> Result<(Act<A>, StageCache<A>)> {
        match self {
            Stage::Res(r, attn) => {
                let (h, rc) = r.forward(x, ste, keep)?;
                match attn {
                    Some(a) => {
                        let s = h.s.clone();
                        let (h, ac) = a.forward(h);
                        Ok((h, StageCache::Res(Box::new(rc), Some(Box::new((ac, s))))))
                    }
                    None => Ok((h, StageCache::Res(Box::new(rc), None))),
                }
            }
            Stage::Down(c) => {
                let (y, s) = c.forward_slice(&x.d, &x.s)?;
                Ok((Act { d: y, s }, StageCache::Conv(x)))
            }
            Stage::Up(c) => {
                let (u, us) = Upsample { factor: 2 }.forward_slice(&x.d, &x.s)?;
                let (y, s) = c.forward_slice(&u, &us)?;
                Ok((Act { d: y, s }, StageCache::Up(x.s, Act { d: u, s: us })))
            }
        }
    }

    fn backward(&mut self, cache: &StageCache<A>, dy: Vec<A>, ste: &[A], dste: &mut [A]) -> Result<Vec<A>> {
        match (self, cache) {
            (Stage::Res(r, attn), StageCache::Res(rc, ac)) => {
                let dy = match (attn, ac) {
                    (Some(a), Some(cache)) => a.backward(&cache.0, &cache.1, &dy),
                    _ => dy,
                };
                r.backward(rc, &dy, ste, dste)
            }
            (Stage::Down(c), StageCache::Conv(x)) => c.backward_slice(&x.d, &x.s, &dy, true),
            (Stage::Up(c), StageCache::Up(in_shape, u)) => {
                let du = c.backward_slice(&u.d, &u.s, &dy, true)?;
                Upsample { factor: 2 }.backward_slice(&du, in_shape)
            }
            _ => unreachable!("a stage's cache is always produced by the same stage"),
        }
    }
}

impl<A> Parameters<A> for Stage<A> {
    fn visit(&self, f: &mut dyn FnMut(&str, &Param<A>)) {
        match self {
            Stage::Res(r, a) => {
                visit_child("0", r, f);
                if let Some(a) = a {
                    visit_child("1", a, f);
                }
            }
            Stage::Down(c) => visit_child("0", c, f),
            Stage::Up(c) => visit_child("1", c, f),
        }
    }
    fn visit_mut(&mut self, f: &mut dyn FnMut(&str, &mut Param<A>)) {
        match self {
            Stage::Res(r, a) => {
                visit_child_mut("0", r, f);
                if let Some(a) = a {
                    visit_child_mut("1", a, f);
                }
            }
            Stage::Down(c) => visit_child_mut("0", c, f),
            Stage::Up(c) => visit_child_mut("1", c, f),
        }
    }
}

/// The UNet.
#[derive(Clone, Debug)]
pub struct UNet<A> {
    cfg: UNetConfig,
    pub t_mlp0: Linear<A>,
    pub t_mlp2: Linear<A>,
    pub inp: Conv<A>,
    pub down: Vec<Stage<A>>,
    pub mid0: ResBlock<A>,
    pub mid1: AttnBlock<A>,
    pub mid2: ResBlock<A>,
    pub up: Vec<Stage<A>>,
    pub out_norm: GroupNorm<A>,
    pub out_conv: Conv<A>,
    /// Learnable skip scales (only with [`SkipScaling::Learnable`]).
    pub skip_scales: Option<Param<A>>,
    /// Skip-Tuning: extra factors applied to the skips at inference only ([`Network::infer`]),
    /// indexed like the skips (encoder order). `None` = 1.
    pub inference_skip_scales: Option<Vec<f64>>,
    n_skips: usize,
}

/// (skip index, channels of `h` before concatenation) of a decoder ResBlock.
type SkipInfo = (usize, usize);

/// What [`UNet::forward`] keeps for the backward pass.
#[derive(Clone, Debug)]
pub struct UNetCache<A> {
    batch: usize,
    x_shape: Vec<usize>,
    temb: Vec<A>,
    z: Vec<A>,
    s: Vec<A>,
    te: Vec<A>,
    ste: Vec<A>,
    x: Act<A>,
    skips: Vec<Act<A>>,
    down: Vec<StageCache<A>>,
    mid0: ResCache<A>,
    mid1: (AttnBlockCache<A>, Vec<usize>),
    mid2: ResCache<A>,
    /// For each decoder ResBlock: (skip index, channels of `h` before concatenation).
    up: Vec<(StageCache<A>, Option<SkipInfo>)>,
    /// The output norm's input and statistics.
    out_in: Act<A>,
    out_stats: GroupStats,
}

impl<A: Float> UNet<A> {
    pub fn new(cfg: UNetConfig, rng: &mut Rng) -> Result<Self> {
        if !(1..=3).contains(&cfg.dims) || cfg.mults.is_empty() || !cfg.base.is_multiple_of(2) {
            return Err(NnError::Config {
                name: "UNetConfig",
                reason: format!("{cfg:?}: dims must be 1 to 3, mults non-empty, base even"),
            });
        }
        let down_factor = 1usize << (cfg.mults.len() - 1);
        if !cfg.size.is_multiple_of(down_factor) {
            return Err(NnError::Config {
                name: "UNetConfig size",
                reason: format!("size {} is not divisible by {down_factor}", cfg.size),
            });
        }
        let (dims, base, temb, g) = (cfg.dims, cfg.base, cfg.temb, cfg.groups);
        let attn = |ch: usize, rng: &mut Rng| -> Result<AttnBlock<A>> {
            Ok(AttnBlock {
                n: GroupNorm::new(g, ch, 1e-5)?,
                a: MultiheadAttention::new(ch, cfg.heads, rng)?,
            })
        };
        let t_mlp0 = Linear::new(base, temb, true, rng);
        let t_mlp2 = Linear::new(temb, temb, true, rng);
        let inp = Conv::square(dims, cfg.in_ch, base, 3, 1, 1, rng)?;
        let mut chs = vec![base];
        let mut ch = base;
        let mut down = Vec::new();
        let last = cfg.mults.len() - 1;
        for (i, &m) in cfg.mults.iter().enumerate() {
            for _ in 0..cfg.nres {
                let r = ResBlock::new(dims, ch, base * m, temb, g, rng)?;
                let a = if cfg.attn_levels.contains(&i) {
                    Some(attn(base * m, rng)?)
                } else {
                    None
                };
                down.push(Stage::Res(Box::new(r), a.map(Box::new)));
                ch = base * m;
                chs.push(ch);
            }
            if i != last {
                down.push(Stage::Down(Conv::square(dims, ch, ch, 3, 2, 1, rng)?));
                chs.push(ch);
            }
        }
        let n_skips = chs.len();
        let mid0 = ResBlock::new(dims, ch, ch, temb, g, rng)?;
        let mid1 = attn(ch, rng)?;
        let mid2 = ResBlock::new(dims, ch, ch, temb, g, rng)?;
        let mut up = Vec::new();
        for (i, &m) in cfg.mults.iter().enumerate().rev() {
            for _ in 0..=cfg.nres {
                let skip_ch = chs.pop().expect("one skip per decoder ResBlock");
                let r = ResBlock::new(dims, ch + skip_ch, base * m, temb, g, rng)?;
                let a = if cfg.attn_levels.contains(&i) {
                    Some(attn(base * m, rng)?)
                } else {
                    None
                };
                up.push(Stage::Res(Box::new(r), a.map(Box::new)));
                ch = base * m;
            }
            if i != 0 {
                up.push(Stage::Up(Conv::square(dims, ch, ch, 3, 1, 1, rng)?));
            }
        }
        let skip_scales = match cfg.skip_scaling {
            SkipScaling::Learnable(k) => Some(Param::new(array(
                &[n_skips],
                (0..n_skips).map(|j| A::of_f64(k.powi(j as i32 + 1))).collect(),
            ))),
            _ => None,
        };
        Ok(Self {
            out_norm: GroupNorm::new(g, ch, 1e-5)?,
            out_conv: Conv::square(dims, ch, cfg.in_ch, 3, 1, 1, rng)?,
            cfg,
            t_mlp0,
            t_mlp2,
            inp,
            down,
            mid0,
            mid1,
            mid2,
            up,
            skip_scales,
            inference_skip_scales: None,
            n_skips,
        })
    }

    pub fn config(&self) -> &UNetConfig {
        &self.cfg
    }

    /// Number of long skip connections.
    pub fn num_skips(&self) -> usize {
        self.n_skips
    }

    /// The factor skip `j` is multiplied by before concatenation: its training-time scale,
    /// times the Skip-Tuning factor at `inference`.
    pub fn skip_factor(&self, j: usize, inference: bool) -> A {
        let factor = self.skip_scale(j);
        match (&self.inference_skip_scales, inference) {
            (Some(extra), true) => factor * A::of_f64(extra.get(j).copied().unwrap_or(1.0)),
            _ => factor,
        }
    }

    /// The training-time scale of skip `j`.
    fn skip_scale(&self, j: usize) -> A {
        match (&self.cfg.skip_scaling, &self.skip_scales) {
            (_, Some(p)) => p.v()[j],
            (SkipScaling::Constant(k), _) => A::of_f64(k.powi(j as i32 + 1)),
            _ => A::one(),
        }
    }

    fn run(&self, x: &ArrayD<A>, t: &[A], inference: bool) -> Result<(Vec<A>, UNetCache<A>)> {
        let cfg = &self.cfg;
        let mut item = vec![cfg.in_ch];
        item.extend(std::iter::repeat_n(cfg.size, cfg.dims));
        let batch = check_input(x, &item, t, "UNet input")?;
        let temb = std_slice(&timestep_embedding(t, cfg.base, 10000.0)).into_owned();
        let z = self.t_mlp0.forward_slice(&temb, batch);
        let s = silu_slice(&z);
        let te = self.t_mlp2.forward_slice(&s, batch);
        let ste = silu_slice(&te);
        let xa = Act {
            d: std_slice(x).into_owned(),
            s: x.shape().to_vec(),
        };
        let (h0, s0) = self.inp.forward_slice(&xa.d, &xa.s)?;
        let mut h = Act { d: h0, s: s0 };
        let mut skips = vec![h.clone()];
        let mut down = Vec::with_capacity(self.down.len());
        for st in &self.down {
            let (nh, c) = st.forward(h, &ste, !inference)?;
            h = nh;
            skips.push(h.clone());
            down.push(c);
        }
        let (h1, mid0) = self.mid0.forward(h, &ste, !inference)?;
        let ms = h1.s.clone();
        let (h2, mc) = self.mid1.forward(h1);
        let (mut h, mid2) = self.mid2.forward(h2, &ste, !inference)?;
        let mut up = Vec::with_capacity(self.up.len());
        let mut next_skip = skips.len();
        for st in &self.up {
            match st {
                Stage::Res(..) => {
                    next_skip -= 1;
                    let sk = &skips[next_skip];
                    let factor = self.skip_factor(next_skip, inference);
                    let (hc, sc) = (h.s[1], sk.s[1]);
                    let sp = h.spatial();
                    let mut cat = Vec::with_capacity(h.d.len() + sk.d.len());
                    for b in 0..batch {
                        cat.extend_from_slice(&h.d[b * hc * sp..(b + 1) * hc * sp]);
                        cat.extend(sk.d[b * sc * sp..(b + 1) * sc * sp].iter().map(|&v| v * factor));
                    }
                    let mut shape = h.s.clone();
                    shape[1] = hc + sc;
                    let (nh, c) = st.forward(Act { d: cat, s: shape }, &ste, !inference)?;
                    h = nh;
                    up.push((c, Some((next_skip, hc))));
                }
                _ => {
                    let (nh, c) = st.forward(h, &ste, !inference)?;
                    h = nh;
                    up.push((c, None));
                }
            }
        }
        let sp = h.spatial();
        let out_stats = self.out_norm.stats(&h.d, sp);
        let (y, _) = self
            .out_conv
            .forward_mapped(&h.d, &h.s, Some(&self.out_norm.silu_map(&out_stats)))?;
        if inference {
            // Only the output is needed; skip building a large cache.
            skips.clear();
        }
        Ok((
            y,
            UNetCache {
                batch,
                x_shape: x.shape().to_vec(),
                temb,
                z,
                s,
                te,
                ste,
                x: xa,
                skips,
                down,
                mid0,
                mid1: (mc, ms),
                mid2,
                up,
                out_in: h,
                out_stats,
            },
        ))
    }
}

impl<A: Float> Network<A> for UNet<A> {
    type Cache = UNetCache<A>;

    fn forward(&self, x: &ArrayD<A>, t: &[A], _cond: Option<&[usize]>) -> Result<(ArrayD<A>, UNetCache<A>)> {
        let (y, c) = self.run(x, t, false)?;
        Ok((array(x.shape(), y), c))
    }

    fn infer(&self, x: &ArrayD<A>, t: &[A], _cond: Option<&[usize]>) -> Result<ArrayD<A>> {
        let (y, _) = self.run(x, t, true)?;
        Ok(array(x.shape(), y))
    }

    fn backward(&mut self, c: &UNetCache<A>, dy: &ArrayD<A>) -> Result<ArrayD<A>> {
        check_shape("UNet backward dy", &c.x_shape, dy.shape())?;
        let batch = c.batch;
        let mut dste = vec![A::zero(); c.ste.len()];
        let (h, sp) = (&c.out_in, c.out_in.spatial());
        let dos = {
            let map = self.out_norm.silu_map(&c.out_stats);
            self.out_conv
                .backward_mapped(&h.d, &h.s, Some(&map), &std_slice(dy), true)?
        };
        let mut dh = self.out_norm.backward_silu(&h.d, &c.out_stats, &dos, sp);
        // Gradients flowing into each skip tensor.
        let mut dskips: Vec<Option<Vec<A>>> = vec![None; c.skips.len()];
        let mut dscale = vec![A::zero(); c.skips.len()];
        let factors: Vec<A> = (0..c.skips.len()).map(|k| self.skip_scale(k)).collect();
        for (st, (sc, info)) in self.up.iter_mut().zip(&c.up).rev() {
            let dcat = st.backward(sc, dh, &c.ste, &mut dste)?;
            match info {
                Some((k, hc)) => {
                    let sk = &c.skips[*k];
                    let (hc, skc, sp) = (*hc, sk.s[1], sk.spatial());
                    let factor = factors[*k];
                    let mut dnh = Vec::with_capacity(batch * hc * sp);
                    let mut dsk = Vec::with_capacity(batch * skc * sp);
                    let mut ds = A::zero();
                    let w = (hc + skc) * sp;
                    for b in 0..batch {
                        dnh.extend_from_slice(&dcat[b * w..b * w + hc * sp]);
                        let part = &dcat[b * w + hc * sp..(b + 1) * w];
                        let raw = &sk.d[b * skc * sp..(b + 1) * skc * sp];
                        ds = ds + part.iter().zip(raw).map(|(&g, &v)| g * v).sum::<A>();
                        dsk.extend(part.iter().map(|&g| g * factor));
                    }
                    dscale[*k] = dscale[*k] + ds;
                    dskips[*k] = Some(dsk);
                    dh = dnh;
                }
                None => dh = dcat,
            }
        }
        if let Some(p) = &mut self.skip_scales {
            add_into(p.g(), &dscale);
        }
        let ns = c.skips.len();
        dh = self.mid2.backward(&c.mid2, &dh, &c.ste, &mut dste)?;
        dh = self.mid1.backward(&c.mid1.0, &c.mid1.1, &dh);
        dh = self.mid0.backward(&c.mid0, &dh, &c.ste, &mut dste)?;
        for (i, (st, sc)) in self.down.iter_mut().zip(&c.down).enumerate().rev() {
            if let Some(ds) = &dskips[i + 1] {
                par_add_into(&mut dh, ds);
            }
            dh = st.backward(sc, dh, &c.ste, &mut dste)?;
        }
        if let Some(ds) = &dskips[0] {
            par_add_into(&mut dh, ds);
        }
        debug_assert_eq!(ns, self.down.len() + 1);
        let dx = self.inp.backward_slice(&c.x.d, &c.x.s, &dh, true)?;
        let dte = silu_backward_slice(&c.te, &dste);
        let ds = self.t_mlp2.backward_slice(&c.s, &dte, batch, true);
        let dz = silu_backward_slice(&c.z, &ds);
        self.t_mlp0.backward_slice(&c.temb, &dz, batch, false);
        Ok(array(&c.x_shape, dx))
    }

    fn input_shape(&self) -> Vec<usize> {
        let mut s = vec![self.cfg.in_ch];
        s.extend(std::iter::repeat_n(self.cfg.size, self.cfg.dims));
        s
    }
}

impl<A> Parameters<A> for UNet<A> {
    fn visit(&self, f: &mut dyn FnMut(&str, &Param<A>)) {
        visit_child("t_mlp.0", &self.t_mlp0, f);
        visit_child("t_mlp.2", &self.t_mlp2, f);
        visit_child("inp", &self.inp, f);
        for (i, s) in self.down.iter().enumerate() {
            visit_child(&format!("down.{i}"), s, f);
        }
        visit_child("mid.0", &self.mid0, f);
        visit_child("mid.1", &self.mid1, f);
        visit_child("mid.2", &self.mid2, f);
        for (i, s) in self.up.iter().enumerate() {
            visit_child(&format!("up.{i}"), s, f);
        }
        visit_child("out.0", &self.out_norm, f);
        visit_child("out.2", &self.out_conv, f);
        if let Some(p) = &self.skip_scales {
            f("skip_scales", p);
        }
    }
    fn visit_mut(&mut self, f: &mut dyn FnMut(&str, &mut Param<A>)) {
        visit_child_mut("t_mlp.0", &mut self.t_mlp0, f);
        visit_child_mut("t_mlp.2", &mut self.t_mlp2, f);
        visit_child_mut("inp", &mut self.inp, f);
        for (i, s) in self.down.iter_mut().enumerate() {
            visit_child_mut(&format!("down.{i}"), s, f);
        }
        visit_child_mut("mid.0", &mut self.mid0, f);
        visit_child_mut("mid.1", &mut self.mid1, f);
        visit_child_mut("mid.2", &mut self.mid2, f);
        for (i, s) in self.up.iter_mut().enumerate() {
            visit_child_mut(&format!("up.{i}"), s, f);
        }
        visit_child_mut("out.0", &mut self.out_norm, f);
        visit_child_mut("out.2", &mut self.out_conv, f);
        if let Some(p) = &mut self.skip_scales {
            f("skip_scales", p);
        }
    }
}
