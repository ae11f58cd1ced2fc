//! Loading PyTorch-named safetensors weights: the reference MLP's seeded weights
//! (`fixtures/pytorch/parity.rs`), written to a file and loaded by name, reproduce the
//! outputs and gradients PyTorch computed from the same weights
//! (`fixtures/pytorch/mlp.io.safetensors`, rebuilt by `cargo xtask fixtures`). A missing
//! fixture fails the test.

mod common;
#[path = "../../../fixtures/pytorch/parity.rs"]
mod parity;

use common::Mlp;
use diffusion_train::{Network, Parameters, Scalar, load_weights};
use ndarray::{ArrayD, IxDyn};
use parity::{Entry, Io, assert_close};

fn entries<A: Scalar>(model: &Mlp<A>) -> Vec<Entry> {
    let mut all = Vec::new();
    model.visit(&mut |n, p| all.push((n.to_string(), p.value.shape().to_vec())));
    all
}

/// The seeded weights of `model`'s state dict as a float32 safetensors file.
fn weights_file(all: &[Entry]) -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), parity::weights_safetensors(all)).unwrap();
    file
}

fn array(io: &Io, key: &str) -> ArrayD<f64> {
    let (shape, data) = io.get(key);
    ArrayD::from_shape_vec(IxDyn(shape), data.clone()).unwrap()
}

#[test]
fn pytorch_mlp_weights_load_and_reproduce_pytorch_outputs() {
    let io = Io::open("mlp");
    let mut model = Mlp::<f64>::new(2, 256, 4, 128, 0);
    let all = entries(&model);
    io.assert_state_dict(&all);
    load_weights(&mut model, weights_file(&all).path(), true).unwrap();

    let x = array(&io, "x");
    let (out, cache) = model.forward(&x, &io.get("t").1, None).unwrap();
    assert_eq!(out.shape(), &io.get("out").0[..]);
    assert_close(
        "mlp: out",
        &out.iter().copied().collect::<Vec<_>>(),
        &io.get("out").1,
        1e-10,
    );

    // d/d(params) of sum(out * r): the upstream gradient is r.
    let dx = model.backward(&cache, &array(&io, "r")).unwrap();
    assert_close(
        "mlp: grad_x",
        &dx.iter().copied().collect::<Vec<_>>(),
        &io.get("grad_x").1,
        1e-9,
    );
    let mut checked = Vec::new();
    model.visit(&mut |name, p| {
        let grad: Vec<f64> = p.grad.iter().copied().collect();
        io.assert_grad(name, p.grad.shape(), &grad, 1e-9);
        checked.push(name.to_string());
    });
    checked.sort_unstable();
    assert_eq!(checked, io.grad_names());
    assert_eq!(checked.len(), 10);
}

#[test]
fn pytorch_weights_into_f32_model_round_exactly() {
    let mut m32 = Mlp::<f32>::new(2, 256, 4, 128, 0);
    let mut m64 = Mlp::<f64>::new(2, 256, 4, 128, 0);
    let file = weights_file(&entries(&m64));
    load_weights(&mut m32, file.path(), true).unwrap();
    load_weights(&mut m64, file.path(), true).unwrap();
    // The file is float32, so both loads hold the same values exactly.
    assert_eq!(m32.flat_values(), m64.flat_values());
}
