//! Crash-safe state: networks, endpoint records and IPAM allocations in one redb database.
//!
//! Everything lives in `<state dir>/shimnet.redb`. Each mutating call is one write transaction
//! committed with immediate durability (fsync before returning), so an acknowledged call survives
//! `kill -9` and power loss, and a call interrupted half-way leaves no trace. redb serialises
//! write transactions, so concurrent callers never see each other's half-done allocations.
//!
//! One exception, for speed: [`Store::reserve_endpoint`] commits without waiting for the disk
//! (visible to every later transaction at once) and hands back an [`Unflushed`] token; the
//! caller builds the endpoint while [`Store::flush`] makes the reservation durable, and
//! acknowledges only once both are done. A flush fails if the database was reopened after an I/O
//! error in between (the reopen recovers the file to its last durable commit).

mod alloc;
mod handle;
pub mod legacy;
mod pools;
mod schema;
#[cfg(test)]
mod tests;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use ipnetwork::{Ipv4Network, Ipv6Network};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, WriteTransaction};

use crate::ipam::{default_mac, Family, IpamError, Pool};
use crate::plan::bridges::BridgeLayout;
use crate::plan::ports::{self, PortRequest, PortsTaken};
use crate::types::{
    EndpointKey, EndpointKind, EndpointRecord, HostName, IfName, MacAddr, NetworkName, NetworkSpec,
    PortMapping,
};
use alloc::{pool_rows, PoolTables};
pub use handle::StoreHealth;
use handle::{Handle, Opener};
use schema::{
    endpoint_key, from_json, net4_pool, net6_pool, net_ipam, network_endpoint_range, to_json, Fail,
    ALLOCATIONS, BRIDGE_PORTS, CURSORS, ENDPOINTS, ENDPOINT_COUNTS, META, NETWORKS, POOLS,
    SCHEMA_VERSION,
};

/// File name of the database inside the state directory.
pub const DB_FILE: &str = "shimnet.redb";

/// Store failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database itself failed (I/O, corruption).
    #[error("state store {path}: {msg}")]
    Db { path: PathBuf, msg: String },
    /// A network of that name is already recorded.
    #[error("network {0} already exists")]
    NetworkExists(NetworkName),
    /// No network of that name.
    #[error("network {0} not found")]
    NoSuchNetwork(NetworkName),
    /// The network still has endpoints.
    #[error("network {0} still has {1} endpoint(s)")]
    NetworkInUse(NetworkName, usize),
    /// IPAM refused the request.
    #[error("network {network}: {source}")]
    Ipam {
        network: NetworkName,
        #[source]
        source: IpamError,
    },
    /// An IPv6 address was requested on a network without an IPv6 subnet.
    #[error("network {0} has no IPv6 subnet")]
    NoIpv6(NetworkName),
    /// No endpoint with that key.
    #[error("endpoint {0} not found")]
    NoSuchEndpoint(EndpointKey),
    /// An update tried to change an endpoint's addresses (release and allocate instead).
    #[error("endpoint {0}: addresses cannot be changed by an update")]
    EndpointAddressChanged(EndpointKey),
    /// A pool id that cannot be stored (empty, over 1024 bytes, or containing NUL).
    #[error("invalid address pool id {0:?}")]
    InvalidPoolId(String),
    /// A generic pool of that id is already recorded.
    #[error("address pool {0} already exists")]
    PoolExists(String),
    /// No generic pool of that id.
    #[error("address pool {0} not found")]
    NoSuchPool(String),
    /// IPAM refused a request on a generic pool.
    #[error("address pool {pool}: {source}")]
    PoolIpam {
        pool: String,
        #[source]
        source: IpamError,
    },
    /// The network holds as many endpoints as it can take (the ports of all its bridges).
    #[error(
        "network {network} is full: it holds {capacity} endpoints, the most its bridges can take"
    )]
    NetworkFull {
        network: NetworkName,
        capacity: usize,
    },
    /// A host port asked for is published by another endpoint.
    #[error(transparent)]
    PortsTaken(#[from] PortsTaken),
}

