//! Multi-head self- and cross-attention with PyTorch `nn.MultiheadAttention`'s packed
//! parameters: `in_proj_weight [3E, E]` (rows: q, k, v), `in_proj_bias [3E]`,
//! `out_proj.{weight, bias}`. Inputs are batch-first `[batch, tokens, E]`.

use diffusion_core::Rng;
use ndarray::ArrayD;
use rayon::prelude::*;

use super::linear::Linear;
use super::{add_into, array, std_slice, uniform_array};
use crate::error::{NnError, Result, check_shape};
use crate::gemm::{MatMut, MatRef, matmul};
use crate::param::{Float, Param, Parameters, cast, visit_child, visit_child_mut};

#[derive(Clone, Debug)]
pub struct MultiheadAttention<A> {
    embed: usize,
    heads: usize,
    pub in_proj_weight: Param<A>,
    pub in_proj_bias: Param<A>,
    pub out_proj: Linear<A>,
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

    /// Projects `rows` tokens with rows `r0..r0+n` of the packed weights.
    fn project(&self, x: &[A], rows: usize, r0: usize, n: usize) -> Vec<A> {
        let e = self.embed;
        let mut y = super::repeat_rows(&self.in_proj_bias.v()[r0..r0 + n], rows);
        matmul(
            MatMut::row_major(&mut y, 0, rows, n),
            MatRef::row_major(x, 0, rows, e),
            MatRef::row_major(self.in_proj_weight.v(), r0 * e, n, e).t(),
            true,
        );
        y
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
        let d = e / h;
        let len_kv = ctx.as_ref().map_or(len_q, |c| c.1);
        // Self-attention projects queries, keys and values in one product.
        let (q, kv, q_rs, kv_rs, kv_at) = match &ctx {
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
        let qs: &[A] = if ctx.is_none() { &kv } else { &q };
        let scale = 1.0 / (d as f64).sqrt();
        let mut probs = vec![A::zero(); batch * h * len_q * len_kv];
        let mut o = vec![A::zero(); batch * len_q * e];
        let plen = h * len_q * len_kv;
        if plen > 0 {
            probs
                .par_chunks_mut(plen)
                .zip(o.par_chunks_mut(len_q * e))
                .enumerate()
                .for_each(|(b, (pb, ob))| {
                    // AVX-512 for the softmax loops between the products.
                    crate::vmath::wide(
                        #[inline(always)]
                        || {
                            for hh in 0..h {
                                let p = &mut pb[hh * len_q * len_kv..(hh + 1) * len_q * len_kv];
                                let kb = b * len_kv * kv_rs + kv_at + hh * d;
                                matmul(
                                    MatMut::row_major(p, 0, len_q, len_kv),
                                    MatRef::strided(qs, b * len_q * q_rs + hh * d, len_q, d, q_rs),
                                    MatRef::strided(&kv, kb, len_kv, d, kv_rs).t(),
                                    false,
                                );
                                softmax_rows(p, len_kv, cast(scale));
                                matmul(
                                    MatMut::strided(ob, hh * d, len_q, d, e),
                                    MatRef::row_major(p, 0, len_q, len_kv),
                                    MatRef::strided(&kv, kb + e, len_kv, d, kv_rs),
                                    false,
                                );
                            }
                        },
                    )
                });
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

    /// Returns `(dx, dctx)`; `dctx` is `None` for self-attention (its gradient is in `dx`).
    pub(crate) fn backward_slice(&mut self, c: &AttentionCache<A>, dy: &[A]) -> (Vec<A>, Option<Vec<A>>) {
        let (e, h) = (self.embed, self.heads);
        let d = e / h;
        let (batch, lq, lk) = (c.batch, c.len_q, c.len_kv);
        let scale: A = cast(1.0 / (d as f64).sqrt());
        let d_o = self.out_proj.backward_slice(&c.o, dy, batch * lq, true);
        let mut dq = vec![A::zero(); batch * lq * e];
        let mut dkv = vec![A::zero(); batch * lk * 2 * e];
        if lq > 0 && lk > 0 {
            dq.par_chunks_mut(lq * e)
                .zip(dkv.par_chunks_mut(lk * 2 * e))
                .enumerate()
                .for_each(|(b, (dqb, dkvb))| {
                    let mut dp = vec![A::zero(); lq * lk];
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
                                let dom = MatRef::strided(&d_o, b * lq * e + hh * d, lq, d, e);
                                // dV = P^T dO ; dP = dO V^T
                                matmul(
                                    MatMut::strided(dkvb, e + hh * d, lk, d, 2 * e),
                                    MatRef::row_major(p, 0, lq, lk).t(),
                                    dom,
                                    false,
                                );
                                matmul(MatMut::row_major(&mut dp, 0, lq, lk), dom, v.t(), false);
                                // dS = scale * P * (dP - rowsum(dP * P))
                                for (dr, pr) in dp.chunks_mut(lk).zip(p.chunks(lk)) {
                                    let s = super::lane_dot(dr, pr, |a, b| a * b);
                                    for (dv, &pv) in dr.iter_mut().zip(pr) {
                                        *dv = scale * pv * (*dv - s);
                                    }
                                }
                                // dQ = dS K ; dK = dS^T Q
                                matmul(
                                    MatMut::strided(dqb, hh * d, lq, d, e),
                                    MatRef::row_major(&dp, 0, lq, lk),
                                    k,
                                    false,
                                );
                                matmul(
                                    MatMut::strided(dkvb, hh * d, lk, d, 2 * e),
                                    MatRef::row_major(&dp, 0, lq, lk).t(),
                                    qm,
                                    false,
                                );
                            }
                        },
                    )
                });
        }
        let src = c.ctx.as_ref().unwrap_or(&c.x);
        // Packed-weight gradients: rows 0..E from (dq, x), rows E..3E from (dkv, src).
        let gw = self.in_proj_weight.g();
        matmul(
            MatMut::row_major(gw, 0, e, e),
            MatRef::row_major(&dq, 0, batch * lq, e).t(),
            MatRef::row_major(&c.x, 0, batch * lq, e),
            true,
        );
        matmul(
            MatMut::row_major(gw, e * e, 2 * e, e),
            MatRef::row_major(&dkv, 0, batch * lk, 2 * e).t(),
            MatRef::row_major(src, 0, batch * lk, e),
            true,
        );
        let gb = self.in_proj_bias.g();
        for row in dq.chunks(e) {
            add_into(&mut gb[..e], row);
        }
        for row in dkv.chunks(2 * e) {
            add_into(&mut gb[e..], row);
        }
        let w = self.in_proj_weight.v();
        let mut dx = vec![A::zero(); batch * lq * e];
        matmul(
            MatMut::row_major(&mut dx, 0, batch * lq, e),
            MatRef::row_major(&dq, 0, batch * lq, e),
            MatRef::row_major(w, 0, e, e),
            false,
        );
        let mut dsrc = vec![A::zero(); batch * lk * e];
        matmul(
            MatMut::row_major(&mut dsrc, 0, batch * lk, e),
            MatRef::row_major(&dkv, 0, batch * lk, 2 * e),
            MatRef::row_major(w, e * e, 2 * e, e),
            false,
        );
        if c.ctx.is_some() {
            (dx, Some(dsrc))
        } else {
            add_into(&mut dx, &dsrc);
            (dx, None)
        }
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
        let (dx, dctx) = self.backward_slice(cache, &std_slice(dy));
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
        let m = super::lane_max(row);
        for v in row.iter_mut() {
            *v = (*v - m) * scale;
        }
        A::exp_in_place(row);
        let sum = super::lane_dot(row, row, |v, _| v);
        let inv = A::one() / sum;
        for v in row.iter_mut() {
            *v = *v * inv;
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
