//! The PBMC study: white-box DiT vs standard DiT at the same width, depth and training
//! budget on the shipped 700 PBMC cells, 20% held out (stratified by cell type). Prints the
//! metrics table against the held-out cells, with the real-vs-real floor (as many training
//! cells as held-out ones), parameters and seconds per training step, and writes it as JSON.
//!
//! `cargo run --release -p diffusion-scrna --example pbmc_study -- [steps] [out.json] [guidance] [z|ln]`

use diffusion_core::Rng;
use diffusion_nn::Network;
use diffusion_scrna::io::pbmc::{data_dir, read_pbmc};
use diffusion_scrna::linalg::Pca;
use diffusion_scrna::metrics::{Cells, EvalOptions, Report, accuracy, evaluate, knn_classify};
use diffusion_scrna::model::{
    Arch, GeneLayout, ModelConfig, SampleOptions, TrainOptions, sample, standard, train, white_box,
};
use diffusion_scrna::prep::Pipeline;
use diffusion_scrna::split::stratified_split;
use diffusion_train::parameter_count;
use ndarray::{Array2, Axis};
use serde::Serialize;

#[derive(Serialize)]
struct Row {
    name: String,
    params: usize,
    seconds_per_step: f64,
    tail_loss: f64,
    type_accuracy: f64,
    report: Report,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let steps: u64 = args.get(1).map_or(Ok(3000), |s| s.parse())?;
    let out = args
        .get(2)
        .cloned()
        .unwrap_or_else(|| "out/scrna_study.json".into());
    let guidance: f64 = args.get(3).map_or(Ok(1.0), |s| s.parse())?;
    // Model space: z-scored log-normalised expression ("z") or log-normalised as it is ("ln").
    let zscore = args.get(4).is_none_or(|s| s == "z");

    let pbmc = read_pbmc(data_dir())?;
    let labels = pbmc.counts.labels.clone().expect("PBMC has labels");
    let (train_idx, held_idx) = stratified_split(&labels.codes, 0.2, 0);
    let sizes = |idx: &[usize]| -> Vec<f64> { idx.iter().map(|&i| pbmc.n_counts[i]).collect() };
    let (train_c, held_c) = (
        pbmc.counts.select_cells(&train_idx),
        pbmc.counts.select_cells(&held_idx),
    );
    let (train_l, held_l) = (
        train_c.labels.clone().expect("labels").codes,
        held_c.labels.clone().expect("labels").codes,
    );
    let pipe = Pipeline::fit(&train_c.x, &sizes(&train_idx), 1e4, None, zscore)?;
    let x_train = pipe.forward(&train_c.x, &sizes(&train_idx))?;
    let train_ln = pipe.lognorm(&train_c.x, &sizes(&train_idx))?;
    let held_ln = pipe.lognorm(&held_c.x, &sizes(&held_idx))?;
    let real = Cells {
        ln: &held_ln,
        counts: &held_c.x,
    };
    let opts = EvalOptions::default();
    // Cell-type classifier on the training cells' 50 PCs.
    let pca = Pca::fit(&train_ln, 50, 1)?;
    let train_pcs = pca.transform(&train_ln)?;
    let classify = |ln: &Array2<f64>| -> Result<Vec<usize>, Box<dyn std::error::Error>> {
        Ok(knn_classify(&train_pcs, &train_l, &pca.transform(ln)?, 5)?)
    };

    let mut rows = Vec::new();
    // Floor: as many training cells as held-out cells, drawn at random.
    let mut rng = Rng::new(5);
    let mut pick: Vec<usize> = (0..train_idx.len()).collect();
    for i in (1..pick.len()).rev() {
        let j = ((rng.uniform() * (i + 1) as f64) as usize).min(i);
        pick.swap(i, j);
    }
    pick.truncate(held_idx.len());
    let floor_ln = train_ln.select(Axis(0), &pick);
    let floor_counts = train_c.x.select(Axis(0), &pick);
    let floor_labels: Vec<usize> = pick.iter().map(|&i| train_l[i]).collect();
    rows.push(Row {
        name: "real (train subset) vs held-out".into(),
        params: 0,
        seconds_per_step: 0.0,
        tail_loss: 0.0,
        type_accuracy: accuracy(&classify(&held_ln)?, &held_l),
        report: evaluate(
            real,
            Cells {
                ln: &floor_ln,
                counts: &floor_counts,
            },
            &train_ln,
            opts,
        )?,
    });
    let _ = floor_labels;

