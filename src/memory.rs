//! Giving memory back to the operating system after a snapshot is built.
//!
//! Building a snapshot parses every list into temporary rules and sort buffers (several
//! times the size of the finished matcher). glibc keeps freed memory for reuse rather than
//! returning it, so without this a Raspberry Pi would carry the build's peak for good.

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
