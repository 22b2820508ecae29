//! IPAM pure logic: address pools, next-free allocation, static requests, MAC choice.
//! (Contract stub: the IPAM helper replaces bodies; signatures are fixed.)

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use ipnetwork::IpNetwork;

use crate::types::{MacAddr, NetworkSpec};

/// An address pool: a subnet with optional allocation range and reserved addresses.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Pool {
    /// Subnet addresses are taken from.
    pub subnet: IpNetwork,
    /// First and last address that may be handed out (inclusive); whole subnet when `None`.
    pub range: Option<(IpAddr, IpAddr)>,
    /// Addresses never handed out by next-free (gateway, auxiliary addresses).
    pub reserved: BTreeSet<IpAddr>,
}

/// Why an allocation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpamError {
    /// Every address of the pool is taken.
    #[error("address pool {0} is exhausted")]
    Exhausted(IpNetwork),
    /// The requested address is outside the pool.
    #[error("address {ip} is outside pool {pool}")]
    OutOfPool { ip: IpAddr, pool: IpNetwork },
    /// The requested address is reserved (network, broadcast, gateway...).
    #[error("address {0} is reserved")]
    Reserved(IpAddr),
    /// The requested address is already allocated.
    #[error("address {0} is already in use")]
    InUse(IpAddr),
}

/// Next free address after `last` (wrapping), never network/broadcast/reserved/used.
pub fn next_free(
    pool: &Pool,
    used: &BTreeSet<IpAddr>,
    last: Option<IpAddr>,
) -> Result<IpAddr, IpamError> {
    let _ = (pool, used, last);
    unimplemented!("ipam helper")
}

/// Checks that a static request for `ip` can be granted.
pub fn check_static(pool: &Pool, used: &BTreeSet<IpAddr>, ip: IpAddr) -> Result<(), IpamError> {
    let _ = (pool, used, ip);
    unimplemented!("ipam helper")
}

/// The MAC an endpoint gets when none was requested: docker's 02:42+IPv4 when the network asks for
/// it, otherwise a locally administered address derived from the IPv4 address.
pub fn default_mac(spec: &NetworkSpec, ipv4: Ipv4Addr) -> MacAddr {
    let _ = (spec, ipv4);
    unimplemented!("ipam helper")
}
