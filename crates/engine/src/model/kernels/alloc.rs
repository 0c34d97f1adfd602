//! The allocator setting the forward pass wants from a process.
//!
//! Every candle op returns a fresh buffer, and a prompt batch's buffers are megabytes each
//! (8 prompts of 300 tokens make a 15 MB MLP activation). glibc serves blocks over its
//! dynamic threshold with `mmap` and returns freed heap tops to the kernel, so each op
//! page-faulted its output in again: `perf` counted 17% of prefill time in the kernel's page
//! fault, zeroing and unmapping code. Keeping freed memory in the heap removes that.

/// Blocks up to this size come from the heap, whose freed memory is reused.
const HEAP_BLOCKS_UP_TO: i32 = 32 << 20; // glibc's largest accepted threshold on 64-bit
/// Freed memory at the top of the heap is kept up to this much.
const KEEP_FREED: i32 = 1 << 30;

/// Ask glibc's malloc to keep freed memory for reuse instead of returning it to the kernel
/// (on other C libraries this does nothing). It is a process-wide setting, so the library never
/// makes it itself: the `ctxsteer` binary calls it once at start, and a program that embeds the
/// library may. The resident size then stays near its high-water mark; the peak is unchanged.
/// Returns whether both settings were accepted.
pub fn keep_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes malloc's tuning parameters.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, HEAP_BLOCKS_UP_TO) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, KEEP_FREED) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        let _ = (HEAP_BLOCKS_UP_TO, KEEP_FREED);
        false
    }
}

/// Hand the heap's freed memory back to the kernel (glibc's `malloc_trim`; elsewhere nothing).
/// [`Model::load`](crate::model::Model::load) calls it once the weights are in place: loading frees
/// the GGUF's metadata and the tokenizer's building blocks (15 MB for the default model),
/// which [`keep_freed_memory`] would otherwise keep resident beside the weights, where the
/// small buffers of a short prompt never reuse them all. Unlike the settings above it changes
/// nothing for later allocations, so the library may call it.
pub(in crate::model) fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns unused heap pages to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    #[test]
    fn glibc_accepts_both_settings() {
        assert!(super::keep_freed_memory());
    }
}
