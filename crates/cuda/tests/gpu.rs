//! GPU tests: every kernel against the f64 references in `diffusion_cuda::oracle` and the
//! CPU `Tensor` backend of diffusion-core. Each test skips with a printed message when no
//! usable device is present; `DIFFUSION_REQUIRE_GPU=1` turns the skip into a failure.
//! Inputs are random (never zeros) and every output buffer is poisoned with NaN first.
#![cfg(feature = "cuda")]

mod common;

use common::gpu_or_skip;
use std::sync::Arc;

use diffusion_core::{Noise, Rng, Tensor};
use diffusion_cuda::oracle::{self as cpu, ConvGeometry, GroupNormShape};
use diffusion_cuda::{CudaError, CudaTensor, Gpu, ops};
use ndarray::{ArrayD, IxDyn};

/// The normwise relative error every f32 kernel must beat (far under the 1e-3 requirement;
/// f32 rounding of f64 results is ~6e-8, GEMM accumulation adds ~sqrt(k) of that).
const REL_TOL: f64 = 1e-5;

/// Random f32-representable values (the GPU sees exactly what the reference sees).
fn randn(seed: u64, len: usize, scale: f64) -> Vec<f64> {
    let mut z = vec![0.0; len];
    Rng::new(seed).fill_normal(&mut z);
    z.iter().map(|v| f64::from((scale * v) as f32)).collect()
}

fn upload(gpu: &Arc<Gpu>, shape: &[usize], data: &[f64]) -> CudaTensor<f32> {
    CudaTensor::from_f64(gpu, shape, data).unwrap()
}

fn poisoned(gpu: &Arc<Gpu>, shape: &[usize]) -> CudaTensor<f32> {
    CudaTensor::full(gpu, shape, f32::NAN).unwrap()
}

fn assert_rel(what: &str, got: &CudaTensor<f32>, want: &[f64], tol: f64) {
    let got = got.to_host_f64().unwrap();
    assert_eq!(got.len(), want.len(), "{what}: length");
    assert!(
        got.iter().all(|v| v.is_finite()),
        "{what}: non-finite output (poison not overwritten?)"
    );
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-30);
    let err = got
        .iter()
        .zip(want)
        .fold(0.0f64, |m, (g, w)| m.max((g - w).abs()));
    assert!(
        err / scale < tol,
        "{what}: relative error {:e} >= {tol:e}",
        err / scale
    );
    eprintln!("{what}: relative error {:.2e}", err / scale);
}

#[test]
fn missing_gpu_is_a_typed_error_never_a_panic() {
    match Gpu::new(0) {
        Ok(gpu) => eprintln!("GPU present: {gpu:?}"),
        Err(e) => assert!(
            matches!(
                e,
                CudaError::NoDriver | CudaError::NoDevice { .. } | CudaError::NoNvrtc
            ),
            "unexpected error {e:?}"
        ),
    }
    let err = Gpu::new(1 << 20).unwrap_err();
    assert!(
        matches!(err, CudaError::NoDriver | CudaError::NoDevice { .. }),
        "{err:?}"
    );
}

