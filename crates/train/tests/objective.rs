//! Losses against closed forms from the papers, gradients against f64 finite differences,
//! and the timestep samplers' distributions against their definitions.

use std::sync::Arc;

use diffusion_core::{Convention, NoiseLevel, NoiseSchedule, Parameterization, Rng};
use diffusion_train::{
    EdmPrecond, LevelSampler, Objective, TimeDistribution, TrainError, Weighting, weighted_mse,
};
use ndarray::{ArrayD, IxDyn};

const B: usize = 3;
const D: usize = 4;

fn randn(rng: &mut Rng, shape: &[usize]) -> ArrayD<f64> {
    let mut v = vec![0.0; shape.iter().product()];
    rng.fill_normal(&mut v);
    ArrayD::from_shape_vec(IxDyn(shape), v).unwrap()
}

/// The loss written straight from its definition, independent of the crate: per sample an
/// explicit prediction error `err(i, j, F)` and weight.
fn oracle_loss(f: &ArrayD<f64>, err: &dyn Fn(usize, usize, f64) -> f64, w: &[f64]) -> f64 {
    let mut total = 0.0;
    for i in 0..B {
        for j in 0..D {
            total += w[i] * err(i, j, f[[i, j]]).powi(2);
        }
    }
    total / (B * D) as f64
}

/// Per case: the prediction error `(i, j, F)`, the weights, the network input `(i, j)` and
/// the network time inputs.
type Oracle<'a> = (
    Box<dyn Fn(usize, usize, f64) -> f64 + 'a>,
    Vec<f64>,
    Box<dyn Fn(usize, usize) -> f64 + 'a>,
    Vec<f64>,
);

struct Case {
    name: &'static str,
    objective: Objective,
    levels: Vec<NoiseLevel>,
}

fn vp(t: f64) -> NoiseLevel {
    let a = (std::f64::consts::FRAC_PI_2 * t).cos();
    NoiseLevel::new(t, a, (1.0 - a * a).sqrt())
}

fn cases() -> Vec<Case> {
    let vp_levels = vec![vp(0.1), vp(0.5), vp(0.93)];
    let predict = |target, weighting| Objective::Predict { target, weighting };
    use Parameterization::*;
    vec![
        Case {
            name: "eps",
            objective: predict(Epsilon, Weighting::Uniform),
            levels: vp_levels.clone(),
        },
        Case {
            name: "v",
            objective: predict(V, Weighting::Uniform),
            levels: vp_levels.clone(),
        },
        Case {
            name: "x0",
            objective: predict(Sample, Weighting::Uniform),
            levels: vp_levels.clone(),
        },
        Case {
            name: "flow",
            objective: predict(Flow, Weighting::Uniform),
            levels: [0.05, 0.5, 0.97]
                .iter()
                .map(|&t| NoiseLevel::new(t, 1.0 - t, t))
                .collect(),
        },
        Case {
            name: "eps min-snr",
            objective: predict(Epsilon, Weighting::MinSnr { gamma: 5.0 }),
            levels: vp_levels.clone(),
        },
        Case {
            name: "v min-snr",
            objective: predict(V, Weighting::MinSnr { gamma: 5.0 }),
            levels: vp_levels.clone(),
        },
        Case {
            name: "x0 min-snr",
            objective: predict(Sample, Weighting::MinSnr { gamma: 5.0 }),
            levels: vp_levels.clone(),
        },
        Case {
            name: "edm",
            objective: Objective::Edm { sigma_data: 0.5 },
            levels: [0.002, 0.5, 80.0]
                .iter()
                .map(|&s| NoiseLevel::new(s, 1.0, s))
                .collect(),
        },
        Case {
            name: "edm on vp",
            objective: Objective::Edm { sigma_data: 0.5 },
            levels: vp_levels,
        },
    ]
}