    let layout = GeneLayout::new(pipe.genes.len(), 16)?;
    let num_types = labels.num_types();
    let topt = TrainOptions {
        steps,
        batch: 64,
        lr: 1e-3,
        warmup: (steps / 20).max(1),
        seed: 3,
        p_uncond: 0.1,
        ema_decay: Some(0.999),
    };
    let sopt = SampleOptions {
        steps: 50,
        guidance,
        seed: 11,
    };
    // Library sizes for generated cells: drawn from the training cells'.
    let mut lrng = Rng::new(9);
    let gen_sizes: Vec<f64> = (0..held_idx.len())
        .map(|_| {
            sizes(&train_idx)[((lrng.uniform() * train_idx.len() as f64) as usize).min(train_idx.len() - 1)]
        })
        .collect();
    for arch in [Arch::WhiteBox, Arch::Standard] {
        let cfg = ModelConfig::new(arch, 128, 4, 4, num_types);
        let null = cfg.null_label().map(|n| (&train_l[..], n));
        let log = |s: &diffusion_train::StepStats| {
            if s.step.is_multiple_of(500) {
                eprintln!("{arch:?} step {} loss {:.4}", s.step, s.loss);
            }
        };
        let (y, params, rep) = match arch {
            Arch::WhiteBox => {
                let net = white_box(layout, &cfg, 1)?;
                let params = parameter_count(&net);
                let (net, rep) = train(net, layout, &x_train, null, &topt, log)?;
                (
                    sample_with(&net, layout, &held_l, cfg.null_label(), &sopt)?,
                    params,
                    rep,
                )
            }
            Arch::Standard => {
                let net = standard(layout, &cfg, 1)?;
                let params = parameter_count(&net);
                let (net, rep) = train(net, layout, &x_train, null, &topt, log)?;
                (
                    sample_with(&net, layout, &held_l, cfg.null_label(), &sopt)?,
                    params,
                    rep,
                )
            }
        };
        let counts = pipe.inverse_counts(&y, &gen_sizes, true)?;
        let mut ln = counts.clone();
        diffusion_scrna::prep::normalize_total(&mut ln, 1e4, &gen_sizes)?;
        diffusion_scrna::prep::log1p(&mut ln);
        let report = evaluate(
            real,
            Cells {
                ln: &ln,
                counts: &counts,
            },
            &train_ln,
            opts,
        )?;
        rows.push(Row {
            name: format!("{arch:?} DiT"),
            params,
            seconds_per_step: rep.seconds_per_step,
            tail_loss: rep.tail_loss,
            type_accuracy: accuracy(&classify(&ln)?, &held_l),
            report,
        });
    }
    println!(
        "model space: {}",
        if zscore {
            "z-scored log-normalised"
        } else {
            "log-normalised"
        }
    );
    print_table(&rows, steps, guidance);
    if let Some(dir) = std::path::Path::new(&out).parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&out, serde_json::to_string_pretty(&rows)?)?;
    Ok(())
}

fn sample_with<N: Network<f32>>(
    net: &N,
    layout: GeneLayout,
    labels: &[usize],
    null: Option<usize>,
    sopt: &SampleOptions,
) -> Result<Array2<f64>, Box<dyn std::error::Error>> {
    Ok(sample(net, layout, labels.len(), Some(labels), null, sopt)?)
}

fn print_table(rows: &[Row], steps: u64, guidance: f64) {
    println!("steps {steps}, guidance {guidance}");
    let head = ["metric"].into_iter().chain(rows.iter().map(|r| r.name.as_str()));
    println!("| {} |", head.collect::<Vec<_>>().join(" | "));
    println!("|{}", "---|".repeat(rows.len() + 1));
    let line = |name: &str, f: &dyn Fn(&Row) -> f64| {
        let vals: Vec<String> = rows.iter().map(|r| format!("{:.4}", f(r))).collect();
        println!("| {name} | {} |", vals.join(" | "));
    };
    line("gene-mean Pearson", &|r| r.report.gene_mean_pearson);
    line("gene-mean Spearman", &|r| r.report.gene_mean_spearman);
    line("gene-var Pearson", &|r| r.report.gene_var_pearson);
    line("gene-var Spearman", &|r| r.report.gene_var_spearman);
    line("mean gene W1", &|r| r.report.mean_gene_w1);
    line("MMD (50 PCs)", &|r| r.report.mmd);
    line("zero fraction (real 1st col)", &|r| {
        r.report.zero_fraction_generated
    });
    line("zero-fraction KS", &|r| r.report.zero_fraction_ks);
    line("library-size KS", &|r| r.report.library_size_ks);
    line("library-size W1 / mean", &|r| r.report.library_size_w1_rel);
    line("5-NN AUC", &|r| r.report.knn_auc);
    line("iLISI", &|r| r.report.ilisi);
    line("median NN dist to train", &|r| r.report.nn_dist_generated);
    line("  held-out real's", &|r| r.report.nn_dist_real);
    line("frac below real p5", &|r| r.report.frac_below_real_p5);
    line("cell-type accuracy", &|r| r.type_accuracy);
    line("params", &|r| r.params as f64);
    line("s / step", &|r| r.seconds_per_step);
    line("final loss (last 10%)", &|r| r.tail_loss);
}
