//! Multi-host peering from a static peer list: host-gw routes, VXLAN, IPIP (kernel device or
//! the [`userspace_ipip`] data plane), per-peer `auto` choice, drift repair and status.
//!
//! [`peers`] and [`mode`] and [`plan`] are pure; [`kernel`] is the netlink executor and
//! [`probe`] the reachability check. [`Peering`] ties them together: each
//! [`Peering::reconcile`] pass reloads the peer file if it changed, makes the devices, routes and
//! VXLAN entries match the peer set (owned objects only) and probes every peer.

pub mod kernel;
pub mod mode;
pub mod peers;
pub mod plan;
pub mod probe;
pub mod userspace_ipip;

use std::net::Ipv4Addr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use self::kernel::{DeviceSpec, Kind, Underlay};
use self::mode::Plane;
use self::peers::{IpipChoice, NodeConfig, Peer, PeerError, PeeringConfig};
use self::plan::{Devices, PlannedPeer};
use self::userspace_ipip::UserspaceIpip;
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

/// Which IPIP implementation this node uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IpipPath {
    /// The kernel's IPIP device.
    Kernel,
    /// TUN + raw IP-protocol-4 socket.
    Userspace,
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
    /// Whether an ICMP echo across the data plane was answered in the last pass.
    pub reachable: bool,
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
}

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
    /// Whether a new peer file was taken.
    pub reloaded: bool,
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
    peers: Vec<Peer>,
    file_text: Option<String>,
    status: StatusHandle,
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Peering {
    /// Validates the configuration, finds the underlay interface, chooses the IPIP path and
    /// loads the peer file (an invalid file at start leaves the peer set empty, logged).
    pub async fn new(node: NodeConfig, cfg: PeeringConfig) -> Result<Self, PeeringError> {
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
            IpipChoice::Auto => match tokio::task::spawn_blocking(crate::features::kernel_ipip)
                .await
                .unwrap_or_else(|e| Err(e.to_string()))
            {
                Ok(_) => IpipPath::Kernel,
                Err(why) => {
                    tracing::info!(
                        "kernel has no IPIP ({why}); IPIP peers use the userspace data plane"
                    );
                    IpipPath::Userspace
                }
            },
        };
        tracing::info!(ipip = ?ipip, underlay_index = underlay.index, underlay_mtu = underlay.mtu, underlay = %underlay.net, "peering: IPIP path chosen");
        let status = Arc::new(RwLock::new(PeeringStatus {
            node: node.name.clone(),
            address: Some(node.address),
            pod_cidr: Some(node.pod_cidr),
            ipip: Some(ipip),
            ..PeeringStatus::default()
        }));
        let mut me = Peering {
            h,
            node,
            cfg,
            underlay,
            ipip,
            userspace: None,
            peers: Vec::new(),
            file_text: None,
            status,
        };
        if let Err(e) = me.reload(false) {
            tracing::error!("peer file refused, starting without peers: {e}");
        }
        Ok(me)
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

    /// Reads the peer file; takes it if it is valid and (unless `force`) changed. `Ok(true)` when
    /// a new peer set was taken; on error the running peer set stays.
    pub fn reload(&mut self, force: bool) -> Result<bool, PeeringError> {
        let path = self.cfg.peers_file.clone();
        let text = std::fs::read_to_string(&path).map_err(|e| PeeringError::File {
            path: path.display().to_string(),
            msg: e.to_string(),
        })?;
        if !force && self.file_text.as_deref() == Some(text.as_str()) {
            return Ok(false);
        }
        self.file_text = Some(text.clone());
        let peers = peers::parse_peers(&text, &self.node, self.cfg.cluster_cidr)
            .map_err(PeeringError::Config)?;
        let changed = peers != self.peers;
        self.peers = peers;
        tracing::info!(file = %path.display(), peers = self.peers.len(), changed, "peer file loaded");
        Ok(changed)
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

    async fn ensure_devices(&mut self, planned: &[PlannedPeer], r: &mut PassReport) -> Devices {
        let uses = |p: Plane| planned.iter().any(|x| x.plane == p);
        let mut dev = Devices {
            underlay: self.underlay.index,
            ..Devices::default()
        };
        if uses(Plane::Vxlan) {
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
            IpipPath::Kernel if ipip => {
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
            IpipPath::Userspace if ipip || self.userspace.is_some() => {
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
            }
            IpipPath::Userspace => {}
        }
        dev
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

    /// One pass: reload the peer file if it changed, ensure devices, repair routes and VXLAN
    /// entries, remove what belongs to peers no longer listed, probe every peer.
    pub async fn reconcile(&mut self, force_reload: bool) -> PassReport {
        let mut r = PassReport::default();
        match self.reload(force_reload) {
            Ok(changed) => r.reloaded = changed,
            Err(e) => {
                tracing::error!("peer file refused, keeping the running peer set: {e}");
                r.errors.push(e.to_string());
            }
        }
        let planned = self.planned();
        let dev = self.ensure_devices(&planned, &mut r).await;
        let want = plan::desired(&planned, &dev);
        for (peer, kind) in &want.missing {
            r.errors.push(format!("peer {peer:?}: no {kind} device"));
        }
        if let Some(u) = &self.userspace {
            let table = planned
                .iter()
                .filter(|p| p.plane == Plane::Ipip)
                .map(|p| (p.peer.pod_cidr, p.peer.address))
                .collect();
            *u.peers.write().unwrap_or_else(|e| e.into_inner()) = table;
        }
        match kernel::observe(&self.h, dev.vxlan).await {
            Ok(seen) => {
                for c in plan::diff(&want, &seen) {
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
        let peers = self.probe(&planned).await;
        let mut st = self.status.write().unwrap_or_else(|e| e.into_inner());
        st.peers = peers;
        st.last_reconcile = Some(now_unix());
        st.errors = r.errors.clone();
        st.userspace_ipip = self.userspace.as_ref().map(|u| u.counters.snapshot());
        r
    }

    async fn probe(&self, planned: &[PlannedPeer]) -> Vec<PeerStatus> {
        let src = probe::gateway(self.node.pod_cidr);
        let tasks: Vec<_> = planned
            .iter()
            .map(|p| {
                let dst = probe::gateway(p.peer.pod_cidr);
                tokio::task::spawn_blocking(move || {
                    probe::ping(src, dst, Duration::from_millis(900)).unwrap_or(false)
                })
            })
            .collect();
        let mut out = Vec::with_capacity(planned.len());
        for (p, t) in planned.iter().zip(tasks) {
            out.push(PeerStatus {
                name: p.peer.name.clone(),
                address: p.peer.address,
                pod_cidr: p.peer.pod_cidr,
                mode: p.plane,
                reachable: t.await.unwrap_or(false),
            });
        }
        out
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::peers::{IpipChoice, ModeSetting, PeeringConfig};

    pub(crate) fn peering_cfg(mode: ModeSetting) -> PeeringConfig {
        PeeringConfig {
            mode,
            cluster_cidr: "10.0.0.0/8".parse().unwrap(),
            peers_file: "/nonexistent".into(),
            auto_encap: ModeSetting::Vxlan,
            ipip: IpipChoice::Auto,
            vxlan_vni: 4242,
            vxlan_port: 4789,
            reconcile_interval_secs: 3,
        }
    }
}
