//! On-disk layout of the state store: redb tables, key encodings, and the internal error type
//! used while a transaction is open.

use std::net::IpAddr;

use redb::TableDefinition;

use crate::ipam::{Family, IpamError};
use crate::types::{EndpointKey, NetworkName};

use super::StoreError;

/// Schema version recorded in [`META`]; bumped on incompatible layout changes.
pub(crate) const SCHEMA_VERSION: u64 = 1;

/// `"schema"` → [`SCHEMA_VERSION`].
pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Network name → JSON `NetworkSpec`.
pub(crate) const NETWORKS: TableDefinition<&str, &str> = TableDefinition::new("networks");
/// [`endpoint_key`] → JSON `EndpointRecord`.
pub(crate) const ENDPOINTS: TableDefinition<&str, &str> = TableDefinition::new("endpoints");
/// [`alloc_key`] → owner (endpoint key string, or the owner given to the pool API).
pub(crate) const ALLOCATIONS: TableDefinition<&[u8], &str> = TableDefinition::new("allocations");
/// Pool key → number of the last address handed out dynamically.
pub(crate) const CURSORS: TableDefinition<&str, u128> = TableDefinition::new("cursors");
/// Network name → how many endpoints it has: written by versions before extension bridges;
/// dropped when the store opens.
pub(crate) const ENDPOINT_COUNTS: TableDefinition<&str, u64> =
    TableDefinition::new("endpoint_counts");
/// (network name, bridge: 0 main, `i` extension `i`) → endpoints on that bridge, kept for
/// networks whose subnet could exceed their main bridge's ports (a fast path: counts that say
/// "full" are checked against the records). A network has rows for all its bridges or none; an
/// attach rewrites only the chosen bridge's row, and a bridge the layout gained later (a raised
/// cap) counts 0 until it is chosen.
pub(crate) const BRIDGE_PORTS: TableDefinition<(&str, u8), u64> =
    TableDefinition::new("bridge_ports");
/// Generic pool id → JSON `Pool`.
pub(crate) const POOLS: TableDefinition<&str, &str> = TableDefinition::new("pools");

/// Pool key of a network's IPv4 addresses.
pub(crate) fn net4_pool(net: &NetworkName) -> String {
    format!("net4:{net}")
}

/// Pool key of a network's IPv6 addresses.
pub(crate) fn net6_pool(net: &NetworkName) -> String {
    format!("net6:{net}")
}

/// Pool key of a generic pool (the id has been checked by [`check_pool_id`]).
pub(crate) fn generic_pool(id: &str) -> String {
    format!("pool:{id}")
}

/// Refuses pool ids that would break the allocation key layout.
pub(crate) fn check_pool_id(id: &str) -> Result<(), StoreError> {
    if id.is_empty() || id.len() > 1024 || id.contains('\0') {
        return Err(StoreError::InvalidPoolId(id.to_string()));
    }
    Ok(())
}

/// `pool key` + `0x00` + the address as a 16-byte big-endian number. Pool keys never contain NUL,
/// so each pool's rows are contiguous and ordered numerically.
pub(crate) fn alloc_key(pool_key: &str, fam: Family, ip: IpAddr) -> Vec<u8> {
    let n = fam.num(ip).unwrap_or(0);
    let mut k = Vec::with_capacity(pool_key.len() + 17);
    k.extend_from_slice(pool_key.as_bytes());
    k.push(0);
    k.extend_from_slice(&n.to_be_bytes());
    k
}

/// Lowest and highest possible allocation key of a pool.
pub(crate) fn pool_bounds(pool_key: &str) -> (Vec<u8>, Vec<u8>) {
    let mut lo = Vec::with_capacity(pool_key.len() + 17);
    lo.extend_from_slice(pool_key.as_bytes());
    lo.push(0);
    let mut hi = lo.clone();
    lo.extend_from_slice(&[0u8; 16]);
    hi.extend_from_slice(&[0xffu8; 16]);
    (lo, hi)
}

/// The address of an allocation key.
pub(crate) fn alloc_key_ip(fam: Family, key: &[u8]) -> Result<IpAddr, Fail> {
    let tail: [u8; 16] = key
        .len()
        .checked_sub(16)
        .and_then(|at| key[at..].try_into().ok())
        .ok_or_else(|| Fail::Corrupt(format!("allocation key of {} bytes", key.len())))?;
    Ok(fam.addr(u128::from_be_bytes(tail)))
}

/// Endpoint table key: `network/container/ifname` (none of the parts may contain `/`), so one
/// network's endpoints form a contiguous range.
pub(crate) fn endpoint_key(key: &EndpointKey) -> String {
    key.to_string()
}

/// Key range holding exactly the endpoints of `net`: `"net/"..` up to `"net0"` (`'0'` follows `'/'`).
pub(crate) fn network_endpoint_range(net: &NetworkName) -> (String, String) {
    (format!("{net}/"), format!("{net}0"))
}

/// Why a transaction body stopped: a database failure, a bad stored value, or a refusal to report.
#[derive(Debug)]
pub(crate) enum Fail {
    Db(redb::Error),
    Corrupt(String),
    Refused(StoreError),
    /// The database is closed after an I/O error and could not be opened again (yet).
    Unavailable(String),
}

macro_rules! db_errors {
    ($($t:ty),*) => {$(
        impl From<$t> for Fail {
            fn from(e: $t) -> Self {
                Fail::Db(e.into())
            }
        }
    )*};
}
db_errors!(
    redb::Error,
    redb::StorageError,
    redb::TableError,
    redb::TransactionError,
    redb::CommitError,
    redb::SetDurabilityError,
    redb::DatabaseError
);

impl From<StoreError> for Fail {
    fn from(e: StoreError) -> Self {
        Fail::Refused(e)
    }
}

/// Wraps an IPAM refusal for a network.
pub(crate) fn net_ipam(network: &NetworkName, source: IpamError) -> Fail {
    Fail::Refused(StoreError::Ipam {
        network: network.clone(),
        source,
    })
}

/// Decodes a JSON value read from table `what` under `key`.
pub(crate) fn from_json<T: serde::de::DeserializeOwned>(
    what: &str,
    key: &str,
    json: &str,
) -> Result<T, Fail> {
    serde_json::from_str(json).map_err(|e| Fail::Corrupt(format!("{what} {key:?}: {e}")))
}

/// Encodes a value for storage.
pub(crate) fn to_json<T: serde::Serialize>(what: &str, v: &T) -> Result<String, Fail> {
    serde_json::to_string(v).map_err(|e| Fail::Corrupt(format!("encoding {what}: {e}")))
}
