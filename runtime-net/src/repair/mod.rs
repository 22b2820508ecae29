//! Event-driven repair: the kernel's change notifications in the daemon's namespace, turned into
//! the set of shimnet's own objects that changed, so only those are checked and put back.
//!
//! The pieces, each with one job:
//! - [`links`]: rtnetlink notifications (links, addresses, routes, neighbours and fdb entries)
//!   → [`Dirty`] object, or nothing when the change is not shimnet's (pure).
//! - [`nft`]: nftables notifications (`NETLINK_NETFILTER`, group `NFNLGRP_NFTABLES`) parsed and
//!   classified the same way; a transaction's changes are held until its closing generation
//!   message, which names the process that made it (pure).
//! - [`coalesce`]: dirty objects gathered until the notifications go quiet (or a longest wait
//!   passes), so a flood of thousands of notifications costs one pass (pure).
//! - [`guard`]: changes shimnet makes itself are not taken for drift, and an object that keeps
//!   being broken right after each repair (another manager fighting over it) is backed off (pure).
//! - [`listen`]: the two subscriptions on raw netlink sockets; a lost notification (`ENOBUFS`)
//!   is reported as [`Dirty::All`] (kernel side).

pub mod coalesce;
pub mod driver;
pub mod guard;
pub mod links;
pub mod listen;
pub mod nft;
pub mod run;

use std::fmt;

/// One object shimnet owns whose kernel state changed from outside (or may have).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dirty {
    /// A network's bridge (by interface name): deleted, down, changed.
    Bridge(String),
    /// A bridge's addresses or its connected routes (the gateway), by bridge name.
    Gateway(String),
    /// An endpoint's host-side veth (by interface name): down, cut off its bridge.
    Port(String),
    /// An endpoint whose host-side veth was deleted (by endpoint key, from the link's owner
    /// alias): the pair is gone from both ends.
    Endpoint(String),
    /// Peer routes (route protocol 201).
    PeerRoutes,
    /// A peering device (alias `shimnet:peering=<kind>`), by interface name.
    Tunnel(String),
    /// The fdb or neighbour entries of a peering device, by interface name.
    Fdb(String),
    /// shimnet's nftables table (by name).
    NftTable(String),
    /// shimnet's iptables chains (`SHIMNET-*`) or the built-in chains that jump to them
    /// (`FORWARD`, `PREROUTING`, `OUTPUT`, `POSTROUTING`), by table (`filter`, `nat`).
    Iptables(String),
    /// Everything: notifications were lost (`ENOBUFS`), or a periodic safety pass.
    All,
}

/// The kind of a [`Dirty`] object: the label of repair metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// [`Dirty::Bridge`]
    Bridge,
    /// [`Dirty::Gateway`]
    Gateway,
    /// [`Dirty::Port`]
    Port,
    /// [`Dirty::Endpoint`]
    Endpoint,
    /// [`Dirty::PeerRoutes`]
    PeerRoute,
    /// [`Dirty::Tunnel`]
    Tunnel,
    /// [`Dirty::Fdb`]
    Fdb,
    /// [`Dirty::NftTable`]
    NftTable,
    /// [`Dirty::Iptables`]
    Iptables,
    /// [`Dirty::All`]
    Full,
}

impl Kind {
    /// Every kind, in label order.
    pub const ALL: [Kind; 10] = [
        Kind::Bridge,
        Kind::Gateway,
        Kind::Port,
        Kind::Endpoint,
        Kind::PeerRoute,
        Kind::Tunnel,
        Kind::Fdb,
        Kind::NftTable,
        Kind::Iptables,
        Kind::Full,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Bridge => "bridge",
            Kind::Gateway => "gateway",
            Kind::Port => "port",
            Kind::Endpoint => "endpoint",
            Kind::PeerRoute => "peer_route",
            Kind::Tunnel => "tunnel",
            Kind::Fdb => "fdb",
            Kind::NftTable => "nft_table",
            Kind::Iptables => "iptables",
            Kind::Full => "full",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

impl Dirty {
    /// The object's kind.
    pub fn kind(&self) -> Kind {
        match self {
            Dirty::Bridge(_) => Kind::Bridge,
            Dirty::Gateway(_) => Kind::Gateway,
            Dirty::Port(_) => Kind::Port,
            Dirty::Endpoint(_) => Kind::Endpoint,
            Dirty::PeerRoutes => Kind::PeerRoute,
            Dirty::Tunnel(_) => Kind::Tunnel,
            Dirty::Fdb(_) => Kind::Fdb,
            Dirty::NftTable(_) => Kind::NftTable,
            Dirty::Iptables(_) => Kind::Iptables,
            Dirty::All => Kind::Full,
        }
    }
}

impl fmt::Display for Dirty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dirty::Bridge(n)
            | Dirty::Gateway(n)
            | Dirty::Port(n)
            | Dirty::Endpoint(n)
            | Dirty::Tunnel(n)
            | Dirty::Fdb(n)
            | Dirty::NftTable(n)
            | Dirty::Iptables(n) => write!(f, "{} {n}", self.kind()),
            Dirty::PeerRoutes | Dirty::All => write!(f, "{}", self.kind()),
        }
    }
}
