//! Fully connected layer acting on the last axis (PyTorch `nn.Linear` layout).

use diffusion_core::Rng;
use ndarray::ArrayD;

use rayon::prelude::*;

use crate::error::{NnError, Result};
use crate::gemm::{MatMut, MatRef, matmul, matmul_new, matmul_serial, matmul_serial_if};
use crate::kernels::{
    add_column_sums, add_into, add_row_bias, array, column_sums_seq, repeat_rows, std_slice, uniform_array,
};
use crate::param::{Float, Param, Parameters};

/// `y = x W^T + b`, `W: [out, in]`.
#[derive(Clone, Debug)]
pub struct Linear<A> {
    pub weight: Param<A>,
    pub bias: Option<Param<A>>,
}

/// The input, kept for the backward pass.
#[derive(Clone, Debug)]
pub struct LinearCache<A> {
    pub(crate) x: Vec<A>,
    pub(crate) shape: Vec<usize>,
}

impl<A: Float> Linear<A> {
    /// PyTorch's default initialisation: weight and bias `U(-1/sqrt(in), 1/sqrt(in))`.
    pub fn new(inp: usize, out: usize, bias: bool, rng: &mut Rng) -> Self {
        let bound = 1.0 / (inp.max(1) as f64).sqrt();
        Self {
            weight: Param::new(uniform_array(&[out, inp], bound, rng)),
            bias: bias.then(|| Param::new(uniform_array(&[out], bound, rng))),
        }
    }

    pub fn in_features(&self) -> usize {
        self.weight.value.shape()[1]
    }

    pub fn out_features(&self) -> usize {
        self.weight.value.shape()[0]
    }

    fn rows(&self, shape: &[usize]) -> Result<usize> {
        let inp = self.in_features();
        match shape.last() {
            Some(&d) if d == inp => Ok(shape.iter().product::<usize>() / inp.max(1)),
            _ => Err(NnError::Shape {
                context: format!("Linear({inp} -> {}) input (last axis)", self.out_features()),
                expected: vec![inp],
                got: shape.to_vec(),
            }),
        }
    }

    /// `y = x W^T + b` on rows of a slice (`x.len() = rows * in`).
    pub(crate) fn forward_slice(&self, x: &[A], rows: usize) -> Vec<A> {
        let (inp, out) = (self.in_features(), self.out_features());
        let xm = MatRef::row_major(x, 0, rows, inp);
        let wt = MatRef::row_major(self.weight.v(), 0, out, inp).t();
        // Start from the bias rows (written once, not zeroed first) and accumulate x W^T.
        let Some(b) = &self.bias else {
            return matmul_new(xm, wt, false);
        };
        let mut y = repeat_rows(b.v(), rows);
        matmul(MatMut::row_major(&mut y, 0, rows, out), xm, wt, true);
        y
    }

    /// `x W^T` without the bias, for a caller that adds it in a pass of its own; on the
    /// calling thread when `serial`. `wt`: the weight's [`Self::weight_t`], for callers that
    /// run many products with it.
    pub(crate) fn forward_unbiased(&self, x: &[A], rows: usize, serial: bool, wt: Option<&[A]>) -> Vec<A> {
        let (inp, out) = (self.in_features(), self.out_features());
        let w = match wt {
            Some(wt) => MatRef::row_major(wt, 0, inp, out),
            None => MatRef::row_major(self.weight.v(), 0, out, inp).t(),
        };
        matmul_new(MatRef::row_major(x, 0, rows, inp), w, serial)
    }

    /// `W^T` (`[in, out]`) as a row-major copy. gemm packs a product's right operand once
    /// per block of output rows, and a transposed view of `W` one scalar load at a time;
    /// a layer applied to many row blocks or tasks makes this copy once for all of them.
    pub(crate) fn weight_t(&self) -> Vec<A> {
        crate::transpose::transposed(self.weight.v(), self.out_features(), self.in_features())
    }