/// What an endpoint asks for; the store fills in the rest from the network spec.
#[derive(Debug, Clone)]
pub struct AllocRequest {
    /// Identity of the endpoint.
    pub key: EndpointKey,
    /// Who puts its container end in place.
    pub kind: EndpointKind,
    /// Namespace path.
    pub netns: PathBuf,
    /// Host-side veth name.
    pub host_ifname: IfName,
    /// Static IPv4 address, if requested.
    pub ipv4: Option<Ipv4Addr>,
    /// Static IPv6 address, if requested.
    pub ipv6: Option<Ipv6Addr>,
    /// Requested MAC.
    pub mac: Option<MacAddr>,
    /// Ports to publish; each gets the first host port of its range no other endpoint has.
    pub ports: Vec<PortRequest>,
    /// Names the container answers to (recorded with the endpoint).
    pub names: Vec<HostName>,
    /// How the network's endpoints are spread over its bridges; `None`: all on the main bridge,
    /// no limit but the addresses. The bridge is chosen (or the network found full) in the
    /// transaction that records the endpoint.
    pub bridges: Option<BridgeLayout>,
}

/// A reservation committed without waiting for the disk ([`Store::reserve_endpoint`]); pass it
/// to [`Store::flush`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a reservation is not durable until it is flushed"]
pub struct Unflushed {
    generation: u64,
}

