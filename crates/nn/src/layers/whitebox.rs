//! White-box CRATE blocks (Yu et al., "White-Box Transformers via Sparse Rate Reduction", 2023):
//! multi-head subspace self-attention (one shared Q = K = V projection per head) and one
//! ISTA sparse-coding step with ReLU. Inputs are token rows `[batch, tokens, dim]`.

use diffusion_core::Rng;
use ndarray::ArrayD;
use rayon::prelude::*;

use super::attention::{softmax_backward_rows, softmax_rows};
use super::linear::Linear;
use crate::error::{NnError, Result, check_shape};
use crate::gemm::{MatMut, MatRef, matmul};
use crate::kernels::{add_into, array, std_slice, uniform_array};
use crate::param::{Float, Param, Parameters, visit_child, visit_child_mut};

fn token_dims(shape: &[usize], dim: usize, what: &str) -> Result<(usize, usize)> {
    if shape.len() != 3 || shape[2] != dim {
        return Err(NnError::Shape {
            context: format!("{what} input [batch, tokens, {dim}]"),
            expected: vec![
                shape.first().copied().unwrap_or(0),
                shape.get(1).copied().unwrap_or(0),
                dim,
            ],
            got: shape.to_vec(),
        });
    }
    Ok((shape[0], shape[1]))
}

/// MSSA: `out = W_out concat_k(softmax(s (Z U_k)(Z U_k)^T) Z U_k) + b`, with the
/// subspace bases `U_k` packed as `qkv: [heads * head_dim, dim]` (no bias).
#[derive(Clone, Debug)]
pub struct SubspaceAttention<A> {
    dim: usize,
    heads: usize,
    head_dim: usize,
    pub qkv: Linear<A>,
    pub out: Linear<A>,
}

/// What [`SubspaceAttention`] keeps for the backward pass.
#[derive(Clone, Debug)]
pub struct SubspaceCache<A> {
    batch: usize,
    tokens: usize,
    x: Vec<A>,
    p: Vec<A>,
    probs: Vec<A>,
    o: Vec<A>,
}

impl<A: Float> SubspaceAttention<A> {
    pub fn new(dim: usize, heads: usize, head_dim: usize, rng: &mut Rng) -> Result<Self> {
        if heads == 0 || head_dim == 0 {
            return Err(NnError::Config {
                name: "SubspaceAttention",
                reason: "heads and head_dim must be positive".into(),
            });
        }
        Ok(Self {
            dim,
            heads,
            head_dim,
            qkv: Linear::new(dim, heads * head_dim, false, rng),
            out: Linear::new(heads * head_dim, dim, true, rng),
        })
    }

    pub fn forward(&self, x: &ArrayD<A>) -> Result<(ArrayD<A>, SubspaceCache<A>)> {
        let (batch, n) = token_dims(x.shape(), self.dim, "SubspaceAttention")?;
        let (h, d) = (self.heads, self.head_dim);
        let w = h * d;
        let xs = std_slice(x).into_owned();
        let p = self.qkv.forward_slice(&xs, batch * n);
        let scale: A = A::of_f64(1.0 / (d as f64).sqrt());
        let mut probs = vec![A::zero(); batch * h * n * n];
        let mut o = vec![A::zero(); batch * n * w];
        if n > 0 {
            probs
                .par_chunks_mut(h * n * n)
                .zip(o.par_chunks_mut(n * w))
                .enumerate()
                .for_each(|(b, (pb, ob))| {
                    for k in 0..h {
                        let u = MatRef::strided(&p, b * n * w + k * d, n, d, w);
                        let s = &mut pb[k * n * n..(k + 1) * n * n];
                        matmul(MatMut::row_major(s, 0, n, n), u, u.t(), false);
                        softmax_rows(s, n, scale);
                        matmul(
                            MatMut::strided(ob, k * d, n, d, w),
                            MatRef::row_major(s, 0, n, n),
                            u,
                            false,
                        );
                    }
                });
        }
        let y = self.out.forward_slice(&o, batch * n);
        Ok((
            array(x.shape(), y),
            SubspaceCache {
                batch,
                tokens: n,
                x: xs,
                p,
                probs,
                o,
            },
        ))
    }

