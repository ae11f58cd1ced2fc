//! Trained models as a program loads them: the networks `diffuse train` trains (MLP,
//! UNet, DiT) behind one type ([`AnyNet`]), the model spec a checkpoint's config holds
//! ([`ModelSpec`]), and [`load`], which rebuilds the network and its weights from a
//! checkpoint directory as a model any sampler can call.

use std::path::Path;

use diffusion_core::{Parameterization, Rng};
use diffusion_nn::models::{Dit, DitConfig, MlpConfig, MlpDenoiser, SkipScaling, UNet, UNetConfig};
use diffusion_nn::{Network, NetworkDenoiser, NnError, Param, Parameters};
use diffusion_schedules::{BetaSchedule, DiscreteSchedule, DiscreteScheduleConfig};

use crate::error::{Result, TrainError};
use ndarray::ArrayD;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The network of a checkpoint and every size needed to rebuild it (`kind` tags the variant).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Architecture {
    /// Vectors `[dim]`.
    Mlp {
        dim: usize,
        hidden: usize,
        depth: usize,
        temb: usize,
    },
    /// Square images `[in_ch, size, size]`.
    Unet {
        in_ch: usize,
        size: usize,
        base: usize,
        mults: Vec<usize>,
        nres: usize,
        temb: usize,
        attn_levels: Vec<usize>,
        heads: usize,
        groups: usize,
    },
    /// Square images `[in_ch, size, size]`, unconditional.
    Dit {
        in_ch: usize,
        size: usize,
        patch: usize,
        hidden: usize,
        depth: usize,
        heads: usize,
        mlp_ratio: usize,
        freq_dim: usize,
    },
}

impl Architecture {
    /// The MLP of `diffuse train --model mlp`.
    pub fn mlp(dim: usize, hidden: usize, depth: usize) -> Self {
        Self::Mlp {
            dim,
            hidden,
            depth,
            temb: 64,
        }
    }

    /// A UNet sized for CPU training: two resolutions, one ResBlock each, attention only in
    /// the middle block. `base` is the width of the first level.
    pub fn small_unet(in_ch: usize, size: usize, base: usize) -> Self {
        Self::Unet {
            in_ch,
            size,
            base,
            mults: vec![1, 2],
            nres: 1,
            temb: 4 * base,
            attn_levels: vec![],
            heads: 2,
            // GroupNorm needs the group count to divide every width (base and 2 * base).
            groups: gcd(base, 8),
        }
    }

    /// A DiT sized for CPU training (patch 2, MLP ratio 2, 4 heads when they divide `hidden`).
    pub fn small_dit(in_ch: usize, size: usize, hidden: usize, depth: usize, patch: usize) -> Self {
        Self::Dit {
            in_ch,
            size,
            patch,
            hidden,
            depth,
            heads: if hidden.is_multiple_of(4) { 4 } else { 1 },
            mlp_ratio: 2,
            freq_dim: 64,
        }
    }

    /// The shape of one sample.
    pub fn sample_shape(&self) -> Vec<usize> {
        match *self {
            Self::Mlp { dim, .. } => vec![dim],
            Self::Unet { in_ch, size, .. } | Self::Dit { in_ch, size, .. } => vec![in_ch, size, size],
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::Mlp { .. } => "mlp",
            Self::Unet { .. } => "unet",
            Self::Dit { .. } => "dit",
        }
    }

    /// A freshly initialised network (weights from `seed`).
    pub fn build(&self, seed: u64) -> Result<AnyNet> {
        let rng = &mut Rng::with_stream(seed, 4);
        Ok(match self.clone() {
            Self::Mlp {
                dim,
                hidden,
                depth,
                temb,
            } => AnyNet::Mlp(MlpDenoiser::new(
                MlpConfig {
                    dim,
                    hidden,
                    depth,
                    temb,
                },
                rng,
            )?),
            Self::Unet {
                in_ch,
                size,
                base,
                mults,
                nres,
                temb,
                attn_levels,
                heads,
                groups,
            } => AnyNet::UNet(Box::new(UNet::new(
                UNetConfig {
                    in_ch,
                    size,
                    dims: 2,
                    base,
                    mults,
                    nres,
                    temb,
                    attn_levels,
                    heads,
                    groups,
                    skip_scaling: SkipScaling::None,
                },
                rng,
            )?)),
            Self::Dit {
                in_ch,
                size,
                patch,
                hidden,
                depth,
                heads,
                mlp_ratio,
                freq_dim,
            } => AnyNet::Dit(Box::new(Dit::new(
                DitConfig {
                    in_ch,
                    size,
                    patch,
                    hidden,
                    depth,
                    heads,
                    mlp_ratio,
                    freq_dim,
                    num_classes: 0,
                },
                rng,
            )?)),
        })
    }
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// What a checkpoint's `config.json` says about its model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    pub model: Architecture,
    /// What the network's output is (the training objective's target).
    pub prediction_type: Parameterization,
    pub schedule: DiscreteScheduleConfig,
    /// The data the model was trained on (absent in checkpoints written before it was kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<TrainingData>,
}

