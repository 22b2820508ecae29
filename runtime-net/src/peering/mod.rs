//! Multi-host peering: host-gw routes, VXLAN, IPIP (kernel device or the [`userspace_ipip`]
//! data plane), per-peer `auto` choice, drift repair and status, fed with peer sets by a
//! membership source ([`source`]: the peer file, [`file_source`], or etcd in its own crate).
//!
//! [`peers`], [`mode`], [`plan`] and [`filter`] are pure; [`kernel`] is the netlink executor,
//! [`crate::firewall::encap`] the executor of the encapsulation filter and [`probe`] the
//! reachability check. [`Peering`] ties them together: [`Peering::take`] is the one path by
//! which a peer set becomes the running one, and each [`Peering::reconcile`] pass applies it in
//! the order of [`filter::PASS`]: the filter of encapsulated packets first (only peers get in),
//! then the devices, routes and VXLAN entries (owned objects only), then the guards no longer
//! needed, then the status and drop counters. [`reachability::Prober`] checks every peer across
//! the data plane apart from the pass (after it, and when a reader finds the last result stale),
//! so a new peer set is never held up by a slow probe.

pub mod file_source;
pub mod filter;
pub mod kernel;
pub mod mode;
pub mod peers;
pub mod plan;
pub mod probe;
pub mod reachability;
pub mod retry;
pub mod source;
pub mod tc_ipip;
pub mod userspace_ipip;

use std::net::Ipv4Addr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use self::filter::{Guarded, Step};
use self::kernel::{DeviceSpec, Kind, Underlay};
use self::mode::Plane;
use self::peers::{ForwardingChoice, IpipChoice, NodeConfig, Peer, PeerError, PeeringConfig};
use self::plan::{Desired, Devices, PlannedPeer};
use self::tc_ipip::progs::Deliver;
use self::tc_ipip::TcIpip;
use self::userspace_ipip::UserspaceIpip;
use crate::firewall::encap::{self, EncapDrops, EncapFilter};
use crate::firewall::{BackendKind, FirewallError};
use crate::netlink::NetlinkError;

/// VXLAN device name.
pub const VXLAN_DEV: &str = "shimnet-vxlan";
/// Kernel IPIP device name.
pub const IPIP_DEV: &str = "shimnet-ipip";
/// TUN device of the userspace IPIP data plane.
pub const TUN_DEV: &str = "shimnet-tun";
/// Owner alias of the VXLAN device.
pub const VXLAN_ALIAS: &str = "shimnet:peering=vxlan";
/// Owner alias of the kernel IPIP device.
pub const IPIP_ALIAS: &str = "shimnet:peering=ipip";
/// Owner alias of the TUN device.
pub const TUN_ALIAS: &str = "shimnet:peering=tun";
/// The end of the veth pair IPIP routes point at with [`IpipPath::Bpf`] (it joins the
/// decapsulated packets with GRO).
pub const GRO_VETH: &str = "shimnet-bpf";
/// The other end, into which decapsulated packets are sent.
pub const GRO_VETH_PEER: &str = "shimnet-bpfp";
/// Owner alias of [`GRO_VETH`].
pub const GRO_VETH_ALIAS: &str = "shimnet:peering=bpf";
/// MAC of [`GRO_VETH`] (local to the node; the decapsulation program addresses packets to it).
pub const GRO_VETH_MAC: [u8; 6] = [0x02, 0x5e, 0xb0, 0x00, 0x00, 0x01];

/// Which IPIP implementation this node uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IpipPath {
    /// The kernel's IPIP device.
    Kernel,
    /// TUN + raw IP-protocol-4 socket.
    Userspace,
    /// TUN + raw IP-protocol-4 socket, with tc programs doing the encapsulation in the kernel
    /// ([`tc_ipip`]).
    Bpf,
}

/// One peer in the status report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PeerStatus {
    /// Peer name.
    pub name: String,
    /// Underlay address.
    pub address: Ipv4Addr,
    /// Pod subnet.
    pub pod_cidr: ipnetwork::Ipv4Network,
    /// The data plane chosen for it.
    pub mode: Plane,
    /// Whether an ICMP echo across the data plane was answered in the last probe.
    pub reachable: bool,
    /// Unix time (seconds) of the last probe of this peer (`None`: not probed yet).
    pub probed_at: Option<u64>,
    /// Unix time at which the peer's membership lease expires (etcd, when looked up).
    pub lease_expires: Option<u64>,
}

/// Who drops the encapsulated packets of non-peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EncapJudge {
    /// The nftables filter (table `ip shimnet-encap`).
    Nftables,
    /// The iptables filter (chain `SHIMNET-ENCAP`).
    Iptables,
    /// The userspace IPIP data plane itself.
    Userspace,
}

