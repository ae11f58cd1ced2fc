//! Checkpoints: bit-identical resume, crash safety, PyTorch-format weights, bad files.

mod common;

use std::fs;
use std::path::Path;

use common::{Mlp, eight_gaussians, linear_alphas_cumprod, scratch_dir};
use diffusion_core::Rng;
use diffusion_train::checkpoint::read_model_config;
use diffusion_train::{
    Dataset, EmaConfig, LevelSampler, LrSchedule, TensorFile, TrainConfig, TrainError, Trainer, load_weights,
    save_weights,
};
use ndarray::ArrayD;
use serde_json::json;

fn config() -> TrainConfig {
    let mut c = TrainConfig::new(32, 7);
    c.lr = LrSchedule {
        peak: 3e-3,
        warmup_steps: 4,
        total_steps: 20,
        min_lr: 1e-4,
    };
    c.clip_grad_norm = Some(1.0);
    c.ema = Some(EmaConfig {
        decay: 0.99,
        warmup: true,
    });
    c
}

fn sampler() -> LevelSampler {
    LevelSampler::discrete(linear_alphas_cumprod(1000)).unwrap()
}

fn data() -> ArrayD<f32> {
    eight_gaussians(256, 2.0, 0.1, &mut Rng::new(1)).mapv(|v| v as f32)
}

fn bits(values: &[f64]) -> Vec<u64> {
    values.iter().map(|v| v.to_bits()).collect()
}

fn ema_bits(t: &Trainer<f32, Mlp<f32>>) -> Vec<u32> {
    t.ema()
        .unwrap()
        .weights()
        .iter()
        .flat_map(|(_, a)| a.iter().map(|v| v.to_bits()).collect::<Vec<_>>())
        .collect()
}

