//! The process heap's settings for a relay (glibc's malloc; elsewhere every call does nothing).
//!
//! Relaying allocates and frees a few frames' worth of buffers per chunk (noise's decrypt buffer,
//! yamux frame bodies, in rust-libp2p). Two costs follow, and one setting each answers them:
//!
//! * **CPU.** With glibc's default settings the heap's top is handed back to the kernel as soon
//!   as those buffers are freed and faulted in again, zeroed, on the next chunk: about 130,000
//!   page faults per GiB relayed, a fifth of the relay's CPU. Keeping [`HEAP_TOP_PAD`] bytes at
//!   the top of each heap removes them (fewer than 2,000 faults per GiB):
//!   [`keep_heap_headroom`].
//! * **Memory.** A burst (many sessions filling their flow-control windows at once) leaves the
//!   heap full of freed chunks between live ones, which glibc never returns by itself, spread
//!   over one heap per thread (up to eight per core). A relay's resident memory then tracks its
//!   past peak, not what it holds. [`limit_arenas`] keeps one heap per core and the scavenger
//!   ([`start_scavenger`]) hands whole free pages back to the kernel every [`SCAVENGE_INTERVAL`]:
//!   relay memory growth per session under 50 slow readers fell from 87–163 KiB to 61–72 KiB
//!   (BENCHMARKS.md, section 10).
//!
//! [`tune_for_relay`] applies all three; the `macula-relay` binary calls it first thing.

use std::time::Duration;

/// Bytes glibc's malloc keeps at the top of a heap when it grows or trims it (`M_TOP_PAD`).
pub const HEAP_TOP_PAD: usize = 1 << 20;

/// How often the scavenger started by [`tune_for_relay`] returns freed heap pages to the
/// kernel. Often enough that a burst's memory is back within a second; rarely enough that a busy
/// relay faults the returned pages in again a few hundred times a second at most (against
/// 30,000 times a second without [`HEAP_TOP_PAD`]).
pub const SCAVENGE_INTERVAL: Duration = Duration::from_secs(1);

/// Applies every heap setting of this module for a relay process: [`keep_heap_headroom`],
/// [`limit_arenas`] to one heap per core (`std::thread::available_parallelism`; tokio runs one
/// worker per core) and [`start_scavenger`] with [`SCAVENGE_INTERVAL`]. Call it once, at process
/// start, before the async runtime starts its threads (a heap limit only binds threads that
/// have not allocated yet). Returns whether the settings were applied: `false` on other C
/// libraries (musl, non-Linux), where it does nothing.
pub fn tune_for_relay() -> bool {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let headroom = keep_heap_headroom();
    let arenas = limit_arenas(cores);
    let scavenger = start_scavenger(SCAVENGE_INTERVAL);
    headroom && arenas && scavenger
}

/// Keeps [`HEAP_TOP_PAD`] bytes at the top of the process's heaps (glibc's `M_TOP_PAD`; it also
/// fixes the thresholds glibc otherwise adjusts at run time). Returns whether the setting was
/// applied: `false` on other C libraries (musl, non-Linux), where it does nothing.
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

/// Caps the number of heaps ("arenas") glibc's malloc creates for the process's threads at
/// `arenas` (at least 1; glibc's default is eight per core). Threads that allocated before the
/// call keep the heap they have. Returns whether the setting was applied: `false` on other C
/// libraries, where it does nothing.
pub fn limit_arenas(arenas: usize) -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let arenas = libc::c_int::try_from(arenas.max(1)).unwrap_or(libc::c_int::MAX);
        // SAFETY: as in `keep_heap_headroom`.
        unsafe { libc::mallopt(libc::M_ARENA_MAX, arenas) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        let _ = arenas;
        false
    }
}

/// Hands every whole free page of the process's heaps back to the kernel now (glibc's
/// `malloc_trim(0)`), the ones between live chunks included. Returns whether any memory was
/// released; always `false` on other C libraries.
pub fn release_free_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim takes each heap's lock like malloc does; safe from any thread.
        unsafe { libc::malloc_trim(0) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// Starts the scavenger: a thread (`heap-scavenger`) that calls [`release_free_memory`] every
/// `interval` for the rest of the process. At most one runs per process: returns `true` if this
/// call started it, `false` if one was already running, the thread could not be spawned, or the
/// C library has nothing to release (not glibc).
pub fn start_scavenger(interval: Duration) -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::sync::atomic::{AtomicBool, Ordering};
        static STARTED: AtomicBool = AtomicBool::new(false);
        if STARTED.swap(true, Ordering::SeqCst) {
            return false;
        }
        let spawned = std::thread::Builder::new()
            .name("heap-scavenger".into())
            .spawn(move || loop {
                std::thread::sleep(interval);
                release_free_memory();
            });
        if spawned.is_err() {
            STARTED.store(false, Ordering::SeqCst);
        }
        spawned.is_ok()
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        let _ = interval;
        false
    }
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    /// Resident memory of this process, from `/proc/self/statm`.
    fn resident_bytes() -> usize {
        let statm = std::fs::read_to_string("/proc/self/statm").expect("statm");
        let pages: usize = statm
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse().ok())
            .expect("resident pages");
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        pages * page
    }

    #[test]
    fn releasing_free_memory_returns_the_free_pages_between_live_chunks() {
        // 64 MiB in 16 KiB chunks (below glibc's mmap threshold, so from the heap), touched;
        // then every chunk but one in 16 freed: the live ones pin the heap's top, so only
        // `malloc_trim` can give the 60 MiB in between back.
        const CHUNK: usize = 16 * 1024;
        const CHUNKS: usize = 4096;
        let mut chunks: Vec<Vec<u8>> = (0..CHUNKS).map(|i| vec![i as u8 | 1; CHUNK]).collect();
        let mut kept = Vec::new();
        for (i, chunk) in chunks.drain(..).enumerate() {
            if i % 16 == 0 {
                kept.push(chunk);
            }
        }
        let before = resident_bytes();
        assert!(release_free_memory(), "malloc_trim released nothing");
        let after = resident_bytes();
        // Other tests run in parallel threads of this process: leave them 28 MiB of slack.
        assert!(
            before.saturating_sub(after) > 32 << 20,
            "resident memory {before} -> {after} bytes: the freed chunks were not returned"
        );
        assert!(kept
            .iter()
            .enumerate()
            .all(|(i, c)| c[0] == (i * 16) as u8 | 1));
    }

    #[test]
    fn only_one_scavenger_runs_per_process() {
        let first = start_scavenger(Duration::from_secs(3600));
        let second = start_scavenger(Duration::from_secs(3600));
        assert!(!second, "a second scavenger was started");
        // `first` is false only if another test of this process started one already.
        let _ = first;
    }
}