/// What a training run trained on: the `--dataset` option as given (for messages) and a
/// fingerprint of the samples themselves, so a resumed run can insist on the same data
/// however it is named (a relative or absolute path, a seed or count that a file ignores).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingData {
    pub dataset: String,
    pub shape: Vec<usize>,
    /// Sum of the samples and their position-weighted sum (`sum (i + 1) x_i`, in order): a
    /// change of any value or of the order changes one of them. Exact f64 values: a dataset
    /// loads bit for bit the same every time.
    pub sum: f64,
    pub weighted_sum: f64,
}

impl TrainingData {
    pub fn of(dataset: &str, samples: &ndarray::ArrayD<f64>) -> Self {
        let (mut sum, mut weighted_sum) = (0.0, 0.0);
        for (i, &v) in samples.iter().enumerate() {
            sum += v;
            weighted_sum += (i as f64 + 1.0) * v;
        }
        Self {
            dataset: dataset.to_string(),
            shape: samples.shape().to_vec(),
            sum,
            weighted_sum,
        }
    }

    /// Whether `other` holds the same samples (the dataset option may be spelled differently).
    pub fn same_samples(&self, other: &Self) -> bool {
        self.shape == other.shape && self.sum == other.sum && self.weighted_sum == other.weighted_sum
    }
}

/// The MLP-only format written before image models existed, still readable.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LegacyMlpSpec {
    kind: String,
    dim: usize,
    hidden: usize,
    depth: usize,
    temb: usize,
    prediction_type: Parameterization,
    schedule: DiscreteScheduleConfig,
}

impl ModelSpec {
    pub fn new(model: Architecture, prediction_type: Parameterization, schedule: BetaSchedule) -> Self {
        let (beta_start, beta_end) = match schedule {
            BetaSchedule::ScaledLinear => (0.00085, 0.012),
            _ => (1e-4, 0.02),
        };
        Self {
            model,
            prediction_type,
            schedule: DiscreteScheduleConfig {
                beta_schedule: schedule,
                beta_start,
                beta_end,
                ..Default::default()
            },
            data: None,
        }
    }

    /// Parses a checkpoint's model config (the current format or the legacy MLP one).
    pub fn from_json(config: Value) -> Result<Self> {
        match serde_json::from_value::<Self>(config.clone()) {
            Ok(spec) => Ok(spec),
            Err(e) => match serde_json::from_value::<LegacyMlpSpec>(config) {
                Ok(old) if old.kind == "mlp" => Ok(Self {
                    model: Architecture::Mlp {
                        dim: old.dim,
                        hidden: old.hidden,
                        depth: old.depth,
                        temb: old.temb,
                    },
                    prediction_type: old.prediction_type,
                    schedule: old.schedule,
                    data: None,
                }),
                _ => Err(TrainError::invalid(
                    "model config",
                    format!("the checkpoint's model config: {e}"),
                )),
            },
        }
    }

    pub fn build(&self, seed: u64) -> Result<AnyNet> {
        self.model.build(seed)
    }

    /// The `alphas_cumprod` table training and sampling share.
    pub fn alphas_cumprod(&self) -> Result<Vec<f64>> {
        let s = DiscreteSchedule::from_config(&self.schedule)?;
        Ok(s.alphas_cumprod.iter().map(|&a| f64::from(a)).collect())
    }

    /// The schedule keys of a diffusers scheduler config matching training. The prediction
    /// type is not among them: the loaded model declares it, and the sampling loop converts
    /// its output to whatever the scheduler works in.
    pub fn scheduler_base(&self) -> Value {
        let s = &self.schedule;
        json!({
            "num_train_timesteps": s.num_train_timesteps,
            "beta_start": s.beta_start,
            "beta_end": s.beta_end,
            "beta_schedule": s.beta_schedule,
        })
    }
}

/// One of the networks `diffuse train` can train, behind one type so the trainer, the
/// checkpoint code and the samplers are written once.
#[derive(Clone, Debug)]
pub enum AnyNet {
    Mlp(MlpDenoiser<f64>),
    UNet(Box<UNet<f64>>),
    Dit(Box<Dit<f64>>),
}

