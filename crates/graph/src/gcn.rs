//! A light graph convolutional network on `diffusion-nn`'s [`Linear`] layer, with
//! hand-written backward passes like the rest of the workspace.
//!
//! A layer computes `h = act(A_hat x W^T + b)` (the product with `W` skipped in a
//! weightless, LightGCN-style layer), optionally followed by row-wise L2 normalisation
//! (`F.normalize` in DiffGraph's encoders). A [`Gcn`] projects node features with an
//! input `Linear`, runs its layers, and returns the last layer's output or, with
//! `sum_layers`, the sum of every layer's output and the projected input.

use diffusion_core::Rng;
use diffusion_nn::Float;
use diffusion_nn::layers::{Linear, LinearCache};
use diffusion_nn::param::{Param, Parameters, visit_child, visit_child_mut};
use ndarray::{Array2, ArrayD, Ix2};

use crate::error::{GraphError, Result};
use crate::sparse::Csr;

/// Elementwise activation of a GCN layer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Activation {
    Identity,
    Relu,
    /// `max(x, slope x)` (DiffGraph uses slope 0.5).
    LeakyRelu(f64),
    Tanh,
}

impl Activation {
    fn apply<A: Float>(self, x: A) -> A {
        match self {
            Self::Identity => x,
            Self::Relu => x.max(A::zero()),
            Self::LeakyRelu(s) => {
                if x >= A::zero() {
                    x
                } else {
                    x * A::of_f64(s)
                }
            }
            Self::Tanh => x.tanh(),
        }
    }

    /// Derivative from the input `x` and output `y`.
    fn grad<A: Float>(self, x: A, y: A) -> A {
        match self {
            Self::Identity => A::one(),
            Self::Relu => {
                if x > A::zero() {
                    A::one()
                } else {
                    A::zero()
                }
            }
            Self::LeakyRelu(s) => {
                if x >= A::zero() {
                    A::one()
                } else {
                    A::of_f64(s)
                }
            }
            Self::Tanh => A::one() - y * y,
        }
    }
}

/// `F.normalize`'s floor on the row norm.
const NORM_EPS: f64 = 1e-12;

fn to2<A: Float>(x: ArrayD<A>) -> Array2<A> {
    x.into_dimensionality::<Ix2>().expect("2-d by construction")
}

/// One graph convolution.
#[derive(Clone, Debug)]
pub struct GcnLayer<A> {
    /// `None`: weightless propagation (LightGCN / DiffGraph).
    pub linear: Option<Linear<A>>,
    pub activation: Activation,
    /// Row-wise L2 normalisation of the output.
    pub normalize: bool,
}

/// What a layer's backward pass needs.
#[derive(Clone, Debug)]
pub struct GcnLayerCache<A> {
    linear: Option<LinearCache<A>>,
    pre: Array2<A>,
    act: Array2<A>,
    norms: Vec<A>,
    out: Array2<A>,
}

impl<A: Float> GcnLayer<A> {
    /// A layer with a `Linear(inp -> out)` (PyTorch initialisation from `rng`).
    pub fn new(inp: usize, out: usize, activation: Activation, normalize: bool, rng: &mut Rng) -> Self {
        Self {
            linear: Some(Linear::new(inp, out, true, rng)),
            activation,
            normalize,
        }
    }

    /// A weightless layer: `act(A_hat x)`.
    pub fn propagate_only(activation: Activation, normalize: bool) -> Self {
        Self {
            linear: None,
            activation,
            normalize,
        }
    }

