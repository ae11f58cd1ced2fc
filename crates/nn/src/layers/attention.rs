//! Multi-head self- and cross-attention with PyTorch `nn.MultiheadAttention`'s packed
//! parameters: `in_proj_weight [3E, E]` (rows: q, k, v), `in_proj_bias [3E]`,
//! `out_proj.{weight, bias}`. Inputs are batch-first `[batch, tokens, E]`.

use std::mem::MaybeUninit;

use diffusion_core::Rng;
use ndarray::ArrayD;
use rayon::prelude::*;

use super::linear::Linear;
use crate::error::{NnError, Result, check_shape};
use crate::gemm::{MatMut, MatRef, matmul, matmul_new, matmul_serial};
use crate::kernels::{
    add_into, add_row_bias, array, column_sums_seq, std_slice, sum_in_order, task_items, uniform_array,
};
use crate::param::{Float, Param, Parameters, visit_child, visit_child_mut};
use crate::transpose::transposed;

#[derive(Clone, Debug)]
pub struct MultiheadAttention<A> {
    embed: usize,
    heads: usize,
    pub in_proj_weight: Param<A>,
    pub in_proj_bias: Param<A>,
    pub out_proj: Linear<A>,
}

/// Where queries, keys and values sit in the projections: queries with row stride `q_rs`,
/// keys/values with row stride `kv_rs`, keys from column `kv_at` and values `E` further.
#[derive(Clone, Copy, Debug)]
struct Layout {
    q_rs: usize,
    kv_rs: usize,
    kv_at: usize,
}

/// Self-attention's projection weights transposed (`[E, 3E]` and `[E, E]`), made once per
/// forward pass for all of its tasks ([`MultiheadAttention::projections_t`]).
pub(crate) struct ProjectionsT<A> {
    qkv: Vec<A>,
    out: Vec<A>,
}

/// What attention keeps for its backward pass.
#[derive(Clone, Debug)]
pub struct AttentionCache<A> {
    batch: usize,
    len_q: usize,
    len_kv: usize,
    x: Vec<A>,
    /// The key/value source when it differs from `x` (cross-attention).
    ctx: Option<Vec<A>>,
    /// Projected queries (row stride `q_rs`) and keys/values (row stride `kv_rs`, keys from
    /// column `kv_at`): for self-attention one `[rows, 3E]` product holds all three (`q`
    /// empty), for cross-attention `[rows, E]` and `[rows_kv, 2E]`.
    q: Vec<A>,
    kv: Vec<A>,
    q_rs: usize,
    kv_rs: usize,
    kv_at: usize,
    /// Attention probabilities `[batch, heads, len_q, len_kv]`.
    probs: Vec<A>,
    /// Concatenated head outputs (the input of `out_proj`).
    o: Vec<A>,
}

impl<A: Float> MultiheadAttention<A> {
    /// PyTorch's initialisation: xavier-uniform `in_proj_weight`, zero biases.
    pub fn new(embed: usize, heads: usize, rng: &mut Rng) -> Result<Self> {
        if heads == 0 || !embed.is_multiple_of(heads) {
            return Err(NnError::Config {
                name: "attention heads",
                reason: format!("{heads} heads do not divide embedding width {embed}"),
            });
        }
        let bound = (6.0 / (embed + 3 * embed) as f64).sqrt();
        let mut out_proj = Linear::new(embed, embed, true, rng);
        if let Some(b) = &mut out_proj.bias {
            b.value.fill(A::zero());
        }
        Ok(Self {
            embed,
            heads,
            in_proj_weight: Param::new(uniform_array(&[3 * embed, embed], bound, rng)),
            in_proj_bias: Param::zeros(&[3 * embed]),
            out_proj,
        })
    }

    pub fn embed_dim(&self) -> usize {
        self.embed
    }

    pub fn heads(&self) -> usize {
        self.heads
    }