/// The redb-backed store. `Send + Sync`: share it through an `Arc`. After an I/O error it
/// closes and opens its database again by itself (see [`handle`]).
pub struct Store {
    db: Handle,
    path: PathBuf,
    /// Test hook: the next write fails with this message instead of committing.
    #[cfg(any(test, feature = "fakes"))]
    fail_next: std::sync::Mutex<Option<String>>,
    /// Test hook: the next flush fails with this message.
    #[cfg(any(test, feature = "fakes"))]
    fail_flush: std::sync::Mutex<Option<String>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens (creating if needed) `<dir>/shimnet.redb`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_with(
            dir,
            Box::new(|path| {
                Database::builder()
                    .set_cache_size(64 * 1024 * 1024)
                    .create(path)
            }),
        )
    }

    /// Opens `<dir>/shimnet.redb` with `opener` (which reopens it after I/O errors too).
    pub(crate) fn open_with(dir: &Path, opener: Opener) -> Result<Self, StoreError> {
        let path = dir.join(DB_FILE);
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Db {
            path: dir.to_path_buf(),
            msg: format!("cannot create state directory: {e}"),
        })?;
        let db = Handle::open(path.clone(), opener).map_err(|e| StoreError::Db {
            path: path.clone(),
            msg: e.to_string(),
        })?;
        let store = Store {
            db,
            path,
            #[cfg(any(test, feature = "fakes"))]
            fail_next: std::sync::Mutex::new(None),
            #[cfg(any(test, feature = "fakes"))]
            fail_flush: std::sync::Mutex::new(None),
        };
        store.write(|txn| {
            let mut meta = txn.open_table(META)?;
            let version = meta.get("schema")?.map(|g| g.value());
            match version {
                None => {
                    meta.insert("schema", SCHEMA_VERSION)?;
                }
                Some(SCHEMA_VERSION) => {}
                Some(v) => {
                    return Err(Fail::Corrupt(format!(
                        "schema version {v} is not supported (expected {SCHEMA_VERSION})"
                    )))
                }
            }
            for def in [NETWORKS, ENDPOINTS, POOLS] {
                txn.open_table(def)?;
            }
            txn.open_table(ALLOCATIONS)?;
            txn.open_table(CURSORS)?;
            // Versions before extension bridges kept a per-network count nothing reads now.
            txn.delete_table(ENDPOINT_COUNTS)?;
            txn.open_table(BRIDGE_PORTS)?;
            Ok(())
        })?;
        Ok(store)
    }

    /// How the store is doing (I/O failures, reopens).
    pub fn health(&self) -> StoreHealth {
        self.db.health()
    }

    /// Health changes as they happen.
    pub fn subscribe_health(&self) -> tokio::sync::watch::Receiver<StoreHealth> {
        self.db.subscribe()
    }

    /// Tries one small write when the store is unhealthy (at most once a second), so that its
    /// health follows the disk even while nothing else writes; returns the health after it.
    pub fn probe(&self) -> StoreHealth {
        if self.db.probe_due() {
            let probed = self.write(|txn| {
                let mut meta = txn.open_table(META)?;
                let n = meta.get("probe")?.map_or(0, |g| g.value());
                meta.insert("probe", n.wrapping_add(1))?;
                Ok(())
            });
            if let Err(e) = probed {
                tracing::debug!("state store probe: {e}");
            }
        }
        self.health()
    }

    /// Path of the database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Makes the next write transaction fail with `msg` (tests of the callers' rollback).
    #[cfg(any(test, feature = "fakes"))]
    pub fn fail_next_write(&self, msg: &str) {
        *self.fail_next.lock().expect("fail hook") = Some(msg.to_string());
    }

    /// Makes the next [`Store::flush`] fail with `msg` (tests of an attach whose reservation
    /// cannot be made durable).
    #[cfg(any(test, feature = "fakes"))]
    pub fn fail_next_flush(&self, msg: &str) {
        *self.fail_flush.lock().expect("fail hook") = Some(msg.to_string());
    }

    /// Runs `body` in one write transaction and commits it durably; on error nothing is written
    /// (after an I/O error, see [`handle`] for what "nothing" means).
    fn write<T>(
        &self,
        body: impl FnOnce(&WriteTransaction) -> Result<T, Fail>,
    ) -> Result<T, StoreError> {
        self.write_with(Durability::Immediate, body)
            .map(|(out, _)| out)
    }

    /// Runs `body` in one write transaction committed with `durability`; returns its result and
    /// the handle's generation it was committed in. Only a durable commit that succeeds tells the
    /// store's health that writes reach the disk again.
    fn write_with<T>(
        &self,
        durability: Durability,
        body: impl FnOnce(&WriteTransaction) -> Result<T, Fail>,
    ) -> Result<(T, u64), StoreError> {
        #[cfg(any(test, feature = "fakes"))]
        if let Some(msg) = self.fail_next.lock().expect("fail hook").take() {
            return Err(self.db_error(msg));
        }
        let durable = matches!(durability, Durability::Immediate);
        self.db
            .with_generation(durable, |db, generation| {
                let mut txn = db.begin_write()?;
                txn.set_durability(durability)?;
                let out = body(&txn)?;
                txn.commit()?;
                Ok((out, generation))
            })
            .map_err(|f| self.fail(f))
    }

    /// Makes a reservation durable (an empty durable commit persists every commit before it).
    /// Fails, and the reservation is gone, when the database was reopened since it was made.
    pub fn flush(&self, reserved: Unflushed) -> Result<(), StoreError> {
        #[cfg(any(test, feature = "fakes"))]
        if let Some(msg) = self.fail_flush.lock().expect("fail hook").take() {
            return Err(self.db_error(msg));
        }
        let ((), generation) = self.write_with(Durability::Immediate, |_| Ok(()))?;
        if generation == reserved.generation {
            Ok(())
        } else {
            Err(self.db_error(
                "the reservation was lost: the store was reopened after an I/O error".into(),
            ))
        }
    }

    /// Runs `body` on a consistent snapshot.
    fn read<T>(
        &self,
        body: impl FnOnce(&redb::ReadTransaction) -> Result<T, Fail>,
    ) -> Result<T, StoreError> {
        self.db
            .with(false, |db| {
                let txn = db.begin_read()?;
                body(&txn)
            })
            .map_err(|f| self.fail(f))
    }

    fn fail(&self, f: Fail) -> StoreError {
        match f {
            Fail::Refused(e) => e,
            Fail::Db(e) => self.db_error(e.to_string()),
            Fail::Corrupt(msg) => self.db_error(format!("bad stored value: {msg}")),
            Fail::Unavailable(msg) => self.db_error(msg),
        }
    }

    /// A failure of this store's database, saying `msg`.
    fn db_error(&self, msg: String) -> StoreError {
        StoreError::Db {
            path: self.path.clone(),
            msg,
        }
    }

    /// Records a new network; fails if the name exists.
    pub fn insert_network(&self, spec: &NetworkSpec) -> Result<(), StoreError> {
        self.write(|txn| {
            let mut nets = txn.open_table(NETWORKS)?;
            if nets.get(spec.name.as_str())?.is_some() {
                return Err(StoreError::NetworkExists(spec.name.clone()).into());
            }
            nets.insert(spec.name.as_str(), to_json("network", spec)?.as_str())?;
            Ok(())
        })
    }

    /// One network by name.
    pub fn network(&self, name: &NetworkName) -> Result<Option<NetworkSpec>, StoreError> {
        self.read(|txn| {
            let nets = txn.open_table(NETWORKS)?;
            let got = nets.get(name.as_str())?;
            got.map(|g| from_json("network", name.as_str(), g.value()))
                .transpose()
        })
    }

    /// All networks, by name.
    pub fn networks(&self) -> Result<Vec<NetworkSpec>, StoreError> {
        self.read(|txn| {
            let nets = txn.open_table(NETWORKS)?;
            let mut out = Vec::new();
            for row in nets.iter()? {
                let (k, v) = row?;
                out.push(from_json("network", k.value(), v.value())?);
            }
            Ok(out)
        })
    }

    /// Removes a network with no endpoints; `Ok(None)` if absent. Its allocation cursors go too.
    pub fn remove_network(&self, name: &NetworkName) -> Result<Option<NetworkSpec>, StoreError> {
        self.write(|txn| {
            let mut nets = txn.open_table(NETWORKS)?;
            let spec: NetworkSpec = match nets.get(name.as_str())? {
                Some(g) => from_json("network", name.as_str(), g.value())?,
                None => return Ok(None),
            };
            let eps = txn.open_table(ENDPOINTS)?;
            let (lo, hi) = network_endpoint_range(name);
            let in_use = eps.range(lo.as_str()..hi.as_str())?.count();
            if in_use > 0 {
                return Err(StoreError::NetworkInUse(name.clone(), in_use).into());
            }
            let mut pools = PoolTables::open(txn)?;
            pools.drop_pool(&net4_pool(name))?;
            pools.drop_pool(&net6_pool(name))?;
            drop_bridge_ports(txn, name)?;
            nets.remove(name.as_str())?;
            Ok(Some(spec))
        })
    }

    /// Allocates addresses and host ports and records the endpoint in one durable transaction, so
    /// no two endpoints are ever given the same address or host port. If the key is already
    /// recorded, returns the existing record and `false` (the request is not compared: a retry
    /// gets what the first call got).
    pub fn allocate_endpoint(
        &self,
        req: &AllocRequest,
    ) -> Result<(EndpointRecord, bool), StoreError> {
        let (rec, created, reserved) = self.reserve_endpoint(req)?;
        if created {
            self.flush(reserved)?;
        }
        Ok((rec, created))
    }

    /// [`Store::allocate_endpoint`] without waiting for the disk: the record is visible to every
    /// later transaction at once and durable once [`Store::flush`] of the token returns `Ok`
    /// (only a created record needs it). Acknowledge nothing before that.
    pub fn reserve_endpoint(
        &self,
        req: &AllocRequest,
    ) -> Result<(EndpointRecord, bool, Unflushed), StoreError> {
        let net = &req.key.network;
        let ((rec, created), generation) = self.write_with(Durability::None, |txn| {
            let spec: NetworkSpec = {
                let nets = txn.open_table(NETWORKS)?;
                let got = nets.get(net.as_str())?;
                match got {
                    Some(g) => from_json("network", net.as_str(), g.value())?,
                    None => return Err(StoreError::NoSuchNetwork(net.clone()).into()),
                }
            };
            let ekey = endpoint_key(&req.key);
            let mut eps = txn.open_table(ENDPOINTS)?;
            if let Some(g) = eps.get(ekey.as_str())? {
                return Ok((from_json("endpoint", &ekey, g.value())?, false));
            }
            // Networks that could outgrow their main bridge keep a count per bridge: read (or,
            // the first time, counted) here, and when they say "full", checked against the
            // records so a stale count never refuses an attach.
            let placed = match req.bridges {
                Some(layout) if layout.may_overflow_main(&spec) => {
                    let mut used = bridge_ports(txn, net, layout)?;
                    let mut counted = false;
                    if used.is_none() || layout.choose(used.as_deref().unwrap_or(&[])).is_none() {
                        used = Some(count_bridge_ports(&eps, net, layout)?);
                        counted = true;
                    }
                    let used = used.unwrap_or_default();
                    match layout.choose(&used) {
                        Some(b) => Some((b, used, counted)),
                        None => {
                            put_bridge_ports(txn, net, &used)?;
                            return Err(StoreError::NetworkFull {
                                network: net.clone(),
                                capacity: layout.total(),
                            }
                            .into());
                        }
                    }
                }
                _ => None,
            };
            let chosen = if req.ports.is_empty() {
                Vec::new()
            } else {
                let taken = ports_of_others(&eps, &req.key)?;
                ports::choose(&req.ports, &taken).map_err(StoreError::from)?
            };
            let mut pools = PoolTables::open(txn)?;

            let ip4 = pools
                .allocate(
                    &net4_pool(net),
                    &Pool::ipv4_of(&spec),
                    &ekey,
                    req.ipv4.map(IpAddr::V4),
                )?
                .map_err(|e| net_ipam(net, e))?;
            let IpAddr::V4(ip4) = ip4 else {
                return Err(Fail::Corrupt(format!("IPv4 pool of {net} gave {ip4}")));
            };
            let ipv4 = Ipv4Network::new(ip4, spec.subnet.prefix())
                .map_err(|e| Fail::Corrupt(format!("network {net}: {e}")))?;

            let ipv6 = match (Pool::ipv6_of(&spec), req.ipv6) {
                (None, None) => None,
                (None, Some(_)) => return Err(StoreError::NoIpv6(net.clone()).into()),
                (Some(pool6), want) => {
                    let got = pools
                        .allocate(&net6_pool(net), &pool6, &ekey, want.map(IpAddr::V6))?
                        .map_err(|e| net_ipam(net, e))?;
                    let IpAddr::V6(ip6) = got else {
                        return Err(Fail::Corrupt(format!("IPv6 pool of {net} gave {got}")));
                    };
                    let prefix = pool6.subnet.prefix();
                    Some(
                        Ipv6Network::new(ip6, prefix)
                            .map_err(|e| Fail::Corrupt(format!("network {net}: {e}")))?,
                    )
                }
            };

            let rec = EndpointRecord {
                key: req.key.clone(),
                kind: req.kind,
                netns: req.netns.clone(),
                host_ifname: req.host_ifname.clone(),
                ipv4,
                ipv6,
                mac: req.mac.unwrap_or_else(|| default_mac(&spec, ip4)),
                gateway: spec.gateway,
                gateway6: spec.gateway6,
                mtu: spec.mtu,
                ports: chosen,
                names: req.names.clone(),
                extension: placed.as_ref().map(|(b, ..)| *b).filter(|b| *b > 0),
            };
            eps.insert(ekey.as_str(), to_json("endpoint", &rec)?.as_str())?;
            if let Some((b, mut used, counted)) = placed {
                used[usize::from(b)] += 1;
                if counted {
                    put_bridge_ports(txn, net, &used)?;
                } else {
                    // The other rows are in place and unchanged: write only the chosen bridge's.
                    txn.open_table(BRIDGE_PORTS)?
                        .insert((net.as_str(), b), used[usize::from(b)])?;
                }
            }
            Ok((rec, true))
        })?;
        Ok((rec, created, Unflushed { generation }))
    }

    /// Replaces the record of an existing endpoint (e.g. new port list). Its addresses must stay
    /// the same, since they are what the allocation rows record.
    pub fn update_endpoint(&self, rec: &EndpointRecord) -> Result<(), StoreError> {
        let ekey = endpoint_key(&rec.key);
        self.write(|txn| {
            let mut eps = txn.open_table(ENDPOINTS)?;
            let old: EndpointRecord = match eps.get(ekey.as_str())? {
                Some(g) => from_json("endpoint", &ekey, g.value())?,
                None => return Err(StoreError::NoSuchEndpoint(rec.key.clone()).into()),
            };
            if old.ipv4 != rec.ipv4 || old.ipv6 != rec.ipv6 {
                return Err(StoreError::EndpointAddressChanged(rec.key.clone()).into());
            }
            eps.insert(ekey.as_str(), to_json("endpoint", rec)?.as_str())?;
            Ok(())
        })
    }

    /// Gives an endpoint the first free host port of each request (other endpoints' ports count
    /// as taken, its own do not), replacing what it published, in one transaction. Returns the
    /// record before and after.
    pub fn replace_ports(
        &self,
        key: &EndpointKey,
        requests: &[PortRequest],
    ) -> Result<(EndpointRecord, EndpointRecord), StoreError> {
        let ekey = endpoint_key(key);
        self.write(|txn| {
            let mut eps = txn.open_table(ENDPOINTS)?;
            let old: EndpointRecord = match eps.get(ekey.as_str())? {
                Some(g) => from_json("endpoint", &ekey, g.value())?,
                None => return Err(StoreError::NoSuchEndpoint(key.clone()).into()),
            };
            let taken = ports_of_others(&eps, key)?;
            let chosen = ports::choose(requests, &taken).map_err(StoreError::from)?;
            let new = EndpointRecord {
                ports: chosen,
                ..old.clone()
            };
            eps.insert(ekey.as_str(), to_json("endpoint", &new)?.as_str())?;
            Ok((old, new))
        })
    }

    /// One endpoint.
    pub fn endpoint(&self, key: &EndpointKey) -> Result<Option<EndpointRecord>, StoreError> {
        let ekey = endpoint_key(key);
        self.read(|txn| {
            let eps = txn.open_table(ENDPOINTS)?;
            let got = eps.get(ekey.as_str())?;
            got.map(|g| from_json("endpoint", &ekey, g.value()))
                .transpose()
        })
    }

    /// All endpoints, or those of one network, ordered by key.
    pub fn endpoints(
        &self,
        network: Option<&NetworkName>,
    ) -> Result<Vec<EndpointRecord>, StoreError> {
        self.read(|txn| {
            let eps = txn.open_table(ENDPOINTS)?;
            let rows = match network {
                Some(net) => {
                    let (lo, hi) = network_endpoint_range(net);
                    eps.range(lo.as_str()..hi.as_str())?
                }
                None => eps.iter()?,
            };
            let mut out = Vec::new();
            for row in rows {
                let (k, v) = row?;
                out.push(from_json("endpoint", k.value(), v.value())?);
            }
            Ok(out)
        })
    }

    /// Removes the endpoint record and frees its addresses; `Ok(None)` if absent.
    pub fn release_endpoint(
        &self,
        key: &EndpointKey,
    ) -> Result<Option<EndpointRecord>, StoreError> {
        let ekey = endpoint_key(key);
        let net = &key.network;
        // Nothing to release is no write at all (a commit that changes nothing would tell the
        // health that writes work, though only a header may have reached the disk).
        let recorded =
            self.read(|txn| Ok(txn.open_table(ENDPOINTS)?.get(ekey.as_str())?.is_some()))?;
        if !recorded {
            return Ok(None);
        }
        self.write(|txn| {
            let mut eps = txn.open_table(ENDPOINTS)?;
            let rec: EndpointRecord = match eps.remove(ekey.as_str())? {
                Some(g) => from_json("endpoint", &ekey, g.value())?,
                None => return Ok(None),
            };
            let mut pools = PoolTables::open(txn)?;
            let v4 = IpAddr::V4(rec.ipv4.ip());
            pools.release(&net4_pool(net), Family::V4, v4, Some(&ekey))?;
            if let Some(v6) = rec.ipv6 {
                let v6 = IpAddr::V6(v6.ip());
                pools.release(&net6_pool(net), Family::V6, v6, Some(&ekey))?;
            }
            let mut counts = txn.open_table(BRIDGE_PORTS)?;
            let at = (net.as_str(), rec.extension.unwrap_or(0));
            let n = counts.get(at)?.map(|g| g.value());
            if let Some(n) = n {
                counts.insert(at, n.saturating_sub(1))?;
            }
            Ok(Some(rec))
        })
    }

    /// Every address allocated on a network (IPv4 then IPv6) with its owner's endpoint key.
    pub fn network_allocations(
        &self,
        name: &NetworkName,
    ) -> Result<Vec<(IpAddr, String)>, StoreError> {
        self.read(|txn| {
            let allocs = txn.open_table(ALLOCATIONS)?;
            let mut out = pool_rows(&allocs, &net4_pool(name), Family::V4)?;
            out.extend(pool_rows(&allocs, &net6_pool(name), Family::V6)?);
            Ok(out)
        })
    }
}

