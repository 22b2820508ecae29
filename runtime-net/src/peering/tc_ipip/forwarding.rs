//! Pod traffic to and from peers in tc programs ([`super::fwd`]): between this node's pods and
//! the pods of host-gw and VXLAN peers, packets skip the bridge, its netfilter hooks, the routing
//! input path and the forward chain; each takes one routing step in a program instead.
//!
//! - *Sending*: a program on the ingress of each pod's host-side veth end forwards packets to
//!   the gateway's MAC from this node's pod subnet to a peer's pod subnet out of the device the
//!   peer is reached by (the underlay for host-gw; for VXLAN the underlay too, encapsulated by
//!   the program itself as the VXLAN device would; the GRO veth for IPIP in tc programs).
//! - *Receiving*: a program on the ingress of each of those devices forwards packets from its
//!   peers' pod subnets to this node's pod subnet straight into the pod's namespace (the bridge
//!   for a pod it does not know). VXLAN peers' packets are taken one step earlier: a program on
//!   the underlay's ingress decapsulates them itself and forwards them the same way (what it
//!   does not forward goes on to the VXLAN device as if the device had decapsulated it).
//!
//! Everything else (and everything while the programs are not attached) takes the kernel's
//! forwarding path as before, so the programs change how fast, not what, is forwarded: the
//! firewall accepts these packets both ways and never translates them (the pod network's
//! `allow_from` and `no_masquerade_to` hold the cluster's pod subnets). Rules an administrator
//! adds to the forward hook do not see them; `forwarding = "kernel"` keeps them on the kernel
//! path.
//!
//! [`TcForwarding`] is an engine [`Observer`]: it learns the pod ports as endpoints come and go,
//! and [`TcForwarding::set`] (the peering pass) gives it the peers. The tcx links belong to this
//! process: when the daemon exits, forwarding falls back to the kernel path.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex};

use ipnetwork::Ipv4Network;

use super::fwd::{self, forward, pod_entry, ForwardSpec, Pods, Route};
use super::sys::BpfError;
use super::sys::{self, Hook};
use super::Counters;
use crate::engine::Observer;
use crate::types::{EndpointKey, EndpointKind, EndpointRecord, IfName, NetworkName, NetworkSpec};

/// Setting up or changing the pod forwarding programs failed.
#[derive(Debug, thiserror::Error)]
pub enum ForwardingError {
    /// Generating a program failed.
    #[error("pod forwarding programs: {0}")]
    Fwd(#[from] super::fwd::FwdError),
    /// A `bpf(2)` call failed.
    #[error("pod forwarding programs: {0}")]
    Bpf(#[from] BpfError),
}

/// Counter map entry: packets sent to peers.
pub const COUNT_SENT: u32 = 0;
/// Counter map entry: packets received from peers.
pub const COUNT_RECEIVED: u32 = 1;

/// What the peering pass asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Want {
    /// This node's pod subnet (the pod network's subnet).
    pub local: Ipv4Network,
    /// The peers by the device they are reached by (at most [`super::fwd::MAX_ROUTES`]).
    pub ways: Vec<Way>,
}

/// Peers reached by one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Way {
    /// Index of the device: their packets leave by it, and theirs arrive on it.
    pub dev: u32,
    /// The peers' pod subnets.
    pub peers: Vec<Ipv4Network>,
    /// Peer node addresses whose ICMP errors to this node's pods are let through (host-gw:
    /// their underlay addresses; over VXLAN they come from the peers' pod subnets).
    pub icmp_errors_from: Vec<Ipv4Addr>,
    /// The device is this VXLAN tunnel: the programs encapsulate its packets and decapsulate
    /// them on the underlay.
    pub vxlan: Option<Vxlan>,
}

/// A VXLAN device as the programs that encapsulate and decapsulate for it need it (see
/// [`super::fwd::Vxlan`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vxlan {
    /// Index of the underlay.
    pub underlay: u32,
    /// This node's underlay address.
    pub local: Ipv4Addr,
    /// UDP port.
    pub port: u16,
    /// VNI.
    pub vni: u32,
    /// The device's MAC.
    pub mac: [u8; 6],
    /// The peers: pod subnet and underlay address.
    pub peers: Vec<(Ipv4Network, Ipv4Addr)>,
}

