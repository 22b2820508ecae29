//! The repair loop: notifications → [`Driver`] → [`Repairer`], plus the periodic safety pass.

use std::collections::HashSet;
use std::future::Future;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};

use super::driver::{Driver, Outcome, Timing};
use super::listen::{Listener, Note};
use super::Dirty;

/// Checks of one batch run side by side, at most this many at a time.
const CONCURRENT_CHECKS: usize = 64;

/// What the loop repairs with (the engine, or a test's stand-in).
pub trait Repairer: Sync {
    /// Bridge names shimnet owns (beyond owner aliases), refreshed after every batch.
    fn bridges(&self) -> impl Future<Output = HashSet<String>> + Send;
    /// Checks `d` against its desired state and puts back what differs; `Ok(true)` when
    /// something had to be changed, `Ok(false)` when all was in place.
    fn repair(&self, d: &Dirty) -> impl Future<Output = Result<bool, String>> + Send;
    /// The outcome of one check, `latency` from the first notification to the end of the repair.
    fn report(&self, d: &Dirty, outcome: &Result<bool, String>, latency: Duration);
}

/// Settings of the loop.
#[derive(Debug, Clone, Copy)]
pub struct RunConfig {
    /// Coalescing.
    pub timing: Timing,
    /// Period of the full safety pass (`None`: never).
    pub full_every: Option<Duration>,
}

/// Whether `tid` is a thread of this process (`/proc/self/task/<tid>`): nftables names the
/// committing thread, and the daemon commits from its worker threads.
pub fn own_thread(tid: u32) -> bool {
    std::path::Path::new(&format!("/proc/self/task/{tid}")).exists()
}

/// Subscribes in the current namespace, then learns the links present; call before anything
/// else may change and hand the result to [`run`]. `is_own` tells the daemon's own nftables
/// transactions (usually [`own_thread`]).
pub async fn start(
    is_own: super::nft::IsOwn,
    timing: Timing,
) -> std::io::Result<(Listener, Driver)> {
    let listener = Listener::subscribe()?;
    let mut driver = Driver::new(is_own, timing);
    let (conn, handle, _) = rtnetlink::new_connection()?;
    let conn = tokio::spawn(conn);
    let links: Vec<_> = handle
        .link()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    conn.abort();
    driver.seed(&links, &HashSet::<String>::new());
    Ok((listener, driver))
}

/// Runs until `stop` resolves or the subscription fails (the error is returned; the caller may
/// subscribe again and ask for a full pass).
pub async fn run<R: Repairer>(
    mut listener: Listener,
    mut driver: Driver,
    repairer: &R,
    cfg: RunConfig,
    stop: impl Future<Output = ()>,
) -> std::io::Result<()> {
    tokio::pin!(stop);
    let mut owned = repairer.bridges().await;
    let mut notes: Vec<Note> = Vec::new();
    let far = Duration::from_secs(365 * 24 * 3600);
    let mut full = tokio::time::interval(cfg.full_every.unwrap_or(far));
    full.tick().await; // the first tick is immediate; the daemon's start pass covers it
    loop {
        let wake = driver
            .deadline()
            .map(tokio::time::Instant::from_std)
            .unwrap_or_else(|| tokio::time::Instant::now() + far);
        tokio::select! {
            _ = &mut stop => return Ok(()),
            r = listener.next(&mut notes) => {
                r?;
                let now = Instant::now();
                for n in notes.drain(..) {
                    driver.feed(&n, &owned, now);
                }
            }
            _ = full.tick(), if cfg.full_every.is_some() => driver.add(Dirty::All, Instant::now()),
            _ = tokio::time::sleep_until(wake) => {
                let Some(batch) = driver.due(Instant::now()) else { continue };
                // Bridges first (re-creating one puts all its ports back), then the rest side
                // by side: a deleted bridge with a thousand ports is a thousand port
                // notifications, which one after the other would take seconds.
                let (first_pass, rest): (Vec<_>, Vec<_>) = batch
                    .objects
                    .into_iter()
                    .partition(|(d, _)| matches!(d, Dirty::Bridge(_) | Dirty::All));
                for objects in [first_pass, rest] {
                    let mut checks = futures::stream::iter(objects)
                        .map(|(d, first)| async move {
                            let outcome = repairer.repair(&d).await;
                            (d, first, outcome)
                        })
                        .buffer_unordered(CONCURRENT_CHECKS);
                    while let Some((d, first, outcome)) = checks.next().await {
                        let now = Instant::now();
                        driver.done(&d, Outcome::of(&outcome), first, now);
                        repairer.report(&d, &outcome, now.duration_since(first));
                    }
                }
                owned = repairer.bridges().await;
            }
        }
    }
}
