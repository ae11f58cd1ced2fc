//! A quantized copy of `diffusion-nn`'s MLP denoiser that is an ordinary
//! [`diffusion_core::Denoiser`]: every sampler runs it unchanged.
//!
//! The structure is the MLP's own: `concat(x, temb(t)) -> depth x [Linear, SiLU] -> Linear`,
//! with the same sinusoidal embedding (`diffusion_nn::layers::embed::timestep_embedding`,
//! max period 10 000), so the unquantized copy reproduces `MlpDenoiser::infer`.

use diffusion_core::{Denoiser, NoiseLevel, Parameterization};
use diffusion_nn::layers::embed::timestep_embedding;
use diffusion_nn::models::mlp::MlpDenoiser;
use ndarray::ArrayD;

use crate::calib::Calibration;
use crate::error::{QuantError, Result};
use crate::linear::{Exec, QuantLinear, Recipe};

/// At most this many calibration rows per layer are kept (evenly strided), so calibration
/// cost stays bounded.
pub const MAX_CALIB_ROWS: usize = 16_384;

/// The quantized MLP denoiser.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantMlp {
    pub dim: usize,
    pub temb: usize,
    /// PyTorch names `net.0, net.2, ...` (the odd indices are the SiLUs).
    pub layers: Vec<QuantLinear>,
    pub exec: Exec,
    pub parameterization: Parameterization,
}

impl QuantMlp {
    /// The unquantized copy of `model` (f32 weights and activations).
    pub fn float(model: &MlpDenoiser<f32>, parameterization: Parameterization) -> Result<Self> {
        let layers = model
            .layers
            .iter()
            .enumerate()
            .map(|(i, l)| QuantLinear::build(&layer_name(i), l, &Recipe::default(), None))
            .collect::<Result<_>>()?;
        let cfg = model.config();
        Ok(Self {
            dim: cfg.dim,
            temb: cfg.temb,
            layers,
            exec: Exec::Fake,
            parameterization,
        })
    }

    /// `model` with every Linear quantized by `recipe(layer index, layer count)`, the
    /// calibration inputs of each layer taken from the full-precision model run on `calib`.
    pub fn quantize(
        model: &MlpDenoiser<f32>,
        parameterization: Parameterization,
        calib: Option<&Calibration>,
        recipe: impl Fn(usize, usize) -> Recipe,
    ) -> Result<Self> {
        let float = Self::float(model, parameterization)?;
        let inputs = match calib {
            Some(c) => Some(float.layer_inputs(c)?),
            None => None,
        };
        let n = model.layers.len();
        let layers = model
            .layers
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let rows = inputs.as_ref().map(|v| v[i].as_slice());
                QuantLinear::build(&layer_name(i), l, &recipe(i, n), rows)
            })
            .collect::<Result<_>>()?;
        Ok(Self { layers, ..float })
    }

    /// Runs the model with the given execution mode.
    pub fn with_exec(mut self, exec: Exec) -> Self {
        self.exec = exec;
        self
    }

    /// The full-precision inputs of every layer over the calibration set (each at most
    /// [`MAX_CALIB_ROWS`] rows).
    pub fn layer_inputs(&self, calib: &Calibration) -> Result<Vec<Vec<f32>>> {
        if calib.is_empty() {
            return Err(QuantError::EmptyCalibration(
                "calibration set has no samples".into(),
            ));
        }
        let mut per_layer = vec![Vec::new(); self.layers.len()];
        for b in &calib.batches {
            self.run(&b.x, b.rows(), b.level.timestep as f32, &mut |i, x| {
                per_layer[i].extend_from_slice(x)
            })?;
        }
        Ok(per_layer
            .into_iter()
            .zip(&self.layers)
            .map(|(rows, l)| subsample(rows, l.in_features, MAX_CALIB_ROWS))
            .collect())
    }

    /// The model output for `rows` items `x` (`[rows, dim]`) at model time `t`.
    pub fn forward(&self, x: &[f32], rows: usize, t: f32) -> Result<Vec<f32>> {
        self.run(x, rows, t, &mut |_, _| {})
    }

    fn run(
        &self,
        x: &[f32],
        rows: usize,
        t: f32,
        observe: &mut dyn FnMut(usize, &[f32]),
    ) -> Result<Vec<f32>> {
        crate::quantizer::check_matrix(x, rows, self.dim, "QuantMlp input")?;
        let emb = timestep_embedding(&vec![t; rows], self.temb, 10000.0);
        let width = self.dim + self.temb;
        let mut h = Vec::with_capacity(rows * width);
        for (xr, er) in x
            .chunks(self.dim)
            .zip(emb.as_slice().expect("standard layout").chunks(self.temb))
        {
            h.extend_from_slice(xr);
            h.extend_from_slice(er);
        }
        let last = self.layers.len() - 1;
        for (i, layer) in self.layers.iter().enumerate() {
            observe(i, &h);
            h = layer.forward(&h, rows, self.exec)?;
            if i < last {
                for v in &mut h {
                    *v /= 1.0 + (-*v).exp();
                }
            }
        }
        Ok(h)
    }

    /// Bytes of all layers' weights as executed (see [`QuantLinear::weight_bytes`]).
    pub fn weight_bytes(&self) -> usize {
        self.layers.iter().map(QuantLinear::weight_bytes).sum()
    }
}

/// The PyTorch name of the `i`-th Linear of the MLP.
pub fn layer_name(i: usize) -> String {
    format!("net.{}", 2 * i)
}

/// At most `max` rows of `[n, cols]` data, evenly strided (deterministic).
fn subsample(rows: Vec<f32>, cols: usize, max: usize) -> Vec<f32> {
    let n = rows.len() / cols.max(1);
    if n <= max {
        return rows;
    }
    (0..max)
        .flat_map(|i| {
            let r = i * n / max;
            rows[r * cols..(r + 1) * cols].to_vec()
        })
        .collect()
}

impl Denoiser<ArrayD<f32>> for QuantMlp {
    fn parameterization(&self) -> Parameterization {
        self.parameterization
    }

    fn predict(&self, x: &ArrayD<f32>, level: NoiseLevel) -> diffusion_core::Result<ArrayD<f32>> {
        let rows = x.shape().first().copied().unwrap_or(0);
        let xs: Vec<f32> = x.iter().copied().collect();
        let y = self
            .forward(&xs, rows, level.timestep as f32)
            .map_err(|e| diffusion_core::CoreError::Model(e.to_string()))?;
        Ok(ArrayD::from_shape_vec(x.raw_dim(), y).expect("the output has the input's shape"))
    }
}