    fn check(&self, shape: &[usize], what: &str) -> Result<(usize, usize)> {
        if shape.len() != 3 || shape[2] != self.embed {
            return Err(NnError::Shape {
                context: format!("attention {what} [batch, tokens, {}]", self.embed),
                expected: vec![
                    shape.first().copied().unwrap_or(0),
                    shape.get(1).copied().unwrap_or(0),
                    self.embed,
                ],
                got: shape.to_vec(),
            });
        }
        Ok((shape[0], shape[1]))
    }

    /// Projects `rows` tokens with rows `r0..r0+n` of the packed weights, without the bias
    /// (added per batch item by [`Self::image_forward`], while its rows are in cache).
    fn project(&self, x: &[A], rows: usize, r0: usize, n: usize) -> Vec<A> {
        let e = self.embed;
        matmul_new(
            MatRef::row_major(x, 0, rows, e),
            MatRef::row_major(self.in_proj_weight.v(), r0 * e, n, e).t(),
            false,
        )
    }

    /// Attention on slices; `ctx = None` is self-attention.
    pub(crate) fn forward_slice(
        &self,
        x: Vec<A>,
        batch: usize,
        len_q: usize,
        ctx: Option<(Vec<A>, usize)>,
    ) -> (Vec<A>, AttentionCache<A>) {
        let (e, h) = (self.embed, self.heads);
        if ctx.is_none() && batch * len_q * e > 0 {
            return self.self_attention(x, batch, len_q);
        }
        let len_kv = ctx.as_ref().map_or(len_q, |c| c.1);
        // Self-attention projects queries, keys and values in one product.
        let (mut q, mut kv, q_rs, kv_rs, kv_at) = match &ctx {
            None => (
                Vec::new(),
                self.project(&x, batch * len_q, 0, 3 * e),
                3 * e,
                3 * e,
                e,
            ),
            Some(c) => (
                self.project(&x, batch * len_q, 0, e),
                self.project(&c.0, batch * len_kv, e, 2 * e),
                e,
                2 * e,
                0,
            ),
        };
        let plen = h * len_q * len_kv;
        let (mut probs, mut o) = (
            Vec::with_capacity(batch * plen),
            Vec::with_capacity(batch * len_q * e),
        );
        let layout = Layout { q_rs, kv_rs, kv_at };
        if plen > 0 {
            let pieces = probs.spare_capacity_mut()[..batch * plen]
                .par_chunks_mut(plen)
                .zip(o.spare_capacity_mut()[..batch * len_q * e].par_chunks_mut(len_q * e))
                .zip(kv.par_chunks_mut(len_kv * kv_rs));
            if ctx.is_some() {
                pieces
                    .zip(q.par_chunks_mut(len_q * q_rs))
                    .for_each(|(((pb, ob), kvb), qb)| self.image_forward(layout, pb, ob, kvb, Some(qb)));
            } else {
                pieces.for_each(|((pb, ob), kvb)| self.image_forward(layout, pb, ob, kvb, None));
            }
            // SAFETY: every head wrote its whole probability block and its `d` columns of
            // every output row, and the heads' columns tile the `e` columns.
            unsafe {
                probs.set_len(batch * plen);
                o.set_len(batch * len_q * e);
            }
        } else {
            self.add_biases(layout, &mut kv, Some(&mut q));
            o.resize(batch * len_q * e, A::zero());
        }
        let y = self.out_proj.forward_slice(&o, batch * len_q);
        (
            y,
            AttentionCache {
                batch,
                len_q,
                len_kv,
                x,
                ctx: ctx.map(|c| c.0),
                q,
                kv,
                q_rs,
                kv_rs,
                kv_at,
                probs,
                o,
            },
        )
    }

