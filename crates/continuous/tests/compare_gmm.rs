//! The research solvers against the baselines on gmm2d / scaled_linear, t = 1 -> 1e-3
//! (s = 14.61 -> 0.0292), RMSE against the adaptive reference ODE between the same end
//! points, over 8 seeded draws of 512 initial noises (one draw is not enough: on the
//! fixture's x_T DPM-Solver-v3 beats UniPC at NFE 10, on another draw it loses by 0.7%).
//! Each solver's RMSE is reported as the mean over the draws with its standard error;
//! a claim "A beats B" is asserted on the paired per-draw differences (same noise for
//! both), only where their mean exceeds 3 standard errors and 3% of B's mean.

mod common;

use diffusion_continuous::multistep::sample;
use diffusion_continuous::{
    DcSolver, DpmSolverV3, DpmV3Options, EmsOptions, Evaluator, GridKind, Method, ModelStatistics, ModelTime,
    MultistepOptions, SearchOptions, TimeGrid, UniPcVariant,
};
use diffusion_schedules::InterpolatedVp;
use ndarray::{ArrayD, Axis};

const GRIDS: [GridKind; 2] = [GridKind::TimeUniform, GridKind::LogSnrUniform];
const NFES: [usize; 3] = [5, 10, 20];
/// Evaluation noise: `DRAWS` draws of `ROWS` rows, one seeded normal array split in blocks
/// (seed 3000, apart from the statistics' seeds 0 and 1 and the DC search's 2024).
const DRAWS: usize = 8;
const ROWS: usize = 512;
const NOISE_SEED: u64 = 3000;

fn grid(sched: &InterpolatedVp, kind: GridKind, nfe: usize) -> TimeGrid {
    TimeGrid::new(kind, sched, common::T_START, common::T_END, nfe).unwrap()
}

/// DC-Solver ratios searched on 10 separate noises (seed 2024) against the exact ODE.
pub fn dc_ratios(dc: &DcSolver, sched: &InterpolatedVp, kind: GridKind, nfe: usize) -> Vec<f64> {
    let gmm = common::mixture();
    let eval = Evaluator::new(&gmm, sched, ModelTime::discrete(1000));
    let noise = common::normals(10, 2, 2024);
    let g = grid(sched, kind, nfe);
    let targets = common::ode_reference(sched, &noise, &g.times()[1..]);
    dc.search(&eval, &noise, &g, &targets, &SearchOptions::default())
        .unwrap()
}

/// The RMSE of each draw (block of `ROWS` rows).
fn per_draw_rmse(out: &ArrayD<f64>, reference: &ArrayD<f64>) -> Vec<f64> {
    out.axis_chunks_iter(Axis(0), ROWS)
        .zip(reference.axis_chunks_iter(Axis(0), ROWS))
        .map(|(a, b)| common::rmse(&a.to_owned(), &b.to_owned()))
        .collect()
}

/// Mean and standard error of the mean.
fn mean_se(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0);
    (m, (var / n).sqrt())
}

/// One row of the table: per-draw RMSE at each NFE.
struct Row {
    name: String,
    kind: GridKind,
    rmse: Vec<Vec<f64>>,
}

