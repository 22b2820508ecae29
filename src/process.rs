//! The daemon process's runtime: how many threads it may run and how its heap is kept.
//!
//! Measured with 1,000 endpoints (bench `suite`, REST door): the blocking pool grew to ~50
//! threads (link notifications each read the store on a pool thread, in bursts) and glibc gave
//! most of them an arena of their own, so the heap grew 2.8 → 9.4 MiB. The daemon's blocking
//! work is short and mostly serialised anyway (one redb write transaction at a time, one
//! firewall at a time, netlink under the kernel's rtnl lock), so a few threads do it as fast.

/// Async worker threads (the development and CI machines have 2 cores; more only contend
/// for the kernel's rtnl lock).
pub const WORKER_THREADS: usize = 2;

/// Upper bound of tokio's blocking pool. Every blocking call of the daemon is short (store
/// transactions, firewall commits, sysctl writes, one reachability probe of all peers at a
/// time), so calls beyond this wait in tokio's queue for a few milliseconds instead of each
/// starting a thread.
pub const BLOCKING_THREADS: usize = 8;

/// glibc malloc arenas: one per thread by default (up to 8 per core), each keeping its own
/// freed memory. Two keep lock contention low for a daemon whose threads mostly wait on the
/// kernel.
pub const MALLOC_ARENAS: i32 = 2;

/// Allocations from this size up get pages of their own, given back when freed; freed memory
/// at the top of a heap beyond it is given back too. glibc's default starts here but raises
/// both after every large free (up to 32 MiB / 64 MiB), after which each reconcile pass with
/// 1,000 endpoints (link dump, firewall listing: several MiB for a moment) left more of its
/// buffers in the heap: anonymous memory grew 5 → 11 → 20 → 33 MiB over four passes.
pub const MALLOC_RETURN_BYTES: i32 = 128 * 1024;

/// Builds the daemon's tokio runtime with the limits above; on glibc, first tunes malloc
/// (before any thread exists, so every thread shares its arenas).
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tune_malloc();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKER_THREADS)
        .max_blocking_threads(BLOCKING_THREADS)
        .enable_all()
        .build()
}

/// Caps glibc's malloc arenas at [`MALLOC_ARENAS`] and fixes its mmap and trim thresholds at
/// [`MALLOC_RETURN_BYTES`], each unless the environment sets it (`MALLOC_ARENA_MAX`,
/// `MALLOC_MMAP_THRESHOLD_`, `MALLOC_TRIM_THRESHOLD_`, which glibc reads itself). No-op on
/// other C libraries.
fn tune_malloc() {
    #[cfg(target_env = "gnu")]
    for (env, param, value) in [
        ("MALLOC_ARENA_MAX", libc::M_ARENA_MAX, MALLOC_ARENAS),
        (
            "MALLOC_MMAP_THRESHOLD_",
            libc::M_MMAP_THRESHOLD,
            MALLOC_RETURN_BYTES,
        ),
        (
            "MALLOC_TRIM_THRESHOLD_",
            libc::M_TRIM_THRESHOLD,
            MALLOC_RETURN_BYTES,
        ),
    ] {
        if std::env::var_os(env).is_none() {
            // SAFETY: mallopt only changes allocator parameters; called before other threads.
            unsafe {
                libc::mallopt(param, value);
            }
        }
    }
}

/// Gives the heap's free pages back to the kernel (glibc `malloc_trim`, which also releases
/// whole free pages between live allocations); called after the work that allocates most at
/// once, a full reconcile pass. No-op on other C libraries.
pub fn release_free_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns unused pages of malloc's own heaps.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(all(test, target_env = "gnu"))]
mod tests {
    use super::*;

    fn rss_anon_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("RssAnon:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    /// Both tests measure the whole process's anonymous memory: one at a time.
    static MEASURING: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[test]
    fn large_buffers_go_back_to_the_kernel_when_freed() {
        let _one = MEASURING.lock().unwrap_or_else(|e| e.into_inner());
        tune_malloc();
        // glibc's default would serve the second buffer from the heap (its thresholds raised by
        // the first's free, for sizes up to 32 MiB) and keep it after the free.
        let grown = std::thread::spawn(|| {
            let base = rss_anon_kib();
            for _ in 0..2 {
                drop(std::hint::black_box(vec![1u8; 8 << 20]));
            }
            rss_anon_kib().saturating_sub(base)
        })
        .join()
        .unwrap();
        assert!(
            grown < 4 * 1024,
            "anonymous memory grew by {grown} KiB after two 8 MiB buffers were freed"
        );
    }

    #[test]
    fn free_pages_between_live_allocations_go_back_to_the_kernel() {
        let _one = MEASURING.lock().unwrap_or_else(|e| e.into_inner());
        // 32 MiB in 1 KiB pieces, then all but every 256th freed: the survivors pin the heap,
        // so malloc cannot shrink it from the top and keeps the free pages in between.
        let run = std::thread::spawn(|| {
            let mut pieces: Vec<Box<[u8; 1024]>> =
                (0..32 * 1024).map(|_| Box::new([7; 1024])).collect();
            let survivors: Vec<_> = pieces
                .drain(..)
                .enumerate()
                .filter_map(|(i, p)| (i % 256 == 0).then_some(p))
                .collect();
            let before = rss_anon_kib();
            release_free_memory();
            let after = rss_anon_kib();
            drop(survivors);
            (before, after)
        });
        let (before, after) = run.join().unwrap();
        assert!(
            before.saturating_sub(after) > 16 * 1024,
            "anonymous memory {before} KiB before the trim, {after} KiB after (expected ~32 MiB less)"
        );
    }
}
