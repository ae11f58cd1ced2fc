//! Gradients by parameter name, shared by the models' backward passes: a GPU model may split
//! one CPU layer by rows (attention's q/k/v), so each part is recorded under the CPU
//! parameter's name and the parts are joined in row order, named, shaped and ordered as the
//! CPU model's `Parameters::visit`.

use std::collections::HashMap;
use std::sync::Arc;

use crate::Gpu;
use crate::error::{CudaError, Result};

use super::T32;

/// The weight and bias names of the linear layer `prefix` of a CPU model: attention's packed
/// projection is `in_proj_weight` / `in_proj_bias` (PyTorch's names), the others
/// `prefix.weight` / `prefix.bias`.
pub(crate) fn linear_names(prefix: &str) -> (String, String) {
    if prefix.ends_with("in_proj") {
        (format!("{prefix}_weight"), format!("{prefix}_bias"))
    } else {
        (format!("{prefix}.weight"), format!("{prefix}.bias"))
    }
}

/// Gradient parts by CPU parameter name (row blocks, in row order).
#[derive(Default)]
pub(crate) struct Parts(HashMap<String, Vec<T32>>);

impl Parts {
    pub(crate) fn push(&mut self, name: String, part: T32) {
        self.0.entry(name).or_default().push(part);
    }

    /// The weight and bias gradients of (a row block of) the linear layer `prefix`.
    pub(crate) fn linear(&mut self, prefix: &str, (dw, db): (T32, Option<T32>)) {
        let (w, b) = linear_names(prefix);
        self.push(w, dw);
        if let Some(db) = db {
            self.push(b, db);
        }
    }

    /// The gradients in the order and shapes of `params`; every part must be claimed.
    pub(crate) fn assemble(
        mut self,
        gpu: &Arc<Gpu>,
        params: &[(String, Vec<usize>)],
        context: &'static str,
    ) -> Result<Vec<(String, T32)>> {
        let grads = params
            .iter()
            .map(|(name, shape)| {
                let parts = self.0.remove(name).ok_or_else(|| CudaError::InvalidArgument {
                    name: context,
                    reason: format!("no gradient was computed for parameter `{name}`"),
                })?;
                let joined = match parts.as_slice() {
                    [one] => one.reshape(shape)?,
                    _ => T32::concat(gpu, &parts.iter().collect::<Vec<_>>(), shape)?,
                };
                Ok((name.clone(), joined))
            })
            .collect::<Result<Vec<_>>>()?;
        if !self.0.is_empty() {
            let mut extra: Vec<&String> = self.0.keys().collect();
            extra.sort();
            return Err(CudaError::InvalidArgument {
                name: context,
                reason: format!("gradients for parameters the CPU model does not have: {extra:?}"),
            });
        }
        Ok(grads)
    }
}

/// Checks that `params` are named, ordered and shaped as `expected` (a model's parameter
/// list) before a model loads them, so a mismatch changes nothing.
pub(crate) fn check_parameter_list(
    context: &'static str,
    expected: &[(String, Vec<usize>)],
    params: &[(String, T32)],
) -> Result<()> {
    use diffusion_core::Tensor;
    let same = params.len() == expected.len()
        && params
            .iter()
            .zip(expected)
            .all(|((n, t), (m, shape))| n == m && t.shape() == shape.as_slice());
    if same {
        return Ok(());
    }
    let got: Vec<(&str, &[usize])> = params.iter().map(|(n, t)| (n.as_str(), t.shape())).collect();
    Err(CudaError::InvalidArgument {
        name: context,
        reason: format!("expected {expected:?}, got {got:?}"),
    })
}
