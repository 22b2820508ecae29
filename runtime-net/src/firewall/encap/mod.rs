//! The encapsulation filter of peering: encapsulated packets (VXLAN, IP protocol 4) addressed to
//! this node are accepted only from the listed peers; the rest is dropped in the host's input
//! path and counted per encapsulation. The kernel's VXLAN and IPIP devices accept from anyone
//! (a VXLAN device without a remote, an IPIP device without a remote), so this filter is what
//! keeps an underlay host that is no peer from putting packets into containers.
//!
//! - [`nft`]: table `ip shimnet-encap` (sets of peers, named counters), one transaction per
//!   change.
//! - [`iptables`]: chain `SHIMNET-ENCAP` jumped first from `INPUT`, rebuilt in one
//!   `iptables-restore --noflush`; the drops go through two one-rule chains that are never
//!   rebuilt, so their counters survive every change of the peer set.
//!
//! [`EncapRules`] says what the filter holds; [`open`] gives the executor of a backend. Both
//! act on the network namespace of the thread that creates (nftables) or calls (iptables) them.

pub mod iptables;
pub mod nft;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use super::{BackendKind, FirewallError};

/// VXLAN guard: UDP to `port` carrying `vni`, accepted from `peers` only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanGuard {
    /// UDP port of the VXLAN device.
    pub port: u16,
    /// VNI of the VXLAN device (packets of other VNIs are not this filter's business).
    pub vni: u32,
    /// Underlay addresses accepted.
    pub peers: BTreeSet<Ipv4Addr>,
}

/// What the filter holds. An encapsulation left `None` is not filtered at all.
///
/// VXLAN is judged whatever local address it is sent to: the kernel's VXLAN socket listens on
/// all of them (a forged packet sent to the node's pod gateway address is decapsulated too).
/// IPIP is judged only when addressed to `local`: a kernel IPIP device with a local address
/// (and the userspace data plane's socket bound to it) takes nothing else, and other tunnels of
/// the host stay untouched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncapRules {
    /// This node's underlay address (the outer destination of IPIP judged).
    pub local: Ipv4Addr,
    /// VXLAN.
    pub vxlan: Option<VxlanGuard>,
    /// IPIP (IP protocol 4): underlay addresses accepted.
    pub ipip: Option<BTreeSet<Ipv4Addr>>,
}

/// Packets dropped by the filter so far, per encapsulation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct EncapDrops {
    /// VXLAN packets from non-peers.
    pub vxlan: u64,
    /// IPIP packets from non-peers.
    pub ipip: u64,
}

/// An executor of the encapsulation filter.
pub trait EncapFilter: Send + Sync {
    /// Which backend this is.
    fn kind(&self) -> BackendKind;
    /// Makes the installed filter exactly `rules`, in one atomic step: a packet is judged by the
    /// previous filter or by the new one, never by a mix or by none. Drop counters are kept.
    fn apply(&self, rules: &EncapRules) -> Result<(), FirewallError>;
    /// Drop counters (zero where the filter was never installed).
    fn dropped(&self) -> Result<EncapDrops, FirewallError>;
    /// Removes everything the filter installed; succeeds when there is nothing.
    fn remove(&self) -> Result<(), FirewallError>;
}

/// The filter executor of backend `kind`, bound to the calling thread's network namespace.
pub fn open(kind: BackendKind) -> Result<Box<dyn EncapFilter>, FirewallError> {
    Ok(match kind {
        BackendKind::Nftables => Box::new(nft::NftEncap::new()?),
        BackendKind::Iptables => Box::new(iptables::IptEncap::new()?),
    })
}

/// Removes the filter of the backend other than `kind`, where that backend works here (a
/// daemon that switched backends must not leave an old peer set in force). Errors are returned
/// for logging; an unusable backend is not one.
pub fn remove_other(kind: BackendKind) -> Result<(), FirewallError> {
    let other = match kind {
        BackendKind::Nftables => BackendKind::Iptables,
        BackendKind::Iptables => BackendKind::Nftables,
    };
    match open(other) {
        Ok(f) => f.remove(),
        Err(_) => Ok(()),
    }
}
