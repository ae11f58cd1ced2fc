//! Peak heap use of the adjoint pass, and of BDIA's inversion and sampling, does not grow
//! with the number of steps. A counting global allocator (this test binary only) records
//! the high-water mark of live bytes allocated by the measuring thread. Counting only that
//! thread keeps the harness out of the numbers: it formats one test's result while the
//! next test measures. The measured work is single-threaded (these tensors are far below
//! the core crate's parallel threshold).

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Mutex;
use std::sync::atomic::{AtomicIsize, Ordering};

use common::{gmm3, normal_rows, vp_grid};
use diffusion_core::NoiseLevel;
use diffusion_inversion::adjoint::{
    adjoint, bdia_adjoint, bdia_unrolled_gradients, sample, unrolled_gradients,
};
use diffusion_inversion::{Bdia, BdiaBase, Grid};
use diffusion_schedules::sigmas::karras_sigmas;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);
/// Held by every test of this binary, so one measurement runs at a time.
static SERIAL: Mutex<()> = Mutex::new(());

thread_local! {
    /// Set on the thread inside [`peak_during`]; only its allocations are counted.
    static MEASURING: Cell<bool> = const { Cell::new(false) };
}

fn measuring() -> bool {
    // `try_with`: the allocator also runs while thread-locals are torn down.
    MEASURING.try_with(Cell::get).unwrap_or(false)
}

// SAFETY: forwards to the system allocator; only adds bookkeeping.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() && measuring() {
            let size = layout.size() as isize;
            let now = LIVE.fetch_add(size, Ordering::SeqCst) + size;
            PEAK.fetch_max(now, Ordering::SeqCst);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) };
        if measuring() {
            LIVE.fetch_sub(layout.size() as isize, Ordering::SeqCst);
        }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Peak bytes that `f`, on this thread, holds live at once.
fn peak_during(f: impl FnOnce()) -> usize {
    let base = LIVE.load(Ordering::SeqCst);
    PEAK.store(base, Ordering::SeqCst);
    MEASURING.with(|m| m.set(true));
    f();
    MEASURING.with(|m| m.set(false));
    (PEAK.load(Ordering::SeqCst) - base) as usize
}

#[test]
fn adjoint_memory_is_independent_of_step_count() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
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

/// BDIA-EDM inversion then sampling in f32 (state in f64): the peak grows only by the
/// grid the latent records (`steps + 1` levels), never by a tensor per step.
#[test]
fn bdia_invert_and_sample_memory_is_independent_of_step_count() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let model = gmm3();
    let x = normal_rows(4096, 5).mapv(|v| v as f32);
    let tensor_bytes = x.len() * std::mem::size_of::<f64>();
    println!("steps | BDIA-EDM invert + sample_from peak bytes (one f64 state vector: {tensor_bytes})");
    let mut peaks = Vec::new();
    for steps in [10, 100, 400] {
        let mut s = karras_sigmas(0.002, 80.0, 7.0, steps);
        s.push(0.0);
        let grid = Grid::edm(&s).unwrap();
        let b = Bdia::new(BdiaBase::EdmHeun, 1.0).unwrap();
        let peak = peak_during(|| {
            let latent = b.invert(&model, &grid, &x).unwrap();
            b.sample_from(&model, &grid, &latent).unwrap();
        });
        println!("{steps:>5} | {peak:>10}");
        peaks.push((steps, peak));
    }
    let ((s0, p0), (s1, p1)) = (peaks[0], peaks[peaks.len() - 1]);
    let grid_growth = 2 * (s1 - s0) * std::mem::size_of::<NoiseLevel>();
    assert!(p1 <= p0 + grid_growth, "{peaks:?}");
}
