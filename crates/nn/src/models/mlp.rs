//! `mlp`: `concat(x, temb) -> depth x [Linear, SiLU] -> Linear(dim)` (reference `MlpDenoiser`).

use diffusion_core::Rng;
use ndarray::ArrayD;

use crate::error::{NnError, Result};
use crate::layers::activation::{silu_backward_in_place, silu_in_place, silu_slice};
use crate::layers::{Linear, array, std_slice, timestep_embedding};
use crate::network::{Network, check_input};
use crate::param::{Float, Param, Parameters, join_name};

/// Sizes of an [`MlpDenoiser`]; `Default` is the reference `mlp` (231,426 parameters).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MlpConfig {
    pub dim: usize,
    pub hidden: usize,
    pub depth: usize,
    pub temb: usize,
}

impl Default for MlpConfig {
    fn default() -> Self {
        Self {
            dim: 2,
            hidden: 256,
            depth: 4,
            temb: 128,
        }
    }
}

/// A small MLP denoiser for low-dimensional data.
#[derive(Clone, Debug)]
pub struct MlpDenoiser<A> {
    cfg: MlpConfig,
    /// `net.0, net.2, ...` in PyTorch naming (odd indices are the SiLUs).
    pub layers: Vec<Linear<A>>,
}

/// Inputs of each Linear and pre-activations of each SiLU.
#[derive(Clone, Debug)]
pub struct MlpCache<A> {
    batch: usize,
    inputs: Vec<Vec<A>>,
    pre: Vec<Vec<A>>,
}

impl<A: Float> MlpDenoiser<A> {
    pub fn new(cfg: MlpConfig, rng: &mut Rng) -> Result<Self> {
        if cfg.dim == 0 || cfg.hidden == 0 || !cfg.temb.is_multiple_of(2) {
            return Err(NnError::Config {
                name: "MlpConfig",
                reason: format!("{cfg:?}: dim and hidden must be positive and temb even"),
            });
        }
        let mut layers = Vec::new();
        let mut width = cfg.dim + cfg.temb;
        for _ in 0..cfg.depth {
            layers.push(Linear::new(width, cfg.hidden, true, rng));
            width = cfg.hidden;
        }
        layers.push(Linear::new(width, cfg.dim, true, rng));
        Ok(Self { cfg, layers })
    }

    pub fn config(&self) -> MlpConfig {
        self.cfg
    }

    fn input(&self, x: &ArrayD<A>, t: &[A]) -> Result<(usize, Vec<A>)> {
        let batch = check_input(x, &[self.cfg.dim], t, "MlpDenoiser input")?;
        let temb = timestep_embedding(t, self.cfg.temb, 10000.0);
        let (xs, es) = (std_slice(x), std_slice(&temb));
        let (d, e) = (self.cfg.dim, self.cfg.temb);
        let mut h = Vec::with_capacity(batch * (d + e));
        for b in 0..batch {
            h.extend_from_slice(&xs[b * d..(b + 1) * d]);
            h.extend_from_slice(&es[b * e..(b + 1) * e]);
        }
        Ok((batch, h))
    }
}

impl<A: Float> Network<A> for MlpDenoiser<A> {
    type Cache = MlpCache<A>;

    fn forward(&self, x: &ArrayD<A>, t: &[A], _cond: Option<&[usize]>) -> Result<(ArrayD<A>, MlpCache<A>)> {
        let (batch, mut h) = self.input(x, t)?;
        let mut inputs = Vec::with_capacity(self.layers.len());
        let mut pre = Vec::with_capacity(self.cfg.depth);
        let last = self.layers.len() - 1;
        for (i, layer) in self.layers.iter().enumerate() {
            let z = layer.forward_slice(&h, batch);
            inputs.push(std::mem::take(&mut h));
            if i < last {
                h = silu_slice(&z);
                pre.push(z);
            } else {
                h = z;
            }
        }
        Ok((array(&[batch, self.cfg.dim], h), MlpCache { batch, inputs, pre }))
    }

    fn backward(&mut self, cache: &MlpCache<A>, dy: &ArrayD<A>) -> Result<ArrayD<A>> {
        crate::error::check_shape(
            "MlpDenoiser backward dy",
            &[cache.batch, self.cfg.dim],
            dy.shape(),
        )?;
        let mut g = std_slice(dy).into_owned();
        let last = self.layers.len() - 1;
        for i in (0..=last).rev() {
            if i < last {
                silu_backward_in_place(&cache.pre[i], &mut g);
            }
            g = self.layers[i].backward_slice(&cache.inputs[i], &g, cache.batch, true);
        }
        let w = self.cfg.dim + self.cfg.temb;
        let dx: Vec<A> = g
            .chunks(w)
            .flat_map(|r| r[..self.cfg.dim].iter().copied())
            .collect();
        Ok(array(&[cache.batch, self.cfg.dim], dx))
    }

    fn input_shape(&self) -> Vec<usize> {
        vec![self.cfg.dim]
    }

    fn infer(&self, x: &ArrayD<A>, t: &[A], _cond: Option<&[usize]>) -> Result<ArrayD<A>> {
        let (batch, mut h) = self.input(x, t)?;
        let last = self.layers.len() - 1;
        for (i, layer) in self.layers.iter().enumerate() {
            h = layer.forward_slice(&h, batch);
            if i < last {
                silu_in_place(&mut h);
            }
        }
        Ok(array(&[batch, self.cfg.dim], h))
    }
}

impl<A> Parameters<A> for MlpDenoiser<A> {
    fn visit(&self, f: &mut dyn FnMut(&str, &Param<A>)) {
        for (i, l) in self.layers.iter().enumerate() {
            l.visit(&mut |n, p| f(&join_name(&format!("net.{}", 2 * i), n), p));
        }
    }
    fn visit_mut(&mut self, f: &mut dyn FnMut(&str, &mut Param<A>)) {
        for (i, l) in self.layers.iter_mut().enumerate() {
            l.visit_mut(&mut |n, p| f(&join_name(&format!("net.{}", 2 * i), n), p));
        }
    }
}