    /// Self-attention of `batch` items of `len` tokens in tasks of [`task_items`] whole items
    /// (see [`Self::self_attention_task`]), keeping what the backward reads.
    fn self_attention(&self, x: Vec<A>, batch: usize, len: usize) -> (Vec<A>, AttentionCache<A>) {
        let (e, h) = (self.embed, self.heads);
        let rows = batch * len;
        let items = task_items(batch);
        let (mut kv, mut probs, mut o, mut y) = (
            Vec::with_capacity(rows * 3 * e),
            Vec::with_capacity(batch * h * len * len),
            Vec::with_capacity(rows * e),
            Vec::with_capacity(rows * e),
        );
        let wt = self.projections_t();
        x.par_chunks(items * len * e)
            .zip(kv.spare_capacity_mut()[..rows * 3 * e].par_chunks_mut(items * len * 3 * e))
            .zip(probs.spare_capacity_mut()[..batch * h * len * len].par_chunks_mut(items * h * len * len))
            .zip(o.spare_capacity_mut()[..rows * e].par_chunks_mut(items * len * e))
            .zip(y.spare_capacity_mut()[..rows * e].par_chunks_mut(items * len * e))
            .for_each(|((((xb, kvb), pb), ob), yb)| self.self_attention_task(xb, len, &wt, kvb, pb, ob, yb));
        // SAFETY: the chunks tile the four buffers, and each task writes all of its chunks.
        unsafe {
            kv.set_len(rows * 3 * e);
            probs.set_len(batch * h * len * len);
            o.set_len(rows * e);
            y.set_len(rows * e);
        }
        (y, self.self_attention_cache(batch, len, x, kv, probs, o))
    }

    /// The packed Q/K/V projection and the output projection transposed, for the tasks of
    /// one forward pass (see [`crate::transpose`]).
    pub(crate) fn projections_t(&self) -> ProjectionsT<A> {
        let e = self.embed;
        ProjectionsT {
            qkv: transposed(self.in_proj_weight.v(), 3 * e, e),
            out: self.out_proj.weight_t(),
        }
    }

    /// Self-attention's cache from what [`Self::self_attention_task`]s filled: the input,
    /// the packed Q/K/V projections, the probabilities and the head outputs of `batch`
    /// items of `len` tokens.
    pub(crate) fn self_attention_cache(
        &self,
        batch: usize,
        len: usize,
        x: Vec<A>,
        kv: Vec<A>,
        probs: Vec<A>,
        o: Vec<A>,
    ) -> AttentionCache<A> {
        let e = self.embed;
        AttentionCache {
            batch,
            len_q: len,
            len_kv: len,
            x,
            ctx: None,
            q: Vec::new(),
            kv,
            q_rs: 3 * e,
            kv_rs: 3 * e,
            kv_at: e,
            probs,
            o,
        }
    }

    /// Self-attention of a few whole batch items of `len` tokens for inference, on the
    /// calling thread: [`Self::self_attention_task`]'s arithmetic (so the output equals the
    /// training forward's), with the projections, probabilities and head outputs in memory
    /// of its own that is dropped on return.
    pub(crate) fn self_attention_items(&self, x: &[A], len: usize, wt: &ProjectionsT<A>) -> Vec<A> {
        let (e, h) = (self.embed, self.heads);
        let rows = x.len() / e;
        let items = rows / len.max(1);
        let (mut kv, mut probs, mut o, mut y) = (
            Vec::with_capacity(rows * 3 * e),
            Vec::with_capacity(items * h * len * len),
            Vec::with_capacity(rows * e),
            Vec::with_capacity(rows * e),
        );
        self.self_attention_task(
            x,
            len,
            wt,
            &mut kv.spare_capacity_mut()[..rows * 3 * e],
            &mut probs.spare_capacity_mut()[..items * h * len * len],
            &mut o.spare_capacity_mut()[..rows * e],
            &mut y.spare_capacity_mut()[..rows * e],
        );
        // SAFETY: the task writes all of `y`.
        unsafe { y.set_len(rows * e) };
        y
    }

