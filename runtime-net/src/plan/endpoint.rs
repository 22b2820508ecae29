//! Endpoint changes as values (pure): what attaching, handing over, publishing and detaching one
//! endpoint does to the kernel, decided from its network, its record and what the kernel shows.
//!
//! Every front door's endpoint goes through these builders; what differs between doors is the
//! record's [`EndpointKind`] and where the pipeline is split (a prepared endpoint is attached,
//! then joined, then gets its ports published). The engine applies a plan stage by stage through
//! the executors (steps of one stage are independent and run side by side) and, when a step
//! fails, undoes the steps done so far in reverse ([`Step::undo`]). A plan prints as the text the
//! golden tests compare.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

use ipnetwork::IpNetwork;

use crate::firewall::PortRules;
use crate::kernel::{BridgePort, ContainerConfig, PairSpec};
use crate::naming;
use crate::plan::bridges::endpoint_bridge;
use crate::plan::check::gateways_of;
use crate::types::{
    EndpointKey, EndpointKind, EndpointRecord, IfName, MacAddr, NetworkName, NetworkSpec,
    PortMapping,
};

/// Which change a plan makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Reserve, build, publish.
    Attach,
    /// Record the namespace a prepared endpoint was moved into (rebuilding it if it is broken).
    Join,
    /// Replace the published ports.
    Publish,
    /// Withdraw the published ports.
    Unpublish,
    /// Tear down, then release.
    Detach,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Attach => "attach",
            Op::Join => "join",
            Op::Publish => "publish",
            Op::Unpublish => "unpublish",
            Op::Detach => "detach",
        })
    }
}

/// One step, carried out by one executor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The network's bridge is missing: re-create it with its sysctls and firewall rules and put
    /// the host ends of its endpoints back on it.
    RestoreNetwork(NetworkName),
    /// The endpoint's extension bridge is missing: create it and its trunk to the main bridge
    /// (restoring the network first when its main bridge is missing too).
    EnsureExtension {
        /// Network.
        network: NetworkName,
        /// Extension index (1-based).
        index: u8,
    },
    /// Deletes a link left behind under a name the endpoint needs (a crashed attach).
    RemoveStale(IfName),
    /// Creates the veth pair.
    CreatePair(PairSpec),
    /// Writes a sysctl.
    Sysctl {
        /// Key under `/proc/sys`.
        key: String,
        /// Value.
        value: String,
    },
    /// The host end's alias, port flags and admin state.
    ConfigurePort(BridgePort),
    /// The container end inside its namespace: up, `lo` up, addresses, default routes.
    ConfigureContainer {
        /// Namespace path.
        netns: PathBuf,
        /// Settings.
        config: ContainerConfig,
    },
    /// Adds published ports to the firewall.
    PublishPorts(PortRules),
    /// Removes published ports from the firewall.
    UnpublishPorts(PortRules),
    /// Takes the host end down at once and deletes the pair in the background.
    RetirePair(IfName),
}

impl Step {
    /// The step that undoes this one, if it leaves anything behind that later steps do not
    /// (removing the pair removes its port settings and everything inside the namespace).
    pub fn undo(&self) -> Option<Step> {
        match self {
            Step::CreatePair(p) => Some(Step::RetirePair(p.host.clone())),
            Step::PublishPorts(r) => Some(Step::UnpublishPorts(r.clone())),
            Step::UnpublishPorts(r) => Some(Step::PublishPorts(r.clone())),
            Step::RestoreNetwork(_)
            | Step::EnsureExtension { .. }
            | Step::RemoveStale(_)
            | Step::Sysctl { .. }
            | Step::ConfigurePort(_)
            | Step::ConfigureContainer { .. }
            | Step::RetirePair(_) => None,
        }
    }

    /// The executor that carries the step out.
    pub fn executor(&self) -> &'static str {
        match self {
            Step::RestoreNetwork(_) | Step::EnsureExtension { .. } => "network",
            Step::RemoveStale(_)
            | Step::CreatePair(_)
            | Step::ConfigurePort(_)
            | Step::RetirePair(_) => "link",
            Step::Sysctl { .. } => "sysctl",
            Step::ConfigureContainer { .. } => "netns",
            Step::PublishPorts(_) | Step::UnpublishPorts(_) => "firewall",
        }
    }
}

