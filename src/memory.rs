//! Giving memory back to the operating system after a snapshot is built.
//!
//! Building a snapshot parses every list into temporary rules and sort buffers (several
//! times the size of the finished matcher). glibc keeps freed memory for reuse rather than
//! returning it, so without this a Raspberry Pi would carry the build's peak for good.

/// Allocations at least this large get their own mapping, returned to the system the
/// moment they are freed.
const MMAP_THRESHOLD: i32 = 256 * 1024;

/// Set the allocator up for a long-running daemon that rebuilds big tables: call once,
/// at start-up, before any large allocation.
///
/// glibc serves an allocation above its mmap threshold with a mapping of its own, but it
/// raises that threshold each time such a mapping is freed (up to 32 MiB). After the
/// first reload the next snapshot's tables therefore come from the heap, where the old
/// snapshot's freed tables stay resident: measured, RSS stayed at the reload's peak
/// (2× the resting size) for good. A fixed threshold keeps every big table in its own
/// mapping, so freeing the old snapshot gives its memory straight back.
pub fn configure() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn mallopt(param: i32, value: i32) -> i32;
        }
        const M_MMAP_THRESHOLD: i32 = -3;
        // SAFETY: mallopt only changes glibc's allocation policy for later allocations.
        unsafe {
            mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        }
    }
}

/// Return freed heap memory to the operating system, where the allocator supports it
/// (glibc on Linux); elsewhere a no-op.
pub fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn malloc_trim(pad: usize) -> i32;
        }
        // SAFETY: malloc_trim only releases free memory held by glibc's allocator; it
        // touches no live allocation and is safe to call at any time from any thread.
        unsafe {
            malloc_trim(0);
        }
    }
}
