//! In-kernel IPIP for kernels without `CONFIG_NET_IPIP`: two tc programs (see [`progs`]) do
//! the encapsulation on egress of the device the IPIP routes point at and the decapsulation on
//! the underlay's ingress, so a packet between containers on two nodes never leaves the kernel.
//!
//! The routes point at one end of a veth pair with GRO on; decapsulated packets are sent into
//! the other end, so the receiving end joins consecutive segments of a flow before they are
//! forwarded (what a kernel tunnel device does after decapsulation). Where the pair cannot be
//! made, routes point at the userspace data plane's TUN and decapsulated packets are handed to
//! its ingress. The userspace data plane keeps running underneath either way: it takes what the
//! decapsulation program leaves alone (fragments; packets of non-peers, counted and dropped) and
//! everything when the programs cannot be loaded. Wire format as kernel IPIP.
//!
//! The programs are generated with the peer table built in; [`TcIpip::set_peers`] swaps both
//! in place. They are attached with tcx links held by this process: when the daemon exits,
//! they go with it.

pub mod asm;
pub mod forwarding;
pub mod fwd;
pub mod offload;
pub mod progs;
pub mod sys;
#[cfg(test)]
mod tests;

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

use ipnetwork::Ipv4Network;

use self::sys::{BpfError, Hook};

/// Bytes of link-layer header in front of the IPv4 header on an Ethernet underlay.
pub const ETHERNET: u8 = 14;

/// Setting up or changing the programs failed.
#[derive(Debug, thiserror::Error)]
pub enum TcIpipError {
    /// Generating a program failed.
    #[error("in-kernel IPIP: {0}")]
    Asm(#[from] asm::AsmError),
    /// A `bpf(2)` call failed.
    #[error("in-kernel IPIP: {0}")]
    Bpf(#[from] BpfError),
}

/// Where the programs run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Devices {
    /// Index of the device the IPIP routes point at (encapsulation on its egress): the TUN, or
    /// the veth end that joins decapsulated packets with GRO.
    pub route: u32,
    /// Link-layer header length of that device (0 for the TUN, [`ETHERNET`] for the veth).
    pub route_l2: u8,
    /// Where decapsulated packets go.
    pub deliver: progs::Deliver,
    /// Index of the underlay interface (decapsulation on its ingress, packets out of it).
    pub underlay: u32,
    /// Link-layer header length of the underlay ([`ETHERNET`]).
    pub underlay_l2: u8,
    /// This node's underlay address.
    pub local: Ipv4Addr,
}

/// Packets the programs carried since they were first attached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Carried {
    /// Packets encapsulated and sent to peers (a super-packet counts once).
    pub encapsulated: u64,
    /// Packets from peers decapsulated.
    pub decapsulated: u64,
}

/// The programs' counter map, readable while they run.
#[derive(Debug)]
pub struct Counters {
    map: OwnedFd,
    /// CPUs the map holds a value for (read once).
    cpus: usize,
}

impl Counters {
    /// The counts as they are now.
    pub fn read(&self) -> Result<Carried, TcIpipError> {
        let sum = |key| sys::counter_sum(&self.map, key, self.cpus);
        Ok(Carried {
            encapsulated: sum(progs::COUNT_ENCAPSULATED)?,
            decapsulated: sum(progs::COUNT_DECAPSULATED)?,
        })
    }
}

/// The attached programs of one node.
#[derive(Debug)]
pub struct TcIpip {
    dev: Devices,
    encap: OwnedFd,
    decap: OwnedFd,
    counters: Arc<Counters>,
}

fn load(
    dev: &Devices,
    table: &[(Ipv4Network, Ipv4Addr)],
    counters: &Counters,
) -> Result<(OwnedFd, OwnedFd), TcIpipError> {
    let map = Some(counters.map.as_raw_fd());
    let encap = progs::encap(&progs::EncapSpec {
        l3: dev.route_l2,
        local: dev.local,
        underlay: dev.underlay,
        peers: table,
        // The TUN's reader (the userspace data plane) takes what the program leaves; nothing
        // reads the veth.
        miss: if dev.route_l2 == 0 {
            progs::TCX_NEXT
        } else {
            progs::TC_ACT_SHOT
        },
        counters: map,
    })?;
    let addrs: Vec<Ipv4Addr> = table.iter().map(|(_, a)| *a).collect();
    let decap = progs::decap(&progs::DecapSpec {
        l3: dev.underlay_l2,
        local: dev.local,
        deliver: dev.deliver,
        counters: map,
        peers: &addrs,
    })?;
    Ok((
        sys::prog_load("shimnet_encap", &encap)?,
        sys::prog_load("shimnet_decap", &decap)?,
    ))
}

impl TcIpip {
    /// Loads the programs for `table` (pod subnet → peer underlay address) and attaches them.
    pub fn attach(dev: Devices, table: &[(Ipv4Network, Ipv4Addr)]) -> Result<Self, TcIpipError> {
        let counters = Arc::new(Counters {
            map: sys::counter_map(2)?,
            cpus: sys::possible_cpus(),
        });
        let (encap, decap) = load(&dev, table, &counters)?;
        // Decapsulation first: a peer answering a packet sent by the new path is understood.
        let decap = sys::tcx_attach(&decap, dev.underlay, Hook::Ingress)?;
        let encap = sys::tcx_attach(&encap, dev.route, Hook::Egress)?;
        Ok(TcIpip {
            dev,
            encap,
            decap,
            counters,
        })
    }

    /// The programs' packet counters (kept across [`TcIpip::set_peers`]).
    pub fn counters(&self) -> Arc<Counters> {
        self.counters.clone()
    }

    /// The devices the programs are attached to.
    pub fn devices(&self) -> Devices {
        self.dev
    }

    /// Swaps in programs for `table`; on error the previous ones stay.
    pub fn set_peers(&self, table: &[(Ipv4Network, Ipv4Addr)]) -> Result<(), TcIpipError> {
        let (encap, decap) = load(&self.dev, table, &self.counters)?;
        sys::link_update(&self.decap, &decap)?;
        sys::link_update(&self.encap, &encap)?;
        Ok(())
    }
}
