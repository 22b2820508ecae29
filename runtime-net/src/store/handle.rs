//! The redb handle of the store, and its recovery after I/O errors (a full disk, a failing
//! device).
//!
//! redb latches the first I/O error of a handle: every later call on it fails with
//! `PreviousIo` until the database is closed and opened again. Opening runs redb's recovery:
//! durable commits are checksummed (1PC+C), so a commit that failed part-way is either complete
//! and kept, or rolled back; every commit that returned `Ok` — everything shimnet acknowledged —
//! is durable and stays. Closing and opening again in-process is therefore exactly what a restart
//! would do to the store, minus the restart, and [`Handle`] does it right after the failing call
//! (and at each later call while opening fails, e.g. while the disk is still full).
//!
//! What this keeps true:
//! - *Nothing acknowledged is lost*: only a call that failed can be in doubt, and its caller got
//!   the error. A failed allocation that turns out to be kept is an ordinary record (the runtime's
//!   DEL after the failed ADD, or reconciliation once its namespace is gone, releases it); a
//!   failed release that turns out to be rolled back is released again by the retried DEL.
//! - *No address is handed out twice*: allocation reads and writes in one transaction of the one
//!   open handle, and the reopened handle sees every acknowledged allocation. A failed call is
//!   never retried here, since its commit may have landed.
//!
//! Reopening is refused, and the condition reported as *fatal*, when it would not be safe in this
//! process: the old handle cannot be closed (a transaction outlived its call), or opening fails
//! for a reason other than I/O (a corrupt file, the file lock still held, an unknown format).
//! Then the records cannot be trusted here; the daemon exits so that the service manager restarts
//! it, and the start either recovers the store or stops with the reason.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use redb::Database;
use tokio::sync::watch;

use super::schema::Fail;

/// Opens the database file (production: a plain file; tests: a fault-injecting backend).
pub(crate) type Opener = Box<dyn Fn(&Path) -> Result<Database, redb::DatabaseError> + Send + Sync>;

/// How the state store is doing, for `/v1/health`, `shimnetctl status` and the metrics.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoreHealth {
    /// The last write reached the disk: false from an I/O failure until a write succeeds again.
    pub healthy: bool,
    /// The database is open (false while opening it again fails).
    pub open: bool,
    /// I/O failures (of calls, and of attempts to open the database again) since the start.
    pub io_errors: u64,
    /// Times the database was closed and opened again after one.
    pub reopens: u64,
    /// The last I/O failure, or failed reopen.
    pub last_error: Option<String>,
    /// Set when reopening is unsafe: the daemon must exit and be restarted.
    pub fatal: Option<String>,
}

impl Default for StoreHealth {
    fn default() -> Self {
        StoreHealth {
            healthy: true,
            open: true,
            io_errors: 0,
            reopens: 0,
            last_error: None,
            fatal: None,
        }
    }
}

/// An open database and the number of times it was (re)opened.
struct Slot {
    db: Option<Database>,
    generation: u64,
}

/// The store's database handle; see the module doc.
pub(crate) struct Handle {
    slot: RwLock<Slot>,
    path: PathBuf,
    opener: Opener,
    health: watch::Sender<StoreHealth>,
    last_probe: Mutex<Option<Instant>>,
}

/// Whether a redb error is an I/O failure (this call's, or latched by an earlier one).
fn is_io(e: &redb::Error) -> bool {
    matches!(e, redb::Error::Io(_) | redb::Error::PreviousIo)
}

/// Whether a failed open may be tried again later rather than being fatal: the operating system
/// refused an I/O (no space, a failing device). redb also reports a file that is not a database
/// as an I/O error, but one without an OS error code: that, and everything else, is fatal.
fn open_is_transient(e: &redb::DatabaseError) -> bool {
    match e {
        redb::DatabaseError::Storage(redb::StorageError::Io(io)) => io.raw_os_error().is_some(),
        redb::DatabaseError::Storage(redb::StorageError::PreviousIo) => true,
        _ => false,
    }
}

impl Handle {
    /// Opens `path` with `opener`.
    pub(crate) fn open(path: PathBuf, opener: Opener) -> Result<Self, redb::DatabaseError> {
        let db = opener(&path)?;
        Ok(Handle {
            slot: RwLock::new(Slot {
                db: Some(db),
                generation: 0,
            }),
            path,
            opener,
            health: watch::Sender::new(StoreHealth::default()),
            last_probe: Mutex::new(None),
        })
    }

    /// Runs `op` on the open database (opening it first if an earlier reopen failed). A write
    /// that succeeds marks the store healthy; an I/O failure is counted and the database is
    /// closed and opened again before the error is returned.
    pub(crate) fn with<T>(
        &self,
        writes: bool,
        op: impl FnOnce(&Database) -> Result<T, Fail>,
    ) -> Result<T, Fail> {
        self.with_generation(writes, |db, _| op(db))
    }

