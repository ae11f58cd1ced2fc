//! Thread-count independence, typed errors, checkpoints and the Denoiser adapter.

use diffusion_core::{Denoiser, NoiseLevel, Parameterization, Rng};
use diffusion_nn::checkpoint;
use diffusion_nn::models::*;
use diffusion_nn::{Network, NetworkDenoiser, NnError, Parameters};
use ndarray::{ArrayD, IxDyn};

fn randn(shape: &[usize], rng: &mut Rng) -> ArrayD<f32> {
    let mut v = vec![0.0; shape.iter().product()];
    rng.fill_normal(&mut v);
    ArrayD::from_shape_vec(IxDyn(shape), v.iter().map(|&x| x as f32).collect()).unwrap()
}

fn small_unet() -> UNet<f32> {
    unet_of_size(8)
}

fn unet_of_size(size: usize) -> UNet<f32> {
    unet_with(2, size, 3)
}

/// A small UNet (2 levels, attention at the lower one) over `dims` spatial axes of `size`.
fn unet_with(dims: usize, size: usize, in_ch: usize) -> UNet<f32> {
    let cfg = UNetConfig {
        in_ch,
        size,
        dims,
        base: 32,
        mults: vec![1, 2],
        nres: 1,
        temb: 32,
        attn_levels: vec![1],
        ..UNetConfig::default()
    };
    UNet::new(cfg, &mut Rng::new(3)).unwrap()
}

/// Output and every gradient of one forward/backward pass.
fn run<N: Network<f32> + Clone>(
    net: &N,
    x: &ArrayD<f32>,
    t: &[f32],
) -> (ArrayD<f32>, ArrayD<f32>, Vec<Vec<f32>>) {
    let mut net = net.clone();
    let (y, c) = net.forward(x, t, None).unwrap();
    let dx = net.backward(&c, &y).unwrap();
    let mut grads = Vec::new();
    net.visit(&mut |_, p| grads.push(p.grad.iter().copied().collect()));
    (y, dx, grads)
}

#[test]
fn results_do_not_depend_on_thread_count() {
    let mut rng = Rng::new(1);
    let unet = small_unet();
    let x = randn(&[5, 3, 8, 8], &mut rng);
    let t = [1.0, 50.0, 300.0, 999.0, 7.0];
    let mut dit = Dit::<f32>::new(
        DitConfig {
            depth: 2,
            hidden: 48,
            ..DitConfig::default()
        },
        &mut rng,
    )
    .unwrap();
    // Non-zero adaLN gates, so the blocks' attention and MLP reach the output.
    dit.visit_mut(&mut |_, p| p.value.iter_mut().for_each(|v| *v += 0.05 * rng.normal() as f32));
    // 19 items: self-attention and the MLP branch run tasks of 2 items, the last one partial.
    let xd = randn(&[19, 4, 16, 16], &mut rng);
    let td: Vec<f32> = (0..19).map(|i| (i * 111 % 1000) as f32).collect();
    let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    let three = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap();
    assert_eq!(
        one.install(|| run(&unet, &x, &t)),
        three.install(|| run(&unet, &x, &t))
    );
    assert_eq!(
        one.install(|| run(&dit, &xd, &td)),
        three.install(|| run(&dit, &xd, &td))
    );
    // The MLP runs row blocks, one per task: several blocks, the last one partial.
    let mlp = MlpDenoiser::<f32>::new(MlpConfig::default(), &mut rng).unwrap();
    let xm = randn(&[1300, 2], &mut rng);
    let tm: Vec<f32> = (0..1300).map(|i| (i * 37 % 1000) as f32).collect();
    assert_eq!(
        one.install(|| run(&mlp, &xm, &tm)),
        three.install(|| run(&mlp, &xm, &tm))
    );
    // 16x16 planes run their 3x3 convolutions by Winograd: batch-parallel (5 items) and
    // product-parallel (2 items).
    let unet = unet_of_size(16);
    let x = randn(&[5, 3, 16, 16], &mut rng);
    for n in [5, 2] {
        let x = x.slice(ndarray::s![..n, .., .., ..]).to_owned().into_dyn();
        assert_eq!(
            one.install(|| run(&unet, &x, &t[..n])),
            three.install(|| run(&unet, &x, &t[..n]))
        );
    }
}