#[test]
fn losses_match_definitions_and_gradients_match_finite_differences() {
    let mut rng = Rng::new(11);
    for case in cases() {
        let (x0, eps) = (randn(&mut rng, &[B, D]), randn(&mut rng, &[B, D]));
        let (x0, eps) = (&x0, &eps);
        let f = randn(&mut rng, &[B, D]);
        let lv = &case.levels;
        let x = |i: usize, j: usize| lv[i].alpha * x0[[i, j]] + lv[i].sigma * eps[[i, j]];
        let snr = |i: usize| (lv[i].alpha / lv[i].sigma).powi(2);
        // Closed forms (Hang et al. 2023 for min-SNR; Karras et al. 2022 Table 1 for EDM).
        let (err, w, net_in, net_t): Oracle<'_> = match case.name {
            "eps" | "eps min-snr" => (
                Box::new(|i, j, f| f - eps[[i, j]]),
                (0..B)
                    .map(|i| {
                        if case.name == "eps" {
                            1.0
                        } else {
                            snr(i).min(5.0) / snr(i)
                        }
                    })
                    .collect(),
                Box::new(x),
                lv.iter().map(|l| l.timestep).collect(),
            ),
            "v" | "v min-snr" => (
                Box::new(|i, j, f| f - (lv[i].alpha * eps[[i, j]] - lv[i].sigma * x0[[i, j]])),
                (0..B)
                    .map(|i| {
                        if case.name == "v" {
                            1.0
                        } else {
                            snr(i).min(5.0) / (snr(i) + 1.0)
                        }
                    })
                    .collect(),
                Box::new(x),
                lv.iter().map(|l| l.timestep).collect(),
            ),
            "x0" | "x0 min-snr" => (
                Box::new(|i, j, f| f - x0[[i, j]]),
                (0..B)
                    .map(|i| if case.name == "x0" { 1.0 } else { snr(i).min(5.0) })
                    .collect(),
                Box::new(x),
                lv.iter().map(|l| l.timestep).collect(),
            ),
            "flow" => (
                Box::new(|i, j, f| f - (eps[[i, j]] - x0[[i, j]])),
                vec![1.0; B],
                Box::new(x),
                lv.iter().map(|l| l.timestep).collect(),
            ),
            _ => {
                let sd: f64 = 0.5;
                let s = |i: usize| lv[i].sigma / lv[i].alpha;
                let xt = move |i: usize, j: usize| x(i, j) / lv[i].alpha;
                let c_skip = move |i: usize| sd * sd / (s(i).powi(2) + sd * sd);
                let c_out = move |i: usize| s(i) * sd / (s(i).powi(2) + sd * sd).sqrt();
                let c_in = move |i: usize| 1.0 / (s(i).powi(2) + sd * sd).sqrt();
                let lambda = move |i: usize| (s(i).powi(2) + sd * sd) / (s(i) * sd).powi(2);
                // lambda |D - x0|^2 with D = c_skip x~ + c_out F: fold sqrt(lambda) into the error.
                (
                    Box::new(move |i, j, f| {
                        lambda(i).sqrt() * (c_skip(i) * xt(i, j) + c_out(i) * f - x0[[i, j]])
                    }),
                    vec![1.0; B],
                    Box::new(move |i, j| c_in(i) * xt(i, j)),
                    (0..B).map(|i| s(i).ln() / 4.0).collect(),
                )
            }
        };
        let batch = case.objective.prepare(x0, eps, lv).unwrap();
        for i in 0..B {
            assert!(
                (batch.time[i] - net_t[i]).abs() < 1e-12,
                "{}: time input",
                case.name
            );
            for j in 0..D {
                let want = net_in(i, j);
                assert!(
                    (batch.input[[i, j]] - want).abs() < 1e-12 * (1.0 + want.abs()),
                    "{}: input",
                    case.name
                );
            }
        }
        let (loss, grad) = weighted_mse(&f, &batch.target, &batch.weights).unwrap();
        let want = oracle_loss(&f, &*err, &w);
        assert!(
            (loss - want).abs() < 1e-11 * (1.0 + want),
            "{}: loss {loss} vs {want}",
            case.name
        );
        let h = 1e-6;
        for i in 0..B {
            for j in 0..D {
                let (mut fp, mut fm) = (f.clone(), f.clone());
                fp[[i, j]] += h;
                fm[[i, j]] -= h;
                let fd = (oracle_loss(&fp, &*err, &w) - oracle_loss(&fm, &*err, &w)) / (2.0 * h);
                let tol = 1e-7 * (1.0 + fd.abs());
                assert!(
                    (grad[[i, j]] - fd).abs() < tol,
                    "{}: grad[{i},{j}] {} vs fd {fd}",
                    case.name,
                    grad[[i, j]]
                );
            }
        }
    }
}