    /// `y = x W^T + b` on the calling thread (for work already split across threads).
    pub(crate) fn forward_serial(&self, x: &[A], rows: usize) -> Vec<A> {
        let mut y = self.forward_unbiased(x, rows, true, None);
        add_row_bias(&mut y, self.bias_values());
        y
    }

    /// The backward of [`Self::forward_serial`] on the calling thread: accumulates the
    /// parameter gradients and returns `dx`.
    pub(crate) fn backward_serial(&mut self, x: &[A], dy: &[A], rows: usize) -> Vec<A> {
        let out = self.out_features();
        self.add_weight_grad(x, dy, rows, true);
        if let Some(b) = &mut self.bias {
            add_into(b.g(), &column_sums_seq(&dy[..rows * out], out));
        }
        self.input_grad(dy, rows, true)
    }

    /// `dW += dy^T x` over `rows` rows, on the calling thread when `serial`.
    fn add_weight_grad(&mut self, x: &[A], dy: &[A], rows: usize, serial: bool) {
        let (inp, out) = (self.in_features(), self.out_features());
        matmul_serial_if(
            serial,
            MatMut::row_major(self.weight.g(), 0, out, inp),
            MatRef::row_major(dy, 0, rows, out).t(),
            MatRef::row_major(x, 0, rows, inp),
            true,
        );
    }

    /// The bias values, if the layer has a bias.
    pub(crate) fn bias_values(&self) -> Option<&[A]> {
        self.bias.as_ref().map(|b| b.v())
    }

    /// `dx = dy W` for rows of `dy` (no parameter gradients), on the calling thread when
    /// `serial`.
    pub(crate) fn input_grad(&self, dy: &[A], rows: usize, serial: bool) -> Vec<A> {
        let (inp, out) = (self.in_features(), self.out_features());
        matmul_new(
            MatRef::row_major(dy, 0, rows, out),
            MatRef::row_major(self.weight.v(), 0, out, inp),
            serial,
        )
    }

    /// The weight and bias gradients of rows `x` with output gradient `dy`, as one vector
    /// `[dW | db]`, computed on the calling thread (to be added with
    /// [`Self::add_param_grads`]).
    pub(crate) fn param_grads_serial(&self, x: &[A], dy: &[A], rows: usize) -> Vec<A> {
        let (inp, out) = (self.in_features(), self.out_features());
        let mut g = vec![A::zero(); out * inp + if self.bias.is_some() { out } else { 0 }];
        let (gw, gb) = g.split_at_mut(out * inp);
        matmul_serial(
            MatMut::row_major(gw, 0, out, inp),
            MatRef::row_major(dy, 0, rows, out).t(),
            MatRef::row_major(x, 0, rows, inp),
            false,
        );
        if !gb.is_empty() {
            gb.copy_from_slice(&column_sums_seq(&dy[..rows * out], out));
        }
        g
    }

    /// Adds a `[dW | db]` vector from [`Self::param_grads_serial`] to the gradients.
    pub(crate) fn add_param_grads(&mut self, g: &[A]) {
        let wlen = self.weight.value.len();
        add_into(self.weight.g(), &g[..wlen]);
        if let Some(b) = &mut self.bias {
            add_into(b.g(), &g[wlen..]);
        }
    }

    /// Accumulates parameter gradients for input rows `x` and output gradient `dy`; returns dx.
    pub(crate) fn backward_slice(&mut self, x: &[A], dy: &[A], rows: usize, need_dx: bool) -> Vec<A> {
        self.backward_slice_with_bias_grad(x, dy, rows, need_dx, None)
    }

