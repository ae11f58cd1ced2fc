//! The allocator the binaries run the networks under (feature `mimalloc`).
//!
//! The networks allocate their activations per call; mimalloc keeps freed pages for reuse
//! where glibc returns large blocks to the kernel (page faults, TLB shootdowns). A binary
//! declares it with [`crate::use_mimalloc!`] and calls [`keep_freed_memory`] first thing.

pub use mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (mimalloc.h, v2 and v3).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keeps freed memory committed for reuse instead of returning it to the kernel 10 ms
/// later: a network frees and reallocates the same activation sizes every step, and each
/// return costs a page fault and a zeroed page on the next one. The process keeps its
/// peak footprint.
pub fn keep_freed_memory() {
    // SAFETY: sets a mimalloc option; valid at any time from any thread.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
}

/// Makes mimalloc the global allocator of the binary that invokes it.
#[macro_export]
macro_rules! use_mimalloc {
    () => {
        #[global_allocator]
        static GLOBAL: $crate::alloc::MiMalloc = $crate::alloc::MiMalloc;
    };
}
