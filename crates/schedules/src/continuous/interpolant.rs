/// The deterministic part of a stochastic interpolant (Albergo, Boffi & Vanden-Eijnden
/// 2023): `x_t = a(t) x0 + b(t) x1 + gamma(t) z`, with `x0` from the base, `x1` data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InterpolantPath {
    /// `a = 1 - t`, `b = t`.
    Linear,
    /// `a = cos(pi t / 2)`, `b = sin(pi t / 2)`.
    Trigonometric,
}

/// A stochastic interpolant with `gamma(t) = sqrt(scale t (1 - t))`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Interpolant {
    pub path: InterpolantPath,
    pub gamma_scale: f64,
}

/// Coefficients and their time derivatives at one `t`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct InterpolantCoefficients {
    pub a: f64,
    pub b: f64,
    pub gamma: f64,
    pub da: f64,
    pub db: f64,
    pub dgamma: f64,
}

impl Interpolant {
    pub fn coefficients(&self, t: f64) -> InterpolantCoefficients {
        use std::f64::consts::FRAC_PI_2;
        let (a, b, da, db) = match self.path {
            InterpolantPath::Linear => (1.0 - t, t, -1.0, 1.0),
            InterpolantPath::Trigonometric => {
                let (s, c) = (FRAC_PI_2 * t).sin_cos();
                (c, s, -FRAC_PI_2 * s, FRAC_PI_2 * c)
            }
        };
        let g2 = self.gamma_scale * t * (1.0 - t);
        let gamma = g2.max(0.0).sqrt();
        // d/dt sqrt(s t (1 - t)) = s (1 - 2t) / (2 gamma); infinite at the ends when s > 0.
        let dgamma = if gamma > 0.0 {
            self.gamma_scale * (1.0 - 2.0 * t) / (2.0 * gamma)
        } else {
            0.0
        };
        InterpolantCoefficients {
            a,
            b,
            gamma,
            da,
            db,
            dgamma,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derivatives_match_finite_differences() {
        for path in [InterpolantPath::Linear, InterpolantPath::Trigonometric] {
            let it = Interpolant {
                path,
                gamma_scale: 2.0,
            };
            for t in [0.1, 0.5, 0.83] {
                let h = 1e-6;
                let (p, m, c) = (it.coefficients(t + h), it.coefficients(t - h), it.coefficients(t));
                let fd = |f: fn(&InterpolantCoefficients) -> f64| (f(&p) - f(&m)) / (2.0 * h);
                assert!((fd(|c| c.a) - c.da).abs() < 1e-7);
                assert!((fd(|c| c.b) - c.db).abs() < 1e-7);
                assert!((fd(|c| c.gamma) - c.dgamma).abs() < 1e-7);
            }
            let (c0, c1) = (it.coefficients(0.0), it.coefficients(1.0));
            assert!((c0.a - 1.0).abs() < 1e-15 && c0.b.abs() < 1e-15 && c0.gamma == 0.0);
            assert!(c1.a.abs() < 1e-15 && (c1.b - 1.0).abs() < 1e-15 && c1.gamma == 0.0);
        }
    }
}
