//! Runs the `diffuse` binary as a user would.

use std::path::PathBuf;
use std::process::{Command, Output};

use diffusion_core::{Rng, Tensor};
use diffusion_testbed::{GaussianMixture, GmmDenoiser, GmmSpec};
use ndarray::{ArrayD, IxDyn};

fn spec_path() -> PathBuf {
    diffusion_testbed::fixtures::path("gmm/gmm2d_spec.json").unwrap()
}

fn diffuse(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_diffuse"))
        .args(args)
        .output()
        .expect("the binary runs")
}

fn noise(n: usize, seed: u64) -> ArrayD<f64> {
    let mut z = vec![0.0; n * 2];
    Rng::new(seed).fill_normal(&mut z);
    ArrayD::from_shape_vec(IxDyn(&[n, 2]), z).unwrap()
}

const CONFIG: &str = r#"{"timestep_spacing": "trailing", "clip_sample": false}"#;

#[test]
fn sample_reproduces_the_library() {
    let dir = tempfile::tempdir().unwrap();
    let (xt_path, out_path, cfg_path) = (
        dir.path().join("xt.npy"),
        dir.path().join("x0.npy"),
        dir.path().join("c.json"),
    );
    let x_t = noise(64, 3);
    diffusion_testbed::io::write_npy(&xt_path, &x_t).unwrap();
    std::fs::write(&cfg_path, CONFIG).unwrap();
    let spec = spec_path();
    let o = diffuse(&[
        "sample",
        "--gmm",
        spec.to_str().unwrap(),
        "--schedule",
        "scaled_linear",
        "--scheduler",
        "ddim",
        "--config",
        cfg_path.to_str().unwrap(),
        "--steps",
        "10",
        "--noise",
        xt_path.to_str().unwrap(),
        "--out",
        out_path.to_str().unwrap(),
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let ours: ArrayD<f64> = diffusion_testbed::io::read_npy(&out_path).unwrap();

    // The same run through the library.
    let gmm_spec = GmmSpec::from_file(&spec).unwrap();
    let model = GmmDenoiser::epsilon(GaussianMixture::from_spec(&gmm_spec).unwrap());
    let s = &gmm_spec.schedules["scaled_linear"];
    let mut config: serde_json::Value = serde_json::from_str(CONFIG).unwrap();
    for (k, v) in [
        ("beta_schedule", serde_json::json!(s.beta_schedule)),
        ("beta_start", serde_json::json!(s.beta_start)),
        ("beta_end", serde_json::json!(s.beta_end)),
        ("num_train_timesteps", serde_json::json!(s.num_train_timesteps)),
    ] {
        config[k] = v;
    }
    let mut scheduler = diffusion_solvers::by_name::<ArrayD<f64>>("DDIMScheduler", &config).unwrap();
    scheduler.set_timesteps(10).unwrap();
    let lib = diffusion_solvers::sample_all(&mut scheduler, &model, &x_t, None).unwrap();
    assert_eq!(ours.shape(), lib.shape());
    let mut diff = lib.clone();
    diff.lincomb(1.0, &[(-1.0, &ours)], None).unwrap();
    assert!(diff.sum_squares() == 0.0, "the binary and the library differ");
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(json["nfe"], 10);
}

#[test]
fn float32_noise_gives_float32_samples() {
    let dir = tempfile::tempdir().unwrap();
    let (xt, out) = (dir.path().join("xt.npy"), dir.path().join("x0.npy"));
    diffusion_testbed::io::write_npy(&xt, &noise(16, 1).mapv(|v| v as f32)).unwrap();
    let spec = spec_path();
    let o = diffuse(&[
        "sample",
        "--gmm",
        spec.to_str().unwrap(),
        "--schedule",
        "linear",
        "--scheduler",
        "euler",
        "--steps",
        "8",
        "--noise",
        xt.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let x0: ArrayD<f32> = diffusion_testbed::io::read_npy(&out).unwrap();
    assert_eq!(x0.shape(), &[16, 2]);
}

/// Every malformed input exits non-zero with one clear line and no panic.
#[test]
fn bad_inputs_fail_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    diffusion_testbed::io::write_npy(p("i64.npy"), &ArrayD::<i64>::zeros(IxDyn(&[4, 2]))).unwrap();
    diffusion_testbed::io::write_npy(
        p("3d.npy"),
        &noise(4, 0).into_shape_with_order(IxDyn(&[4, 2, 1])).unwrap(),
    )
    .unwrap();
    diffusion_testbed::io::write_npy(p("good.npy"), &noise(4, 0)).unwrap();
    let bytes = std::fs::read(p("good.npy")).unwrap();
    std::fs::write(p("truncated.npy"), &bytes[..bytes.len() - 5]).unwrap();
    std::fs::write(
        p("unknown_key.json"),
        r#"{"clip_sample": false, "no_such_key": 1}"#,
    )
    .unwrap();
    std::fs::write(p("bad_value.json"), r#"{"beta_start": 0.5, "beta_end": 0.1}"#).unwrap();
    std::fs::write(p("not_json.json"), "{").unwrap();
    let spec = spec_path();
    let spec = spec.to_str().unwrap();
    let base = ["sample", "--gmm", spec, "--schedule", "linear"];
    let cases: Vec<(&str, Vec<String>)> = vec![
        (
            "wrong dtype",
            vec![
                "--scheduler".into(),
                "ddim".into(),
                "--noise".into(),
                p("i64.npy"),
            ],
        ),
        (
            "wrong shape",
            vec!["--scheduler".into(), "ddim".into(), "--noise".into(), p("3d.npy")],
        ),
        (
            "truncated",
            vec![
                "--scheduler".into(),
                "ddim".into(),
                "--noise".into(),
                p("truncated.npy"),
            ],
        ),
        (
            "missing file",
            vec![
                "--scheduler".into(),
                "ddim".into(),
                "--noise".into(),
                p("absent.npy"),
            ],
        ),
        ("unknown scheduler", vec!["--scheduler".into(), "nonsense".into()]),
        (
            "unknown key",
            vec![
                "--scheduler".into(),
                "ddim".into(),
                "--config".into(),
                p("unknown_key.json"),
            ],
        ),
        (
            "invalid value",
            vec![
                "--scheduler".into(),
                "ddim".into(),
                "--config".into(),
                p("bad_value.json"),
            ],
        ),
        (
            "not json",
            vec![
                "--scheduler".into(),
                "ddim".into(),
                "--config".into(),
                p("not_json.json"),
            ],
        ),
        (
            "zero steps",
            vec!["--scheduler".into(), "ddim".into(), "--steps".into(), "0".into()],
        ),
    ];
    for (what, extra) in cases {
        let mut args: Vec<&str> = base.to_vec();
        args.extend(extra.iter().map(String::as_str));
        let o = diffuse(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{what}: should fail");
        assert!(!err.contains("panicked"), "{what}: panicked: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{what}: not one line: {err}");
        assert!(err.starts_with("error: "), "{what}: {err}");
        eprintln!("{what}: {}", err.trim());
    }
    let o = diffuse(&["sample", "--gmm", &p("absent.json"), "--scheduler", "ddim"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("absent.json"));
}

#[test]
fn eval_scores_two_sets() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.npy"), dir.path().join("b.npy"));
    diffusion_testbed::io::write_npy(&a, &noise(200, 1)).unwrap();
    diffusion_testbed::io::write_npy(&b, &noise(200, 1)).unwrap();
    let o = diffuse(&["eval", a.to_str().unwrap(), b.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    // Identical sets: every distance is zero.
    for key in ["rmse", "sliced_w2", "mmd2_rbf"] {
        assert!(json[key].as_f64().unwrap().abs() < 1e-12, "{key}: {}", json[key]);
    }
}

/// Train a few steps, resume to more, sample the checkpoint.
#[test]
fn train_resume_and_sample_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("model");
    let c = ckpt.to_str().unwrap();
    let train = |steps: &str, resume: bool| {
        let mut args = vec![
            "train",
            "--dataset",
            "moons",
            "--num-data",
            "512",
            "--steps",
            steps,
            "--batch",
            "64",
            "--hidden",
            "16",
            "--depth",
            "2",
            "--out",
            c,
            "--json",
        ];
        if resume {
            args.push("--resume");
        }
        diffuse(&args)
    };
    let o = train("20", false);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = train("40", true);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(json["steps"], 40);
    // Resuming with different options is refused.
    let o = diffuse(&[
        "train",
        "--dataset",
        "moons",
        "--steps",
        "60",
        "--hidden",
        "32",
        "--out",
        c,
        "--resume",
    ]);
    assert!(!o.status.success());
    let out = dir.path().join("x0.npy");
    let o = diffuse(&[
        "sample",
        "--checkpoint",
        c,
        "--scheduler",
        "dpm_solver_multistep",
        "--steps",
        "5",
        "--num-samples",
        "32",
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let x0: ArrayD<f64> = diffusion_testbed::io::read_npy(&out).unwrap();
    assert_eq!(x0.shape(), &[32, 2]);
    assert!(x0.iter().all(|v| v.is_finite()));
    let o = diffuse(&[
        "sample",
        "--checkpoint",
        dir.path().join("absent").to_str().unwrap(),
        "--scheduler",
        "ddim",
    ]);
    assert!(!o.status.success());
}

#[test]
fn edict_inversion_round_trips_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let (x0, xt) = (dir.path().join("x0.npy"), dir.path().join("xt.npy"));
    let spec = spec_path();
    let gmm = GaussianMixture::from_spec(&GmmSpec::from_file(&spec).unwrap()).unwrap();
    diffusion_testbed::io::write_npy(&x0, &gmm.sample(32, &mut Rng::new(4)).into_dyn()).unwrap();
    for (method, bound) in [("edict", 1e-10), ("ddim", 1.0)] {
        let o = diffuse(&[
            "invert",
            "--gmm",
            spec.to_str().unwrap(),
            "--schedule",
            "linear",
            "--method",
            method,
            "--steps",
            "20",
            "--input",
            x0.to_str().unwrap(),
            "--out",
            xt.to_str().unwrap(),
            "--json",
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let err = json["round_trip_relative_rms"].as_f64().unwrap();
        eprintln!("{method}: round-trip relative RMS {err:.3e}");
        assert!(err < bound, "{method}: {err}");
        let noise: ArrayD<f64> = diffusion_testbed::io::read_npy(&xt).unwrap();
        assert_eq!(noise.shape(), &[32, 2]);
    }
}

/// Train a tiny UNet on `shapes`, resume, sample the checkpoint as .npy and an image grid.
#[test]
fn train_a_unet_on_shapes_resume_and_sample_a_grid() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("unet");
    let c = ckpt.to_str().unwrap();
    let train = |steps: &str, resume: bool| {
        let mut args = vec![
            "train",
            "--dataset",
            "shapes:8",
            "--model",
            "unet",
            "--channels",
            "8",
            "--prediction",
            "v",
            "--num-data",
            "64",
            "--batch",
            "8",
            "--steps",
            steps,
            "--save-every",
            "4",
            "--out",
            c,
            "--json",
        ];
        if resume {
            args.push("--resume");
        }
        diffuse(&args)
    };
    let o = train("6", false);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = train("10", true);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(json["steps"], 10);
    assert_eq!(json["model"]["model"]["kind"], "unet");
    assert_eq!(json["model"]["prediction_type"], "v");
    // The checkpoint records the model and the objective for `sample` to rebuild.
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ckpt.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["model"], json["model"]);
    // Resuming as another prediction type is refused.
    let o = diffuse(&[
        "train",
        "--dataset",
        "shapes:8",
        "--model",
        "unet",
        "--channels",
        "8",
        "--steps",
        "20",
        "--out",
        c,
        "--resume",
    ]);
    assert!(!o.status.success());

    let (out, png) = (dir.path().join("x0.npy"), dir.path().join("grid.png"));
    let o = diffuse(&[
        "sample",
        "--checkpoint",
        c,
        "--scheduler",
        "dpm_solver_multistep",
        "--steps",
        "3",
        "--num-samples",
        "5",
        "--out",
        out.to_str().unwrap(),
        "--png",
        png.to_str().unwrap(),
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let x0: ArrayD<f64> = diffusion_testbed::io::read_npy(&out).unwrap();
    assert_eq!(x0.shape(), &[5, 1, 8, 8]);
    assert!(x0.iter().all(|v| v.is_finite()));
    // Five 8x8 tiles zoomed 8x with 2-pixel gaps: a 3x2 grid of 66-pixel cells.
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&png).unwrap()));
    let info = decoder.read_info().unwrap();
    assert_eq!((info.info().width, info.info().height), (3 * 66 + 2, 2 * 66 + 2));
}

/// A tiny DiT on colour shapes, sampled from its EMA weights.
#[test]
fn train_and_sample_a_dit() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("dit");
    let c = ckpt.to_str().unwrap();
    let o = diffuse(&[
        "train",
        "--dataset",
        "shapes_rgb:8",
        "--model",
        "dit",
        "--hidden",
        "16",
        "--depth",
        "1",
        "--prediction",
        "sample",
        "--num-data",
        "32",
        "--batch",
        "8",
        "--steps",
        "4",
        "--out",
        c,
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = dir.path().join("x0.npy");
    let o = diffuse(&[
        "sample",
        "--checkpoint",
        c,
        "--scheduler",
        "ddim",
        "--steps",
        "3",
        "--num-samples",
        "2",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let x0: ArrayD<f64> = diffusion_testbed::io::read_npy(&out).unwrap();
    assert_eq!(x0.shape(), &[2, 3, 8, 8]);
}

/// Data that does not fit the chosen model, unknown models: one line, non-zero exit.
#[test]
fn train_rejects_data_the_model_cannot_take() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    diffusion_testbed::io::write_npy(p("vectors.npy"), &noise(16, 0)).unwrap();
    diffusion_testbed::io::write_npy(p("images.npy"), &ArrayD::<f64>::zeros(IxDyn(&[4, 1, 8, 8]))).unwrap();
    diffusion_testbed::io::write_npy(p("oblong.npy"), &ArrayD::<f64>::zeros(IxDyn(&[4, 1, 8, 4]))).unwrap();
    let out = p("ckpt");
    let vectors = format!("npy:{}", p("vectors.npy"));
    let images = format!("npy:{}", p("images.npy"));
    let oblong = format!("npy:{}", p("oblong.npy"));
    let cases: Vec<(&str, Vec<&str>)> = vec![
        (
            "vectors for a unet",
            vec!["--dataset", &vectors, "--model", "unet"],
        ),
        ("vectors for a dit", vec!["--dataset", &vectors, "--model", "dit"]),
        ("images for the mlp", vec!["--dataset", &images, "--model", "mlp"]),
        ("non-square images", vec!["--dataset", &oblong, "--model", "unet"]),
        (
            "unknown model",
            vec!["--dataset", "shapes:8", "--model", "resnet"],
        ),
        (
            "unknown prediction",
            vec!["--dataset", "shapes:8", "--prediction", "score"],
        ),
        (
            "bad shapes size",
            vec!["--dataset", "shapes:x", "--model", "unet"],
        ),
        (
            "patch not dividing",
            vec!["--dataset", "shapes:8", "--model", "dit", "--patch", "3"],
        ),
    ];
    for (what, extra) in cases {
        let mut args = vec![
            "train",
            "--steps",
            "2",
            "--batch",
            "2",
            "--num-data",
            "4",
            "--out",
            &out,
        ];
        args.extend(extra);
        let o = diffuse(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{what}: should fail");
        assert!(!err.contains("panicked"), "{what}: panicked: {err}");
        assert!(err.starts_with("error"), "{what}: {err}");
        eprintln!("{what}: {}", err.trim());
    }
}
