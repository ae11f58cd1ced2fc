//! `cargo xtask fixtures`: rebuilds the PyTorch parity fixtures in `fixtures/pytorch/`.
//!
//! Installs PyTorch into `.venv-torch` (as `bench --torch` does), writes the seeded weights
//! of `fixtures/pytorch/parity.rs` to `target/pytorch-fixture-weights/` (the ignored test
//! `write_seeded_weights` of `diffusion-nn`), runs `fixtures/pytorch/make_fixtures.py` on
//! them, which rewrites `fixtures/pytorch/NAME.io.safetensors`, then runs both parity tests.

use super::{cargo, root, run, torch_python};

pub fn fixtures() -> Result<(), String> {
    let python = torch_python()?;
    let weights = root().join("target/pytorch-fixture-weights");
    run(cargo(&[
        "test",
        "-p",
        "diffusion-nn",
        "--test",
        "pytorch_parity",
        "--",
        "--ignored",
        "--exact",
        "write_seeded_weights",
    ])
    .env("DIFFUSION_FIXTURE_WEIGHTS", &weights))?;
    run(std::process::Command::new(python)
        .arg("fixtures/pytorch/make_fixtures.py")
        .arg("--weights")
        .arg(&weights))?;
    for krate in ["diffusion-nn", "diffusion-train"] {
        run(&mut cargo(&["test", "-p", krate, "--test", "pytorch_parity"]))?;
    }
    Ok(())
}
