//! DPM-Solver++ and UniPC on the exact gmm2d model, against the adaptive reference ODE
//! and the official codes' numbers in shared/reference/gmm/official_research_solvers_gmm2d.json.

mod common;

use diffusion_continuous::multistep::sample;
use diffusion_continuous::{
    Evaluator, GridKind, Method, ModelTime, MultistepOptions, TimeGrid, UniPcVariant,
};

fn run(method: Method, kind: GridKind, nfe: usize) -> f64 {
    let sched = common::schedule("scaled_linear");
    let gmm = common::mixture();
    let x = common::x_t();
    let reference = common::ode_reference(&sched, &x, &[common::T_END]).remove(0);
    let eval = Evaluator::new(&gmm, &sched, ModelTime::discrete(1000));
    let grid = TimeGrid::new(kind, &sched, common::T_START, common::T_END, nfe).unwrap();
    let out = sample(&eval, &x, &grid, method, &MultistepOptions::default()).unwrap();
    assert_eq!(eval.nfe(), nfe);
    common::rmse(&out, &reference)
}

/// Our port of official UniPC must reproduce the official code's RMSE (same model, same
/// grid, same end points) to a few significant digits.
#[test]
fn unipc_reproduces_official_numbers() {
    if common::shared().is_none() {
        return;
    }
    let cases = [
        (
            UniPcVariant::Bh2,
            2,
            GridKind::LogSnrUniform,
            [(5, 0.194), (10, 0.0307), (20, 0.00784)],
        ),
        (
            UniPcVariant::Bh1,
            3,
            GridKind::LogSnrUniform,
            [(5, 0.425), (10, 0.0424), (20, 0.00597)],
        ),
        (
            UniPcVariant::Bh2,
            2,
            GridKind::TimeUniform,
            [(5, 0.143), (10, 0.0796), (20, 0.042)],
        ),
    ];
    for (variant, order, kind, rows) in cases {
        for (nfe, official) in rows {
            let method = Method::UniPc {
                variant,
                order,
                corrector: true,
            };
            let got = run(method, kind, nfe);
            println!("UniPC {variant:?} o{order} {kind:?} NFE {nfe}: {got:.4} (official {official})");
            assert!((got / official - 1.0).abs() < 0.02, "{got} vs {official}");
        }
    }
}

#[test]
fn dpmpp_table() {
    for order in [2, 3] {
        for kind in [GridKind::TimeUniform, GridKind::LogSnrUniform] {
            for nfe in [5, 10, 20] {
                let got = run(Method::DpmSolverPp { order }, kind, nfe);
                println!("DPM-Solver++ {order}M {kind:?} NFE {nfe}: {got:.4}");
            }
        }
    }
}
