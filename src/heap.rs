//! The process heap's settings for a relay.
//!
//! Relaying allocates and frees a few frames' worth of buffers per chunk (noise's decrypt buffer,
//! yamux frame bodies, in rust-libp2p). With glibc's default settings the heap's top is handed
//! back to the kernel as soon as those buffers are freed and faulted in again, zeroed, on the
//! next chunk: about 130,000 page faults per GiB relayed, a fifth of the relay's CPU. Keeping
//! [`HEAP_TOP_PAD`] bytes at the top of each heap removes them (fewer than 2,000 faults per GiB),
//! for at most that much memory per heap kept from the kernel.

/// Bytes glibc's malloc keeps at the top of a heap when it grows or trims it (`M_TOP_PAD`).
pub const HEAP_TOP_PAD: usize = 1 << 20;

/// Keeps [`HEAP_TOP_PAD`] bytes at the top of the process's heaps (glibc's `M_TOP_PAD`; it also
/// fixes the thresholds glibc otherwise adjusts at run time). Call it once, at process start, in
/// a relay node's binary. Returns whether the setting was applied: `false` on other C libraries
/// (musl, non-Linux), where it does nothing.
pub fn keep_heap_headroom() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let pad = libc::c_int::try_from(HEAP_TOP_PAD).unwrap_or(libc::c_int::MAX);
        // SAFETY: mallopt only changes malloc's tuning parameters; it is safe to call at any
        // time from any thread.
        unsafe { libc::mallopt(libc::M_TOP_PAD, pad) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}