fn on_off(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}

fn listed<T: fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn port_text(p: &PortMapping) -> String {
    let host = p.host_ip.map_or("*".to_string(), |i| i.to_string());
    format!(
        "{}/{}:{}->{}",
        host, p.protocol, p.host_port, p.container_port
    )
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::RestoreNetwork(n) => write!(f, "restore network {n} (bridge missing)"),
            Step::EnsureExtension { network, index } => write!(
                f,
                "create extension bridge {} of network {network} with its trunk",
                naming::extension_bridge_name(network, *index)
            ),
            Step::RemoveStale(n) => write!(f, "delete leftover link {n}"),
            Step::CreatePair(p) => {
                let bridge = match p.bridge_index {
                    Some(i) => format!("{} (#{i})", p.bridge),
                    None => p.bridge.to_string(),
                };
                let place = match &p.peer_netns {
                    Some(ns) => format!("in {}", ns.display()),
                    None => "beside it".to_string(),
                };
                write!(
                    f,
                    "create veth {} mtu {} on bridge {bridge}, peer {} mac {} {place}",
                    p.host, p.mtu, p.peer, p.peer_mac
                )
            }
            Step::Sysctl { key, value } => write!(f, "{key} = {value}"),
            Step::ConfigurePort(p) => {
                if let Some(b) = &p.enslave {
                    write!(f, "enslave {} to {b}, ", p.name)?;
                }
                write!(
                    f,
                    "port {} alias {:?} hairpin {} isolated {} up",
                    p.name,
                    p.alias,
                    on_off(p.hairpin),
                    on_off(p.isolated)
                )
            }
            Step::ConfigureContainer { netns, config } => write!(
                f,
                "{}: {} up, lo up, addresses [{}], default via [{}]",
                netns.display(),
                config.ifname,
                listed(&config.addrs),
                listed(&config.gateways)
            ),
            Step::PublishPorts(r) | Step::UnpublishPorts(r) => {
                let verb = if matches!(self, Step::PublishPorts(_)) {
                    "publish"
                } else {
                    "withdraw"
                };
                let ports: Vec<String> = r.ports.iter().map(port_text).collect();
                write!(f, "{verb} [{}] of {} to {}", ports.join(", "), r.id, r.ip4)
            }
            Step::RetirePair(n) => write!(f, "retire {n} (down now, deleted in the background)"),
        }
    }
}

/// What the store reserved for the endpoint (shown at the top of an attach plan).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reserved {
    /// IPv4 address.
    pub ipv4: IpNetwork,
    /// IPv6 address.
    pub ipv6: Option<IpNetwork>,
    /// MAC.
    pub mac: MacAddr,
    /// Host ports.
    pub ports: Vec<PortMapping>,
}

/// An endpoint change as a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointPlan {
    /// The change.
    pub op: Op,
    /// The endpoint.
    pub key: EndpointKey,
    /// Its kind.
    pub kind: EndpointKind,
    /// What the store holds for it (attach, publish).
    pub reserved: Option<Reserved>,
    /// Steps in order; the steps of one stage are independent.
    pub stages: Vec<Vec<Step>>,
}

impl EndpointPlan {
    fn new(op: Op, rec: &EndpointRecord) -> Self {
        EndpointPlan {
            op,
            key: rec.key.clone(),
            kind: rec.kind,
            reserved: None,
            stages: Vec::new(),
        }
    }

    fn then(&mut self, step: Step) {
        self.stages.push(vec![step]);
    }

    /// Every step, in order.
    pub fn steps(&self) -> impl Iterator<Item = &Step> {
        self.stages.iter().flatten()
    }

    /// A teardown of what this plan did once it all succeeded: each step's undo, last step first
    /// (for an attach that was applied but could not be recorded).
    pub fn undone(&self) -> EndpointPlan {
        EndpointPlan {
            op: Op::Detach,
            key: self.key.clone(),
            kind: self.kind,
            reserved: None,
            stages: self
                .stages
                .iter()
                .flatten()
                .rev()
                .filter_map(Step::undo)
                .map(|s| vec![s])
                .collect(),
        }
    }

