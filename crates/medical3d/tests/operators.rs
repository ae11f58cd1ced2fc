//! Adjoint (dot-product) tests, FFT round trips, FBP quality and shape errors.

use diffusion_core::Rng;
use diffusion_medical3d::*;
use ndarray::Array3;
use rustfft::num_complex::Complex;

fn random(shape: (usize, usize, usize), seed: u64) -> Array3<f64> {
    let mut rng = Rng::new(seed);
    let mut v = vec![0.0; shape.0 * shape.1 * shape.2];
    rng.fill_normal(&mut v);
    Array3::from_shape_vec(shape, v).unwrap()
}

fn dot(a: &Array3<f64>, b: &Array3<f64>) -> f64 {
    a.iter().zip(b.iter()).map(|(x, y)| x * y).sum()
}

#[test]
fn ct_projector_adjoint_dot_product() {
    let n = 24;
    for g in [
        ParallelBeam::sparse_view(n, 8).unwrap(),
        ParallelBeam::sparse_view(n, 60).unwrap(),
        ParallelBeam::limited_angle(n, 30, 90.0).unwrap(),
        // Angles where the ray is exactly diagonal / axis-aligned, and beyond a half turn.
        ParallelBeam::new(n, vec![0.0, std::f64::consts::FRAC_PI_4, 1.0, 2.5, 4.0], 40, 0.1).unwrap(),
    ] {
        let op = CtOperator::new(g);
        let x = random((n, n, 3), 1);
        let y = random((3, op.geometry().angles.len(), op.geometry().n_det), 2);
        let ax = op.forward(&x).unwrap();
        let aty = op.adjoint(&y).unwrap();
        let (l, r) = (dot(&ax, &y), dot(&x, &aty));
        assert!((l - r).abs() <= 1e-10 * l.abs().max(1.0), "{l} vs {r}");
    }
}

#[test]
fn fbp_of_a_uniform_disc_is_one_inside_and_zero_outside() {
    let n = 64;
    let c = (n as f64 - 1.0) / 2.0;
    let x = Array3::from_shape_fn((n, n, 1), |(i, j, _)| {
        let (dx, dy) = (i as f64 - c, j as f64 - c);
        if dx * dx + dy * dy <= 400.0 { 1.0 } else { 0.0 }
    });
    let op = CtOperator::new(ParallelBeam::sparse_view(n, 180).unwrap());
    let rec = op.fbp(&op.forward(&x).unwrap()).unwrap();
    // Measured 0.979 at the centre: the discrete Ram-Lak filter's small undershoot.
    for (i, j) in [(32, 32), (40, 30), (25, 36)] {
        assert!((rec[[i, j, 0]] - 1.0f64).abs() < 0.03, "{}", rec[[i, j, 0]]);
    }
    for (i, j) in [(60, 60), (2, 32), (32, 62)] {
        assert!(f64::abs(rec[[i, j, 0]]) < 0.03, "{}", rec[[i, j, 0]]);
    }
}

#[test]
fn ct_projection_of_a_disc_is_its_chord_length() {
    // Line integrals of the indicator of a disc of radius r: 2 sqrt(r^2 - s^2), for every
    // angle (the analytic Radon transform), up to the pixelisation of the disc.
    let n = 64;
    let r = 20.0;
    let c = (n as f64 - 1.0) / 2.0;
    let x = Array3::from_shape_fn((n, n, 1), |(i, j, _)| {
        let (dx, dy) = (i as f64 - c, j as f64 - c);
        if dx * dx + dy * dy <= r * r { 1.0 } else { 0.0 }
    });
    let op = CtOperator::new(ParallelBeam::sparse_view(n, 12).unwrap());
    let p = op.forward(&x).unwrap();
    let nd = op.geometry().n_det;
    let cd = (nd as f64 - 1.0) / 2.0;
    for v in 0..12 {
        for k in 0..nd {
            let s = k as f64 - cd;
            let want = if s.abs() < r {
                2.0 * (r * r - s * s).sqrt()
            } else {
                0.0
            };
            // Pixelated edges: within 1.5 pixels of path length.
            assert!(
                (p[[0, v, k]] - want).abs() < 1.5,
                "view {v} bin {k}: {} vs {want}",
                p[[0, v, k]]
            );
        }
    }
}

#[test]
fn ct_runs_in_f32_like_f64() {
    let n = 16;
    let op = CtOperator::new(ParallelBeam::sparse_view(n, 10).unwrap());
    let x = random((n, n, 2), 3);
    let p64 = op.forward(&x).unwrap();
    let p32 = op.forward(&x.mapv(|v| v as f32)).unwrap();
    let err = p64
        .iter()
        .zip(p32.iter())
        .map(|(a, b)| (a - f64::from(*b)).abs())
        .fold(0.0, f64::max);
    assert!(err < 1e-4, "{err}");
    let b32 = op.adjoint(&p32).unwrap();
    assert_eq!(b32.dim(), (n, n, 2));
}