fn moment_bits(t: &Trainer<f32, Mlp<f32>>) -> Vec<u32> {
    t.optimizer()
        .moments()
        .iter()
        .flat_map(|m| {
            m.exp_avg
                .iter()
                .chain(m.exp_avg_sq.iter())
                .map(|v| v.to_bits())
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn resume_continues_bit_identically() {
    const N: u64 = 10;
    let data = data();
    let ds = Dataset::new(&data).unwrap();
    let mut straight = Trainer::new(Mlp::<f32>::new(2, 32, 2, 16, 3), sampler(), config()).unwrap();
    let mut losses = Vec::new();
    straight.train(&ds, 2 * N, |s| losses.push(s.loss)).unwrap();

    let dir = scratch_dir("resume").join("ckpt");
    let mut first = Trainer::new(Mlp::<f32>::new(2, 32, 2, 16, 3), sampler(), config()).unwrap();
    first.train(&ds, N, |_| {}).unwrap();
    first.save(&dir, &json!({"dim": 2, "hidden": 32})).unwrap();
    for f in [
        "model.safetensors",
        "optimizer.safetensors",
        "ema.safetensors",
        "config.json",
        "trainer.json",
    ] {
        assert!(dir.join(f).is_file(), "{f} missing");
    }
    assert_eq!(read_model_config(&dir).unwrap()["hidden"], 32);
    // A differently initialised model: every weight must come from the checkpoint.
    let mut resumed = Trainer::resume(&dir, Mlp::<f32>::new(2, 32, 2, 16, 99), sampler()).unwrap();
    assert_eq!(resumed.steps_done(), N);
    assert_eq!(resumed.rng(), first.rng());
    let mut resumed_losses = Vec::new();
    resumed.train(&ds, N, |s| resumed_losses.push(s.loss)).unwrap();

    assert_eq!(bits(&resumed_losses), bits(&losses[N as usize..]));
    assert_eq!(
        bits(&resumed.model().flat_values()),
        bits(&straight.model().flat_values()),
        "weights differ"
    );
    assert_eq!(ema_bits(&resumed), ema_bits(&straight), "EMA differs");
    assert_eq!(
        moment_bits(&resumed),
        moment_bits(&straight),
        "Adam moments differ"
    );
    assert_eq!(resumed.optimizer().step_count(), 2 * N);
    assert_eq!(resumed.ema().unwrap().updates(), 2 * N);
    assert_eq!(resumed.rng(), straight.rng());
}

#[test]
fn save_replaces_atomically_and_recovers_from_a_crash_between_renames() {
    let root = scratch_dir("atomic");
    let dir = root.join("ckpt");
    let data = data();
    let ds = Dataset::new(&data).unwrap();
    let mut t = Trainer::new(Mlp::<f32>::new(2, 16, 1, 8, 3), sampler(), config()).unwrap();
    t.train(&ds, 2, |_| {}).unwrap();
    t.save(&dir, &json!({})).unwrap();
    t.train(&ds, 3, |_| {}).unwrap();
    t.save(&dir, &json!({})).unwrap();
    // Only the checkpoint is left: no temp or .prev directories.
    let names: Vec<String> = fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["ckpt".to_string()]);
    let resumed = Trainer::resume(&dir, Mlp::<f32>::new(2, 16, 1, 8, 0), sampler()).unwrap();
    assert_eq!(resumed.steps_done(), 5);

    // A crash after "ckpt -> ckpt.prev" but before "tmp -> ckpt", with a half-written temp dir.
    fs::rename(&dir, root.join("ckpt.prev")).unwrap();
    fs::create_dir(root.join(".ckpt.tmp-1-0")).unwrap();
    fs::write(root.join(".ckpt.tmp-1-0/model.safetensors"), b"partial").unwrap();
    let recovered = Trainer::resume(&dir, Mlp::<f32>::new(2, 16, 1, 8, 0), sampler()).unwrap();
    assert_eq!(recovered.steps_done(), 5);
    assert_eq!(recovered.model().flat_values(), t.model().flat_values());
    // The next save restores the normal layout.
    recovered.save(&dir, &json!({})).unwrap();
    assert!(dir.is_dir() && !root.join("ckpt.prev").exists());
}

#[test]
fn weights_round_trip_in_both_precisions() {
    let root = scratch_dir("roundtrip");
    let m = Mlp::<f64>::new(2, 8, 1, 4, 5);
    save_weights(&m, root.join("w64.safetensors")).unwrap();
    let mut back = Mlp::<f64>::new(2, 8, 1, 4, 6);
    load_weights(&mut back, root.join("w64.safetensors"), true).unwrap();
    assert_eq!(bits(&back.flat_values()), bits(&m.flat_values()));
    // f64 file into an f32 model rounds each value once.
    let mut m32 = Mlp::<f32>::new(2, 8, 1, 4, 6);
    load_weights(&mut m32, root.join("w64.safetensors"), true).unwrap();
    let want: Vec<f64> = m.flat_values().iter().map(|&v| f64::from(v as f32)).collect();
    assert_eq!(m32.flat_values(), want);
}

/// A safetensors file written byte by byte from the format spec (8-byte little-endian header
/// length, JSON header, raw little-endian data), independent of the `safetensors` crate.
fn handmade(tensors: &[(&str, &str, Vec<usize>, Vec<u8>)]) -> Vec<u8> {
    let mut header = String::from("{");
    let mut data = Vec::new();
    for (i, (name, dtype, shape, bytes)) in tensors.iter().enumerate() {
        let start = data.len();
        data.extend_from_slice(bytes);
        if i > 0 {
            header.push(',');
        }
        header.push_str(&format!(
            "\"{name}\":{{\"dtype\":\"{dtype}\",\"shape\":{shape:?},\"data_offsets\":[{start},{}]}}",
            data.len()
        ));
    }
    header.push('}');
    while header.len() % 8 != 0 {
        header.push(' ');
    }
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&data);
    out
}

#[test]
fn handmade_pytorch_style_file_with_half_precisions_loads() {
    let root = scratch_dir("handmade");
    let path = root.join("h.safetensors");
    // f16 1.5 = 0x3E00, -2.0 = 0xC000; bf16 0.5 = 0x3F00, 3.0 = 0x4040; f32 0.25.
    let file = handmade(&[
        ("a16", "F16", vec![2], vec![0x00, 0x3E, 0x00, 0xC0]),
        ("b16", "BF16", vec![1, 2], vec![0x00, 0x3F, 0x40, 0x40]),
        ("c32", "F32", vec![], 0.25f32.to_le_bytes().to_vec()),
        ("i64", "I64", vec![1], 7i64.to_le_bytes().to_vec()),
    ]);
    fs::write(&path, &file).unwrap();
    let f = TensorFile::open(&path).unwrap();
    assert_eq!(
        f.get::<f64>("a16", &[2]).unwrap().into_raw_vec_and_offset().0,
        vec![1.5, -2.0]
    );
    assert_eq!(
        f.get::<f32>("b16", &[1, 2]).unwrap().into_raw_vec_and_offset().0,
        vec![0.5, 3.0]
    );
    assert_eq!(
        f.get::<f64>("c32", &[]).unwrap().into_raw_vec_and_offset().0,
        vec![0.25]
    );
    let err = f.get::<f64>("i64", &[1]).unwrap_err();
    assert!(
        matches!(err, TrainError::TensorDtype { .. }) && err.to_string().contains("i64"),
        "{err}"
    );
}

fn expect_message(err: TrainError, parts: &[&str]) {
    let msg = err.to_string();
    for p in parts {
        assert!(msg.contains(p), "`{msg}` should mention {p}");
    }
}

#[test]
fn missing_misshaped_extra_and_truncated_tensors_are_clear_errors() {
    let root = scratch_dir("bad");
    let path = root.join("w.safetensors");
    save_weights(&Mlp::<f32>::new(2, 8, 1, 4, 5), &path).unwrap();
    let before = Mlp::<f32>::new(2, 16, 1, 4, 1);

    // Wider hidden layer: the first tensor's shape differs; both shapes are named.
    let mut wide = before.clone();
    let err = load_weights(&mut wide, &path, true).unwrap_err();
    assert!(matches!(err, TrainError::TensorShape { .. }));
    expect_message(err, &["net.0.weight", "[8, 6]", "[16, 6]"]);
    assert_eq!(
        wide.flat_values(),
        before.flat_values(),
        "a failed load changes nothing"
    );

    // Deeper model (hidden width = output width, so shared layers agree): its extra
    // layer is missing from the file.
    let narrow = root.join("narrow.safetensors");
    save_weights(&Mlp::<f32>::new(2, 2, 1, 4, 5), &narrow).unwrap();
    let mut deep = Mlp::<f32>::new(2, 2, 2, 4, 1);
    let err = load_weights(&mut deep, &narrow, true).unwrap_err();
    assert!(matches!(err, TrainError::MissingTensor { .. }));
    expect_message(err, &["net.4.weight", "narrow.safetensors"]);

    // Shallower model: strict loading rejects the file's extra tensors, non-strict accepts.
    let mut shallow = Mlp::<f32>::new(2, 8, 0, 4, 1);
    shallow.layers[0].1 = diffusion_train::Param::new(ArrayD::zeros(ndarray::IxDyn(&[8, 6])));
    shallow.layers[0].3 = diffusion_train::Param::new(ArrayD::zeros(ndarray::IxDyn(&[8])));
    let err = load_weights(&mut shallow, &path, true).unwrap_err();
    assert!(matches!(err, TrainError::UnexpectedTensors { .. }));
    expect_message(err, &["net.2.weight", "net.2.bias"]);
    load_weights(&mut shallow, &path, false).unwrap();

    // Truncated data and truncated header.
    let bytes = fs::read(&path).unwrap();
    for cut in [bytes.len() - 3, bytes.len() / 2, 20, 5, 0] {
        fs::write(&path, &bytes[..cut]).unwrap();
        let err = load_weights(&mut Mlp::<f32>::new(2, 8, 1, 4, 5), &path, true).unwrap_err();
        assert!(matches!(err, TrainError::Corrupt { .. }), "cut {cut}: {err}");
        expect_message(err, &["w.safetensors", "truncated"]);
    }
    // Not there at all.
    let err = load_weights(&mut Mlp::<f32>::new(2, 8, 1, 4, 5), root.join("nope"), true).unwrap_err();
    assert!(matches!(err, TrainError::Io { .. }));
}

#[test]
fn broken_checkpoints_are_errors() {
    let root = scratch_dir("broken");
    let dir = root.join("ckpt");
    let data = data();
    let ds = Dataset::new(&data).unwrap();
    let mut t = Trainer::new(Mlp::<f32>::new(2, 16, 1, 8, 3), sampler(), config()).unwrap();
    t.train(&ds, 1, |_| {}).unwrap();
    t.save(&dir, &json!({})).unwrap();
    let resume = |m| Trainer::resume(&dir, m, sampler());
    // Another architecture.
    assert!(matches!(
        resume(Mlp::<f32>::new(2, 32, 1, 8, 0)),
        Err(TrainError::TensorShape { .. })
    ));
    // Damaged JSON and optimizer state.
    let good = fs::read(dir.join("trainer.json")).unwrap();
    fs::write(dir.join("trainer.json"), &good[..good.len() / 2]).unwrap();
    assert!(matches!(
        resume(Mlp::<f32>::new(2, 16, 1, 8, 0)),
        Err(TrainError::Corrupt { .. })
    ));
    fs::write(dir.join("trainer.json"), &good).unwrap();
    let opt = fs::read(dir.join("optimizer.safetensors")).unwrap();
    fs::write(dir.join("optimizer.safetensors"), &opt[..opt.len() - 8]).unwrap();
    assert!(matches!(
        resume(Mlp::<f32>::new(2, 16, 1, 8, 0)),
        Err(TrainError::Corrupt { .. })
    ));
    fs::write(dir.join("optimizer.safetensors"), &opt).unwrap();
    fs::remove_file(dir.join("ema.safetensors")).unwrap();
    assert!(matches!(
        resume(Mlp::<f32>::new(2, 16, 1, 8, 0)),
        Err(TrainError::Io { .. })
    ));
    assert!(matches!(
        Trainer::resume(
            Path::new("/nonexistent/ckpt"),
            Mlp::<f32>::new(2, 16, 1, 8, 0),
            sampler()
        ),
        Err(TrainError::Io { .. })
    ));
}

#[test]
fn bad_training_inputs_are_errors() {
    let data = data();
    let model = || Mlp::<f32>::new(2, 8, 1, 4, 3);
    let mut c = config();
    c.batch_size = 0;
    assert!(matches!(
        Trainer::new(model(), sampler(), c),
        Err(TrainError::InvalidArgument { .. })
    ));
    let mut c = config();
    c.clip_grad_norm = Some(-1.0);
    assert!(Trainer::new(model(), sampler(), c).is_err());
    let mut c = config();
    c.lr.min_lr = 1.0;
    assert!(Trainer::new(model(), sampler(), c).is_err());

    // Data of the wrong sample shape, NaN data, wrong label count, a 1-D array.
    let mut t = Trainer::new(model(), sampler(), config()).unwrap();
    let three = ArrayD::<f32>::zeros(ndarray::IxDyn(&[10, 3]));
    let err = t.step(&Dataset::new(&three).unwrap()).unwrap_err();
    assert!(matches!(err, TrainError::ShapeMismatch { .. }), "{err}");
    let mut nan = data.clone();
    nan[[3, 1]] = f32::NAN;
    assert!(Dataset::new(&nan).is_err());
    assert!(Dataset::new(&data).unwrap().with_labels(&[0, 1]).is_err());
    assert!(Dataset::new(&ArrayD::<f32>::zeros(ndarray::IxDyn(&[5]))).is_err());
    assert!(Dataset::new(&ArrayD::<f32>::zeros(ndarray::IxDyn(&[0, 2]))).is_err());
    // Diverging training: a huge learning rate makes the loss non-finite, reported as such.
    let mut c = TrainConfig::new(64, 1);
    c.lr = LrSchedule::constant(1e30);
    c.optimizer.weight_decay = 0.0;
    let mut t = Trainer::new(Mlp::<f32>::new(2, 8, 1, 4, 3), sampler(), c).unwrap();
    let ds = Dataset::new(&data).unwrap();
    let err = (0..5).find_map(|_| t.step(&ds).err()).expect("diverges");
    assert!(matches!(err, TrainError::NonFinite { .. }), "{err}");
}

#[test]
fn rng_state_restores_exactly() {
    use diffusion_train::checkpoint::RngState;
    let mut rng = Rng::with_stream(5, 3);
    let mut z = vec![0.0; 1001];
    rng.fill_normal(&mut z);
    let _ = rng.uniform();
    let mut back = RngState::of(&rng).restore().unwrap();
    assert_eq!(back, rng);
    assert_eq!(back.normal().to_bits(), rng.normal().to_bits());
}
