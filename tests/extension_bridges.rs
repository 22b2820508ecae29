//! Networks past one bridge, against the real kernel. At scale: a /20 network holds 4,000
//! endpoints on one host, spread over its main bridge and extension bridges joined to it by veth
//! trunks as designed (default 512-port bridges); containers on every bridge resolve and reach
//! the gateway with the host's default backlog; a daemon restart keeps everything; a deleted
//! extension bridge or trunk is rebuilt with its ports; deleting the network leaves nothing
//! behind. Traffic, on small bridges (`bridge_ports = 16`, so that a broadcast crossing trunks
//! stays within the kernel's default backlog, see README "Capacity"): containers on different
//! bridges reach each other and the gateway,
//! also after a restart and after an extension or trunk was deleted and rebuilt; with icc off
//! every container↔container path (same bridge or across a trunk) is blocked while the gateway
//! stays reachable. Run as root.

mod common;

use std::time::{Duration, Instant};

use common::*;
use runtime_net::naming::{anchor_names, extension_bridge_name, trunk_names};
use runtime_net::types::NetworkName;
use serde_json::{json, Value};
use shimnet::netns::NamedNetns;

/// Ports (links enslaved) of bridge `br` in the host namespace.
fn ports(h: &TestHost, br: &str) -> usize {
    h.ip(&["-o", "link", "show", "master", br]).lines().count()
}

/// Whether a link exists in the host namespace.
fn exists(h: &TestHost, name: &str) -> bool {
    try_sh(&["ip", "-n", h.ns.name(), "link", "show", name])
}

/// The master of a link in the host namespace, if any.
fn master_of(h: &TestHost, name: &str) -> Option<String> {
    let out = std::process::Command::new("ip")
        .args(["-n", h.ns.name(), "-o", "link", "show", name])
        .output()
        .ok()?;
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut words = out.split_whitespace();
    while let Some(w) = words.next() {
        if w == "master" {
            return words.next().map(str::to_string);
        }
    }
    None
}

