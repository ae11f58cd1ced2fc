//! DiffusionMBIR study: sparse-view / limited-angle CT and CS-MRI on the 3-D Shepp-Logan
//! phantom and the MNI template cube, FBP / zero-filled vs per-slice diffusion vs
//! diffusion + TV-z. Prints a markdown table (PSNR / SSIM per plane).
//!
//! `cargo run --release -p diffusion-medical3d --example mbir_study [-- quick]`

use std::time::Instant;

use diffusion_medical3d::*;
use ndarray::{Array3, s};

fn row(name: &str, rec: &Array3<f64>, truth: &Array3<f64>, secs: f64) {
    let m = three_planes(rec, truth, 1.0).unwrap();
    println!(
        "| {name} | {:.2} / {:.3} | {:.2} / {:.3} | {:.2} / {:.3} | {secs:.1} |",
        m[0][0], m[0][1], m[1][0], m[1][1], m[2][0], m[2][1]
    );
}

fn study(
    label: &str,
    truth: &Array3<f64>,
    prior: &KdeSlicePrior,
    normal: &dyn Fn(&Array3<f64>) -> Result<Array3<f64>>,
    atb: &Array3<f64>,
    baseline: (&str, Array3<f64>),
    cfg: &MbirConfig,
) {
    println!("\n**{label}**\n");
    println!("| method | axial PSNR / SSIM | coronal | sagittal | seconds |");
    println!("|---|---|---|---|---|");
    row(baseline.0, &baseline.1, truth, 0.0);
    for (name, rho) in [
        ("per-slice diffusion (no z-term)", 0.0),
        ("DiffusionMBIR (TV-z)", cfg.rho),
    ] {
        let t = Instant::now();
        let c = MbirConfig { rho, ..cfg.clone() };
        let rec = reconstruct(prior, normal, atb, &c, |_, _| {}).unwrap();
        row(name, &rec, truth, t.elapsed().as_secs_f64());
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let get = |k: &str, d: f64| {
        args.iter()
            .position(|a| a == k)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let which = args
        .iter()
        .find(|a| a.starts_with("only="))
        .cloned()
        .unwrap_or_default();
    let cfg = MbirConfig {
        steps: get("--steps", 50.0) as usize,
        rho: get("--rho", 1.0),
        lambda: get("--lambda", 0.05),
        cg_iters: get("--cg", 5.0) as usize,
        mu: 0.0,
        seed: 0,
    };
    let mri_cfg = MbirConfig {
        rho: get("--mri-rho", 0.1),
        lambda: get("--mri-lambda", 0.005),
        mu: get("--mri-mu", 0.0),
        ..cfg.clone()
    };
    let tau = get("--tau", 0.1);
    println!(
        "config: {cfg:?}, MRI rho {} lambda {}, tau {tau}",
        mri_cfg.rho, mri_cfg.lambda
    );
    let phantom = read_npy_volume(data_dir().join("shepp_logan3d_64_f32.npy"))
        .unwrap()
        .data
        .mapv(f64::from);
    let mni = read_npy_volume(data_dir().join("mni152_t1_64cube_u8.npy"))
        .unwrap()
        .data
        .mapv(|v| f64::from(v) / 255.0);
    // Phantom: prior from the even axial slices (the odd ones are unseen).
    let ph_prior = KdeSlicePrior::from_axial(&phantom, (0..64).step_by(2), tau).unwrap();
    // MNI: prior from axial slices 0..32, reconstruct slices 32..64 (unseen anatomy).
    let mni_prior = KdeSlicePrior::from_axial(&mni, 0..32, tau).unwrap();
    let mni_test = mni.slice(s![.., .., 32..]).to_owned();
    for (vname, truth, prior) in [
        ("Shepp-Logan 64^3", &phantom, &ph_prior),
        ("MNI cube, slices 32-63", &mni_test, &mni_prior),
    ] {
        if !which.is_empty() && !vname.starts_with(&which[5..]) {
            continue;
        }
        let ct_cases = [
            ("8-view CT", ParallelBeam::sparse_view(64, 8).unwrap()),
            ("4-view CT", ParallelBeam::sparse_view(64, 4).unwrap()),
            (
                "limited-angle CT (90 deg, 45 views)",
                ParallelBeam::limited_angle(64, 45, 90.0).unwrap(),
            ),
        ];
        let skip_ct = args.iter().any(|a| a == "--skip-ct");
        for (cname, g) in ct_cases.into_iter().filter(|_| !skip_ct) {
            let op = CtOperator::new(g);
            let sino = op.forward(truth).unwrap();
            let atb = op.adjoint(&sino).unwrap();
            let fbp = op.fbp(&sino).unwrap();
            let normal = |v: &Array3<f64>| op.adjoint(&op.forward(v)?);
            study(
                &format!("{vname}, {cname}"),
                truth,
                prior,
                &normal,
                &atb,
                ("FBP", fbp),
                &cfg,
            );
        }
        for (accel, centre) in [(4.0, 0.08), (8.0, 0.04)] {
            let op = MriOperator::new(KMask::cartesian(64, 64, accel, centre, 0).unwrap());
            let k = op.forward(truth).unwrap();
            let atb = op.adjoint(&k).unwrap();
            let normal = |v: &Array3<f64>| op.adjoint(&op.forward(v)?);
            study(
                &format!("{vname}, CS-MRI {accel}x"),
                truth,
                prior,
                &normal,
                &atb,
                ("zero-filled", atb.clone()),
                &mri_cfg,
            );
        }
    }
}