impl From<BackendKind> for EncapJudge {
    fn from(k: BackendKind) -> Self {
        match k {
            BackendKind::Nftables => EncapJudge::Nftables,
            BackendKind::Iptables => EncapJudge::Iptables,
        }
    }
}

/// Per encapsulation, who judges its packets (`None`: not in use on this node, nothing listens).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct EncapJudges {
    /// VXLAN.
    pub vxlan: Option<EncapJudge>,
    /// IPIP.
    pub ipip: Option<EncapJudge>,
}

/// What `GET /v1/peers` shows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PeeringStatus {
    /// This node's name.
    pub node: String,
    /// This node's underlay address.
    pub address: Option<Ipv4Addr>,
    /// This node's pod subnet.
    pub pod_cidr: Option<ipnetwork::Ipv4Network>,
    /// The IPIP implementation.
    pub ipip: Option<IpipPath>,
    /// Unix time (seconds) of the last finished reconcile pass.
    pub last_reconcile: Option<u64>,
    /// Errors of the last pass (peer file refused, kernel errors).
    pub errors: Vec<String>,
    /// Peers.
    pub peers: Vec<PeerStatus>,
    /// Counters of the userspace IPIP data plane, when it runs.
    pub userspace_ipip: Option<userspace_ipip::CounterSnapshot>,
    /// The running data plane's counters, read when the status is shown.
    #[serde(skip)]
    pub live_counters: LiveCounters,
    /// Packets the tc programs of IPIP in the kernel carried, when they run.
    pub tc_ipip: Option<tc_ipip::Carried>,
    /// The tc programs' counters, read when the status is shown.
    #[serde(skip)]
    pub live_tc: LiveTc,
    /// Packets the pod forwarding programs carried, while they are attached.
    pub tc_forwarding: Option<tc_ipip::forwarding::Forwarded>,
    /// The pod forwarding programs, read when the status is shown.
    #[serde(skip)]
    pub live_forwarding: Live<tc_ipip::forwarding::TcForwarding>,
    /// Who drops encapsulated packets from non-peers, per encapsulation.
    pub encap_filter: EncapJudges,
    /// Encapsulated packets from non-peers dropped so far, per encapsulation (firewall filter
    /// and userspace IPIP data plane together).
    pub encap_dropped: EncapDrops,
    /// Where the peers come from, and whether that source answers.
    pub source: Option<source::SourceStatus>,
}

impl PeeringStatus {
    /// The status with the userspace data plane's and the tc programs' counters as they are
    /// now, not as the last pass saw them.
    /// `encap_dropped.ipip`, which counts the data plane's `non_peer` drops, moves with them.
    pub fn with_live_counters(mut self) -> Self {
        if let Some(c) = &self.live_counters.0 {
            let now = c.snapshot();
            let seen = self.userspace_ipip.map_or(0, |u| u.non_peer);
            self.encap_dropped.ipip += now.non_peer.saturating_sub(seen);
            self.userspace_ipip = Some(now);
        }
        if let Some(Ok(now)) = self.live_tc.0.as_ref().map(|c| c.read()) {
            self.tc_ipip = Some(now);
        }
        if let Some(h) = &self.live_forwarding.0 {
            self.tc_forwarding = h.active().then(|| h.forwarded().ok()).flatten();
        }
        self
    }
}

/// Counters of a running data plane, shared with the status and read when it is shown (equal
/// when the same counters).
pub struct Live<T>(Option<Arc<T>>);

impl<T> Live<T> {
    /// The counters of a running data plane, or none.
    pub fn new(c: Option<Arc<T>>) -> Self {
        Live(c)
    }
}

impl<T> Clone for Live<T> {
    fn clone(&self) -> Self {
        Live(self.0.clone())
    }
}

impl<T> Default for Live<T> {
    fn default() -> Self {
        Live(None)
    }
}

impl<T> PartialEq for Live<T> {
    fn eq(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (a, b) => a.is_none() && b.is_none(),
        }
    }
}

impl<T> Eq for Live<T> {}

impl<T> std::fmt::Debug for Live<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Live(running)"
        } else {
            "Live(none)"
        })
    }
}

/// The userspace IPIP data plane's counters, shared with the status.
pub type LiveCounters = Live<userspace_ipip::Counters>;

/// The tc programs' counters, shared with the status.
pub type LiveTc = Live<tc_ipip::Counters>;

/// Shared, read-only view of the status.
pub type StatusHandle = Arc<RwLock<PeeringStatus>>;

