//! Forward and gradient parity with PyTorch on the reference networks of
//! `benches/pytorch/models.py`: the seeded weights of `fixtures/pytorch/parity.rs`, loaded
//! by PyTorch name, against the outputs and gradients PyTorch computed from the same
//! weights (`fixtures/pytorch/NAME.io.safetensors`, rebuilt by `cargo xtask fixtures`).
//! A missing fixture fails the test.

#[path = "../../../fixtures/pytorch/parity.rs"]
mod parity;

use diffusion_core::Rng;
use diffusion_nn::checkpoint;
use diffusion_nn::models::{Dit, DitConfig, MlpConfig, MlpDenoiser, UNet, UNetConfig};

use diffusion_nn::{Float, Network, Parameters};
use ndarray::{ArrayD, IxDyn};
use parity::{Entry, Io, assert_close};

/// The model's state dict (parameters, then buffers): names and shapes.
fn entries<A: Float>(model: &dyn Parameters<A>) -> Vec<Entry> {
    let mut all = Vec::new();
    model.visit(&mut |n, p| all.push((n.to_string(), p.value.shape().to_vec())));
    model.visit_buffers(&mut |n, b| all.push((n.to_string(), b.shape().to_vec())));
    all
}

fn to_array<A: Float>(io: &Io, key: &str) -> ArrayD<A> {
    let (shape, data) = io.get(key);
    ArrayD::from_shape_vec(IxDyn(shape), data.iter().map(|&v| A::of_f64(v)).collect()).unwrap()
}

fn wide<A: Float>(a: &ArrayD<A>) -> Vec<f64> {
    a.iter().map(|v| v.as_f64()).collect()
}

/// The seeded weights of `model`'s state dict, once it is checked to be PyTorch's.
fn weights<A: Float>(io: &Io, model: &dyn Parameters<A>) -> Vec<u8> {
    let all = entries(model);
    io.assert_state_dict(&all);
    parity::weights_safetensors(&all)
}

fn check<A: Float, N: Network<A>>(io: &Io, weights: &[u8], mut model: N, expected_params: usize, tol: f64) {
    let name = io.model.as_str();
    assert_eq!(model.num_params(), expected_params, "{name} parameter count");
    io.assert_state_dict(&entries(&model));
    checkpoint::load_bytes(&mut model, weights, false).unwrap();

    let x = to_array::<A>(io, "x");
    let t: Vec<A> = io.get("t").1.iter().map(|&v| A::of_f64(v)).collect();
    let (out, cache) = model.forward(&x, &t, None).unwrap();
    assert_eq!(out.shape(), &io.get("out").0[..], "{name}: output shape");
    let bytes = std::mem::size_of::<A>();
    let e = assert_close(&format!("{name}: out"), &wide(&out), &io.get("out").1, tol);
    println!("{name} ({bytes} bytes/elem): forward rel err {e:.3e}");
    let infer = model.infer(&x, &t, None).unwrap();
    assert_eq!(infer, out, "{name}: infer differs from forward");

    let dx = model.backward(&cache, &to_array::<A>(io, "r")).unwrap();
    let e = assert_close(&format!("{name}: grad_x"), &wide(&dx), &io.get("grad_x").1, tol);
    println!("{name}: grad_x rel err {e:.3e}");
    let mut checked = Vec::new();
    let mut worst = 0.0f64;
    model.visit(&mut |n, p| {
        worst = worst.max(io.assert_grad(n, p.grad.shape(), &wide(&p.grad), tol));
        checked.push(n.to_string());
    });
    checked.sort_unstable();
    assert_eq!(
        checked,
        io.grad_names(),
        "{name}: one fixture gradient per parameter"
    );
    println!(
        "{name}: {} parameter gradients, worst rel err {worst:.3e}",
        checked.len()
    );
}

#[test]
fn mlp_matches_pytorch_f64_and_f32() {
    let io = Io::open("mlp");
    let mut rng = Rng::new(0);
    let m64 = MlpDenoiser::<f64>::new(MlpConfig::default(), &mut rng).unwrap();
    let w = weights(&io, &m64);
    check(&io, &w, m64, 231_426, 1e-10);
    let m32 = MlpDenoiser::<f32>::new(MlpConfig::default(), &mut rng).unwrap();
    check(&io, &w, m32, 231_426, 1e-5);
}

#[test]
fn dit_tiny_matches_pytorch_f64_and_f32() {
    let io = Io::open("dit-tiny");
    let mut rng = Rng::new(0);
    let m64 = Dit::<f64>::new(DitConfig::default(), &mut rng).unwrap();
    let w = weights(&io, &m64);
    check(&io, &w, m64, 4_165_456, 1e-10);
    let m32 = Dit::<f32>::new(DitConfig::default(), &mut rng).unwrap();
    check(&io, &w, m32, 4_165_456, 1e-5);
}

#[test]
fn unet_small_matches_pytorch_f64_and_f32() {
    let io = Io::open("unet-small");
    let mut rng = Rng::new(0);
    let m64 = UNet::<f64>::new(UNetConfig::default(), &mut rng).unwrap();
    let w = weights(&io, &m64);
    check(&io, &w, m64, 6_472_195, 1e-10);
    let m32 = UNet::<f32>::new(UNetConfig::default(), &mut rng).unwrap();
    check(&io, &w, m32, 6_472_195, 1e-5);
}

/// Writes `NAME.weights.safetensors` for `make_fixtures.py` into the folder named by
/// `DIFFUSION_FIXTURE_WEIGHTS` (`cargo xtask fixtures` sets it), or into a temporary
/// folder, and checks that each file loads back into its model with the generated values.
#[test]
#[ignore = "writes the seeded weights for fixtures/pytorch/make_fixtures.py (cargo xtask fixtures)"]
fn write_seeded_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = std::env::var_os("DIFFUSION_FIXTURE_WEIGHTS")
        .map_or_else(|| tmp.path().to_path_buf(), std::path::PathBuf::from);
    std::fs::create_dir_all(&dir).unwrap();
    let mut rng = Rng::new(0);
    let models: [(&str, Box<dyn Parameters<f32>>); 3] = [
        (
            "mlp",
            Box::new(MlpDenoiser::new(MlpConfig::default(), &mut rng).unwrap()),
        ),
        (
            "dit-tiny",
            Box::new(Dit::new(DitConfig::default(), &mut rng).unwrap()),
        ),
        (
            "unet-small",
            Box::new(UNet::new(UNetConfig::default(), &mut rng).unwrap()),
        ),
    ];
    for (name, mut model) in models {
        let all = entries(model.as_ref());
        let path = dir.join(format!("{name}.weights.safetensors"));
        std::fs::write(&path, parity::weights_safetensors(&all)).unwrap();
        checkpoint::load(model.as_mut(), &path, false).unwrap();
        let want = parity::generate(&all);
        let mut got: Vec<Vec<f32>> = Vec::new();
        model.visit(&mut |_, p| got.push(p.value.iter().copied().collect()));
        model.visit_buffers(&mut |_, b| got.push(b.iter().copied().collect()));
        assert_eq!(got, want, "{name}: the written weights load back");
        println!("{}: {} tensors", path.display(), all.len());
    }
}