    /// A few whole batch items of self-attention on the calling thread: the packed Q/K/V
    /// projection, every head, and the output projection with its bias, so that the
    /// items' projections (`kv`), probabilities and head outputs stay in this core's cache
    /// from one step to the next instead of a round trip to memory between whole-batch
    /// steps. Writes all of `kv`, `probs`, `o` and `y`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn self_attention_task(
        &self,
        x: &[A],
        len: usize,
        wt: &ProjectionsT<A>,
        kv: &mut [MaybeUninit<A>],
        probs: &mut [MaybeUninit<A>],
        o: &mut [MaybeUninit<A>],
        y: &mut [MaybeUninit<A>],
    ) {
        let (e, h) = (self.embed, self.heads);
        let rows = x.len() / e;
        matmul_serial(
            MatMut::uninit(kv, 0, rows, 3 * e, 3 * e),
            MatRef::row_major(x, 0, rows, e),
            MatRef::row_major(&wt.qkv, 0, e, 3 * e),
            false,
        );
        // SAFETY: the product wrote all `rows x 3E` elements.
        let kv = unsafe { crate::kernels::assume_init_mut(kv) };
        let layout = Layout {
            q_rs: 3 * e,
            kv_rs: 3 * e,
            kv_at: e,
        };
        for ((pb, ob), kvb) in probs
            .chunks_mut(h * len * len)
            .zip(o.chunks_mut(len * e))
            .zip(kv.chunks_mut(len * 3 * e))
        {
            self.image_forward(layout, pb, ob, kvb, None);
        }
        // SAFETY: every item's heads wrote all of its probabilities and output rows.
        let o = unsafe { crate::kernels::assume_init_mut(o) };
        matmul_serial(
            MatMut::uninit(y, 0, rows, e, e),
            MatRef::row_major(o, 0, rows, e),
            MatRef::row_major(&wt.out, 0, e, e),
            false,
        );
        // SAFETY: the product wrote all `rows x E` elements.
        add_row_bias(
            unsafe { crate::kernels::assume_init_mut(y) },
            self.out_proj.bias_values(),
        );
    }

    /// Adds the projection biases to rows of keys/values `kv` and of queries `q` (`None`:
    /// the queries are in `kv`, self-attention's packed layout).
    #[inline(always)]
    fn add_biases(&self, l: Layout, kv: &mut [A], q: Option<&mut [A]>) {
        let (e, bias) = (self.embed, self.in_proj_bias.v());
        // Packed rows hold all three projections; cross-attention's keys and values are the
        // bias's last two thirds.
        let kv_bias = &bias[3 * e - l.kv_rs..];
        for row in kv.chunks_mut(l.kv_rs) {
            add_into(row, kv_bias);
        }
        for row in q.into_iter().flat_map(|q| q.chunks_mut(l.q_rs)) {
            add_into(row, &bias[..e]);
        }
    }

    /// Attention of one batch item: adds the projection biases to its queries, keys and
    /// values, then per head writes the probabilities `p` and the output's `d` columns.
    fn image_forward(
        &self,
        l: Layout,
        pb: &mut [MaybeUninit<A>],
        ob: &mut [MaybeUninit<A>],
        kv: &mut [A],
        mut q: Option<&mut [A]>,
    ) {
        let (e, h) = (self.embed, self.heads);
        let d = e / h;
        let (len_q, len_kv) = (ob.len() / e, kv.len() / l.kv_rs);
        crate::vmath::wide(
            #[inline(always)]
            || self.add_biases(l, kv, q.as_deref_mut()),
        );
        let (kv, qs) = (&*kv, q.as_deref().unwrap_or(kv));
        let scale: A = A::of_f64(1.0 / (d as f64).sqrt());
        // AVX-512 for the softmax loops between the products.
        crate::vmath::wide(
            #[inline(always)]
            || {
                for hh in 0..h {
                    let p = &mut pb[hh * len_q * len_kv..(hh + 1) * len_q * len_kv];
                    let kb = l.kv_at + hh * d;
                    matmul(
                        MatMut::uninit(p, 0, len_q, len_kv, len_kv),
                        MatRef::strided(qs, hh * d, len_q, d, l.q_rs),
                        MatRef::strided(kv, kb, len_kv, d, l.kv_rs).t(),
                        false,
                    );
                    // SAFETY: the product above wrote all of `p`.
                    let p = unsafe { crate::kernels::assume_init_mut(p) };
                    softmax_rows(p, len_kv, scale);
                    matmul(
                        MatMut::uninit(ob, hh * d, len_q, d, e),
                        MatRef::row_major(p, 0, len_q, len_kv),
                        MatRef::strided(kv, kb + e, len_kv, d, l.kv_rs),
                        false,
                    );
                }
            },
        )
    }

    /// Returns `(dx, dctx)`; `dctx` is `None` for self-attention (its gradient is in `dx`).
    ///
    /// The query/key/value gradients are laid out like the forward's projections: for
    /// self-attention one `[rows, 3E]` matrix, so that the packed weight's gradient and
    /// `dx` are one product each.
    ///
    /// `dy_sums`: `dy`'s column sums (the output projection's bias gradient) when the caller
    /// took them while writing `dy`; `None` sums them here.
    pub(crate) fn backward_slice(
        &mut self,
        c: &AttentionCache<A>,
        dy: &[A],
        dy_sums: Option<&[A]>,
    ) -> (Vec<A>, Option<Vec<A>>) {
        let e = self.embed;
        let (batch, lq, lk) = (c.batch, c.len_q, c.len_kv);
        let d_o = self
            .out_proj
            .backward_slice_with_bias_grad(&c.o, dy, batch * lq, true, dy_sums);
        let cross = c.ctx.is_some();
        // Query gradients (row stride `q_rs`) and key/value gradients (row stride `kv_rs`,
        // keys from column `kv_at`, values `e` further); self-attention keeps all three in
        // the first buffer.
        let (q_rs, kv_rs, kv_at) = if cross { (e, 2 * e, 0) } else { (3 * e, 3 * e, e) };
        let mut dq = Vec::with_capacity(batch * lq * q_rs);
        let mut dkv = Vec::with_capacity(if cross { batch * lk * kv_rs } else { 0 });
        // Per batch item, also the column sums of its gradient rows (the projection biases'
        // gradients), taken while the rows are in cache and summed in item order.
        let (mut dq_bias, mut dkv_bias) = (vec![A::zero(); q_rs], vec![A::zero(); kv_rs]);
        if lq > 0 && lk > 0 {
            let image = |b: usize, dqb: &mut [MaybeUninit<A>], mut dkvb: Option<&mut [MaybeUninit<A>]>| {
                self.image_backward(c, &d_o, b, (dqb, q_rs), (dkvb.as_deref_mut(), kv_rs, kv_at));
                // SAFETY: `image_backward` wrote every element of its chunks (see below).
                let (dqb, dkvb) = unsafe {
                    (
                        crate::kernels::assume_init_mut(dqb),
                        dkvb.map(|d| crate::kernels::assume_init_mut(d)),
                    )
                };
                (
                    column_sums_seq(dqb, q_rs),
                    dkvb.map(|d| column_sums_seq(d, kv_rs)),
                )
            };
            let dq_chunks = dq.spare_capacity_mut()[..batch * lq * q_rs].par_chunks_mut(lq * q_rs);
            let sums: Vec<(Vec<A>, Option<Vec<A>>)> = if cross {
                let dkv_chunks = dkv.spare_capacity_mut()[..batch * lk * kv_rs].par_chunks_mut(lk * kv_rs);
                dq_chunks
                    .zip(dkv_chunks)
                    .enumerate()
                    .map(|(b, (dqb, dkvb))| image(b, dqb, Some(dkvb)))
                    .collect()
            } else {
                dq_chunks
                    .enumerate()
                    .map(|(b, dqb)| image(b, dqb, None))
                    .collect()
            };
            // SAFETY: every image wrote its query, key and value gradients for every head:
            // all `d` columns of each head in every row of its chunks (`image_backward`).
            unsafe {
                dq.set_len(batch * lq * q_rs);
                dkv.set_len(if cross { batch * lk * kv_rs } else { 0 });
            }
            let q_sums: Vec<&[A]> = sums.iter().map(|s| &s.0[..]).collect();
            dq_bias = sum_in_order(&q_sums, q_rs);
            if cross {
                let kv_sums: Vec<&[A]> = sums.iter().filter_map(|s| s.1.as_deref()).collect();
                dkv_bias = sum_in_order(&kv_sums, kv_rs);
            }
        } else {
            dq.resize(batch * lq * q_rs, A::zero());
            dkv.resize(if cross { batch * lk * kv_rs } else { 0 }, A::zero());
        }
        let w = self.in_proj_weight.v();
        let dx = matmul_new(
            MatRef::row_major(&dq, 0, batch * lq, q_rs),
            MatRef::row_major(w, 0, q_rs, e),
            false,
        );
        let dsrc = cross.then(|| {
            matmul_new(
                MatRef::row_major(&dkv, 0, batch * lk, 2 * e),
                MatRef::row_major(w, e * e, 2 * e, e),
                false,
            )
        });
        // Packed-weight gradients: rows 0..q_rs from (dq, x); for cross-attention rows
        // E..3E from (dkv, ctx).
        let (gw, gb) = (self.in_proj_weight.g(), self.in_proj_bias.g());
        matmul(
            MatMut::row_major(gw, 0, q_rs, e),
            MatRef::row_major(&dq, 0, batch * lq, q_rs).t(),
            MatRef::row_major(&c.x, 0, batch * lq, e),
            true,
        );
        add_into(&mut gb[..q_rs], &dq_bias);
        if let Some(src) = &c.ctx {
            matmul(
                MatMut::row_major(gw, e * e, 2 * e, e),
                MatRef::row_major(&dkv, 0, batch * lk, 2 * e).t(),
                MatRef::row_major(src, 0, batch * lk, e),
                true,
            );
            add_into(&mut gb[e..], &dkv_bias);
        }
        (dx, dsrc)
    }

    /// The attention backward of batch item `b` for every head: writes its query gradients
    /// into `dq` (row stride given) and its key and value gradients into `dkv` (row stride,
    /// key column), or into `dq` when `dkv` is `None` (self-attention's packed layout).
    #[allow(clippy::type_complexity)]
    fn image_backward(
        &self,
        c: &AttentionCache<A>,
        d_o: &[A],
        b: usize,
        (dq, q_rs): (&mut [MaybeUninit<A>], usize),
        (mut dkv, kv_rs, kv_at): (Option<&mut [MaybeUninit<A>]>, usize, usize),
    ) {
        let (e, h) = (self.embed, self.heads);
        let d = e / h;
        let (lq, lk) = (c.len_q, c.len_kv);
        let scale: A = A::of_f64(1.0 / (d as f64).sqrt());
        let mut dp = vec![A::zero(); lq * lk];
        // AVX-512 for the softmax-gradient loop between the products.
        crate::vmath::wide(
            #[inline(always)]
            || {
                for hh in 0..h {
                    let p = &c.probs[(b * h + hh) * lq * lk..(b * h + hh + 1) * lq * lk];
                    let kb = b * lk * c.kv_rs + c.kv_at + hh * d;
                    let k = MatRef::strided(&c.kv, kb, lk, d, c.kv_rs);
                    let v = MatRef::strided(&c.kv, kb + e, lk, d, c.kv_rs);
                    let qs = if c.q.is_empty() { &c.kv } else { &c.q };
                    let qm = MatRef::strided(qs, b * lq * c.q_rs + hh * d, lq, d, c.q_rs);
                    let dom = MatRef::strided(d_o, b * lq * e + hh * d, lq, d, e);
                    // dV = P^T dO ; dP = dO V^T
                    matmul(
                        MatMut::uninit(
                            dkv.as_deref_mut().unwrap_or(&mut *dq),
                            kv_at + e + hh * d,
                            lk,
                            d,
                            kv_rs,
                        ),
                        MatRef::row_major(p, 0, lq, lk).t(),
                        dom,
                        false,
                    );
                    matmul(MatMut::row_major(&mut dp, 0, lq, lk), dom, v.t(), false);
                    softmax_backward_rows(&mut dp, p, lk, scale);
                    // dQ = dS K ; dK = dS^T Q
                    matmul(
                        MatMut::uninit(dq, hh * d, lq, d, q_rs),
                        MatRef::row_major(&dp, 0, lq, lk),
                        k,
                        false,
                    );
                    matmul(
                        MatMut::uninit(
                            dkv.as_deref_mut().unwrap_or(&mut *dq),
                            kv_at + hh * d,
                            lk,
                            d,
                            kv_rs,
                        ),
                        MatRef::row_major(&dp, 0, lq, lk).t(),
                        qm,
                        false,
                    );
                }
            },
        )
    }

    /// Self-attention (`ctx = None`) or cross-attention to `ctx: [batch, S, E]`.
    pub fn forward(&self, x: &ArrayD<A>, ctx: Option<&ArrayD<A>>) -> Result<(ArrayD<A>, AttentionCache<A>)> {
        let (batch, lq) = self.check(x.shape(), "query input")?;
        let ctx = match ctx {
            Some(c) => {
                let (cb, s) = self.check(c.shape(), "context")?;
                if cb != batch {
                    return Err(NnError::Shape {
                        context: "attention context batch".into(),
                        expected: vec![batch, s, self.embed],
                        got: c.shape().to_vec(),
                    });
                }
                Some((std_slice(c).into_owned(), s))
            }
            None => None,
        };
        let (y, cache) = self.forward_slice(std_slice(x).into_owned(), batch, lq, ctx);
        Ok((array(x.shape(), y), cache))
    }

    /// Returns `(dx, dctx)`.
    pub fn backward(
        &mut self,
        cache: &AttentionCache<A>,
        dy: &ArrayD<A>,
    ) -> Result<(ArrayD<A>, Option<ArrayD<A>>)> {
        let shape = [cache.batch, cache.len_q, self.embed];
        check_shape("attention backward dy", &shape, dy.shape())?;
        let (dx, dctx) = self.backward_slice(cache, &std_slice(dy), None);
        Ok((
            array(&shape, dx),
            dctx.map(|v| array(&[cache.batch, cache.len_kv, self.embed], v)),
        ))
    }
}