#[test]
fn fbp_reconstructs_the_phantom_at_many_views() {
    let vol = read_npy_volume(data_dir().join("shepp_logan3d_64_f32.npy")).unwrap();
    // Eight central slices keep the test fast.
    let x = vol.data.slice(ndarray::s![.., .., 28..36]).mapv(f64::from);
    let psnr_at = |views| {
        let op = CtOperator::new(ParallelBeam::sparse_view(64, views).unwrap());
        let rec = op.fbp(&op.forward(&x).unwrap()).unwrap();
        psnr(&rec, &x, Plane::Axial, 1.0).unwrap()
    };
    let (many, few) = (psnr_at(180), psnr_at(8));
    // Measured 22.6 dB at 180 views and 11.5 dB at 8 (see the README); the 64-pixel
    // phantom's one-pixel skull bounds any linear-interpolation FBP.
    assert!(many > 21.5, "{many}");
    assert!(few < many - 8.0, "{few} vs {many}");
}

#[test]
fn fft_round_trips_and_mri_adjoint() {
    let (nx, ny) = (12, 10);
    let x = random((nx, ny, 1), 4);
    let mut buf: Vec<Complex<f64>> = x.iter().map(|&v| Complex::new(v, 0.5 * v)).collect();
    let orig = buf.clone();
    mri::fft2(&mut buf, nx, ny, false);
    // Orthonormal: energy kept (Parseval).
    let e = |b: &[Complex<f64>]| b.iter().map(|c| c.norm_sqr()).sum::<f64>();
    assert!((e(&buf) - e(&orig)).abs() < 1e-10 * e(&orig));
    // The DC term is sum / sqrt(n).
    let sum: Complex<f64> = orig.iter().sum();
    assert!((buf[0] - sum / ((nx * ny) as f64).sqrt()).norm() < 1e-12);
    mri::fft2(&mut buf, nx, ny, true);
    let err = buf
        .iter()
        .zip(&orig)
        .map(|(a, b)| (a - b).norm())
        .fold(0.0, f64::max);
    assert!(err < 1e-12, "{err}");

    for accel in [4.0, 8.0] {
        let mask = KMask::cartesian(nx, ny, accel, 0.08, 9).unwrap();
        let op = MriOperator::new(mask);
        let x = random((nx, ny, 3), 5);
        let yr = random((3, nx, ny), 6);
        let yi = random((3, nx, ny), 7);
        let y = Array3::from_shape_fn((3, nx, ny), |ix| Complex::new(yr[ix], yi[ix]));
        let ax = op.forward(&x).unwrap();
        let l: f64 = ax
            .iter()
            .zip(y.iter())
            .map(|(a, b)| a.re * b.re + a.im * b.im)
            .sum();
        let r = dot(&x, &op.adjoint(&y).unwrap());
        assert!((l - r).abs() <= 1e-10 * l.abs().max(1.0), "{l} vs {r}");
    }
    // A full mask makes A^T A the identity.
    let op = MriOperator::new(KMask::full(nx, ny));
    let back = op.adjoint(&op.forward(&x).unwrap()).unwrap();
    assert!(back.iter().zip(x.iter()).all(|(a, b)| (a - b).abs() < 1e-12));
}

#[test]
fn cartesian_masks_sample_the_requested_fraction_with_the_centre() {
    let n = 64;
    for (accel, centre) in [(4.0, 0.08), (8.0, 0.04)] {
        let m = KMask::cartesian(n, n, accel, centre, 1).unwrap();
        assert!(
            (m.fraction() - 1.0 / accel).abs() < 0.5 / n as f64 + 1e-12,
            "{}",
            m.fraction()
        );
        // The lowest frequencies 0, 1, -1 are always sampled.
        for kx in [0, 1, n - 1] {
            assert!(m.sampled[[kx, 0]]);
        }
        assert_eq!(m, KMask::cartesian(n, n, accel, centre, 1).unwrap(), "seeded");
    }
    assert!(KMask::cartesian(n, n, 0.5, 0.1, 1).is_err());
    assert!(KMask::cartesian(n, n, 4.0, 1.5, 1).is_err());
}

#[test]
fn shapes_that_do_not_match_the_geometry_are_errors() {
    let op = CtOperator::new(ParallelBeam::sparse_view(16, 4).unwrap());
    let e = op.forward(&Array3::<f64>::zeros((16, 15, 2))).unwrap_err();
    assert!(matches!(e, MedicalError::Shape { .. }), "{e}");
    assert!(
        op.adjoint(&Array3::<f64>::zeros((2, 5, op.geometry().n_det)))
            .is_err()
    );
    assert!(op.fbp(&Array3::<f64>::zeros((2, 4, 3))).is_err());
    assert!(ParallelBeam::limited_angle(16, 4, 200.0).is_err());
    assert!(ParallelBeam::sparse_view(16, 0).is_err());
    let mri = MriOperator::new(KMask::full(8, 8));
    assert!(mri.forward(&Array3::<f64>::zeros((8, 9, 1))).is_err());
    assert!(mri.adjoint(&Array3::<Complex<f64>>::zeros((1, 9, 8))).is_err());
}
