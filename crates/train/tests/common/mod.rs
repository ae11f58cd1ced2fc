//! Test support: a small MLP denoiser implementing the network interface (the same
//! architecture as `benches/pytorch/models.py::MlpDenoiser`), toy data
//! and helpers. Arithmetic is in f64 whatever the parameter type.
#![allow(dead_code)]

use diffusion_core::Rng;
use diffusion_train::net::NnError;
use diffusion_train::{Network, Param, Parameters, Scalar};
use ndarray::{Array2, ArrayD, Axis, IxDyn, s};

/// `concat(x, temb(t)) -> depth x [Linear(hidden), SiLU] -> Linear(dim)`, parameters named
/// `net.{2i}.weight` / `net.{2i}.bias` like a PyTorch `nn.Sequential`.
#[derive(Clone, Debug)]
pub struct Mlp<A> {
    pub dim: usize,
    pub temb: usize,
    pub layers: Vec<(String, Param<A>, String, Param<A>)>,
}

pub struct MlpCache {
    /// Input of each linear layer, and pre-activation of each hidden layer.
    inputs: Vec<Array2<f64>>,
    pre: Vec<Array2<f64>>,
}

fn to_f64<A: Scalar>(a: &ArrayD<A>) -> ArrayD<f64> {
    a.mapv(|v| v.as_f64())
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// PyTorch's `timestep_embedding`: `[cos(t f_i), sin(t f_i)]`, `f_i = 10000^(-i/half)`.
pub fn timestep_embedding(t: &[f64], dim: usize) -> Array2<f64> {
    let half = dim / 2;
    let mut out = Array2::zeros((t.len(), dim));
    for (b, &tb) in t.iter().enumerate() {
        for i in 0..half {
            let f = (-(10000f64).ln() * i as f64 / half as f64).exp();
            out[[b, i]] = (tb * f).cos();
            out[[b, half + i]] = (tb * f).sin();
        }
    }
    out
}

impl<A: Scalar> Mlp<A> {
    /// PyTorch's default Linear init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    pub fn new(dim: usize, hidden: usize, depth: usize, temb: usize, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let mut layers = Vec::new();
        let mut width = dim + temb;
        for i in 0..=depth {
            let out = if i == depth { dim } else { hidden };
            let bound = 1.0 / (width as f64).sqrt();
            let mut u = |n: usize| -> Vec<A> {
                (0..n)
                    .map(|_| A::of_f64((2.0 * rng.uniform() - 1.0) * bound))
                    .collect()
            };
            let w = ArrayD::from_shape_vec(IxDyn(&[out, width]), u(out * width)).unwrap();
            let b = ArrayD::from_shape_vec(IxDyn(&[out]), u(out)).unwrap();
            layers.push((
                format!("net.{}.weight", 2 * i),
                Param::new(w),
                format!("net.{}.bias", 2 * i),
                Param::new(b),
            ));
            width = hidden;
        }
        Self { dim, temb, layers }
    }

    /// All parameter values as one f64 vector (visit order).
    pub fn flat_values(&self) -> Vec<f64> {
        let mut v = Vec::new();
        self.visit(&mut |_, p| v.extend(p.value.iter().map(|x| x.as_f64())));
        v
    }
}

impl<A: Scalar> Parameters<A> for Mlp<A> {
    fn visit(&self, f: &mut dyn FnMut(&str, &Param<A>)) {
        for (wn, w, bn, b) in &self.layers {
            f(wn, w);
            f(bn, b);
        }
    }
    fn visit_mut(&mut self, f: &mut dyn FnMut(&str, &mut Param<A>)) {
        for (wn, w, bn, b) in &mut self.layers {
            f(wn, w);
            f(bn, b);
        }
    }
}

impl<A: Scalar> Network<A> for Mlp<A> {
    type Cache = MlpCache;

    fn forward(
        &self,
        x: &ArrayD<A>,
        t: &[A],
        _cond: Option<&[usize]>,
    ) -> diffusion_nn::Result<(ArrayD<A>, MlpCache)> {
        if x.ndim() != 2 || x.shape()[1] != self.dim || t.len() != x.shape()[0] {
            return Err(NnError::Input {
                name: "x",
                reason: format!("bad input shape {:?} / {} times", x.shape(), t.len()),
            });
        }
        let batch = x.shape()[0];
        let t: Vec<f64> = t.iter().map(|v| v.as_f64()).collect();
        let x = to_f64(x).into_dimensionality::<ndarray::Ix2>().unwrap();
        let mut h =
            ndarray::concatenate(Axis(1), &[x.view(), timestep_embedding(&t, self.temb).view()]).unwrap();
        let mut inputs = Vec::new();
        let mut pre = Vec::new();
        let n = self.layers.len();
        for (i, (_, w, _, b)) in self.layers.iter().enumerate() {
            let w = to_f64(&w.value).into_dimensionality::<ndarray::Ix2>().unwrap();
            let b = to_f64(&b.value).into_dimensionality::<ndarray::Ix1>().unwrap();
            let z = h.dot(&w.t()) + &b;
            inputs.push(h);
            if i + 1 < n {
                h = z.mapv(|v| v * sigmoid(v));
                pre.push(z);
            } else {
                h = z;
            }
        }
        let out = h.mapv(A::of_f64).into_dyn();
        debug_assert_eq!(out.shape()[0], batch);
        Ok((out, MlpCache { inputs, pre }))
    }

