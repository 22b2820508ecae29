//! The fake kernel: links of the daemon's namespace, container namespaces and their links,
//! sysctls; the real executors' rules where the engine relies on them.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ipnetwork::IpNetwork;

use crate::kernel::{
    BridgePort, ContainerConfig, ContainerEnd, InNetns, KFuture, Kernel, Links, Namespaces,
    PairSpec, ProxyEntry, Sysctl,
};
use crate::netlink::{BridgeConfig, LinkInfo, LinkKind, NetlinkError};
use crate::nspath::NetnsPathError;
use crate::sysctl::SysctlError;
use crate::types::IfName;

/// A link in the fake daemon namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeLink {
    /// Index.
    pub index: u32,
    /// Kind.
    pub kind: LinkKind,
    /// Alias.
    pub alias: Option<String>,
    /// Master's index.
    pub master: Option<u32>,
    /// Admin up.
    pub up: bool,
    /// MTU.
    pub mtu: u32,
    /// MAC.
    pub mac: Option<Vec<u8>>,
    /// Addresses (bridges).
    pub addrs: Vec<IpNetwork>,
    /// The other end of a veth: (namespace or `None` for this one, name).
    pub peer: Option<(Option<PathBuf>, String)>,
    /// Port flags (hairpin, isolated).
    pub flags: (bool, bool),
    /// ARP suppression on the port.
    pub neigh_suppress: bool,
    /// Proxy ARP (wifi variant) on the port.
    pub proxy_arp_wifi: bool,
    /// Device group (`REAP_GROUP`: retired, deletion not done yet).
    pub group: u32,
}

/// A link inside a fake container namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeNsLink {
    /// MAC.
    pub mac: Vec<u8>,
    /// Admin up.
    pub up: bool,
    /// Addresses.
    pub addrs: Vec<IpNetwork>,
    /// Default-route gateways.
    pub gateways: Vec<IpAddr>,
    /// The host end of its pair.
    pub host: String,
}

#[derive(Debug, Default)]
struct KernelState {
    links: BTreeMap<String, FakeLink>,
    namespaces: BTreeMap<PathBuf, BTreeMap<String, FakeNsLink>>,
    sysctls: BTreeMap<String, String>,
    next_index: u32,
    journal: Vec<String>,
    fail: Vec<String>,
    proxies: HashSet<ProxyEntry>,
    /// Ports a bridge takes before enslaving one more fails with `EXFULL`.
    bridge_port_limit: Option<usize>,
    /// How often each link was read by name.
    reads: BTreeMap<String, usize>,
}

impl KernelState {
    fn failing(&mut self, op: &str, object: &str) -> Result<(), NetlinkError> {
        if let Some(i) = self.fail.iter().position(|f| f == op) {
            self.fail.remove(i);
            return Err(NetlinkError::Request {
                op: "fake",
                object: object.to_string(),
                msg: format!("{op} fails (injected)"),
            });
        }
        Ok(())
    }

    fn info(name: &str, l: &FakeLink) -> LinkInfo {
        LinkInfo {
            name: name.to_string(),
            index: l.index,
            alias: l.alias.clone(),
            kind: l.kind,
            master: l.master,
            up: l.up,
            mtu: Some(l.mtu),
            group: l.group,
        }
    }

    fn index_of(&self, name: &str) -> Option<u32> {
        self.links.get(name).map(|l| l.index)
    }

    /// Removes a link and whatever dies with it (its veth peer; a bridge's ports are released).
    fn remove(&mut self, name: &str) -> bool {
        let Some(l) = self.links.remove(name) else {
            return false;
        };
        // The kernel drops a device's neighbour and forwarding entries with it.
        self.proxies
            .retain(|e| e.bridge.as_str() != name && e.port.as_str() != name);
        if l.kind == LinkKind::Bridge {
            for port in self.links.values_mut() {
                if port.master == Some(l.index) {
                    port.master = None;
                }
            }
        }
        match l.peer {
            Some((None, p)) => {
                self.links.remove(&p);
            }
            Some((Some(ns), p)) => {
                if let Some(links) = self.namespaces.get_mut(&ns) {
                    links.remove(&p);
                }
            }
            None => {}
        }
        true
    }
}