impl Way {
    /// The VXLAN tunnel this way is, for the programs.
    fn tunnel(&self) -> Option<fwd::Vxlan<'_>> {
        let v = self.vxlan.as_ref()?;
        Some(fwd::Vxlan {
            dev: self.dev,
            underlay: v.underlay,
            local: v.local,
            peers: &v.peers,
            port: v.port,
            vni: v.vni,
            mac: v.mac,
        })
    }
}

/// What the programs are built for: [`Want`] and the pod network's bridge as it is now.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Table {
    want: Want,
    /// Index of the pod network's bridge.
    bridge: u32,
    /// The pod network's gateway MAC (its bridge's).
    mac: [u8; 6],
    /// The pod network's gateway address.
    gateway: Ipv4Addr,
}

/// Packets forwarded by the programs since they were first attached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Forwarded {
    /// From this node's pods to peers' pods.
    pub sent: u64,
    /// From peers' pods to this node's pods.
    pub received: u64,
}

/// A pod port: the host end of an endpoint's veth on some network.
#[derive(Debug)]
struct Port {
    ifname: IfName,
    /// Its address, when it is in the pod map.
    addr: Option<Ipv4Addr>,
    subnet: Ipv4Network,
    /// The sending program's link, while attached: (the device's index then, the link).
    link: Option<(u32, OwnedFd)>,
}

#[derive(Debug, Default)]
struct State {
    /// What the last pass asked for.
    want: Option<Want>,
    /// What is attached.
    table: Option<Table>,
    /// Each network's name, bridge and gateway by subnet.
    bridges: HashMap<Ipv4Network, (NetworkName, IfName, Ipv4Addr)>,
    ports: HashMap<EndpointKey, Port>,
    send: Option<OwnedFd>,
    /// The receiving programs' links by device.
    receive: HashMap<u32, OwnedFd>,
    /// The decapsulating programs' links by VXLAN device.
    decap: HashMap<u32, OwnedFd>,
}

impl State {
    fn detach(&mut self) {
        self.table = None;
        self.send = None;
        self.receive.clear();
        self.decap.clear();
        for p in self.ports.values_mut() {
            p.link = None;
        }
    }

    /// Attaches (or swaps in) the sending program on `port`, if it belongs to the pod network.
    fn attach_port(
        send: &OwnedFd,
        table: &Table,
        port: &mut Port,
        swap: bool,
    ) -> Result<(), ForwardingError> {
        if port.subnet != table.want.local {
            return Ok(());
        }
        let Ok(index) = nix::net::if_::if_nametoindex(port.ifname.as_str()) else {
            // Gone (being detached or rebuilt): the next endpoint_up attaches it.
            port.link = None;
            return Ok(());
        };
        match &port.link {
            Some((i, link)) if *i == index => {
                if swap {
                    sys::link_update(link, send)?;
                }
            }
            _ => port.link = Some((index, sys::tcx_attach(send, index, Hook::Ingress)?)),
        }
        Ok(())
    }
}

/// The pod forwarding programs of one node (see the module docs).
#[derive(Debug)]
pub struct TcForwarding {
    state: Mutex<State>,
    counters: Arc<Counters>,
    /// Pods by address (see [`Pods`]): what the receiving program delivers into directly.
    pods: OwnedFd,
}

/// Pods the receiving program knows at most (a /16 pod subnet's worth); memory is taken per pod.
const MAX_PODS: u32 = 65_536;