    /// The namespace a step enters, if any (the engine enters it while the first steps run).
    pub fn container_netns(&self) -> Option<&PathBuf> {
        self.steps().find_map(|s| match s {
            Step::ConfigureContainer { netns, .. } => Some(netns),
            _ => None,
        })
    }
}

impl fmt::Display for EndpointPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} {} ({})", self.op, self.key, self.kind)?;
        if let Some(r) = &self.reserved {
            write!(f, "  reserved  {}", r.ipv4)?;
            if let Some(v6) = r.ipv6 {
                write!(f, ", {v6}")?;
            }
            write!(f, ", mac {}", r.mac)?;
            if !r.ports.is_empty() {
                let ports: Vec<String> = r.ports.iter().map(port_text).collect();
                write!(f, ", ports [{}]", ports.join(", "))?;
            }
            writeln!(f)?;
        }
        for (i, stage) in self.stages.iter().enumerate() {
            for step in stage {
                writeln!(f, "  {:<2}{:<9} {step}", i + 1, step.executor())?;
            }
        }
        Ok(())
    }
}

/// What the kernel shows that an attach or join must take into account.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// Index of the endpoint's bridge (main or extension); `None` when it is missing (it is
    /// restored or created first).
    pub bridge: Option<u32>,
    /// Links under the names the endpoint needs that must go first.
    pub leftovers: Vec<IfName>,
    /// The endpoint is already built and intact (a retry): nothing to build.
    pub intact: bool,
}

/// The firewall entries of an endpoint's published ports.
pub fn port_rules(spec: &NetworkSpec, rec: &EndpointRecord) -> PortRules {
    let ports = rec
        .ports
        .iter()
        .map(|p| PortMapping {
            host_ip: p.host_ip.or(spec.host_binding_ipv4.map(IpAddr::V4)),
            ..*p
        })
        .collect();
    PortRules {
        id: rec.host_ifname.clone(),
        network: spec.name.clone(),
        bridge: spec.bridge.clone(),
        subnet4: spec.subnet,
        ip4: rec.ipv4.ip(),
        ip6: rec.ipv6.map(|n| n.ip()),
        ports,
    }
}

/// The name the container end has while it is in the daemon's namespace: a prepared endpoint's
/// until the caller moves it, a managed one's final name otherwise.
pub fn container_end_name(rec: &EndpointRecord) -> IfName {
    match rec.kind {
        EndpointKind::Managed => rec.key.ifname.clone(),
        EndpointKind::Prepared => naming::peer_temp_name(&rec.host_ifname),
    }
}

/// The host end's port settings.
pub fn bridge_port(spec: &NetworkSpec, rec: &EndpointRecord, enslave: bool) -> BridgePort {
    BridgePort {
        name: rec.host_ifname.clone(),
        alias: naming::veth_alias(&rec.key),
        hairpin: spec.hairpin,
        isolated: !spec.icc,
        neigh_suppress: false,
        proxy_arp_wifi: false,
        enslave: enslave.then(|| endpoint_bridge(spec, rec)),
    }
}

