//! Whole networks on the GPU, built from a CPU model of `diffusion-nn` (so weights load the
//! one way they already do: safetensors into the CPU model, then `from_cpu`).

mod dit;
mod grads;
mod unet;

use std::sync::Arc;

use diffusion_nn::layers::Linear;

pub use dit::{GpuDit, GpuDitCache, GpuDitDenoiser, GpuDitGrads};
pub use unet::{GpuUNet, GpuUNetCache, GpuUNetGrads};

use crate::error::{CudaError, Result};
use crate::grad::column_sums;
use crate::layout::add_periodic;
use crate::ops::gemm_batched;
use crate::{CudaTensor, Gpu};

type T32 = CudaTensor<f32>;

/// A linear layer on the device: `y = x w^T + b` for `x: [rows, inputs]`.
pub(crate) struct GpuLinear {
    weight: T32,
    bias: Option<T32>,
    inputs: usize,
    outputs: usize,
}

impl GpuLinear {
    pub(crate) fn forward(&self, x: &T32, rows: usize) -> Result<T32> {
        let mut y = T32::zeros(x.gpu(), &[rows, self.outputs]);
        gemm_batched(
            x,
            &self.weight,
            1,
            (rows, self.inputs, self.outputs),
            false,
            true,
            &mut y,
        )?;
        if let Some(b) = &self.bias {
            add_periodic(&mut y, b)?;
        }
        Ok(y)
    }

    /// The parameter gradients for input rows `x` (`[rows, inputs]`) and output gradient `dy`
    /// (`[rows, outputs]`): `dW = dy^T x` and, with a bias, `db` = the column sums of `dy`.
    pub(crate) fn param_grads(&self, x: &T32, dy: &T32, rows: usize) -> Result<(T32, Option<T32>)> {
        let gpu = x.gpu();
        let mut dw = T32::zeros(gpu, &[self.outputs, self.inputs]);
        gemm_batched(dy, x, 1, (self.outputs, rows, self.inputs), true, false, &mut dw)?;
        let db = match &self.bias {
            Some(_) => {
                let mut db = T32::zeros(gpu, &[self.outputs]);
                column_sums(dy, rows, self.outputs, &mut db)?;
                Some(db)
            }
            None => None,
        };
        Ok((dw, db))
    }

    /// The input gradient `dx = dy W` (`[rows, inputs]`) for the output gradient `dy`.
    pub(crate) fn input_grad(&self, dy: &T32, rows: usize) -> Result<T32> {
        let mut dx = T32::zeros(dy.gpu(), &[rows, self.inputs]);
        gemm_batched(
            dy,
            &self.weight,
            1,
            (rows, self.outputs, self.inputs),
            false,
            false,
            &mut dx,
        )?;
        Ok(dx)
    }

    /// Rows `r0 .. r0 + outputs` of a weight `[*, inputs]` (row-major) and of its bias.
    pub(crate) fn from_rows(
        gpu: &Arc<Gpu>,
        weight: &[f32],
        bias: Option<&[f32]>,
        r0: usize,
        outputs: usize,
        inputs: usize,
    ) -> Result<Self> {
        let rows = |v: &[f32], width: usize| -> Result<Vec<f32>> {
            v.get(r0 * width..(r0 + outputs) * width)
                .map(<[f32]>::to_vec)
                .ok_or_else(|| CudaError::InvalidArgument {
                    name: "weights",
                    reason: format!(
                        "{} values, fewer than rows {r0}..{} of width {width}",
                        v.len(),
                        r0 + outputs
                    ),
                })
        };
        Ok(Self {
            weight: T32::from_host(gpu, &[outputs, inputs], &rows(weight, inputs)?)?,
            bias: bias
                .map(|b| T32::from_host(gpu, &[outputs], &rows(b, 1)?))
                .transpose()?,
            inputs,
            outputs,
        })
    }

    /// A whole `diffusion-nn` linear layer.
    pub(crate) fn from_cpu(gpu: &Arc<Gpu>, l: &Linear<f32>) -> Result<Self> {
        let (outputs, inputs) = (l.weight.value.shape()[0], l.weight.value.shape()[1]);
        let w: Vec<f32> = l.weight.value.iter().copied().collect();
        let b: Option<Vec<f32>> = l.bias.as_ref().map(|b| b.value.iter().copied().collect());
        Self::from_rows(gpu, &w, b.as_deref(), 0, outputs, inputs)
    }
}
