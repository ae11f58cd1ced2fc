//! `diffuse`: the diffusion-rs command line.

// Argument doc comments are clap's `--help` text, not rustdoc: `shapes[:SIZE]` is usage syntax.
#![allow(rustdoc::broken_intra_doc_links)]

mod bench;
mod data;
mod demo;
mod eval;
mod exact;
mod invert;
mod io;
mod model;
mod plot;
mod presets;
mod sample;
mod shapes;
mod train;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

diffusion_nn::use_mimalloc!();

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
    diffusion_nn::alloc::keep_freed_memory();
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