/// The forward-pass cache of an [`AnyNet`].
#[derive(Debug)]
pub enum AnyCache {
    Mlp(<MlpDenoiser<f64> as Network<f64>>::Cache),
    UNet(Box<<UNet<f64> as Network<f64>>::Cache>),
    Dit(Box<<Dit<f64> as Network<f64>>::Cache>),
}

impl Network<f64> for AnyNet {
    type Cache = AnyCache;

    fn forward(
        &self,
        x: &ArrayD<f64>,
        t: &[f64],
        cond: Option<&[usize]>,
    ) -> diffusion_nn::Result<(ArrayD<f64>, AnyCache)> {
        Ok(match self {
            Self::Mlp(n) => {
                let (y, c) = n.forward(x, t, cond)?;
                (y, AnyCache::Mlp(c))
            }
            Self::UNet(n) => {
                let (y, c) = n.forward(x, t, cond)?;
                (y, AnyCache::UNet(Box::new(c)))
            }
            Self::Dit(n) => {
                let (y, c) = n.forward(x, t, cond)?;
                (y, AnyCache::Dit(Box::new(c)))
            }
        })
    }

    fn backward(&mut self, cache: &AnyCache, dy: &ArrayD<f64>) -> diffusion_nn::Result<ArrayD<f64>> {
        match (self, cache) {
            (Self::Mlp(n), AnyCache::Mlp(c)) => n.backward(c, dy),
            (Self::UNet(n), AnyCache::UNet(c)) => n.backward(c, dy),
            (Self::Dit(n), AnyCache::Dit(c)) => n.backward(c, dy),
            _ => Err(NnError::Input {
                name: "cache",
                reason: "the cache comes from a different kind of network".into(),
            }),
        }
    }

    fn input_shape(&self) -> Vec<usize> {
        match self {
            Self::Mlp(n) => n.input_shape(),
            Self::UNet(n) => n.input_shape(),
            Self::Dit(n) => n.input_shape(),
        }
    }

    fn infer(&self, x: &ArrayD<f64>, t: &[f64], cond: Option<&[usize]>) -> diffusion_nn::Result<ArrayD<f64>> {
        match self {
            Self::Mlp(n) => n.infer(x, t, cond),
            Self::UNet(n) => n.infer(x, t, cond),
            Self::Dit(n) => n.infer(x, t, cond),
        }
    }
}

impl Parameters<f64> for AnyNet {
    fn visit(&self, f: &mut dyn FnMut(&str, &Param<f64>)) {
        match self {
            Self::Mlp(n) => n.visit(f),
            Self::UNet(n) => n.visit(f),
            Self::Dit(n) => n.visit(f),
        }
    }

    fn visit_mut(&mut self, f: &mut dyn FnMut(&str, &mut Param<f64>)) {
        match self {
            Self::Mlp(n) => n.visit_mut(f),
            Self::UNet(n) => n.visit_mut(f),
            Self::Dit(n) => n.visit_mut(f),
        }
    }

    fn visit_buffers(&self, f: &mut dyn FnMut(&str, &ArrayD<f64>)) {
        match self {
            Self::Mlp(n) => n.visit_buffers(f),
            Self::UNet(n) => n.visit_buffers(f),
            Self::Dit(n) => n.visit_buffers(f),
        }
    }

    fn visit_buffers_mut(&mut self, f: &mut dyn FnMut(&str, &mut ArrayD<f64>)) {
        match self {
            Self::Mlp(n) => n.visit_buffers_mut(f),
            Self::UNet(n) => n.visit_buffers_mut(f),
            Self::Dit(n) => n.visit_buffers_mut(f),
        }
    }
}

/// Reads the model spec of the checkpoint in `dir`.
pub fn read_spec(dir: &Path) -> Result<ModelSpec> {
    ModelSpec::from_json(crate::checkpoint::read_model_config(dir)?)
}

/// A trained model loaded from a checkpoint directory (EMA weights when present).
pub fn load(dir: &Path) -> Result<(ModelSpec, NetworkDenoiser<AnyNet>)> {
    let spec = read_spec(dir)?;
    if !matches!(
        spec.prediction_type,
        Parameterization::Epsilon | Parameterization::V | Parameterization::Sample
    ) {
        return Err(TrainError::invalid(
            "prediction_type",
            format!(
                "the checkpoint predicts {:?}; sampling supports epsilon, v and sample",
                spec.prediction_type
            ),
        ));
    }
    let mut net = spec.build(0)?;
    // The EMA weights when the run kept an average (a complete state dict, buffers included),
    // the raw weights otherwise.
    crate::checkpoint::load_inference_weights(dir, &mut net)?;
    // Declares the training target to the samplers, which convert it to what they need.
    let model = NetworkDenoiser::new(net, spec.prediction_type);
    Ok((spec, model))
}

