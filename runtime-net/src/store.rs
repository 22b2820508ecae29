//! Crash-safe state: networks, endpoint records and IPAM allocations in one redb database.
//! (Contract stub: the IPAM helper replaces bodies; signatures are fixed.)

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use crate::ipam::IpamError;
use crate::types::{
    EndpointKey, EndpointRecord, IfName, MacAddr, NetworkName, NetworkSpec, PortMapping,
};

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
}

/// What an endpoint asks for; the store fills in the rest from the network spec.
#[derive(Debug, Clone)]
pub struct AllocRequest {
    /// Identity of the endpoint.
    pub key: EndpointKey,
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
    /// Published ports.
    pub ports: Vec<PortMapping>,
}

/// The redb-backed store.
pub struct Store {}

impl Store {
    /// Opens (creating if needed) `<dir>/shimnet.redb`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let _ = dir;
        unimplemented!("ipam helper")
    }
    /// Records a new network; fails if the name exists.
    pub fn insert_network(&self, spec: &NetworkSpec) -> Result<(), StoreError> {
        let _ = spec;
        unimplemented!("ipam helper")
    }
    /// One network by name.
    pub fn network(&self, name: &NetworkName) -> Result<Option<NetworkSpec>, StoreError> {
        let _ = name;
        unimplemented!("ipam helper")
    }
    /// All networks, by name.
    pub fn networks(&self) -> Result<Vec<NetworkSpec>, StoreError> {
        unimplemented!("ipam helper")
    }
    /// Removes a network with no endpoints; `Ok(None)` if absent.
    pub fn remove_network(&self, name: &NetworkName) -> Result<Option<NetworkSpec>, StoreError> {
        let _ = name;
        unimplemented!("ipam helper")
    }
    /// Allocates addresses and records the endpoint in one durable transaction. If the key is
    /// already recorded, returns the existing record and `false`.
    pub fn allocate_endpoint(
        &self,
        req: &AllocRequest,
    ) -> Result<(EndpointRecord, bool), StoreError> {
        let _ = req;
        unimplemented!("ipam helper")
    }
    /// Replaces the record of an existing endpoint (e.g. new port list).
    pub fn update_endpoint(&self, rec: &EndpointRecord) -> Result<(), StoreError> {
        let _ = rec;
        unimplemented!("ipam helper")
    }
    /// One endpoint.
    pub fn endpoint(&self, key: &EndpointKey) -> Result<Option<EndpointRecord>, StoreError> {
        let _ = key;
        unimplemented!("ipam helper")
    }
    /// All endpoints, or those of one network.
    pub fn endpoints(
        &self,
        network: Option<&NetworkName>,
    ) -> Result<Vec<EndpointRecord>, StoreError> {
        let _ = network;
        unimplemented!("ipam helper")
    }
    /// Removes the endpoint record and frees its addresses; `Ok(None)` if absent.
    pub fn release_endpoint(
        &self,
        key: &EndpointKey,
    ) -> Result<Option<EndpointRecord>, StoreError> {
        let _ = key;
        unimplemented!("ipam helper")
    }
}
