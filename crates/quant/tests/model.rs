//! The quantized MLP as a denoiser: equal to `diffusion-nn`'s MLP when unquantized,
//! calibrated from its own DDIM trajectories, sampled by a diffusers scheduler, saved and
//! loaded as safetensors.

use std::collections::HashMap;

use diffusion_core::{Denoiser, Parameterization, Rng};
use diffusion_nn::NetworkDenoiser;
use diffusion_nn::models::mlp::{MlpConfig, MlpDenoiser};
use diffusion_quant::calib::{self, StepSelection};
use diffusion_quant::kernel::Backend;
use diffusion_quant::quantizer::{Granularity, IntFormat, Quantizer, Scheme};
use diffusion_quant::{ActMode, ActRecipe, Exec, LowRankKind, QuantError, QuantMlp, Recipe, io};
use diffusion_solvers::{Ddim, DdimConfig, Scheduler, sample_all};
use ndarray::{ArrayD, IxDyn};
use safetensors::SafeTensors;
use safetensors::tensor::TensorView;

const DIM: usize = 64;

type RecipeFn = dyn Fn(usize, usize) -> Recipe;

fn mlp() -> MlpDenoiser<f32> {
    let cfg = MlpConfig {
        dim: DIM,
        hidden: 128,
        depth: 2,
        temb: 64,
    };
    MlpDenoiser::new(cfg, &mut Rng::new(0)).unwrap()
}

fn ddim(steps: usize) -> Ddim {
    let mut s = Ddim::new(Ddim::schedule_defaults(), DdimConfig::default()).unwrap();
    Scheduler::<ArrayD<f32>>::set_timesteps(&mut s, steps).unwrap();
    s
}

fn int_q(bits: u32, sym: bool, g: Granularity) -> Quantizer {
    Quantizer::new(Scheme::Int(IntFormat::new(bits, sym).unwrap()), g)
}

fn w8a8(_: usize, _: usize) -> Recipe {
    Recipe {
        weight: Some(int_q(8, true, Granularity::PerRow)),
        act: Some(ActRecipe {
            quantizer: int_q(8, false, Granularity::PerTensor),
            mode: ActMode::Static,
        }),
        ..Recipe::default()
    }
}

fn w4a4_svd(_: usize, _: usize) -> Recipe {
    Recipe {
        weight: Some(int_q(4, true, Granularity::PerGroup(64))),
        act: Some(ActRecipe {
            quantizer: int_q(4, true, Granularity::PerRow),
            mode: ActMode::Dynamic,
        }),
        smooth_alpha: Some(0.5),
        low_rank: LowRankKind::Svd(16),
    }
}

fn noise(n: usize, seed: u64) -> ArrayD<f32> {
    let mut rng = Rng::new(seed);
    ArrayD::from_shape_vec(
        IxDyn(&[n, DIM]),
        (0..n * DIM).map(|_| rng.normal() as f32).collect(),
    )
    .unwrap()
}

fn trajectory_calibration(model: &QuantMlp) -> calib::Calibration {
    calib::from_trajectories(
        model,
        &mut ddim(10),
        &[DIM],
        8,
        StepSelection::Uniform { count: 40 },
        9,
    )
    .unwrap()
}

#[test]
fn unquantized_copy_reproduces_the_network() {
    let net = mlp();
    let reference = NetworkDenoiser::new(net.clone(), Parameterization::Epsilon);
    let q = QuantMlp::float(&net, Parameterization::Epsilon).unwrap();
    let x = noise(5, 1);
    let s = ddim(10);
    for t in [901.0, 1.0] {
        let level = Scheduler::<ArrayD<f32>>::noise_level(&s, t).unwrap();
        let a = reference.predict(&x, level).unwrap();
        let b = q.predict(&x, level).unwrap();
        let d = a.iter().zip(&b).map(|(u, v)| (u - v).abs()).fold(0f32, f32::max);
        let m = a.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(d <= 2e-6 * m.max(1.0), "max difference {d} (scale {m})");
    }
}

#[test]
fn step_selection_follows_its_distribution() {
    let mut rng = Rng::new(3);
    let u = StepSelection::Uniform { count: 5 }.select(10, &mut rng).unwrap();
    assert_eq!(u, [0, 2, 4, 6, 8]);
    let n = 101;
    let picks = StepSelection::Normal {
        count: 20_000,
        mean: 0.6,
        std: 0.15,
    }
    .select(n, &mut rng)
    .unwrap();
    let mean = picks.iter().map(|&p| p as f64).sum::<f64>() / picks.len() as f64;
    let var = picks.iter().map(|&p| (p as f64 - mean).powi(2)).sum::<f64>() / picks.len() as f64;
    // N(60, 15^2) rounded: mean 60, variance 225 + 1/12; tolerances are ~5 standard errors.
    assert!((mean - 60.0).abs() < 0.6, "mean {mean}");
    assert!((var.sqrt() - 15.0).abs() < 0.4, "std {}", var.sqrt());
    assert!(picks.iter().all(|&p| p < n));
    assert!(matches!(
        StepSelection::Uniform { count: 0 }.select(10, &mut rng),
        Err(QuantError::EmptyCalibration(_))
    ));
    assert!(
        StepSelection::Normal {
            count: 3,
            mean: 0.5,
            std: 0.0
        }
        .select(10, &mut rng)
        .is_err()
    );
}

