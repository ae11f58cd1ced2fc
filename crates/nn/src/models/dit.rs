//! DiT (Peebles & Xie 2023) with adaLN-Zero conditioning, as the reference `dit-tiny`.

use diffusion_core::Rng;
use ndarray::ArrayD;

use crate::error::{NnError, Result, check_shape};
use crate::gemm::{MatMut, MatRef, matmul, matmul_new, matmul_serial};
use crate::kernels::{add_column_sums, add_row_bias, assume_init_mut, task_items};
use crate::kernels::{add_into, array, std_slice};
use crate::layers::activation::{
    bias_gelu_in_place_seq, bias_gelu_seq, gelu_backward_in_place_column_sums, silu_backward_slice,
    silu_slice,
};
use crate::layers::attention::{AttentionCache, ProjectionsT};
use crate::layers::embed::{
    conv_patches, conv_patches_adjoint, gate_add_seq, gate_backward, modulate, modulate_backward, patchify,
    unpatchify,
};
use crate::layers::linear::{backward_each, forward_each};
use crate::layers::norm::NormCache;
use crate::layers::{Conv, LayerNorm, Linear, MultiheadAttention, timestep_embedding};
use crate::network::{Network, check_input};
use crate::param::{Float, Param, Parameters, join_name};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Sizes of a [`Dit`]; `Default` is the reference `dit-tiny` (4,165,456 trainable parameters).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DitConfig {
    pub in_ch: usize,
    pub size: usize,
    pub patch: usize,
    pub hidden: usize,
    pub depth: usize,
    pub heads: usize,
    pub mlp_ratio: usize,
    /// Width of the sinusoidal time embedding fed to `t_embed`.
    pub freq_dim: usize,
    /// Class-conditional with this many classes (0: unconditional). Adds `y_embed.weight`.
    pub num_classes: usize,
}

impl Default for DitConfig {
    fn default() -> Self {
        Self {
            in_ch: 4,
            size: 16,
            patch: 2,
            hidden: 192,
            depth: 6,
            heads: 3,
            mlp_ratio: 4,
            freq_dim: 256,
            num_classes: 0,
        }
    }
}

/// One transformer block with adaLN-Zero modulation (`blocks.i` in PyTorch naming).
#[derive(Clone, Debug)]
pub struct DitBlock<A> {
    norm: LayerNorm<A>,
    pub attn: MultiheadAttention<A>,
    pub mlp0: Linear<A>,
    pub mlp2: Linear<A>,
    pub ada: Linear<A>,
}

/// A block's weights as its tasks' products read them (see [`crate::transpose`]).
struct BlockWeightsT<A> {
    attn: ProjectionsT<A>,
    fc1: Vec<A>,
    fc2: Vec<A>,
}

/// One training task's room in each buffer that [`DitBlock::train`] fills, in the order
/// its `per_item` sizes list them.
type BlockRoom<'a, A> = [&'a mut [MaybeUninit<A>]; 13];

/// The MLP branch's outputs kept for the backward: fc1's biased output, GELU's output and
/// fc2's output, as uninitialised room that the branch fills.
type MlpOutputs<'a, A> = (
    &'a mut [MaybeUninit<A>],
    &'a mut [MaybeUninit<A>],
    &'a mut [MaybeUninit<A>],
);

impl<A: Float> DitBlock<A> {
    /// The block's product weights transposed, once for all of a forward pass's tasks.
    fn weights_t(&self) -> BlockWeightsT<A> {
        BlockWeightsT {
            attn: self.attn.projections_t(),
            fc1: self.mlp0.weight_t(),
            fc2: self.mlp2.weight_t(),
        }
    }

