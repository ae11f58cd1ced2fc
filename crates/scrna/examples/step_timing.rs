//! Seconds per training step of the white-box and the standard DiT at the same width,
//! depth, heads, gene layout and batch as the PBMC study, alternating the two models for
//! several rounds in one process and keeping each one's best round (a shared machine's
//! speed drifts; alternating compares them at the same moments).
//!
//! `cargo run --release -p diffusion-scrna --example step_timing -- [rounds] [steps per round]`

use diffusion_scrna::io::pbmc::{data_dir, read_pbmc};
use diffusion_scrna::model::{Arch, GeneLayout, ModelConfig, TrainOptions, standard, train, white_box};
use diffusion_scrna::prep::Pipeline;
use diffusion_train::parameter_count;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let rounds: usize = args.get(1).map_or(Ok(5), |s| s.parse())?;
    let steps: u64 = args.get(2).map_or(Ok(10), |s| s.parse())?;
    let p = read_pbmc(data_dir())?;
    let pipe = Pipeline::fit(&p.counts.x, &p.n_counts, 1e4, None, true)?;
    let x = pipe.forward(&p.counts.x, &p.n_counts)?;
    let labels = p.counts.labels.clone().expect("labels").codes;
    let layout = GeneLayout::new(x.ncols(), 16)?;
    let opts = TrainOptions {
        steps,
        warmup: 1,
        ema_decay: None,
        ..TrainOptions::default()
    };
    let (wcfg, scfg) = (
        ModelConfig::new(Arch::WhiteBox, 128, 4, 4, 10),
        ModelConfig::new(Arch::Standard, 128, 4, 4, 10),
    );
    let (mut wb, mut sd) = (white_box(layout, &wcfg, 1)?, standard(layout, &scfg, 1)?);
    println!(
        "params: white-box {}, standard {}",
        parameter_count(&wb),
        parameter_count(&sd)
    );
    let (mut best_w, mut best_s) = (f64::INFINITY, f64::INFINITY);
    for r in 0..rounds {
        let (w, rw) = train(wb, layout, &x, Some((&labels, 10)), &opts, |_| {})?;
        let (s, rs) = train(sd, layout, &x, Some((&labels, 10)), &opts, |_| {})?;
        (wb, sd) = (w, s);
        println!(
            "round {r}: white-box {:.4} s/step, standard {:.4} s/step",
            rw.seconds_per_step, rs.seconds_per_step
        );
        best_w = best_w.min(rw.seconds_per_step);
        best_s = best_s.min(rs.seconds_per_step);
    }
    println!(
        "best: white-box {best_w:.4} s/step, standard {best_s:.4} s/step, ratio {:.2}",
        best_s / best_w
    );
    Ok(())
}
