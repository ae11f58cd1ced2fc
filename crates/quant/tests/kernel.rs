//! Integer products: packing round trips, the portable kernel against a naive i32 triple
//! loop written here, and the AVX-512 VNNI kernel bit-equal to the portable one.

use diffusion_core::Rng;
use diffusion_quant::QuantError;
use diffusion_quant::kernel::{Backend, PackedWeights, gemm_u8i8, vnni_available};

fn codes(rng: &mut Rng, n: usize, lo: i32, hi: i32) -> Vec<i32> {
    (0..n)
        .map(|_| {
            lo + (rng.uniform() * (hi - lo + 1) as f64)
                .floor()
                .min((hi - lo) as f64) as i32
        })
        .collect()
}

/// `out[i, j, g]` by the definition.
fn naive(a: &[u8], m: usize, kp: usize, w: &[i32], n: usize, k: usize, group: usize) -> Vec<i32> {
    let groups = kp / group;
    let mut out = vec![0i32; m * n * groups];
    for i in 0..m {
        for j in 0..n {
            for c in 0..k {
                out[(i * n + j) * groups + c / group] += a[i * kp + c] as i32 * w[j * k + c];
            }
        }
    }
    out
}

fn cpu_has_vnni() -> bool {
    std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|s| s.contains(" avx512_vnni"))
}

#[test]
fn packing_round_trips_at_8_and_4_bits() {
    let mut rng = Rng::new(1);
    for (bits, lo, hi) in [(8, -128, 127), (4, -8, 7)] {
        for (n, k) in [(3, 64), (5, 100), (2, 1), (4, 192)] {
            let c = codes(&mut rng, n * k, lo, hi);
            let p = PackedWeights::pack(&c, n, k, bits).unwrap();
            assert_eq!(p.kp, k.div_ceil(64) * 64);
            assert_eq!(p.data.len(), n * p.kp * bits as usize / 8);
            assert_eq!(p.unpack(), c, "{bits} bits, {n}x{k}");
        }
    }
    assert!(matches!(
        PackedWeights::pack(&[0; 4], 2, 2, 6),
        Err(QuantError::UnsupportedBits { bits: 6, .. })
    ));
    assert!(
        PackedWeights::pack(&[8, 0], 1, 2, 4).is_err(),
        "8 is not a signed 4-bit code"
    );
    assert!(PackedWeights::pack(&[0; 3], 2, 2, 8).is_err(), "shape");
}

#[test]
fn portable_and_vnni_equal_the_naive_sum() {
    assert_eq!(
        vnni_available(),
        cpu_has_vnni(),
        "runtime detection disagrees with /proc/cpuinfo"
    );
    let mut rng = Rng::new(2);
    for (bits, lo, hi) in [(8, -128, 127), (4, -8, 7)] {
        for (m, n, k, group) in [
            (1, 1, 64, 64),
            (19, 7, 100, 128),
            (33, 9, 256, 64),
            (40, 13, 256, 256),
            (17, 5, 320, 320),
        ] {
            let w = codes(&mut rng, n * k, lo, hi);
            let p = PackedWeights::pack(&w, n, k, bits).unwrap();
            let a: Vec<u8> = codes(&mut rng, m * p.kp, 0, 255)
                .into_iter()
                .map(|v| v as u8)
                .collect();
            let expected = naive(&a, m, p.kp, &w, n, k, group);
            let port = gemm_u8i8(&a, m, &p, group, Backend::Portable).unwrap();
            assert_eq!(port, expected, "portable {bits} bits {m}x{n}x{k} /{group}");
            if vnni_available() {
                let v = gemm_u8i8(&a, m, &p, group, Backend::Vnni).unwrap();
                assert_eq!(v, port, "VNNI {bits} bits {m}x{n}x{k} /{group}");
            } else {
                assert!(gemm_u8i8(&a, m, &p, group, Backend::Vnni).is_err());
            }
        }
    }
}

#[test]
fn extreme_codes_do_not_saturate() {
    // 255 * -128 over 4096 columns: -133 693 440, far from i32's limits but beyond i16.
    let (n, k) = (2, 4096);
    let w = vec![-128; n * k];
    let p = PackedWeights::pack(&w, n, k, 8).unwrap();
    let a = vec![255u8; k];
    let expected = vec![255 * -128 * k as i32; n];
    assert_eq!(gemm_u8i8(&a, 1, &p, k, Backend::Portable).unwrap(), expected);
    assert_eq!(gemm_u8i8(&a, 1, &p, k, Backend::detect()).unwrap(), expected);
}

#[test]
fn bad_shapes_and_groups_are_errors() {
    let p = PackedWeights::pack(&[1; 128], 1, 128, 8).unwrap();
    assert!(gemm_u8i8(&[0; 100], 1, &p, 128, Backend::Portable).is_err());
    assert!(gemm_u8i8(&[0; 128], 1, &p, 96, Backend::Portable).is_err());
    assert!(gemm_u8i8(&[0; 128], 1, &p, 0, Backend::Portable).is_err());
}
