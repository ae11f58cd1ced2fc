//! LeFusion's pieces (Zhang et al., ICLR 2025): the lesion-focused noise loss, the 16-bin
//! lesion histogram used as the condition, and lesion inpainting by diffusers' RePaint
//! (`diffusion_solvers::repaint`, the one RePaint of the workspace): the real background
//! is re-inserted, forward-noised, at every step, so only the lesion is generated.
//!
//! A conditioned model (histogram + classifier-free guidance) is any
//! `diffusion_core::ConditionalDenoiser` bound to its histogram and wrapped in
//! `diffusion_solvers::ClassifierFreeGuidance`; this module takes the resulting `Denoiser`.

use diffusion_core::{Denoiser, Rng};
use diffusion_solvers::Control;
use diffusion_solvers::repaint::{RePaint, inpaint};
use ndarray::ArrayD;

use crate::error::{Result, invalid, shape};

fn check_mask(context: &'static str, expected: &[usize], mask: &ArrayD<f32>) -> Result<usize> {
    if mask.shape() != expected {
        return Err(shape(context, format!("{expected:?}"), mask.shape()));
    }
    if let Some(v) = mask.iter().find(|v| !(**v == 0.0 || **v == 1.0)) {
        return Err(invalid("lesion mask", format!("value {v} is not 0 or 1")));
    }
    let count = mask.iter().filter(|v| **v == 1.0).count();
    if count == 0 {
        return Err(invalid("lesion mask", "the mask is empty"));
    }
    Ok(count)
}

/// The lesion-focused loss: the mean squared noise error over the lesion voxels only
/// (`mask` = 1), so the background does not dilute the gradient.
pub fn lesion_loss(predicted: &ArrayD<f32>, target: &ArrayD<f32>, mask: &ArrayD<f32>) -> Result<f64> {
    if predicted.shape() != target.shape() {
        return Err(shape(
            "noise target",
            format!("{:?}", predicted.shape()),
            target.shape(),
        ));
    }
    let count = check_mask("lesion mask", predicted.shape(), mask)?;
    let sum: f64 = predicted
        .iter()
        .zip(target.iter())
        .zip(mask.iter())
        .filter(|(_, m)| **m == 1.0)
        .map(|((p, t), _)| (f64::from(*p) - f64::from(*t)).powi(2))
        .sum();
    Ok(sum / count as f64)
}

/// LeFusion's condition: `histc(image[mask], bins = 16, min = -1, max = 1) / |mask|`
/// (torch's `histc`: equal bins, the maximum in the last bin, values outside ignored).
pub fn lesion_histogram(image: &ArrayD<f32>, mask: &ArrayD<f32>) -> Result<[f64; 16]> {
    let count = check_mask("lesion mask", image.shape(), mask)?;
    let mut h = [0.0; 16];
    for (&v, _) in image.iter().zip(mask.iter()).filter(|(_, m)| **m == 1.0) {
        let v = f64::from(v);
        if (-1.0..=1.0).contains(&v) {
            let bin = (((v + 1.0) / 2.0 * 16.0) as usize).min(15);
            h[bin] += 1.0;
        }
    }
    for b in &mut h {
        *b /= count as f64;
    }
    Ok(h)
}

/// Generates the lesion (`lesion` = 1) inside `background` (model scale `[-1, 1]`) with
/// RePaint's jump schedule, starting from the noise drawn from `rng`. Outside the lesion
/// the result is the background exactly (the last step re-inserts it at noise level 0).
/// `scheduler` must have its timesteps set.
pub fn inpaint_lesion<M: Denoiser<ArrayD<f32>> + ?Sized>(
    scheduler: &mut RePaint,
    model: &M,
    background: &ArrayD<f32>,
    lesion: &ArrayD<f32>,
    rng: &mut Rng,
) -> Result<ArrayD<f32>> {
    check_mask("lesion mask", background.shape(), lesion)?;
    // diffusers' RePaint keeps where its mask is 1.
    let keep = lesion.mapv(|m| 1.0 - m);
    let mut x = background.clone();
    let mut z = vec![0.0; x.len()];
    rng.fill_normal(&mut z);
    x.iter_mut().zip(&z).for_each(|(v, z)| *v = *z as f32);
    Ok(inpaint(scheduler, model, &x, background, &keep, rng, |_, _| {
        Control::Continue
    })?)
}