#[test]
fn trajectory_calibration_keeps_the_models_own_inputs() {
    let float = QuantMlp::float(&mlp(), Parameterization::Epsilon).unwrap();
    let c = trajectory_calibration(&float);
    assert_eq!(c.len(), 40);
    assert_eq!(c.batches.len(), 10, "40 uniform points over 10 calls");
    let ts: Vec<f64> = Scheduler::<ArrayD<f32>>::timesteps(&ddim(10)).to_vec();
    for (b, t) in c.batches.iter().zip(&ts) {
        assert_eq!(b.level.timestep, *t);
        assert_eq!(b.rows(), 4);
    }
    // The first call sees the seeded noise itself (DDIM's initial sigma is 1): point 0 is
    // trajectory 0's noise, drawn from the seed's stream.
    let mut rng = Rng::new(9);
    let first: Vec<f32> = (0..DIM).map(|_| rng.normal() as f32).collect();
    assert_eq!(&c.batches[0].x[..DIM], &first[..]);
    assert!(matches!(
        calib::from_trajectories(
            &float,
            &mut ddim(10),
            &[DIM],
            0,
            StepSelection::Uniform { count: 4 },
            1
        ),
        Err(QuantError::EmptyCalibration(_))
    ));
    assert!(matches!(
        float.layer_inputs(&calib::Calibration::default()),
        Err(QuantError::EmptyCalibration(_))
    ));
}

#[test]
fn quantized_models_sample_with_a_diffusers_scheduler() {
    let net = mlp();
    let float = QuantMlp::float(&net, Parameterization::Epsilon).unwrap();
    let c = trajectory_calibration(&float);
    let x_t = noise(16, 5);
    let reference = sample_all(&mut ddim(10), &float, &x_t, None).unwrap();
    let scale = reference.iter().map(|v| v * v).sum::<f32>().sqrt();
    for (name, recipe, bound) in [
        ("W8A8", w8a8 as fn(usize, usize) -> Recipe, 0.02),
        ("W4A4 smooth+svd", w4a4_svd, 0.2),
    ] {
        let q = QuantMlp::quantize(&net, Parameterization::Epsilon, Some(&c), recipe).unwrap();
        for exec in [Exec::Fake, Exec::Int(Backend::detect())] {
            let q = q.clone().with_exec(exec);
            let out = sample_all(&mut ddim(10), &q, &x_t, None).unwrap();
            let diff = out
                .iter()
                .zip(&reference)
                .map(|(a, b)| (a - b) * (a - b))
                .sum::<f32>()
                .sqrt()
                / scale;
            eprintln!("{name} {exec:?}: relative sample difference {diff:.4}");
            assert!(diff < bound, "{name} {exec:?}: {diff}");
        }
    }
}