#[test]
fn edm_preconditioning_closed_forms() {
    // At sigma = sigma_data: c_skip = 1/2, c_out = sigma_data / sqrt 2, c_in = 1 / (sigma_data sqrt 2).
    let p = EdmPrecond::new(0.5, 0.5).unwrap();
    assert!((p.c_skip - 0.5).abs() < 1e-15);
    assert!((p.c_out - 0.5 / 2f64.sqrt()).abs() < 1e-15);
    assert!((p.c_in - 1.0 / (0.5 * 2f64.sqrt())).abs() < 1e-15);
    assert!((p.c_noise - 0.25 * 0.5f64.ln()).abs() < 1e-15);
    // EDM's weighting makes the effective weight lambda c_out^2 exactly 1.
    for s in [0.002, 0.3, 7.0, 80.0] {
        let p = EdmPrecond::new(s, 0.5).unwrap();
        assert!((EdmPrecond::loss_weight(s, 0.5) * p.c_out * p.c_out - 1.0).abs() < 1e-12);
    }
    assert!(EdmPrecond::new(0.0, 0.5).is_err());
    assert!(EdmPrecond::new(1.0, -1.0).is_err());
}

#[test]
fn bad_objective_inputs_are_errors() {
    let x = ArrayD::<f64>::zeros(IxDyn(&[2, 3]));
    let obj = Objective::epsilon();
    let l = vp(0.5);
    assert!(matches!(
        obj.prepare(&x, &ArrayD::zeros(IxDyn(&[2, 4])), &[l, l]),
        Err(TrainError::ShapeMismatch { .. })
    ));
    assert!(matches!(
        obj.prepare(&x, &x, &[l]),
        Err(TrainError::ShapeMismatch { .. })
    ));
    let nan = NoiseLevel::new(0.0, f64::NAN, 1.0);
    assert!(matches!(
        obj.prepare(&x, &x, &[nan, l]),
        Err(TrainError::InvalidArgument { .. })
    ));
    let score = Objective::Predict {
        target: Parameterization::Score,
        weighting: Weighting::Uniform,
    };
    assert!(score.validate().is_err());
    let gamma = Objective::Predict {
        target: Parameterization::Epsilon,
        weighting: Weighting::MinSnr { gamma: 0.0 },
    };
    assert!(gamma.validate().is_err());
    assert!(Objective::Edm { sigma_data: f64::NAN }.validate().is_err());
    // Min-SNR for epsilon is undefined at alpha = 0 (pure noise).
    let minsnr = Objective::Predict {
        target: Parameterization::Epsilon,
        weighting: Weighting::MinSnr { gamma: 5.0 },
    };
    assert!(
        minsnr
            .prepare(&x, &x, &[NoiseLevel::new(1.0, 0.0, 1.0), l])
            .is_err()
    );
    // Loss: weights must match the batch.
    assert!(weighted_mse(&x, &x, &[1.0]).is_err());
    assert!(weighted_mse(&x, &ArrayD::zeros(IxDyn(&[2, 2])), &[1.0, 1.0]).is_err());
}

struct Flow;
impl NoiseSchedule for Flow {
    fn alpha(&self, t: f64) -> f64 {
        1.0 - t
    }
    fn sigma(&self, t: f64) -> f64 {
        t
    }
    fn t_range(&self) -> (f64, f64) {
        (0.0, 1.0)
    }
    fn convention(&self) -> Convention {
        Convention::Flow
    }
}

fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    (
        m,
        (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0)).sqrt(),
    )
}

