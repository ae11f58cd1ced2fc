//! Peak heap use of the adjoint pass does not grow with the number of steps. A counting
//! global allocator (this test binary only, one test so nothing else allocates
//! concurrently) records the high-water mark of live bytes during the backward pass.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{gmm3, normal_rows, vp_grid};
use diffusion_inversion::adjoint::{
    adjoint, bdia_adjoint, bdia_unrolled_gradients, sample, unrolled_gradients,
};
use diffusion_inversion::{Bdia, BdiaBase};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator; only adds bookkeeping.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Ordering::SeqCst) + layout.size();
            PEAK.fetch_max(now, Ordering::SeqCst);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::SeqCst);
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Peak live bytes above the level at entry while `f` runs.
fn peak_during(f: impl FnOnce()) -> usize {
    let base = LIVE.load(Ordering::SeqCst);
    PEAK.store(base, Ordering::SeqCst);
    f();
    PEAK.load(Ordering::SeqCst) - base
}

#[test]
fn adjoint_memory_is_independent_of_step_count() {
    let model = gmm3();
    let x_t = normal_rows(64, 3);
    let bdia = Bdia::new(BdiaBase::Ddim, 1.0).unwrap();
    println!("steps | adjoint peak bytes | unrolled peak bytes | exact BDIA adjoint | BDIA unrolled");
    let mut peaks = Vec::new();
    let mut exact_peaks = Vec::new();
    for steps in [25, 100, 400, 1600] {
        let grid = vp_grid(steps);
        let x0 = sample(&model, &grid, &x_t).unwrap();
        let g = x0.clone();
        let adj = peak_during(|| {
            adjoint(&model, &grid, &x0, &g).unwrap();
        });
        let unrolled = peak_during(|| {
            unrolled_gradients(&model, &grid, &x_t, |x| Ok(x.clone())).unwrap();
        });
        let end = bdia.sample(&model, &grid, &x_t).unwrap();
        let exact = peak_during(|| {
            bdia_adjoint(&model, &bdia, &grid, &end, &end.current).unwrap();
        });
        let exact_unrolled = peak_during(|| {
            bdia_unrolled_gradients(&model, &bdia, &grid, &x_t, |x| Ok(x.clone())).unwrap();
        });
        println!("{steps:>5} | {adj:>18} | {unrolled:>19} | {exact:>18} | {exact_unrolled:>13}");
        peaks.push((adj, unrolled));
        exact_peaks.push((exact, exact_unrolled));
    }
    let (first, last) = (peaks[0], peaks[peaks.len() - 1]);
    assert_eq!(first.0, last.0, "adjoint peak grew: {peaks:?}");
    // The measurement can see growth: the stored trajectory is linear in steps.
    assert!(last.1 > 10 * first.1, "{peaks:?}");
    let (first, last) = (exact_peaks[0], exact_peaks[exact_peaks.len() - 1]);
    assert_eq!(first.0, last.0, "exact BDIA adjoint peak grew: {exact_peaks:?}");
    assert!(last.1 > 10 * first.1, "{exact_peaks:?}");
}
