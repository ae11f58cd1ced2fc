//! Prints the tables a diffusers scheduler would build, from a `scheduler_config.json`
//! (or Stable Diffusion's schedule when none is given).
//!
//! cargo run -p diffusion-schedules --example schedule_tables -- [scheduler_config.json] [steps]

use diffusion_schedules::{
    DiscreteSchedule, DiscreteScheduleConfig, SigmaGrid,
    sigmas::interp_table,
    spacing::{ddim_timesteps, multistep_timesteps},
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let config = match args.first() {
        Some(path) => DiscreteScheduleConfig::from_json_str(&std::fs::read_to_string(path)?)?,
        None => DiscreteScheduleConfig::from_json_str(
            r#"{"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012, "steps_offset": 1}"#,
        )?,
    };
    let steps: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(10);
    let schedule = DiscreteSchedule::from_config(&config)?;
    let n = schedule.num_train_timesteps();
    println!("{config:?}\n");
    println!(
        "training steps {n}: beta[0] = {:.6e}, beta[N-1] = {:.6e}",
        schedule.betas[0],
        schedule.betas[n - 1]
    );
    let abar = &schedule.alphas_cumprod;
    println!("alphas_cumprod[0] = {:.7}, [N-1] = {:.7e}", abar[0], abar[n - 1]);

    let ddim = ddim_timesteps(config.timestep_spacing, n, steps, config.steps_offset)?;
    println!("\nDDIM timesteps ({:?}): {ddim:?}", config.timestep_spacing);

    let table_sigmas = schedule.sigmas();
    let ts = multistep_timesteps(config.timestep_spacing, n, n, steps, config.steps_offset)?;
    let tsf: Vec<f64> = ts.iter().map(|&t| t as f64).collect();
    let sig = interp_table(&tsf, &table_sigmas);
    println!(
        "\n{:>4} {:>9} {:>12} {:>12} {:>12}",
        "i", "timestep", "sigma", "alpha", "lambda"
    );
    for (i, (&t, s)) in ts.iter().zip(&sig).enumerate() {
        let alpha = 1.0 / (1.0 + s * s).sqrt();
        println!("{i:>4} {t:>9} {s:>12.6} {alpha:>12.6} {:>12.6}", -s.ln());
    }
    let (lo, hi) = (f64::from(table_sigmas[0]), f64::from(table_sigmas[n - 1]));
    for (name, grid) in [
        ("karras", SigmaGrid::Karras { rho: 7.0 }),
        ("exponential", SigmaGrid::Exponential),
        (
            "beta",
            SigmaGrid::Beta {
                alpha: 0.6,
                beta: 0.6,
            },
        ),
    ] {
        let s: Vec<String> = grid
            .sigmas(lo, hi, steps)
            .iter()
            .map(|v| format!("{v:.5}"))
            .collect();
        println!("\n{name} sigmas: {}", s.join(", "));
    }
    Ok(())
}