/// The endpoints on each bridge of `net` (index 0 main) as counted in [`BRIDGE_PORTS`];
/// `None` when the network has no counts yet.
fn bridge_ports(
    txn: &WriteTransaction,
    net: &NetworkName,
    layout: BridgeLayout,
) -> Result<Option<Vec<u64>>, Fail> {
    let counts = txn.open_table(BRIDGE_PORTS)?;
    let mut used = vec![0; usize::from(layout.extensions) + 1];
    let mut any = false;
    for row in counts.range((net.as_str(), 0)..=(net.as_str(), u8::MAX))? {
        let (k, v) = row?;
        let b = usize::from(k.value().1);
        any = true;
        if b < used.len() {
            used[b] = v.value();
        } else if v.value() > 0 {
            // Endpoints on an extension the layout no longer has (the cap was lowered): the
            // records say where they are; count from them.
            return Ok(None);
        }
    }
    Ok(any.then_some(used))
}

/// Writes the per-bridge counts of `net`.
fn put_bridge_ports(txn: &WriteTransaction, net: &NetworkName, used: &[u64]) -> Result<(), Fail> {
    let mut counts = txn.open_table(BRIDGE_PORTS)?;
    for (b, n) in used.iter().enumerate() {
        let b = u8::try_from(b).map_err(|_| Fail::Corrupt(format!("bridge index {b}")))?;
        counts.insert((net.as_str(), b), *n)?;
    }
    Ok(())
}

