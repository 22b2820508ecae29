//! A store whose disk fills up: a redb backend over the real file that refuses writes with
//! ENOSPC while a switch is on. The failing call gets the I/O error, the store reopens itself,
//! later calls work once space is back, nothing acknowledged is lost and no address is handed
//! out twice — without opening a new `Store`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::OpenOptions;
use std::io;
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use redb::backends::FileBackend;
use redb::{BackendError, Database, StorageBackend};

use super::{name, req, spec};
use crate::store::{Store, StoreError};

/// The real file, with writes refused while `full` is set.
#[derive(Debug)]
struct FillingDisk {
    inner: FileBackend,
    full: Arc<AtomicBool>,
}

impl FillingDisk {
    fn refuse(&self) -> io::Result<()> {
        if self.full.load(Ordering::SeqCst) {
            Err(io::Error::from_raw_os_error(libc::ENOSPC))
        } else {
            Ok(())
        }
    }
}

impl StorageBackend for FillingDisk {
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.inner.read(offset, out)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        if len > self.inner.len()? {
            self.refuse()?;
        }
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.inner.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.refuse()?;
        self.inner.write(offset, data)
    }
    fn close(&self) -> io::Result<()> {
        self.inner.close()
    }
    fn try_lock_range(&self, s: Bound<u64>, e: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_range(s, e)
    }
    fn try_lock_shared_range(&self, s: Bound<u64>, e: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_shared_range(s, e)
    }
    fn lock_range(&self, s: Bound<u64>, e: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_range(s, e)
    }
    fn lock_shared_range(&self, s: Bound<u64>, e: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_shared_range(s, e)
    }
    fn unlock_range(&self, s: Bound<u64>, e: Bound<u64>) -> Result<(), BackendError> {
        self.inner.unlock_range(s, e)
    }
    fn query_lock_range(&self, s: Bound<u64>, e: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.query_lock_range(s, e)
    }
}

/// Switches of one simulated disk: writes refused (full), opening refused (an I/O error).
#[derive(Default, Clone)]
struct Disk {
    full: Arc<AtomicBool>,
    open_fails: Arc<AtomicBool>,
}

impl Disk {
    fn set_full(&self, on: bool) {
        self.full.store(on, Ordering::SeqCst);
    }
    fn set_open_fails(&self, on: bool) {
        self.open_fails.store(on, Ordering::SeqCst);
    }
}

fn open(dir: &std::path::Path, disk: &Disk) -> Store {
    let disk = disk.clone();
    Store::open_with(
        dir,
        Box::new(move |path| {
            if disk.open_fails.load(Ordering::SeqCst) {
                return Err(io::Error::from_raw_os_error(libc::EIO).into());
            }
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)?;
            let backend = FillingDisk {
                inner: FileBackend::new(file)?,
                full: disk.full.clone(),
            };
            Database::builder().create_with_backend(backend)
        }),
    )
    .unwrap()
}

/// A store on a fresh file over `Disk`, holding one network (the directory lives as long as the
/// returned guard).
fn with_network(name: &str, subnet: &str, gateway: &str) -> (tempfile::TempDir, Disk, Store) {
    let tmp = tempfile::tempdir().unwrap();
    let disk = Disk::default();
    let st = open(tmp.path(), &disk);
    st.insert_network(&spec(name, subnet, gateway)).unwrap();
    (tmp, disk, st)
}

fn is_enospc(e: &StoreError) -> bool {
    e.to_string().contains("No space left on device")
}

#[test]
fn store_recovers_by_itself_once_the_disk_has_room_again() {
    let (tmp, disk, st) = with_network("fl", "10.40.0.0/24", "10.40.0.1");
    let mut acked: BTreeMap<String, String> = BTreeMap::new();
    for i in 0..5 {
        let (rec, created) = st.allocate_endpoint(&req("fl", &format!("c{i}"))).unwrap();
        assert!(created);
        acked.insert(format!("c{i}"), rec.ipv4.to_string());
    }
    assert!(st.health().healthy);

    // Disk full: every call fails with the I/O error itself (the store's own, or that of
    // opening the database again), never with redb's latched "previous I/O error".
    disk.set_full(true);
    for i in 0..3 {
        let e = st
            .allocate_endpoint(&req("fl", &format!("x{i}")))
            .unwrap_err();
        assert!(is_enospc(&e), "{e}");
        let e = st.release_endpoint(&req("fl", "c0").key).unwrap_err();
        assert!(is_enospc(&e), "{e}");
    }
    let h = st.probe();
    assert!(!h.healthy, "{h:?}");
    assert!(h.io_errors >= 6, "{h:?}");
    assert!(h.fatal.is_none(), "{h:?}");
    assert!(h.last_error.unwrap().contains("No space left on device"));

    // Space again: the same store writes, and holds exactly what was acknowledged.
    disk.set_full(false);
    let (rec, created) = st.allocate_endpoint(&req("fl", "c5")).unwrap();
    assert!(created);
    acked.insert("c5".into(), rec.ipv4.to_string());
    assert!(st.release_endpoint(&req("fl", "c0").key).unwrap().is_some());
    acked.remove("c0");
    let h = st.health();
    assert!(h.healthy && h.open && h.reopens >= 1, "{h:?}");
    let check = |st: &Store| {
        let now: BTreeMap<String, String> = st
            .endpoints(None)
            .unwrap()
            .into_iter()
            .map(|e| (e.key.container_id.to_string(), e.ipv4.to_string()))
            .collect();
        assert_eq!(now, acked);
        let ips: BTreeSet<&String> = now.values().collect();
        assert_eq!(ips.len(), now.len(), "an address owned twice");
        let allocs = st.network_allocations(&name("fl")).unwrap();
        assert_eq!(allocs.len(), now.len(), "allocation rows match the records");
    };
    check(&st);
    drop(st);
    check(&open(tmp.path(), &disk));
}