const N: usize = 20_000;

#[test]
fn samplers_follow_their_distributions() {
    let mut rng = Rng::new(5);
    // Uniform discrete over 0..1000: mean 499.5, std sqrt((1000^2 - 1) / 12); every draw an integer in range.
    let acp: Vec<f64> = (0..1000).map(|i| 1.0 - (i as f64 + 1.0) / 1001.0).collect();
    let levels = LevelSampler::discrete(acp.clone()).unwrap().sample(&mut rng, N);
    let ts: Vec<f64> = levels.iter().map(|l| l.timestep).collect();
    assert!(ts.iter().all(|&t| t.fract() == 0.0 && (0.0..1000.0).contains(&t)));
    let (m, s) = mean_std(&ts);
    let sd = ((1e6f64 - 1.0) / 12.0).sqrt();
    assert!((m - 499.5).abs() < 5.0 * sd / (N as f64).sqrt(), "mean {m}");
    assert!((s - sd).abs() < 0.02 * sd, "std {s}");
    let l = levels[0];
    let a = acp[l.timestep as usize];
    assert!((l.alpha - a.sqrt()).abs() < 1e-15 && (l.sigma - (1.0 - a).sqrt()).abs() < 1e-15);

    // Uniform continuous on [0, 1]: mean 1/2, std 1/sqrt(12); levels from the schedule.
    let levels = LevelSampler::continuous(Arc::new(Flow), TimeDistribution::Uniform)
        .unwrap()
        .sample(&mut rng, N);
    let ts: Vec<f64> = levels.iter().map(|l| l.timestep).collect();
    let (m, s) = mean_std(&ts);
    assert!((m - 0.5).abs() < 5.0 * 0.2887 / (N as f64).sqrt(), "mean {m}");
    assert!((s - 1.0 / 12f64.sqrt()).abs() < 0.01, "std {s}");
    assert!(
        levels
            .iter()
            .all(|l| l.alpha == 1.0 - l.timestep && l.sigma == l.timestep)
    );

    // Logit-normal: logit(t) ~ N(0.3, 0.8^2).
    let dist = TimeDistribution::LogitNormal { mean: 0.3, std: 0.8 };
    let levels = LevelSampler::continuous(Arc::new(Flow), dist)
        .unwrap()
        .sample(&mut rng, N);
    let logits: Vec<f64> = levels
        .iter()
        .map(|l| (l.timestep / (1.0 - l.timestep)).ln())
        .collect();
    let (m, s) = mean_std(&logits);
    assert!((m - 0.3).abs() < 5.0 * 0.8 / (N as f64).sqrt(), "mean {m}");
    assert!((s - 0.8).abs() < 0.03, "std {s}");

    // EDM: ln sigma ~ N(-1.2, 1.2^2), alpha = 1.
    let levels = LevelSampler::edm_log_normal(-1.2, 1.2)
        .unwrap()
        .sample(&mut rng, N);
    assert!(levels.iter().all(|l| l.alpha == 1.0 && l.timestep == l.sigma));
    let logs: Vec<f64> = levels.iter().map(|l| l.sigma.ln()).collect();
    let (m, s) = mean_std(&logs);
    assert!((m + 1.2).abs() < 5.0 * 1.2 / (N as f64).sqrt(), "mean {m}");
    assert!((s - 1.2).abs() < 0.04, "std {s}");
}

#[test]
fn bad_sampler_inputs_are_errors() {
    assert!(LevelSampler::discrete(vec![]).is_err());
    assert!(LevelSampler::discrete(vec![0.9, 1.0]).is_err());
    assert!(LevelSampler::discrete(vec![0.9, f64::NAN]).is_err());
    let bad = TimeDistribution::LogitNormal { mean: 0.0, std: 0.0 };
    assert!(LevelSampler::continuous(Arc::new(Flow), bad).is_err());
    assert!(LevelSampler::edm_log_normal(0.0, -1.0).is_err());
    assert!(LevelSampler::edm_log_normal(f64::INFINITY, 1.0).is_err());
}
