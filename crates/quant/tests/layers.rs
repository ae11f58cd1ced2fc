//! Quantized Linear layers: integer execution against fake-quant and a hand-computed
//! reference, SmoothQuant + SVDQuant on a layer with outlier channels, LoRC, bad input.

use diffusion_core::Rng;
use diffusion_quant::fp::{E2M1, E4M3};
use diffusion_quant::kernel::Backend;
use diffusion_quant::quantizer::{Estimator, Granularity, IntFormat, Quantizer, Scheme};
use diffusion_quant::{ActMode, ActRecipe, Exec, LowRank, LowRankKind, QuantError, QuantLinear, Recipe};
use ndarray::{ArrayD, IxDyn};

fn normal(rng: &mut Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.normal() as f32 * scale).collect()
}

fn matrix(v: Vec<f32>, r: usize, c: usize) -> ArrayD<f32> {
    ArrayD::from_shape_vec(IxDyn(&[r, c]), v).unwrap()
}

fn int_q(bits: u32, sym: bool, g: Granularity) -> Quantizer {
    Quantizer::new(Scheme::Int(IntFormat::new(bits, sym).unwrap()), g)
}

fn act(q: Quantizer, mode: ActMode) -> Option<ActRecipe> {
    Some(ActRecipe { quantizer: q, mode })
}

/// `x W^T + b` in f64.
fn reference(x: &[f32], rows: usize, w: &[f32], out: usize, b: &[f32]) -> Vec<f64> {
    let inp = w.len() / out;
    let mut y = vec![0f64; rows * out];
    for i in 0..rows {
        for j in 0..out {
            y[i * out + j] = b[j] as f64
                + (0..inp)
                    .map(|k| x[i * inp + k] as f64 * w[j * inp + k] as f64)
                    .sum::<f64>();
        }
    }
    y
}

fn rel_err(a: &[f32], b: &[f64]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| (*x as f64 - y).powi(2)).sum();
    let den: f64 = b.iter().map(|y| y * y).sum();
    (num / den).sqrt()
}

#[test]
fn w8a8_matches_a_hand_computed_quantized_product_in_both_paths() {
    let mut rng = Rng::new(1);
    let (rows, inp, out) = (37, 96, 20);
    let w = normal(&mut rng, out * inp, 0.2);
    let b = normal(&mut rng, out, 0.1);
    let x = normal(&mut rng, rows * inp, 1.0);
    let recipe = Recipe {
        weight: Some(int_q(8, true, Granularity::PerRow)),
        act: act(int_q(8, true, Granularity::PerRow), ActMode::Dynamic),
        ..Recipe::default()
    };
    let layer =
        QuantLinear::from_weight("l", &matrix(w.clone(), out, inp), Some(b.clone()), &recipe, None).unwrap();
    // The quantized operands by the textbook formulas: per-row absmax / 127, half to even.
    let q = |v: &[f32], r: usize, c: usize| -> Vec<f32> {
        let mut o = Vec::new();
        for row in v.chunks(c).take(r) {
            let s = row.iter().fold(0f32, |m, x| m.max(x.abs())) / 127.0;
            o.extend(
                row.iter()
                    .map(|x| (x / s).round_ties_even().clamp(-128.0, 127.0) * s),
            );
        }
        o
    };
    let expected = reference(&q(&x, rows, inp), rows, &q(&w, out, inp), out, &b);
    let fake = layer.forward(&x, rows, Exec::Fake).unwrap();
    assert!(
        rel_err(&fake, &expected) < 1e-6,
        "fake {}",
        rel_err(&fake, &expected)
    );
    for backend in [Backend::Portable, Backend::detect()] {
        let int = layer.forward(&x, rows, Exec::Int(backend)).unwrap();
        assert!(
            rel_err(&int, &expected) < 1e-6,
            "{backend:?} {}",
            rel_err(&int, &expected)
        );
    }
    // And quantization costs little against full precision.
    let fp = reference(&x, rows, &w, out, &b);
    assert!(rel_err(&fake, &fp) < 0.02, "W8A8 error {}", rel_err(&fake, &fp));
}