    pub fn backward(&mut self, c: &SubspaceCache<A>, dy: &ArrayD<A>) -> Result<ArrayD<A>> {
        let (batch, n) = (c.batch, c.tokens);
        check_shape("SubspaceAttention backward dy", &[batch, n, self.dim], dy.shape())?;
        let (h, d) = (self.heads, self.head_dim);
        let w = h * d;
        let scale: A = A::of_f64(1.0 / (d as f64).sqrt());
        let d_o = self.out.backward_slice(&c.o, &std_slice(dy), batch * n, true);
        let mut dp = vec![A::zero(); batch * n * w];
        if n > 0 {
            dp.par_chunks_mut(n * w).enumerate().for_each(|(b, dpb)| {
                let mut ds = vec![A::zero(); n * n];
                for k in 0..h {
                    let pr = &c.probs[(b * h + k) * n * n..(b * h + k + 1) * n * n];
                    let u = MatRef::strided(&c.p, b * n * w + k * d, n, d, w);
                    let dom = MatRef::strided(&d_o, b * n * w + k * d, n, d, w);
                    // value path: dU += P^T dO
                    matmul(
                        MatMut::strided(dpb, k * d, n, d, w),
                        MatRef::row_major(pr, 0, n, n).t(),
                        dom,
                        true,
                    );
                    matmul(MatMut::row_major(&mut ds, 0, n, n), dom, u.t(), false);
                    softmax_backward_rows(&mut ds, pr, n, scale);
                    // query and key paths: dU += dS U + dS^T U
                    let dsm = MatRef::row_major(&ds, 0, n, n);
                    matmul(MatMut::strided(dpb, k * d, n, d, w), dsm, u, true);
                    matmul(MatMut::strided(dpb, k * d, n, d, w), dsm.t(), u, true);
                }
            });
        }
        let dx = self.qkv.backward_slice(&c.x, &dp, batch * n, true);
        Ok(array(&[batch, n, self.dim], dx))
    }
}

impl<A> Parameters<A> for SubspaceAttention<A> {
    fn visit(&self, f: &mut dyn FnMut(&str, &Param<A>)) {
        visit_child("qkv", &self.qkv, f);
        visit_child("out", &self.out, f);
    }
    fn visit_mut(&mut self, f: &mut dyn FnMut(&str, &mut Param<A>)) {
        visit_child_mut("qkv", &mut self.qkv, f);
        visit_child_mut("out", &mut self.out, f);
    }
}

/// One ISTA step towards a sparse code in the (learned, square) dictionary `D = weight`:
/// `out = relu(x + eta (x D - x D^T D) - eta lambda)` per token row.
#[derive(Clone, Debug)]
pub struct IstaBlock<A> {
    pub weight: Param<A>,
    pub step_size: f64,
    pub lambda: f64,
}

/// The input and the pre-activation, kept for the backward pass.
#[derive(Clone, Debug)]
pub struct IstaCache<A> {
    x: Vec<A>,
    xdt: Vec<A>,
    u: Vec<A>,
    shape: Vec<usize>,
}

impl<A: Float> IstaBlock<A> {
    pub fn new(dim: usize, step_size: f64, lambda: f64, rng: &mut Rng) -> Self {
        let bound = 1.0 / (dim.max(1) as f64).sqrt();
        Self {
            weight: Param::new(uniform_array(&[dim, dim], bound, rng)),
            step_size,
            lambda,
        }
    }

    fn dim(&self) -> usize {
        self.weight.value.shape()[0]
    }

