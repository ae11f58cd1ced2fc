//! Training objectives: what the network is regressed onto, and how each sample is weighted.
//!
//! Every objective here is a weighted mean squared error between the raw network output
//! `F` and a target that is linear in `(x0, eps)`:
//!
//! `L = (1/B) sum_i w_i * mean_j (F_ij - y_ij)^2`.
//!
//! For EDM (Karras et al. 2022) the denoiser is `D = c_skip x + c_out F` and the loss is
//! `lambda(sigma) |D - x0|^2`; substituting gives exactly this form with target
//! `(x0 - c_skip x) / c_out` and weight `lambda c_out^2`, which is 1 for EDM's weighting.

use diffusion_core::{NoiseLevel, Parameterization, param::conversion};
use ndarray::ArrayD;
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError, check_positive};
use crate::scalar::Scalar;

pub use diffusion_schedules::EdmPrecond;

/// Per-sample loss weighting for the plain prediction objectives.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Weighting {
    /// Every sample weighs 1.
    Uniform,
    /// Min-SNR-gamma (Hang et al. 2023): the loss, expressed as an x0 error, is weighted by
    /// `min(snr, gamma)`. For an epsilon target that is `min(snr, gamma) / snr`, for v
    /// (variance preserving) `min(snr, gamma) / (snr + 1)`.
    MinSnr { gamma: f64 },
}

/// What the network learns.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Objective {
    /// Regress the raw output onto `target` (epsilon, sample/x0, v or flow) at the sampled
    /// time; the network sees `x_t` and the level's timestep.
    Predict {
        target: Parameterization,
        weighting: Weighting,
    },
    /// EDM: preconditioned denoiser with EDM's loss weighting. The network sees
    /// `c_in x~` and `c_noise`, where `x~ = x / alpha` has noise level `sigma / alpha`
    /// (so any schedule works; EDM's own has alpha = 1).
    Edm { sigma_data: f64 },
}

impl Objective {
    /// Epsilon prediction with uniform weights (DDPM).
    pub fn epsilon() -> Self {
        Self::Predict {
            target: Parameterization::Epsilon,
            weighting: Weighting::Uniform,
        }
    }

    /// Checks the objective's own parameters.
    pub fn validate(&self) -> Result<()> {
        match *self {
            Self::Predict { target, weighting } => {
                if !matches!(
                    target,
                    Parameterization::Epsilon
                        | Parameterization::Sample
                        | Parameterization::V
                        | Parameterization::Flow
                ) {
                    return Err(TrainError::invalid(
                        "objective target",
                        format!("{target:?} cannot be trained on (use epsilon, sample, v or flow)"),
                    ));
                }
                if let Weighting::MinSnr { gamma } = weighting {
                    check_positive("min-SNR gamma", gamma)?;
                }
                Ok(())
            }
            Self::Edm { sigma_data } => check_positive("sigma_data", sigma_data),
        }
    }

    /// The affine maps of one sample at `level`: how its network input, time input,
    /// target and weight follow from `(x0, eps)`.
    pub fn coefficients(&self, level: NoiseLevel) -> Result<SampleCoefficients> {
        let NoiseLevel {
            timestep,
            alpha,
            sigma,
        } = level;
        if !(alpha.is_finite() && sigma.is_finite() && alpha >= 0.0 && sigma >= 0.0) {
            return Err(TrainError::invalid(
                "noise level",
                format!("alpha and sigma must be finite and >= 0, got alpha {alpha}, sigma {sigma}"),
            ));
        }
        match *self {
            Self::Predict { target, weighting } => {
                let (t0, t1) = target.basis(alpha, sigma);
                let weight = match weighting {
                    Weighting::Uniform => 1.0,
                    Weighting::MinSnr { gamma } => {
                        // An error of size e in the prediction is an x0 error of cm * e.
                        let (_, cm) = conversion(target, Parameterization::Sample, alpha, sigma)?;
                        let snr = (alpha / sigma).powi(2);
                        snr.min(gamma) * cm * cm
                    }
                };
                Ok(SampleCoefficients {
                    input: (alpha, sigma),
                    time: timestep,
                    target: (t0, t1),
                    weight,
                })
            }
            Self::Edm { sigma_data } => {
                if alpha <= 0.0 {
                    return Err(TrainError::invalid("noise level", "EDM needs alpha > 0"));
                }
                let s = sigma / alpha;
                let p = EdmPrecond::new(s, sigma_data)?;
                // x~ = x0 + s eps; target (x0 - c_skip x~) / c_out.
                Ok(SampleCoefficients {
                    input: (p.c_in, p.c_in * s),
                    time: p.c_noise,
                    target: ((1.0 - p.c_skip) / p.c_out, -p.c_skip * s / p.c_out),
                    weight: EdmPrecond::loss_weight(s, sigma_data) * p.c_out * p.c_out,
                })
            }
        }
    }