/// `n` containers attached through the REST door by four clients at once (the store's choice
/// of bridge under concurrency is part of what is tested), with their addresses.
fn fill(h: &TestHost, net: &str, n: usize) -> Vec<(NamedNetns, String)> {
    let started = Instant::now();
    let out: Vec<(NamedNetns, String)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..4)
            .map(|w| {
                s.spawn(move || {
                    (w..n)
                        .step_by(4)
                        .map(|_| {
                            let c = container("x");
                            let ep = h.attach(net, &c, json!({}));
                            let ip = ip_of(&ep);
                            (c, ip)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    eprintln!(
        "{n} endpoints attached through REST (4 clients) in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    out
}

/// `ping` with three tries (a flood to more than a thousand ports can lose a copy, see README
/// "Capacity").
fn pings(c: &NamedNetns, ip: &str) -> bool {
    (0..3).any(|_| ping(c, ip))
}

/// Packets a link has sent and received.
fn packets(h: &TestHost, link: &str) -> u64 {
    let out = h.ip(&["-s", "-j", "link", "show", "dev", link]);
    let v: Value = serde_json::from_str(&out).expect("ip -j");
    let s = &v[0]["stats64"];
    s["rx"]["packets"].as_u64().unwrap() + s["tx"]["packets"].as_u64().unwrap()
}

/// Static forwarding entries on bridge port `link` (the proxy entries' forwarding halves).
fn static_entries(h: &TestHost, link: &str) -> usize {
    sh(&["bridge", "-n", h.ns.name(), "fdb", "show", "dev", link])
        .lines()
        .filter(|l| l.split_whitespace().any(|w| w == "static"))
        .count()
}

/// The container whose host end is the newest port of bridge `br` (highest ifindex; a flood
/// reaches the newest ports first).
fn newest_on<'a>(
    h: &TestHost,
    br: &str,
    eps: &'a [(NamedNetns, String)],
    host_ends: &std::collections::HashMap<String, String>,
) -> &'a (NamedNetns, String) {
    let newest = h
        .ip(&["-o", "link", "show", "master", br])
        .lines()
        .filter_map(|l| {
            let mut parts = l.split(": ");
            let idx: u32 = parts.next()?.trim().parse().ok()?;
            let name = parts.next()?.split('@').next()?.to_string();
            name.starts_with("snv").then_some((idx, name))
        })
        .max()
        .unwrap_or_else(|| panic!("no container port on {br}"))
        .1;
    let cid = &host_ends[&newest];
    eps.iter()
        .find(|(c, _)| c.name() == cid)
        .unwrap_or_else(|| panic!("no container {cid}"))
}

/// Host end name → container id, from `/v1/endpoints`.
fn host_ends(h: &TestHost, net: &str) -> std::collections::HashMap<String, String> {
    let eps = h.call("GET", &format!("/v1/endpoints?network={net}"), None);
    eps.as_array()
        .unwrap_or_else(|| panic!("{eps}"))
        .iter()
        .map(|e| {
            (
                e["host_ifname"].as_str().unwrap().to_string(),
                e["key"]["container_id"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Packets the kernel's per-CPU backlogs dropped so far (`/proc/net/softnet_stat`, column 2).
fn backlog_drops() -> u64 {
    std::fs::read_to_string("/proc/net/softnet_stat")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter_map(|d| u64::from_str_radix(d, 16).ok())
        .sum()
}

/// The capacity entry of `net` in `/v1/status`.
fn capacity(h: &TestHost, net: &str) -> Value {
    let s = h.call("GET", "/v1/status", None);
    s["status"]["capacity"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["network"] == net)
        .unwrap_or_else(|| panic!("{s}"))
        .clone()
}

#[test]
fn four_thousand_endpoints_on_one_slash_20_network_across_extension_bridges() {
    use_prefix("sxb");
    let mut h = TestHost::new("");
    let net = tag("big");
    let name = NetworkName::new(&net).unwrap();
    let spec = h.create_network(json!({"name": net, "subnet": "10.84.0.0/20"}));
    let bridge = spec["bridge"]
        .as_str()
        .or_else(|| spec["network"]["bridge"].as_str())
        .unwrap_or_else(|| panic!("{spec}"))
        .to_string();
    let ext = |i: u8| extension_bridge_name(&name, i).to_string();
    let gw = "10.84.0.1";

    let eps = fill(&h, &net, 4000);
    // Default bridges of 512 ports: a /20 (4,093 addresses) may have 8 extensions. Main: 503
    // containers + 7 trunk ends (extension 8 is not needed yet) + the anchor; extensions 1 to
    // 6: 511 + their trunk end; extension 7 the rest (431 + trunk end).
    let spread = |h: &TestHost| {
        (
            ports(h, &bridge),
            ports(h, &ext(1)),
            ports(h, &ext(6)),
            ports(h, &ext(7)),
            exists(h, &ext(8)),
        )
    };
    const SPREAD: (usize, usize, usize, usize, bool) = (503 + 7 + 1, 512, 512, 432, false);
    assert_eq!(spread(&h), SPREAD);
    for i in 1..=7 {
        let (to_main, to_ext) = trunk_names(&name, i);
        assert_eq!(master_of(&h, to_main.as_str()), Some(bridge.clone()));
        assert_eq!(master_of(&h, to_ext.as_str()), Some(ext(i)));
    }
    let cap = capacity(&h, &net);
    assert_eq!(
        (
            &cap["ports_used"],
            &cap["ports_capacity"],
            &cap["extensions"]
        ),
        (&json!(4000), &json!(503 + 8 * 511), &json!(8)),
        "{cap}"
    );
    let m = h.client().request("GET", "/metrics", None).unwrap();
    let text = String::from_utf8_lossy(&m.body);
    assert!(
        text.contains(&format!(
            "shimnet_bridge_ports_capacity{{network=\"{net}\"}} 4591"
        )),
        "capacity metric"
    );

    // CHECK (CNI CHECK, `shimnetctl check`) finds endpoints on extensions intact.
    let ends = host_ends(&h, &net);
    let on_main = newest_on(&h, &bridge, &eps, &ends);
    let on_x1 = newest_on(&h, &ext(1), &eps, &ends);
    let on_x7 = newest_on(&h, &ext(7), &eps, &ends);
    for c in [on_main, on_x1, on_x7] {
        let check = h.call(
            "GET",
            &format!("/v1/networks/{net}/endpoints/{}/check", c.0.name()),
            None,
        );
        assert_eq!(check["ok"], true, "{check}");
    }
    // Every container resolves its gateway with the host's default backlog: an extension
    // answers for the gateway itself, and a request on main is flooded to main's ports only.
    // The newest port of a bridge is the first a flood reaches, its trunk (oldest) the last.
    let drops = backlog_drops();
    assert!(pings(&on_main.0, gw), "main -> gateway");
    assert!(pings(&on_x1.0, gw), "newest on extension 1 -> gateway");
    assert!(pings(&on_x7.0, gw), "newest on extension 7 -> gateway");
    let oldest = eps.iter().find(|(_, ip)| ip == "10.84.0.2").unwrap();
    assert!(pings(&oldest.0, gw), "oldest on main -> gateway");
    // Container to container across bridges: main knows every address and answers for those
    // behind its trunks, an extension knows the gateway and its own (proxy entries from the
    // records, see README "Capacity"), so a request is never copied into all 4,000 ports.
    assert!(
        pings(&on_main.0, &on_x1.1),
        "newest on main -> newest on extension 1"
    );
    assert!(
        pings(&on_x7.0, &oldest.1),
        "newest on extension 7 -> oldest on main"
    );
    assert!(
        pings(&on_x1.0, &on_x7.1),
        "newest on extension 1 -> newest on extension 7"
    );
    let known = |br: &str| -> std::collections::HashSet<String> {
        h.ip(&["neigh", "show", "dev", br, "nud", "permanent"])
            .lines()
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .collect()
    };
    let mut want: std::collections::HashSet<String> = on_bridge(&h, &net, &eps, Some(7))
        .into_iter()
        .map(|(_, ip)| ip.clone())
        .collect();
    want.insert(gw.to_string());
    assert_eq!(
        known(&ext(7)),
        want,
        "extension 7 knows the gateway and its own"
    );
    let all: std::collections::HashSet<String> = eps.iter().map(|(_, ip)| ip.clone()).collect();
    assert_eq!(known(&bridge), all, "main knows every endpoint");
    eprintln!(
        "ARP across bridges at 4,000 ports answered; backlog drops meanwhile: {}",
        backlog_drops() - drops
    );

    // A daemon restart keeps everything in place.
    h.stop_with(nix::sys::signal::Signal::SIGTERM);
    h.start();
    assert_eq!(spread(&h), SPREAD);
    assert!(pings(&on_main.0, gw), "main -> gateway after a restart");

    // An extension bridge deleted from outside is rebuilt, its trunk and ports back on it.
    sh(&["ip", "-n", h.ns.name(), "link", "del", &ext(2)]);
    eventually_for("extension 2 rebuilt", Duration::from_secs(10), || {
        exists(&h, &ext(2)) && ports(&h, &ext(2)) == 512
    });
    // ... with its proxy entries: its newest container resolves one on extension 7 (main
    // answers), and the gateway (extension 2 answers).
    let on_x2 = newest_on(&h, &ext(2), &eps, &host_ends(&h, &net));
    eventually_for(
        "extension 2 answers ARP again",
        Duration::from_secs(10),
        || pings(&on_x2.0, &on_x7.1) && pings(&on_x2.0, gw),
    );
    // A trunk deleted from outside (both ends go) is rebuilt.
    let (to_main, _) = trunk_names(&name, 1);
    sh(&["ip", "-n", h.ns.name(), "link", "del", to_main.as_str()]);
    eventually_for("trunk 1 rebuilt", Duration::from_secs(10), || {
        master_of(&h, to_main.as_str()).as_deref() == Some(bridge.as_str())
            && ports(&h, &ext(1)) == 512
    });
    assert_eq!(spread(&h), SPREAD);

    // Detach everything, delete the network: no bridge, extension or trunk is left.
    let started = Instant::now();
    for (c, _) in &eps {
        h.detach(&net, c.name());
    }
    eprintln!(
        "4000 endpoints detached in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    h.call("DELETE", &format!("/v1/networks/{net}"), None);
    let left: Vec<String> = links_in(h.ns.name())
        .into_iter()
        .filter(|l| {
            let (anchor, peer) = anchor_names(&name);
            l == &bridge
                || l == anchor.as_str()
                || l == peer.as_str()
                || (1..=15).any(|i| {
                    let (a, b) = trunk_names(&name, i);
                    l == &ext(i) || l == a.as_str() || l == b.as_str()
                })
        })
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// Small bridges: 16 ports each, three extensions at most (main 12 containers, each extension 15).
const SMALL: &str = "bridge_ports = 16\nmax_bridge_extensions = 3\n";

/// The containers of `eps` on main (`None`) or extension `i`, from the records.
fn on_bridge<'a>(
    h: &TestHost,
    net: &str,
    eps: &'a [(NamedNetns, String)],
    ext: Option<u64>,
) -> Vec<&'a (NamedNetns, String)> {
    let listed = h.call("GET", &format!("/v1/endpoints?network={net}"), None);
    let ids: std::collections::HashSet<String> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["extension"].as_u64() == ext)
        .map(|e| e["key"]["container_id"].as_str().unwrap().to_string())
        .collect();
    eps.iter().filter(|(c, _)| ids.contains(c.name())).collect()
}

#[test]
fn traffic_flows_across_trunks_and_after_restart_and_repairs() {
    use_prefix("sxt");
    let mut h = TestHost::new(SMALL);
    let net = tag("tr");
    let name = NetworkName::new(&net).unwrap();
    h.create_network(json!({"name": net, "subnet": "10.87.0.0/24"}));
    let bridge = h_bridge(&h, &net);
    let ext = |i: u8| extension_bridge_name(&name, i).to_string();
    let eps = fill(&h, &net, 40);
    let spread = |h: &TestHost| {
        (
            ports(h, &bridge),
            ports(h, &ext(1)),
            ports(h, &ext(2)),
            exists(h, &ext(3)),
        )
    };
    // Main: 12 containers, 2 trunk ends and the anchor.
    const SPREAD: (usize, usize, usize, bool) = (12 + 2 + 1, 16, 13 + 1, false);
    assert_eq!(spread(&h), SPREAD);
    let cap = capacity(&h, &net);
    assert_eq!(
        (&cap["ports_capacity"], &cap["extensions"]),
        (&json!(12 + 3 * 15), &json!(3)),
        "{cap}"
    );
    let m = on_bridge(&h, &net, &eps, None);
    let x1 = on_bridge(&h, &net, &eps, Some(1));
    let x2 = on_bridge(&h, &net, &eps, Some(2));
    assert_eq!((m.len(), x1.len(), x2.len()), (12, 15, 13));
    let gw = "10.87.0.1";
    let (to_main, to_ext) = trunk_names(&name, 1);
    let (to_main2, _) = trunk_names(&name, 2);
    let talks = |h: &TestHost, what: &str| {
        for (a, b) in [
            (m[0], x1[0]),
            (x1[1], m[1]),
            (x1[2], x2[0]),
            (x2[1], m[2]),
            (m[3], m[4]),
            (x1[3], x1[4]),
        ] {
            assert!(pings(&a.0, &b.1), "{what}: {} -> {}", a.1, b.1);
        }
        for c in [m[5], x1[5], x2[2]] {
            assert!(pings(&c.0, gw), "{what}: {} -> gateway", c.1);
        }
        // ARP goes only where it must. With every neighbour cache empty (no entry of the
        // pings above left to be probed by unicast ARP meanwhile), one ping moves through
        // trunks 1 and 2 (packets on their main ends): between two containers of one bridge,
        // nothing; extension 1 to main, the ARP request and its answer and the echo and its
        // reply through trunk 1 (main knows the address, so the request is not copied into
        // trunk 2); to the gateway, only the echo and its reply (extension 1 answers for the
        // gateway); extension 1 to extension 2, the same four through each trunk (main
        // answers both requests).
        let flows = |a: &(NamedNetns, String), b: &str| {
            for (c, _) in &eps {
                sh(&["ip", "-n", c.name(), "neigh", "flush", "all"]);
            }
            h.ip(&["neigh", "flush", "dev", bridge.as_str()]);
            let count = || (packets(h, to_main.as_str()), packets(h, to_main2.as_str()));
            let before = count();
            assert!(ping(&a.0, b), "{what}: {} -> {b}", a.1);
            let after = count();
            (after.0 - before.0, after.1 - before.1)
        };
        for (a, b, want) in [
            (m[7], m[8].1.as_str(), (0, 0)),
            (x1[6], x1[7].1.as_str(), (0, 0)),
            (x1[6], m[7].1.as_str(), (4, 0)),
            (x1[6], gw, (2, 0)),
            (x1[6], x2[4].1.as_str(), (4, 4)),
        ] {
            assert_eq!(
                flows(a, b),
                want,
                "{what}: packets through trunks 1 and 2 for one ping {} -> {b}",
                a.1
            );
        }
        // TCP across a trunk, unNATed.
        let to = m[6].1.parse().unwrap();
        let got = spawn_listener(m[6].0.path(), to, 8081);
        assert!(connect_from(x2[3].0.path(), to, 8081), "{what}: tcp");
        let peer = got.recv_timeout(Duration::from_secs(5)).unwrap().unwrap();
        assert_eq!(peer.ip().to_string(), x2[3].1, "{what}: no NAT inside");
    };
    talks(&h, "after the attaches");
    // Should a request for a container of its own bridge reach main all the same (here
    // extension 1 lost the neighbour half of that container's entry), main's answer comes back
    // in through the trunk with the container's MAC as source: the sticky forwarding half keeps
    // that MAC on the container's port, so the ping still works (a movable entry would send
    // the echo into the trunk, where main drops it).
    h.ip(&["neigh", "del", &x1[7].1, "dev", &ext(1)]);
    for (c, _) in &eps {
        sh(&["ip", "-n", c.name(), "neigh", "flush", "all"]);
    }
    assert!(
        ping(&x1[6].0, &x1[7].1),
        "within extension 1, answered by main too"
    );
    assert!(ping(&x1[6].0, &x1[7].1), "and again");

    h.stop_with(nix::sys::signal::Signal::SIGTERM);
    h.start();
    assert_eq!(spread(&h), SPREAD);
    talks(&h, "after a restart");

    sh(&["ip", "-n", h.ns.name(), "link", "del", &ext(2)]);
    eventually_for("extension 2 rebuilt", Duration::from_secs(10), || {
        exists(&h, &ext(2)) && ports(&h, &ext(2)) == SPREAD.2
    });
    talks(&h, "after extension 2 was deleted");
    sh(&["ip", "-n", h.ns.name(), "link", "del", to_main.as_str()]);
    eventually_for("trunk 1 rebuilt", Duration::from_secs(10), || {
        master_of(&h, to_main.as_str()).as_deref() == Some(bridge.as_str())
            && ports(&h, &ext(1)) == 16
            // The forwarding halves of the proxy entries went with the old trunk: main again
            // sends extension 1's addresses into its trunk, extension 1 the gateway's.
            && static_entries(&h, to_main.as_str()) == x1.len()
            && static_entries(&h, to_ext.as_str()) == 1
    });
    talks(&h, "after trunk 1 was deleted");

    for (c, _) in &eps {
        h.detach(&net, c.name());
    }
    h.call("DELETE", &format!("/v1/networks/{net}"), None);
    let left: Vec<String> = links_in(h.ns.name())
        .into_iter()
        .filter(|l| {
            l == &bridge || l.starts_with("snx") || l.starts_with("snt") || l.starts_with("snu")
        })
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn with_icc_off_only_the_gateway_is_reachable_on_every_bridge() {
    use_prefix("sxi");
    let h = TestHost::new(SMALL);
    let net = tag("iso");
    let name = NetworkName::new(&net).unwrap();
    h.create_network(json!({"name": net, "subnet": "10.85.0.0/24", "icc": false}));
    let eps = fill(&h, &net, 30);
    let (to_main, to_ext) = trunk_names(&name, 1);
    let detail = h.ip(&["-d", "link", "show", to_main.as_str()]);
    assert!(detail.contains("isolated on"), "{detail}");
    let detail = h.ip(&["-d", "link", "show", to_ext.as_str()]);
    assert!(detail.contains("isolated off"), "{detail}");
    let m = on_bridge(&h, &net, &eps, None);
    let x1 = on_bridge(&h, &net, &eps, Some(1));
    let x2 = on_bridge(&h, &net, &eps, Some(2));
    assert_eq!((m.len(), x1.len(), x2.len()), (12, 15, 3));
    for c in [m[0], x1[0], x2[0]] {
        let port = h.ip(&["-d", "link", "show", &host_end(&h, &net, c.0.name())]);
        assert!(port.contains("isolated on"), "{port}");
        assert!(pings(&c.0, "10.85.0.1"), "{} -> gateway", c.1);
    }
    for (a, b, what) in [
        (m[0], m[1], "within the main bridge"),
        (x1[0], x1[1], "within an extension"),
        (x1[0], m[0], "extension -> main"),
        (m[0], x1[0], "main -> extension"),
        (x1[0], x2[0], "extension -> other extension"),
    ] {
        assert!(!ping(&a.0, &b.1), "{what}: {} reached {}", a.1, b.1);
    }
    for (c, _) in &eps {
        h.detach(&net, c.name());
    }
    h.call("DELETE", &format!("/v1/networks/{net}"), None);
}

/// The host end of container `cid` on `net`.
fn host_end(h: &TestHost, net: &str, cid: &str) -> String {
    host_ends(h, net)
        .into_iter()
        .find(|(_, c)| c == cid)
        .map(|(hst, _)| hst)
        .unwrap_or_else(|| panic!("no endpoint of {cid}"))
}

/// The main bridge of network `net`.
fn h_bridge(h: &TestHost, net: &str) -> String {
    let v = h.call("GET", &format!("/v1/networks/{net}"), None);
    v["network"]["bridge"]
        .as_str()
        .or_else(|| v["bridge"].as_str())
        .unwrap_or_else(|| panic!("{v}"))
        .to_string()
}