    pub fn forward(&self, x: &ArrayD<A>) -> Result<(ArrayD<A>, IstaCache<A>)> {
        let d = self.dim();
        if x.shape().last() != Some(&d) {
            return Err(NnError::Shape {
                context: "IstaBlock input (last axis)".into(),
                expected: vec![d],
                got: x.shape().to_vec(),
            });
        }
        let xs = std_slice(x).into_owned();
        let rows = xs.len() / d;
        let wm = MatRef::row_major(self.weight.v(), 0, d, d);
        let mut xdt = vec![A::zero(); xs.len()];
        matmul(
            MatMut::row_major(&mut xdt, 0, rows, d),
            MatRef::row_major(&xs, 0, rows, d),
            wm.t(),
            false,
        );
        // r = x - x D^T (the residual in dictionary space), then u = x + eta * r D - eta * lambda.
        let r: Vec<A> = xs.iter().zip(&xdt).map(|(&a, &b)| a - b).collect();
        let mut rd = vec![A::zero(); xs.len()];
        matmul(
            MatMut::row_major(&mut rd, 0, rows, d),
            MatRef::row_major(&r, 0, rows, d),
            wm,
            false,
        );
        let (eta, shift): (A, A) = (A::of_f64(self.step_size), A::of_f64(self.step_size * self.lambda));
        let u: Vec<A> = xs.iter().zip(&rd).map(|(&a, &b)| a + eta * b - shift).collect();
        let y: Vec<A> = u.iter().map(|&v| v.max(A::zero())).collect();
        Ok((
            array(x.shape(), y),
            IstaCache {
                x: xs,
                xdt,
                u,
                shape: x.shape().to_vec(),
            },
        ))
    }

    pub fn backward(&mut self, c: &IstaCache<A>, dy: &ArrayD<A>) -> Result<ArrayD<A>> {
        check_shape("IstaBlock backward dy", &c.shape, dy.shape())?;
        let d = self.dim();
        let rows = c.x.len() / d;
        let eta: A = A::of_f64(self.step_size);
        let g: Vec<A> = std_slice(dy)
            .iter()
            .zip(&c.u)
            .map(|(&g, &u)| if u > A::zero() { g } else { A::zero() })
            .collect();
        let w = self.weight.v().to_vec();
        let wm = MatRef::row_major(&w, 0, d, d);
        // gwt = g D^T ; r = x - x D^T
        let mut gwt = vec![A::zero(); g.len()];
        matmul(
            MatMut::row_major(&mut gwt, 0, rows, d),
            MatRef::row_major(&g, 0, rows, d),
            wm.t(),
            false,
        );
        let r: Vec<A> = c.x.iter().zip(&c.xdt).map(|(&a, &b)| a - b).collect();
        // dD = eta * (r^T g - (g D^T)^T x)
        let mut gw = vec![A::zero(); d * d];
        matmul(
            MatMut::row_major(&mut gw, 0, d, d),
            MatRef::row_major(&r, 0, rows, d).t(),
            MatRef::row_major(&g, 0, rows, d),
            false,
        );
        let mut gw2 = vec![A::zero(); d * d];
        matmul(
            MatMut::row_major(&mut gw2, 0, d, d),
            MatRef::row_major(&gwt, 0, rows, d).t(),
            MatRef::row_major(&c.x, 0, rows, d),
            false,
        );
        for (acc, (a, b)) in self.weight.g().iter_mut().zip(gw.iter().zip(&gw2)) {
            *acc = *acc + eta * (*a - *b);
        }
        // dx = g + eta * (g D^T - (g D^T) D)
        let mut gwtw = vec![A::zero(); g.len()];
        matmul(
            MatMut::row_major(&mut gwtw, 0, rows, d),
            MatRef::row_major(&gwt, 0, rows, d),
            wm,
            false,
        );
        let mut dx = g.clone();
        let upd: Vec<A> = gwt.iter().zip(&gwtw).map(|(&a, &b)| eta * (a - b)).collect();
        add_into(&mut dx, &upd);
        Ok(array(&c.shape, dx))
    }
}

impl<A> Parameters<A> for IstaBlock<A> {
    fn visit(&self, f: &mut dyn FnMut(&str, &Param<A>)) {
        f("weight", &self.weight);
    }
    fn visit_mut(&mut self, f: &mut dyn FnMut(&str, &mut Param<A>)) {
        f("weight", &mut self.weight);
    }
}