#[test]
fn integer_execution_equals_fake_quant_for_every_supported_layout() {
    let mut rng = Rng::new(2);
    let (rows, inp, out) = (50, 256, 24);
    let w = normal(&mut rng, out * inp, 0.1);
    let x: Vec<f32> = normal(&mut rng, rows * inp, 1.0)
        .iter()
        .map(|v| v + 0.3)
        .collect();
    let calib = normal(&mut rng, 64 * inp, 1.2);
    let cases = [
        (
            int_q(8, true, Granularity::PerRow),
            int_q(8, true, Granularity::PerRow),
            ActMode::Dynamic,
        ),
        (
            int_q(4, true, Granularity::PerGroup(64)),
            int_q(8, true, Granularity::PerRow),
            ActMode::Dynamic,
        ),
        (
            int_q(4, true, Granularity::PerGroup(128)),
            int_q(4, true, Granularity::PerRow),
            ActMode::Dynamic,
        ),
        (
            int_q(8, true, Granularity::PerTensor),
            int_q(8, false, Granularity::PerTensor),
            ActMode::Static,
        ),
        (
            int_q(3, true, Granularity::PerRow),
            int_q(6, false, Granularity::PerRow),
            ActMode::Dynamic,
        ),
    ];
    for (wq, aq, mode) in cases {
        let recipe = Recipe {
            weight: Some(wq),
            act: act(aq, mode),
            ..Recipe::default()
        };
        let layer =
            QuantLinear::from_weight("l", &matrix(w.clone(), out, inp), None, &recipe, Some(&calib)).unwrap();
        assert!(layer.packed.is_some());
        let fake = layer.forward(&x, rows, Exec::Fake).unwrap();
        let fake64: Vec<f64> = fake.iter().map(|&v| v as f64).collect();
        for backend in [Backend::Portable, Backend::detect()] {
            let int = layer.forward(&x, rows, Exec::Int(backend)).unwrap();
            let e = rel_err(&int, &fake64);
            assert!(e < 1e-6, "{wq:?} / {aq:?}: {e}");
        }
    }
}

#[test]
fn smoothing_and_the_low_rank_branch_cut_w4a4_error_on_outlier_channels() {
    let mut rng = Rng::new(3);
    let (rows, inp, out) = (256, 128, 64);
    let w = normal(&mut rng, out * inp, 0.1);
    let outliers = [3usize, 40, 77, 100];
    let inputs = |rng: &mut Rng, n: usize| -> Vec<f32> {
        let mut x = normal(rng, n * inp, 1.0);
        for r in 0..n {
            for &c in &outliers {
                x[r * inp + c] *= 40.0;
            }
        }
        x
    };
    let calib = inputs(&mut rng, 512);
    let x = inputs(&mut rng, rows);
    let fp = reference(&x, rows, &w, out, &vec![0.0; out]);
    let w4 = int_q(4, true, Granularity::PerGroup(64));
    let a4 = int_q(4, true, Granularity::PerRow);
    let err = |smooth: Option<f32>, low_rank: LowRankKind| {
        let recipe = Recipe {
            weight: Some(w4),
            act: act(a4, ActMode::Dynamic),
            smooth_alpha: smooth,
            low_rank,
        };
        let layer =
            QuantLinear::from_weight("l", &matrix(w.clone(), out, inp), None, &recipe, Some(&calib)).unwrap();
        let y = layer.forward(&x, rows, Exec::Fake).unwrap();
        let yi = layer.forward(&x, rows, Exec::Int(Backend::detect())).unwrap();
        let y64: Vec<f64> = y.iter().map(|&v| v as f64).collect();
        assert!(rel_err(&yi, &y64) < 1e-5, "integer path agrees");
        rel_err(&y, &fp)
    };
    let plain = err(None, LowRankKind::None);
    let smooth = err(Some(0.5), LowRankKind::None);
    let svd = err(Some(0.5), LowRankKind::Svd(16));
    eprintln!(
        "W4A4 relative output error: plain {plain:.4}, smooth {smooth:.4}, smooth + rank-16 branch {svd:.4}"
    );
    assert!(smooth < 0.7 * plain, "smoothing {smooth} vs plain {plain}");
    assert!(
        svd < 0.8 * smooth,
        "low-rank branch {svd} vs smoothing alone {smooth}"
    );
}