impl TcForwarding {
    /// Creates the counter map; nothing is attached until [`TcForwarding::set`].
    pub fn new() -> Result<Self, ForwardingError> {
        Ok(TcForwarding {
            state: Mutex::new(State::default()),
            counters: Arc::new(Counters {
                map: sys::counter_map(2)?,
                cpus: sys::possible_cpus(),
            }),
            pods: sys::hash_map::<4, 12>(MAX_PODS)?,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The counts as they are now.
    pub fn forwarded(&self) -> Result<Forwarded, ForwardingError> {
        let sum = |key| sys::counter_sum(&self.counters.map, key, self.counters.cpus);
        Ok(Forwarded {
            sent: sum(COUNT_SENT)?,
            received: sum(COUNT_RECEIVED)?,
        })
    }

    /// Whether programs are attached.
    pub fn active(&self) -> bool {
        self.lock().table.is_some()
    }

    /// Attaches, swaps or (with `None`, or no peers) detaches the programs for `want`;
    /// `Ok(true)` when something changed. Without the pod network's bridge nothing is attached.
    /// On error everything is detached (the kernel path carries all traffic) and the next call
    /// tries again.
    pub fn set(&self, want: Option<Want>) -> Result<bool, ForwardingError> {
        let mut st = self.lock();
        st.want = want;
        self.apply(&mut st)
    }

    /// Brings the programs in line with the last [`Want`] and the pod network's bridge as it is
    /// now.
    fn apply(&self, st: &mut State) -> Result<bool, ForwardingError> {
        let table = st
            .want
            .clone()
            .map(|mut w| {
                w.ways.retain(|w| !w.peers.is_empty());
                w
            })
            .filter(|w| !w.ways.is_empty())
            .and_then(|want| {
                let (_, name, gateway) = st.bridges.get(&want.local)?;
                let bridge = nix::net::if_::if_nametoindex(name.as_str()).ok()?;
                Some(Table {
                    mac: crate::netlink::bridge_mac(name.as_str()),
                    gateway: *gateway,
                    want,
                    bridge,
                })
            });
        if st.table == table && (table.is_none() || st.send.is_some()) {
            return Ok(false);
        }
        let Some(table) = table else {
            st.detach();
            return Ok(true);
        };
        let r = self.load(st, &table);
        if r.is_err() {
            st.detach();
        }
        r.map(|()| true)
    }

    /// [`TcForwarding::apply`] outside a pass: a failure is logged (the next pass tries again).
    fn reapply(&self, st: &mut State) {
        if let Err(e) = self.apply(st) {
            tracing::warn!("pod forwarding programs not attached: {e}");
        }
    }

    fn load(&self, st: &mut State, table: &Table) -> Result<(), ForwardingError> {
        let map = self.counters.map.as_raw_fd();
        let w = &table.want;
        let local = [w.local];
        let routes: Vec<Route<'_>> = w
            .ways
            .iter()
            .map(|w| Route {
                nets: &w.peers,
                out: w.dev,
            })
            .collect();
        // VXLAN peers' packets are encapsulated by the sending program itself.
        let encap = w.ways.iter().find_map(Way::tunnel);
        let send = sys::prog_load(
            "shimnet_fwd_out",
            &forward(&ForwardSpec {
                from: &local,
                to: &routes,
                except: &[],
                icmp_errors_from: &[],
                gateway: Some(table.mac),
                pods: None,
                counter: Some((map, COUNT_SENT)),
                decap: None,
                encap,
            })?,
        )?;
        let to_pods = [Route {
            nets: &local,
            out: table.bridge,
        }];
        let except = [table.gateway, w.local.broadcast()];
        let receiving = |way: &Way, decap: Option<fwd::Vxlan<'_>>| {
            forward(&ForwardSpec {
                from: &way.peers,
                to: &to_pods,
                except: &except,
                icmp_errors_from: &way.icmp_errors_from,
                gateway: None,
                pods: Some(Pods {
                    map: self.pods.as_raw_fd(),
                    gateway: table.mac,
                }),
                counter: Some((map, COUNT_RECEIVED)),
                decap,
                encap: None,
            })
        };
        // Receiving first: a peer answering a packet sent by the new path takes it as well.
        for way in &w.ways {
            let receive = sys::prog_load("shimnet_fwd_in", &receiving(way, None)?)?;
            attach_or_update(&mut st.receive, way.dev, way.dev, &receive)?;
            if let Some(v) = way.tunnel() {
                let decap = sys::prog_load("shimnet_fwd_vx", &receiving(way, Some(v))?)?;
                attach_or_update(&mut st.decap, way.dev, v.underlay, &decap)?;
            }
        }
        st.receive
            .retain(|dev, _| w.ways.iter().any(|way| way.dev == *dev));
        st.decap.retain(|dev, _| {
            w.ways
                .iter()
                .any(|way| way.dev == *dev && way.vxlan.is_some())
        });
        for port in st.ports.values_mut() {
            State::attach_port(&send, table, port, true)?;
        }
        st.send = Some(send);
        st.table = Some(table.clone());
        Ok(())
    }
}

/// Swaps `prog` into the link kept under `key`, or attaches it to `dev`'s ingress and keeps the
/// link there.
fn attach_or_update(
    links: &mut HashMap<u32, OwnedFd>,
    key: u32,
    dev: u32,
    prog: &OwnedFd,
) -> Result<(), ForwardingError> {
    match links.get(&key) {
        Some(link) => sys::link_update(link, prog)?,
        None => {
            links.insert(key, sys::tcx_attach(prog, dev, Hook::Ingress)?);
        }
    }
    Ok(())
}

impl Observer for TcForwarding {
    fn network_up(&self, spec: &NetworkSpec) {
        let mut st = self.lock();
        if spec.internal {
            // Nothing leaves an internal network: no programs for it.
            st.bridges.remove(&spec.subnet);
        } else {
            let entry = (spec.name.clone(), spec.bridge.clone(), spec.gateway);
            st.bridges.insert(spec.subnet, entry);
        }
        // The pod network appearing (or changing) after the pass that asked for the programs.
        if st.want.as_ref().is_some_and(|w| w.local == spec.subnet) {
            self.reapply(&mut st);
        }
    }

    fn network_down(&self, name: &NetworkName) {
        let mut st = self.lock();
        st.bridges.retain(|_, (n, _, _)| n != name);
        // Without the pod network's bridge the programs go.
        self.reapply(&mut st);
    }

    fn endpoint_up(&self, spec: &NetworkSpec, rec: &EndpointRecord) {
        let mut st = self.lock();
        let State {
            table, ports, send, ..
        } = &mut *st;
        let port = ports.entry(rec.key.clone()).or_insert_with(|| Port {
            ifname: rec.host_ifname.clone(),
            addr: None,
            subnet: spec.subnet,
            link: None,
        });
        // A managed endpoint's container end is in its namespace from now on (a prepared one's
        // is moved later by the caller: it stays on the bridge path).
        if rec.kind == EndpointKind::Managed {
            let ip = rec.ipv4.ip();
            let set = nix::net::if_::if_nametoindex(rec.host_ifname.as_str())
                .map_err(|e| e.to_string())
                .and_then(|index| {
                    let (k, v) = pod_entry(ip, index, rec.mac.0);
                    sys::map_set(&self.pods, &k, &v).map_err(|e| e.to_string())
                });
            match set {
                Ok(()) => port.addr = Some(ip),
                Err(e) => {
                    tracing::debug!(endpoint = %rec.key, "pod not listed for direct delivery: {e}")
                }
            }
        }
        if let (Some(t), Some(s)) = (table.as_ref(), send.as_ref()) {
            if let Err(e) = State::attach_port(s, t, port, false) {
                // This pod's packets take the kernel path.
                tracing::warn!(endpoint = %rec.key, "pod forwarding program not attached: {e}");
            }
        }
    }

    fn endpoint_down(&self, key: &EndpointKey) {
        let port = self.lock().ports.remove(key);
        if let Some(ip) = port.and_then(|p| p.addr) {
            if let Err(e) = sys::map_remove(&self.pods, &ip.octets()) {
                tracing::warn!(endpoint = %key, "pod left in the direct delivery map: {e}");
            }
        }
    }
}