/// Removes the per-bridge counts of `net`.
fn drop_bridge_ports(txn: &WriteTransaction, net: &NetworkName) -> Result<(), Fail> {
    let mut counts = txn.open_table(BRIDGE_PORTS)?;
    counts.retain_in((net.as_str(), 0)..=(net.as_str(), u8::MAX), |_, _| false)?;
    Ok(())
}

/// How many endpoints of `net` each of its bridges holds, from the records (O(endpoints), each
/// decoded: only the first attach after an upgrade and a refusal use it). Endpoints on an
/// extension beyond the layout count as on its last bridge, so they are never overfilled.
fn count_bridge_ports(
    eps: &impl ReadableTable<&'static str, &'static str>,
    net: &NetworkName,
    layout: BridgeLayout,
) -> Result<Vec<u64>, Fail> {
    let (lo, hi) = network_endpoint_range(net);
    let last = usize::from(layout.extensions);
    let mut used = vec![0; last + 1];
    for row in eps.range(lo.as_str()..hi.as_str())? {
        let (k, v) = row?;
        let rec: EndpointRecord = from_json("endpoint", k.value(), v.value())?;
        used[usize::from(rec.extension.unwrap_or(0)).min(last)] += 1;
    }
    Ok(used)
}

/// The published ports of every endpoint but `key`, with their owners.
fn ports_of_others(
    eps: &impl ReadableTable<&'static str, &'static str>,
    key: &EndpointKey,
) -> Result<Vec<(EndpointKey, PortMapping)>, Fail> {
    let mut taken = Vec::new();
    for row in eps.iter()? {
        let (k, v) = row?;
        let rec: EndpointRecord = from_json("endpoint", k.value(), v.value())?;
        if &rec.key != key {
            taken.extend(rec.ports.iter().map(|p| (rec.key.clone(), *p)));
        }
    }
    Ok(taken)
}
