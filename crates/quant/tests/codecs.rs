//! Minifloat codecs and integer quantizers against oracles computed here from the format
//! definitions (never from the codec itself).

use diffusion_core::Rng;
use diffusion_quant::QuantError;
use diffusion_quant::fp::{E2M1, E4M3, E5M2, MiniFloat, Overflow};
use diffusion_quant::quantizer::{Estimator, Granularity, IntFormat, Quantizer, RunningMinMax, Scheme};

/// Format facts written out by hand: exponent bits, mantissa bits, bias, and the special
/// rule (0: IEEE inf/NaN on the top exponent, 1: only all-ones is NaN, 2: none).
struct Def {
    f: MiniFloat,
    e: u32,
    m: u32,
    bias: i32,
    rule: u8,
    max: f64,
}

const DEFS: [Def; 3] = [
    Def {
        f: E4M3,
        e: 4,
        m: 3,
        bias: 7,
        rule: 1,
        max: 448.0,
    },
    Def {
        f: E5M2,
        e: 5,
        m: 2,
        bias: 15,
        rule: 0,
        max: 57344.0,
    },
    Def {
        f: E2M1,
        e: 2,
        m: 1,
        bias: 1,
        rule: 2,
        max: 6.0,
    },
];

#[derive(Clone, Copy, Debug, PartialEq)]
enum Val {
    Num(f64),
    Inf(bool),
    NaN,
}

/// The value of `code` from the definition.
fn value(d: &Def, code: u32) -> Val {
    let sign = code >> (d.e + d.m) & 1 == 1;
    let e = (code >> d.m) & ((1 << d.e) - 1);
    let m = code & ((1 << d.m) - 1);
    let top = (1 << d.e) - 1;
    match d.rule {
        0 if e == top => return if m == 0 { Val::Inf(sign) } else { Val::NaN },
        1 if e == top && m == (1 << d.m) - 1 => return Val::NaN,
        _ => {}
    }
    let mag = if e == 0 {
        m as f64 * 2f64.powi(1 - d.bias - d.m as i32)
    } else {
        ((1u32 << d.m) + m) as f64 * 2f64.powi(e as i32 - d.bias - d.m as i32)
    };
    Val::Num(if sign { -mag } else { mag })
}

/// Non-negative finite values with their codes, ascending.
fn positives(d: &Def) -> Vec<(f64, u32)> {
    let mut v: Vec<(f64, u32)> = (0..1u32 << (d.e + d.m))
        .filter_map(|c| match value(d, c) {
            Val::Num(x) => Some((x, c)),
            _ => None,
        })
        .collect();
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    v
}

/// Nearest code by brute force, ties to the even code, saturating.
fn oracle(d: &Def, x: f32) -> u32 {
    let sign = if x.is_sign_negative() { 1 << (d.e + d.m) } else { 0 };
    let a = (x as f64).abs();
    let table = positives(d);
    let (maxv, maxc) = *table.last().unwrap();
    if a >= maxv {
        return sign | maxc;
    }
    let mut best = table[0];
    for &(v, c) in &table {
        let (dv, db) = ((v - a).abs(), (best.0 - a).abs());
        if dv < db || (dv == db && c % 2 == 0) {
            best = (v, c);
        }
    }
    sign | best.1
}

fn next_up(x: f32) -> f32 {
    f32::from_bits(x.to_bits() + 1)
}
fn next_down(x: f32) -> f32 {
    f32::from_bits(x.to_bits() - 1)
}

#[test]
fn maxima_and_e2m1_values_match_the_specs() {
    for d in &DEFS {
        assert_eq!(d.f.max_value(), d.max, "{}", d.f.name);
        assert_eq!(positives(d).last().unwrap().0, d.max, "{} table", d.f.name);
    }
    let e2m1: Vec<f64> = positives(&DEFS[2]).iter().map(|p| p.0).collect();
    assert_eq!(e2m1, [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]);
}

#[test]
fn every_code_decodes_to_its_defined_value_and_round_trips() {
    for d in &DEFS {
        for code in 0..1u32 << (d.e + d.m + 1) {
            let got = d.f.decode(code as u8);
            match value(d, code) {
                Val::Num(v) => {
                    assert_eq!(got as f64, v, "{} code {code:#x}", d.f.name);
                    assert_eq!(got.is_sign_negative(), code >> (d.e + d.m) == 1);
                    assert_eq!(
                        d.f.encode(got).unwrap() as u32,
                        code,
                        "{} round trip {code:#x}",
                        d.f.name
                    );
                }
                Val::Inf(neg) => assert!(got.is_infinite() && got.is_sign_negative() == neg),
                Val::NaN => assert!(got.is_nan(), "{} code {code:#x}", d.f.name),
            }
        }
    }
}