    /// Forward pass; `x: [n, d]`.
    pub fn forward(&self, adj: &Csr, x: &Array2<A>) -> Result<(Array2<A>, GcnLayerCache<A>)> {
        let z = adj.matmul(x)?;
        let (pre, lin_cache) = match &self.linear {
            Some(l) => {
                let (y, c) = l.forward(&z.into_dyn())?;
                (to2(y), Some(c))
            }
            None => (z, None),
        };
        let act = pre.mapv(|v| self.activation.apply(v));
        let (out, norms) = if self.normalize {
            let mut out = act.clone();
            let mut norms = Vec::with_capacity(out.nrows());
            for mut row in out.rows_mut() {
                let norm = row
                    .iter()
                    .map(|&v| v * v)
                    .sum::<A>()
                    .sqrt()
                    .max(A::of_f64(NORM_EPS));
                row.mapv_inplace(|v| v / norm);
                norms.push(norm);
            }
            (out, norms)
        } else {
            (act.clone(), Vec::new())
        };
        Ok((
            out.clone(),
            GcnLayerCache {
                linear: lin_cache,
                pre,
                act,
                norms,
                out,
            },
        ))
    }

    /// Backward pass: accumulates the Linear's gradients, returns dL/dx.
    pub fn backward(&mut self, adj_t: &Csr, cache: &GcnLayerCache<A>, dy: &Array2<A>) -> Result<Array2<A>> {
        if dy.dim() != cache.out.dim() {
            return Err(GraphError::Shape {
                context: "GCN layer backward".into(),
                expected: vec![cache.out.nrows(), cache.out.ncols()],
                got: dy.shape().to_vec(),
            });
        }
        let mut g = dy.clone();
        if self.normalize {
            // y = h / |h|: dh = (dy - y (y . dy)) / |h| (the floor's branch has no such
            // term, but a row with |h| < 1e-12 does not occur in practice).
            for ((mut gr, yr), &norm) in g.rows_mut().into_iter().zip(cache.out.rows()).zip(&cache.norms) {
                let dot = gr.iter().zip(yr.iter()).map(|(&a, &b)| a * b).sum::<A>();
                for (gv, &yv) in gr.iter_mut().zip(yr.iter()) {
                    *gv = (*gv - yv * dot) / norm;
                }
            }
        }
        ndarray::Zip::from(&mut g)
            .and(&cache.pre)
            .and(&cache.act)
            .for_each(|gv, &x, &y| *gv = *gv * self.activation.grad(x, y));
        let dz = match (&mut self.linear, &cache.linear) {
            (Some(l), Some(c)) => to2(l.backward(c, &g.into_dyn())?),
            _ => g,
        };
        adj_t.matmul(&dz)
    }
}

impl<A> Parameters<A> for GcnLayer<A> {
    fn visit(&self, f: &mut dyn FnMut(&str, &Param<A>)) {
        if let Some(l) = &self.linear {
            visit_child("linear", l, f);
        }
    }
    fn visit_mut(&mut self, f: &mut dyn FnMut(&str, &mut Param<A>)) {
        if let Some(l) = &mut self.linear {
            visit_child_mut("linear", l, f);
        }
    }
}

/// An input projection and a stack of graph convolutions.
#[derive(Clone, Debug)]
pub struct Gcn<A> {
    pub input: Option<Linear<A>>,
    pub layers: Vec<GcnLayer<A>>,
    /// Return the sum of the projected input and every layer's output (LightGCN /
    /// DiffGraph) instead of the last layer's output.
    pub sum_layers: bool,
    /// With `sum_layers`: whether the sum includes the (projected) input itself.
    pub sum_input: bool,
}

/// Caches of a [`Gcn`] forward pass.
#[derive(Clone, Debug)]
pub struct GcnCache<A> {
    input: Option<LinearCache<A>>,
    layers: Vec<GcnLayerCache<A>>,
}

