//! `cargo xtask bench`: measures what the project claims about speed and writes
//! `docs/benchmarks.md`. Every ratio is against a baseline measured in the same run
//! (copy bandwidth; PyTorch's network times with `--torch-json`, which `cargo xtask bench
//! --torch` supplies) or recorded on this machine class (diffusers' step times, PyTorch's
//! network times in shared/reference), and the table says which.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use diffusion_benches::randn;
use diffusion_core::Rng;
use diffusion_nn::Network;
use diffusion_nn::models::{Dit, DitConfig, MlpConfig, MlpDenoiser, UNet, UNetConfig};
use diffusion_train::{AdamW, AdamWConfig};
use ndarray::ArrayD;
use serde_json::{Value, json};

/// The networks allocate their activations per call; mimalloc keeps freed pages for reuse
/// where glibc returns large blocks to the kernel (page faults, TLB shootdowns): measured
/// 20-35% less CPU time on dit-tiny and unet-small. The `diffuse` binary uses it too.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    let timing = shared_json("reference/gmm/diffusers_step_timing.json");
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
         (shared/reference/gmm/diffusers_step_timing.json, 1 torch thread; not this run). Bound: the bytes a step \
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

/// The PyTorch numbers the network table compares against: `--torch-json PATH` (written by
/// `cargo xtask bench --torch`, which runs benches/pytorch/bench.py in this run), else the
/// file recorded in shared/reference on another machine of this class.
struct TorchBaseline {
    results: Value,
    source: String,
}

impl TorchBaseline {
    fn load() -> Option<Self> {
        let args: Vec<String> = std::env::args().collect();
        if let Some(path) = args
            .iter()
            .position(|a| a == "--torch-json")
            .and_then(|i| args.get(i + 1))
        {
            let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("--torch-json {path}: {e}"));
            let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("--torch-json {path}: {e}"));
            return Some(Self {
                source: format!(
                    "measured in this run (torch {}, {} threads, benches/pytorch/bench.py)",
                    v["meta"]["torch"].as_str().unwrap_or("?"),
                    v["meta"]["threads"]
                ),
                results: v["results"].clone(),
            });
        }
        let v = shared_json("reference/pytorch-baseline/results.json")?;
        Some(Self {
            source: format!(
                "recorded in shared/reference/pytorch-baseline/results.json (torch {}, {} threads, another \
                 machine of this class: not this run; `cargo xtask bench --torch` measures it here)",
                v["meta"]["torch"].as_str().unwrap_or("?"),
                v["meta"]["threads"]
            ),
            results: v["results"].clone(),
        })
    }

    fn secs(&self, model: &str, key: &str) -> Option<f64> {
        self.results[model][key].as_f64()
    }
}

fn networks(out: &mut String) {
    let torch = TorchBaseline::load();
    writeln!(
        out,
        "## Networks (float32; training step = forward, MSE gradient, backward, AdamW, as in PyTorch's)\n"
    )
    .unwrap();
    writeln!(
        out,
        "PyTorch: {}. Ratio = PyTorch time / ours (> 1: we are faster). GFLOP/s: our forward's \
         GEMM multiply-adds x 2 / time (x 3 for training).\n",
        torch
            .as_ref()
            .map_or("no baseline found".into(), |t| t.source.clone())
    )
    .unwrap();
    writeln!(
        out,
        "| model | batch | ours train (ms) | PyTorch train (ms) | ratio | ours infer (ms) | PyTorch infer (ms) | ratio | GFLOP/s train / infer |"
    )
    .unwrap();
    writeln!(out, "|---|---|---|---|---|---|---|---|---|").unwrap();
    let sgemm = sgemm_1024_gflops();
    let theirs = torch
        .as_ref()
        .and_then(|t| t.results["limits"]["sgemm_1024_gflops"].as_f64());
    let torch = |model: &str, key: &str| torch.as_ref()?.secs(model, key);
    let mut rng = Rng::new(0);
    let mlp = MlpDenoiser::<f32>::new(MlpConfig::default(), &mut rng).expect("reference mlp");
    time_network(out, "mlp", mlp, &[4096, 2], &torch);
    let dit = Dit::<f32>::new(DitConfig::default(), &mut rng).expect("reference dit-tiny");
    time_network(out, "dit-tiny", dit, &[64, 4, 16, 16], &torch);
    let unet = UNet::<f32>::new(UNetConfig::default(), &mut rng).expect("reference unet-small");
    time_network(out, "unet-small", unet, &[16, 3, 32, 32], &torch);
    writeln!(
        out,
        "\nsgemm 1024 x 1024 x 1024 (f32, median of 20): ours {sgemm:.0} GFLOP/s, PyTorch {} ({}).\n",
        theirs.map_or("-".into(), |v| format!("{v:.0} GFLOP/s")),
        theirs.map_or("-".into(), |v| format!("ours / theirs = {:.2}", sgemm / v))
    )
    .unwrap();
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

/// Times PyTorch's two calls of bench.py on `net`: a training step (forward, MSE loss
/// gradient against fixed noise, backward, AdamW at lr 1e-4) and an inference forward.
fn time_network<N: Network<f32>>(
    out: &mut String,
    name: &str,
    mut net: N,
    shape: &[usize],
    torch: &dyn Fn(&str, &str) -> Option<f64>,
) {
    let x = randn(shape, 3);
    let eps = randn(shape, 4);
    let t: Vec<f32> = (0..shape[0]).map(|i| (i * 37 % 1000) as f32).collect();
    let reps = if shape[0] > 1000 { 10 } else { 5 };
    let macs0 = diffusion_nn::gemm_macs();
    net.infer(&x, &t, None).expect("inference");
    let forward_flops = 2.0 * (diffusion_nn::gemm_macs() - macs0) as f64;
    let infer = median_secs(reps, || {
        std::hint::black_box(net.infer(&x, &t, None).expect("inference"));
    });
    let mut opt = AdamW::new(AdamWConfig::default(), &net).expect("AdamW");
    let scale = 2.0 / x.len() as f32;
    let train = median_secs(reps, || {
        net.zero_grad();
        let (y, cache) = net.forward(&x, &t, None).expect("forward");
        let dy = (&y - &eps) * scale;
        net.backward(&cache, &dy).expect("backward");
        opt.step(&mut net, 1e-4).expect("AdamW step");
    });
    let ratio = |theirs: Option<f64>, ours: f64| theirs.map_or("-".into(), |v| format!("{:.2}", v / ours));
    let ms = |v: Option<f64>| v.map_or("-".into(), |v| format!("{:.1}", v * 1e3));
    let (tt, ti) = (torch(name, "train_step_s"), torch(name, "infer_s"));
    writeln!(
        out,
        "| {name} | {} | {:.1} | {} | {} | {:.1} | {} | {} | {:.0} / {:.0} |",
        shape[0],
        train * 1e3,
        ms(tt),
        ratio(tt, train),
        infer * 1e3,
        ms(ti),
        ratio(ti, infer),
        3.0 * forward_flops / train / 1e9,
        forward_flops / infer / 1e9,
    )
    .unwrap();
}

fn main() {
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
         --nocapture`.\n\nTotal time {:.0} s.",
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
