//! The accuracy goal (issue 3, item 5) on gmm2d / scaled_linear, t = 1 -> 1e-3, RMSE
//! against the adaptive reference ODE between the same end points: the shipped
//! configuration beats the best row of the papers' official code at NFE 5, 10 and 20
//! (.109 / .028 / 6.0e-3, measured with those codes on this problem), and beats our
//! faithful ports of DPM-Solver++ and UniPC run on the same time-power grids (so the gain
//! is not the grid alone). Prints the full table.
//!
//! Shipped: DPM-Solver-v3 (order 3, corrector at the predictor's order) on the
//! time-power 1.5 grid, statistics 250 x 2048 (data seed 0, noise seed 1). Runner-up:
//! DC-Solver bh2 order 3 on the time-quadratic grid, ratios searched on 512 noises
//! (seed 11). The grid power was chosen on held-out noise (seed 5; see
//! tests/accuracy_study.rs); nothing is tuned on the evaluation x_T.

mod common;

use diffusion_continuous::multistep::sample;
use diffusion_continuous::{
    DcSolver, DpmSolverV3, DpmV3Options, EmsOptions, Evaluator, GridKind, Method, ModelStatistics, ModelTime,
    MultistepOptions, SearchOptions, TimeGrid, UniPcVariant,
};
use diffusion_schedules::InterpolatedVp;
use ndarray::ArrayD;

const NFES: [usize; 3] = [5, 10, 20];
/// Best official row per NFE (official DPM-Solver-v3 1200 x 4096 at 5 and 10, official
/// UniPC bh1 order 3 logSNR at 20), from docs/solvers.md.
const OFFICIAL_BEST: [f64; 3] = [0.109, 0.028, 6.0e-3];

fn grid(sched: &InterpolatedVp, power: f64, nfe: usize) -> TimeGrid {
    TimeGrid::new(
        GridKind::TimePower { power },
        sched,
        common::T_START,
        common::T_END,
        nfe,
    )
    .unwrap()
}

/// The shipped sampler's options: the official code's `use_corrector` with a corrector of
/// the predictor's order (not "pseudo" one order above), which wins at every NFE here.
pub fn shipped_options() -> DpmV3Options {
    DpmV3Options {
        corrector_pseudo: false,
        ..Default::default()
    }
}

pub const SHIPPED_POWER: f64 = 1.5;

#[test]
fn shipped_configuration_beats_official_best() {
    // The official numbers were measured on the fixture's x_T (`common::x_t`).
    let sched = common::schedule("scaled_linear");
    let gmm = common::mixture();
    let x = common::x_t();
    let eval = Evaluator::new(&gmm, &sched, ModelTime::discrete(1000));
    let reference: ArrayD<f64> = common::ode_reference(&sched, &x, &[common::T_END]).remove(0);

    let n = 2048;
    let x0 = gmm.sample(n, &mut diffusion_core::Rng::new(0)).into_dyn();
    let z = common::normals(n, 2, 1);
    let ems = EmsOptions {
        steps: 250,
        ..Default::default()
    };
    let stats = ModelStatistics::compute(&eval, &x0, &z, common::T_START, common::T_END, &ems).unwrap();
    let v3 = DpmSolverV3::new(stats).unwrap();
    let shipped: Vec<f64> = NFES
        .iter()
        .map(|&nfe| {
            let g = grid(&sched, SHIPPED_POWER, nfe);
            // v3 snaps the grid to its statistics; score it between the same end points.
            let (_, snapped) = v3.snap(&sched, &g).unwrap();
            let r = common::ode_reference(&sched, &x, &[*snapped.last().unwrap()]).remove(0);
            common::rmse(&v3.sample(&eval, &x, &g, &shipped_options()).unwrap(), &r)
        })
        .collect();

    let dc = DcSolver {
        order: 3,
        ..Default::default()
    };
    let search_noise = common::normals(512, 2, 11);
    let dc_row: Vec<f64> = NFES
        .iter()
        .map(|&nfe| {
            let g = grid(&sched, 2.0, nfe);
            let targets = common::ode_reference(&sched, &search_noise, &g.times()[1..]);
            let ratios = dc
                .search(&eval, &search_noise, &g, &targets, &SearchOptions::default())
                .unwrap();
            common::rmse(&dc.sample(&eval, &x, &g, &ratios).unwrap(), &reference)
        })
        .collect();

    // Baselines on the same grids (best of powers 1.5 and 2 per NFE).
    let baseline_methods = [
        ("DPM-Solver++ 2M", Method::DpmSolverPp { order: 2 }),
        (
            "UniPC bh2 o2",
            Method::UniPc {
                variant: UniPcVariant::Bh2,
                order: 2,
                corrector: true,
            },
        ),
        (
            "UniPC bh2 o3",
            Method::UniPc {
                variant: UniPcVariant::Bh2,
                order: 3,
                corrector: true,
            },
        ),
        (
            "UniPC bh1 o3",
            Method::UniPc {
                variant: UniPcVariant::Bh1,
                order: 3,
                corrector: true,
            },
        ),
    ];
    let mut rows: Vec<(String, Vec<f64>)> = Vec::new();
    for (name, m) in baseline_methods {
        let v = NFES
            .iter()
            .map(|&nfe| {
                [1.5, 2.0]
                    .iter()
                    .map(|&p| {
                        let out = sample(&eval, &x, &grid(&sched, p, nfe), m, &MultistepOptions::default());
                        common::rmse(&out.unwrap(), &reference)
                    })
                    .fold(f64::INFINITY, f64::min)
            })
            .collect();
        rows.push((format!("{name} (ours, best of time-power 1.5 / 2)"), v));
    }
    let baseline_best: Vec<f64> = (0..3)
        .map(|i| rows.iter().map(|(_, v)| v[i]).fold(f64::INFINITY, f64::min))
        .collect();
    rows.push((
        "official best row (time-uniform / logSNR grids)".into(),
        OFFICIAL_BEST.to_vec(),
    ));
    rows.push((
        "DC-Solver bh2 o3, time-power 2, ratios 512 x seed 11".into(),
        dc_row.clone(),
    ));
    rows.push((
        "DPM-Solver-v3 shipped, time-power 1.5, EMS 250 x 2048".into(),
        shipped.clone(),
    ));

    println!("| solver | NFE 5 | NFE 10 | NFE 20 |\n|---|---|---|---|");
    for (name, v) in &rows {
        println!("| {name} | {:.4} | {:.4} | {:.2e} |", v[0], v[1], v[2]);
    }
    for (i, nfe) in NFES.iter().enumerate() {
        assert!(
            shipped[i] < OFFICIAL_BEST[i],
            "v3 at NFE {nfe}: {} vs official {}",
            shipped[i],
            OFFICIAL_BEST[i]
        );
        assert!(
            shipped[i] < baseline_best[i],
            "v3 at NFE {nfe}: {} vs same-grid baselines {}",
            shipped[i],
            baseline_best[i]
        );
        assert!(
            dc_row[i] < OFFICIAL_BEST[i],
            "DC at NFE {nfe}: {} vs official {}",
            dc_row[i],
            OFFICIAL_BEST[i]
        );
    }
}