fn lock(state: &Mutex<KernelState>) -> std::sync::MutexGuard<'_, KernelState> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

fn request(op: &'static str, object: &str, msg: &str) -> NetlinkError {
    NetlinkError::Request {
        op,
        object: object.to_string(),
        msg: msg.to_string(),
    }
}

/// The fake kernel: links of the daemon's namespace, container namespaces, sysctls.
#[derive(Debug, Default)]
pub struct FakeKernel {
    state: Arc<Mutex<KernelState>>,
}

impl FakeKernel {
    /// An empty kernel.
    pub fn new() -> Arc<Self> {
        Arc::new(FakeKernel::default())
    }

    /// The engine's view of it.
    pub fn kernel(self: &Arc<Self>) -> Kernel {
        Kernel {
            links: self.clone(),
            netns: self.clone(),
            sysctl: self.clone(),
        }
    }

    fn st(&self) -> std::sync::MutexGuard<'_, KernelState> {
        lock(&self.state)
    }

    /// The next call of `op` fails (`link`, `owned_links`, `host_addresses`, `ensure_bridge`,
    /// `create_pair`, `configure_port`, `delete_link`, `retire_link`, `enter`, `configure`,
    /// `observe`, `sysctl`).
    pub fn fail(&self, op: &str) {
        self.st().fail.push(op.to_string());
    }

    /// Bridges take at most `ports` ports, as the real kernel's take
    /// [`crate::netlink::BRIDGE_MAX_PORTS`]: one more veth fails with `EXFULL`.
    pub fn limit_bridge_ports(&self, ports: usize) {
        self.st().bridge_port_limit = Some(ports);
    }

    /// A container namespace appears.
    pub fn add_netns(&self, path: &str) {
        self.st().namespaces.entry(PathBuf::from(path)).or_default();
    }

    /// A container namespace goes away, and with it the pairs that have an end inside.
    pub fn remove_netns(&self, path: &str) {
        let mut st = self.st();
        if let Some(links) = st.namespaces.remove(Path::new(path)) {
            for l in links.values() {
                st.links.remove(&l.host);
            }
        }
    }

    /// A link left in the reap group with its deletion never done (a daemon killed between
    /// retiring it and the background deletion, or a retire cut short half-way).
    pub fn strand_in_reap_group(&self, name: &str) {
        let mut st = self.st();
        let l = st.links.get_mut(name).expect("link to strand");
        l.group = crate::netlink::REAP_GROUP;
        l.up = false;
    }

    /// Someone changes a link of the daemon's namespace from outside (`false`: no such link).
    pub fn change_behind_back(&self, name: &str, f: impl FnOnce(&mut FakeLink)) -> bool {
        match self.st().links.get_mut(name) {
            Some(l) => {
                f(l);
                true
            }
            None => false,
        }
    }

    /// Someone outside shimnet deletes a link.
    pub fn delete_behind_back(&self, name: &str) -> bool {
        self.st().remove(name)
    }

    /// Someone outside shimnet moves a link (e.g. a caller moving a prepared container end into
    /// its namespace under a new name).
    pub fn move_into(&self, name: &str, netns: &str, new_name: &str) {
        let mut st = self.st();
        let l = st.links.remove(name).expect("link to move");
        let host = match &l.peer {
            Some((_, h)) => h.clone(),
            None => String::new(),
        };
        if let Some(h) = st.links.get_mut(&host) {
            h.peer = Some((Some(PathBuf::from(netns)), new_name.to_string()));
        }
        st.namespaces
            .entry(PathBuf::from(netns))
            .or_default()
            .insert(
                new_name.to_string(),
                FakeNsLink {
                    mac: l.mac.unwrap_or_default(),
                    up: false,
                    addrs: vec![],
                    gateways: vec![],
                    host,
                },
            );
    }

    /// A foreign address on a host link (for overlap checks).
    pub fn add_host_link(&self, name: &str, kind: LinkKind, alias: Option<&str>) {
        let mut st = self.st();
        st.next_index += 1;
        let index = st.next_index;
        st.links.insert(
            name.to_string(),
            FakeLink {
                index,
                kind,
                alias: alias.map(String::from),
                master: None,
                up: true,
                mtu: 1500,
                mac: None,
                addrs: vec![],
                peer: None,
                flags: (false, false),
                neigh_suppress: false,
                proxy_arp_wifi: false,
                group: 0,
            },
        );
    }

    /// The links of the daemon's namespace.
    pub fn links(&self) -> BTreeMap<String, FakeLink> {
        self.st().links.clone()
    }

    /// The links inside a container namespace (`None` if there is no such namespace).
    pub fn ns_links(&self, path: &str) -> Option<BTreeMap<String, FakeNsLink>> {
        self.st().namespaces.get(Path::new(path)).cloned()
    }

    /// A sysctl's value.
    pub fn sysctl(&self, key: &str) -> Option<String> {
        self.st().sysctls.get(key).cloned()
    }

    /// Every change asked for so far, one line each.
    pub fn journal(&self) -> Vec<String> {
        self.st().journal.clone()
    }

    /// The proxy entries in place.
    pub fn proxy_entries(&self) -> HashSet<ProxyEntry> {
        self.st().proxies.clone()
    }

    /// Forgets the journal.
    pub fn clear_journal(&self) {
        self.st().journal.clear();
    }

    /// How often link `name` has been read by name so far.
    pub fn reads_of(&self, name: &str) -> usize {
        self.st().reads.get(name).copied().unwrap_or(0)
    }
}