    /// The block at inference, in tasks of [`task_items`] whole batch items: each task runs
    /// the first norm and its modulation (one pass, nothing kept), self-attention, the gated
    /// add, the second norm and the MLP branch on one thread, so that the items' rows stay
    /// in that core's cache through the block instead of a round trip to memory between
    /// whole-batch steps. The arithmetic is the training forward's.
    fn infer(&self, h: &mut [A], m: &[A], tok: usize) {
        let d = self.mlp0.in_features();
        let batch = h.len() / (tok * d).max(1);
        let items = task_items(batch);
        let wt = self.weights_t();
        h.par_chunks_mut((items * tok * d).max(1))
            .zip(m.par_chunks(items * 6 * d))
            .for_each(|(hb, mb)| {
                let u = self.norm.normalize_modulated(hb, mb, (6 * d, 0, d), tok);
                let a = self.attn.self_attention_items(&u, tok, &wt.attn);
                gate_add_seq(hb, &a, mb, 6 * d, 2 * d, tok, d);
                let v = self.norm.normalize_modulated(hb, mb, (6 * d, 3 * d, 4 * d), tok);
                self.mlp_task(hb, &v, mb, tok, &wt, None);
            });
    }

    /// The block's training forward, in the tasks of [`Self::infer`] with the same
    /// arithmetic: each task also writes its items' share of what the backward reads (both
    /// norms' rows and `rstd`, attention's projections, probabilities and head outputs, the
    /// MLP's outputs) into buffers allocated once for the batch.
    fn train(&self, h: &mut [A], m: Vec<A>, tok: usize) -> BlockCache<A> {
        let (d, hid, heads) = (
            self.mlp0.in_features(),
            self.mlp0.out_features(),
            self.attn.heads(),
        );
        let batch = h.len() / (tok * d).max(1);
        let items = task_items(batch);
        // Per item, in the order of `BlockRoom`: xhat1, rstd1, u, kv, probs, o, a, xhat2,
        // rstd2, v, f1, gl, f2.
        let td = tok * d;
        let per_item = [
            td,
            tok,
            td,
            3 * td,
            heads * tok * tok,
            td,
            td,
            td,
            tok,
            td,
            tok * hid,
            tok * hid,
            td,
        ];
        let mut bufs: [Vec<A>; 13] = std::array::from_fn(|i| Vec::with_capacity(batch * per_item[i]));
        {
            let mut chunks: Vec<_> = bufs
                .iter_mut()
                .zip(per_item)
                .map(|(b, n)| b.spare_capacity_mut()[..batch * n].chunks_mut((items * n).max(1)))
                .collect();
            let rooms: Vec<BlockRoom<'_, A>> = (0..batch.div_ceil(items))
                .map(|_| std::array::from_fn(|i| chunks[i].next().unwrap_or_default()))
                .collect();
            let wt = self.weights_t();
            rooms
                .into_par_iter()
                .zip(h.par_chunks_mut((items * td).max(1)))
                .zip(m.par_chunks(items * 6 * d))
                .for_each(|((room, hb), mb)| self.train_task(hb, mb, tok, &wt, room));
        }
        // SAFETY: the rooms tile every buffer, and each task writes all of its room.
        unsafe {
            for (b, n) in bufs.iter_mut().zip(per_item) {
                b.set_len(batch * n);
            }
        }
        let [xhat1, rstd1, u, kv, probs, o, a, xhat2, rstd2, v, f1, gl, f2] = bufs;
        BlockCache {
            m,
            n1c: NormCache::from_parts(xhat1, rstd1),
            attn: self.attn.self_attention_cache(batch, tok, u, kv, probs, o),
            a,
            n2c: NormCache::from_parts(xhat2, rstd2),
            v,
            f1,
            gl,
            f2,
        }
    }

