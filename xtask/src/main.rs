//! Project workflows: `cargo xtask <command>` (see `cargo xtask help`).

mod fixtures;
mod tidy;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

const HELP: &str = "\
cargo xtask <command>

commands:
  ci             fmt --check, clippy -D warnings, the test suite, rustdoc -D warnings
  test           the test suite as CI runs it: tidy, cargo test --workspace, then kernels-check
  tidy           the architecture's invariants: dependency rules, a README and a typed
                 error per crate, doc pages that describe the present
  studies        the slow #[ignore]d studies (convergence tables, calibrations)
  kernels-check  compile every CUDA kernel with NVRTC (installs the NVRTC wheel into .venv-nvrtc)
  bench          time solver steps and the reference networks, write docs/benchmarks.md
                 (--torch: also time PyTorch on the same networks in this run; installs
                 torch into .venv-torch on first use, ~3 GB; --no-networks, --no-solvers)
  fixtures       rebuild the PyTorch parity fixtures in fixtures/pytorch (installs torch
                 into .venv-torch like bench --torch)
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("test") => test(),
        Some("studies") => run(&mut cargo(&[
            "test",
            "--workspace",
            "--release",
            "--",
            "--ignored",
            "--nocapture",
        ])),
        Some("kernels-check") => kernels_check(),
        Some("bench") => bench(&args[1..]),
        Some("fixtures") => fixtures::fixtures(),
        Some("tidy") => tidy::tidy(&root()),
        Some("help" | "--help" | "-h") | None => {
            print!("{HELP}");
            Ok(())
        }
        Some(other) => Err(format!("unknown command `{other}`\n\n{HELP}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn cargo(args: &[&str]) -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.args(args).current_dir(root());
    c
}

fn run(cmd: &mut Command) -> Result<(), String> {
    eprintln!("$ {cmd:?}");
    let status = cmd
        .current_dir(root())
        .status()
        .map_err(|e| format!("cannot start {cmd:?}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?} failed: {status}"))
    }
}

fn ci() -> Result<(), String> {
    run(&mut cargo(&["fmt", "--all", "--", "--check"]))?;
    run(&mut cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    test()?;
    run(cargo(&["doc", "--workspace", "--no-deps"]).env("RUSTDOCFLAGS", "-D warnings"))
}

fn test() -> Result<(), String> {
    tidy::tidy(&root())?;
    run(&mut cargo(&["test", "--workspace"]))?;
    kernels_check()
}

/// Installs NVRTC from PyPI into `.venv-nvrtc` (no toolkit or GPU needed) and compiles
/// every kernel of `diffusion-cuda`. Without network access the check is skipped with a
/// message, except under CI (`CI` set), where it must run.
fn kernels_check() -> Result<(), String> {
    let root = root();
    let script = root.join("crates/cuda/scripts/install-nvrtc.sh");
    let out = Command::new("bash")
        .arg(&script)
        .current_dir(&root)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    if !out.status.success() {
        let why = format!(
            "installing NVRTC failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if std::env::var_os("CI").is_some() {
            return Err(why);
        }
        eprintln!("skipping the NVRTC kernel check: {why}");
        return Ok(());
    }
    let lib_dir = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or("")
        .trim()
        .to_string();
    eprintln!("NVRTC from {lib_dir}");
    run(cargo(&["test", "-p", "diffusion-cuda", "--features", "cuda"])
        .env("DIFFUSION_NVRTC_DIR", &lib_dir)
        .env("DIFFUSION_REQUIRE_NVRTC", "1"))?;
    run(cargo(&[
        "run",
        "-p",
        "diffusion-cuda",
        "--features",
        "cuda",
        "--example",
        "kernels_check",
    ])
    .env("DIFFUSION_NVRTC_DIR", &lib_dir))
}

fn bench(extra: &[String]) -> Result<(), String> {
    let mut report_args: Vec<String> = extra.iter().filter(|a| *a != "--torch").cloned().collect();
    if extra.iter().any(|a| a == "--torch") {
        report_args.extend(["--torch-python".to_string(), torch_python()?]);
    }
    let mut args = vec![
        "run",
        "--release",
        "-p",
        "diffusion-benches",
        "--bin",
        "bench-report",
        "--",
    ];
    args.extend(report_args.iter().map(String::as_str));
    run(&mut cargo(&args))
}

/// Installs PyTorch into `.venv-torch` (first use) and returns its python, with which the
/// bench report runs benches/pytorch/bench.py (the reference networks, 2 threads) model by
/// model, so the network table compares this machine at one moment.
fn torch_python() -> Result<String, String> {
    let root = root();
    let script = root.join("benches/pytorch/install-torch.sh");
    let out = Command::new("bash")
        .arg(&script)
        .current_dir(&root)
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(format!("installing PyTorch failed ({})", out.status));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or("")
        .trim()
        .to_string())
}
