//! Exploratory accuracy study (ignored): which configuration of the research solvers is
//! most accurate at NFE 5 / 10 / 20 on gmm2d / scaled_linear, t = 1 -> 1e-3. Ratios and
//! statistics always come from samples separate from the evaluation noise (the fixture x_T, fixtures/gmm/gmm2d_xT.npy).
//!
//! `cargo test -p diffusion-continuous --test accuracy_study -- --ignored --nocapture`

mod common;

use diffusion_continuous::{
    DcSolver, DpmSolverV3, DpmV3Options, EmsOptions, Evaluator, GridKind, ModelStatistics, ModelTime,
    SearchOptions, TimeGrid, UniPcVariant,
};
use diffusion_schedules::InterpolatedVp;
use ndarray::ArrayD;

#[derive(Clone, Copy, Debug)]
enum G {
    Kind(GridKind),
    /// `t = (linspace(t_start^(1/p), t_end^(1/p)))^p`; p = 2 is DPM-Solver's time_quadratic.
    Power(f64),
}

fn grid(sched: &InterpolatedVp, g: G, nfe: usize) -> TimeGrid {
    match g {
        G::Kind(kind) => TimeGrid::new(kind, sched, common::T_START, common::T_END, nfe).unwrap(),
        G::Power(power) => TimeGrid::new(
            GridKind::TimePower { power },
            sched,
            common::T_START,
            common::T_END,
            nfe,
        )
        .unwrap(),
    }
}

const GRIDS: [G; 8] = [
    G::Kind(GridKind::TimeUniform),
    G::Kind(GridKind::LogSnrUniform),
    G::Kind(GridKind::Karras { rho: 7.0 }),
    G::Power(1.25),
    G::Power(1.5),
    G::Power(1.75),
    G::Power(2.0),
    G::Power(3.0),
];

#[test]
#[ignore]
fn dc_study() {
    let sched = common::schedule("scaled_linear");
    let gmm = common::mixture();
    let x = common::x_t();
    let eval = Evaluator::new(&gmm, &sched, ModelTime::discrete(1000));
    let reference: ArrayD<f64> = common::ode_reference(&sched, &x, &[common::T_END]).remove(0);
    for order in [2, 3] {
        for variant in [UniPcVariant::Bh2, UniPcVariant::Bh1] {
            let dc = DcSolver {
                order,
                variant,
                ..Default::default()
            };
            for g in GRIDS {
                for (count, seed) in [(10, 2024), (512, 11), (512, 12)] {
                    let noise = common::normals(count, 2, seed);
                    let v: Vec<f64> = [5, 10, 20]
                        .iter()
                        .map(|&nfe| {
                            let gr = grid(&sched, g, nfe);
                            let targets = common::ode_reference(&sched, &noise, &gr.times()[1..]);
                            let ratios = dc
                                .search(&eval, &noise, &gr, &targets, &SearchOptions::default())
                                .unwrap();
                            common::rmse(&dc.sample(&eval, &x, &gr, &ratios).unwrap(), &reference)
                        })
                        .collect();
                    println!(
                        "DC {variant:?} o{order} {g:?} search {count}x(seed {seed}): {:.4} {:.4} {:.2e}",
                        v[0], v[1], v[2]
                    );
                }
            }
        }
    }
}

