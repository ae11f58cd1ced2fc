//! Vectorised `exp` for f32 slices, the one transcendental the activations (SiLU, GELU
//! via `gelu(v) = v * sigmoid(2u)`) and softmax need.
//!
//! libm's scalar `expf`/`tanhf` made up a third of a DiT training step; this version is a
//! branch-free Cephes-style polynomial that LLVM vectorises, compiled three times (AVX-512,
//! AVX2+FMA, baseline) and chosen at run time. Accuracy: relative error below 3e-7
//! (about 2 ulp) on the clamped range, checked against f64 `exp` in the tests below.
//! Inputs are clamped to `[-87.3, 88.0]`, so results stay finite and normal
//! (`[1.2e-38, 1.6e38]`): a softmax or sigmoid never sees `inf` or a subnormal.

/// Lower clamp: `exp` of it is just above the smallest normal f32.
const LO: f32 = -87.3;
/// Upper clamp: keeps the power-of-two scale's exponent at most 127.
const HI: f32 = 88.0;
const LOG2E: f32 = std::f32::consts::LOG2_E;
/// `ln 2` split in a part exact in f32 and the remainder (Cody-Waite reduction).
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// `1.5 * 2^23`: adding it rounds to the nearest integer, which lands in the low mantissa bits.
const ROUNDER: f32 = 12_582_912.0;

#[inline(always)]
pub(crate) fn exp_one(x: f32) -> f32 {
    let x = x.clamp(LO, HI);
    let t = x * LOG2E + ROUNDER;
    let n = t - ROUNDER;
    // Integer `n` from the low mantissa bits of `t` (|n| <= 127, far below 2^22).
    let ni = (t.to_bits() as i32).wrapping_sub(ROUNDER.to_bits() as i32);
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.987_569_1e-4_f32;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 5.000_000_1e-1;
    let e = p * (r * r) + r + 1.0;
    e * f32::from_bits(((ni + 127) as u32) << 23)
}

