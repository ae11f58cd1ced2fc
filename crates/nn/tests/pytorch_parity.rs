//! Forward and gradient parity with the PyTorch fixtures in
//! `/work/shared/reference/pytorch-baseline/fixtures` (skipped when absent).

use std::collections::HashMap;
use std::path::PathBuf;

use diffusion_core::Rng;
use diffusion_nn::checkpoint::{self, HostTensor};
use diffusion_nn::models::{Dit, DitConfig, MlpConfig, MlpDenoiser, UNet, UNetConfig};
use diffusion_nn::{Float, Network};
use ndarray::{ArrayD, IxDyn};

fn fixtures() -> Option<PathBuf> {
    let dir = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/reference/pytorch-baseline/fixtures"
    ));
    if dir.join("index.json").exists() {
        Some(dir)
    } else {
        eprintln!("SKIP: PyTorch fixtures not found at {}", dir.display());
        None
    }
}

fn to_array<A: Float>(t: &HostTensor) -> ArrayD<A> {
    ArrayD::from_shape_vec(IxDyn(&t.0), t.1.iter().map(|&v| A::of_f64(v)).collect()).unwrap()
}

/// max |got - want| / max |want|.
fn rel_err(got: impl Iterator<Item = f64>, want: &[f64]) -> f64 {
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-300);
    got.zip(want).fold(0.0f64, |m, (g, w)| m.max((g - w).abs())) / scale
}

fn check<A: Float, N: Network<A>>(name: &str, mut model: N, expected_params: usize, tol: f64) {
    let Some(dir) = fixtures() else { return };
    checkpoint::load(&mut model, dir.join(format!("{name}.weights.safetensors"))).unwrap();
    assert_eq!(model.num_params(), expected_params, "{name} parameter count");
    // Every trainable name exists in the PyTorch state dict.
    let weights = checkpoint::read_all(dir.join(format!("{name}.weights.safetensors"))).unwrap();
    let mut n_names = 0;
    model.visit(&mut |n, _| {
        assert!(weights.contains_key(n), "{name}: {n} not in PyTorch state dict");
        n_names += 1;
    });
    model.visit_buffers(&mut |n, _| {
        assert!(
            weights.contains_key(n),
            "{name}: buffer {n} not in PyTorch state dict"
        );
        n_names += 1;
    });
    assert_eq!(n_names, weights.len(), "{name}: tensor count");
    let io: HashMap<String, HostTensor> =
        checkpoint::read_all(dir.join(format!("{name}.io.safetensors"))).unwrap();
    let x = to_array::<A>(&io["x"]);
    let t: Vec<A> = io["t"].1.iter().map(|&v| A::of_f64(v)).collect();
    let (out, cache) = model.forward(&x, &t, None).unwrap();
    assert_eq!(out.shape(), &io["out"].0[..]);
    let e = rel_err(out.iter().map(|v| v.as_f64()), &io["out"].1);
    println!(
        "{name} ({} bytes/elem): forward rel err {e:.3e}",
        std::mem::size_of::<A>()
    );
    assert!(e < tol, "{name} forward rel err {e}");
    let infer = model.infer(&x, &t, None).unwrap();
    assert_eq!(infer, out, "{name}: infer differs from forward");
    let r = to_array::<A>(&io["r"]);
    let dx = model.backward(&cache, &r).unwrap();
    let e = rel_err(dx.iter().map(|v| v.as_f64()), &io["grad_x"].1);
    println!("{name}: grad_x rel err {e:.3e}");
    assert!(e < tol, "{name} grad_x rel err {e}");
    let mut checked = 0;
    model.visit(&mut |n, p| {
        if let Some(want) = io.get(&format!("grad.{n}")) {
            assert_eq!(p.grad.shape(), &want.0[..], "{name}: grad.{n} shape");
            let e = rel_err(p.grad.iter().map(|v| v.as_f64()), &want.1);
            assert!(e < tol, "{name}: grad.{n} rel err {e}");
            checked += 1;
        }
    });
    let expected = io.keys().filter(|k| k.starts_with("grad.")).count();
    assert_eq!(checked, expected, "{name}: every fixture gradient was compared");
    println!("{name}: {checked} parameter gradients within {tol:e}");
}

#[test]
fn mlp_matches_pytorch_f64_and_f32() {
    let mut rng = Rng::new(0);
    check::<f64, _>(
        "mlp",
        MlpDenoiser::new(MlpConfig::default(), &mut rng).unwrap(),
        231_426,
        1e-10,
    );
    check::<f32, _>(
        "mlp",
        MlpDenoiser::new(MlpConfig::default(), &mut rng).unwrap(),
        231_426,
        1e-5,
    );
}

#[test]
fn dit_tiny_matches_pytorch_f64_and_f32() {
    let mut rng = Rng::new(0);
    check::<f64, _>(
        "dit-tiny",
        Dit::new(DitConfig::default(), &mut rng).unwrap(),
        4_165_456,
        1e-10,
    );
    check::<f32, _>(
        "dit-tiny",
        Dit::new(DitConfig::default(), &mut rng).unwrap(),
        4_165_456,
        1e-5,
    );
}

#[test]
fn unet_small_matches_pytorch_f64_and_f32() {
    let mut rng = Rng::new(0);
    check::<f64, _>(
        "unet-small",
        UNet::new(UNetConfig::default(), &mut rng).unwrap(),
        6_472_195,
        1e-10,
    );
    check::<f32, _>(
        "unet-small",
        UNet::new(UNetConfig::default(), &mut rng).unwrap(),
        6_472_195,
        1e-5,
    );
}