    /// One task of [`Self::train`] on the calling thread: [`Self::infer`]'s steps, keeping
    /// their outputs in `room`.
    fn train_task(&self, h: &mut [A], m: &[A], tok: usize, wt: &BlockWeightsT<A>, room: BlockRoom<'_, A>) {
        let d = self.mlp0.in_features();
        let [xhat1, rstd1, u, kv, probs, o, a, xhat2, rstd2, v, f1, gl, f2] = room;
        self.norm
            .normalize_modulated_into(h, m, (6 * d, 0, d), tok, u, Some((xhat1, rstd1)));
        // SAFETY: `normalize_modulated_into` wrote all of `u`.
        let u = unsafe { assume_init_mut(u) };
        self.attn.self_attention_task(u, tok, &wt.attn, kv, probs, o, a);
        // SAFETY: the attention task wrote all of its output `a`.
        let a = unsafe { assume_init_mut(a) };
        gate_add_seq(h, a, m, 6 * d, 2 * d, tok, d);
        self.norm
            .normalize_modulated_into(h, m, (6 * d, 3 * d, 4 * d), tok, v, Some((xhat2, rstd2)));
        // SAFETY: as `u` above.
        let v = unsafe { assume_init_mut(v) };
        self.mlp_task(h, v, m, tok, wt, Some((f1, gl, f2)));
    }

    /// One task of [`Self::train`] or [`Self::infer`] on the calling thread.
    fn mlp_task(
        &self,
        h: &mut [A],
        v: &[A],
        m: &[A],
        tok: usize,
        wt: &BlockWeightsT<A>,
        keep: Option<MlpOutputs<'_, A>>,
    ) {
        let (d, hid) = (self.mlp0.in_features(), self.mlp0.out_features());
        let rows = v.len() / d;
        let vm = MatRef::row_major(v, 0, rows, d);
        let w1t = MatRef::row_major(&wt.fc1, 0, d, hid);
        let w2t = MatRef::row_major(&wt.fc2, 0, hid, d);
        let (b1, b2) = (self.mlp0.bias_values(), self.mlp2.bias_values());
        match keep {
            Some((f1, gl, f2)) => {
                matmul_serial(MatMut::uninit(f1, 0, rows, hid, hid), vm, w1t, false);
                // SAFETY: the product wrote all `rows x hid` elements.
                let f1 = unsafe { assume_init_mut(f1) };
                bias_gelu_seq(f1, hid, b1, gl);
                // SAFETY: `bias_gelu_seq` wrote one output per element of `f1`.
                let gl = unsafe { assume_init_mut(gl) };
                matmul_serial(
                    MatMut::uninit(f2, 0, rows, d, d),
                    MatRef::row_major(gl, 0, rows, hid),
                    w2t,
                    false,
                );
                // SAFETY: the product wrote all `rows x d` elements.
                let f2 = unsafe { assume_init_mut(f2) };
                add_row_bias(f2, b2);
                gate_add_seq(h, f2, m, 6 * d, 5 * d, tok, d);
            }
            None => {
                let mut z = matmul_new(vm, w1t, true);
                bias_gelu_in_place_seq(&mut z, hid, b1);
                let mut f2 = matmul_new(MatRef::row_major(&z, 0, rows, hid), w2t, true);
                add_row_bias(&mut f2, b2);
                gate_add_seq(h, &f2, m, 6 * d, 5 * d, tok, d);
            }
        }
    }
}

#[derive(Clone, Debug)]
struct BlockCache<A> {
    m: Vec<A>,
    n1c: NormCache<A>,
    attn: AttentionCache<A>,
    a: Vec<A>,
    n2c: NormCache<A>,
    v: Vec<A>,
    f1: Vec<A>,
    gl: Vec<A>,
    f2: Vec<A>,
}

/// What the shared DiT stem (patch + time/class embedding) keeps for the backward pass.
#[derive(Clone, Debug)]
pub(crate) struct StemCache<A> {
    pub batch: usize,
    /// The input's patch rows `[B * T, C p p]` (the patch embedding's input).
    patches: Vec<A>,
    x_shape: Vec<usize>,
    temb: Vec<A>,
    z1: Vec<A>,
    s1: Vec<A>,
    c: Vec<A>,
    /// `silu(c)`: the input of every adaLN projection.
    pub sc: Vec<A>,
    labels: Option<Vec<usize>>,
}