    fn backward(&mut self, cache: &MlpCache, dy: &ArrayD<A>) -> diffusion_nn::Result<ArrayD<A>> {
        let mut d = to_f64(dy)
            .into_dimensionality::<ndarray::Ix2>()
            .map_err(|_| NnError::Input {
                name: "dy",
                reason: "must be 2-D".into(),
            })?;
        let n = self.layers.len();
        for i in (0..n).rev() {
            let (_, w, _, b) = &mut self.layers[i];
            let input = &cache.inputs[i];
            let gw = d.t().dot(input);
            let gb = d.sum_axis(Axis(0));
            ndarray::Zip::from(&mut w.grad)
                .and(&gw.view().into_dyn())
                .for_each(|g, &v| *g = A::of_f64(g.as_f64() + v));
            ndarray::Zip::from(&mut b.grad)
                .and(&gb.view().into_dyn())
                .for_each(|g, &v| *g = A::of_f64(g.as_f64() + v));
            let wv = to_f64(&w.value).into_dimensionality::<ndarray::Ix2>().unwrap();
            let dx = d.dot(&wv);
            if i > 0 {
                let z = &cache.pre[i - 1];
                d = ndarray::Zip::from(&dx).and(z).map_collect(|&g, &z| {
                    let s = sigmoid(z);
                    g * s * (1.0 + z * (1.0 - s))
                });
            } else {
                d = dx;
            }
        }
        Ok(d.slice(s![.., ..self.dim]).mapv(A::of_f64).into_dyn())
    }

    fn input_shape(&self) -> Vec<usize> {
        vec![self.dim]
    }
}

/// `n` points of the 8-Gaussian ring: centres at radius `radius`, angle `2 pi k / 8`, std `std`.
pub fn eight_gaussians(n: usize, radius: f64, std: f64, rng: &mut Rng) -> ArrayD<f64> {
    let mut z = vec![0.0; 2 * n];
    rng.fill_normal(&mut z);
    let mut out = Vec::with_capacity(2 * n);
    for i in 0..n {
        let k = (rng.uniform() * 8.0) as usize % 8;
        let a = std::f64::consts::TAU * k as f64 / 8.0;
        out.push(radius * a.cos() + std * z[2 * i]);
        out.push(radius * a.sin() + std * z[2 * i + 1]);
    }
    ArrayD::from_shape_vec(IxDyn(&[n, 2]), out).unwrap()
}

/// Sliced Wasserstein-2 distance between two equally sized 2-D point sets over
/// `projections` evenly spaced directions (exact 1-D W2 per direction by sorting).
pub fn sliced_wasserstein(a: &ArrayD<f64>, b: &ArrayD<f64>, projections: usize) -> f64 {
    assert_eq!(a.shape(), b.shape());
    let n = a.shape()[0];
    let mut total = 0.0;
    for k in 0..projections {
        let th = std::f64::consts::PI * k as f64 / projections as f64;
        let (c, s) = (th.cos(), th.sin());
        let proj = |m: &ArrayD<f64>| {
            let mut v: Vec<f64> = (0..n).map(|i| c * m[[i, 0]] + s * m[[i, 1]]).collect();
            v.sort_by(f64::total_cmp);
            v
        };
        let (pa, pb) = (proj(a), proj(b));
        total += pa.iter().zip(&pb).map(|(x, y)| (x - y).powi(2)).sum::<f64>() / n as f64;
    }
    (total / projections as f64).sqrt()
}

/// A fresh empty scratch directory under the system temp dir, removed when dropped.
pub fn scratch_dir(tag: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("diffusion-train-{tag}-"))
        .tempdir()
        .unwrap()
}

/// DDPM's linear beta schedule (1e-4 .. 0.02, N steps) as alphas_cumprod, in f64.
pub fn linear_alphas_cumprod(n: usize) -> Vec<f64> {
    let mut acp = Vec::with_capacity(n);
    let mut prod = 1.0;
    for i in 0..n {
        let beta = 1e-4 + (0.02 - 1e-4) * i as f64 / (n - 1) as f64;
        prod *= 1.0 - beta;
        acp.push(prod);
    }
    acp
}