#[test]
#[ignore]
fn v3_study() {
    let sched = common::schedule("scaled_linear");
    let gmm = common::mixture();
    let x = common::x_t();
    let eval = Evaluator::new(&gmm, &sched, ModelTime::discrete(1000));
    for (steps, n) in [(250, 2048), (1200, 16384)] {
        let x0 = gmm.sample(n, &mut diffusion_core::Rng::new(0)).into_dyn();
        let z = common::normals(n, 2, 1);
        let ems = EmsOptions {
            steps,
            ..Default::default()
        };
        let stats = ModelStatistics::compute(&eval, &x0, &z, common::T_START, common::T_END, &ems).unwrap();
        let v3 = DpmSolverV3::new(stats).unwrap();
        for g in GRIDS {
            for (name, opts) in [
                ("default", DpmV3Options::default()),
                (
                    "o2",
                    DpmV3Options {
                        order: 2,
                        ..Default::default()
                    },
                ),
                (
                    "o2 corr-full",
                    DpmV3Options {
                        order: 2,
                        corrector_pseudo: false,
                        ..Default::default()
                    },
                ),
                (
                    "corr-full",
                    DpmV3Options {
                        corrector_pseudo: false,
                        ..Default::default()
                    },
                ),
            ] {
                let v: Vec<f64> = [5, 10, 20]
                    .iter()
                    .map(|&nfe| {
                        let gr = grid(&sched, g, nfe);
                        let Ok((_, snapped)) = v3.snap(&sched, &gr) else {
                            return f64::NAN;
                        };
                        let r = common::ode_reference(&sched, &x, &[*snapped.last().unwrap()]).remove(0);
                        common::rmse(&v3.sample(&eval, &x, &gr, &opts).unwrap(), &r)
                    })
                    .collect();
                println!(
                    "v3 {steps}x{n} {name} {g:?}: {:.4} {:.4} {:.2e}",
                    v[0], v[1], v[2]
                );
            }
        }
    }
}

#[test]
#[ignore]
fn baseline_grids() {
    use diffusion_continuous::{Method, MultistepOptions, multistep::sample};
    let sched = common::schedule("scaled_linear");
    let gmm = common::mixture();
    let x = common::x_t();
    let eval = Evaluator::new(&gmm, &sched, ModelTime::discrete(1000));
    let reference: ArrayD<f64> = common::ode_reference(&sched, &x, &[common::T_END]).remove(0);
    for (name, m) in [
        ("DPM++ 2M", Method::DpmSolverPp { order: 2 }),
        ("DPM++ 3M", Method::DpmSolverPp { order: 3 }),
        (
            "UniPC bh2 o2",
            Method::UniPc {
                variant: UniPcVariant::Bh2,
                order: 2,
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
        (
            "UniPC bh2 o3",
            Method::UniPc {
                variant: UniPcVariant::Bh2,
                order: 3,
                corrector: true,
            },
        ),
    ] {
        for g in GRIDS {
            let v: Vec<f64> = [5, 10, 20]
                .iter()
                .map(|&nfe| {
                    let out =
                        sample(&eval, &x, &grid(&sched, g, nfe), m, &MultistepOptions::default()).unwrap();
                    common::rmse(&out, &reference)
                })
                .collect();
            println!("{name} {g:?}: {:.4} {:.4} {:.2e}", v[0], v[1], v[2]);
        }
    }
}

/// The grid power chosen on held-out noise (seed 5), not on the evaluation x_T.
#[test]
#[ignore]
fn power_on_held_out_noise() {
    let sched = common::schedule("scaled_linear");
    let gmm = common::mixture();
    let x = common::normals(512, 2, 5);
    let eval = Evaluator::new(&gmm, &sched, ModelTime::discrete(1000));
    let x0 = gmm.sample(2048, &mut diffusion_core::Rng::new(0)).into_dyn();
    let z = common::normals(2048, 2, 1);
    let ems = EmsOptions {
        steps: 250,
        ..Default::default()
    };
    let stats = ModelStatistics::compute(&eval, &x0, &z, common::T_START, common::T_END, &ems).unwrap();
    let v3 = DpmSolverV3::new(stats).unwrap();
    let opts = DpmV3Options {
        corrector_pseudo: false,
        ..Default::default()
    };
    for power in [1.0, 1.25, 1.5, 1.75, 2.0, 2.5] {
        let v: Vec<f64> = [5, 10, 20]
            .iter()
            .map(|&nfe| {
                let gr = grid(&sched, G::Power(power), nfe);
                let (_, snapped) = v3.snap(&sched, &gr).unwrap();
                let r = common::ode_reference(&sched, &x, &[*snapped.last().unwrap()]).remove(0);
                common::rmse(&v3.sample(&eval, &x, &gr, &opts).unwrap(), &r)
            })
            .collect();
        println!(
            "held-out v3 corr-full power {power}: {:.4} {:.4} {:.2e}",
            v[0], v[1], v[2]
        );
    }
}