/// What the shared DiT head (final adaLN + projection) keeps for the backward pass.
#[derive(Clone, Debug)]
pub(crate) struct HeadCache<A> {
    mf: Vec<A>,
    nfc: NormCache<A>,
    w: Vec<A>,
}

/// What [`Dit::forward`] keeps for the backward pass.
#[derive(Clone, Debug)]
pub struct DitCache<A> {
    stem: StemCache<A>,
    blocks: Vec<BlockCache<A>>,
    head: HeadCache<A>,
}

/// Diffusion transformer over `[in_ch, size, size]` images.
#[derive(Clone, Debug)]
pub struct Dit<A> {
    cfg: DitConfig,
    pub x_embed: Conv<A>,
    /// Fixed positional embedding `[1, tokens, hidden]` (a `requires_grad=False` parameter in PyTorch).
    pub pos: ArrayD<A>,
    pub t_embed0: Linear<A>,
    pub t_embed2: Linear<A>,
    pub y_embed: Option<Param<A>>,
    pub blocks: Vec<DitBlock<A>>,
    norm_f: LayerNorm<A>,
    pub ada_f: Linear<A>,
    pub out: Linear<A>,
}

/// 2-d sin-cos positional embedding (as in the DiT paper) `[1, g*g, dim]`.
fn sincos_pos<A: Float>(grid: usize, dim: usize) -> ArrayD<A> {
    let quarter = dim / 4;
    let mut v = vec![A::zero(); grid * grid * dim];
    for i in 0..grid {
        for j in 0..grid {
            let row = &mut v[(i * grid + j) * dim..(i * grid + j + 1) * dim];
            for (axis, coord) in [(0, j as f64), (1, i as f64)] {
                for k in 0..quarter {
                    let w = 1.0 / 10000f64.powf(k as f64 / quarter.max(1) as f64);
                    row[axis * 2 * quarter + k] = A::of_f64((coord * w).sin());
                    row[axis * 2 * quarter + quarter + k] = A::of_f64((coord * w).cos());
                }
            }
        }
    }
    array(&[1, grid * grid, dim], v)
}

impl<A: Float> Dit<A> {
    /// Builds the model; adaLN and output layers are zero-initialised (adaLN-Zero).
    pub fn new(cfg: DitConfig, rng: &mut Rng) -> Result<Self> {
        if cfg.patch == 0
            || cfg.hidden == 0
            || cfg.size == 0
            || !cfg.size.is_multiple_of(cfg.patch)
            || !cfg.hidden.is_multiple_of(cfg.heads.max(1))
            || !cfg.freq_dim.is_multiple_of(2)
        {
            return Err(NnError::Config {
                name: "DitConfig",
                reason: format!(
                    "{cfg:?}: hidden and size must be positive, patch must divide size, heads must divide hidden, freq_dim even"
                ),
            });
        }
        let d = cfg.hidden;
        let grid = cfg.size / cfg.patch;
        let mut blocks = Vec::with_capacity(cfg.depth);
        for _ in 0..cfg.depth {
            let mut ada = Linear::new(d, 6 * d, true, rng);
            zero(&mut ada);
            blocks.push(DitBlock {
                norm: LayerNorm::new(d, 1e-6, false),
                attn: MultiheadAttention::new(d, cfg.heads, rng)?,
                mlp0: Linear::new(d, cfg.mlp_ratio * d, true, rng),
                mlp2: Linear::new(cfg.mlp_ratio * d, d, true, rng),
                ada,
            });
        }
        let mut ada_f = Linear::new(d, 2 * d, true, rng);
        zero(&mut ada_f);
        let mut out = Linear::new(d, cfg.patch * cfg.patch * cfg.in_ch, true, rng);
        zero(&mut out);
        let y_embed = (cfg.num_classes > 0).then(|| {
            Param::new(crate::kernels::uniform_array(
                &[cfg.num_classes, d],
                0.02 * 3f64.sqrt(),
                rng,
            ))
        });
        Ok(Self {
            cfg,
            x_embed: Conv::new(
                cfg.in_ch,
                d,
                &[cfg.patch; 2],
                &[cfg.patch; 2],
                &[0, 0],
                1,
                true,
                rng,
            )?,
            pos: sincos_pos(grid, d),
            t_embed0: Linear::new(cfg.freq_dim, d, true, rng),
            t_embed2: Linear::new(d, d, true, rng),
            y_embed,
            blocks,
            norm_f: LayerNorm::new(d, 1e-6, false),
            ada_f,
            out,
        })
    }