#[test]
fn save_and_load_round_trip() {
    let net = mlp();
    let float = QuantMlp::float(&net, Parameterization::Epsilon).unwrap();
    let c = trajectory_calibration(&float);
    let dir = tempfile::tempdir().unwrap();
    let fp8 = |_: usize, _: usize| Recipe {
        weight: Some(Quantizer::new(
            Scheme::Float(diffusion_quant::fp::E4M3),
            Granularity::PerRow,
        )),
        act: Some(ActRecipe {
            quantizer: Quantizer::new(Scheme::Float(diffusion_quant::fp::E5M2), Granularity::PerTensor),
            mode: ActMode::Static,
        }),
        ..Recipe::default()
    };
    let w6 = |_: usize, _: usize| Recipe {
        weight: Some(int_q(6, false, Granularity::PerGroup(64))),
        low_rank: LowRankKind::Lorc(4),
        ..Recipe::default()
    };
    let recipes: [(&str, &RecipeFn); 5] = [
        ("w8a8", &w8a8),
        ("w4a4", &w4a4_svd),
        ("fp8", &fp8),
        ("w6", &w6),
        ("float", &|_, _| Recipe::default()),
    ];
    let x = noise(3, 2);
    for (name, recipe) in recipes {
        let q = QuantMlp::quantize(&net, Parameterization::Epsilon, Some(&c), recipe).unwrap();
        let path = dir.path().join(format!("{name}.safetensors"));
        io::save(&q, &path).unwrap();
        let back = io::load(&path).unwrap();
        assert_eq!(back, q, "{name}");
        assert_eq!(
            back.forward(x.as_slice().unwrap(), 3, 500.0).unwrap(),
            q.forward(x.as_slice().unwrap(), 3, 500.0).unwrap()
        );
    }
    // Storage: 4-bit codes take half a byte.
    let q4 = QuantMlp::quantize(&net, Parameterization::Epsilon, Some(&c), w4a4_svd).unwrap();
    let bytes = std::fs::read(dir.path().join("w4a4.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor("net.2.qweight").unwrap();
    assert_eq!(t.shape(), [128, 64]);
    assert!(
        q4.weight_bytes()
            < QuantMlp::float(&net, Parameterization::Epsilon)
                .unwrap()
                .weight_bytes()
    );
}

/// The file at `path` with `name` replaced by `f32` values `data` of shape `shape`.
fn rewrite(path: &std::path::Path, name: &str, shape: Vec<usize>, data: &[f32]) -> Vec<u8> {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
    let meta = header.metadata().clone();
    let repl: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    let mut views: HashMap<String, TensorView<'_>> = HashMap::new();
    for (n, t) in st.tensors() {
        if n == name {
            views.insert(
                n,
                TensorView::new(safetensors::Dtype::F32, shape.clone(), &repl).unwrap(),
            );
        } else {
            views.insert(n, t);
        }
    }
    safetensors::serialize(views, meta).unwrap()
}

#[test]
fn mismatched_scales_and_bad_files_are_clear_errors() {
    let net = mlp();
    let float = QuantMlp::float(&net, Parameterization::Epsilon).unwrap();
    let c = trajectory_calibration(&float);
    let q = QuantMlp::quantize(&net, Parameterization::Epsilon, Some(&c), w4a4_svd).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.safetensors");
    io::save(&q, &path).unwrap();
    // net.2 is [128, 128] in groups of 64: 256 scales; a file with 128 is refused.
    let bad = rewrite(&path, "net.2.wscale", vec![128, 1], &[0.1; 128]);
    match io::from_bytes(&bad) {
        Err(QuantError::ScaleMismatch {
            tensor,
            expected,
            found,
        }) => {
            assert_eq!((tensor.as_str(), expected, found), ("net.2.wscale", 256, 128));
        }
        other => panic!("expected a scale mismatch, got {other:?}"),
    }
    let bad = rewrite(&path, "net.0.smooth", vec![10], &[1.0; 10]);
    assert!(matches!(
        io::from_bytes(&bad),
        Err(QuantError::ScaleMismatch { .. })
    ));
    let bad = rewrite(&path, "net.0.lowrank_b", vec![128, 8], &[1.0; 1024]);
    assert!(matches!(
        io::from_bytes(&bad),
        Err(QuantError::ScaleMismatch { .. })
    ));
    let bad = rewrite(&path, "net.0.wscale", vec![128, 2], &[-1.0; 256]);
    assert!(matches!(io::from_bytes(&bad), Err(QuantError::Checkpoint(_))));
    let bytes = std::fs::read(&path).unwrap();
    assert!(matches!(
        io::from_bytes(&bytes[..bytes.len() - 10]),
        Err(QuantError::Checkpoint(_))
    ));
    assert!(matches!(
        io::load(dir.path().join("missing")),
        Err(QuantError::Io(_))
    ));
    // A plain weights file (no quantization metadata) is not a quantized model.
    let plain = safetensors::serialize(
        [(
            "w",
            TensorView::new(safetensors::Dtype::F32, vec![1], &[0u8; 4]).unwrap(),
        )],
        None,
    )
    .unwrap();
    assert!(matches!(io::from_bytes(&plain), Err(QuantError::Checkpoint(_))));
}

#[test]
fn presets_build_and_unknown_names_are_errors() {
    let net = mlp();
    let float = QuantMlp::float(&net, Parameterization::Epsilon).unwrap();
    let c = trajectory_calibration(&float);
    for name in diffusion_quant::PRESETS {
        let recipe = diffusion_quant::preset(name).unwrap();
        let q = QuantMlp::quantize(&net, Parameterization::Epsilon, Some(&c), |_, _| recipe).unwrap();
        assert!(
            q.weight_bytes() < float.weight_bytes() || name.ends_with("svd"),
            "{name}"
        );
    }
    assert_eq!(diffusion_quant::preset("w8a8").unwrap(), w8a8(0, 1));
    assert_eq!(
        diffusion_quant::preset("w4a4-svd").unwrap().low_rank,
        LowRankKind::Svd(32)
    );
    assert!(matches!(
        diffusion_quant::preset("w3a3"),
        Err(QuantError::Invalid { .. })
    ));
    // Static activations without calibration data: a typed error.
    assert!(matches!(
        QuantMlp::quantize(&net, Parameterization::Epsilon, None, |_, _| w8a8(0, 1)),
        Err(QuantError::EmptyCalibration(_))
    ));
}