/// Peering failures.
#[derive(Debug, thiserror::Error)]
pub enum PeeringError {
    /// Configuration or peer file refused.
    #[error(transparent)]
    Config(#[from] PeerError),
    /// Kernel request failed.
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    /// The encapsulation filter refused a change.
    #[error("encapsulation filter: {0}")]
    Filter(#[from] FirewallError),
    /// Peer file unreadable.
    #[error("peer file {path}: {msg}")]
    File {
        /// Path.
        path: String,
        /// Cause.
        msg: String,
    },
}

/// Outcome of one reconcile pass.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PassReport {
    /// Kernel changes carried out (devices repaired, routes/entries set or removed).
    pub changes: usize,
    /// Errors (the pass keeps going past each one).
    pub errors: Vec<String>,
}

/// The peering controller of one node.
pub struct Peering {
    h: rtnetlink::Handle,
    node: NodeConfig,
    cfg: PeeringConfig,
    underlay: Underlay,
    ipip: IpipPath,
    userspace: Option<UserspaceIpip>,
    /// The tc programs of [`IpipPath::Bpf`], once attached.
    tc: Option<TcIpip>,
    /// Pod traffic to peers in tc programs (see [`Peering::with_forwarding`]); `None` once
    /// they failed to attach with `forwarding = "auto"`.
    forwarding: Option<Arc<tc_ipip::forwarding::TcForwarding>>,
    peers: Vec<Peer>,
    /// Whether a peer set has been taken: until then nothing owned is added or removed.
    known: bool,
    status: StatusHandle,
    filter: Arc<dyn EncapFilter>,
    /// Encapsulations the installed filter guards (as last applied successfully).
    guarded: Guarded,
    /// The filter last applied successfully.
    applied: Option<encap::EncapRules>,
}

pub(crate) fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Runs a blocking call of the encapsulation filter off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, FirewallError> + Send + 'static,
) -> Result<T, PeeringError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| {
            PeeringError::Filter(FirewallError::Unavailable(format!(
                "filter task failed: {e}"
            )))
        })?
        .map_err(PeeringError::Filter)
}

/// The userspace IPIP peer table of `planned`: pod subnet → underlay address of IPIP peers.
fn ipip_table(planned: &[PlannedPeer]) -> Vec<(ipnetwork::Ipv4Network, Ipv4Addr)> {
    planned
        .iter()
        .filter(|p| p.plane == Plane::Ipip)
        .map(|p| (p.peer.pod_cidr, p.peer.address))
        .collect()
}

impl Peering {
    /// Validates the configuration, finds the underlay interface, chooses the IPIP path and
    /// opens the encapsulation filter of firewall backend `firewall` (removing the other
    /// backend's, if any). `initial` is the peer set known at start; `None` (a membership source
    /// that has not answered yet) leaves every owned route, device and filter as it is until
    /// [`Peering::take`].
    pub async fn new(
        node: NodeConfig,
        cfg: PeeringConfig,
        firewall: BackendKind,
        initial: Option<Vec<Peer>>,
    ) -> Result<Self, PeeringError> {
        peers::validate_config(&node, &cfg)?;
        let (conn, h, _) = rtnetlink::new_connection().map_err(|e| NetlinkError::Request {
            op: "open netlink socket",
            object: "peering".into(),
            msg: e.to_string(),
        })?;
        tokio::spawn(conn);
        let underlay = kernel::underlay(&h, node.address).await?;
        let ipip = match cfg.ipip {
            IpipChoice::Kernel => IpipPath::Kernel,
            IpipChoice::Userspace => IpipPath::Userspace,
            IpipChoice::Bpf => IpipPath::Bpf,
            IpipChoice::Auto => match tokio::task::spawn_blocking(crate::features::kernel_ipip)
                .await
                .unwrap_or_else(|e| Err(e.to_string()))
            {
                Ok(_) => IpipPath::Kernel,
                Err(why) => {
                    tracing::info!(
                        "kernel has no IPIP ({why}); IPIP peers use the userspace data plane \
                         with encapsulation in tc programs"
                    );
                    IpipPath::Bpf
                }
            },
        };
        tracing::info!(ipip = ?ipip, underlay_index = underlay.index, underlay_mtu = underlay.mtu, underlay = %underlay.net, "peering: IPIP path chosen");
        let filter: Arc<dyn EncapFilter> =
            Arc::from(blocking(move || encap::open(firewall)).await?);
        if let Err(e) = blocking(move || encap::remove_other(firewall)).await {
            tracing::warn!("encapsulation filter of the other firewall backend not removed: {e}");
        }
        let status = Arc::new(RwLock::new(PeeringStatus {
            node: node.name.clone(),
            address: Some(node.address),
            pod_cidr: Some(node.pod_cidr),
            ipip: Some(ipip),
            ..PeeringStatus::default()
        }));
        Ok(Peering {
            h,
            node,
            cfg,
            underlay,
            ipip,
            userspace: None,
            tc: None,
            forwarding: None,
            known: initial.is_some(),
            peers: initial.unwrap_or_default(),
            status,
            filter,
            guarded: Guarded::default(),
            applied: None,
        })
    }

