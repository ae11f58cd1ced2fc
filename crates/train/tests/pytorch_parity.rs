//! Loading PyTorch-exported safetensors: the reference MLP's weights, checked by running the
//! forward and backward passes against PyTorch's own outputs and gradients.

mod common;

use common::{Mlp, shared_dir};
use diffusion_train::{Network, Parameters, TensorFile, load_weights};
use ndarray::ArrayD;

#[test]
fn pytorch_mlp_weights_load_and_reproduce_pytorch_outputs() {
    let Some(shared) = shared_dir() else {
        eprintln!("SKIP: shared/ not found; PyTorch parity fixtures unavailable");
        return;
    };
    let fx = shared.join("reference/pytorch-baseline/fixtures");
    let weights = fx.join("mlp.weights.safetensors");
    if !weights.exists() {
        eprintln!("SKIP: {} missing", weights.display());
        return;
    }
    let mut model = Mlp::<f64>::new(2, 256, 4, 128, 0);
    load_weights(&mut model, &weights, true).unwrap();

    let io = TensorFile::open(fx.join("mlp.io.safetensors")).unwrap();
    let x: ArrayD<f64> = io.get("x", &[8, 2]).unwrap();
    let t: ArrayD<f64> = io.get("t", &[8]).unwrap();
    let want: ArrayD<f64> = io.get("out", &[8, 2]).unwrap();
    let r: ArrayD<f64> = io.get("r", &[8, 2]).unwrap();
    let (out, cache) = model.forward(&x, t.as_slice().unwrap(), None).unwrap();
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let err = (&out - &want).iter().fold(0.0f64, |m, v| m.max(v.abs()));
    assert!(err <= 1e-10 * scale, "forward max error {err} (scale {scale})");

    // d/d(params) of sum(out * r): the upstream gradient is r.
    let dx = model.backward(&cache, &r).unwrap();
    let gx: ArrayD<f64> = io.get("grad_x", &[8, 2]).unwrap();
    let err = (&dx - &gx).iter().fold(0.0f64, |m, v| m.max(v.abs()));
    assert!(err < 1e-9, "grad_x error {err}");
    let mut checked = 0;
    model.visit(&mut |name, p| {
        let want: ArrayD<f64> = io.get(&format!("grad.{name}"), p.grad.shape()).unwrap();
        let scale = want.iter().fold(1e-300f64, |m, v| m.max(v.abs()));
        let err = (&p.grad - &want).iter().fold(0.0f64, |m, v| m.max(v.abs()));
        assert!(err <= 1e-9 * scale, "grad.{name}: error {err} (scale {scale})");
        checked += 1;
    });
    assert_eq!(checked, 10);
}

#[test]
fn pytorch_weights_into_f32_model_round_exactly() {
    let Some(shared) = shared_dir() else {
        eprintln!("SKIP: shared/ not found");
        return;
    };
    let weights = shared.join("reference/pytorch-baseline/fixtures/mlp.weights.safetensors");
    if !weights.exists() {
        eprintln!("SKIP: {} missing", weights.display());
        return;
    }
    let mut m32 = Mlp::<f32>::new(2, 256, 4, 128, 0);
    let mut m64 = Mlp::<f64>::new(2, 256, 4, 128, 0);
    load_weights(&mut m32, &weights, true).unwrap();
    load_weights(&mut m64, &weights, true).unwrap();
    // The file is float32, so both loads hold the same values exactly.
    assert_eq!(m32.flat_values(), m64.flat_values());
}
