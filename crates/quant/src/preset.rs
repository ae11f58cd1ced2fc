//! Named recipes, for a command line (`--preset w4a4-svd`): the configurations of the
//! README's quality table.

use crate::error::{QuantError, Result};
use crate::fp::{E2M1, E4M3};
use crate::linear::{ActMode, ActRecipe, LowRankKind, Recipe};
use crate::quantizer::{Estimator, Granularity, IntFormat, Quantizer, Scheme};

/// The preset names [`preset`] knows.
pub const PRESETS: &[&str] = &["w8a8", "w4a8", "w4a8-fp", "w4a4", "w4a4-svd"];

fn int(bits: u32, symmetric: bool, g: Granularity) -> Result<Quantizer> {
    Ok(Quantizer::new(Scheme::Int(IntFormat::new(bits, symmetric)?), g))
}

fn static_act(q: Quantizer) -> Option<ActRecipe> {
    Some(ActRecipe {
        quantizer: q,
        mode: ActMode::Static,
    })
}

/// The recipe named `name` (one of [`PRESETS`]):
///
/// - `w8a8`: int8 weights per output channel, static per-tensor asymmetric int8 activations.
/// - `w4a8`: int4 weights per group of 64 (Lp scales), static int8 activations (Lp).
/// - `w4a8-fp`: FP4 E2M1 weights per group of 64, FP8 E4M3 activations, power-of-two
///   scales (ZeroQuant-FP).
/// - `w4a4`: int4 weights per group of 64, dynamic per-token int4 activations.
/// - `w4a4-svd`: `w4a4` with SmoothQuant (alpha 0.5) and a rank-32 f32 branch (SVDQuant).
///
/// Every preset but `w4a4` and `w4a4-svd`'s activations needs calibration data.
pub fn preset(name: &str) -> Result<Recipe> {
    let group = Granularity::PerGroup(64);
    let w4a4 = Recipe {
        weight: Some(int(4, true, group)?),
        act: Some(ActRecipe {
            quantizer: int(4, true, Granularity::PerRow)?,
            mode: ActMode::Dynamic,
        }),
        ..Recipe::default()
    };
    Ok(match name {
        "w8a8" => Recipe {
            weight: Some(int(8, true, Granularity::PerRow)?),
            act: static_act(int(8, false, Granularity::PerTensor)?),
            ..Recipe::default()
        },
        "w4a8" => Recipe {
            weight: Some(int(4, true, group)?.with_estimator(Estimator::LP24)),
            act: static_act(int(8, false, Granularity::PerTensor)?.with_estimator(Estimator::LP24)),
            ..Recipe::default()
        },
        "w4a8-fp" => Recipe {
            weight: Some(Quantizer::new(Scheme::Float(E2M1), group).with_pow2_scales(true)),
            act: static_act(
                Quantizer::new(Scheme::Float(E4M3), Granularity::PerTensor).with_pow2_scales(true),
            ),
            ..Recipe::default()
        },
        "w4a4" => w4a4,
        "w4a4-svd" => Recipe {
            smooth_alpha: Some(0.5),
            low_rank: LowRankKind::Svd(32),
            ..w4a4
        },
        _ => {
            return Err(QuantError::Invalid {
                name: "preset",
                reason: format!("unknown preset {name:?} (known: {})", PRESETS.join(", ")),
            });
        }
    })
}
