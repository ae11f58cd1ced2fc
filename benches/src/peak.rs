//! The machine's arithmetic ceiling: f32 fused multiply-adds per second with every rayon
//! thread busy, so a network's GFLOP/s reads as a fraction of what the cores can do.

use std::time::Instant;

/// Independent accumulator chains: enough to cover the FMA latency (4 cycles) on two ports.
const CHAINS: usize = 12;
/// Loop trips per timed run: about 2.4 G FMAs per thread, a few tenths of a second.
const TRIPS: u64 = 12_500_000;

/// f32 GFLOP/s of vector FMAs (2 flops each) with all rayon threads running at once, the
/// best of `runs`; `None` where neither AVX-512F nor AVX2 + FMA is available.
pub fn fma_peak_gflops(runs: usize) -> Option<f64> {
    let per_trip = per_trip_flops()?;
    let threads = rayon::current_num_threads();
    let best = (0..runs.max(1))
        .map(|_| {
            let start = Instant::now();
            let sums: Vec<f32> = rayon::broadcast(|_| fma_loop(TRIPS));
            std::hint::black_box(sums);
            start.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min);
    Some(threads as f64 * TRIPS as f64 * per_trip / best / 1e9)
}

/// Flops one trip of [`fma_loop`] does on this CPU.
fn per_trip_flops() -> Option<f64> {
    #[cfg(target_arch = "x86_64")]
    {
        let lanes = if is_x86_feature_detected!("avx512f") {
            16
        } else if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            8
        } else {
            return None;
        };
        Some((2 * lanes * CHAINS) as f64)
    }
    #[cfg(not(target_arch = "x86_64"))]
    None
}

/// `trips` rounds of one FMA per chain (`a = 0.999 a + 0.001` from 2: it tends to 1, never
/// to a denormal) on the widest vectors this CPU has; returns a sum
/// of the chains so the work cannot be optimised away.
fn fma_loop(trips: u64) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") {
            // SAFETY: AVX-512F is available (checked above).
            return unsafe { x86::fma_loop_avx512(trips) };
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            // SAFETY: AVX2 and FMA are available (checked above).
            return unsafe { x86::fma_loop_avx2(trips) };
        }
    }
    let _ = trips;
    0.0
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::CHAINS;
    use std::arch::x86_64::*;

    /// # Safety
    /// The CPU must support AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn fma_loop_avx512(trips: u64) -> f32 {
        let (mul, add) = (_mm512_set1_ps(0.999), _mm512_set1_ps(0.001));
        let mut acc = [_mm512_set1_ps(2.0); CHAINS];
        for _ in 0..trips {
            for a in &mut acc {
                *a = _mm512_fmadd_ps(*a, mul, add);
            }
        }
        acc.iter().map(|&a| _mm512_reduce_add_ps(a)).sum()
    }

    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn fma_loop_avx2(trips: u64) -> f32 {
        let (mul, add) = (_mm256_set1_ps(0.999), _mm256_set1_ps(0.001));
        let mut acc = [_mm256_set1_ps(2.0); CHAINS];
        for _ in 0..trips {
            for a in &mut acc {
                *a = _mm256_fmadd_ps(*a, mul, add);
            }
        }
        let mut lanes = [0f32; 8];
        acc.iter()
            .map(|&a| {
                // SAFETY: `lanes` holds 8 f32.
                unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), a) };
                lanes.iter().sum::<f32>()
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_loop_does_the_fmas_it_counts() {
        let Some(per_trip) = per_trip_flops() else {
            eprintln!("SKIP: no AVX-512F or AVX2 + FMA on this CPU");
            return;
        };
        // One chain lane stepped by scalar FMAs (exactly rounded, like the vector ones).
        let trips = 1000;
        let mut v = 2.0f32;
        for _ in 0..trips {
            v = v.mul_add(0.999, 0.001);
        }
        let lanes_and_chains = per_trip / 2.0;
        let want = v * lanes_and_chains as f32;
        let got = fma_loop(trips);
        assert!((got - want).abs() <= 1e-5 * want, "{got} vs {want}");
        let peak = fma_peak_gflops(1).expect("measurable where the loop runs");
        assert!(peak.is_finite() && peak > 0.0, "FMA peak {peak} GFLOP/s");
    }
}