    /// [`Handle::with`], telling `op` how many times the database was opened again before it.
    /// Commits not yet durable live only as long as that number stays the same: a reopen
    /// recovers the file to its last durable commit.
    pub(crate) fn with_generation<T>(
        &self,
        writes: bool,
        op: impl FnOnce(&Database, u64) -> Result<T, Fail>,
    ) -> Result<T, Fail> {
        let slot = self.ensure_open()?;
        let generation = slot.generation;
        let Some(db) = slot.db.as_ref() else {
            return Err(self.unavailable());
        };
        let res = op(db, generation);
        drop(slot);
        match &res {
            Err(Fail::Db(e)) if is_io(e) => self.io_failure(e, generation),
            Ok(_) if writes => {
                let recovered = self
                    .health
                    .send_if_modified(|h| !std::mem::replace(&mut h.healthy, true));
                if recovered {
                    tracing::info!(store = %self.path.display(), "state store writes again");
                }
            }
            _ => {}
        }
        res
    }

    /// A read guard on an open database, opening it first if it is closed.
    fn ensure_open(&self) -> Result<std::sync::RwLockReadGuard<'_, Slot>, Fail> {
        let slot = self.slot.read().unwrap_or_else(PoisonError::into_inner);
        if slot.db.is_some() {
            return Ok(slot);
        }
        let generation = slot.generation;
        drop(slot);
        self.reopen(generation);
        let slot = self.slot.read().unwrap_or_else(PoisonError::into_inner);
        if slot.db.is_some() {
            Ok(slot)
        } else {
            Err(self.unavailable())
        }
    }

    fn unavailable(&self) -> Fail {
        let h = self.health.borrow();
        let why = h
            .fatal
            .clone()
            .or_else(|| h.last_error.clone())
            .unwrap_or_else(|| "closed".into());
        Fail::Unavailable(format!("not open after an I/O error: {why}"))
    }

    /// Counts an I/O failure and reopens. redb's latched `PreviousIo` (a call that ran on the
    /// handle beside the one that failed, before the reopen) is counted but does not replace
    /// the cause already recorded as `last_error`.
    fn io_failure(&self, e: &redb::Error, generation: u64) {
        tracing::error!(store = %self.path.display(), "state store I/O error: {e}; reopening it");
        let latched = matches!(e, redb::Error::PreviousIo);
        self.health.send_modify(|h| {
            h.healthy = false;
            h.io_errors += 1;
            if !latched || h.last_error.is_none() {
                h.last_error = Some(e.to_string());
            }
        });
        self.reopen(generation);
    }

    /// Closes and opens the database again, unless that was done since `generation` was seen.
    fn reopen(&self, generation: u64) {
        let mut slot = self.slot.write().unwrap_or_else(PoisonError::into_inner);
        if slot.generation != generation || self.health.borrow().fatal.is_some() {
            return;
        }
        slot.generation += 1;
        if let Some(old) = slot.db.take() {
            match old.close() {
                // After a latched I/O failure redb writes nothing more; the next open recovers.
                Ok(()) | Err(redb::DatabaseError::Storage(_)) => {}
                Err(e) => {
                    return self.fatal(format!("the failed handle cannot be closed: {e}"));
                }
            }
        }
        match (self.opener)(&self.path) {
            Ok(db) => {
                slot.db = Some(db);
                self.health.send_modify(|h| {
                    h.open = true;
                    h.reopens += 1;
                });
                tracing::warn!(store = %self.path.display(), "state store reopened");
            }
            Err(e) if open_is_transient(&e) => {
                tracing::error!(store = %self.path.display(), "reopening the state store failed: {e}; trying again at the next call");
                self.health.send_modify(|h| {
                    h.healthy = false;
                    h.open = false;
                    h.io_errors += 1;
                    h.last_error = Some(format!("reopening: {e}"));
                });
            }
            Err(e) => self.fatal(format!("reopening failed: {e}")),
        }
    }

    fn fatal(&self, msg: String) {
        tracing::error!(store = %self.path.display(), "state store cannot be reopened safely in this process: {msg}");
        self.health.send_modify(|h| {
            h.healthy = false;
            h.open = false;
            h.fatal = Some(msg);
        });
    }

    /// The current health.
    pub(crate) fn health(&self) -> StoreHealth {
        self.health.borrow().clone()
    }

    /// Health changes (the daemon exits when `fatal` is set).
    pub(crate) fn subscribe(&self) -> watch::Receiver<StoreHealth> {
        self.health.subscribe()
    }

    /// Whether an unhealthy store may be probed now (at most once a second).
    pub(crate) fn probe_due(&self) -> bool {
        let h = self.health.borrow();
        if h.healthy || h.fatal.is_some() {
            return false;
        }
        drop(h);
        let mut last = self
            .last_probe
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let due = last.is_none_or(|t| t.elapsed() >= Duration::from_secs(1));
        if due {
            *last = Some(Instant::now());
        }
        due
    }
}