    /// [`Self::backward_slice`] with the bias gradient (`dy`'s column sums) given, when the
    /// pass that wrote `dy` summed it while the rows were in cache; `None` sums it here.
    pub(crate) fn backward_slice_with_bias_grad(
        &mut self,
        x: &[A],
        dy: &[A],
        rows: usize,
        need_dx: bool,
        db: Option<&[A]>,
    ) -> Vec<A> {
        let out = self.out_features();
        self.add_weight_grad(x, dy, rows, false);
        if let Some(b) = &mut self.bias {
            match db {
                Some(db) => {
                    assert_eq!(db.len(), out, "bias gradient length");
                    add_into(b.g(), db);
                }
                None => add_column_sums(b.g(), &dy[..rows * out]),
            }
        }
        if !need_dx {
            return Vec::new();
        }
        self.input_grad(dy, rows, false)
    }

    /// Forward pass; `x: [..., in]` -> `[..., out]`.
    pub fn forward(&self, x: &ArrayD<A>) -> Result<(ArrayD<A>, LinearCache<A>)> {
        let rows = self.rows(x.shape())?;
        let xs = std_slice(x).into_owned();
        let y = self.forward_slice(&xs, rows);
        let mut shape = x.shape().to_vec();
        *shape.last_mut().expect("checked non-empty") = self.out_features();
        Ok((
            array(&shape, y),
            LinearCache {
                x: xs,
                shape: x.shape().to_vec(),
            },
        ))
    }

    /// Forward pass without a cache.
    pub fn apply(&self, x: &ArrayD<A>) -> Result<ArrayD<A>> {
        let rows = self.rows(x.shape())?;
        let y = self.forward_slice(&std_slice(x), rows);
        let mut shape = x.shape().to_vec();
        *shape.last_mut().expect("checked non-empty") = self.out_features();
        Ok(array(&shape, y))
    }

    /// Backward pass: accumulates `weight.grad`/`bias.grad`, returns dL/dx.
    pub fn backward(&mut self, cache: &LinearCache<A>, dy: &ArrayD<A>) -> Result<ArrayD<A>> {
        let rows = self.rows(&cache.shape)?;
        let mut out_shape = cache.shape.clone();
        *out_shape.last_mut().expect("checked") = self.out_features();
        crate::error::check_shape("Linear backward dy", &out_shape, dy.shape())?;
        let dx = self.backward_slice(&cache.x, &std_slice(dy), rows, true);
        Ok(array(&cache.shape, dx))
    }
}

/// Several layers applied to the same input `x` (`rows` rows): each product on one thread,
/// the layers in parallel. For small products (the DiT's per-block adaLN projections of one
/// conditioning row per item), which split across the threads one after another would each
/// be too thin to pay for the hand-offs.
pub(crate) fn forward_each<A: Float>(layers: &[&Linear<A>], x: &[A], rows: usize) -> Vec<Vec<A>> {
    layers.par_iter().map(|l| l.forward_serial(x, rows)).collect()
}

/// The backward of [`forward_each`] from each layer's output gradient `dys[i]`: accumulates
/// the parameter gradients and returns the sum of the input gradients, added in layer order.
pub(crate) fn backward_each<A: Float>(
    layers: &mut [&mut Linear<A>],
    x: &[A],
    dys: &[Vec<A>],
    rows: usize,
) -> Vec<A> {
    assert_eq!(layers.len(), dys.len(), "one output gradient per layer");
    let dxs: Vec<Vec<A>> = layers
        .par_iter_mut()
        .zip(dys)
        .map(|(l, dy)| l.backward_serial(x, dy, rows))
        .collect();
    let mut dx = vec![A::zero(); x.len()];
    for d in &dxs {
        add_into(&mut dx, d);
    }
    dx
}

impl<A> Parameters<A> for Linear<A> {
    fn visit(&self, f: &mut dyn FnMut(&str, &Param<A>)) {
        f("weight", &self.weight);
        if let Some(b) = &self.bias {
            f("bias", b);
        }
    }
    fn visit_mut(&mut self, f: &mut dyn FnMut(&str, &mut Param<A>)) {
        f("weight", &mut self.weight);
        if let Some(b) = &mut self.bias {
            f("bias", b);
        }
    }
}