#[test]
fn research_solvers_beat_baselines() {
    let sched = common::schedule("scaled_linear");
    let gmm = common::mixture();
    let x = common::normals(DRAWS * ROWS, 2, NOISE_SEED);
    let eval = Evaluator::new(&gmm, &sched, ModelTime::discrete(1000));
    let mut references: Vec<(f64, ArrayD<f64>)> = Vec::new();
    let mut reference_at = |t_end: f64| -> ArrayD<f64> {
        if let Some((_, r)) = references.iter().find(|(t, _)| *t == t_end) {
            return r.clone();
        }
        let r = common::ode_reference(&sched, &x, &[t_end]).remove(0);
        references.push((t_end, r.clone()));
        r
    };
    let reference = reference_at(common::T_END);

    let n = 2048;
    let x0 = gmm.sample(n, &mut diffusion_core::Rng::new(0)).into_dyn();
    let z = common::normals(n, 2, 1);
    let ems = EmsOptions {
        steps: 250,
        ..Default::default()
    };
    let stats = ModelStatistics::compute(&eval, &x0, &z, common::T_START, common::T_END, &ems).unwrap();
    let v3 = DpmSolverV3::new(stats).unwrap();
    let dc = DcSolver::default();
    let unipc = Method::UniPc {
        variant: UniPcVariant::Bh2,
        order: 2,
        corrector: true,
    };

    let mut rows: Vec<Row> = Vec::new();
    for kind in GRIDS {
        let mut row = |name: &str, rmse: Vec<Vec<f64>>| {
            rows.push(Row {
                name: name.to_string(),
                kind,
                rmse,
            })
        };
        for (name, m) in [
            ("DPM-Solver++ 2M", Method::DpmSolverPp { order: 2 }),
            ("UniPC bh2 o2", unipc),
        ] {
            let v = NFES
                .iter()
                .map(|&nfe| {
                    let out = sample(
                        &eval,
                        &x,
                        &grid(&sched, kind, nfe),
                        m,
                        &MultistepOptions::default(),
                    );
                    per_draw_rmse(&out.unwrap(), &reference)
                })
                .collect();
            row(name, v);
        }
        let v = NFES
            .iter()
            .map(|&nfe| {
                let g = grid(&sched, kind, nfe);
                // v3 snaps the grid to its statistics; score it between the same end points.
                let (_, snapped) = v3.snap(&sched, &g).unwrap();
                let r = reference_at(*snapped.last().unwrap());
                per_draw_rmse(&v3.sample(&eval, &x, &g, &DpmV3Options::default()).unwrap(), &r)
            })
            .collect();
        row("DPM-Solver-v3", v);
        let v = NFES
            .iter()
            .map(|&nfe| {
                let ratios = dc_ratios(&dc, &sched, kind, nfe);
                let out = dc.sample(&eval, &x, &grid(&sched, kind, nfe), &ratios).unwrap();
                per_draw_rmse(&out, &reference)
            })
            .collect();
        row("DC-Solver bh2 o2", v);
    }

    println!("RMSE, mean +- standard error over {DRAWS} draws of {ROWS} noises (seed {NOISE_SEED})");
    println!("| solver | NFE 5 | NFE 10 | NFE 20 |\n|---|---|---|---|");
    for r in &rows {
        let cells: Vec<String> = r
            .rmse
            .iter()
            .map(|v| {
                let (m, se) = mean_se(v);
                format!("{m:.4} +- {se:.4}")
            })
            .collect();
        println!("| {} {:?} | {} |", r.name, r.kind, cells.join(" | "));
    }

    // Each solver on its better grid (by mean RMSE) at NFE index i.
    let best = |prefix: &str, i: usize| -> &Row {
        rows.iter()
            .filter(|r| r.name.starts_with(prefix))
            .min_by(|a, b| mean_se(&a.rmse[i]).0.total_cmp(&mean_se(&b.rmse[i]).0))
            .unwrap()
    };
    // (solver, baseline, NFE index, asserted). Asserted: what holds with margin on these
    // draws (seed 3000: v3 - baseline at NFE 5 is -19% at 20+ standard errors; at NFE 10
    // v3 beats DPM-Solver++ by 43%, DC-Solver both by 33% or more, 4+ standard errors).
    // Printed only: v3 against UniPC at NFE 10 (about 8% better on average but 1.2
    // standard errors, 5 draws of 8) and DC-Solver at NFE 5 (3%, 0.5 standard errors), and
    // NFE 20, where the research solvers lead by 40-65% but at 2-4 standard errors.
    let mut failures = Vec::new();
    for (solver, baseline, i, asserted) in [
        ("DPM-Solver-v3", "DPM-Solver++", 0, true),
        ("DPM-Solver-v3", "UniPC", 0, true),
        ("DC-Solver", "DPM-Solver++", 0, false),
        ("DC-Solver", "UniPC", 0, false),
        ("DPM-Solver-v3", "DPM-Solver++", 1, true),
        ("DPM-Solver-v3", "UniPC", 1, false),
        ("DC-Solver", "DPM-Solver++", 1, true),
        ("DC-Solver", "UniPC", 1, true),
        ("DPM-Solver-v3", "DPM-Solver++", 2, false),
        ("DPM-Solver-v3", "UniPC", 2, false),
        ("DC-Solver", "DPM-Solver++", 2, false),
        ("DC-Solver", "UniPC", 2, false),
    ] {
        let (s, b) = (best(solver, i), best(baseline, i));
        let diff: Vec<f64> = b.rmse[i].iter().zip(&s.rmse[i]).map(|(b, s)| b - s).collect();
        let (d, se) = mean_se(&diff);
        let base = mean_se(&b.rmse[i]).0;
        let wins = diff.iter().filter(|&&d| d > 0.0).count();
        let line = format!(
            "NFE {}: {solver} {:?} beats {baseline} {:?} by {d:.5} +- {se:.5} ({:.1}% of {base:.4}, {:.1} se; {wins}/{DRAWS} draws)",
            NFES[i],
            s.kind,
            b.kind,
            100.0 * d / base,
            d / se,
        );
        println!("{}{line}", if asserted { "asserted: " } else { "reported: " });
        if asserted && d <= (3.0 * se).max(0.03 * base) {
            failures.push(line);
        }
    }
    assert!(
        failures.is_empty(),
        "claims that do not hold by 3 se and 3%:\n{}",
        failures.join("\n")
    );
}