    pub fn config(&self) -> DitConfig {
        self.cfg
    }

    pub(crate) fn tokens(&self) -> usize {
        (self.cfg.size / self.cfg.patch).pow(2)
    }

    /// Patch embedding + positions (tokens `h: [B, T, D]`) and the conditioning vector.
    pub(crate) fn stem(
        &self,
        x: &ArrayD<A>,
        t: &[A],
        cond: Option<&[usize]>,
    ) -> Result<(Vec<A>, StemCache<A>)> {
        let cfg = self.cfg;
        let batch = check_input(x, &[cfg.in_ch, cfg.size, cfg.size], t, "Dit input")?;
        let (d, tok) = (cfg.hidden, self.tokens());
        let labels = match (&self.y_embed, cond) {
            (Some(_), Some(l)) => {
                if l.len() != batch || l.iter().any(|&c| c >= cfg.num_classes) {
                    return Err(NnError::Input {
                        name: "class labels",
                        reason: format!("need {batch} labels below {}, got {l:?}", cfg.num_classes),
                    });
                }
                Some(l.to_vec())
            }
            _ => None,
        };
        // Patch embedding: the stride-p convolution as one product of the patch rows with its
        // weight `[D, C p p]`, straight into tokens `[B, T, D]`; then its bias and the positions.
        let patches = conv_patches(&std_slice(x), (cfg.in_ch, cfg.size, cfg.size), cfg.patch);
        let cpp = cfg.in_ch * cfg.patch * cfg.patch;
        let mut h = matmul_new(
            MatRef::row_major(&patches, 0, batch * tok, cpp),
            MatRef::row_major(self.x_embed.weight.v(), 0, d, cpp).t(),
            false,
        );
        let pos = std_slice(&self.pos);
        let zero = vec![A::zero(); d];
        let bias = self.x_embed.bias.as_ref().map_or(&zero[..], |b| b.v());
        h.par_chunks_mut((tok * d).max(1)).for_each(|hb| {
            for (hr, pr) in hb.chunks_mut(d).zip(pos.chunks(d)) {
                for ((v, &b), &pv) in hr.iter_mut().zip(bias).zip(pr) {
                    *v = *v + b + pv;
                }
            }
        });
        // Conditioning vector c = t_embed(temb) (+ class embedding).
        let temb = std_slice(&timestep_embedding(t, cfg.freq_dim, 10000.0)).into_owned();
        let z1 = self.t_embed0.forward_slice(&temb, batch);
        let s1 = silu_slice(&z1);
        let mut c = self.t_embed2.forward_slice(&s1, batch);
        if let (Some(table), Some(l)) = (&self.y_embed, &labels) {
            for (b, &lab) in l.iter().enumerate() {
                add_into(&mut c[b * d..(b + 1) * d], &table.v()[lab * d..(lab + 1) * d]);
            }
        }
        let sc = silu_slice(&c);
        Ok((
            h,
            StemCache {
                batch,
                patches,
                x_shape: x.shape().to_vec(),
                temb,
                z1,
                s1,
                c,
                sc,
                labels,
            },
        ))
    }