#[test]
fn midpoints_ties_and_neighbours_round_like_the_brute_force_oracle() {
    for d in &DEFS {
        let table = positives(d);
        let mut inputs = Vec::new();
        for w in table.windows(2) {
            let mid = ((w[0].0 + w[1].0) / 2.0) as f32;
            assert_eq!(mid as f64, (w[0].0 + w[1].0) / 2.0, "midpoint exact in f32");
            inputs.extend([mid, next_up(mid), next_down(mid), w[0].0 as f32, w[1].0 as f32]);
        }
        let top = table.last().unwrap().0 as f32;
        inputs.extend([
            top * 1.01,
            top * 4.0,
            f32::MAX,
            f32::INFINITY,
            1e-30,
            f32::MIN_POSITIVE,
            1e-45,
        ]);
        let neg: Vec<f32> = inputs.iter().map(|v| -v).collect();
        inputs.extend(neg);
        for &x in &inputs {
            assert_eq!(
                d.f.encode(x).unwrap() as u32,
                oracle(d, x),
                "{} x = {x:e}",
                d.f.name
            );
        }
        // Ties really went to even codes: each midpoint lands on the code with LSB 0.
        for w in table.windows(2) {
            let mid = ((w[0].0 + w[1].0) / 2.0) as f32;
            assert_eq!(d.f.encode(mid).unwrap() % 2, 0, "{} tie at {mid}", d.f.name);
        }
    }
}

#[test]
fn random_values_round_like_the_oracle() {
    let mut rng = Rng::new(7);
    for d in &DEFS {
        for _ in 0..20_000 {
            let mag = 2f64.powf(rng.uniform() * 40.0 - 25.0) * d.max / 64.0;
            let x = if rng.uniform() < 0.5 { -mag } else { mag } as f32;
            assert_eq!(
                d.f.encode(x).unwrap() as u32,
                oracle(d, x),
                "{} x = {x:e}",
                d.f.name
            );
        }
    }
}

#[test]
fn nan_and_ieee_overflow() {
    assert_eq!(E4M3.encode(f32::NAN).unwrap(), 0x7f);
    assert_eq!(E4M3.encode(-f32::NAN).unwrap(), 0xff);
    assert_eq!(E5M2.encode(f32::NAN).unwrap(), 0x7f);
    assert!(matches!(E2M1.encode(f32::NAN), Err(QuantError::NonFinite(_))));
    // Saturation (the default): infinities and huge values go to the largest finite code.
    assert_eq!(E4M3.decode(E4M3.encode(f32::INFINITY).unwrap()), 448.0);
    assert_eq!(E4M3.decode(E4M3.encode(-1e9).unwrap()), -448.0);
    assert_eq!(E5M2.decode(E5M2.encode(f32::INFINITY).unwrap()), 57344.0);
    // Non-saturating: rounding happens first. E4M3's next value past 448 would be 480, so
    // the halfway point 464 is a tie that goes to the even 448; above it, NaN.
    let ieee = Overflow::Ieee;
    assert_eq!(E4M3.decode(E4M3.encode_with(463.9, ieee).unwrap()), 448.0);
    assert_eq!(E4M3.decode(E4M3.encode_with(464.0, ieee).unwrap()), 448.0);
    assert!(E4M3.decode(E4M3.encode_with(464.1, ieee).unwrap()).is_nan());
    assert!(
        E4M3.decode(E4M3.encode_with(f32::INFINITY, ieee).unwrap())
            .is_nan()
    );
    // E5M2: 57344 + 8192/2 = 61440 is a tie between the odd max and infinity: infinity.
    assert_eq!(E5M2.decode(E5M2.encode_with(61439.0, ieee).unwrap()), 57344.0);
    assert_eq!(
        E5M2.decode(E5M2.encode_with(61440.0, ieee).unwrap()),
        f32::INFINITY
    );
    assert_eq!(
        E5M2.decode(E5M2.encode_with(-1e6, ieee).unwrap()),
        f32::NEG_INFINITY
    );
    assert_eq!(E2M1.decode(E2M1.encode_with(100.0, ieee).unwrap()), 6.0);
    assert!(MiniFloat::by_name("e3m4").is_err());
}