    /// Builds the network inputs, time inputs, targets and weights for a batch.
    ///
    /// `x0` and `eps` are `[B, ...]`; `levels` has one entry per batch item.
    pub fn prepare<A: Scalar>(
        &self,
        x0: &ArrayD<A>,
        eps: &ArrayD<A>,
        levels: &[NoiseLevel],
    ) -> Result<PreparedBatch<A>> {
        check_batch("prepare eps", x0.shape(), eps.shape())?;
        let batch = x0.shape().first().copied().unwrap_or(0);
        if levels.len() != batch {
            return Err(TrainError::ShapeMismatch {
                context: "prepare levels",
                expected: vec![batch],
                got: vec![levels.len()],
            });
        }
        let coeffs = levels
            .iter()
            .map(|&l| self.coefficients(l))
            .collect::<Result<Vec<_>>>()?;
        let x0s = x0.as_standard_layout();
        let epss = eps.as_standard_layout();
        let (x0s, epss) = (
            x0s.as_slice().expect("standard"),
            epss.as_slice().expect("standard"),
        );
        let per = x0s.len().checked_div(batch).unwrap_or(0);
        let mut input = Vec::with_capacity(x0s.len());
        let mut target = Vec::with_capacity(x0s.len());
        for (i, c) in coeffs.iter().enumerate() {
            let rows = x0s[i * per..(i + 1) * per]
                .iter()
                .zip(&epss[i * per..(i + 1) * per]);
            for (&a, &e) in rows {
                let (a, e) = (a.as_f64(), e.as_f64());
                input.push(A::of_f64(c.input.0 * a + c.input.1 * e));
                target.push(A::of_f64(c.target.0 * a + c.target.1 * e));
            }
        }
        let shape = x0.raw_dim();
        Ok(PreparedBatch {
            input: ArrayD::from_shape_vec(shape.clone(), input).expect("sized"),
            time: coeffs.iter().map(|c| A::of_f64(c.time)).collect(),
            target: ArrayD::from_shape_vec(shape, target).expect("sized"),
            weights: coeffs.iter().map(|c| c.weight).collect(),
        })
    }
}

/// Per-sample affine coefficients: network input `input.0 x0 + input.1 eps`, time input
/// `time`, target `target.0 x0 + target.1 eps`, loss weight `weight`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SampleCoefficients {
    pub input: (f64, f64),
    pub time: f64,
    pub target: (f64, f64),
    pub weight: f64,
}

/// A batch ready for the network.
#[derive(Clone, Debug, PartialEq)]
pub struct PreparedBatch<A> {
    pub input: ArrayD<A>,
    pub time: Vec<A>,
    pub target: ArrayD<A>,
    pub weights: Vec<f64>,
}

fn check_batch(context: &'static str, expected: &[usize], got: &[usize]) -> Result<()> {
    if expected == got && !expected.is_empty() {
        Ok(())
    } else {
        Err(TrainError::ShapeMismatch {
            context,
            expected: expected.to_vec(),
            got: got.to_vec(),
        })
    }
}

/// `L = (1/B) sum_i w_i mean_j (F_ij - y_ij)^2` and its gradient `dL/dF`, accumulated in f64.
pub fn weighted_mse<A: Scalar>(
    output: &ArrayD<A>,
    target: &ArrayD<A>,
    weights: &[f64],
) -> Result<(f64, ArrayD<A>)> {
    check_batch("loss output", target.shape(), output.shape())?;
    let batch = target.shape()[0];
    if weights.len() != batch || batch == 0 {
        return Err(TrainError::ShapeMismatch {
            context: "loss weights",
            expected: vec![batch],
            got: vec![weights.len()],
        });
    }
    let out = output.as_standard_layout();
    let tgt = target.as_standard_layout();
    let (out, tgt) = (
        out.as_slice().expect("standard"),
        tgt.as_slice().expect("standard"),
    );
    let per = out.len() / batch;
    let norm = 1.0 / (batch * per.max(1)) as f64;
    let mut loss = 0.0;
    let mut grad = Vec::with_capacity(out.len());
    for (i, &w) in weights.iter().enumerate() {
        let mut row = 0.0;
        for (&f, &y) in out[i * per..(i + 1) * per]
            .iter()
            .zip(&tgt[i * per..(i + 1) * per])
        {
            let d = f.as_f64() - y.as_f64();
            row += d * d;
            grad.push(A::of_f64(2.0 * w * d * norm));
        }
        loss += w * row * norm;
    }
    Ok((
        loss,
        ArrayD::from_shape_vec(target.raw_dim(), grad).expect("sized"),
    ))
}