#[cfg(test)]
mod tests {
    use super::*;
    use diffusion_core::Tensor;

    fn specs() -> Vec<ModelSpec> {
        [
            Architecture::mlp(2, 8, 2),
            Architecture::small_unet(1, 8, 4),
            Architecture::small_dit(3, 8, 8, 1, 2),
        ]
        .into_iter()
        .map(|a| ModelSpec::new(a, Parameterization::V, BetaSchedule::Linear))
        .collect()
    }

    #[test]
    fn specs_round_trip_and_reject_unknown_fields() {
        for spec in specs() {
            let v = serde_json::to_value(&spec).unwrap();
            assert_eq!(ModelSpec::from_json(v.clone()).unwrap(), spec);
            let mut extra = v.clone();
            extra["model"]["surprise"] = json!(1);
            assert!(ModelSpec::from_json(extra).is_err());
            let mut extra = v;
            extra["surprise"] = json!(1);
            assert!(ModelSpec::from_json(extra).is_err());
        }
    }

    /// Checkpoints written before image models (flat MLP fields) still load.
    #[test]
    fn legacy_mlp_config_is_read() {
        let legacy = json!({
            "kind": "mlp", "dim": 2, "hidden": 16, "depth": 2, "temb": 64,
            "prediction_type": "epsilon",
            "schedule": serde_json::to_value(DiscreteScheduleConfig::default()).unwrap(),
        });
        let spec = ModelSpec::from_json(legacy).unwrap();
        assert_eq!(
            spec.model,
            Architecture::Mlp {
                dim: 2,
                hidden: 16,
                depth: 2,
                temb: 64
            }
        );
        assert!(ModelSpec::from_json(json!({"kind": "mlp"})).is_err());
    }

    /// Oracle: the wrapped network itself, built from the same seed. The wrapper must give
    /// the same outputs, input gradients and parameter gradients, and visit the same names.
    #[test]
    fn any_net_matches_the_network_it_wraps() {
        for spec in specs() {
            let mut any = spec.build(7).unwrap();
            let shape: Vec<usize> = std::iter::once(2).chain(spec.model.sample_shape()).collect();
            let n: usize = shape.iter().product();
            let mut z = vec![0.0; n];
            Rng::new(3).fill_normal(&mut z);
            let x = ArrayD::from_shape_vec(ndarray::IxDyn(&shape), z).unwrap();
            let t = [10.0, 500.0];
            let (y, cache) = any.forward(&x, &t, None).unwrap();
            let dx = any.backward(&cache, &x).unwrap();
            let grads = |net: &dyn Parameters<f64>| {
                let mut g = Vec::new();
                net.visit(&mut |name, p| g.push((name.to_string(), p.grad.clone())));
                g
            };
            let (y2, dx2, g2, buffers) = match spec.build(7).unwrap() {
                AnyNet::Mlp(mut m) => {
                    let (y, c) = m.forward(&x, &t, None).unwrap();
                    let dx = m.backward(&c, &x).unwrap();
                    (y, dx, grads(&m), 0)
                }
                AnyNet::UNet(mut m) => {
                    let (y, c) = m.forward(&x, &t, None).unwrap();
                    let dx = m.backward(&c, &x).unwrap();
                    (y, dx, grads(m.as_ref()), 0)
                }
                AnyNet::Dit(mut m) => {
                    let (y, c) = m.forward(&x, &t, None).unwrap();
                    let dx = m.backward(&c, &x).unwrap();
                    let mut b = 0;
                    m.visit_buffers(&mut |_, _| b += 1);
                    (y, dx, grads(m.as_ref()), b)
                }
            };
            assert_eq!(y, y2);
            assert_eq!(dx, dx2);
            assert_eq!(grads(&any), g2);
            assert_eq!(any.infer(&x, &t, None).unwrap(), y);
            let mut b = 0;
            any.visit_buffers(&mut |_, _| b += 1);
            assert_eq!(b, buffers, "buffers are visited too");
            assert_eq!(any.input_shape(), spec.model.sample_shape());
            assert!(y.sum_squares().is_finite());
        }
    }
}