impl Links for FakeKernel {
    fn link<'a>(&'a self, name: &'a str) -> KFuture<'a, Option<LinkInfo>> {
        Box::pin(async move {
            let mut st = self.st();
            st.failing("link", name)?;
            *st.reads.entry(name.to_owned()).or_default() += 1;
            Ok(st.links.get(name).map(|l| KernelState::info(name, l)))
        })
    }

    fn index(&self, name: &str) -> Result<Option<u32>, NetlinkError> {
        let mut st = self.st();
        st.failing("index", name)?;
        Ok(st.index_of(name))
    }

    fn owned_links(&self) -> KFuture<'_, Vec<LinkInfo>> {
        Box::pin(async move {
            let mut st = self.st();
            st.failing("owned_links", "all")?;
            Ok(st
                .links
                .iter()
                .filter(|(_, l)| {
                    l.group == crate::netlink::REAP_GROUP
                        || l.alias
                            .as_deref()
                            .is_some_and(|a| a.starts_with(crate::naming::ALIAS_PREFIX))
                })
                .map(|(n, l)| KernelState::info(n, l))
                .collect())
        })
    }

    fn host_addresses(&self) -> KFuture<'_, Vec<(String, IpNetwork)>> {
        Box::pin(async move {
            let mut st = self.st();
            st.failing("host_addresses", "all")?;
            Ok(st
                .links
                .iter()
                .flat_map(|(n, l)| l.addrs.iter().map(move |a| (n.clone(), *a)))
                .collect())
        })
    }

    fn ensure_bridge<'a>(&'a self, cfg: &'a BridgeConfig) -> KFuture<'a, (u32, bool)> {
        Box::pin(async move {
            let mut st = self.st();
            let name = cfg.name.as_str();
            st.failing("ensure_bridge", name)?;
            match st.links.get(name) {
                Some(l) if l.kind != LinkKind::Bridge => {
                    return Err(request(
                        "ensure bridge",
                        name,
                        "a link of that name exists and is not a bridge",
                    ))
                }
                Some(_) => {}
                None => {
                    st.next_index += 1;
                    let index = st.next_index;
                    st.journal.push(format!("create bridge {name} #{index}"));
                    st.links.insert(
                        name.to_string(),
                        FakeLink {
                            index,
                            kind: LinkKind::Bridge,
                            alias: None,
                            master: None,
                            up: false,
                            mtu: cfg.mtu,
                            mac: None,
                            addrs: vec![],
                            peer: None,
                            flags: (false, false),
                            neigh_suppress: false,
                            proxy_arp_wifi: false,
                            group: 0,
                        },
                    );
                }
            }
            let l = st.links.get_mut(name).expect("just ensured");
            let changed = l.alias.as_deref() != Some(cfg.alias.as_str())
                || l.mtu != cfg.mtu
                || !l.up
                || cfg.addrs.iter().any(|a| !l.addrs.contains(a));
            l.alias = Some(cfg.alias.clone());
            l.mtu = cfg.mtu;
            l.up = true;
            for a in &cfg.addrs {
                if !l.addrs.contains(a) {
                    l.addrs.push(*a);
                }
            }
            Ok((l.index, changed))
        })
    }

    fn create_pair<'a>(&'a self, pair: &'a PairSpec) -> KFuture<'a, ()> {
        Box::pin(async move {
            let mut st = self.st();
            let host = pair.host.as_str();
            st.failing("create_pair", host)?;
            let bridge = match pair.bridge_index {
                Some(i) => st
                    .links
                    .values()
                    .find(|l| l.index == i && l.kind == LinkKind::Bridge)
                    .map(|l| l.index),
                None => st.index_of(pair.bridge.as_str()),
            }
            .ok_or_else(|| {
                request(
                    "attach veth to bridge",
                    pair.bridge.as_str(),
                    "no such bridge",
                )
            })?;
            if st.links.contains_key(host) {
                return Err(request(
                    "create veth pair",
                    host,
                    "File exists (os error 17)",
                ));
            }
            if let Some(limit) = st.bridge_port_limit {
                if st
                    .links
                    .values()
                    .filter(|l| l.master == Some(bridge))
                    .count()
                    >= limit
                {
                    return Err(NetlinkError::BridgeFull {
                        op: "create veth pair",
                        object: host.to_string(),
                        bridge: pair.bridge.to_string(),
                    });
                }
            }
            let peer = pair.peer.to_string();
            match &pair.peer_netns {
                Some(ns) => {
                    let links = st.namespaces.get(ns).ok_or_else(|| NetlinkError::Netns {
                        path: ns.clone(),
                        msg: "No such file or directory (os error 2)".into(),
                    })?;
                    if links.contains_key(&peer) {
                        return Err(request(
                            "create veth pair",
                            host,
                            "File exists (os error 17)",
                        ));
                    }
                }
                None => {
                    if st.links.contains_key(&peer) {
                        return Err(request(
                            "create veth pair",
                            host,
                            "File exists (os error 17)",
                        ));
                    }
                }
            }
            st.next_index += 1;
            let index = st.next_index;
            st.links.insert(
                host.to_string(),
                FakeLink {
                    index,
                    kind: LinkKind::Veth,
                    alias: None,
                    master: Some(bridge),
                    up: false,
                    mtu: pair.mtu,
                    mac: None,
                    addrs: vec![],
                    peer: Some((pair.peer_netns.clone(), peer.clone())),
                    flags: (false, false),
                    neigh_suppress: false,
                    proxy_arp_wifi: false,
                    group: 0,
                },
            );
            match &pair.peer_netns {
                Some(ns) => {
                    st.namespaces.get_mut(ns).expect("checked").insert(
                        peer.clone(),
                        FakeNsLink {
                            mac: pair.peer_mac.0.to_vec(),
                            up: false,
                            addrs: vec![],
                            gateways: vec![],
                            host: host.to_string(),
                        },
                    );
                }
                None => {
                    st.next_index += 1;
                    let pindex = st.next_index;
                    st.links.insert(
                        peer.clone(),
                        FakeLink {
                            index: pindex,
                            kind: LinkKind::Veth,
                            alias: None,
                            master: None,
                            up: false,
                            mtu: pair.mtu,
                            mac: Some(pair.peer_mac.0.to_vec()),
                            addrs: vec![],
                            peer: Some((None, host.to_string())),
                            flags: (false, false),
                            neigh_suppress: false,
                            proxy_arp_wifi: false,
                            group: 0,
                        },
                    );
                }
            }
            let place = pair
                .peer_netns
                .as_ref()
                .map_or("here".to_string(), |p| p.display().to_string());
            st.journal
                .push(format!("create pair {host} peer {peer} in {place}"));
            Ok(())
        })
    }

    fn configure_port<'a>(&'a self, port: &'a BridgePort) -> KFuture<'a, ()> {
        Box::pin(async move {
            let mut st = self.st();
            let name = port.name.as_str();
            st.failing("configure_port", name)?;
            let master = match &port.enslave {
                Some(b) => Some(st.index_of(b.as_str()).ok_or_else(|| {
                    request("attach veth to bridge", b.as_str(), "no such bridge")
                })?),
                None => None,
            };
            let l = st.links.get_mut(name).ok_or_else(|| {
                request(
                    "configure bridge port",
                    name,
                    "No such device (os error 19)",
                )
            })?;
            if master.is_some() {
                l.master = master;
            }
            l.alias = Some(port.alias.clone());
            l.flags = (port.hairpin, port.isolated);
            l.neigh_suppress = port.neigh_suppress;
            l.proxy_arp_wifi = port.proxy_arp_wifi;
            l.up = true;
            st.journal.push(format!(
                "configure port {name}{}",
                port.enslave
                    .as_ref()
                    .map(|b| format!(" on {b}"))
                    .unwrap_or_default()
            ));
            Ok(())
        })
    }

    fn set_proxy_entries<'a>(&'a self, entries: &'a [ProxyEntry]) -> KFuture<'a, ()> {
        Box::pin(async move {
            let mut st = self.st();
            for e in entries {
                st.failing("set_proxy_entries", e.bridge.as_str())?;
                if !e.port_is_trunk && !st.links.contains_key(e.port.as_str()) {
                    continue;
                }
                for name in [&e.bridge, &e.port] {
                    if !st.links.contains_key(name.as_str()) {
                        return Err(request("set proxy entry", name.as_str(), "missing"));
                    }
                }
                st.proxies.insert(e.clone());
            }
            Ok(())
        })
    }

    fn del_proxy_entries<'a>(&'a self, entries: &'a [ProxyEntry]) -> KFuture<'a, ()> {
        Box::pin(async move {
            let mut st = self.st();
            for e in entries {
                st.failing("del_proxy_entries", e.bridge.as_str())?;
                if st.proxies.remove(e) {
                    st.journal.push(format!("unproxy {} on {}", e.ip, e.bridge));
                }
            }
            Ok(())
        })
    }

    fn delete_link<'a>(&'a self, name: &'a str) -> KFuture<'a, bool> {
        Box::pin(async move {
            let mut st = self.st();
            st.failing("delete_link", name)?;
            let gone = st.remove(name);
            if gone {
                st.journal.push(format!("delete {name}"));
            }
            Ok(gone)
        })
    }

    fn retire_link<'a>(&'a self, name: &'a str) -> KFuture<'a, bool> {
        Box::pin(async move {
            let mut st = self.st();
            st.failing("retire_link", name)?;
            // The background deletion finishes at once here.
            let gone = st.remove(name);
            if gone {
                st.journal.push(format!("retire {name}"));
            }
            Ok(gone)
        })
    }

    fn pending_deletions(&self) -> usize {
        0
    }
}