#[test]
fn lincomb_matches_the_cpu_backend_including_noise() {
    let Some(gpu) = gpu_or_skip("lincomb_matches_the_cpu_backend_including_noise") else {
        return;
    };
    let n = 100_003; // odd: the last Philox block is half used
    let shape = [n];
    let (x, a, b) = (randn(1, n, 1.0), randn(2, n, 1.0), randn(3, n, 1.0));
    let host =
        |v: &[f64]| ArrayD::from_shape_vec(IxDyn(&shape), v.iter().map(|&t| t as f32).collect()).unwrap();
    let (mut cpu_x, cpu_a, cpu_b) = (host(&x), host(&a), host(&b));
    let (mut gx, ga, gb) = (
        upload(&gpu, &shape, &x),
        upload(&gpu, &shape, &a),
        upload(&gpu, &shape, &b),
    );
    let mut rng_cpu = Rng::with_stream(42, 7);
    rng_cpu.normal(); // start the draw at a non-zero block offset
    let (mut rng_gpu, mut rng_oracle) = (rng_cpu.clone(), rng_cpu.clone());
    let (keep, ca, cb, s) = (0.9, 0.3, -1.7, 0.5);
    cpu_x
        .lincomb(
            keep,
            &[(ca, &cpu_a), (cb, &cpu_b)],
            Some(Noise::new(s, &mut rng_cpu)),
        )
        .unwrap();
    gx.lincomb(keep, &[(ca, &ga), (cb, &gb)], Some(Noise::new(s, &mut rng_gpu)))
        .unwrap();
    assert_eq!(rng_cpu, rng_gpu, "both backends consume the same blocks");
    // Oracle: the formula in f64 from core's own draw of z.
    let mut z = vec![0.0; n];
    rng_oracle.fill_normal(&mut z);
    let got = gx.to_host_f64().unwrap();
    let cpu: Vec<f64> = cpu_x.iter().map(|&v| f64::from(v)).collect();
    let ulp = f64::from(f32::EPSILON);
    let mut identical = 0;
    for j in 0..n {
        let want = keep * x[j] + ca * a[j] + cb * b[j] + s * z[j];
        let magnitude = (keep * x[j]).abs() + (ca * a[j]).abs() + (cb * b[j]).abs() + (s * z[j]).abs();
        // Both backends compute in f32, one rounding per operation in the same order: a few
        // f32 ulps of the f64 formula, and equal to each other up to the noise's f64 `log`
        // (CUDA's and Rust's may differ by an f64 ulp, which rarely survives rounding to f32).
        assert!(
            (got[j] - want).abs() <= 4.0 * ulp * magnitude,
            "element {j}: gpu {} vs {want}",
            got[j]
        );
        assert!(
            (got[j] - cpu[j]).abs() <= ulp * magnitude,
            "element {j}: gpu {} vs cpu {}",
            got[j],
            cpu[j]
        );
        identical += usize::from(got[j] == cpu[j]);
    }
    eprintln!("lincomb with noise: {identical} of {n} elements bit-identical to the CPU backend");
}

/// More terms than one kernel pass takes (16), with `keep` and noise: the passes chain in
/// the CPU backend's order (old, every term, then the noise), so the results agree.
#[test]
fn lincomb_many_terms_with_noise_matches_the_cpu_backend() {
    let Some(gpu) = gpu_or_skip("lincomb_many_terms_with_noise_matches_the_cpu_backend") else {
        return;
    };
    let n = 1001;
    let inputs: Vec<Vec<f64>> = (0..21).map(|i| randn(300 + i, n, 1.0)).collect();
    let host =
        |v: &[f64]| ArrayD::from_shape_vec(IxDyn(&[n]), v.iter().map(|&t| t as f32).collect()).unwrap();
    let cpu_terms: Vec<ArrayD<f32>> = inputs[1..].iter().map(|v| host(v)).collect();
    let gpu_terms: Vec<CudaTensor<f32>> = inputs[1..].iter().map(|v| upload(&gpu, &[n], v)).collect();
    let coefs: Vec<f64> = (0..20).map(|i| 0.05 * (i as f64 - 9.5)).collect();
    let (mut cpu_x, mut gpu_x) = (host(&inputs[0]), upload(&gpu, &[n], &inputs[0]));
    let (mut rng_cpu, mut rng_gpu) = (Rng::with_stream(5, 2), Rng::with_stream(5, 2));
    let cpu_list: Vec<(f64, &ArrayD<f32>)> = coefs.iter().copied().zip(&cpu_terms).collect();
    let gpu_list: Vec<(f64, &CudaTensor<f32>)> = coefs.iter().copied().zip(&gpu_terms).collect();
    cpu_x
        .lincomb(0.7, &cpu_list, Some(Noise::new(0.3, &mut rng_cpu)))
        .unwrap();
    gpu_x
        .lincomb(0.7, &gpu_list, Some(Noise::new(0.3, &mut rng_gpu)))
        .unwrap();
    assert_eq!(rng_cpu, rng_gpu);
    let got = gpu_x.to_host_f64().unwrap();
    let scale = got.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let (mut identical, mut worst) = (0, 0.0f64);
    for (g, c) in got.iter().zip(cpu_x.iter()) {
        identical += usize::from(*g == f64::from(*c));
        worst = worst.max((g - f64::from(*c)).abs() / scale);
    }
    eprintln!("20 terms + noise: {identical} of {n} elements bit-identical, worst {worst:.2e}");
    assert!(
        worst <= f64::from(f32::EPSILON),
        "GPU and CPU differ by {worst:e}"
    );
}

