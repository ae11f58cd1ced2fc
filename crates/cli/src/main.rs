//! `diffuse`: the diffusion-rs command line.

mod bench;
mod data;
mod demo;
mod eval;
mod invert;
mod io;
mod model;
mod plot;
mod presets;
mod exact;
mod sample;
mod shapes;
mod train;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Networks allocate their activations per call; mimalloc reuses freed pages where glibc
/// hands large blocks back to the kernel (20-35% less CPU time training the DiT and UNet;
/// see docs/architecture.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (mimalloc.h, v2 and v3). At -1 freed memory stays
/// committed for reuse instead of going back to the kernel 10 ms later: the networks free and
/// reallocate the same activation sizes every step, and each return cost a page fault and a
/// zeroed page on the next step (unet-small: 43 000 page faults in 8 steps, 10-15% of the CPU
/// time; with this setting 600). The process keeps its peak footprint.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn keep_freed_memory() {
    // SAFETY: sets a mimalloc option; valid at any time from any thread.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
}

/// Diffusion models from the shell: sample with any scheduler, evaluate sample sets,
/// compare solvers on problems with exact answers.
#[derive(Debug, Parser)]
#[command(name = "diffuse", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Train a small model, sample it with several solvers, and write tables and pictures.
    Demo(demo::Args),
    /// Generate samples from a model with a scheduler.
    Sample(sample::Args),
    /// Train an MLP, UNet or DiT denoiser on a dataset (checkpoints, resume).
    Train(train::Args),
    /// Compare two sample sets (.npy) with the testbed metrics.
    Eval(eval::Args),
    /// Map samples back to noise (DDIM or exact EDICT inversion) and report the round trip.
    Invert(invert::Args),
    /// Solver accuracy against NFE on an analytic problem: a table and a plot.
    Bench(bench::Args),
    /// List the schedulers (our names and diffusers class names).
    Schedulers,
}

fn main() -> ExitCode {
    keep_freed_memory();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(), // --help, --version
        Err(e) => {
            // One line, like every other error: clap's message up to its usage block.
            let text = e.render().to_string();
            let lines: Vec<&str> = text
                .lines()
                .map(str::trim)
                .take_while(|l| !l.starts_with("Usage:"))
                .filter(|l| !l.is_empty() && !l.starts_with("For more information"))
                .collect();
            eprintln!("{} (see --help)", lines.join(" "));
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Command::Demo(a) => demo::run(a),
        Command::Sample(a) => sample::run(a),
        Command::Train(a) => train::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Invert(a) => invert::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Schedulers => {
            for (ours, class) in diffusion_solvers::SCHEDULERS {
                println!("{ours:<24} {class}");
            }
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the error and its causes, no backtrace.
            let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            eprintln!("error: {}", chain.join(": "));
            ExitCode::FAILURE
        }
    }
}