    /// Lets `programs` (an engine observer of this daemon, so it knows the pod ports) forward
    /// between this node's pods and host-gw and VXLAN peers' pods, unless
    /// `forwarding = "kernel"`.
    pub fn with_forwarding(mut self, programs: Arc<tc_ipip::forwarding::TcForwarding>) -> Self {
        if self.cfg.forwarding != ForwardingChoice::Kernel {
            self.forwarding = Some(programs);
        }
        self
    }

    /// Attaches, swaps or detaches the pod forwarding programs for `planned` (after the routes
    /// are in place: the programs send by them).
    fn ensure_forwarding(&mut self, planned: &[PlannedPeer], dev: &Devices, r: &mut PassReport) {
        use tc_ipip::forwarding::{Vxlan, Want, Way};
        let Some(f) = &self.forwarding else { return };
        let on = |plane: Plane| planned.iter().filter(move |p| p.plane == plane);
        let mut ways = vec![Way {
            dev: self.underlay.index,
            peers: on(Plane::HostGw).map(|p| p.peer.pod_cidr).collect(),
            icmp_errors_from: on(Plane::HostGw).map(|p| p.peer.address).collect(),
            vxlan: None,
        }];
        if let Some(vxlan) = dev.vxlan {
            ways.push(Way {
                dev: vxlan,
                peers: on(Plane::Vxlan).map(|p| p.peer.pod_cidr).collect(),
                icmp_errors_from: Vec::new(),
                vxlan: Some(Vxlan {
                    underlay: self.underlay.index,
                    local: self.node.address,
                    port: self.cfg.vxlan_port,
                    vni: self.cfg.vxlan_vni,
                    mac: plan::vxlan_mac(self.node.address),
                    peers: on(Plane::Vxlan)
                        .map(|p| (p.peer.pod_cidr, p.peer.address))
                        .collect(),
                }),
            });
        }
        // IPIP in tc programs through the GRO veth (an Ethernet device; not the TUN): packets
        // for IPIP peers are sent into it for encapsulation, and decapsulated ones arrive on it.
        if let Some(t) = self.tc.as_ref().map(|t| t.devices()) {
            if t.route_l2 == tc_ipip::ETHERNET {
                ways.push(Way {
                    dev: t.route,
                    peers: on(Plane::Ipip).map(|p| p.peer.pod_cidr).collect(),
                    icmp_errors_from: Vec::new(),
                    vxlan: None,
                });
            }
        }
        let want = self.underlay.l2.is_some().then_some(Want {
            local: self.node.pod_cidr,
            ways,
        });
        match f.set(want) {
            Ok(false) => {}
            Ok(true) => {
                tracing::info!(attached = f.active(), "pod forwarding programs changed");
                r.changes += 1;
            }
            Err(e) if self.cfg.forwarding == ForwardingChoice::Auto => {
                tracing::warn!("{e}; pod traffic to peers takes the kernel's forwarding path");
                self.forwarding = None;
            }
            Err(e) => r.errors.push(format!(
                "{e}; pod traffic to peers takes the kernel's forwarding path"
            )),
        }
    }

    /// A prober of this node's peers (echoes from this node's gateway), one probe at a time.
    pub fn prober(&self, freshness: reachability::Freshness) -> reachability::Prober {
        reachability::Prober::new(
            self.status.clone(),
            probe::gateway(self.node.pod_cidr),
            freshness,
            Duration::from_millis(900),
        )
        .with_filter(self.filter.clone())
    }

    /// The status, shared with the API.
    pub fn status(&self) -> StatusHandle {
        self.status.clone()
    }

    /// The IPIP implementation in use.
    pub fn ipip_path(&self) -> IpipPath {
        self.ipip
    }

    /// The underlay interface.
    pub fn underlay(&self) -> Underlay {
        self.underlay
    }

    /// The MTU containers of the default network get: the underlay's minus the largest
    /// encapsulation the configuration may use.
    pub fn container_mtu(&self) -> u32 {
        mode::container_mtu(&self.cfg, &self.peers, self.underlay.mtu)
    }

    /// The running peer set.
    pub fn peers(&self) -> &[Peer] {
        &self.peers
    }

    /// The one place a new (validated) peer set becomes the running one, whatever its source
    /// (the peer file or etcd, through [`source::PeerSubscription`]). It changes nothing in the
    /// kernel: the next pass applies it, filter first (see [`filter::PASS`]). `true` when it
    /// differs from the running set (or is the first one).
    pub fn take(&mut self, peers: Vec<Peer>) -> bool {
        let changed = !self.known || peers != self.peers;
        self.known = true;
        self.peers = peers;
        changed
    }

    fn planned(&self) -> Vec<PlannedPeer> {
        self.peers
            .iter()
            .map(|p| PlannedPeer {
                peer: p.clone(),
                plane: mode::choose(&self.cfg, self.underlay.net, p),
            })
            .collect()
    }