    /// Final adaLN modulation and projection to patches `[B, T, p*p*C]`.
    pub(crate) fn head(&self, h: &[A], sc: &[A], batch: usize) -> (Vec<A>, HeadCache<A>) {
        let (d, tok) = (self.cfg.hidden, self.tokens());
        let mf = self.ada_f.forward_slice(sc, batch);
        let nfc = self.norm_f.normalize(h);
        let w = modulate(nfc.xhat(), &mf, 2 * d, 0, d, tok, d);
        let o = self.out.forward_slice(&w, batch * tok);
        (o, HeadCache { mf, nfc, w })
    }

    /// Backward of [`Dit::head`] from the output gradient `dy` (image layout): returns
    /// `(dh, dsc)`.
    pub(crate) fn head_backward(
        &mut self,
        c: &HeadCache<A>,
        sc: &[A],
        dy: &ArrayD<A>,
        batch: usize,
    ) -> Result<(Vec<A>, Vec<A>)> {
        let (d, tok) = (self.cfg.hidden, self.tokens());
        let dout = std_slice(&patchify(dy, self.cfg.patch)?).into_owned();
        let dw = self.out.backward_slice(&c.w, &dout, batch * tok, true);
        let mut dmf = vec![A::zero(); batch * 2 * d];
        let dnf = modulate_backward(c.nfc.xhat(), &dw, &c.mf, &mut dmf, 2 * d, 0, d, tok, d);
        let dh = self.norm_f.backward_slice(&c.nfc, &dnf);
        let dsc = self.ada_f.backward_slice(sc, &dmf, batch, true);
        Ok((dh, dsc))
    }

    /// Backward of [`Dit::stem`] given the token and `silu(c)` gradients; returns dL/dx.
    pub(crate) fn stem_backward(&mut self, c: &StemCache<A>, dh: &[A], dsc: &[A]) -> Result<ArrayD<A>> {
        let (batch, d, tok) = (c.batch, self.cfg.hidden, self.tokens());
        let dc = silu_backward_slice(&c.c, dsc);
        if let (Some(table), Some(l)) = (&mut self.y_embed, &c.labels) {
            let g = table.g();
            for (b, &lab) in l.iter().enumerate() {
                add_into(&mut g[lab * d..(lab + 1) * d], &dc[b * d..(b + 1) * d]);
            }
        }
        let ds1 = self.t_embed2.backward_slice(&c.s1, &dc, batch, true);
        let dz1 = silu_backward_slice(&c.z1, &ds1);
        self.t_embed0.backward_slice(&c.temb, &dz1, batch, false);
        // The patch embedding's gradients: a Linear's, on the patch rows.
        let (cfg, rows) = (self.cfg, batch * tok);
        let cpp = cfg.in_ch * cfg.patch * cfg.patch;
        let dhm = MatRef::row_major(dh, 0, rows, d);
        matmul(
            MatMut::row_major(self.x_embed.weight.g(), 0, d, cpp),
            dhm.t(),
            MatRef::row_major(&c.patches, 0, rows, cpp),
            true,
        );
        if let Some(b) = &mut self.x_embed.bias {
            add_column_sums(b.g(), dh);
        }
        let dpatches = matmul_new(dhm, MatRef::row_major(self.x_embed.weight.v(), 0, d, cpp), false);
        let dx = conv_patches_adjoint(&dpatches, (cfg.in_ch, cfg.size, cfg.size), cfg.patch);
        Ok(array(&c.x_shape, dx))
    }