#[test]
fn lincomb_f64_noise_matches_the_cpu_draw() {
    let Some(gpu) = gpu_or_skip("lincomb_f64_noise_matches_the_cpu_draw") else {
        return;
    };
    let n = 4097;
    let mut z = vec![0.0; n];
    Rng::new(9).fill_normal(&mut z);
    let mut g = CudaTensor::<f64>::full(&gpu, &[n], f64::NAN).unwrap();
    g.lincomb(0.0, &[], Some(Noise::new(1.0, &mut Rng::new(9))))
        .unwrap();
    let got = g.to_host().unwrap();
    let worst = got.iter().zip(&z).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    assert!(worst < 1e-13, "f64 noise differs by {worst:e}");
}

/// Noise at any (seed, stream, offset), alone and fused with an in-place update or a
/// copy-on-write one: each case against the f64 formula with core's own draw.
#[test]
fn lincomb_noise_at_any_stream_and_offset_in_place_or_not() {
    let Some(gpu) = gpu_or_skip("lincomb_noise_at_any_stream_and_offset_in_place_or_not") else {
        return;
    };
    let n = 4099;
    let (x, a) = (randn(21, n, 1.0), randn(22, n, 1.0));
    let ga = upload(&gpu, &[n], &a);
    let mut failures = Vec::new();
    for (seed, stream, skip) in [
        (9u64, 0u64, 0usize),
        (42, 7, 0),
        (42, 0, 1),
        (42, 7, 1),
        (3, 1 << 33, 5),
    ] {
        for case in ["noise only", "in place", "copy on write", "no noise in place"] {
            let mut rng = Rng::with_stream(seed, stream);
            for _ in 0..skip {
                rng.normal();
            }
            let mut oracle = rng.clone();
            let mut z = vec![0.0; n];
            oracle.fill_normal(&mut z);
            let (keep, ca, s) = match case {
                "noise only" => (0.0, 0.0, 1.0),
                "no noise in place" => (0.9, 0.3, 0.0),
                _ => (0.9, 0.3, 0.5),
            };
            let mut gx = if case == "noise only" {
                poisoned(&gpu, &[n])
            } else {
                upload(&gpu, &[n], &x)
            };
            let shared = gx.clone();
            if case != "copy on write" {
                drop(shared);
            }
            let terms: Vec<(f64, &CudaTensor<f32>)> = if ca == 0.0 { vec![] } else { vec![(ca, &ga)] };
            let noise = (s != 0.0).then(|| Noise::new(s, &mut rng));
            gx.lincomb(keep, &terms, noise).unwrap();
            let got = gx.to_host_f64().unwrap();
            let worst = (0..n)
                .map(|j| {
                    let want = keep * x[j] + ca * a[j] + s * z[j];
                    let mag = (keep * x[j]).abs() + (ca * a[j]).abs() + (s * z[j]).abs() + 1e-30;
                    (got[j] - want).abs() / mag
                })
                .fold(0.0, f64::max);
            eprintln!(
                "seed {seed} stream {stream} skip {skip} {case}: worst relative error {worst:.2e}, first values {:?}",
                &got[..4]
            );
            // Three or four f32 roundings of terms of magnitude at most `mag`.
            if worst.is_nan() || worst > 4.0 * f64::from(f32::EPSILON) {
                failures.push(format!(
                    "seed {seed} stream {stream} skip {skip} {case}: {worst:e}"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "failing cases: {failures:#?}");
}

#[test]
fn lincomb_semantics_many_terms_aliasing_and_lazy_zeros() {
    let Some(gpu) = gpu_or_skip("lincomb_semantics_many_terms_aliasing_and_lazy_zeros") else {
        return;
    };
    let n = 1000;
    let inputs: Vec<Vec<f64>> = (0..20).map(|i| randn(100 + i, n, 1.0)).collect();
    let tensors: Vec<CudaTensor<f32>> = inputs.iter().map(|v| upload(&gpu, &[n], v)).collect();
    // 20 terms: more than one kernel pass (16 per pass).
    let coefs: Vec<f64> = (0..20).map(|i| 0.1 * (i as f64 - 9.5)).collect();
    let terms: Vec<(f64, &CudaTensor<f32>)> = coefs.iter().copied().zip(&tensors).collect();
    let mut out = poisoned(&gpu, &[n]);
    out.lincomb(0.0, &terms, None).unwrap();
    let want: Vec<f64> = (0..n)
        .map(|j| (0..20).map(|i| coefs[i] * inputs[i][j]).sum())
        .collect();
    assert_rel("20-term lincomb", &out, &want, REL_TOL);
    // Clones share storage copy-on-write: updating one leaves the other alone.
    let mut x = tensors[0].clone();
    let y = x.clone();
    x.lincomb(2.0, &[(1.0, &y)], None).unwrap();
    assert_rel(
        "x = 2x + x",
        &x,
        &inputs[0].iter().map(|v| 3.0 * v).collect::<Vec<_>>(),
        1e-7,
    );
    assert_rel("clone untouched", &y, &inputs[0], 1e-7);
    // Lazy zeros read as zeros, as output and as term.
    let mut z = x.zeros_like();
    z.lincomb(5.0, &[(1.0, &y), (3.0, &y.zeros_like())], None)
        .unwrap();
    assert_rel("zeros + y", &z, &inputs[0], 1e-7);
    // Shape errors are errors.
    let other = upload(&gpu, &[n - 1], &inputs[1][..n - 1]);
    assert!(z.lincomb(1.0, &[(1.0, &other)], None).is_err());
    // Reductions.
    let mut with_bad = inputs[1].clone();
    with_bad[10] = f64::NAN;
    with_bad[20] = f64::INFINITY;
    let t = upload(&gpu, &[n], &with_bad);
    assert_eq!(t.count_non_finite(), 2);
    let t = upload(&gpu, &[n], &inputs[1]);
    let want: f64 = inputs[1].iter().map(|v| v * v).sum();
    assert!((t.sum_squares() - want).abs() < 1e-12 * want);
}

#[test]
fn activations_match_reference() {
    let Some(gpu) = gpu_or_skip("activations_match_reference") else {
        return;
    };
    let n = 10_007;
    let (x, dy) = (randn(4, n, 3.0), randn(5, n, 1.0));
    let (gx, gdy) = (upload(&gpu, &[n], &x), upload(&gpu, &[n], &dy));
    let mut out = poisoned(&gpu, &[n]);
    ops::silu(&gx, &mut out).unwrap();
    assert_rel("silu", &out, &cpu::silu(&x), REL_TOL);
    let mut out = poisoned(&gpu, &[n]);
    ops::silu_bwd(&gdy, &gx, &mut out).unwrap();
    assert_rel("silu_bwd", &out, &cpu::silu_bwd(&dy, &x), REL_TOL);
    let mut out = poisoned(&gpu, &[n]);
    ops::gelu_tanh(&gx, &mut out).unwrap();
    assert_rel("gelu_tanh", &out, &cpu::gelu_tanh(&x), REL_TOL);
    let mut out = poisoned(&gpu, &[n]);
    ops::gelu_tanh_bwd(&gdy, &gx, &mut out).unwrap();
    assert_rel("gelu_tanh_bwd", &out, &cpu::gelu_tanh_bwd(&dy, &x), REL_TOL);
    let mut wrong = poisoned(&gpu, &[n + 1]);
    assert!(matches!(
        ops::silu(&gx, &mut wrong),
        Err(CudaError::ShapeMismatch { .. })
    ));
}

#[test]
fn group_norm_matches_reference() {
    let Some(gpu) = gpu_or_skip("group_norm_matches_reference") else {
        return;
    };
    let shape = GroupNormShape {
        n: 3,
        c: 12,
        s: 37,
        groups: 4,
    };
    let eps = 1e-5;
    let (x, dy) = (randn(6, shape.len(), 2.0), randn(7, shape.len(), 1.0));
    let x: Vec<f64> = x.iter().map(|v| v + 0.5).collect();
    let (gamma, beta) = (randn(8, shape.c, 1.0), randn(9, shape.c, 1.0));
    let dims = [shape.n, shape.c, shape.s];
    let (gx, gdy) = (upload(&gpu, &dims, &x), upload(&gpu, &dims, &dy));
    let (gg, gbt) = (upload(&gpu, &[shape.c], &gamma), upload(&gpu, &[shape.c], &beta));
    let mut y = poisoned(&gpu, &dims);
    let stats = ops::group_norm(&gx, shape, Some(&gg), Some(&gbt), eps, &mut y).unwrap();
    let want = cpu::group_norm(&x, shape, Some(&gamma), Some(&beta), eps);
    assert_rel("group_norm y", &y, &want.y, REL_TOL);
    assert_rel("group_norm rstd", &stats.rstd, &want.rstd, REL_TOL);
    let (mut dx, mut dg, mut db) = (
        poisoned(&gpu, &dims),
        poisoned(&gpu, &[shape.c]),
        poisoned(&gpu, &[shape.c]),
    );
    ops::group_norm_bwd(&gdy, &gx, shape, Some(&gg), &stats, &mut dx, &mut dg, &mut db).unwrap();
    let want = cpu::group_norm_bwd(&dy, &x, shape, Some(&gamma), eps);
    assert_rel("group_norm dx", &dx, &want.dx, REL_TOL);
    assert_rel("group_norm dgamma", &dg, &want.dgamma, REL_TOL);
    assert_rel("group_norm dbeta", &db, &want.dbeta, REL_TOL);
}

#[test]
fn layer_norm_matches_reference() {
    let Some(gpu) = gpu_or_skip("layer_norm_matches_reference") else {
        return;
    };
    let (rows, dim, eps) = (33, 300, 1e-6);
    let (x, dy) = (randn(10, rows * dim, 1.5), randn(11, rows * dim, 1.0));
    let (gamma, beta) = (randn(12, dim, 1.0), randn(13, dim, 1.0));
    let (gx, gdy) = (upload(&gpu, &[rows, dim], &x), upload(&gpu, &[rows, dim], &dy));
    let (gg, gbt) = (upload(&gpu, &[dim], &gamma), upload(&gpu, &[dim], &beta));
    let mut y = poisoned(&gpu, &[rows, dim]);
    let stats = ops::layer_norm(&gx, rows, dim, Some(&gg), Some(&gbt), eps, &mut y).unwrap();
    assert_rel(
        "layer_norm y",
        &y,
        &cpu::layer_norm(&x, rows, dim, Some(&gamma), Some(&beta), eps).y,
        REL_TOL,
    );
    let mut y_plain = poisoned(&gpu, &[rows, dim]);
    ops::layer_norm(&gx, rows, dim, None, None, eps, &mut y_plain).unwrap();
    assert_rel(
        "layer_norm no affine",
        &y_plain,
        &cpu::layer_norm(&x, rows, dim, None, None, eps).y,
        REL_TOL,
    );
    let (mut dx, mut dg, mut db) = (
        poisoned(&gpu, &[rows, dim]),
        poisoned(&gpu, &[dim]),
        poisoned(&gpu, &[dim]),
    );
    ops::layer_norm_bwd(
        &gdy,
        &gx,
        rows,
        dim,
        Some(&gg),
        &stats,
        &mut dx,
        Some((&mut dg, &mut db)),
    )
    .unwrap();
    let want = cpu::layer_norm_bwd(&dy, &x, rows, dim, Some(&gamma), eps);
    assert_rel("layer_norm dx", &dx, &want.dx, REL_TOL);
    assert_rel("layer_norm dgamma", &dg, &want.dgamma, REL_TOL);
    assert_rel("layer_norm dbeta", &db, &want.dbeta, REL_TOL);
}

#[test]
fn softmax_matches_reference() {
    let Some(gpu) = gpu_or_skip("softmax_matches_reference") else {
        return;
    };
    let (rows, cols, scale) = (17, 1000, 0.3);
    let (x, dy) = (randn(14, rows * cols, 4.0), randn(15, rows * cols, 1.0));
    let (gx, gdy) = (upload(&gpu, &[rows, cols], &x), upload(&gpu, &[rows, cols], &dy));
    let mut y = poisoned(&gpu, &[rows, cols]);
    ops::softmax(&gx, cols, scale, &mut y).unwrap();
    let want = cpu::softmax(&x, cols, scale);
    assert_rel("softmax", &y, &want, REL_TOL);
    let mut dx = poisoned(&gpu, &[rows, cols]);
    ops::softmax_bwd(&gdy, &y, cols, scale, &mut dx).unwrap();
    let y_host = y.to_host_f64().unwrap();
    assert_rel(
        "softmax_bwd",
        &dx,
        &cpu::softmax_bwd(&dy, &y_host, cols, scale),
        REL_TOL,
    );
}

#[test]
fn gemm_batched_matches_reference_for_every_transpose() {
    let Some(gpu) = gpu_or_skip("gemm_batched_matches_reference_for_every_transpose") else {
        return;
    };
    let (batch, m, k, n) = (3, 37, 64, 29);
    let (a, b) = (randn(16, batch * m * k, 1.0), randn(17, batch * k * n, 1.0));
    let (ga, gb) = (
        upload(&gpu, &[batch * m * k], &a),
        upload(&gpu, &[batch * k * n], &b),
    );
    for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
        let mut c = poisoned(&gpu, &[batch, m, n]);
        ops::gemm_batched(&ga, &gb, batch, (m, k, n), ta, tb, &mut c).unwrap();
        let want = cpu::gemm_batched(&a, &b, batch, (m, k, n), ta, tb);
        assert_rel(&format!("gemm ta={ta} tb={tb}"), &c, &want, REL_TOL);
    }
}

#[test]
fn attention_matches_reference() {
    let Some(gpu) = gpu_or_skip("attention_matches_reference") else {
        return;
    };
    let (bh, lq, lk, d) = (2 * 3, 50, 70, 32);
    let (q, k, v) = (
        randn(18, bh * lq * d, 1.0),
        randn(19, bh * lk * d, 1.0),
        randn(20, bh * lk * d, 1.0),
    );
    let (gq, gk, gv) = (
        upload(&gpu, &[bh, lq, d], &q),
        upload(&gpu, &[bh, lk, d], &k),
        upload(&gpu, &[bh, lk, d], &v),
    );
    let mut out = poisoned(&gpu, &[bh, lq, d]);
    ops::attention(&gq, &gk, &gv, bh, (lq, lk, d), &mut out).unwrap();
    assert_rel(
        "attention",
        &out,
        &cpu::attention(&q, &k, &v, bh, lq, lk, d),
        REL_TOL,
    );
}

#[test]
fn im2col_and_col2im_match_reference() {
    let Some(gpu) = gpu_or_skip("im2col_and_col2im_match_reference") else {
        return;
    };
    let g = ConvGeometry {
        n: 2,
        c: 5,
        h: 13,
        w: 11,
        kh: 3,
        kw: 3,
        stride: 2,
        pad: 1,
        dilation: 1,
    };
    for geom in [
        g,
        ConvGeometry {
            dilation: 2,
            stride: 1,
            ..g
        },
    ] {
        let x = randn(21, geom.image_len(), 1.0);
        let c = randn(22, geom.cols_len().unwrap(), 1.0);
        let gx = upload(&gpu, &[geom.image_len()], &x);
        let gc = upload(&gpu, &[c.len()], &c);
        let mut cols = poisoned(&gpu, &[c.len()]);
        ops::im2col(&gx, geom, &mut cols).unwrap();
        assert_rel("im2col", &cols, &cpu::im2col(&x, geom).unwrap(), REL_TOL);
        let mut img = poisoned(&gpu, &[geom.image_len()]);
        ops::col2im(&gc, geom, &mut img).unwrap();
        assert_rel("col2im", &img, &cpu::col2im(&c, geom).unwrap(), REL_TOL);
    }
}

#[test]
fn adaln_matches_reference() {
    let Some(gpu) = gpu_or_skip("adaln_matches_reference") else {
        return;
    };
    let (b, l, d) = (3, 64, 48);
    let (x, dy) = (randn(23, b * l * d, 1.0), randn(24, b * l * d, 1.0));
    let (shift, scale) = (randn(25, b * d, 1.0), randn(26, b * d, 0.5));
    let (gx, gdy) = (upload(&gpu, &[b, l, d], &x), upload(&gpu, &[b, l, d], &dy));
    let (gsh, gsc) = (upload(&gpu, &[b, d], &shift), upload(&gpu, &[b, d], &scale));
    let mut y = poisoned(&gpu, &[b, l, d]);
    ops::adaln_modulate(&gx, &gsh, &gsc, (b, l, d), &mut y).unwrap();
    assert_rel(
        "adaln y",
        &y,
        &cpu::adaln_modulate(&x, &shift, &scale, b, l, d),
        REL_TOL,
    );
    let (mut dx, mut dsh, mut dsc) = (
        poisoned(&gpu, &[b, l, d]),
        poisoned(&gpu, &[b, d]),
        poisoned(&gpu, &[b, d]),
    );
    ops::adaln_modulate_bwd(&gdy, &gx, &gsc, (b, l, d), &mut dx, &mut dsh, &mut dsc).unwrap();
    let (wdx, wsh, wsc) = cpu::adaln_modulate_bwd(&dy, &x, &scale, b, l, d);
    assert_rel("adaln dx", &dx, &wdx, REL_TOL);
    assert_rel("adaln dshift", &dsh, &wsh, REL_TOL);
    assert_rel("adaln dscale", &dsc, &wsc, REL_TOL);
}