    fn device(&self, name: &str, alias: &str, overhead: u32, mac: Option<[u8; 6]>) -> DeviceSpec {
        DeviceSpec {
            name: name.into(),
            alias: alias.into(),
            mtu: self.underlay.mtu - overhead,
            addr: plan::vtep_addr(self.node.pod_cidr),
            mac,
        }
    }

    /// Creates, repairs or removes the devices `planned` needs; kernel VXLAN/IPIP devices only
    /// where `allowed` (the filter guarding them is in place).
    async fn ensure_devices(
        &mut self,
        planned: &[PlannedPeer],
        allowed: Guarded,
        r: &mut PassReport,
    ) -> Devices {
        let uses = |p: Plane| planned.iter().any(|x| x.plane == p);
        let mut dev = Devices {
            underlay: self.underlay.index,
            ..Devices::default()
        };
        if uses(Plane::Vxlan) && allowed.vxlan {
            let spec = self.device(
                VXLAN_DEV,
                VXLAN_ALIAS,
                Plane::Vxlan.overhead(),
                Some(plan::vxlan_mac(self.node.address)),
            );
            let kind = Kind::Vxlan {
                vni: self.cfg.vxlan_vni,
                port: self.cfg.vxlan_port,
                local: self.node.address,
                dev: self.underlay.index,
            };
            match kernel::ensure_device(&self.h, &spec, kind).await {
                Ok((i, repaired)) => {
                    dev.vxlan = Some(i);
                    r.changes += usize::from(repaired);
                }
                Err(e) => r.errors.push(e.to_string()),
            }
        } else {
            self.remove_device(VXLAN_DEV, VXLAN_ALIAS, r).await;
        }
        let ipip = uses(Plane::Ipip);
        match self.ipip {
            IpipPath::Kernel if ipip && allowed.ipip => {
                let spec = self.device(IPIP_DEV, IPIP_ALIAS, Plane::Ipip.overhead(), None);
                let kind = Kind::Ipip {
                    local: self.node.address,
                };
                match kernel::ensure_device(&self.h, &spec, kind).await {
                    Ok((i, repaired)) => {
                        dev.ipip = Some(i);
                        r.changes += usize::from(repaired);
                    }
                    Err(e) => r.errors.push(e.to_string()),
                }
            }
            IpipPath::Kernel => self.remove_device(IPIP_DEV, IPIP_ALIAS, r).await,
            IpipPath::Userspace | IpipPath::Bpf if ipip || self.userspace.is_some() => {
                if self.userspace.is_some() {
                    match kernel::link_exists(&self.h, TUN_DEV).await {
                        Ok(false) => {
                            // Deleted by hand: its threads stop on their own; start anew.
                            tracing::warn!(
                                tun = TUN_DEV,
                                "TUN device gone; restarting the userspace IPIP data plane"
                            );
                            self.userspace = None;
                        }
                        Ok(true) => {}
                        Err(e) => r.errors.push(e.to_string()),
                    }
                }
                if self.userspace.is_none() {
                    match UserspaceIpip::start(TUN_DEV, self.node.address, self.underlay.mtu) {
                        Ok(u) => {
                            tracing::info!(tun = TUN_DEV, "userspace IPIP data plane started");
                            // Its peers from the start, before any route points at the TUN.
                            u.set_peers(ipip_table(planned));
                            self.userspace = Some(u);
                            r.changes += 1;
                        }
                        Err(e) => r.errors.push(e.to_string()),
                    }
                }
                if self.userspace.is_some() {
                    let spec = self.device(TUN_DEV, TUN_ALIAS, Plane::Ipip.overhead(), None);
                    match kernel::ensure_device(&self.h, &spec, Kind::Existing).await {
                        Ok((i, repaired)) => {
                            dev.tun = Some(i);
                            r.changes += usize::from(repaired);
                        }
                        Err(e) => r.errors.push(e.to_string()),
                    }
                }
                if let (IpipPath::Bpf, Some(tun)) = (self.ipip, dev.tun) {
                    // Routes go through the veth that joins decapsulated packets with GRO;
                    // without it, through the TUN. Without the programs, through the TUN.
                    let (route, route_l2, deliver) = match self.ensure_gro_veth(r).await {
                        Some((route, other)) => (
                            route,
                            tc_ipip::ETHERNET,
                            Deliver::Veth {
                                ifindex: other,
                                mac: GRO_VETH_MAC,
                            },
                        ),
                        None => (tun, 0, Deliver::Ingress(tun)),
                    };
                    self.ensure_tc(planned, route, route_l2, deliver, r);
                    if self.tc.is_some() {
                        dev.tun = Some(route);
                    }
                }
            }
            IpipPath::Userspace | IpipPath::Bpf => {}
        }
        if self.ipip != IpipPath::Bpf {
            self.remove_device(GRO_VETH, GRO_VETH_ALIAS, r).await;
        }
        dev
    }

