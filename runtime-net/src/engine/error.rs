//! Engine errors, grouped by what the caller did wrong (or not), and the teardown helper that
//! keeps going past failures and reports them all.

use crate::firewall::FirewallError;
use crate::ipam::IpamError;
use crate::netlink::NetlinkError;
use crate::plan::FieldError;
use crate::store::StoreError;
use crate::sysctl::SysctlError;

/// Engine failures, grouped by what the caller did wrong (or not).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A request field is invalid.
    #[error("{0}")]
    Invalid(#[from] FieldError),
    /// Something named does not exist.
    #[error("{what} {name} not found")]
    NotFound { what: &'static str, name: String },
    /// The request conflicts with existing state.
    #[error("{0}")]
    Conflict(String),
    /// The network takes no more endpoints: its bridge has no free port.
    #[error("network {network} is full: it holds {capacity} endpoints, the most its bridge can take (a Linux bridge has at most 1023 ports); detach an endpoint or use another network")]
    NetworkFull {
        network: crate::types::NetworkName,
        capacity: usize,
    },
    /// The state store failed.
    #[error(transparent)]
    Store(StoreError),
    /// A netlink operation failed.
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    /// A firewall operation failed.
    #[error(transparent)]
    Firewall(#[from] FirewallError),
    /// A sysctl write failed.
    #[error(transparent)]
    Sysctl(#[from] SysctlError),
    /// Several teardown steps failed (teardown keeps going and reports all).
    #[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
    Many(Vec<EngineError>),
}

impl From<StoreError> for EngineError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NoSuchNetwork(n) => EngineError::NotFound {
                what: "network",
                name: n.to_string(),
            },
            StoreError::NetworkExists(n) => {
                EngineError::Conflict(format!("network {n} already exists"))
            }
            StoreError::NetworkFull { network, capacity } => {
                EngineError::NetworkFull { network, capacity }
            }
            StoreError::PortsTaken(p) => EngineError::Conflict(p.to_string()),
            StoreError::NoSuchEndpoint(k) => EngineError::NotFound {
                what: "endpoint",
                name: k.to_string(),
            },
            StoreError::NetworkInUse(n, c) => EngineError::Conflict(format!(
                "network {n} still has {c} endpoint(s); detach them first"
            )),
            StoreError::Ipam { network, source } => match source {
                IpamError::InUse(_) | IpamError::Exhausted(_) => {
                    EngineError::Conflict(format!("network {network}: {source}"))
                }
                other => EngineError::Invalid(FieldError::new(
                    "ip",
                    format!("network {network}: {other}"),
                )),
            },
            other => EngineError::Store(other),
        }
    }
}

/// Result alias.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;

/// Collects teardown errors: `Ok` if none, the error itself if one, all of them if several.
pub(crate) fn collect(mut errors: Vec<EngineError>) -> Result<()> {
    match errors.len() {
        0 => Ok(()),
        1 => Err(errors.remove(0)),
        _ => Err(EngineError::Many(errors)),
    }
}
