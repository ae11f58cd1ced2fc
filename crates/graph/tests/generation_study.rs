//! Slow studies (minutes): generation on community-small, SBM and planar with an MMD
//! table against the test split (GDSS kernels), beside an Erdos-Renyi baseline of matched
//! density and the train-vs-test floor; then DiffGraph against GCN baselines over seeds.
//!
//! `cargo test -p diffusion-graph --test generation_study -- --ignored --nocapture`
//! (`GRAPH_STUDY=community_small,planar` picks data sets). Sampled graphs are written as
//! GraphML under the system temporary directory.

mod common;

use diffusion_graph::digress::{self, DigressConfig};
use diffusion_graph::metrics::mmd::{MmdSettings, Statistic, evaluate};
use diffusion_graph::metrics::vun::{is_valid_planar, vun};
use diffusion_graph::{Graph, io};

fn mean_sd(v: &[f64]) -> String {
    let m = v.iter().sum::<f64>() / v.len() as f64;
    let sd = (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len().max(2) - 1) as f64).sqrt();
    format!("{m:.4} ± {sd:.4}")
}

fn row(name: &str, runs: &[Vec<f64>]) {
    let cols: Vec<String> = (0..runs[0].len())
        .map(|k| mean_sd(&runs.iter().map(|r| r[k]).collect::<Vec<_>>()))
        .collect();
    println!("| {name} | {} |", cols.join(" | "));
}

fn scores(test: &[Graph], sampled: &[Graph], train: &[Graph], planar: bool) -> Vec<f64> {
    let mut v: Vec<f64> = evaluate(test, sampled, &Statistic::ALL, &MmdSettings::gdss())
        .unwrap()
        .into_iter()
        .map(|(_, x)| x)
        .collect();
    let r = if planar {
        vun(sampled, train, is_valid_planar)
    } else {
        vun(sampled, train, |_| true)
    };
    v.push(r.unique_novel);
    v.push(r.vun);
    v
}

#[test]
#[ignore]
fn generation_mmd_table() {
    let wanted = std::env::var("GRAPH_STUDY").unwrap_or_else(|_| "community_small,planar,sbm".into());
    let out = std::env::temp_dir().join("diffusion-graph-study");
    std::fs::create_dir_all(&out).unwrap();
    for name in wanted.split(',') {
        let all = io::read_dataset(common::data("synthetic_benchmarks.json"), name).unwrap();
        let k = all.len() / 5;
        let (test, train) = (&all[..k], &all[k..]);
        let cfg = match name {
            "community_small" => DigressConfig {
                train_steps: 8000,
                ..DigressConfig::default()
            },
            "planar" => DigressConfig {
                train_steps: 3000,
                batch: 2,
                ..DigressConfig::default()
            },
            _ => DigressConfig {
                train_steps: 1000,
                batch: 1,
                ..DigressConfig::default()
            },
        };
        let start = std::time::Instant::now();
        let model = digress::train(train, &cfg, 0, |s, l| {
            if s % 500 == 0 {
                eprintln!("{name} step {s} loss {l:.4}");
            }
        })
        .unwrap();
        let train_secs = start.elapsed().as_secs_f64();
        let seeds = 3;
        let planar = name == "planar";
        let mut model_runs = Vec::new();
        let mut er_runs = Vec::new();
        for seed in 0..seeds {
            let sampled = model.sample(test.len(), seed).unwrap();
            io::write_graphml(out.join(format!("{name}_seed{seed}.graphml")), &sampled).unwrap();
            model_runs.push(scores(test, &sampled, train, planar));
            er_runs.push(scores(
                test,
                &digress::erdos_renyi_like(train, test.len(), seed).unwrap(),
                train,
                planar,
            ));
        }
        let floor = scores(test, train, train, planar);
        println!(
            "\n{name}: {} train / {} test graphs, {cfg:?}, trained in {train_secs:.0} s, total {:.0} s",
            train.len(),
            test.len(),
            start.elapsed().as_secs_f64()
        );
        println!(
            "| model | degree | clustering | orbit | spectral | unique+novel | V.U.N. |\n|---|---|---|---|---|---|---|"
        );
        row(
            "train vs test (floor; U+N, V.U.N. of the training set itself)",
            &[floor],
        );
        row("Erdos-Renyi, matched density", &er_runs);
        row("edge diffusion (this crate)", &model_runs);
    }
}
