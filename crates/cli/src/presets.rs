//! Named solver configurations compared by `diffuse demo` and `diffuse bench`.

use serde_json::{Value, json};

/// A scheduler with the config keys that make it one of the well-known samplers.
#[derive(Clone, Debug)]
pub struct Preset {
    pub label: &'static str,
    pub scheduler: &'static str,
    pub config: Value,
    /// Model evaluations per step (Heun's second-order steps cost two, but the last one).
    pub heun_like: bool,
}

impl Preset {
    /// Inference steps that spend about `nfe` model evaluations.
    pub fn steps_for_nfe(&self, nfe: usize) -> usize {
        if self.heun_like {
            nfe.div_ceil(2).max(1)
        } else {
            nfe.max(1)
        }
    }
}

/// The presets: every deterministic sampler family, trailing spacing (the better choice
/// when sampling ends at sigma 0; see fixtures/gmm).
pub fn all() -> Vec<Preset> {
    let t = |extra: Value| {
        let mut v = json!({"timestep_spacing": "trailing"});
        for (k, x) in extra.as_object().expect("object") {
            v[k] = x.clone();
        }
        v
    };
    vec![
        Preset {
            label: "DDIM",
            scheduler: "ddim",
            config: t(json!({"clip_sample": false})),
            heun_like: false,
        },
        Preset {
            label: "Euler",
            scheduler: "euler",
            config: t(json!({})),
            heun_like: false,
        },
        Preset {
            label: "Heun",
            scheduler: "heun",
            config: t(json!({})),
            heun_like: true,
        },
        Preset {
            label: "DPM++ 2M",
            scheduler: "dpm_solver_multistep",
            config: t(json!({})),
            heun_like: false,
        },
        Preset {
            label: "DPM++ 2M Karras",
            scheduler: "dpm_solver_multistep",
            config: t(json!({"use_karras_sigmas": true})),
            heun_like: false,
        },
        Preset {
            label: "UniPC bh2",
            scheduler: "unipc",
            config: t(json!({})),
            heun_like: false,
        },
    ]
}