#[test]
fn bad_inputs_are_typed_errors() {
    let mut rng = Rng::new(2);
    let mlp = MlpDenoiser::<f32>::new(MlpConfig::default(), &mut rng).unwrap();
    let err = mlp
        .forward(&randn(&[4, 3], &mut rng), &[0.0; 4], None)
        .unwrap_err();
    assert!(
        matches!(&err, NnError::Shape { got, .. } if got == &vec![4, 3]),
        "{err}"
    );
    let err = mlp
        .forward(&randn(&[4, 2], &mut rng), &[0.0; 3], None)
        .unwrap_err();
    assert!(matches!(err, NnError::Input { name: "t", .. }), "{err}");
    let unet = small_unet();
    assert!(matches!(
        unet.infer(&randn(&[1, 3, 7, 8], &mut rng), &[0.0], None),
        Err(NnError::Shape { .. })
    ));
    assert!(matches!(
        UNet::<f32>::new(
            UNetConfig {
                groups: 5,
                ..UNetConfig::default()
            },
            &mut rng
        ),
        Err(NnError::Config { .. })
    ));
    let dit = Dit::<f32>::new(
        DitConfig {
            depth: 1,
            num_classes: 10,
            ..DitConfig::default()
        },
        &mut rng,
    )
    .unwrap();
    let x = randn(&[2, 4, 16, 16], &mut rng);
    assert!(matches!(
        dit.infer(&x, &[0.0, 1.0], Some(&[3, 10])),
        Err(NnError::Input { .. })
    ));
    assert!(dit.infer(&x, &[0.0, 1.0], Some(&[3, 9])).is_ok());
    for bad in [
        DitConfig {
            hidden: 0,
            ..DitConfig::default()
        },
        DitConfig {
            size: 0,
            ..DitConfig::default()
        },
    ] {
        assert!(matches!(
            Dit::<f32>::new(bad, &mut rng),
            Err(NnError::Config { .. })
        ));
    }
}

#[test]
fn checkpoint_round_trip_and_errors_name_the_tensor() {
    let mut rng = Rng::new(4);
    let cfg = MlpConfig {
        hidden: 16,
        ..MlpConfig::default()
    };
    let a = MlpDenoiser::<f64>::new(cfg, &mut rng).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mlp.safetensors");
    checkpoint::save(&a, &path).unwrap();
    let mut b = MlpDenoiser::<f64>::new(cfg, &mut rng).unwrap();
    checkpoint::load(&mut b, &path, false).unwrap();
    let mut same = true;
    let mut vals = Vec::new();
    a.visit(&mut |_, p| vals.push(p.value.clone()));
    let mut i = 0;
    b.visit(&mut |_, p| {
        same &= p.value == vals[i];
        i += 1;
    });
    assert!(same, "f64 round trip is exact");
    // A wider model: every tensor mis-shaped; the first is named.
    let mut wide = MlpDenoiser::<f64>::new(MlpConfig { hidden: 32, ..cfg }, &mut rng).unwrap();
    let err = checkpoint::load(&mut wide, &path, false).unwrap_err();
    assert!(
        matches!(&err, NnError::TensorShape { name, .. } if name == "net.0.weight"),
        "{err}"
    );
    // A deeper model: the old output layer has the wrong shape for the new hidden layer.
    let mut deep = MlpDenoiser::<f64>::new(MlpConfig { depth: 5, ..cfg }, &mut rng).unwrap();
    let err = checkpoint::load(&mut deep, &path, false).unwrap_err();
    assert!(
        matches!(&err, NnError::TensorShape { name, .. } if name == "net.8.weight"),
        "{err}"
    );
    // A file holding a different module: a missing tensor.
    let other = dir.path().join("linear.safetensors");
    checkpoint::save(
        &diffusion_nn::layers::Linear::<f64>::new(2, 2, true, &mut rng),
        &other,
    )
    .unwrap();
    let err = checkpoint::load(&mut b, &other, false).unwrap_err();
    assert!(
        matches!(&err, NnError::MissingTensor { name, .. } if name == "net.0.weight"),
        "{err}"
    );
    // Truncated file.
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = checkpoint::load(&mut b, &path, false).unwrap_err();
    assert!(matches!(err, NnError::Safetensors { .. }), "{err}");
}