    /// Creates or repairs the veth pair of [`IpipPath::Bpf`]: GRO on the end routes point at
    /// (it joins the decapsulated packets sent into the other end), TSO off on the other end
    /// (veth joins only what its sender did not). Their indexes (route end, other end).
    async fn ensure_gro_veth(&self, r: &mut PassReport) -> Option<(u32, u32)> {
        let spec = self.device(
            GRO_VETH,
            GRO_VETH_ALIAS,
            Plane::Ipip.overhead(),
            Some(GRO_VETH_MAC),
        );
        let kind = Kind::Veth {
            peer: GRO_VETH_PEER,
        };
        let route = match kernel::ensure_device(&self.h, &spec, kind).await {
            Ok((i, repaired)) => {
                r.changes += usize::from(repaired);
                i
            }
            Err(e) => {
                r.errors.push(format!(
                    "{e}; decapsulated IPIP goes to the TUN, without GRO"
                ));
                return None;
            }
        };
        let other = match kernel::link_index(&self.h, GRO_VETH_PEER).await {
            Ok(Some(i)) => i,
            Ok(None) => {
                r.errors.push(format!("{GRO_VETH_PEER}: gone"));
                return None;
            }
            Err(e) => {
                r.errors.push(e.to_string());
                return None;
            }
        };
        for (name, offload, on) in [
            (GRO_VETH, tc_ipip::offload::Offload::Gro, true),
            (GRO_VETH_PEER, tc_ipip::offload::Offload::Tso, false),
        ] {
            if let Err(e) = tc_ipip::offload::set(name, offload, on) {
                r.errors.push(format!("{name}: set {offload:?} {on}: {e}"));
            }
        }
        Some((route, other))
    }

    /// Attaches the tc programs of [`IpipPath::Bpf`] (encapsulation on device `route`,
    /// decapsulated packets to `deliver`) unless they are in place. Where they cannot be
    /// attached, the userspace data plane carries IPIP: with `auto` from then on (logged once),
    /// with `bpf` asked for explicitly as an error of every pass.
    fn ensure_tc(
        &mut self,
        planned: &[PlannedPeer],
        route: u32,
        route_l2: u8,
        deliver: Deliver,
        r: &mut PassReport,
    ) {
        let Some(l2) = self.underlay.l2 else {
            self.tc_failed("in-kernel IPIP: the underlay is not Ethernet".into(), r);
            return;
        };
        let want = tc_ipip::Devices {
            route,
            route_l2,
            deliver,
            underlay: self.underlay.index,
            underlay_l2: l2,
            local: self.node.address,
        };
        if self.tc.as_ref().is_some_and(|t| t.devices() == want) {
            return;
        }
        self.tc = None;
        match TcIpip::attach(want, &ipip_table(planned)) {
            Ok(t) => {
                tracing::info!(
                    route,
                    underlay = self.underlay.index,
                    gro = route_l2 != 0,
                    "in-kernel IPIP programs attached"
                );
                self.tc = Some(t);
                r.changes += 1;
            }
            Err(e) => self.tc_failed(e.to_string(), r),
        }
    }

    fn tc_failed(&mut self, e: String, r: &mut PassReport) {
        match self.cfg.ipip {
            IpipChoice::Auto => {
                tracing::warn!("{e}; IPIP peers use the userspace data plane alone");
                self.ipip = IpipPath::Userspace;
                let mut st = self.status.write().unwrap_or_else(|e| e.into_inner());
                st.ipip = Some(IpipPath::Userspace);
            }
            _ => r
                .errors
                .push(format!("{e}; the userspace data plane carries IPIP")),
        }
    }

    async fn remove_device(&self, name: &str, alias: &str, r: &mut PassReport) {
        match kernel::delete_owned(&self.h, name, alias).await {
            Ok(true) => {
                tracing::info!(device = name, "peering device no longer needed, removed");
                r.changes += 1;
            }
            Ok(false) => {}
            Err(e) => r.errors.push(e.to_string()),
        }
    }

    /// Encapsulations whose kernel device exists now; both when that cannot be told.
    async fn present(&self, r: &mut PassReport) -> Guarded {
        let exists = |name: &'static str| kernel::link_exists(&self.h, name);
        match (exists(VXLAN_DEV).await, exists(IPIP_DEV).await) {
            (Ok(vxlan), Ok(ipip)) => Guarded { vxlan, ipip },
            (a, b) => {
                for e in [a.err(), b.err()].into_iter().flatten() {
                    r.errors.push(e.to_string());
                }
                Guarded {
                    vxlan: true,
                    ipip: true,
                }
            }
        }
    }