/// The steps that build an endpoint's pair from nothing (after the bridge and leftovers).
fn build(plan: &mut EndpointPlan, spec: &NetworkSpec, rec: &EndpointRecord, obs: &Observed) {
    if obs.bridge.is_none() {
        plan.then(match rec.extension {
            None => Step::RestoreNetwork(spec.name.clone()),
            Some(index) => Step::EnsureExtension {
                network: spec.name.clone(),
                index,
            },
        });
    }
    for l in &obs.leftovers {
        plan.then(Step::RemoveStale(l.clone()));
    }
    let managed = rec.kind == EndpointKind::Managed;
    plan.then(Step::CreatePair(PairSpec {
        host: rec.host_ifname.clone(),
        mtu: rec.mtu,
        bridge: endpoint_bridge(spec, rec),
        bridge_index: obs.bridge,
        peer: container_end_name(rec),
        peer_mac: rec.mac,
        peer_netns: managed.then(|| rec.netns.clone()),
    }));
    // Before the port comes up: see `netlink::veth` (IPv6 on bridge ports makes every attach
    // and detach cost more the more ports there are).
    plan.then(Step::Sysctl {
        key: format!("net/ipv6/conf/{}/disable_ipv6", rec.host_ifname),
        value: "1".into(),
    });
    if !managed {
        // The container end waits in the daemon's namespace until the caller moves it;
        // meanwhile IPv6 there is only address and route churn. The move gives it the
        // destination namespace's defaults, so the container's IPv6 is not affected.
        plan.then(Step::Sysctl {
            key: format!("net/ipv6/conf/{}/disable_ipv6", container_end_name(rec)),
            value: "1".into(),
        });
    }
    let mut last = vec![Step::ConfigurePort(bridge_port(spec, rec, false))];
    if managed {
        let mut addrs = vec![IpNetwork::V4(rec.ipv4)];
        addrs.extend(rec.ipv6.map(IpNetwork::V6));
        last.push(Step::ConfigureContainer {
            netns: rec.netns.clone(),
            config: ContainerConfig {
                ifname: rec.key.ifname.clone(),
                addrs,
                gateways: gateways_of(rec),
                ipv6_link_local: rec.ipv6.is_some(),
            },
        });
    }
    plan.stages.push(last);
}

/// Attach: build the endpoint (unless it is intact) and publish its ports. A prepared
/// endpoint's ports are reserved with its address but published at [`publish`], once the caller
/// has moved the container end into place.
pub fn attach(spec: &NetworkSpec, rec: &EndpointRecord, obs: &Observed) -> EndpointPlan {
    let mut plan = EndpointPlan::new(Op::Attach, rec);
    plan.reserved = Some(Reserved {
        ipv4: IpNetwork::V4(rec.ipv4),
        ipv6: rec.ipv6.map(IpNetwork::V6),
        mac: rec.mac,
        ports: rec.ports.clone(),
    });
    if !obs.intact {
        build(&mut plan, spec, rec, obs);
    }
    if rec.kind == EndpointKind::Managed && !rec.ports.is_empty() {
        // Idempotent: re-adding ports that are in place changes nothing.
        plan.then(Step::PublishPorts(port_rules(spec, rec)));
    }
    plan
}

/// Join: rebuild a prepared endpoint that is not intact (its ports come later).
pub fn join(spec: &NetworkSpec, rec: &EndpointRecord, obs: &Observed) -> EndpointPlan {
    let mut plan = EndpointPlan::new(Op::Join, rec);
    if !obs.intact {
        build(&mut plan, spec, rec, obs);
    }
    plan
}

/// Publish: withdraw what `old` held that `new` does not, publish what `new` holds (adding what is
/// in place already changes nothing).
pub fn publish(spec: &NetworkSpec, old: &EndpointRecord, new: &EndpointRecord) -> EndpointPlan {
    let mut plan = EndpointPlan::new(Op::Publish, new);
    plan.reserved = Some(Reserved {
        ipv4: IpNetwork::V4(new.ipv4),
        ipv6: new.ipv6.map(IpNetwork::V6),
        mac: new.mac,
        ports: new.ports.clone(),
    });
    let gone = EndpointRecord {
        ports: old
            .ports
            .iter()
            .filter(|p| !new.ports.contains(p))
            .copied()
            .collect(),
        ..old.clone()
    };
    if !gone.ports.is_empty() {
        plan.then(Step::UnpublishPorts(port_rules(spec, &gone)));
    }
    if !new.ports.is_empty() {
        plan.then(Step::PublishPorts(port_rules(spec, new)));
    }
    plan
}

/// Unpublish: withdraw every published port.
pub fn unpublish(spec: &NetworkSpec, rec: &EndpointRecord) -> EndpointPlan {
    let mut plan = EndpointPlan::new(Op::Unpublish, rec);
    if !rec.ports.is_empty() {
        plan.then(Step::UnpublishPorts(port_rules(spec, rec)));
    }
    plan
}

