//! [`GpuUNet`]'s parameters as named device tensors in the CPU model's layout (attention's
//! q/k/v joined into `in_proj_*`, convolution weights `[cout, cin, k, k]`), for an optimizer
//! on the device, and loading them back.

use std::collections::HashMap;

use diffusion_core::Tensor;

use crate::error::{CudaError, Result};

use super::super::grads::{check_parameter_list, linear_names};
use super::super::{GpuLinear, T32};
use super::{GpuAttnBlock, GpuConv, GpuGroupNorm, GpuResBlock, GpuStage, GpuUNet};

/// Tensors under the CPU model's parameter names.
type Named<R> = Vec<(String, R)>;

/// `walk!(name,)` and `walk!(name, mut)` define `name(model, out)`: the model's tensors under
/// the CPU model's parameter names in `Parameters::visit` order, the row blocks of one CPU
/// parameter (attention's q, k, v) in row order under its name; one body for `&` and `&mut`.
macro_rules! walk {
    ($name:ident, $($mut:tt)?) => {
        fn $name<'a>(m: &'a $($mut)? GpuUNet, out: &mut Named<&'a $($mut)? T32>) {
            fn linear<'a>(p: &str, l: &'a $($mut)? GpuLinear, out: &mut Named<&'a $($mut)? T32>) {
                let (w, b) = linear_names(p);
                out.push((w, & $($mut)? l.weight));
                if let Some(bias) = & $($mut)? l.bias {
                    out.push((b, bias));
                }
            }
            fn conv<'a>(p: &str, c: &'a $($mut)? GpuConv, out: &mut Named<&'a $($mut)? T32>) {
                out.push((format!("{p}.weight"), & $($mut)? c.weight));
                if let Some(bias) = & $($mut)? c.bias {
                    out.push((format!("{p}.bias"), bias));
                }
            }
            fn norm<'a>(p: &str, n: &'a $($mut)? GpuGroupNorm, out: &mut Named<&'a $($mut)? T32>) {
                out.push((format!("{p}.weight"), & $($mut)? n.gamma));
                out.push((format!("{p}.bias"), & $($mut)? n.beta));
            }
            fn res<'a>(p: &str, r: &'a $($mut)? GpuResBlock, out: &mut Named<&'a $($mut)? T32>) {
                norm(&format!("{p}.n1"), & $($mut)? r.n1, out);
                conv(&format!("{p}.c1"), & $($mut)? r.c1, out);
                linear(&format!("{p}.t"), & $($mut)? r.t, out);
                norm(&format!("{p}.n2"), & $($mut)? r.n2, out);
                conv(&format!("{p}.c2"), & $($mut)? r.c2, out);
                if let Some(s) = & $($mut)? r.skip {
                    conv(&format!("{p}.skip"), s, out);
                }
            }
            fn attn<'a>(p: &str, a: &'a $($mut)? GpuAttnBlock, out: &mut Named<&'a $($mut)? T32>) {
                norm(&format!("{p}.n"), & $($mut)? a.norm, out);
                let pre = format!("{p}.a.in_proj");
                linear(&pre, & $($mut)? a.q, out);
                linear(&pre, & $($mut)? a.k, out);
                linear(&pre, & $($mut)? a.v, out);
                linear(&format!("{p}.a.out_proj"), & $($mut)? a.out_proj, out);
            }
            fn stage<'a>(p: &str, s: &'a $($mut)? GpuStage, out: &mut Named<&'a $($mut)? T32>) {
                match s {
                    GpuStage::Res(r, a) => {
                        res(&format!("{p}.0"), r, out);
                        if let Some(a) = a {
                            attn(&format!("{p}.1"), a, out);
                        }
                    }
                    GpuStage::Down(c) => conv(&format!("{p}.0"), c, out),
                    GpuStage::Up(c) => conv(&format!("{p}.1"), c, out),
                }
            }
            linear("t_mlp.0", & $($mut)? m.t_mlp0, out);
            linear("t_mlp.2", & $($mut)? m.t_mlp2, out);
            conv("inp", & $($mut)? m.inp, out);
            for (i, s) in (& $($mut)? m.down).into_iter().enumerate() {
                stage(&format!("down.{i}"), s, out);
            }
            res("mid.0", & $($mut)? m.mid0, out);
            attn("mid.1", & $($mut)? m.mid1, out);
            res("mid.2", & $($mut)? m.mid2, out);
            for (i, s) in (& $($mut)? m.up).into_iter().enumerate() {
                stage(&format!("up.{i}"), s, out);
            }
            norm("out.0", & $($mut)? m.out_norm, out);
            conv("out.2", & $($mut)? m.out_conv, out);
        }
    };
}

walk!(tensors,);
walk!(tensors_mut, mut);

impl GpuUNet {
    /// The CPU model's parameter names and shapes, in `Parameters::visit` order.
    pub fn parameter_shapes(&self) -> &[(String, Vec<usize>)] {
        &self.params
    }

    /// Every parameter as a device tensor named and shaped as the CPU model's
    /// `Parameters::visit` (copies, in its order): the layout of [`super::GpuUNetGrads`].
    pub fn parameters(&self) -> Result<Vec<(String, T32)>> {
        self.check_trainable()?;
        let mut list = Vec::new();
        tensors(self, &mut list);
        let mut by_name: HashMap<String, Vec<&T32>> = HashMap::new();
        for (name, t) in list {
            by_name.entry(name).or_default().push(t);
        }
        let params = self
            .params
            .iter()
            .map(|(name, shape)| {
                let parts = by_name.remove(name).ok_or_else(|| missing(name))?;
                Ok((name.clone(), T32::concat(&self.gpu, &parts, shape)?))
            })
            .collect::<Result<Vec<_>>>()?;
        if !by_name.is_empty() {
            let mut extra: Vec<String> = by_name.into_keys().collect();
            extra.sort();
            return Err(CudaError::InvalidArgument {
                name: "GpuUNet parameters",
                reason: format!("tensors the CPU model does not have: {extra:?}"),
            });
        }
        Ok(params)
    }

    /// Loads `params` (named, shaped and ordered as [`GpuUNet::parameters`] returns them,
    /// e.g. after an optimizer step) into the model. Names, order and shapes are checked
    /// before anything changes.
    pub fn set_parameters(&mut self, params: &[(String, T32)]) -> Result<()> {
        self.check_trainable()?;
        check_parameter_list("GpuUNet::set_parameters", &self.params, params)?;
        let by_name: HashMap<&str, &T32> = params.iter().map(|(n, t)| (n.as_str(), t)).collect();
        // Every part is read out first, so a failed copy leaves the model unchanged.
        let mut slots = Vec::new();
        tensors_mut(self, &mut slots);
        let mut at: HashMap<String, usize> = HashMap::new();
        let mut fresh = Vec::with_capacity(slots.len());
        for (name, slot) in &slots {
            let src = by_name.get(name.as_str()).copied().ok_or_else(|| missing(name))?;
            let offset = at.entry(name.clone()).or_insert(0);
            fresh.push(src.copy_range(*offset, slot.shape())?);
            *offset += slot.len();
        }
        for ((_, slot), t) in slots.into_iter().zip(fresh) {
            *slot = t;
        }
        Ok(())
    }
}

fn missing(name: &str) -> CudaError {
    CudaError::InvalidArgument {
        name: "GpuUNet parameters",
        reason: format!("the GPU model holds no parameter `{name}`"),
    }
}