#[test]
fn a_failing_reopen_is_tried_again_at_the_next_call() {
    let (_tmp, disk, st) = with_network("fr", "10.41.0.0/24", "10.41.0.1");
    let (a, _) = st.allocate_endpoint(&req("fr", "a")).unwrap();
    disk.set_full(true);
    disk.set_open_fails(true);
    let e = st.allocate_endpoint(&req("fr", "b")).unwrap_err();
    assert!(is_enospc(&e), "{e}");
    let h = st.health();
    assert!(!h.open && h.fatal.is_none(), "{h:?}");
    let e = st.endpoints(None).unwrap_err();
    assert!(e.to_string().contains("not open"), "{e}");
    disk.set_full(false);
    disk.set_open_fails(false);
    let (b, created) = st.allocate_endpoint(&req("fr", "b")).unwrap();
    assert!(created && b.ipv4 != a.ipv4);
    let h = st.health();
    assert!(h.open && h.healthy && h.reopens == 1, "{h:?}");
}

#[test]
fn reopening_a_file_it_cannot_trust_is_fatal() {
    let (_tmp, disk, st) = with_network("fc", "10.42.0.0/24", "10.42.0.1");
    let mut changes = st.subscribe_health();
    // Another writer scribbled over the file; the next I/O error makes the store reopen it.
    std::fs::write(st.path(), vec![0x55u8; 16384]).unwrap();
    disk.set_full(true);
    assert!(st.allocate_endpoint(&req("fc", "c")).is_err());
    disk.set_full(false);
    let h = st.health();
    assert!(h.fatal.is_some(), "{h:?}");
    assert!(!h.open && !h.healthy);
    assert!(changes.has_changed().unwrap());
    assert!(changes.borrow_and_update().fatal.is_some());
    let e = st.endpoints(None).unwrap_err();
    assert!(e.to_string().contains("not open"), "{e}");
}

#[test]
fn a_latched_error_beside_the_failing_call_keeps_the_cause_in_the_health() {
    use crate::store::handle::Handle;
    use crate::store::schema::Fail;
    let tmp = tempfile::tempdir().unwrap();
    let h = Handle::open(tmp.path().join("h.redb"), Box::new(|p| Database::create(p))).unwrap();
    let enospc = || redb::Error::Io(io::Error::from_raw_os_error(libc::ENOSPC));
    // The call that hit the full disk, then one that ran beside it on the same handle and got
    // redb's latched error before the reopen.
    assert!(h.with(true, |_| Err::<(), _>(Fail::Db(enospc()))).is_err());
    assert!(h
        .with(true, |_| Err::<(), _>(Fail::Db(redb::Error::PreviousIo)))
        .is_err());
    let st = h.health();
    assert_eq!(st.io_errors, 2, "{st:?}");
    assert!(!st.healthy, "{st:?}");
    let cause = st.last_error.unwrap_or_default();
    assert!(cause.contains("No space left on device"), "{cause}");
    // A new failure of its own replaces it.
    let eio = redb::Error::Io(io::Error::from_raw_os_error(libc::EIO));
    assert!(h.with(true, |_| Err::<(), _>(Fail::Db(eio))).is_err());
    let cause = h.health().last_error.unwrap_or_default();
    assert!(cause.contains("Input/output error"), "{cause}");
}

#[test]
fn a_reservation_is_durable_only_once_flushed_and_a_reopen_between_loses_it_loudly() {
    let (tmp, disk, st) = with_network("fr", "10.41.0.0/24", "10.41.0.1");
    // Reserved and flushed: kept across a reopen of the file.
    let (kept, created, token) = st.reserve_endpoint(&req("fr", "c0")).unwrap();
    assert!(created);
    st.flush(token).unwrap();

    // Reserved, then another call hits a full disk and the store reopens itself (recovering the
    // file to its last durable commit): the flush must not report the lost reservation as
    // durable.
    let (_, created, token) = st.reserve_endpoint(&req("fr", "c1")).unwrap();
    assert!(created);
    disk.set_full(true);
    let e = st.release_endpoint(&req("fr", "c0").key).unwrap_err();
    assert!(is_enospc(&e), "{e}");
    disk.set_full(false);
    let e = st.flush(token).unwrap_err();
    assert!(e.to_string().contains("reservation was lost"), "{e}");
    let ids: Vec<String> = st
        .endpoints(None)
        .unwrap()
        .into_iter()
        .map(|e| e.key.container_id.to_string())
        .collect();
    assert_eq!(ids, ["c0"]);
    drop(st);
    let st = open(tmp.path(), &disk);
    let all = st.endpoints(None).unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].ipv4, kept.ipv4);
}