impl<A: Float> Gcn<A> {
    /// Kipf & Welling's GCN: `dims[0] -> dims[1] -> ... ` with ReLU between layers and
    /// none after the last; no input projection.
    pub fn kipf(dims: &[usize], rng: &mut Rng) -> Result<Self> {
        if dims.len() < 2 || dims.contains(&0) {
            return Err(GraphError::invalid(
                "GCN dims",
                format!("{dims:?}: need >= 2 positive widths"),
            ));
        }
        let last = dims.len() - 2;
        let layers = dims
            .windows(2)
            .enumerate()
            .map(|(i, w)| {
                let act = if i == last {
                    Activation::Identity
                } else {
                    Activation::Relu
                };
                GcnLayer::new(w[0], w[1], act, false, rng)
            })
            .collect();
        Ok(Self {
            input: None,
            layers,
            sum_layers: false,
            sum_input: false,
        })
    }

    /// DiffGraph's encoder: a `Linear(features -> dim)` projection, then `depth`
    /// weightless layers `normalize(leaky_relu(A_hat e, 0.5))`, summed with the projection.
    pub fn light(features: usize, dim: usize, depth: usize, rng: &mut Rng) -> Result<Self> {
        if features == 0 || dim == 0 {
            return Err(GraphError::invalid(
                "GCN width",
                "features and dim must be positive",
            ));
        }
        Ok(Self {
            input: Some(Linear::new(features, dim, true, rng)),
            layers: (0..depth)
                .map(|_| GcnLayer::propagate_only(Activation::LeakyRelu(0.5), true))
                .collect(),
            sum_layers: true,
            sum_input: true,
        })
    }

    /// Forward pass on node features `x: [n, features]`.
    pub fn forward(&self, adj: &Csr, x: &Array2<A>) -> Result<(Array2<A>, GcnCache<A>)> {
        if x.iter().any(|v| !v.is_finite()) {
            return Err(GraphError::invalid("node features", "non-finite value"));
        }
        let (mut h, input) = match &self.input {
            Some(l) => {
                let (y, c) = l.forward(&x.clone().into_dyn())?;
                (to2(y), Some(c))
            }
            None => (x.clone(), None),
        };
        let mut total = self.sum_layers.then(|| {
            if self.sum_input {
                h.clone()
            } else {
                Array2::zeros(h.dim())
            }
        });
        let mut caches = Vec::with_capacity(self.layers.len());
        for l in &self.layers {
            let (y, c) = l.forward(adj, &h)?;
            if let Some(t) = &mut total {
                t.zip_mut_with(&y, |a, &b| *a = *a + b);
            }
            caches.push(c);
            h = y;
        }
        Ok((
            total.unwrap_or(h),
            GcnCache {
                input,
                layers: caches,
            },
        ))
    }

    /// Backward pass from dL/d(output); accumulates parameter gradients, returns dL/dx.
    pub fn backward(&mut self, adj_t: &Csr, cache: &GcnCache<A>, dy: &Array2<A>) -> Result<Array2<A>> {
        let mut g = dy.clone();
        for (i, (l, c)) in self.layers.iter_mut().zip(&cache.layers).enumerate().rev() {
            let dx = l.backward(adj_t, c, &g)?;
            // The layer's input is in the sum too (the projected input only with sum_input).
            g = if self.sum_layers && (i > 0 || self.sum_input) {
                dx + dy
            } else {
                dx
            };
        }
        match (&mut self.input, &cache.input) {
            (Some(l), Some(c)) => Ok(to2(l.backward(c, &g.into_dyn())?)),
            _ => Ok(g),
        }
    }
}

impl<A> Parameters<A> for Gcn<A> {
    fn visit(&self, f: &mut dyn FnMut(&str, &Param<A>)) {
        if let Some(l) = &self.input {
            visit_child("input", l, f);
        }
        for (i, l) in self.layers.iter().enumerate() {
            visit_child(&format!("layers.{i}"), l, f);
        }
    }
    fn visit_mut(&mut self, f: &mut dyn FnMut(&str, &mut Param<A>)) {
        if let Some(l) = &mut self.input {
            visit_child_mut("input", l, f);
        }
        for (i, l) in self.layers.iter_mut().enumerate() {
            visit_child_mut(&format!("layers.{i}"), l, f);
        }
    }
}
