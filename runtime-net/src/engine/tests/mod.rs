//! The engine's decisions without root: every test runs the real engine, store (in a temporary
//! directory) and plans against the in-memory kernel and firewall of [`crate::fakes`], injecting
//! failures where a test needs them. `scripts/test.sh` runs these as an unprivileged user.

mod attach;
mod capacity;
mod detach;
mod observer;
mod reconcile;
mod repair;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use super::{AttachRequest, Engine};
use crate::fakes::{FakeFirewall, FakeKernel};
use crate::plan::ports::PortRequest;
use crate::plan::NetworkRequest;
use crate::store::Store;
use crate::types::{
    ContainerId, EndpointKey, EndpointKind, IfName, NetworkName, NetworkSpec, PortMapping, Protocol,
};

/// An engine on fakes.
pub(super) struct Harness {
    pub engine: Engine,
    pub kernel: Arc<FakeKernel>,
    pub fw: Arc<FakeFirewall>,
    pub dir: tempfile::TempDir,
}

impl Harness {
    pub async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let kernel = FakeKernel::new();
        let fw = FakeFirewall::new();
        let store = Store::open(dir.path()).unwrap();
        let engine = Engine::from_parts(store, kernel.kernel(), fw.clone());
        Harness {
            engine,
            kernel,
            fw,
            dir,
        }
    }

    /// A new engine on the same store, kernel and firewall (a daemon restart).
    pub fn restart(self) -> Self {
        let Harness {
            engine,
            kernel,
            fw,
            dir,
        } = self;
        drop(engine);
        let store = Store::open(dir.path()).unwrap();
        Harness {
            engine: Engine::from_parts(store, kernel.kernel(), fw.clone()),
            kernel,
            fw,
            dir,
        }
    }

    /// The same harness whose networks take at most `ports` endpoints.
    pub fn with_port_capacity(mut self, ports: usize) -> Self {
        self.engine = self.engine.with_port_capacity(ports);
        self
    }

    pub async fn network(&self, name: &str, subnet: &str) -> NetworkSpec {
        self.engine
            .create_network(NetworkRequest::new(
                NetworkName::new(name).unwrap(),
                subnet.parse().unwrap(),
            ))
            .await
            .unwrap()
    }

    /// A managed endpoint of container `c1` (namespace `/run/netns/c1`, created here) on
    /// network `n1`.
    pub async fn attach_c1(&self) -> super::Attachment {
        self.kernel.add_netns("/run/netns/c1");
        self.engine
            .attach(managed("n1", "c1", "/run/netns/c1"))
            .await
            .unwrap()
    }

    /// Every endpoint record.
    pub async fn records(&self) -> Vec<crate::types::EndpointRecord> {
        self.engine.endpoints(None).await.unwrap()
    }

    /// Links of the daemon's namespace other than bridges.
    pub fn veths(&self) -> Vec<String> {
        self.kernel
            .links()
            .into_iter()
            .filter(|(_, l)| l.kind == crate::netlink::LinkKind::Veth)
            .map(|(n, _)| n)
            .collect()
    }
}

pub(super) fn managed(net: &str, cid: &str, netns: &str) -> AttachRequest {
    AttachRequest {
        network: NetworkName::new(net).unwrap(),
        container_id: ContainerId::new(cid).unwrap(),
        ifname: IfName::new("eth0").unwrap(),
        kind: EndpointKind::Managed,
        netns: Some(PathBuf::from(netns)),
        ipv4: None,
        ipv6: None,
        mac: None,
        ports: vec![],
        names: vec![],
    }
}

pub(super) fn prepared(net: &str, id: &str) -> AttachRequest {
    AttachRequest {
        ifname: IfName::new("eth").unwrap(),
        kind: EndpointKind::Prepared,
        netns: None,
        ..managed(net, id, "/unused")
    }
}

pub(super) fn key(net: &str, cid: &str, ifname: &str) -> EndpointKey {
    EndpointKey {
        network: NetworkName::new(net).unwrap(),
        container_id: ContainerId::new(cid).unwrap(),
        ifname: IfName::new(ifname).unwrap(),
    }
}

pub(super) fn tcp(host: u16, container: u16) -> PortRequest {
    PortMapping {
        protocol: Protocol::Tcp,
        host_ip: None,
        host_port: host,
        container_port: container,
    }
    .into()
}

pub(super) fn tcp_range(hosts: std::ops::RangeInclusive<u16>, container: u16) -> PortRequest {
    PortRequest {
        protocol: Protocol::Tcp,
        host_ip: None::<IpAddr>,
        host_ports: hosts,
        container_port: container,
    }
}