#[test]
fn integer_grid_by_hand() {
    let s8 = IntFormat::new(8, true).unwrap();
    assert_eq!(s8.code_range(), (-128, 127));
    let (s, z) = s8.params(-2.54, 1.0);
    assert_eq!((s, z), (2.54 / 127.0, 0));
    // Half to even: 2.5 -> 2, 3.5 -> 4, -2.5 -> -2.
    assert_eq!(s8.quantize(2.5, 1.0, 0), 2);
    assert_eq!(s8.quantize(3.5, 1.0, 0), 4);
    assert_eq!(s8.quantize(-2.5, 1.0, 0), -2);
    assert_eq!(s8.quantize(1000.0, 1.0, 0), 127);
    let u4 = IntFormat::new(4, false).unwrap();
    // [-1, 2] on 0..15: scale 3/15 = 0.2, zero point 1 / 0.2 = 5.
    let (s, z) = u4.params(-1.0, 2.0);
    assert!((s - 0.2).abs() < 1e-7 && z == 5, "{s} {z}");
    // A positive-only range is widened to include 0 (zero exactly representable).
    assert_eq!(u4.params(1.0, 3.0).1, 0);
    for bits in [0, 1, 9, 16] {
        assert!(matches!(
            IntFormat::new(bits, true),
            Err(QuantError::UnsupportedBits { bits: b, .. }) if b == bits
        ));
    }
}

#[test]
fn per_group_scales_equal_per_tensor_scales_of_each_group() {
    let mut rng = Rng::new(3);
    let (rows, cols, g) = (3, 256, 64);
    let x: Vec<f32> = (0..rows * cols)
        .map(|i| rng.normal() as f32 * (1.0 + (i % 7) as f32))
        .collect();
    let sch = Scheme::int(4).unwrap();
    let grouped = Quantizer::new(sch, Granularity::PerGroup(g))
        .fit(&x, rows, cols)
        .unwrap();
    assert_eq!(grouped.scale.len(), rows * cols / g);
    let mut fq = x.clone();
    grouped.fake_quantize(&mut fq).unwrap();
    for r in 0..rows {
        for k in 0..cols / g {
            let block: Vec<f32> = x[r * cols + k * g..r * cols + (k + 1) * g].to_vec();
            let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
            assert_eq!(grouped.scale[r * cols / g + k], amax / 7.0);
            let mut one = block.clone();
            Quantizer::new(sch, Granularity::PerTensor)
                .fit(&block, 1, g)
                .unwrap()
                .fake_quantize(&mut one)
                .unwrap();
            assert_eq!(&fq[r * cols + k * g..r * cols + (k + 1) * g], &one[..]);
        }
    }
    assert!(
        Quantizer::new(sch, Granularity::PerGroup(48))
            .fit(&x, rows, cols)
            .is_err()
    );
    // Per row: one scale per row, the row's absmax / 7.
    let per_row = Quantizer::new(sch, Granularity::PerRow)
        .fit(&x, rows, cols)
        .unwrap();
    for r in 0..rows {
        let amax = x[r * cols..(r + 1) * cols]
            .iter()
            .fold(0f32, |m, v| m.max(v.abs()));
        assert_eq!(per_row.scale[r], amax / 7.0);
    }
}

#[test]
fn lp_search_never_loses_to_min_max_and_clips_outliers() {
    let mut rng = Rng::new(11);
    let mut x: Vec<f32> = (0..2048).map(|_| rng.normal() as f32).collect();
    x[5] = 12.0; // one outlier: min/max wastes the grid on it
    let sch = Scheme::int(4).unwrap();
    let lp_err = |q: &Quantizer| {
        let mut y = x.clone();
        q.fit(&x, 1, x.len()).unwrap().fake_quantize(&mut y).unwrap();
        x.iter()
            .zip(&y)
            .map(|(a, b)| ((a - b).abs() as f64).powf(2.4))
            .sum::<f64>()
    };
    let mm = Quantizer::new(sch, Granularity::PerTensor);
    let lp = mm.with_estimator(Estimator::LP24);
    let (e_mm, e_lp) = (lp_err(&mm), lp_err(&lp));
    assert!(e_lp < 0.5 * e_mm, "Lp {e_lp} vs min/max {e_mm}");
    // The chosen scale is the best of the grid: checked against every candidate here.
    let s_lp = lp.fit(&x, 1, x.len()).unwrap().scale[0];
    for i in 1..=100 {
        let s = 12.0 * (i as f32 / 100.0) / 7.0;
        let e: f64 = x
            .iter()
            .map(|&v| {
                let q = (v / s).round_ties_even().clamp(-8.0, 7.0) * s;
                ((v - q).abs() as f64).powf(2.4)
            })
            .sum();
        assert!(
            e_lp <= e * (1.0 + 1e-9),
            "candidate {i} (scale {s}) beats the search's {s_lp}"
        );
    }
}

