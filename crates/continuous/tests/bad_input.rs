//! Bad input gives typed errors, never panics.

mod common;

use diffusion_continuous::multistep::sample;
use diffusion_continuous::{
    ContinuousError, DcSolver, Dopri5Options, DpmSolverV3, DpmV3Options, Evaluator, GridKind, Method,
    ModelStatistics, ModelTime, MultistepOptions, ProbabilityFlow, TimeGrid, integrate,
};
use diffusion_core::{CoreError, Parameterization, denoiser_fn};
use ndarray::{ArrayD, IxDyn};

fn sched() -> diffusion_schedules::InterpolatedVp {
    common::schedule("scaled_linear")
}

#[test]
fn grids_reject_zero_steps_and_non_decreasing_times() {
    let s = sched();
    assert!(matches!(
        TimeGrid::new(GridKind::TimeUniform, &s, 1.0, 1e-3, 0),
        Err(ContinuousError::InvalidArgument { .. })
    ));
    assert!(matches!(
        TimeGrid::new(GridKind::TimeUniform, &s, 1e-3, 1.0, 5),
        Err(ContinuousError::InvalidGrid(_))
    ));
    assert!(matches!(
        TimeGrid::from_times(vec![1.0, 0.5, 0.5]),
        Err(ContinuousError::InvalidGrid(_))
    ));
    assert!(matches!(
        TimeGrid::from_times(vec![1.0, f64::NAN]),
        Err(ContinuousError::InvalidGrid(_))
    ));
    assert!(matches!(
        TimeGrid::from_times(vec![1.0]),
        Err(ContinuousError::InvalidGrid(_))
    ));
    assert!(TimeGrid::new(GridKind::Karras { rho: -1.0 }, &s, 1.0, 1e-3, 5).is_err());
    for power in [0.0, -2.0, f64::NAN, f64::INFINITY] {
        assert!(TimeGrid::new(GridKind::TimePower { power }, &s, 1.0, 1e-3, 5).is_err());
    }
    assert!(matches!(
        TimeGrid::new(GridKind::TimePower { power: 2.0 }, &s, 1.0, -1e-3, 5),
        Err(ContinuousError::InvalidGrid(_))
    ));
}

#[test]
fn nan_and_wrong_shape_model_outputs_are_errors() {
    let s = sched();
    let x = common::normals(4, 2, 0);
    let grid = TimeGrid::new(GridKind::TimeUniform, &s, 1.0, 1e-3, 5).unwrap();
    let nan = denoiser_fn(Parameterization::Epsilon, |x: &ArrayD<f64>, _| {
        Ok(x.mapv(|_| f64::NAN))
    });
    let wrong = denoiser_fn(Parameterization::Epsilon, |_: &ArrayD<f64>, _| {
        Ok(ArrayD::zeros(IxDyn(&[3])))
    });
    let models: [&dyn diffusion_core::Denoiser<ArrayD<f64>>; 2] = [&nan, &wrong];
    for model in models {
        let eval = Evaluator::new(model, &s, ModelTime::discrete(1000));
        for m in [
            Method::DpmSolverPp { order: 2 },
            Method::UniPc {
                variant: diffusion_continuous::UniPcVariant::Bh2,
                order: 2,
                corrector: true,
            },
        ] {
            let err = sample(&eval, &x, &grid, m, &MultistepOptions::default()).unwrap_err();
            assert!(
                matches!(
                    err,
                    ContinuousError::Core(
                        CoreError::NonFiniteModelOutput { .. } | CoreError::ShapeMismatch { .. }
                    )
                ),
                "{err}"
            );
        }
        let flow = ProbabilityFlow::new(Evaluator::new(model, &s, ModelTime::discrete(1000)));
        assert!(matches!(
            flow.solve(&x, 1.0, &[0.5], &Dopri5Options::default()),
            Err(ContinuousError::Core(_))
        ));
        let dc = DcSolver::default();
        assert!(dc.sample(&eval, &x, &grid, &[1.0; 5]).is_err());
    }
}

