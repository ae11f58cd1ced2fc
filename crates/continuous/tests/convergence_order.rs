//! Convergence order of the multistep solvers: error against the DoPri5 reference (1e-12)
//! at an intermediate end point, as a function of NFE on a logSNR grid; the log-log slope
//! over NFE 20..160 must match the method's theoretical order.

mod common;

use diffusion_continuous::multistep::sample;
use diffusion_continuous::{
    Dopri5Options, Evaluator, GridKind, Method, ModelTime, MultistepOptions, ProbabilityFlow, TimeGrid,
    UniPcVariant,
};
use diffusion_core::NoiseSchedule;

/// The end point: sigma = 0.5 on the scaled_linear table (smooth, far from t = 0).
fn t_end(sched: &impl NoiseSchedule) -> f64 {
    sched.t_of_lambda((0.75f64.sqrt() / 0.5).ln())
}

/// Least-squares slope of ln(err) against ln(nfe), negated (so order p gives ~p).
fn slope(nfes: &[usize], errs: &[f64]) -> f64 {
    let xs: Vec<f64> = nfes.iter().map(|&n| (n as f64).ln()).collect();
    let ys: Vec<f64> = errs.iter().map(|e| e.ln()).collect();
    let (mx, my) = (
        xs.iter().sum::<f64>() / xs.len() as f64,
        ys.iter().sum::<f64>() / ys.len() as f64,
    );
    let sxy: f64 = xs.iter().zip(&ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    let sxx: f64 = xs.iter().map(|x| (x - mx).powi(2)).sum();
    -sxy / sxx
}

#[test]
fn multistep_solvers_show_their_theoretical_order() {
    let sched = common::schedule("scaled_linear");
    let gmm = common::mixture();
    let x = common::normals(128, 2, 17);
    let end = t_end(&sched);
    let flow = ProbabilityFlow::new(Evaluator::new(&gmm, &sched, ModelTime::discrete(1000)));
    let reference = flow
        .solve(&x, 1.0, &[end], &Dopri5Options::tolerance(1e-12))
        .unwrap()
        .0
        .remove(0);
    let nfes = [20, 40, 80, 160];
    // Full order on every step (no lowering at the end), so the global order is visible.
    let options = MultistepOptions {
        lower_order_final: false,
    };
    let cases = [
        ("DPM-Solver++ 1 (DDIM)", Method::DpmSolverPp { order: 1 }, 1.0),
        ("DPM-Solver++ 2M", Method::DpmSolverPp { order: 2 }, 2.0),
        // 3M warms up with one DDIM step (local error O(h^2)) and one 2M step, as the
        // official multistep code does; that first step caps the *global* order at 2
        // (observed: slope ~2.7 over 20..40, then 2.0). Its error constant stays ~5x below
        // 2M's (checked below).
        ("DPM-Solver++ 3M", Method::DpmSolverPp { order: 3 }, 2.0),
        (
            "UniPC bh2 p2 (UniC off)",
            Method::UniPc {
                variant: UniPcVariant::Bh2,
                order: 2,
                corrector: false,
            },
            2.0,
        ),
        (
            "UniPC bh2 p2 + UniC",
            Method::UniPc {
                variant: UniPcVariant::Bh2,
                order: 2,
                corrector: true,
            },
            3.0,
        ),
    ];
    let mut failures = Vec::new();
    let mut all = Vec::new();
    for (name, method, order) in cases {
        let errs: Vec<f64> = nfes
            .iter()
            .map(|&nfe| {
                let eval = Evaluator::new(&gmm, &sched, ModelTime::discrete(1000));
                let grid = TimeGrid::new(GridKind::LogSnrUniform, &sched, 1.0, end, nfe).unwrap();
                let out = sample(&eval, &x, &grid, method, &options).unwrap();
                common::rmse(&out, &reference)
            })
            .collect();
        let p = slope(&nfes, &errs);
        let shown: Vec<String> = errs.iter().map(|e| format!("{e:.2e}")).collect();
        println!("{name}: errors {shown:?}, slope {p:.2} (theory {order})");
        all.push(errs.clone());
        if (p - order).abs() > 0.3 {
            failures.push(format!("{name}: slope {p:.2}, theory {order}"));
        }
    }
    assert!(failures.is_empty(), "{failures:?}");
    // Higher order pays off at every NFE: 3M below 2M below DDIM, UniC below plain UniPC.
    for i in 0..nfes.len() {
        assert!(all[2][i] < 0.5 * all[1][i] && all[1][i] < all[0][i]);
        assert!(all[4][i] < 0.5 * all[3][i]);
    }
}