#[test]
fn power_of_two_scales_round_up() {
    let mut rng = Rng::new(5);
    let x: Vec<f32> = (0..512).map(|_| rng.normal() as f32 * 3.0).collect();
    for sch in [Scheme::int(4).unwrap(), Scheme::Float(E4M3), Scheme::Float(E2M1)] {
        let q = Quantizer::new(sch, Granularity::PerRow);
        let plain = q.fit(&x, 4, 128).unwrap();
        let p2 = q.with_pow2_scales(true).fit(&x, 4, 128).unwrap();
        for (a, b) in plain.scale.iter().zip(&p2.scale) {
            assert_eq!(b.log2().fract(), 0.0, "{b} is a power of two");
            assert!(b >= a && *b < 2.0 * a, "{a} -> {b}");
        }
    }
}

#[test]
fn minifloat_quantizer_maps_absmax_to_the_format_max() {
    let x = [0.1f32, -3.0, 2.0, 0.7];
    let s = Quantizer::new(Scheme::Float(E4M3), Granularity::PerTensor)
        .fit(&x, 1, 4)
        .unwrap();
    assert_eq!(s.scale[0], 3.0 / 448.0);
    let mut y = x;
    s.fake_quantize(&mut y).unwrap();
    assert_eq!(y[1], -3.0);
    // 2.0 / (3/448) = 298.67 -> nearest E4M3 value 288 (spacing 32 in [256, 448]).
    assert_eq!(y[2], 288.0 * (3.0 / 448.0));
}

#[test]
fn running_min_max_and_empty_calibration() {
    let q = Quantizer::new(
        Scheme::Int(IntFormat::new(8, false).unwrap()),
        Granularity::PerTensor,
    );
    let mut obs = RunningMinMax::new(None);
    assert!(matches!(obs.params(&q), Err(QuantError::EmptyCalibration(_))));
    obs.update(&[0.5, -1.0]).unwrap();
    obs.update(&[3.0, 0.0]).unwrap();
    obs.update(&[]).unwrap();
    assert_eq!((obs.lo, obs.hi, obs.batches), (-1.0, 3.0, 2));
    let (s, z) = obs.params(&q).unwrap();
    assert_eq!(s, 4.0 / 255.0);
    assert_eq!(z, (1.0f32 / (4.0 / 255.0)).round_ties_even() as i32);
    let mut ema = RunningMinMax::new(Some(0.1));
    ema.update(&[-1.0, 1.0]).unwrap();
    ema.update(&[-3.0, 11.0]).unwrap();
    assert!((ema.lo - (-1.2)).abs() < 1e-6 && (ema.hi - 2.0).abs() < 1e-6);
    assert!(ema.update(&[f32::NAN]).is_err());
    assert!(matches!(q.fit(&[], 0, 0), Err(QuantError::EmptyCalibration(_))));
}

#[test]
fn fast_rounding_equals_round_ties_even() {
    use diffusion_quant::quantizer::round_even_small;
    let mut xs = vec![
        0.5f32,
        1.5,
        2.5,
        -0.5,
        -1.5,
        -2.5,
        0.49999997,
        4_194_303.5,
        -4_194_303.5,
        4_194_304.0,
        -0.0,
        1e-30,
    ];
    let mut rng = Rng::new(13);
    for _ in 0..100_000 {
        let v = (rng.uniform() * 2.0 - 1.0) * 2f64.powf(rng.uniform() * 22.0);
        xs.push(v as f32);
        xs.push((v.round() + 0.5) as f32);
    }
    for x in xs {
        if x.abs() <= 4_194_304.0 {
            assert_eq!(round_even_small(x), x.round_ties_even(), "{x}");
        }
    }
}
