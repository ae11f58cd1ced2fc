//! Model output parameterizations and the one place that converts between them.
//!
//! With `x = alpha * x0 + sigma * eps`, every parameterization is a linear function of
//! `(x0, eps)` whose coefficients depend only on `(alpha, sigma)`. Converting a model
//! output `m` of one kind into another kind is therefore `cx * x + cm * m`, and that pair
//! of scalars is all [`conversion`] computes; the tensor work is one fused
//! [`Tensor::lincomb`](crate::Tensor::lincomb).

use serde::{Deserialize, Serialize};

use crate::{CoreError, Result};

/// What a model predicts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Parameterization {
    /// The noise `eps` (diffusers `epsilon`).
    Epsilon,
    /// The clean sample `x0` (diffusers `sample`).
    Sample,
    /// `v = alpha * eps - sigma * x0` (Salimans & Ho; diffusers `v_prediction`).
    V,
    /// The rectified-flow velocity `u = eps - x0` (diffusers `flow_prediction`).
    Flow,
    /// The score `grad log p(x) = -eps / sigma`.
    Score,
}

impl Parameterization {
    /// Parses diffusers' `prediction_type` strings and our own names.
    pub fn from_name(name: &str) -> Result<Self> {
        Ok(match name {
            "epsilon" | "eps" => Self::Epsilon,
            "sample" | "x0" => Self::Sample,
            "v_prediction" | "v" => Self::V,
            "flow_prediction" | "flow" | "velocity" => Self::Flow,
            "score" => Self::Score,
            other => {
                return Err(CoreError::InvalidArgument {
                    name: "prediction_type",
                    reason: format!(
                        "unknown prediction type {other:?} (expected epsilon, sample, v_prediction, flow_prediction or score)"
                    ),
                });
            }
        })
    }

    /// The coefficients `(p_x0, p_eps)` with `self = p_x0 * x0 + p_eps * eps`.
    pub fn basis(self, alpha: f64, sigma: f64) -> (f64, f64) {
        match self {
            Self::Epsilon => (0.0, 1.0),
            Self::Sample => (1.0, 0.0),
            Self::V => (-sigma, alpha),
            Self::Flow => (-1.0, 1.0),
            Self::Score => (0.0, -1.0 / sigma),
        }
    }
}

/// Coefficients `(cx, cm)` with `to = cx * x + cm * m`, where `m` is a prediction of kind
/// `from` for the sample `x = alpha * x0 + sigma * eps`.
///
/// Fails where the conversion is singular (for example epsilon to x0 at alpha = 0).
pub fn conversion(
    from: Parameterization,
    to: Parameterization,
    alpha: f64,
    sigma: f64,
) -> Result<(f64, f64)> {
    if from == to {
        return Ok((0.0, 1.0));
    }
    // [x; m] = A [x0; eps] with A = [[alpha, sigma], [p0, p1]]; invert A, then apply `to`.
    let (p0, p1) = from.basis(alpha, sigma);
    let det = alpha * p1 - sigma * p0;
    let scale = alpha.abs().max(sigma.abs()).max(p0.abs()).max(p1.abs());
    if !det.is_finite() || det.abs() <= 1e-300 || det.abs() < 1e-14 * scale * scale {
        return Err(CoreError::SingularConversion {
            from,
            to,
            alpha,
            sigma,
        });
    }
    // x0 = ( p1 * x - sigma * m) / det;  eps = (-p0 * x + alpha * m) / det.
    let (q0, q1) = to.basis(alpha, sigma);
    if !(q0.is_finite() && q1.is_finite()) {
        return Err(CoreError::SingularConversion {
            from,
            to,
            alpha,
            sigma,
        });
    }
    let cx = (q0 * p1 - q1 * p0) / det;
    let cm = (-q0 * sigma + q1 * alpha) / det;
    Ok((cx, cm))
}

#[cfg(test)]
mod tests {
    use super::*;
    use Parameterization::*;

    const ALL: [Parameterization; 5] = [Epsilon, Sample, V, Flow, Score];

    /// Closed forms from the literature, evaluated on a known (x0, eps).
    fn closed_form(p: Parameterization, x0: f64, eps: f64, alpha: f64, sigma: f64) -> f64 {
        match p {
            Epsilon => eps,
            Sample => x0,
            V => alpha * eps - sigma * x0,
            Flow => eps - x0,
            Score => -eps / sigma,
        }
    }

    #[test]
    fn every_pair_converts_exactly() {
        for &(alpha, sigma) in &[(0.8, 0.6), (1.0, 80.0), (0.3, 0.7), (0.999, 0.0447)] {
            let (x0, eps) = (0.37, -1.21);
            let x = alpha * x0 + sigma * eps;
            for from in ALL {
                for to in ALL {
                    let m = closed_form(from, x0, eps, alpha, sigma);
                    let (cx, cm) = conversion(from, to, alpha, sigma).unwrap();
                    let got = cx * x + cm * m;
                    let want = closed_form(to, x0, eps, alpha, sigma);
                    assert!(
                        (got - want).abs() < 1e-12 * (1.0 + want.abs()),
                        "{from:?}->{to:?} at ({alpha},{sigma}): {got} vs {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn singular_conversions_are_errors() {
        // Pure noise: epsilon says nothing about x0.
        assert!(matches!(
            conversion(Epsilon, Sample, 0.0, 1.0),
            Err(CoreError::SingularConversion { .. })
        ));
        // Clean data: x0 says nothing about eps.
        assert!(conversion(Sample, Epsilon, 1.0, 0.0).is_err());
        assert!(conversion(Epsilon, Score, 1.0, 0.0).is_err());
    }

    #[test]
    fn names_follow_diffusers() {
        assert_eq!(Parameterization::from_name("v_prediction").unwrap(), V);
        assert_eq!(Parameterization::from_name("epsilon").unwrap(), Epsilon);
        assert!(Parameterization::from_name("noise").is_err());
    }
}