/// Detach: withdraw the ports (when the network still exists), retire the pair. Teardown keeps
/// going past failures; the record is released only when every step succeeded.
pub fn detach(spec: Option<&NetworkSpec>, rec: &EndpointRecord) -> EndpointPlan {
    let mut plan = EndpointPlan::new(Op::Detach, rec);
    if let Some(spec) = spec.filter(|_| !rec.ports.is_empty()) {
        plan.then(Step::UnpublishPorts(port_rules(spec, rec)));
    }
    plan.then(Step::RetirePair(rec.host_ifname.clone()));
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::tests_support::{network, record};
    use crate::types::Protocol;

    fn port(host: u16) -> PortMapping {
        PortMapping {
            protocol: Protocol::Tcp,
            host_ip: None,
            host_port: host,
            container_port: 80,
        }
    }

    fn fresh(bridge: Option<u32>) -> Observed {
        Observed {
            bridge,
            ..Observed::default()
        }
    }

    #[test]
    fn managed_attach_builds_configures_inside_and_publishes() {
        let spec = network("a", "10.1.0.0/24");
        let mut rec = record(&spec, "c");
        rec.ports = vec![port(8080)];
        let plan = attach(&spec, &rec, &fresh(Some(3)));
        let kinds: Vec<Vec<&str>> = plan
            .stages
            .iter()
            .map(|s| s.iter().map(Step::executor).collect())
            .collect();
        assert_eq!(
            kinds,
            vec![
                vec!["link"],
                vec!["sysctl"],
                vec!["link", "netns"],
                vec!["firewall"]
            ]
        );
        let Step::CreatePair(p) = &plan.stages[0][0] else {
            panic!("{plan}")
        };
        assert_eq!(p.peer.as_str(), "eth0");
        assert_eq!(p.peer_netns, Some(rec.netns.clone()));
        assert_eq!(p.bridge_index, Some(3));
        assert_eq!(plan.container_netns(), Some(&rec.netns));
        // Undone (built but not recorded): ports withdrawn, then the pair retired.
        let undone = plan.undone();
        assert_eq!(undone.op, Op::Detach);
        assert_eq!(
            undone.stages,
            vec![
                vec![Step::UnpublishPorts(port_rules(&spec, &rec))],
                vec![Step::RetirePair(rec.host_ifname.clone())],
            ]
        );
    }

    #[test]
    fn prepared_attach_leaves_the_container_end_beside_the_host_end() {
        let spec = network("a", "10.1.0.0/24");
        let mut rec = record(&spec, "e");
        rec.kind = EndpointKind::Prepared;
        let plan = attach(&spec, &rec, &fresh(None));
        assert_eq!(
            plan.stages[0],
            vec![Step::RestoreNetwork(spec.name.clone())]
        );
        let Step::CreatePair(p) = &plan.stages[1][0] else {
            panic!("{plan}")
        };
        assert_eq!(p.peer, naming::peer_temp_name(&rec.host_ifname));
        assert_eq!(p.peer_netns, None);
        assert!(plan.container_netns().is_none());
        assert_eq!(plan.stages.last().unwrap().len(), 1, "no container config");
        // IPv6 goes off on both ends while they wait in the daemon's namespace.
        let off: Vec<String> = plan
            .stages
            .iter()
            .flatten()
            .filter_map(|s| match s {
                Step::Sysctl { key, value } if value == "1" => Some(key.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(
            off,
            [&rec.host_ifname, &p.peer]
                .map(|n| format!("net/ipv6/conf/{n}/disable_ipv6"))
                .to_vec()
        );
        // A managed endpoint's container end is made in its namespace: only the host end's.
        rec.kind = EndpointKind::Managed;
        let managed = attach(&spec, &rec, &fresh(None));
        let sysctls = managed.stages.iter().flatten();
        assert_eq!(
            sysctls.filter(|s| matches!(s, Step::Sysctl { .. })).count(),
            1
        );
    }

    #[test]
    fn an_intact_retry_only_republishes() {
        let spec = network("a", "10.1.0.0/24");
        let mut rec = record(&spec, "c");
        let intact = Observed {
            bridge: Some(3),
            leftovers: vec![],
            intact: true,
        };
        assert!(attach(&spec, &rec, &intact).stages.is_empty());
        rec.ports = vec![port(8080)];
        let plan = attach(&spec, &rec, &intact);
        assert!(
            matches!(plan.stages.as_slice(), [s] if matches!(s.as_slice(), [Step::PublishPorts(_)]))
        );
    }

    #[test]
    fn leftovers_go_before_the_pair_and_undo_is_the_reverse() {
        let spec = network("a", "10.1.0.0/24");
        let rec = record(&spec, "c");
        let obs = Observed {
            bridge: Some(3),
            leftovers: vec![rec.host_ifname.clone()],
            intact: false,
        };
        let plan = attach(&spec, &rec, &obs);
        assert_eq!(
            plan.stages[0],
            vec![Step::RemoveStale(rec.host_ifname.clone())]
        );
        let create = &plan.stages[1][0];
        assert_eq!(
            create.undo(),
            Some(Step::RetirePair(rec.host_ifname.clone()))
        );
        assert_eq!(plan.stages[0][0].undo(), None);
    }

    #[test]
    fn a_prepared_endpoint_reserves_at_attach_and_publishes_at_publish() {
        let spec = network("a", "10.1.0.0/24");
        let mut rec = record(&spec, "e");
        rec.kind = EndpointKind::Prepared;
        rec.ports = vec![port(8080)];
        let plan = attach(&spec, &rec, &fresh(Some(1)));
        assert_eq!(plan.reserved.as_ref().unwrap().ports, rec.ports);
        assert!(
            !plan.steps().any(|s| matches!(s, Step::PublishPorts(_))),
            "{plan}"
        );
        let plan = publish(&spec, &rec, &rec);
        assert_eq!(plan.stages.len(), 1, "nothing to withdraw: {plan}");
        assert!(matches!(plan.stages[0][0], Step::PublishPorts(_)));
    }

    #[test]
    fn an_endpoint_on_an_extension_is_built_on_it_and_creates_it_when_missing() {
        let spec = network("a", "10.1.0.0/16");
        let mut rec = record(&spec, "c");
        rec.extension = Some(2);
        let ext = naming::extension_bridge_name(&spec.name, 2);
        let plan = attach(&spec, &rec, &fresh(None));
        assert_eq!(
            plan.stages[0],
            vec![Step::EnsureExtension {
                network: spec.name.clone(),
                index: 2
            }]
        );
        assert!(plan.to_string().contains(ext.as_str()), "{plan}");
        let Step::CreatePair(p) = &plan.stages[1][0] else {
            panic!("{plan}")
        };
        assert_eq!((&p.bridge, p.bridge_index), (&ext, None));
        let plan = attach(&spec, &rec, &fresh(Some(9)));
        let Step::CreatePair(p) = &plan.stages[0][0] else {
            panic!("{plan}")
        };
        assert_eq!((&p.bridge, p.bridge_index), (&ext, Some(9)));
        assert_eq!(bridge_port(&spec, &rec, true).enslave, Some(ext));
    }

    #[test]
    fn publish_replaces_and_detach_withdraws_then_retires() {
        let spec = network("a", "10.1.0.0/24");
        let mut old = record(&spec, "c");
        old.ports = vec![port(8080)];
        let mut new = old.clone();
        new.ports = vec![port(9090)];
        let plan = publish(&spec, &old, &new);
        assert!(
            matches!(&plan.stages[0][0], Step::UnpublishPorts(r) if r.ports[0].host_port == 8080)
        );
        assert!(
            matches!(&plan.stages[1][0], Step::PublishPorts(r) if r.ports[0].host_port == 9090)
        );
        let plan = detach(Some(&spec), &old);
        assert!(matches!(plan.stages[0][0], Step::UnpublishPorts(_)));
        assert_eq!(plan.stages[1][0], Step::RetirePair(old.host_ifname.clone()));
        let plan = detach(None, &old);
        assert_eq!(
            plan.stages,
            vec![vec![Step::RetirePair(old.host_ifname.clone())]]
        );
    }
}