/// The daemon's own namespace, which always exists.
const OWN_NETNS: &str = "/proc/self/ns/net";

impl Namespaces for FakeKernel {
    fn check(&self, path: &Path) -> Result<(), NetnsPathError> {
        let shown = path.display().to_string();
        if !path.is_absolute() {
            return Err(NetnsPathError::NotAbsolute(shown));
        }
        if self.st().namespaces.contains_key(path) || path == Path::new(OWN_NETNS) {
            Ok(())
        } else {
            Err(NetnsPathError::Missing(
                shown,
                "No such file or directory".into(),
            ))
        }
    }

    fn alive(&self, path: &Path) -> bool {
        path == Path::new(OWN_NETNS) || self.st().namespaces.contains_key(path)
    }

    fn enter<'a>(&'a self, path: &'a Path) -> KFuture<'a, Box<dyn InNetns>> {
        Box::pin(async move {
            let mut st = self.st();
            st.failing("enter", &path.display().to_string())?;
            if !st.namespaces.contains_key(path) {
                return Err(NetlinkError::Netns {
                    path: path.to_path_buf(),
                    msg: "No such file or directory (os error 2)".into(),
                });
            }
            drop(st);
            Ok(Box::new(FakeInside {
                state: self.state.clone(),
                path: path.to_path_buf(),
            }) as Box<dyn InNetns>)
        })
    }
}

