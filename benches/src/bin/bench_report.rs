//! `cargo xtask bench`: measures what the project claims about speed and writes
//! `docs/benchmarks.md`. Every ratio is against a baseline measured in the same run
//! (copy bandwidth; PyTorch's network times with `--torch-python`, which `cargo xtask bench
//! --torch` supplies) or recorded on this machine class (diffusers' step times in fixtures/gmm, PyTorch's
//! network times in shared/reference), and the table says which.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use diffusion_benches::peak::fma_peak_gflops;
use diffusion_benches::randn;
use diffusion_core::Rng;
use diffusion_nn::Network;
use diffusion_nn::models::{Dit, DitConfig, MlpConfig, MlpDenoiser, UNet, UNetConfig};
use diffusion_train::{AdamW, AdamWConfig};
use ndarray::ArrayD;
use serde_json::{Value, json};

diffusion_nn::use_mimalloc!();

/// Median seconds of `reps` calls after one warm-up call.
fn median_secs(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut t: Vec<f64> = (0..reps)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// A JSON file the repository carries in `fixtures/`.
fn fixture_json(rel: &str) -> Option<Value> {
    let text = std::fs::read_to_string(root().join("fixtures").join(rel)).ok()?;
    serde_json::from_str(&text).ok()
}

fn shared_json(rel: &str) -> Option<Value> {
    let path = root().join("../shared").join(rel);
    let text = std::fs::read_to_string(path).ok()?;
    serde_json::from_str(&text).ok()
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

/// Read + write bytes per second of a large copy.
fn copy_bandwidth() -> f64 {
    let n = 32 << 20; // 128 MiB of f32
    let src = vec![1.0f32; n];
    let mut dst = vec![0.0f32; n];
    let s = median_secs(5, || dst.copy_from_slice(&src));
    std::hint::black_box(&dst);
    2.0 * 4.0 * n as f64 / s
}

/// Read + write bytes per second copying one `elems`-element f32 tensor (in cache when small):
/// the bound a solver step on the same tensor can approach.
fn copy_bandwidth_of(elems: usize) -> f64 {
    let src = vec![1.0f32; elems];
    let mut dst = vec![0.0f32; elems];
    let reps = 200;
    let s = median_secs(11, || {
        for _ in 0..reps {
            dst.copy_from_slice(std::hint::black_box(&src));
            std::hint::black_box(&mut dst);
        }
    });
    2.0 * 4.0 * elems as f64 * reps as f64 / s
}

fn solver_steps(out: &mut String) {
    let timing = fixture_json("gmm/diffusers_step_timing.json");
    let diffusers_us = |config: &str| -> Option<f64> {
        timing.as_ref()?["timings"]
            .as_array()?
            .iter()
            .find(|t| t["config"] == config)?["median_us"]
            .as_f64()
    };
    writeln!(out, "## Solver step overhead\n").unwrap();
    writeln!(
        out,
        "`step_in_place` on a [4, 64, 64] float32 sample, 50 trailing steps, median over 20 trajectories, model \
         excluded (a fixed model output). diffusers: `scheduler.step()` on the same shape on this machine class \
         (fixtures/gmm/diffusers_step_timing.json, 1 torch thread; not this run). Bound: the bytes a step \
         must move (reads of sample + model output + history, one write) over the bandwidth of copying a tensor \
         of the same size, measured in this run (the 64 KiB tensors stay in cache, so this is the cache \
         bound, not DRAM's).\n"
    )
    .unwrap();
    writeln!(
        out,
        "| solver | ours (us) | diffusers (us) | speedup | bytes / step | x of the copy bound |"
    )
    .unwrap();
    writeln!(out, "|---|---|---|---|---|---|").unwrap();
    let shape = [4usize, 64, 64];
    let elems: usize = shape.iter().product();
    let bandwidth = copy_bandwidth_of(elems);
    let base = json!({"timestep_spacing": "trailing", "beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012});
    // (label, our name, extra config, diffusers timing key, tensors touched per step)
    let cases: [(&str, &str, Value, &str, usize); 7] = [
        ("DDIM", "ddim", json!({"clip_sample": false}), "ddim", 3),
        ("Euler", "euler", json!({}), "euler", 3),
        ("DPM++ 2M", "dpm_solver_multistep", json!({}), "dpmpp_2m", 5),
        (
            "DPM++ 3M",
            "dpm_solver_multistep",
            json!({"solver_order": 3}),
            "dpmpp_3m",
            6,
        ),
        ("UniPC bh2", "unipc", json!({}), "unipc_bh2", 6),
        ("Heun", "heun", json!({}), "heun", 3),
        ("LMS", "lms", json!({}), "lms", 7),
    ];
    for (label, name, extra, key, tensors) in cases {
        let mut config = base.clone();
        for (k, v) in extra.as_object().expect("object") {
            config[k] = v.clone();
        }
        let eps = randn(&shape, 1);
        let x0 = randn(&shape, 2);
        let mut sched = match diffusion_solvers::by_name::<ArrayD<f32>>(name, &config) {
            Ok(s) => s,
            Err(e) => {
                writeln!(out, "| {label} | error: {e} | | | | |").unwrap();
                continue;
            }
        };
        let mut rng = Rng::new(0);
        let mut steps = 0usize;
        let secs = median_secs(20, || {
            sched.set_timesteps(50).expect("valid steps");
            let ts: Vec<f64> = sched.timesteps().to_vec();
            let mut x = x0.clone();
            for t in &ts {
                sched
                    .step_in_place(&eps, *t, &mut x, Some(&mut rng))
                    .expect("step");
            }
            steps = ts.len();
        });
        let us = secs / steps as f64 * 1e6;
        let bytes = tensors * elems * 4;
        let bound_us = bytes as f64 / bandwidth * 1e6;
        let theirs = diffusers_us(key);
        writeln!(
            out,
            "| {label} | {us:.1} | {} | {} | {bytes} | {:.2} |",
            theirs.map_or("-".into(), |d| format!("{d:.0}")),
            theirs.map_or("-".into(), |d| format!("{:.0}x", d / us)),
            us / bound_us
        )
        .unwrap();
    }
    writeln!(out).unwrap();
}

/// Where the network table's PyTorch numbers come from.
enum Torch {
    /// `--torch-python PATH` (what `cargo xtask bench --torch` passes): benches/pytorch/bench.py
    /// is run model by model, alternating with our timings, in this run.
    Live {
        python: String,
    },
    /// The file recorded in shared/reference on another machine of this class.
    Recorded(Value),
    Missing,
}

/// Rounds of (PyTorch, ours) per model when PyTorch runs live; each side keeps its best
/// round, so a slow phase of a shared machine hits neither side alone.
const LIVE_ROUNDS: usize = 3;

impl Torch {
    fn from_args() -> Self {
        let args: Vec<String> = std::env::args().collect();
        if let Some(python) = args
            .iter()
            .position(|a| a == "--torch-python")
            .and_then(|i| args.get(i + 1))
        {
            return Self::Live {
                python: python.clone(),
            };
        }
        shared_json("reference/pytorch-baseline/results.json").map_or(Self::Missing, Self::Recorded)
    }

    fn source(&self) -> String {
        match self {
            Self::Live { .. } => format!(
                "measured in this run by benches/pytorch/bench.py (2 threads), alternating with ours \
                 model by model, best of {LIVE_ROUNDS} rounds on each side (each round a median of \
                 repeated steps)"
            ),
            Self::Recorded(v) => format!(
                "recorded in shared/reference/pytorch-baseline/results.json (torch {}, {} threads) on another \
                 machine of this class: not this run; `cargo xtask bench --torch` measures it here",
                v["meta"]["torch"].as_str().unwrap_or("?"),
                v["meta"]["threads"]
            ),
            Self::Missing => "no baseline found".into(),
        }
    }

    fn rounds(&self) -> usize {
        match self {
            Self::Live { .. } => LIVE_ROUNDS,
            _ => 1,
        }
    }

    /// bench.py's results for `only` (a model name or "limits"): run now, or recorded.
    fn results(&self, only: &str) -> Option<Value> {
        match self {
            Self::Live { python } => {
                let dir = root().join("benches/pytorch");
                let out =
                    std::env::temp_dir().join(format!("diffusion-torch-{}-{only}.json", std::process::id()));
                let status = std::process::Command::new(python)
                    .arg(dir.join("bench.py"))
                    .args(["--threads", "2", "--only", only, "--out"])
                    .arg(&out)
                    .current_dir(&dir)
                    .stdout(std::process::Stdio::null())
                    .status()
                    .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
                assert!(status.success(), "bench.py --only {only} failed: {status}");
                let text = std::fs::read_to_string(&out).expect("bench.py output");
                let _ = std::fs::remove_file(&out);
                let v: Value = serde_json::from_str(&text).expect("bench.py JSON");
                Some(v["results"].clone())
            }
            Self::Recorded(v) => Some(v["results"].clone()),
            Self::Missing => None,
        }
    }
}

fn networks(out: &mut String) {
    let torch = Torch::from_args();
    writeln!(
        out,
        "## Networks (float32; training step = forward, MSE gradient, backward, AdamW, as in PyTorch's)\n"
    )
    .unwrap();
    writeln!(
        out,
        "PyTorch: {}. Ratio = PyTorch time / ours (> 1: we are faster). GFLOP/s: our forward's GEMM \
         multiply-adds x 2 / time (x 3 for training). Our binaries use mimalloc (docs/architecture.md).\n",
        torch.source()
    )
    .unwrap();
    writeln!(
        out,
        "| model | batch | ours train (ms) | PyTorch train (ms) | ratio | ours infer (ms) | PyTorch infer (ms) | ratio | vs recorded file: train / infer | GFLOP/s train / infer |"
    )
    .unwrap();
    writeln!(out, "|---|---|---|---|---|---|---|---|---|---|").unwrap();
    let peak = fma_peak_gflops(5);
    let mut rng = Rng::new(0);
    let mlp = MlpDenoiser::<f32>::new(MlpConfig::default(), &mut rng).expect("reference mlp");
    let mut needs = vec![time_network(out, "mlp", mlp, &[4096, 2], &torch, peak)];
    let dit = Dit::<f32>::new(DitConfig::default(), &mut rng).expect("reference dit-tiny");
    needs.push(time_network(out, "dit-tiny", dit, &[64, 4, 16, 16], &torch, peak));
    let unet = UNet::<f32>::new(UNetConfig::default(), &mut rng).expect("reference unet-small");
    needs.push(time_network(
        out,
        "unet-small",
        unet,
        &[16, 3, 32, 32],
        &torch,
        peak,
    ));
    match peak {
        Some(p) => writeln!(
            out,
            "
FMA peak of this machine in this run: {p:.0} GFLOP/s (f32 vector FMAs on every rayon thread at \
             once, no memory traffic): the most any product can reach. Goal check, 1.5 x faster than the \
             recorded file (1 x for unet-small): its products alone would run at, train / infer, {}.",
            needs.into_iter().flatten().collect::<Vec<_>>().join("; ")
        )
        .unwrap(),
        None => writeln!(
            out,
            "\n(FMA peak not measured: no AVX-512F or AVX2 + FMA on this CPU.)"
        )
        .unwrap(),
    }
    let theirs = torch
        .results("limits")
        .and_then(|r| r["limits"]["sgemm_1024_gflops"].as_f64());
    let sgemm = sgemm_1024_gflops();
    writeln!(
        out,
        "\nsgemm 1024 x 1024 x 1024 (f32, median of 20): ours {sgemm:.0} GFLOP/s, PyTorch {} ({}).\n",
        theirs.map_or("-".into(), |v| format!("{v:.0} GFLOP/s")),
        theirs.map_or("-".into(), |v| format!("ours / theirs = {:.2}", sgemm / v))
    )
    .unwrap();
}

/// Times on `net` the two calls bench.py times (alternating with PyTorch's own when live): a
/// training step (forward, MSE loss gradient against fixed noise, backward, AdamW at lr 1e-4)
/// and an inference forward. Returns, for the goal against the recorded file, the rate its
/// products alone would need (as a part of the FMA `peak`).
fn time_network<N: Network<f32>>(
    out: &mut String,
    name: &str,
    mut net: N,
    shape: &[usize],
    torch: &Torch,
    peak: Option<f64>,
) -> Option<String> {
    let x = randn(shape, 3);
    let eps = randn(shape, 4);
    let t: Vec<f32> = (0..shape[0]).map(|i| (i * 37 % 1000) as f32).collect();
    let reps = if shape[0] > 1000 { 10 } else { 5 };
    let macs0 = diffusion_nn::gemm_macs();
    net.infer(&x, &t, None).expect("inference");
    let forward_flops = 2.0 * (diffusion_nn::gemm_macs() - macs0) as f64;
    let mut opt = AdamW::new(AdamWConfig::default(), &net).expect("AdamW");
    let scale = 2.0 / x.len() as f32;
    let (mut train, mut infer) = (f64::INFINITY, f64::INFINITY);
    let (mut tt, mut ti) = (None::<f64>, None::<f64>);
    let best = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    for _ in 0..torch.rounds() {
        if let Some(r) = torch.results(name) {
            tt = best(tt, r[name]["train_step_s"].as_f64());
            ti = best(ti, r[name]["infer_s"].as_f64());
        }
        infer = infer.min(median_secs(reps, || {
            std::hint::black_box(net.infer(&x, &t, None).expect("inference"));
        }));
        train = train.min(median_secs(reps, || {
            net.zero_grad();
            let (y, cache) = net.forward(&x, &t, None).expect("forward");
            let dy = (&y - &eps) * scale;
            net.backward(&cache, &dy).expect("backward");
            opt.step(&mut net, 1e-4).expect("AdamW step");
        }));
    }
    let ratio = |theirs: Option<f64>, ours: f64| theirs.map_or("-".into(), |v| format!("{:.2}", v / ours));
    let ms = |v: Option<f64>| v.map_or("-".into(), |v| format!("{:.1}", v * 1e3));
    // The goals are stated against the recorded file: its ratios too.
    let recorded = shared_json("reference/pytorch-baseline/results.json");
    let file = |key: &str| recorded.as_ref().and_then(|v| v["results"][name][key].as_f64());
    writeln!(
        out,
        "| {name} | {} | {:.1} | {} | {} | {:.1} | {} | {} | {} / {} | {:.0} / {:.0} |",
        shape[0],
        train * 1e3,
        ms(tt),
        ratio(tt, train),
        infer * 1e3,
        ms(ti),
        ratio(ti, infer),
        ratio(file("train_step_s"), train),
        ratio(file("infer_s"), infer),
        3.0 * forward_flops / train / 1e9,
        forward_flops / infer / 1e9,
    )
    .unwrap();
    let goal = if name == "unet-small" { 1.0 } else { 1.5 };
    let need = |flops: f64, key: &str| {
        let rate = flops * goal / file(key)? / 1e9;
        Some(format!("{rate:.0} GFLOP/s ({:.0}%)", 100.0 * rate / peak?))
    };
    Some(format!(
        "{name} {} / {}",
        need(3.0 * forward_flops, "train_step_s")?,
        need(forward_flops, "infer_s")?
    ))
}

/// Our GEMM on a square 1024 product, as bench.py measures torch's.
fn sgemm_1024_gflops() -> f64 {
    let n = 1024;
    let a = ndarray::Array2::from_shape_fn((n, n), |(i, j)| ((i * 7 + j * 3) % 13) as f32 * 0.1);
    let b = ndarray::Array2::from_shape_fn((n, n), |(i, j)| ((i * 5 + j) % 11) as f32 * 0.1);
    let secs = median_secs(20, || {
        std::hint::black_box(diffusion_nn::matmul_2d(&a, &b).expect("square product"));
    });
    2.0 * (n * n * n) as f64 / secs / 1e9
}

fn main() {
    diffusion_nn::alloc::keep_freed_memory();
    let start = Instant::now();
    let threads = rayon::current_num_threads();
    let mut out = String::from("# Benchmarks\n\n");
    let bandwidth = copy_bandwidth();
    writeln!(
        out,
        "Written by `cargo xtask bench` on {} ({} cores, {} rayon threads). Copy bandwidth measured in this run: \
         {:.1} GB/s (read + write; PyTorch's baseline file records {}).\n",
        cpu_model(),
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        threads,
        bandwidth / 1e9,
        shared_json("reference/pytorch-baseline/results.json")
            .and_then(|v| v["results"]["limits"]["copy_gb_per_s_read_plus_write"].as_f64())
            .map_or("nothing".into(), |v| format!("{v:.1} GB/s"))
    )
    .unwrap();
    if std::env::args().any(|a| a == "--no-solvers") {
        writeln!(out, "(solver steps skipped: --no-solvers)\n").unwrap();
    } else {
        solver_steps(&mut out);
    }
    eprintln!("solver steps done ({:.0} s)", start.elapsed().as_secs_f64());
    if std::env::args().any(|a| a == "--no-networks") {
        writeln!(out, "(networks skipped: --no-networks)\n").unwrap();
    } else {
        networks(&mut out);
    }
    writeln!(
        out,
        "Solver accuracy tables: `cargo run --release -p diffusion-cli -- demo` and `diffuse bench` (see \
         docs/solvers.md); research solvers: `cargo test --release -p diffusion-continuous --test compare_gmm -- \
         --nocapture`. GPU results (from `crates/cuda/scripts/gpu-check.sh` on a GPU machine): \
         docs/benchmarks-gpu.md.\n\nTotal time {:.0} s.",
        start.elapsed().as_secs_f64()
    )
    .unwrap();
    let path = root().join("docs/benchmarks.md");
    let tmp = path.with_extension("md.tmp");
    std::fs::write(&tmp, &out)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .expect("write docs/benchmarks.md");
    print!("{out}");
}
