//! Kernel tests of the netlink executor (run as root). Each test builds its own "host" namespace
//! and container namespaces with `ip netns add`, runs the library on a thread inside the host
//! namespace and inspects the result with `ip -j`. Guards delete every namespace, even on panic.

use std::future::Future;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use runtime_net::kernel::{
    BridgePort, ContainerConfig, Links, Namespaces, PairSpec, ProxyEntry, Sysctl,
};
use runtime_net::netlink::{BridgeConfig, LinkKind, Netlink, NetlinkError, NetnsEntry};
use runtime_net::plan::check::{problems as endpoint_problems, Seen};
use runtime_net::sysctl::ProcSys;
use runtime_net::types::{
    ContainerId, EndpointKey, EndpointKind, EndpointRecord, IfName, MacAddr, MacPrefix,
    NetworkName, NetworkSpec,
};
use serde_json::Value;

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A network namespace made with `ip netns add`, deleted on drop.
struct Ns {
    name: String,
}

impl Ns {
    /// `None` (after a loud SKIPPED) if namespaces cannot be made here.
    fn new(tag: &str) -> Option<Ns> {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("snt-nl-{}-{n}-{tag}", std::process::id());
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            eprintln!("SKIPPED: cannot create network namespace {name} (not root?)");
            return None;
        }
        Some(Ns { name })
    }
    fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }
    /// Runs `ip -n <ns> <args>`; panics on failure.
    fn ip(&self, args: &[&str]) {
        let out = Command::new("ip")
            .args(["-n", &self.name])
            .args(args)
            .output()
            .expect("run ip");
        assert!(
            out.status.success(),
            "ip -n {} {args:?}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    /// `ip -n <ns> -j <args>` parsed.
    fn ip_json(&self, args: &[&str]) -> Value {
        let out = Command::new("ip")
            .args(["-n", &self.name, "-j"])
            .args(args)
            .output()
            .expect("run ip");
        assert!(
            out.status.success(),
            "ip -n {} -j {args:?}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("ip json")
    }
    /// One ping from this namespace to `dst`; true if answered.
    fn ping(&self, dst: &str) -> bool {
        Command::new("ip")
            .args(["netns", "exec", &self.name, "ping", "-c1", "-W1", dst])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Runs `f` on a fresh thread inside `ns` with a current-thread tokio runtime.
fn in_ns<F, Fut, T>(ns: &Ns, f: F) -> T
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
    T: Send + 'static,
{
    let path = ns.path();
    let t = std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("open netns");
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(f())
    });
    match t.join() {
        Ok(v) => v,
        Err(p) => std::panic::resume_unwind(p),
    }
}

fn ifname(s: &str) -> IfName {
    IfName::new(s).unwrap()
}

fn bridge_cfg() -> BridgeConfig {
    BridgeConfig {
        name: ifname("snbr0"),
        alias: "shimnet:net=test".into(),
        mtu: 1450,
        addrs: vec![
            "10.88.0.1/24".parse().unwrap(),
            "fd00:88::1/64".parse().unwrap(),
        ],
    }
}

/// One endpoint as the engine's executors see it.
#[derive(Debug, Clone)]
struct VethConfig {
    host_ifname: IfName,
    host_alias: String,
    netns: PathBuf,
    mac: MacAddr,
    ipv4: ipnetwork::Ipv4Network,
    ipv6: Option<ipnetwork::Ipv6Network>,
    gateway6: Option<std::net::Ipv6Addr>,
    mtu: u32,
    hairpin: bool,
    isolated: bool,
}

fn veth_cfg(n: u8, ns: &Ns) -> VethConfig {
    VethConfig {
        host_ifname: ifname(&format!("snvtest{n:08}")),
        host_alias: format!("shimnet:ep=test/c{n}/eth0"),
        netns: ns.path(),
        mac: MacAddr([0x02, 0x42, 10, 88, 0, n]),
        ipv4: format!("10.88.0.{n}/24").parse().unwrap(),
        ipv6: Some(format!("fd00:88::{n:x}/64").parse().unwrap()),
        gateway6: Some("fd00:88::1".parse().unwrap()),
        mtu: 1450,
        hairpin: true,
        isolated: false,
    }
}

/// The executor calls of an attach plan, in the engine's order: leftover removed, pair created,
/// IPv6 off on the port, then the port and the container end configured side by side.
async fn attach(nl: &Netlink, c: &VethConfig) -> Result<(), NetlinkError> {
    let entering = NetnsEntry.enter(&c.netns);
    let created = async {
        nl.delete_link(c.host_ifname.as_str()).await?;
        nl.create_pair(&PairSpec {
            host: c.host_ifname.clone(),
            mtu: c.mtu,
            bridge: ifname("snbr0"),
            bridge_index: None,
            peer: ifname("eth0"),
            peer_mac: c.mac,
            peer_netns: Some(c.netns.clone()),
        })
        .await
    };
    let (created, inside) = futures::join!(created, entering);
    let undo = |e| async move {
        let _ = nl.delete_link(c.host_ifname.as_str()).await;
        Err(e)
    };
    // A namespace that cannot be entered is the cause when creating failed too.
    let inside = match inside {
        Ok(i) => i,
        Err(e) => return undo(e).await,
    };
    created?;
    ProcSys
        .set(
            &format!("net/ipv6/conf/{}/disable_ipv6", c.host_ifname),
            "1",
        )
        .expect("sysctl");
    let mut addrs = vec![ipnetwork::IpNetwork::V4(c.ipv4)];
    addrs.extend(c.ipv6.map(ipnetwork::IpNetwork::V6));
    let mut gateways = vec!["10.88.0.1".parse().unwrap()];
    gateways.extend(c.gateway6.map(std::net::IpAddr::V6));
    let port = BridgePort {
        name: c.host_ifname.clone(),
        alias: c.host_alias.clone(),
        hairpin: c.hairpin,
        isolated: c.isolated,
        neigh_suppress: false,
        proxy_arp_wifi: false,
        enslave: None,
    };
    let cfg = ContainerConfig {
        ifname: ifname("eth0"),
        addrs,
        gateways,
        ipv6_link_local: c.ipv6.is_some(),
    };
    let (a, b) = futures::join!(nl.configure_port(&port), inside.configure(&cfg));
    match a.and(b) {
        Ok(()) => Ok(()),
        Err(e) => undo(e).await,
    }
}

/// The engine's drift check over what the executors show.
async fn check(nl: &Netlink, c: &VethConfig) -> Vec<String> {
    let name = NetworkName::new("test").unwrap();
    let spec = NetworkSpec {
        name: name.clone(),
        bridge: ifname("snbr0"),
        subnet: "10.88.0.0/24".parse().unwrap(),
        gateway: "10.88.0.1".parse().unwrap(),
        range4: None,
        subnet6: None,
        gateway6: None,
        mtu: c.mtu,
        masquerade: true,
        icc: !c.isolated,
        internal: false,
        hairpin: c.hairpin,
        no_masquerade_to: vec![],
        allow_from: vec![],
        host_binding_ipv4: None,
        mac_prefix: MacPrefix::LOCAL,
        dns: false,
    };
    let rec = EndpointRecord {
        key: EndpointKey {
            network: name,
            container_id: ContainerId::new("c").unwrap(),
            ifname: ifname("eth0"),
        },
        kind: EndpointKind::Managed,
        netns: c.netns.clone(),
        host_ifname: c.host_ifname.clone(),
        ipv4: c.ipv4,
        ipv6: c.ipv6,
        mac: c.mac,
        gateway: "10.88.0.1".parse().unwrap(),
        gateway6: c.gateway6,
        mtu: c.mtu,
        ports: vec![],
        names: vec![],
        extension: None,
    };
    let container = match NetnsEntry.enter(&c.netns).await {
        Ok(ns) => ns.observe(&ifname("eth0")).await.unwrap(),
        Err(e) => runtime_net::kernel::ContainerEnd::NetnsMissing(e.to_string()),
    };
    let seen = Seen {
        bridge: nl.link("snbr0").await.unwrap().map(|b| b.index),
        host: nl.link(c.host_ifname.as_str()).await.unwrap(),
        container: Some(container),
    };
    endpoint_problems(&spec, &rec, &seen)
}

fn link(ns: &Ns, dev: &str) -> Value {
    ns.ip_json(&["-d", "link", "show", "dev", dev])[0].clone()
}

fn has_addr(ns: &Ns, dev: &str, ip: &str, prefix: u64) -> bool {
    let v = ns.ip_json(&["addr", "show", "dev", dev]);
    v[0]["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["local"] == ip && a["prefixlen"] == prefix)
}

fn default_gw(ns: &Ns, v6: bool) -> Option<String> {
    let fam = if v6 { "-6" } else { "-4" };
    let v = ns.ip_json(&[fam, "route", "show", "default"]);
    v.as_array()?
        .first()
        .and_then(|r| r["gateway"].as_str().map(String::from))
}

fn is_up(l: &Value) -> bool {
    l["flags"].as_array().unwrap().iter().any(|f| f == "UP")
}

#[test]
fn bridge_create_idempotent_and_repair() {
    let Some(host) = Ns::new("h") else { return };
    let (i1, i2) = in_ns(&host, || async {
        let nl = Netlink::connect().await.unwrap();
        let i1 = nl.ensure_bridge(&bridge_cfg()).await.unwrap();
        let i2 = nl.ensure_bridge(&bridge_cfg()).await.unwrap();
        (i1, i2)
    });
    assert_eq!(
        (i1.0, i1.1, i2.1),
        (i2.0, true, false),
        "created, then in place"
    );
    let i1 = i1.0;
    let l = link(&host, "snbr0");
    assert_eq!(l["ifindex"], i1);
    assert_eq!(l["linkinfo"]["info_kind"], "bridge");
    assert_eq!(l["ifalias"], "shimnet:net=test");
    assert_eq!(l["mtu"], 1450);
    assert!(is_up(&l));
    assert!(has_addr(&host, "snbr0", "10.88.0.1", 24));
    assert!(has_addr(&host, "snbr0", "fd00:88::1", 64));
    let v6 = host.ip_json(&["-6", "addr", "show", "dev", "snbr0"]);
    let a6 = v6[0]["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["local"] == "fd00:88::1")
        .unwrap()
        .clone();
    assert_eq!(a6["nodad"], true, "{a6}");

    // Drift by hand: address gone, alias changed, MTU changed, link down.
    host.ip(&["addr", "del", "10.88.0.1/24", "dev", "snbr0"]);
    host.ip(&["addr", "del", "fd00:88::1/64", "dev", "snbr0"]);
    host.ip(&[
        "link",
        "set",
        "snbr0",
        "down",
        "mtu",
        "1400",
        "alias",
        "someone-else",
    ]);
    assert!(!has_addr(&host, "snbr0", "10.88.0.1", 24));
    let i3 = in_ns(&host, || async {
        let nl = Netlink::connect().await.unwrap();
        nl.ensure_bridge(&bridge_cfg()).await.unwrap()
    });
    assert_eq!(i3, (i1, true));
    let l = link(&host, "snbr0");
    assert_eq!(l["ifalias"], "shimnet:net=test");
    assert_eq!(l["mtu"], 1450);
    assert!(is_up(&l));
    assert!(has_addr(&host, "snbr0", "10.88.0.1", 24));
    assert!(has_addr(&host, "snbr0", "fd00:88::1", 64));

    // The connected route deleted by hand: the address goes on again and the route with it.
    host.ip(&["route", "del", "10.88.0.0/24", "dev", "snbr0"]);
    let routes = |host: &Ns| host.ip_json(&["route", "show", "dev", "snbr0"]).to_string();
    assert!(!routes(&host).contains("10.88.0.0/24"));
    let again = in_ns(&host, || async {
        let nl = Netlink::connect().await.unwrap();
        let a = nl.ensure_bridge(&bridge_cfg()).await.unwrap();
        let b = nl.ensure_bridge(&bridge_cfg()).await.unwrap();
        (a, b)
    });
    assert_eq!(again, ((i1, true), (i1, false)));
    assert!(routes(&host).contains("10.88.0.0/24"), "{}", routes(&host));

    // A non-bridge link under the bridge's name is refused.
    host.ip(&[
        "link", "add", "snbr1", "type", "veth", "peer", "name", "snbr1p",
    ]);
    let err = in_ns(&host, || async {
        let nl = Netlink::connect().await.unwrap();
        let mut c = bridge_cfg();
        c.name = ifname("snbr1");
        nl.ensure_bridge(&c).await.unwrap_err().to_string()
    });
    assert!(
        err.contains("snbr1") && err.contains("not a bridge"),
        "{err}"
    );
}

#[test]
fn attach_two_endpoints_configures_and_carries_traffic() {
    let (Some(host), Some(c1), Some(c2)) = (Ns::new("h"), Ns::new("c1"), Ns::new("c2")) else {
        return;
    };
    let (v1, v2) = (veth_cfg(2, &c1), veth_cfg(3, &c2));
    let (a, b) = (v1.clone(), v2.clone());
    let (problems, ports, owned) = in_ns(&host, move || async move {
        let nl = Netlink::connect().await.unwrap();
        nl.ensure_bridge(&bridge_cfg()).await.unwrap();
        attach(&nl, &a).await.unwrap();
        let mut b = b;
        b.hairpin = false;
        attach(&nl, &b).await.unwrap();
        let p = check(&nl, &a).await;
        let ports = nl.bridge_ports(&ifname("snbr0")).await.unwrap();
        let owned = nl.owned_links().await.unwrap();
        (p, ports, owned)
    });
    assert!(problems.is_empty(), "{problems:?}");
    let mut ports = ports;
    ports.sort();
    assert_eq!(ports, vec!["snvtest00000002", "snvtest00000003"]);
    let mut owned: Vec<(String, LinkKind)> = owned.into_iter().map(|l| (l.name, l.kind)).collect();
    owned.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(
        owned,
        vec![
            ("snbr0".to_string(), LinkKind::Bridge),
            ("snvtest00000002".to_string(), LinkKind::Veth),
            ("snvtest00000003".to_string(), LinkKind::Veth),
        ]
    );

    // Host ends.
    let br_index = link(&host, "snbr0")["ifindex"].clone();
    for (v, hairpin) in [(&v1, true), (&v2, false)] {
        let l = link(&host, v.host_ifname.as_str());
        assert_eq!(l["master"], "snbr0");
        assert_eq!(l["ifalias"], v.host_alias.as_str());
        assert_eq!(l["mtu"], 1450);
        assert!(is_up(&l));
        assert_eq!(l["linkinfo"]["info_kind"], "veth");
        let port = &l["linkinfo"]["info_slave_data"];
        assert_eq!(port["hairpin"], hairpin, "{port}");
        assert_eq!(port["isolated"], false, "{port}");
        assert_ne!(l["ifindex"], br_index);
    }
    // Container ends.
    for (ns, v) in [(&c1, &v1), (&c2, &v2)] {
        let l = link(ns, "eth0");
        assert_eq!(l["address"], v.mac.to_string());
        assert_eq!(l["mtu"], 1450);
        assert!(is_up(&l));
        assert_eq!(l["linkinfo"]["info_kind"], "veth");
        assert!(has_addr(ns, "eth0", &v.ipv4.ip().to_string(), 24));
        assert!(has_addr(ns, "eth0", &v.ipv6.unwrap().ip().to_string(), 64));
        assert!(is_up(&link(ns, "lo")));
        assert_eq!(default_gw(ns, false).as_deref(), Some("10.88.0.1"));
        assert_eq!(default_gw(ns, true).as_deref(), Some("fd00:88::1"));
        // No temporary peer left in the host namespace.
        let all = host.ip_json(&["link", "show"]);
        assert!(!all.to_string().contains("snptest"), "{all}");
    }
    // Real traffic.
    assert!(c1.ping("10.88.0.3"), "c1 -> c2");
    assert!(c2.ping("10.88.0.2"), "c2 -> c1");
    assert!(c1.ping("10.88.0.1"), "c1 -> gateway");
    assert!(c1.ping("fd00:88::1"), "c1 -> gateway6");
    assert!(c1.ping("fd00:88::3"), "c1 -> c2 over IPv6");

    // Drift inside the container is reported; delete_link is idempotent.
    c1.ip(&["addr", "del", "10.88.0.2/24", "dev", "eth0"]);
    c1.ip(&["-6", "route", "del", "default"]);
    let a = v1.clone();
    let (p, d1, d2, exists, ports) = in_ns(&host, move || async move {
        let nl = Netlink::connect().await.unwrap();
        let p = check(&nl, &a).await;
        let d1 = nl.delete_link(a.host_ifname.as_str()).await.unwrap();
        let d2 = nl.delete_link(a.host_ifname.as_str()).await.unwrap();
        let exists = nl.link(a.host_ifname.as_str()).await.unwrap().is_some();
        let ports = nl.bridge_ports(&ifname("snbr0")).await.unwrap();
        (p, d1, d2, exists, ports)
    });
    let all = p.join("\n");
    assert!(all.contains("address 10.88.0.2/24 missing"), "{all}");
    assert!(
        all.contains("default route via fd00:88::1 missing"),
        "{all}"
    );
    // Removing the address also made the kernel drop the IPv4 default route through it.
    assert!(all.contains("default route via 10.88.0.1 missing"), "{all}");
    assert_eq!(p.len(), 3, "{all}");
    assert!(d1);
    assert!(!d2);
    assert!(!exists);
    assert_eq!(ports, vec!["snvtest00000003"]);
    // Deleting the host end took the container end with it.
    let links = c1.ip_json(&["link", "show"]);
    assert!(!links.to_string().contains("eth0"), "{links}");
}

#[test]
fn isolated_ports_reach_gateway_but_not_each_other() {
    let (Some(host), Some(c1), Some(c2)) = (Ns::new("h"), Ns::new("c1"), Ns::new("c2")) else {
        return;
    };
    let (mut v1, mut v2) = (veth_cfg(2, &c1), veth_cfg(3, &c2));
    v1.isolated = true;
    v2.isolated = true;
    let (a, b) = (v1.clone(), v2.clone());
    in_ns(&host, move || async move {
        let nl = Netlink::connect().await.unwrap();
        nl.ensure_bridge(&bridge_cfg()).await.unwrap();
        attach(&nl, &a).await.unwrap();
        attach(&nl, &b).await.unwrap();
    });
    let port = &link(&host, v1.host_ifname.as_str())["linkinfo"]["info_slave_data"];
    assert_eq!(port["isolated"], true, "{port}");
    assert!(c1.ping("10.88.0.1"), "c1 -> gateway");
    assert!(c2.ping("10.88.0.1"), "c2 -> gateway");
    assert!(!c1.ping("10.88.0.3"), "isolated c1 reached c2");
    assert!(!c2.ping("10.88.0.2"), "isolated c2 reached c1");
}

#[test]
fn attach_into_missing_or_invalid_netns_leaves_nothing() {
    let (Some(host), Some(c)) = (Ns::new("h"), Ns::new("gone")) else {
        return;
    };
    let v = veth_cfg(2, &c);
    drop(c); // the namespace is deleted before the attach
    let file = tempfile::NamedTempFile::new().unwrap();
    let mut w = veth_cfg(3, &host);
    w.netns = file.path().to_path_buf();
    let (a, b) = (v.clone(), w.clone());
    let (e1, e2, problems) = in_ns(&host, move || async move {
        let nl = Netlink::connect().await.unwrap();
        nl.ensure_bridge(&bridge_cfg()).await.unwrap();
        let e1 = attach(&nl, &a).await.unwrap_err();
        let e2 = attach(&nl, &b).await.unwrap_err();
        let p = check(&nl, &a).await;
        (e1, e2, p)
    });
    for (e, v) in [(&e1, &v), (&e2, &w)] {
        match e {
            NetlinkError::Netns { path, .. } => assert_eq!(path, &v.netns),
            other => panic!("expected a netns error, got {other}"),
        }
        assert!(e.to_string().contains(&v.netns.display().to_string()));
    }
    assert!(problems
        .iter()
        .any(|p| p.contains("host end") && p.contains("missing")));
    assert!(
        problems.iter().any(|p| p.starts_with("netns")),
        "{problems:?}"
    );
    let links = host.ip_json(&["link", "show"]).to_string();
    assert!(!links.contains("snvtest"), "left behind: {links}");
}

/// The one thread that enters namespaces takes the next request after one it refused, and
/// goes back between requests: a container's namespace it entered is not kept alive by it (the
/// pair goes when the namespace is deleted).
#[test]
fn namespace_thread_survives_refusals_and_keeps_no_namespace_alive() {
    let (Some(host), Some(c)) = (Ns::new("h"), Ns::new("c")) else {
        return;
    };
    let file = tempfile::NamedTempFile::new().unwrap();
    let mut bad = veth_cfg(4, &host);
    bad.netns = file.path().to_path_buf();
    let good = veth_cfg(5, &c);
    let (b, g) = (bad, good.clone());
    in_ns(&host, move || async move {
        let nl = Netlink::connect().await.unwrap();
        nl.ensure_bridge(&bridge_cfg()).await.unwrap();
        for _ in 0..3 {
            let e = attach(&nl, &b).await.unwrap_err();
            assert!(matches!(e, NetlinkError::Netns { .. }), "{e}");
            attach(&nl, &g).await.unwrap();
        }
    });
    let host_end = good.host_ifname.as_str();
    assert!(
        host.ip_json(&["link", "show"])
            .to_string()
            .contains(host_end),
        "attach made no pair"
    );
    drop(c);
    let deadline = Instant::now() + Duration::from_secs(10);
    while host
        .ip_json(&["link", "show"])
        .to_string()
        .contains(host_end)
    {
        assert!(
            Instant::now() < deadline,
            "{host_end} outlived its container's namespace: something still holds it"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn attach_replaces_stale_pair() {
    let (Some(host), Some(c)) = (Ns::new("h"), Ns::new("c")) else {
        return;
    };
    let v = veth_cfg(2, &c);
    // A stale pair from a crashed attach: host end exists, peer still in the host namespace.
    host.ip(&[
        "link",
        "add",
        "snvtest00000002",
        "type",
        "veth",
        "peer",
        "name",
        "snptest00000002",
    ]);
    let a = v.clone();
    let problems = in_ns(&host, move || async move {
        let nl = Netlink::connect().await.unwrap();
        nl.ensure_bridge(&bridge_cfg()).await.unwrap();
        attach(&nl, &a).await.unwrap();
        // And again over a complete, healthy pair.
        attach(&nl, &a).await.unwrap();
        check(&nl, &a).await
    });
    assert!(problems.is_empty(), "{problems:?}");
    let links = host.ip_json(&["link", "show"]).to_string();
    assert!(!links.contains("snptest"), "{links}");
    assert_eq!(link(&host, "snvtest00000002")["master"], "snbr0");
    assert!(has_addr(&c, "eth0", "10.88.0.2", 24));
    assert!(c.ping("10.88.0.1"));
}

/// What a command printed; panics on failure.
fn output(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("run command");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The trunk-like port the proxy-entry test puts its entries on: a trunk's main end, proxy ARP
/// (wifi variant) on.
fn proxy_port() -> BridgePort {
    BridgePort {
        name: ifname("snpt0"),
        alias: "shimnet:trunk=test/1".into(),
        hairpin: false,
        isolated: false,
        neigh_suppress: false,
        proxy_arp_wifi: true,
        enslave: Some(ifname("snbr0")),
    }
}

/// Deletes the port's veth pair if there is one and makes it anew (a new index).
fn recreate_proxy_port(ns: &str) {
    let ip = |args: &[&str]| output(&[&["ip", "-n", ns][..], args].concat());
    if ip(&["link", "show"]).contains("snpt0") {
        ip(&["link", "del", "snpt0"]);
    }
    ip(&[
        "link", "add", "snpt0", "type", "veth", "peer", "name", "snpu0",
    ]);
}

/// The permanent neighbours of the test bridge and the forwarding entries of its port.
fn proxy_state(ns: &str) -> (String, String) {
    let neigh = output(&[
        "ip",
        "-n",
        ns,
        "neigh",
        "show",
        "dev",
        "snbr0",
        "nud",
        "permanent",
    ]);
    let fdb = output(&["bridge", "-n", ns, "fdb", "show", "dev", "snpt0"]);
    (neigh, fdb)
}

#[test]
fn proxy_entries_are_set_replaced_and_removed_and_the_port_proxies_arp() {
    let Some(host) = Ns::new("h") else { return };
    recreate_proxy_port(&host.name);
    let entry = ProxyEntry {
        bridge: ifname("snbr0"),
        port: ifname("snpt0"),
        port_is_trunk: true,
        ip: "10.88.0.77".parse().unwrap(),
        mac: MacAddr([0x02, 0x42, 10, 88, 0, 77]),
    };
    let e = entry.clone();
    let ns = host.name.clone();
    in_ns(&host, move || async move {
        let nl = Netlink::connect().await.unwrap();
        nl.ensure_bridge(&bridge_cfg()).await.unwrap();
        nl.configure_port(&proxy_port()).await.unwrap();
        // Set twice: the second replaces.
        nl.set_proxy_entries(&[e.clone(), e.clone()]).await.unwrap();
        // The port re-created (a repaired trunk: new index): the same connection, whose
        // remembered index is stale now, still puts the entry on the new link.
        recreate_proxy_port(&ns);
        nl.configure_port(&proxy_port()).await.unwrap();
        nl.set_proxy_entries(std::slice::from_ref(&e))
            .await
            .unwrap();
    });
    let (neigh, fdb) = proxy_state(&host.name);
    assert!(
        neigh.contains("10.88.0.77 lladdr 02:42:0a:58:00:4d PERMANENT"),
        "{neigh}"
    );
    assert!(
        fdb.contains("02:42:0a:58:00:4d master snbr0 static"),
        "{fdb}"
    );
    // `ip -d` (this `bridge` does not show the wifi flag).
    let flags = output(&["ip", "-n", &host.name, "-d", "link", "show", "dev", "snpt0"]);
    assert!(
        flags.contains("proxy_arp_wifi on") && flags.contains("neigh_suppress off"),
        "{flags}"
    );
    // A missing trunk is refused by name; a missing endpoint port (an endpoint still being
    // built) is skipped, neighbour included; removing twice is fine.
    let mut bad = entry.clone();
    bad.port = ifname("snpt9");
    let mut building = entry.clone();
    building.port = ifname("snpt8");
    building.port_is_trunk = false;
    building.ip = "10.88.0.78".parse().unwrap();
    let (refused, e) = (bad, entry.clone());
    let msg = in_ns(&host, move || async move {
        let nl = Netlink::connect().await.unwrap();
        nl.set_proxy_entries(&[building]).await.unwrap();
        let msg = nl
            .set_proxy_entries(&[refused])
            .await
            .unwrap_err()
            .to_string();
        nl.del_proxy_entries(std::slice::from_ref(&e))
            .await
            .unwrap();
        nl.del_proxy_entries(&[e]).await.unwrap();
        msg
    });
    assert!(msg.contains("snpt9 missing"), "{msg}");
    // An endpoint's own entry (on its own port) is sticky: learning cannot move it.
    let mut own = entry.clone();
    own.port = ifname("snpt0");
    own.port_is_trunk = false;
    own.ip = "10.88.0.79".parse().unwrap();
    own.mac = MacAddr([0x02, 0x42, 10, 88, 0, 79]);
    let o = own.clone();
    in_ns(&host, move || async move {
        let nl = Netlink::connect().await.unwrap();
        nl.set_proxy_entries(&[o]).await.unwrap();
    });
    let (_, fdb) = proxy_state(&host.name);
    assert!(
        fdb.contains("02:42:0a:58:00:4f sticky master snbr0 static"),
        "{fdb}"
    );
    in_ns(&host, move || async move {
        let nl = Netlink::connect().await.unwrap();
        nl.del_proxy_entries(&[own]).await.unwrap();
    });
    let (neigh, fdb) = proxy_state(&host.name);
    assert!(!neigh.contains("10.88.0.77"), "{neigh}");
    assert!(!neigh.contains("10.88.0.78"), "{neigh}");
    assert!(!neigh.contains("10.88.0.79"), "{neigh}");
    assert!(!fdb.contains("02:42:0a:58:00:4d"), "{fdb}");
    // The forwarding entry on an endpoint's own port is left to the port's deletion (removal
    // is asked only for an endpoint being detached): no request that waits behind it.
    assert!(
        fdb.contains("02:42:0a:58:00:4f sticky master snbr0 static"),
        "{fdb}"
    );
    // A removal through a connection that remembers the port's old index reaches the entry
    // another connection put on the re-created port (not taken for "already gone").
    let e = entry.clone();
    let ns = host.name.clone();
    in_ns(&host, move || async move {
        let remembers = Netlink::connect().await.unwrap();
        remembers
            .set_proxy_entries(std::slice::from_ref(&e))
            .await
            .unwrap();
        recreate_proxy_port(&ns);
        let other = Netlink::connect().await.unwrap();
        other.configure_port(&proxy_port()).await.unwrap();
        other
            .set_proxy_entries(std::slice::from_ref(&e))
            .await
            .unwrap();
        remembers.del_proxy_entries(&[e]).await.unwrap();
    });
    let (neigh, fdb) = proxy_state(&host.name);
    assert!(!neigh.contains("10.88.0.77"), "{neigh}");
    assert!(!fdb.contains("02:42:0a:58:00:4d"), "{fdb}");
}

#[test]
fn owned_links_ignores_foreign_links() {
    let Some(host) = Ns::new("h") else { return };
    host.ip(&["link", "add", "vx0", "type", "veth", "peer", "name", "vx1"]);
    host.ip(&["link", "set", "vx1", "alias", "not-shimnet"]);
    host.ip(&["link", "add", "br9", "type", "bridge"]);
    let owned = in_ns(&host, || async {
        let nl = Netlink::connect().await.unwrap();
        nl.ensure_bridge(&bridge_cfg()).await.unwrap();
        nl.owned_links().await.unwrap()
    });
    assert_eq!(owned.len(), 1, "{owned:?}");
    assert_eq!(owned[0].name, "snbr0");
    assert_eq!(owned[0].kind, LinkKind::Bridge);
    assert_eq!(owned[0].alias.as_deref(), Some("shimnet:net=test"));
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn bench(n: usize, ipv6: bool) {
    let Some(host) = Ns::new("h") else { return };
    let nss: Vec<Ns> = (0..n).filter_map(|i| Ns::new(&format!("b{i}"))).collect();
    assert_eq!(nss.len(), n);
    let cfgs: Vec<VethConfig> = nss
        .iter()
        .enumerate()
        .map(|(i, ns)| {
            let mut c = veth_cfg(2, ns);
            c.host_ifname = ifname(&format!("snvb{i:011}"));
            c.host_alias = format!("shimnet:ep=test/b{i}/eth0");
            let ip = 0x0a58_0002u32 + i as u32; // 10.88.0.2 upwards in a /16
            c.ipv4 = ipnetwork::Ipv4Network::new(ip.into(), 16).unwrap();
            c.mac = MacPrefix([0x02, 0x42]).mac(ip.into());
            c.ipv6 = Some(format!("fd00:88::{:x}/64", i + 2).parse().unwrap());
            if !ipv6 {
                c.ipv6 = None;
                c.gateway6 = None;
            }
            c
        })
        .collect();
    let (mut att, mut del) = in_ns(&host, move || async move {
        let nl = Netlink::connect().await.unwrap();
        let mut b = bridge_cfg();
        b.addrs[0] = "10.88.0.1/16".parse().unwrap();
        nl.ensure_bridge(&b).await.unwrap();
        let mut att = Vec::new();
        for c in &cfgs {
            let t = Instant::now();
            attach(&nl, c).await.unwrap();
            att.push(t.elapsed());
        }
        assert_eq!(
            nl.bridge_ports(&ifname("snbr0")).await.unwrap().len(),
            cfgs.len()
        );
        let mut del = Vec::new();
        for c in &cfgs {
            let t = Instant::now();
            assert!(nl.delete_link(c.host_ifname.as_str()).await.unwrap());
            del.push(t.elapsed());
        }
        (att, del)
    });
    let (am, dm) = (median(&mut att), median(&mut del));
    eprintln!(
        "{n} endpoints (ipv6 {ipv6}): attach median {am:?} (p90 {:?}, max {:?}); delete_link median {dm:?} (p90 {:?}, max {:?})",
        att[n * 9 / 10],
        att[n - 1],
        del[n * 9 / 10],
        del[n - 1]
    );
}

#[test]
#[ignore = "benchmark: prints median attach/delete durations"]
fn bench_100_endpoints() {
    bench(100, true);
}

#[test]
#[ignore = "benchmark: prints median attach/delete durations"]
fn bench_1000_endpoints() {
    bench(1000, true);
}

#[test]
#[ignore = "benchmark: prints median attach/delete durations"]
fn bench_1000_endpoints_ipv4_only() {
    bench(1000, false);
}
