//! [`GpuDit`]'s parameters as named device tensors in the CPU model's layout (the row-split
//! layers joined), for an optimizer on the device, and loading them back.

use std::collections::HashMap;

use crate::error::{CudaError, Result};

use super::super::grads::{check_parameter_list, linear_names};
use super::super::{GpuLinear, T32};
use super::{GpuDit, GpuDitBlock};

const Y_EMBED: &str = "y_embed.weight";

impl GpuDit {
    /// The CPU model's parameter names and shapes, in `Parameters::visit` order.
    pub fn parameter_shapes(&self) -> &[(String, Vec<usize>)] {
        &self.params
    }

    /// Every parameter as a device tensor named and shaped as the CPU model's
    /// `Parameters::visit` (copies, in its order): the layout of [`super::GpuDitGrads`].
    pub fn parameters(&self) -> Result<Vec<(String, T32)>> {
        let mut by_name: HashMap<String, Vec<&T32>> = HashMap::new();
        for (prefix, layers) in self.linear_groups() {
            let (w, b) = linear_names(&prefix);
            by_name.insert(w, layers.iter().map(|l| &l.weight).collect());
            let biases: Vec<&T32> = layers.iter().filter_map(|l| l.bias.as_ref()).collect();
            if !biases.is_empty() {
                by_name.insert(b, biases);
            }
        }
        let table = self
            .y_embed
            .as_ref()
            .map(|t| T32::from_host(&self.gpu, &[self.cfg.num_classes, self.cfg.hidden], t))
            .transpose()?;
        if let Some(t) = &table {
            by_name.insert(Y_EMBED.into(), vec![t]);
        }
        self.params
            .iter()
            .map(|(name, shape)| {
                let parts = by_name.remove(name).ok_or_else(|| missing(name))?;
                Ok((name.clone(), T32::concat(&self.gpu, &parts, shape)?))
            })
            .collect()
    }

    /// Loads `params` (named, shaped and ordered as [`GpuDit::parameters`] returns them,
    /// e.g. after an optimizer step) into the model. Names, order and shapes are checked
    /// before anything changes.
    pub fn set_parameters(&mut self, params: &[(String, T32)]) -> Result<()> {
        check_parameter_list("GpuDit::set_parameters", &self.params, params)?;
        let by_name: HashMap<&str, &T32> = params.iter().map(|(n, t)| (n.as_str(), t)).collect();
        let get = |name: &str| by_name.get(name).copied().ok_or_else(|| missing(name));
        for (prefix, layers) in self.linear_groups_mut() {
            let (w, b) = linear_names(&prefix);
            let (w, mut at_w, mut at_b) = (get(&w)?, 0, 0);
            for l in layers {
                l.weight = w.copy_range(at_w, &[l.outputs, l.inputs])?;
                at_w += l.outputs * l.inputs;
                if let Some(bias) = &mut l.bias {
                    *bias = get(&b)?.copy_range(at_b, &[l.outputs])?;
                    at_b += l.outputs;
                }
            }
        }
        if self.y_embed.is_some() {
            self.y_embed = Some(get(Y_EMBED)?.to_host()?);
        }
        Ok(())
    }

    /// Every CPU linear layer by name prefix, with the GPU layers that hold its row blocks
    /// in row order.
    fn linear_groups(&self) -> Vec<(String, Vec<&GpuLinear>)> {
        let mut groups = vec![
            ("x_embed".to_string(), vec![&self.x_embed]),
            ("t_embed.0".to_string(), vec![&self.t_embed0]),
            ("t_embed.2".to_string(), vec![&self.t_embed2]),
        ];
        for (i, b) in self.blocks.iter().enumerate() {
            let p = format!("blocks.{i}");
            groups.push((format!("{p}.attn.in_proj"), vec![&b.q, &b.k, &b.v]));
            groups.push((format!("{p}.attn.out_proj"), vec![&b.out_proj]));
            groups.push((format!("{p}.mlp.0"), vec![&b.mlp0]));
            groups.push((format!("{p}.mlp.2"), vec![&b.mlp2]));
            groups.push((format!("{p}.ada.1"), b.ada.iter().collect()));
        }
        groups.push(("ada_f.1".to_string(), self.ada_f.iter().collect()));
        groups.push(("out".to_string(), vec![&self.out]));
        groups
    }

    /// [`GpuDit::linear_groups`], mutable (the same names and order).
    fn linear_groups_mut(&mut self) -> Vec<(String, Vec<&mut GpuLinear>)> {
        let Self {
            x_embed,
            t_embed0,
            t_embed2,
            blocks,
            ada_f,
            out,
            ..
        } = self;
        let mut groups = vec![
            ("x_embed".to_string(), vec![x_embed]),
            ("t_embed.0".to_string(), vec![t_embed0]),
            ("t_embed.2".to_string(), vec![t_embed2]),
        ];
        for (i, b) in blocks.iter_mut().enumerate() {
            let p = format!("blocks.{i}");
            let GpuDitBlock {
                ada,
                q,
                k,
                v,
                out_proj,
                mlp0,
                mlp2,
            } = b;
            groups.push((format!("{p}.attn.in_proj"), vec![q, k, v]));
            groups.push((format!("{p}.attn.out_proj"), vec![out_proj]));
            groups.push((format!("{p}.mlp.0"), vec![mlp0]));
            groups.push((format!("{p}.mlp.2"), vec![mlp2]));
            groups.push((format!("{p}.ada.1"), ada.iter_mut().collect()));
        }
        groups.push(("ada_f.1".to_string(), ada_f.iter_mut().collect()));
        groups.push(("out".to_string(), vec![out]));
        groups
    }
}

fn missing(name: &str) -> CudaError {
    CudaError::InvalidArgument {
        name: "GpuDit parameters",
        reason: format!("the GPU model holds no parameter `{name}`"),
    }
}
