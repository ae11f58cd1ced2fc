//! Classifier-free guidance (Ho & Salimans 2022) as a model wrapper, with the guidance
//! rescale of Lin et al. 2023 ("Common diffusion noise schedules and sample steps are
//! flawed", section 3.4).

use diffusion_core::{ConditionalDenoiser, Denoiser, NoiseLevel, Parameterization, Tensor};

use crate::error::{Result, invalid};

/// `uncond + scale (cond - uncond)`, optionally rescaled so that each batch item's
/// standard deviation moves toward the conditional prediction's:
/// `out = phi * g * std(cond) / std(g) + (1 - phi) * g` with `g` the guided output and
/// `phi = guidance_rescale` (unbiased std over each item, as `torch.std`).
///
/// Guidance is applied to the model's own parameterization (diffusers applies it to
/// the pipeline's `noise_pred`, which is the model output too). `scale == 1` calls
/// only the conditional model and returns its output unchanged.
pub struct ClassifierFreeGuidance<'a, M: ConditionalDenoiser<T>, T: Tensor> {
    model: &'a M,
    cond: &'a M::Cond,
    scale: f64,
    rescale: f64,
}

impl<M: ConditionalDenoiser<T>, T: Tensor> std::fmt::Debug for ClassifierFreeGuidance<'_, M, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClassifierFreeGuidance")
            .field("scale", &self.scale)
            .field("rescale", &self.rescale)
            .finish()
    }
}

impl<'a, M: ConditionalDenoiser<T>, T: Tensor> ClassifierFreeGuidance<'a, M, T> {
    /// Guidance `scale` (finite; 1 = the conditional model, 0 = the unconditional) and
    /// `guidance_rescale` in `[0, 1]` (0 = off).
    pub fn new(model: &'a M, cond: &'a M::Cond, scale: f64, guidance_rescale: f64) -> Result<Self> {
        if !scale.is_finite() {
            return Err(invalid("cfg", "guidance_scale", format!("{scale} is not finite")));
        }
        if !(0.0..=1.0).contains(&guidance_rescale) {
            return Err(invalid(
                "cfg",
                "guidance_rescale",
                format!("{guidance_rescale} is outside [0, 1]"),
            ));
        }
        Ok(Self {
            model,
            cond,
            scale,
            rescale: guidance_rescale,
        })
    }
}

/// The unbiased standard deviation of each batch item (axis 0) of a flat buffer.
fn item_stds(data: &[f64], items: usize) -> Vec<f64> {
    let n = data.len() / items.max(1);
    data.chunks(n.max(1))
        .map(|c| {
            let mean = c.iter().sum::<f64>() / c.len() as f64;
            let ss: f64 = c.iter().map(|v| (v - mean) * (v - mean)).sum();
            (ss / (c.len() as f64 - 1.0).max(1.0)).sqrt()
        })
        .collect()
}

impl<M: ConditionalDenoiser<T>, T: Tensor> Denoiser<T> for ClassifierFreeGuidance<'_, M, T> {
    fn parameterization(&self) -> Parameterization {
        self.model.parameterization()
    }

    fn predict(&self, x: &T, level: NoiseLevel) -> diffusion_core::Result<T> {
        let cond = self.model.with_cond(Some(self.cond)).predict(x, level)?;
        if self.scale == 1.0 {
            return Ok(cond);
        }
        let mut guided = self.model.with_cond(None).predict(x, level)?;
        guided.lincomb(1.0 - self.scale, &[(self.scale, &cond)], None)?;
        if self.rescale == 0.0 {
            return Ok(guided);
        }
        // A host round trip: rescaling needs per-item statistics.
        let items = x.shape().first().copied().unwrap_or(1).max(1);
        let (c, mut g) = (cond.to_f64_vec(), guided.to_f64_vec());
        let (std_c, std_g) = (item_stds(&c, items), item_stds(&g, items));
        let n = g.len() / items;
        for (k, chunk) in g.chunks_mut(n.max(1)).enumerate() {
            // A constant guided item has no spread to rescale.
            let ratio = if std_g[k] > 0.0 { std_c[k] / std_g[k] } else { 1.0 };
            let factor = self.rescale * ratio + (1.0 - self.rescale);
            chunk.iter_mut().for_each(|v| *v *= factor);
        }
        guided.from_f64_like(&g)
    }
}