    /// Installs the filter guarding `guard` for `planned` (one transaction).
    async fn guard(&mut self, planned: &[PlannedPeer], guard: Guarded) -> Result<(), PeeringError> {
        let vxlan = filter::Vxlan {
            port: self.cfg.vxlan_port,
            vni: self.cfg.vxlan_vni,
        };
        let rules = filter::rules(self.node.address, vxlan, planned, guard);
        let (f, r) = (self.filter.clone(), rules.clone());
        let mut res = blocking(move || f.apply(&r)).await;
        if res.is_err() {
            // Once more after a moment (e.g. the xtables lock held by another tool) before the
            // pass fails closed.
            tokio::time::sleep(Duration::from_millis(200)).await;
            let (f, r) = (self.filter.clone(), rules.clone());
            res = blocking(move || f.apply(&r)).await;
        }
        match res {
            Ok(()) => {
                if self.applied.as_ref() != Some(&rules) {
                    let peers = |p: Option<&std::collections::BTreeSet<Ipv4Addr>>| {
                        p.map_or("not guarded".to_string(), |p| {
                            format!("{} peer(s)", p.len())
                        })
                    };
                    tracing::info!(
                        backend = ?self.filter.kind(),
                        vxlan = %peers(rules.vxlan.as_ref().map(|v| &v.peers)),
                        ipip = %peers(rules.ipip.as_ref()),
                        "encapsulation filter applied"
                    );
                }
                self.guarded = guard;
                self.applied = Some(rules);
                Ok(())
            }
            Err(e) => {
                // Whatever the kernel holds now is not known to be ours.
                self.guarded = Guarded::default();
                self.applied = None;
                Err(e)
            }
        }
    }

    /// One pass: the steps of [`filter::PASS`] in order — plan the running peer set, install
    /// the filter for it, hand the userspace data plane its peers, ensure devices, repair routes
    /// and VXLAN entries (removing what belongs to peers no longer in the set), lift the guards
    /// no longer needed and publish the status. Until a peer set is known it changes nothing.
    pub async fn reconcile(&mut self) -> PassReport {
        let mut r = PassReport::default();
        if !self.known {
            let mut st = self.status.write().unwrap_or_else(|e| e.into_inner());
            st.last_reconcile = Some(now_unix());
            st.errors = vec![
                "no peer set from the membership source yet; owned routes, devices and filter left as they are"
                    .into(),
            ];
            r.errors = st.errors.clone();
            return r;
        }
        let mut planned = Vec::new();
        // Whether the filter for this peer set is in place; kernel VXLAN/IPIP devices exist only
        // while it is (fail closed).
        let mut filtered = false;
        let mut dev = Devices::default();
        for step in filter::PASS {
            match step {
                // The set itself was taken by [`Peering::take`]; the pass plans it.
                Step::Take => planned = self.planned(),
                Step::Guard => {
                    let present = self.present(&mut r).await;
                    let guard = Guarded::wanted(&planned, self.ipip).or(present);
                    match self.guard(&planned, guard).await {
                        Ok(()) => filtered = true,
                        Err(e) => r.errors.push(format!(
                            "{e}; kernel VXLAN/IPIP devices are removed until the filter is in place"
                        )),
                    }
                }
                Step::UserspacePeers => {
                    if let Some(u) = &self.userspace {
                        u.set_peers(ipip_table(&planned));
                    }
                    if let Some(Err(e)) =
                        self.tc.as_ref().map(|t| t.set_peers(&ipip_table(&planned)))
                    {
                        // Fail closed: programs still holding the previous peers go; the
                        // userspace data plane carries IPIP until they are attached again.
                        self.tc = None;
                        r.errors
                            .push(format!("{e}; in-kernel IPIP programs detached"));
                    }
                }
                Step::Devices => {
                    let allowed = Guarded {
                        vxlan: filtered,
                        ipip: filtered,
                    };
                    dev = self.ensure_devices(&planned, allowed, &mut r).await;
                }
                Step::Routes => {
                    let want = plan::desired(&planned, &dev);
                    self.routes(&want, &dev, &mut r).await;
                    self.ensure_forwarding(&planned, &dev, &mut r);
                }
                Step::Release => {
                    if filtered {
                        let present = self.present(&mut r).await;
                        let guard = Guarded::wanted(&planned, self.ipip).or(present);
                        if guard != self.guarded {
                            if let Err(e) = self.guard(&planned, guard).await {
                                r.errors.push(e.to_string());
                            }
                        }
                    }
                }
                Step::Report => self.report(&planned, &r).await,
            }
        }
        r
    }

    /// Sets and removes routes, neighbour and forwarding entries so the kernel shows `want`.
    async fn routes(&self, want: &Desired, dev: &Devices, r: &mut PassReport) {
        for (peer, kind) in &want.missing {
            r.errors.push(format!("peer {peer:?}: no {kind} device"));
        }
        match kernel::observe(&self.h, dev.vxlan).await {
            Ok(seen) => {
                for c in plan::diff(want, &seen) {
                    match kernel::apply(&self.h, &c, dev.vxlan).await {
                        Ok(()) => {
                            tracing::debug!(change = ?c, "peering change applied");
                            r.changes += 1;
                        }
                        Err(e) => r.errors.push(e.to_string()),
                    }
                }
            }
            Err(e) => r.errors.push(e.to_string()),
        }
    }

