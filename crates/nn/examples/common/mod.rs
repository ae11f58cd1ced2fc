//! Timing and allocator settings shared by the probes (each probe uses a part).
#![allow(dead_code)]

use std::time::Instant;

/// Seconds of the fastest of `reps` runs of `f`, after one warm-up run.
pub fn best(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

/// mimalloc's `mi_option_purge_delay` (mimalloc.h, v2 and v3). At -1 freed memory stays
/// committed for reuse instead of going back to the kernel 10 ms later: the networks free and
/// reallocate the same activation sizes every step, and each return cost a page fault and a
/// zeroed page on the next step (unet-small: 43 000 page faults in 8 steps, 10-15% of the CPU
/// time; with this setting 600). The process keeps its peak footprint.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

pub fn keep_freed_memory() {
    // SAFETY: sets a mimalloc option; valid at any time from any thread.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
}