#[test]
fn network_is_a_denoiser() {
    let mut rng = Rng::new(5);
    let net = MlpDenoiser::<f64>::new(
        MlpConfig {
            hidden: 16,
            ..MlpConfig::default()
        },
        &mut rng,
    )
    .unwrap();
    let x = ArrayD::from_shape_vec(IxDyn(&[3, 2]), vec![0.1, 0.2, -0.3, 0.4, 1.0, -1.0]).unwrap();
    let want = net.infer(&x, &[250.0; 3], None).unwrap();
    let model = NetworkDenoiser::new(net, Parameterization::Epsilon);
    assert_eq!(model.parameterization(), Parameterization::Epsilon);
    let got = model.predict(&x, NoiseLevel::new(250.0, 0.6, 0.8)).unwrap();
    assert_eq!(got, want);
}

#[test]
fn parameter_names_follow_pytorch_order() {
    let mut rng = Rng::new(6);
    let dit = Dit::<f32>::new(DitConfig::default(), &mut rng).unwrap();
    let names = diffusion_nn::param::param_names(&dit);
    assert_eq!(
        &names[..4],
        [
            "x_embed.weight",
            "x_embed.bias",
            "t_embed.0.weight",
            "t_embed.0.bias"
        ]
    );
    assert_eq!(
        &names[names.len() - 4..],
        ["ada_f.1.weight", "ada_f.1.bias", "out.weight", "out.bias"]
    );
    assert_eq!(names[6], "blocks.0.attn.in_proj_weight");
    let unet = UNet::<f32>::new(UNetConfig::default(), &mut rng).unwrap();
    let names = diffusion_nn::param::param_names(&unet);
    assert_eq!(
        &names[names.len() - 4..],
        ["out.0.weight", "out.0.bias", "out.2.weight", "out.2.bias"]
    );
    assert!(names.contains(&"down.2.0.weight".to_string()), "downsample conv");
    assert!(names.contains(&"up.3.1.weight".to_string()), "upsample conv");
}

#[test]
fn whitebox_dit_shapes_names_and_bad_inputs() {
    use diffusion_nn::models::{WhiteBoxDit, WhiteBoxDitConfig};
    let mut rng = Rng::new(11);
    let cfg = WhiteBoxDitConfig {
        in_ch: 2,
        size: 8,
        patch: 2,
        hidden: 16,
        depth: 2,
        heads: 4,
        freq_dim: 8,
        num_classes: 3,
        ..WhiteBoxDitConfig::default()
    };
    let net = WhiteBoxDit::<f32>::new(cfg, &mut rng).unwrap();
    let mut names = Vec::new();
    net.visit(&mut |n, _| names.push(n.to_string()));
    assert_eq!(names.first().map(String::as_str), Some("x_embed.weight"));
    assert!(names.contains(&"blocks.1.attn.qkv.weight".to_string()));
    assert!(names.contains(&"blocks.0.ista.weight".to_string()));
    assert!(names.contains(&"y_embed.weight".to_string()));
    assert_eq!(names.last().map(String::as_str), Some("out.bias"));
    // adaLN-Zero: the untrained model outputs exactly zero.
    let x = randn(&[2, 2, 8, 8], &mut rng);
    let y = net.infer(&x, &[1.0, 2.0], Some(&[0, 2])).unwrap();
    assert_eq!(y.shape(), &[2, 2, 8, 8]);
    assert!(y.iter().all(|&v| v == 0.0));
    // Bad inputs are typed errors, not panics.
    assert!(matches!(
        net.infer(&randn(&[2, 3, 8, 8], &mut rng), &[0.0; 2], None),
        Err(NnError::Shape { .. })
    ));
    assert!(matches!(
        net.infer(&x, &[0.0; 3], None),
        Err(NnError::Input { name: "t", .. })
    ));
    assert!(matches!(
        net.infer(&x, &[0.0; 2], Some(&[0, 3])),
        Err(NnError::Input { .. })
    ));
    let (_, cache) = WhiteBoxDit::<f32>::new(cfg, &mut rng)
        .unwrap()
        .forward(&x, &[0.0; 2], None)
        .unwrap();
    let mut net = net;
    assert!(matches!(
        net.backward(&cache, &randn(&[2, 2, 8, 4], &mut rng)),
        Err(NnError::Shape { .. })
    ));
    for bad in [
        WhiteBoxDitConfig { heads: 5, ..cfg },
        WhiteBoxDitConfig {
            ista_step: -0.1,
            ..cfg
        },
        WhiteBoxDitConfig { patch: 3, ..cfg },
    ] {
        assert!(matches!(
            WhiteBoxDit::<f32>::new(bad, &mut rng),
            Err(NnError::Config { .. })
        ));
    }
}