/// Row-wise `softmax(scale * s)` in place, max-subtracted (inlined, so that inside
/// [`crate::vmath::wide`] its loops run at the wide vector width).
#[inline(always)]
pub(crate) fn softmax_rows<A: Float>(s: &mut [A], n: usize, scale: A) {
    for row in s.chunks_mut(n) {
        let m = crate::kernels::lane_max(row);
        for v in row.iter_mut() {
            *v = (*v - m) * scale;
        }
    }
    // One call for the whole block: rows are short (tens of elements), and a call per row
    // cost more than its exponentials.
    A::exp_in_place(s);
    for row in s.chunks_mut(n) {
        let sum = crate::kernels::lane_dot(row, row, |v, _| v);
        let inv = A::one() / sum;
        for v in row.iter_mut() {
            *v = *v * inv;
        }
    }
}

/// The score gradient of [`softmax_rows`] in place: `dp` (the probabilities' gradient)
/// becomes `scale * p * (dp - rowsum(dp * p))`, row by row.
#[inline(always)]
pub(crate) fn softmax_backward_rows<A: Float>(dp: &mut [A], p: &[A], n: usize, scale: A) {
    for (dr, pr) in dp.chunks_mut(n).zip(p.chunks(n)) {
        let s = crate::kernels::lane_dot(dr, pr, |a, b| a * b);
        for (dv, &pv) in dr.iter_mut().zip(pr) {
            *dv = scale * pv * (*dv - s);
        }
    }
}

impl<A> Parameters<A> for MultiheadAttention<A> {
    fn visit(&self, f: &mut dyn FnMut(&str, &Param<A>)) {
        f("in_proj_weight", &self.in_proj_weight);
        f("in_proj_bias", &self.in_proj_bias);
        visit_child("out_proj", &self.out_proj, f);
    }
    fn visit_mut(&mut self, f: &mut dyn FnMut(&str, &mut Param<A>)) {
        f("in_proj_weight", &mut self.in_proj_weight);
        f("in_proj_bias", &mut self.in_proj_bias);
        visit_child_mut("out_proj", &mut self.out_proj, f);
    }
}