#[inline(always)]
fn exp_generic(x: &mut [f32]) {
    for v in x.iter_mut() {
        *v = exp_one(*v);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
unsafe fn exp_avx512(x: &mut [f32]) {
    exp_generic(x)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn exp_avx2(x: &mut [f32]) {
    exp_generic(x)
}

/// `x[i] = exp(x[i])` (clamped as described in the module docs).
pub(crate) fn exp_f32_in_place(x: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512vl") {
            // SAFETY: the CPU supports the features the function is compiled for.
            unsafe { exp_avx512(x) };
            return;
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: as above.
            unsafe { exp_avx2(x) };
            return;
        }
    }
    exp_generic(x)
}

/// `(sin x, cos x)` in f64 without branches, so that a loop of them vectorises (libm's
/// scalar `sin_cos` made up 3% of an mlp training step: its timestep embedding has up to a
/// thousand distinct rows of 64 pairs). Cody-Waite reduction by pi/2 in three parts (each
/// product exact for |x| / (pi/2) below 2^20, about 1.6e6), then fdlibm's minimax kernels on
/// [-pi/4, pi/4]: within 2 ulp of libm, or within |x| 1e-31 absolute next to a zero of sin
/// or cos (the reduction's remainder of pi/2), tested for |x| up to a few thousand. Beyond
/// 1.6e6 the reduction loses accuracy: callers keep |x| far below it.
#[inline(always)]
pub(crate) fn sin_cos(x: f64) -> (f64, f64) {
    const TWO_OVER_PI: f64 = std::f64::consts::FRAC_2_PI;
    // pi/2 = P1 + P2 + P3 (+ 8.5e-32); P1 and P2 have 33 significant bits.
    const P1: f64 = 1.570_796_326_734_125_6;
    const P2: f64 = 6.077_100_506_303_966e-11;
    const P3: f64 = 2.022_266_248_711_166_5e-21;
    const S: [f64; 6] = [
        -1.666_666_666_666_663_2e-1,
        8.333_333_333_322_49e-3,
        -1.984_126_982_985_795e-4,
        2.755_731_370_707_006_8e-6,
        -2.505_076_025_340_686_3e-8,
        1.589_690_995_211_55e-10,
    ];
    const C: [f64; 6] = [
        4.166_666_666_666_660_2e-2,
        -1.388_888_888_887_411e-3,
        2.480_158_728_947_673e-5,
        -2.755_731_435_139_066_3e-7,
        2.087_572_321_298_175e-9,
        -1.135_964_755_778_819_5e-11,
    ];
    let n = (x * TWO_OVER_PI).round_ties_even();
    let r = ((x - n * P1) - n * P2) - n * P3;
    let z = r * r;
    let ps = S[0] + z * (S[1] + z * (S[2] + z * (S[3] + z * (S[4] + z * S[5]))));
    let sin_r = r + r * z * ps;
    let pc = z * (C[0] + z * (C[1] + z * (C[2] + z * (C[3] + z * (C[4] + z * C[5])))));
    let hz = 0.5 * z;
    let w = 1.0 - hz;
    let cos_r = w + (((1.0 - w) - hz) + z * pc);
    // Quadrant n mod 4 (in f64, so the selects vectorise without an integer conversion):
    // (sin, cos) = (s, c), (c, -s), (-s, -c), (-c, s).
    let q = n - 4.0 * (0.25 * n).floor();
    let (s, c) = if q == 1.0 || q == 3.0 {
        (cos_r, sin_r)
    } else {
        (sin_r, cos_r)
    };
    let s = if q >= 2.0 { -s } else { s };
    let c = if q == 1.0 || q == 2.0 { -c } else { c };
    (s, c)
}

/// Runs `f` compiled for AVX-512 (or AVX2 + FMA) when the CPU has it: the crate's baseline
/// target is SSE2, so the elementwise loops around `exp` (arguments, sigmoid divisions,
/// products) would otherwise run 4 lanes wide. `f` is inlined into the feature-enabled
/// function; the arithmetic is the same IEEE operations at any width (no contraction), so
/// results do not depend on the path taken.
#[inline(always)]
pub(crate) fn wide<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512vl") {
            // SAFETY: the CPU supports the features the function is compiled for.
            return unsafe { wide_avx512(f) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: as above.
            return unsafe { wide_avx2(f) };
        }
    }
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
unsafe fn wide_avx512<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn wide_avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_f64_exp_to_two_ulp() {
        // Dense sweep of the clamped range plus the edges.
        let mut xs: Vec<f32> = (0..200_001)
            .map(|i| LO + (HI - LO) * i as f32 / 200_000.0)
            .collect();
        xs.extend([0.0, -0.0, 1e-8, -1e-8, 0.5, -0.5, 1.0, -1.0, LO, HI]);
        let mut ys = xs.clone();
        exp_f32_in_place(&mut ys);
        let mut gen_ys = xs.clone();
        exp_generic(&mut gen_ys);
        for ((&x, &y), &g) in xs.iter().zip(&ys).zip(&gen_ys) {
            let want = (x as f64).exp();
            let rel = ((y as f64) - want).abs() / want;
            assert!(rel < 3e-7, "exp({x}) = {y}, want {want} (rel {rel:e})");
            assert_eq!(y, g, "dispatch and generic differ at {x}");
        }
    }

    #[test]
    fn sin_cos_matches_libm_to_two_ulp() {
        // Timestep embedding arguments: t up to a few thousand times frequencies up to 1,
        // dense near the quadrant boundaries' multiples of pi/2 and random elsewhere.
        let mut xs: Vec<f64> = (0..100_000).map(|i| i as f64 * 0.0317).collect();
        xs.extend((0..4000).flat_map(|k| {
            let b = k as f64 * std::f64::consts::FRAC_PI_2;
            [b, b + 1e-9, b - 1e-9, -b]
        }));
        let mut rng = diffusion_core::Rng::new(5);
        xs.extend((0..100_000).map(|_| rng.normal() * 1500.0));
        let mut worst = 0.0f64;
        for &x in &xs {
            let (s, c) = sin_cos(x);
            let (ws, wc) = x.sin_cos();
            for (got, want) in [(s, ws), (c, wc)] {
                // Units in the last place of the reference value: 2^(exponent - 52).
                let ulp = f64::from_bits(want.abs().to_bits() & 0x7ff0_0000_0000_0000) * f64::EPSILON;
                let ulps = (got - want).abs() / ulp.max(f64::MIN_POSITIVE);
                // Near a zero of sin or cos the reduction's remainder is
                // |n| (8.5e-32) off: below 1e-27 absolute for these arguments.
                let near_zero = (got - want).abs() < 1e-27;
                if !near_zero {
                    worst = worst.max(ulps);
                }
                assert!(
                    ulps <= 2.0 || near_zero,
                    "sin_cos({x}) = ({s}, {c}), want ({ws}, {wc}): {ulps} ulp"
                );
            }
        }
        println!("sin_cos: worst {worst:.6} ulp over {} arguments", xs.len());
    }

    #[test]
    fn clamps_to_finite_normal_values() {
        let mut v = vec![-1e30, -100.0, 100.0, 1e30, f32::NEG_INFINITY, f32::INFINITY];
        exp_f32_in_place(&mut v);
        for &y in &v {
            assert!(y.is_normal() && y > 0.0, "{y}");
        }
        assert!(v[0] < 1.3e-38 && v[3] > 1.6e38);
    }
}
