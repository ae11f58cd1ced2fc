//! Checkpoints: bit-identical resume, crash safety, PyTorch-format weights, bad files.

mod common;

use std::fs;
use std::path::Path;

use common::{Mlp, eight_gaussians, linear_alphas_cumprod, scratch_dir};
use diffusion_core::Rng;
use diffusion_nn::NnError;
use diffusion_nn::models::{Dit, DitConfig};
use diffusion_train::checkpoint::{
    WeightsSource, load_ema_weights, load_inference_weights, read_model_config,
};
use diffusion_train::{
    Dataset, EmaConfig, LevelSampler, LrSchedule, Parameters, TensorFile, TrainConfig, TrainError, Trainer,
    load_weights, save_weights,
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

    let scratch = scratch_dir("resume");
    let dir = scratch.path().join("ckpt");
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
    // Asking for the length the run already has (what `diffuse train --resume` does with the
    // same --steps) changes nothing.
    resumed.set_total_steps(2 * N).unwrap();
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
    let scratch = scratch_dir("atomic");
    let root = scratch.path().to_path_buf();
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
    let scratch = scratch_dir("roundtrip");
    let root = scratch.path().to_path_buf();
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
    let scratch = scratch_dir("handmade");
    let root = scratch.path().to_path_buf();
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
        matches!(err, NnError::TensorDtype { .. }) && err.to_string().contains("i64"),
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
    let scratch = scratch_dir("bad");
    let root = scratch.path().to_path_buf();
    let path = root.join("w.safetensors");
    save_weights(&Mlp::<f32>::new(2, 8, 1, 4, 5), &path).unwrap();
    let before = Mlp::<f32>::new(2, 16, 1, 4, 1);

    // Wider hidden layer: the first tensor's shape differs; both shapes are named.
    let mut wide = before.clone();
    let err = load_weights(&mut wide, &path, true).unwrap_err();
    assert!(matches!(err, TrainError::Network(NnError::TensorShape { .. })));
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
    assert!(matches!(err, TrainError::Network(NnError::MissingTensor { .. })));
    expect_message(err, &["net.4.weight", "narrow.safetensors"]);

    // Shallower model: strict loading rejects the file's extra tensors, non-strict accepts.
    let mut shallow = Mlp::<f32>::new(2, 8, 0, 4, 1);
    shallow.layers[0].1 = diffusion_train::Param::new(ArrayD::zeros(ndarray::IxDyn(&[8, 6])));
    shallow.layers[0].3 = diffusion_train::Param::new(ArrayD::zeros(ndarray::IxDyn(&[8])));
    let err = load_weights(&mut shallow, &path, true).unwrap_err();
    assert!(matches!(
        err,
        TrainError::Network(NnError::UnexpectedTensors { .. })
    ));
    expect_message(err, &["net.2.weight", "net.2.bias"]);
    load_weights(&mut shallow, &path, false).unwrap();

    // Truncated data and truncated header.
    let bytes = fs::read(&path).unwrap();
    for cut in [bytes.len() - 3, bytes.len() / 2, 20, 5, 0] {
        fs::write(&path, &bytes[..cut]).unwrap();
        let err = load_weights(&mut Mlp::<f32>::new(2, 8, 1, 4, 5), &path, true).unwrap_err();
        assert!(
            matches!(err, TrainError::Network(NnError::Safetensors { .. })),
            "cut {cut}: {err}"
        );
        expect_message(err, &["w.safetensors", "truncated"]);
    }
    // Not there at all.
    let err = load_weights(&mut Mlp::<f32>::new(2, 8, 1, 4, 5), root.join("nope"), true).unwrap_err();
    assert!(matches!(err, TrainError::Network(NnError::Io { .. })));
}