#[test]
fn invalid_tolerances_orders_and_ratios_are_errors() {
    let y = ArrayD::from_elem(IxDyn(&[1]), 1.0);
    let mut rhs = |_: f64, y: &ArrayD<f64>| Ok(y.clone());
    for (rtol, atol) in [(0.0, 0.0), (-1.0, 1e-6), (f64::NAN, 1e-6), (1e-20, 0.0)] {
        let o = Dopri5Options {
            rtol,
            atol,
            ..Default::default()
        };
        assert!(matches!(
            integrate(&mut rhs, 0.0, &y, &[1.0], &o),
            Err(ContinuousError::InvalidArgument { .. })
        ));
    }
    assert!(matches!(
        integrate(&mut rhs, 0.0, &y, &[1.0, 0.5], &Dopri5Options::default()),
        Err(ContinuousError::InvalidGrid(_))
    ));
    // A blow-up the integrator cannot follow ends in a typed failure, not a hang.
    let mut blow = |_: f64, y: &ArrayD<f64>| Ok(y.mapv(|v| v * v));
    let o = Dopri5Options {
        max_steps: 200,
        ..Default::default()
    };
    assert!(matches!(
        integrate(&mut blow, 0.0, &y, &[2.0], &o),
        Err(ContinuousError::IntegrationFailed { .. })
    ));

    let s = sched();
    let gmm = common::mixture();
    let eval = Evaluator::new(&gmm, &s, ModelTime::discrete(1000));
    let x = common::normals(4, 2, 0);
    let grid = TimeGrid::new(GridKind::TimeUniform, &s, 1.0, 1e-3, 5).unwrap();
    assert!(
        sample(
            &eval,
            &x,
            &grid,
            Method::DpmSolverPp { order: 4 },
            &MultistepOptions::default()
        )
        .is_err()
    );
    let dc = DcSolver::default();
    assert!(dc.sample(&eval, &x, &grid, &[1.0; 4]).is_err());
    assert!(dc.sample(&eval, &x, &grid, &[f64::NAN; 5]).is_err());
}

#[test]
fn statistics_files_round_trip_and_reject_garbage() {
    let s = sched();
    let lam: Vec<f64> = (0..=20).map(|i| -3.0 + 0.3 * i as f64).collect();
    let stats = ModelStatistics::degenerate(lam, 2).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ems.npz");
    stats.save(&path).unwrap();
    assert_eq!(ModelStatistics::load(&path).unwrap(), stats);
    std::fs::write(dir.path().join("bad.npz"), b"not a zip").unwrap();
    assert!(matches!(
        ModelStatistics::load(dir.path().join("bad.npz")),
        Err(ContinuousError::Format { .. })
    ));
    assert!(matches!(
        ModelStatistics::load(dir.path().join("missing.npz")),
        Err(ContinuousError::Io { .. })
    ));
    assert!(ModelStatistics::degenerate(vec![0.0, 1.0, 0.5], 2).is_err());

    // Wrong item size, too many steps for the grid, and times outside it.
    let solver = DpmSolverV3::new(
        ModelStatistics::degenerate(
            (0..=10)
                .map(|i| s.lambda_at(1.0) + (s.lambda_at(1e-3) - s.lambda_at(1.0)) * i as f64 / 10.0)
                .collect(),
            2,
        )
        .unwrap(),
    )
    .unwrap();
    let gmm = common::mixture();
    let eval = Evaluator::new(&gmm, &s, ModelTime::discrete(1000));
    let g5 = TimeGrid::new(GridKind::TimeUniform, &s, 1.0, 1e-3, 5).unwrap();
    assert!(
        solver
            .sample(&eval, &common::normals(4, 3, 0), &g5, &DpmV3Options::default())
            .is_err()
    );
    let g30 = TimeGrid::new(GridKind::TimeUniform, &s, 1.0, 1e-3, 30).unwrap();
    assert!(matches!(
        solver.sample(&eval, &common::normals(4, 2, 0), &g30, &DpmV3Options::default()),
        Err(ContinuousError::InvalidGrid(_))
    ));
}

trait LambdaAt {
    fn lambda_at(&self, t: f64) -> f64;
}
impl LambdaAt for diffusion_schedules::InterpolatedVp {
    fn lambda_at(&self, t: f64) -> f64 {
        diffusion_core::NoiseSchedule::lambda(self, t)
    }
}