    /// The forward pass; `keep = false` (inference) keeps no block caches, fuses each norm
    /// with its modulation and applies GELU in place (same arithmetic either way).
    fn run(
        &self,
        x: &ArrayD<A>,
        t: &[A],
        cond: Option<&[usize]>,
        keep: bool,
    ) -> Result<(Vec<A>, DitCache<A>)> {
        let tok = self.tokens();
        let (mut h, stem) = self.stem(x, t, cond)?;
        let (batch, sc) = (stem.batch, &stem.sc);
        let mut caches = Vec::with_capacity(self.blocks.len());
        let ada: Vec<&Linear<A>> = self.blocks.iter().map(|b| &b.ada).collect();
        for (blk, m) in self.blocks.iter().zip(forward_each(&ada, sc, batch)) {
            if keep {
                caches.push(blk.train(&mut h, m, tok));
            } else {
                blk.infer(&mut h, &m, tok);
            }
        }
        let (o, head) = self.head(&h, sc, batch);
        Ok((
            o,
            DitCache {
                stem,
                blocks: caches,
                head,
            },
        ))
    }

    /// Patches `[B, T, p*p*C]` back to images.
    pub(crate) fn unpatch(&self, o: Vec<A>, batch: usize) -> Result<ArrayD<A>> {
        let cfg = self.cfg;
        let tokens = array(&[batch, self.tokens(), cfg.patch * cfg.patch * cfg.in_ch], o);
        unpatchify(&tokens, cfg.patch, cfg.in_ch, cfg.size, cfg.size)
    }
}

/// Zero weight and bias (adaLN-Zero initialisation).
pub(crate) fn zero<A: Float>(l: &mut Linear<A>) {
    l.weight.value.fill(A::zero());
    if let Some(b) = &mut l.bias {
        b.value.fill(A::zero());
    }
}

impl<A: Float> Network<A> for Dit<A> {
    type Cache = DitCache<A>;

    fn forward(&self, x: &ArrayD<A>, t: &[A], cond: Option<&[usize]>) -> Result<(ArrayD<A>, DitCache<A>)> {
        let (o, cache) = self.run(x, t, cond, true)?;
        Ok((self.unpatch(o, cache.stem.batch)?, cache))
    }

    fn infer(&self, x: &ArrayD<A>, t: &[A], cond: Option<&[usize]>) -> Result<ArrayD<A>> {
        let (o, cache) = self.run(x, t, cond, false)?;
        self.unpatch(o, cache.stem.batch)
    }

    fn backward(&mut self, cache: &DitCache<A>, dy: &ArrayD<A>) -> Result<ArrayD<A>> {
        check_shape("Dit backward dy", &cache.stem.x_shape, dy.shape())?;
        let (batch, d, tok) = (cache.stem.batch, self.cfg.hidden, self.tokens());
        let sc = &cache.stem.sc;
        let (mut dh, mut dsc) = self.head_backward(&cache.head, sc, dy, batch)?;
        let mut dms = Vec::with_capacity(self.blocks.len());
        for (blk, bc) in self.blocks.iter_mut().zip(&cache.blocks).rev() {
            let mut dm = vec![A::zero(); batch * 6 * d];
            let (df2, db2) = gate_backward(&dh, &bc.f2, &bc.m, &mut dm, 6 * d, 5 * d, tok, d);
            let mut df1 = blk
                .mlp2
                .backward_slice_with_bias_grad(&bc.gl, &df2, batch * tok, true, Some(&db2));
            let db1 = gelu_backward_in_place_column_sums(&bc.f1, &mut df1, blk.mlp0.out_features());
            let dv = blk
                .mlp0
                .backward_slice_with_bias_grad(&bc.v, &df1, batch * tok, true, Some(&db1));
            let modulation = (&bc.m[..], &mut dm[..], 6 * d);
            let (da, dbo) = blk.norm.modulated_backward_add(
                &bc.n2c,
                &dv,
                modulation,
                (3 * d, 4 * d),
                tok,
                &mut dh,
                Some((&bc.a, 2 * d)),
            );
            let (du, _) = blk.attn.backward_slice(&bc.attn, &da, Some(&dbo));
            let modulation = (&bc.m[..], &mut dm[..], 6 * d);
            blk.norm
                .modulated_backward_add(&bc.n1c, &du, modulation, (0, d), tok, &mut dh, None);
            dms.push(dm);
        }
        dms.reverse();
        let mut ada: Vec<&mut Linear<A>> = self.blocks.iter_mut().map(|b| &mut b.ada).collect();
        add_into(&mut dsc, &backward_each(&mut ada, sc, &dms, batch));
        self.stem_backward(&cache.stem, &dh, &dsc)
    }

