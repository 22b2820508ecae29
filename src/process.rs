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

/// Builds the daemon's tokio runtime with the limits above; on glibc, first caps the number
/// of malloc arenas (before any thread exists, so every thread shares them).
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    limit_malloc_arenas();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKER_THREADS)
        .max_blocking_threads(BLOCKING_THREADS)
        .enable_all()
        .build()
}

/// Caps glibc's malloc arenas at [`MALLOC_ARENAS`] unless `MALLOC_ARENA_MAX` in the
/// environment says otherwise (glibc reads that itself). No-op on other C libraries.
fn limit_malloc_arenas() {
    #[cfg(target_env = "gnu")]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only changes allocator parameters; called before other threads.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS);
        }
    }
}