#[test]
fn broken_checkpoints_are_errors() {
    let scratch = scratch_dir("broken");
    let root = scratch.path().to_path_buf();
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
        Err(TrainError::Network(NnError::TensorShape { .. }))
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
        Err(TrainError::Network(NnError::Safetensors { .. }))
    ));
    fs::write(dir.join("optimizer.safetensors"), &opt).unwrap();
    fs::remove_file(dir.join("ema.safetensors")).unwrap();
    assert!(matches!(
        resume(Mlp::<f32>::new(2, 16, 1, 8, 0)),
        Err(TrainError::Network(NnError::Io { .. }))
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

// ---- EMA files are complete state dicts (parameters + buffers) --------------------------

/// A DiT small enough to train in milliseconds; it has a buffer, the positional table `pos`.
fn tiny_dit(seed: u64) -> Dit<f64> {
    let cfg = DitConfig {
        in_ch: 1,
        size: 4,
        patch: 2,
        hidden: 8,
        depth: 1,
        heads: 2,
        mlp_ratio: 2,
        freq_dim: 8,
        num_classes: 0,
    };
    Dit::new(cfg, &mut Rng::new(seed)).unwrap()
}

/// Tensors by name, flattened.
type Named = Vec<(String, Vec<f64>)>;

fn params_of<M: Parameters<f64>>(model: &M) -> Named {
    let mut out = Vec::new();
    model.visit(&mut |name, p| out.push((name.to_string(), p.value.iter().copied().collect())));
    out
}

fn buffers_of<M: Parameters<f64>>(model: &M) -> Named {
    let mut out = Vec::new();
    model.visit_buffers(&mut |name, b| out.push((name.to_string(), b.iter().copied().collect())));
    out
}

fn max_abs_diff(a: &Named, b: &Named) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .flat_map(|((na, va), (nb, vb))| {
            assert_eq!(na, nb);
            va.iter().zip(vb).map(|(x, y)| (x - y).abs())
        })
        .fold(0.0, f64::max)
}

/// Trains a tiny DiT `steps` steps with EMA (decay `DECAY`, no warm-up) and saves it to `dir`.
/// The positional table is changed from its default first, so that only a load that really
/// reads the buffer can reproduce it. Returns the trainer and the textbook EMA of the
/// parameter snapshots, `s <- d s + (1 - d) w`, computed here in f64.
const DECAY: f64 = 0.8;

fn train_dit_with_ema(dir: &Path, steps: u64) -> (Trainer<f64, Dit<f64>>, Named) {
    let mut model = tiny_dit(3);
    model.pos.mapv_inplace(|v| 0.5 * v + 0.25);
    let mut config = TrainConfig::new(8, 11);
    config.lr = LrSchedule::constant(1e-2);
    config.ema = Some(EmaConfig {
        decay: DECAY,
        warmup: false,
    });
    let mut rng = Rng::new(5);
    let mut x = vec![0.0; 16 * 16];
    rng.fill_normal(&mut x);
    let data = ArrayD::from_shape_vec(ndarray::IxDyn(&[16, 1, 4, 4]), x).unwrap();
    let mut t = Trainer::new(model, sampler(), config).unwrap();
    let mut oracle = params_of(t.model());
    for _ in 0..steps {
        t.step(&Dataset::new(&data).unwrap()).unwrap();
        for ((_, s), (_, w)) in oracle.iter_mut().zip(params_of(t.model())) {
            s.iter_mut()
                .zip(&w)
                .for_each(|(s, w)| *s = DECAY * *s + (1.0 - DECAY) * w);
        }
    }
    t.save(dir, &json!({"tiny": "dit"})).unwrap();
    (t, oracle)
}

#[test]
fn ema_file_is_a_complete_strictly_loadable_state_dict() {
    let scratch = scratch_dir("ema-complete");
    let dir = scratch.path().join("ckpt");
    let (trained, oracle) = train_dit_with_ema(&dir, 4);
    let ema_path = dir.join("ema.safetensors");
    // Same tensor names as model.safetensors.
    assert_eq!(
        TensorFile::open(&ema_path).unwrap().names(),
        TensorFile::open(dir.join("model.safetensors")).unwrap().names()
    );

    let mut fresh = tiny_dit(77);
    fresh.pos.fill(-9.0);
    load_weights(&mut fresh, &ema_path, true).unwrap();
    assert_eq!(buffers_of(&fresh), buffers_of(trained.model()), "buffers");
    let err = max_abs_diff(&params_of(&fresh), &oracle);
    assert!(
        err < 1e-12,
        "EMA parameters differ from the textbook average by {err:e}"
    );
    // The average is not the raw weights (the test would be vacuous otherwise).
    assert!(max_abs_diff(&params_of(&fresh), &params_of(trained.model())) > 1e-4);

    // The checkpoint-level loaders agree, and pick the EMA.
    let mut via_ckpt = tiny_dit(78);
    via_ckpt.pos.fill(-9.0);
    assert_eq!(
        load_inference_weights(&dir, &mut via_ckpt).unwrap(),
        WeightsSource::Ema
    );
    assert_eq!(params_of(&via_ckpt), params_of(&fresh));
    assert_eq!(buffers_of(&via_ckpt), buffers_of(&fresh));

    // Resuming takes the buffers from model.safetensors and the average from ema.safetensors.
    let resumed = Trainer::resume(&dir, tiny_dit(79), sampler()).unwrap();
    assert_eq!(buffers_of(resumed.model()), buffers_of(trained.model()));
    assert_eq!(resumed.ema().unwrap().weights(), trained.ema().unwrap().weights());
}

/// Rewrites the checkpoint in `dir` as the version-1 layout: an EMA file with parameters only.
fn make_version_1(dir: &Path, trained: &Trainer<f64, Dit<f64>>) {
    let refs: Vec<(String, &ArrayD<f64>)> = trained
        .ema()
        .unwrap()
        .weights()
        .iter()
        .map(|(n, a)| (n.clone(), a))
        .collect();
    fs::write(
        dir.join("ema.safetensors"),
        diffusion_train::io::encode(&refs, None).unwrap(),
    )
    .unwrap();
    set_format_version(dir, 1);
}

fn set_format_version(dir: &Path, version: u32) {
    let path = dir.join("trainer.json");
    let mut state: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    state["format_version"] = json!(version);
    fs::write(&path, serde_json::to_vec(&state).unwrap()).unwrap();
}

#[test]
fn version_1_checkpoints_with_parameter_only_ema_files_still_load() {
    let scratch = scratch_dir("ema-v1");
    let dir = scratch.path().join("ckpt");
    let (trained, oracle) = train_dit_with_ema(&dir, 3);
    make_version_1(&dir, &trained);

    // Loading the bare file strictly names the missing buffer.
    let mut fresh = tiny_dit(77);
    let err = load_weights(&mut fresh, dir.join("ema.safetensors"), true).unwrap_err();
    assert!(
        matches!(err, TrainError::Network(NnError::MissingTensor { .. })),
        "{err}"
    );
    expect_message(err, &["`pos`", "ema.safetensors"]);

    // The checkpoint loader falls back to model.safetensors for the buffers.
    fresh.pos.fill(-9.0);
    load_ema_weights(&dir, &mut fresh).unwrap();
    assert_eq!(buffers_of(&fresh), buffers_of(trained.model()));
    assert!(max_abs_diff(&params_of(&fresh), &oracle) < 1e-12);

    // Resuming works, and the next save writes the complete version-2 file.
    let resumed = Trainer::resume(&dir, tiny_dit(79), sampler()).unwrap();
    assert_eq!(resumed.ema().unwrap().weights(), trained.ema().unwrap().weights());
    resumed.save(&dir, &json!({})).unwrap();
    let mut again = tiny_dit(80);
    load_weights(&mut again, dir.join("ema.safetensors"), true).unwrap();
    assert_eq!(params_of(&again), params_of(&fresh));
    assert_eq!(buffers_of(&again), buffers_of(trained.model()));
}

#[test]
fn damaged_or_unknown_ema_checkpoints_are_errors() {
    let scratch = scratch_dir("ema-bad");
    let dir = scratch.path().join("ckpt");
    let (trained, _) = train_dit_with_ema(&dir, 1);
    // A version-2 checkpoint whose EMA file lacks the buffer is damaged: no fall back.
    make_version_1(&dir, &trained);
    set_format_version(&dir, 2);
    let mut fresh = tiny_dit(1);
    let before = params_of(&fresh);
    let err = load_ema_weights(&dir, &mut fresh).unwrap_err();
    assert!(
        matches!(err, TrainError::Network(NnError::MissingTensor { .. })),
        "{err}"
    );
    assert_eq!(params_of(&fresh), before, "a failed load changes nothing");
    // A version from the future.
    set_format_version(&dir, 3);
    let err = load_inference_weights(&dir, &mut fresh).unwrap_err();
    expect_message(err, &["format_version 3", "trainer.json"]);
    assert!(Trainer::resume(&dir, tiny_dit(1), sampler()).is_err());
    // trainer.json says the run kept an EMA, but the file is gone: an error, not the raw weights.
    set_format_version(&dir, 2);
    fs::remove_file(dir.join("ema.safetensors")).unwrap();
    assert!(matches!(
        load_inference_weights(&dir, &mut fresh),
        Err(TrainError::Network(NnError::Io { .. }))
    ));
}

#[test]
fn runs_without_ema_load_their_raw_weights() {
    let scratch = scratch_dir("no-ema");
    let dir = scratch.path().join("ckpt");
    let data = data();
    let mut c = config();
    c.ema = None;
    let mut t = Trainer::new(Mlp::<f32>::new(2, 8, 1, 4, 3), sampler(), c).unwrap();
    t.train(&Dataset::new(&data).unwrap(), 2, |_| {}).unwrap();
    t.save(&dir, &json!({})).unwrap();
    assert!(!dir.join("ema.safetensors").exists());
    let mut fresh = Mlp::<f32>::new(2, 8, 1, 4, 9);
    assert_eq!(
        load_inference_weights(&dir, &mut fresh).unwrap(),
        WeightsSource::Model
    );
    assert_eq!(bits(&fresh.flat_values()), bits(&t.model().flat_values()));
}

// ---- Extending the learning-rate schedule on resume -------------------------------------

/// diffusers' `get_cosine_schedule_with_warmup` shifted to end at `min`, written out here.
fn cosine_lr(k: u64, peak: f64, min: f64, warmup: u64, total: u64) -> f64 {
    if k < warmup {
        return peak * k as f64 / warmup as f64;
    }
    let progress = ((k - warmup) as f64 / (total - warmup) as f64).min(1.0);
    min + (peak - min) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
}

#[test]
fn resume_can_extend_the_schedule_to_more_steps() {
    const FIRST: u64 = 10;
    const TOTAL: u64 = 40;
    let data = data();
    let ds = Dataset::new(&data).unwrap();
    let scratch = scratch_dir("extend");
    let dir = scratch.path().join("ckpt");
    let mut first = Trainer::new(Mlp::<f32>::new(2, 16, 1, 8, 3), sampler(), config()).unwrap();
    first.train(&ds, FIRST, |_| {}).unwrap();
    first.save(&dir, &json!({})).unwrap();

    let mut resumed = Trainer::resume(&dir, Mlp::<f32>::new(2, 16, 1, 8, 0), sampler()).unwrap();
    assert_eq!(
        resumed.config().lr.total_steps,
        20,
        "resume alone keeps the saved length"
    );
    resumed.set_total_steps(TOTAL).unwrap();
    let mut lrs = Vec::new();
    let mut losses = Vec::new();
    resumed
        .train(&ds, TOTAL - FIRST, |s| {
            lrs.push(s.lr);
            losses.push(s.loss);
        })
        .unwrap();
    // Steps FIRST..TOTAL follow the cosine ending at TOTAL, not the saved one ending at 20.
    let lr = config().lr;
    for (k, got) in (FIRST..TOTAL).zip(&lrs) {
        let want = cosine_lr(k, lr.peak, lr.min_lr, lr.warmup_steps, TOTAL);
        assert!((got - want).abs() <= 1e-15 * lr.peak, "step {k}: {got} vs {want}");
    }
    assert!(
        lrs[15] > 2.0 * lr.min_lr,
        "the old schedule would sit at min_lr here"
    );

    // Extending in memory at the same step gives the same run: save/resume changes nothing.
    let mut straight = Trainer::new(Mlp::<f32>::new(2, 16, 1, 8, 3), sampler(), config()).unwrap();
    straight.train(&ds, FIRST, |_| {}).unwrap();
    straight.set_total_steps(TOTAL).unwrap();
    let mut straight_losses = Vec::new();
    straight
        .train(&ds, TOTAL - FIRST, |s| straight_losses.push(s.loss))
        .unwrap();
    assert_eq!(bits(&losses), bits(&straight_losses));
    assert_eq!(
        bits(&resumed.model().flat_values()),
        bits(&straight.model().flat_values())
    );

    // The new length is saved with the next checkpoint.
    resumed.save(&dir, &json!({})).unwrap();
    let again = Trainer::resume(&dir, Mlp::<f32>::new(2, 16, 1, 8, 0), sampler()).unwrap();
    assert_eq!(again.config().lr.total_steps, TOTAL);
}

#[test]
fn bad_schedule_lengths_are_errors() {
    let data = data();
    let ds = Dataset::new(&data).unwrap();
    let mut t = Trainer::new(Mlp::<f32>::new(2, 8, 1, 4, 3), sampler(), config()).unwrap();
    t.train(&ds, 3, |_| {}).unwrap();
    // Below the steps taken, and below the warm-up (4 steps): refused, schedule unchanged.
    for n in [2, 3] {
        let err = t.set_total_steps(n).unwrap_err();
        assert!(matches!(err, TrainError::InvalidArgument { .. }), "{err}");
        assert_eq!(t.config().lr.total_steps, 20);
    }
    t.set_total_steps(4).unwrap();
    assert_eq!(t.config().lr.total_steps, 4);
    // A schedule without decay stays constant.
    let mut c = config();
    c.lr = LrSchedule::constant(1e-3);
    let mut t = Trainer::new(Mlp::<f32>::new(2, 8, 1, 4, 3), sampler(), c).unwrap();
    t.set_total_steps(100).unwrap();
    assert_eq!(t.config().lr, LrSchedule::constant(1e-3));
}