#[test]
fn mlp_and_whitebox_dit_do_not_depend_on_thread_count() {
    use diffusion_nn::models::{WhiteBoxDit, WhiteBoxDitConfig};
    let mut rng = Rng::new(12);
    // Batch 512 makes the products large enough for both parallel GEMM strategies
    // (shared packing for forward/dx, output blocks for the long-K weight gradients).
    let mlp = MlpDenoiser::<f32>::new(MlpConfig::default(), &mut rng).unwrap();
    let x = randn(&[512, 2], &mut rng);
    let t: Vec<f32> = (0..512).map(|i| (i % 97) as f32).collect();
    let mut wb = WhiteBoxDit::<f32>::new(
        WhiteBoxDitConfig {
            hidden: 48,
            depth: 2,
            ..WhiteBoxDitConfig::default()
        },
        &mut rng,
    )
    .unwrap();
    // Non-zero adaLN/output weights, so outputs and gradients are not trivially zero.
    wb.visit_mut(&mut |_, p| p.value.iter_mut().for_each(|v| *v += 0.05 * rng.normal() as f32));
    let xw = randn(&[3, 4, 16, 16], &mut rng);
    let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    let three = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap();
    let (y1, dx1, g1) = one.install(|| run(&mlp, &x, &t));
    assert_eq!((y1, dx1, g1), three.install(|| run(&mlp, &x, &t)));
    let (y1, dx1, g1) = one.install(|| run(&wb, &xw, &t[..3]));
    assert!(y1.iter().any(|&v| v != 0.0));
    assert_eq!((y1, dx1, g1), three.install(|| run(&wb, &xw, &t[..3])));
}

#[test]
fn dit_inference_is_bit_identical_to_the_training_forward() {
    // Inference runs each block in tasks of whole items (norms fused with their modulation,
    // nothing kept); training runs self-attention and the MLP branch in tasks of their own
    // and keeps the activations. 19 items make tasks of 2 with the last one partial, 3
    // items tasks of 1.
    let cfg = DitConfig {
        depth: 2,
        hidden: 48,
        ..DitConfig::default()
    };
    let plain = Dit::<f32>::new(cfg, &mut Rng::new(8)).unwrap();
    let mut net = plain.clone();
    // Non-zero adaLN gates, so every block changes the output.
    let mut rng = Rng::new(9);
    net.visit_mut(&mut |_, p| p.value.iter_mut().for_each(|v| *v += 0.05 * rng.normal() as f32));
    for batch in [19, 3] {
        let x = randn(&[batch, 4, 16, 16], &mut rng);
        let t: Vec<f32> = (0..batch).map(|i| (i * 111 % 1000) as f32).collect();
        let (trained, _) = net.forward(&x, &t, None).unwrap();
        assert_ne!(
            plain.infer(&x, &t, None).unwrap(),
            trained,
            "the blocks reach the output"
        );
        assert_eq!(net.infer(&x, &t, None).unwrap(), trained, "{batch} items");
    }
}

#[test]
fn unet_inference_is_bit_identical_to_the_training_forward() {
    // Inference fuses each GroupNorm + SiLU into the convolution that reads it (Winograd
    // path) or maps the input first (im2col path); training stores the activations. Both
    // must give the same bits: 2-d with 3 items (im2col at 8x8) and 4 items (Winograd
    // tasks of whole items), and 1-d and 3-d networks (im2col).
    let mut rng = Rng::new(7);
    for (dims, size, batch) in [(2, 8, 3), (2, 8, 4), (1, 16, 2), (3, 4, 2)] {
        let net = unet_with(dims, size, 2);
        let mut shape = vec![batch, 2];
        shape.extend(std::iter::repeat_n(size, dims));
        let x = randn(&shape, &mut rng);
        let t: Vec<f32> = (0..batch).map(|i| 100.0 * i as f32 + 3.0).collect();
        let (trained, _) = net.forward(&x, &t, None).unwrap();
        assert_eq!(
            net.infer(&x, &t, None).unwrap(),
            trained,
            "{dims}-d, {batch} items"
        );
    }
}