#[test]
fn svd_factors_recover_an_exact_low_rank_matrix_and_lorc_reduces_weight_error() {
    let mut rng = Rng::new(4);
    let (rows, cols) = (30, 20);
    let (u, v) = (normal(&mut rng, rows * 2, 1.0), normal(&mut rng, 2 * cols, 1.0));
    let m: Vec<f32> = (0..rows * cols)
        .map(|i| {
            (0..2)
                .map(|k| u[(i / cols) * 2 + k] * v[k * cols + i % cols])
                .sum()
        })
        .collect();
    let lr = LowRank::of(&m, rows, cols, 2).unwrap();
    let p = lr.product();
    let e: f32 = m.iter().zip(&p).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    assert!(e < 1e-5, "rank-2 reconstruction error {e}");
    assert!(LowRank::of(&m, rows, cols, 21).is_err());
    assert!(LowRank::of(&m, rows, cols, 0).is_err());

    let (out, inp) = (48, 64);
    let w = normal(&mut rng, out * inp, 0.1);
    let weight_err = |low_rank| {
        let recipe = Recipe {
            weight: Some(int_q(3, true, Granularity::PerRow)),
            low_rank,
            ..Recipe::default()
        };
        let l = QuantLinear::from_weight("l", &matrix(w.clone(), out, inp), None, &recipe, None).unwrap();
        let mut eff = l.weight.clone();
        if let Some(lr) = &l.low_rank {
            for (a, b) in eff.iter_mut().zip(lr.product()) {
                *a += b;
            }
        }
        w.iter()
            .zip(&eff)
            .map(|(a, b)| ((a - b) as f64).powi(2))
            .sum::<f64>()
            .sqrt()
    };
    let (e0, e8) = (weight_err(LowRankKind::None), weight_err(LowRankKind::Lorc(8)));
    eprintln!("W3 weight error: plain {e0:.4}, LoRC rank 8 {e8:.4}");
    assert!(e8 < 0.9 * e0, "LoRC {e8} vs {e0}");
}

#[test]
fn minifloat_weights_and_activations_run_as_fake_quant() {
    let mut rng = Rng::new(5);
    let (rows, inp, out) = (16, 64, 8);
    let w = normal(&mut rng, out * inp, 0.1);
    let x = normal(&mut rng, rows * inp, 1.0);
    let recipe = Recipe {
        weight: Some(Quantizer::new(Scheme::Float(E2M1), Granularity::PerRow).with_pow2_scales(true)),
        act: act(
            Quantizer::new(Scheme::Float(E4M3), Granularity::PerTensor).with_estimator(Estimator::LP24),
            ActMode::Static,
        ),
        ..Recipe::default()
    };
    let layer = QuantLinear::from_weight("l", &matrix(w.clone(), out, inp), None, &recipe, Some(&x)).unwrap();
    assert!(layer.packed.is_none());
    // Every effective weight is a scaled E2M1 value.
    let s = layer.weight_scales.as_ref().unwrap();
    for (j, row) in layer.weight.chunks(inp).enumerate() {
        for v in row {
            let q = v / s.scale[j];
            assert!([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0].contains(&q.abs()), "{q}");
        }
    }
    let y = layer.forward(&x, rows, Exec::Fake).unwrap();
    let fp = reference(&x, rows, &w, out, &vec![0.0; out]);
    assert!(rel_err(&y, &fp) < 0.25, "W4A8-FP error {}", rel_err(&y, &fp));
    assert!(matches!(
        layer.forward(&x, rows, Exec::Int(Backend::Portable)),
        Err(QuantError::Invalid { .. })
    ));
}

#[test]
fn bad_layers_and_missing_calibration_are_typed_errors() {
    let recipe = Recipe {
        weight: Some(int_q(8, true, Granularity::PerRow)),
        act: act(int_q(8, true, Granularity::PerTensor), ActMode::Static),
        ..Recipe::default()
    };
    let conv = ArrayD::zeros(IxDyn(&[4, 3, 3, 3]));
    assert!(matches!(
        QuantLinear::from_weight("conv", &conv, None, &recipe, None),
        Err(QuantError::UnsupportedLayer { .. })
    ));
    let w = ArrayD::ones(IxDyn(&[4, 8]));
    assert!(matches!(
        QuantLinear::from_weight("l", &w, None, &recipe, None),
        Err(QuantError::EmptyCalibration(_))
    ));
    assert!(matches!(
        QuantLinear::from_weight("l", &w, None, &recipe, Some(&[])),
        Err(QuantError::EmptyCalibration(_))
    ));
    assert!(matches!(
        QuantLinear::from_weight("l", &w, Some(vec![0.0; 3]), &recipe, Some(&[1.0; 8])),
        Err(QuantError::Shape { .. })
    ));
    let nan = ArrayD::from_elem(IxDyn(&[2, 2]), f32::NAN);
    assert!(matches!(
        QuantLinear::from_weight("l", &nan, None, &Recipe::default(), None),
        Err(QuantError::NonFinite(_))
    ));
    let ok = QuantLinear::from_weight("l", &w, None, &recipe, Some(&[1.0; 16])).unwrap();
    assert!(ok.forward(&[1.0; 7], 1, Exec::Fake).is_err());
    assert!(ok.forward(&[f32::NAN; 8], 1, Exec::Fake).is_err());
}