    fn input_shape(&self) -> Vec<usize> {
        vec![self.cfg.in_ch, self.cfg.size, self.cfg.size]
    }
}

impl<A> Dit<A> {
    /// The stem's parameters (PyTorch order: they come before the blocks).
    pub(crate) fn visit_stem(&self, f: &mut dyn FnMut(&str, &Param<A>)) {
        crate::param::visit_child("x_embed", &self.x_embed, f);
        crate::param::visit_child("t_embed.0", &self.t_embed0, f);
        crate::param::visit_child("t_embed.2", &self.t_embed2, f);
        if let Some(y) = &self.y_embed {
            f("y_embed.weight", y);
        }
    }
    pub(crate) fn visit_stem_mut(&mut self, f: &mut dyn FnMut(&str, &mut Param<A>)) {
        crate::param::visit_child_mut("x_embed", &mut self.x_embed, f);
        crate::param::visit_child_mut("t_embed.0", &mut self.t_embed0, f);
        crate::param::visit_child_mut("t_embed.2", &mut self.t_embed2, f);
        if let Some(y) = &mut self.y_embed {
            f("y_embed.weight", y);
        }
    }
    /// The head's parameters (after the blocks).
    pub(crate) fn visit_head(&self, f: &mut dyn FnMut(&str, &Param<A>)) {
        crate::param::visit_child("ada_f.1", &self.ada_f, f);
        crate::param::visit_child("out", &self.out, f);
    }
    pub(crate) fn visit_head_mut(&mut self, f: &mut dyn FnMut(&str, &mut Param<A>)) {
        crate::param::visit_child_mut("ada_f.1", &mut self.ada_f, f);
        crate::param::visit_child_mut("out", &mut self.out, f);
    }
}

impl<A> Parameters<A> for Dit<A> {
    fn visit(&self, f: &mut dyn FnMut(&str, &Param<A>)) {
        self.visit_stem(f);
        for (i, b) in self.blocks.iter().enumerate() {
            let p = format!("blocks.{i}");
            crate::param::visit_child(&join_name(&p, "attn"), &b.attn, f);
            crate::param::visit_child(&join_name(&p, "mlp.0"), &b.mlp0, f);
            crate::param::visit_child(&join_name(&p, "mlp.2"), &b.mlp2, f);
            crate::param::visit_child(&join_name(&p, "ada.1"), &b.ada, f);
        }
        self.visit_head(f);
    }
    fn visit_mut(&mut self, f: &mut dyn FnMut(&str, &mut Param<A>)) {
        self.visit_stem_mut(f);
        for (i, b) in self.blocks.iter_mut().enumerate() {
            let p = format!("blocks.{i}");
            crate::param::visit_child_mut(&join_name(&p, "attn"), &mut b.attn, f);
            crate::param::visit_child_mut(&join_name(&p, "mlp.0"), &mut b.mlp0, f);
            crate::param::visit_child_mut(&join_name(&p, "mlp.2"), &mut b.mlp2, f);
            crate::param::visit_child_mut(&join_name(&p, "ada.1"), &mut b.ada, f);
        }
        self.visit_head_mut(f);
    }
    fn visit_buffers(&self, f: &mut dyn FnMut(&str, &ArrayD<A>)) {
        f("pos", &self.pos);
    }
    fn visit_buffers_mut(&mut self, f: &mut dyn FnMut(&str, &mut ArrayD<A>)) {
        f("pos", &mut self.pos);
    }
}