/// A handle inside one fake namespace.
struct FakeInside {
    state: Arc<Mutex<KernelState>>,
    path: PathBuf,
}

impl InNetns for FakeInside {
    fn configure<'a>(&'a self, cfg: &'a ContainerConfig) -> KFuture<'a, ()> {
        Box::pin(async move {
            let mut st = lock(&self.state);
            let object = format!("{} in {}", cfg.ifname, self.path.display());
            st.failing("configure", &object)?;
            let l = st
                .namespaces
                .get_mut(&self.path)
                .and_then(|ns| ns.get_mut(cfg.ifname.as_str()))
                .ok_or_else(|| request("configure container end", &object, "link missing"))?;
            l.up = true;
            l.addrs = cfg.addrs.clone();
            l.gateways = cfg.gateways.clone();
            st.journal.push(format!("configure {object}"));
            Ok(())
        })
    }

    fn observe<'a>(&'a self, ifname: &'a IfName) -> KFuture<'a, ContainerEnd> {
        Box::pin(async move {
            let mut st = lock(&self.state);
            st.failing("observe", ifname.as_str())?;
            Ok(
                match st
                    .namespaces
                    .get(&self.path)
                    .and_then(|ns| ns.get(ifname.as_str()))
                {
                    None => ContainerEnd::LinkMissing,
                    Some(l) => ContainerEnd::Present {
                        mac: Some(l.mac.clone()),
                        up: l.up,
                        addrs: l.addrs.iter().map(|a| (a.ip(), a.prefix())).collect(),
                        gateways: l.gateways.clone(),
                    },
                },
            )
        })
    }
}

impl Sysctl for FakeKernel {
    fn set(&self, key: &str, value: &str) -> Result<(), SysctlError> {
        let mut st = self.st();
        if let Some(i) = st.fail.iter().position(|f| f == "sysctl") {
            st.fail.remove(i);
            return Err(SysctlError {
                path: PathBuf::from("/proc/sys").join(key),
                source: std::io::Error::other("sysctl fails (injected)"),
            });
        }
        if st.sysctls.get(key).map(String::as_str) != Some(value) {
            st.journal.push(format!("sysctl {key} = {value}"));
            st.sysctls.insert(key.to_string(), value.to_string());
        }
        Ok(())
    }

    fn exists(&self, _key: &str) -> bool {
        true
    }
}