    /// Reads the drop counters and publishes the status of the pass (each peer's reachability
    /// as the last probe found it, while the peer is unchanged).
    async fn report(&self, planned: &[PlannedPeer], r: &PassReport) {
        let f = self.filter.clone();
        let mut errors = r.errors.clone();
        let userspace = self.userspace.as_ref().map(|u| u.counters.snapshot());
        let dropped = match blocking(move || f.dropped()).await {
            Ok(mut d) => {
                d.ipip += userspace.map_or(0, |u| u.non_peer);
                d
            }
            Err(e) => {
                // Unreadable this time: the last figures stay.
                errors.push(e.to_string());
                self.status
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .encap_dropped
            }
        };
        let judge = EncapJudge::from(self.filter.kind());
        let judges = EncapJudges {
            vxlan: self.guarded.vxlan.then_some(judge),
            ipip: if self.guarded.ipip {
                Some(judge)
            } else {
                self.userspace.as_ref().map(|_| EncapJudge::Userspace)
            },
        };
        let mut st = self.status.write().unwrap_or_else(|e| e.into_inner());
        let old = std::mem::take(&mut st.peers);
        st.peers = planned
            .iter()
            .map(|p| {
                let mut s = status_of(p, false);
                if let Some(o) = old.iter().find(|o| o.same_peer(&s)) {
                    s.reachable = o.reachable;
                    s.probed_at = o.probed_at;
                }
                s
            })
            .collect();
        st.last_reconcile = Some(now_unix());
        st.errors = errors;
        st.userspace_ipip = userspace;
        st.live_counters = Live::new(self.userspace.as_ref().map(|u| u.counters.clone()));
        let tc = self.tc.as_ref().map(|t| t.counters());
        st.tc_ipip = tc.as_ref().and_then(|c| c.read().ok());
        st.live_tc = Live::new(tc);
        st.tc_forwarding = self
            .forwarding
            .as_ref()
            .filter(|h| h.active())
            .and_then(|h| h.forwarded().ok());
        st.live_forwarding = Live::new(self.forwarding.clone());
        st.encap_filter = judges;
        st.encap_dropped = dropped;
    }
}

fn status_of(p: &PlannedPeer, reachable: bool) -> PeerStatus {
    PeerStatus {
        name: p.peer.name.clone(),
        address: p.peer.address,
        pod_cidr: p.peer.pod_cidr,
        mode: p.plane,
        reachable,
        probed_at: None,
        lease_expires: None,
    }
}

impl PeerStatus {
    /// The same peer, planned the same way (reachability, probe time and lease aside).
    pub(crate) fn same_peer(&self, other: &PeerStatus) -> bool {
        (&self.name, self.address, self.pod_cidr, self.mode)
            == (&other.name, other.address, other.pod_cidr, other.mode)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::peers::{IpipChoice, ModeSetting, PeeringConfig};

    #[test]
    fn the_status_shows_the_data_planes_counters_as_they_are_now() {
        use std::sync::atomic::Ordering;
        use std::sync::Arc;
        let c = Arc::new(super::userspace_ipip::Counters::default());
        let st = super::PeeringStatus {
            userspace_ipip: Some(c.snapshot()),
            live_counters: super::Live::new(Some(c.clone())),
            ..Default::default()
        };
        c.rx.fetch_add(5, Ordering::Relaxed);
        c.rx_joined.fetch_add(2, Ordering::Relaxed);
        c.non_peer.fetch_add(3, Ordering::Relaxed);
        let live = st.clone().with_live_counters();
        let shown = live.userspace_ipip.unwrap();
        assert_eq!((shown.rx_packets, shown.rx_joined), (5, 2));
        assert_eq!(live.encap_dropped.ipip, 3, "drops follow the live counters");
        assert_eq!(st, st.clone(), "the same counters compare equal");
        let none = super::PeeringStatus::default().with_live_counters();
        assert_eq!(none.userspace_ipip, None);
    }

    pub(crate) fn peering_cfg(mode: ModeSetting) -> PeeringConfig {
        PeeringConfig {
            mode,
            cluster_cidr: "10.0.0.0/8".parse().unwrap(),
            source: super::peers::SourceKind::File,
            peers_file: "/nonexistent".into(),
            auto_encap: ModeSetting::Vxlan,
            ipip: IpipChoice::Auto,
            forwarding: super::peers::ForwardingChoice::Auto,
            vxlan_vni: 4242,
            vxlan_port: 4789,
            reconcile_interval_secs: 3,
        }
    }
}
