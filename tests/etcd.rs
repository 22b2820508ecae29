//! Cluster membership through a real etcd (Debian's `etcd-server` 3.4): the members run in
//! their own namespaces on the underlay, each node in its own namespace with its own shimnetd
//! (some on one L2 segment, some behind the router), containers attach through the REST API.
//! Faults are real: members killed by pid, quorum lost, a node cut off from etcd by a firewall
//! rule in its namespace. The tests in this file run one at a time (they are heavy). Run as root.

mod common;
mod etcd_support;
mod peering_support;

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{connect_from, spawn_listener};
use etcd_support::*;
use nix::sys::signal::Signal;
use peering_support::*;
use serde_json::Value;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn source(n: &Node) -> Value {
    n.peers()["source"].clone()
}

fn reachable(n: &Node) -> bool {
    source(n)["reachable"] == true
}

fn sessions(n: &Node) -> u64 {
    source(n)["sessions"].as_u64().unwrap_or(0)
}

fn metrics(n: &Node) -> String {
    let r = n
        .client()
        .request("GET", "/metrics", None)
        .expect("GET /metrics");
    String::from_utf8_lossy(&r.body).into_owned()
}

fn assert_tcp_keeps_source(
    from: &shimnet::netns::NamedNetns,
    from_ip: std::net::Ipv4Addr,
    to: &shimnet::netns::NamedNetns,
    to_ip: std::net::Ipv4Addr,
    port: u16,
) {
    let rx = spawn_listener(to.path(), to_ip, port);
    assert!(
        connect_from(from.path(), to_ip, port),
        "TCP {from_ip} -> {to_ip}:{port}"
    );
    let peer = rx.recv().unwrap().expect("connection seen");
    assert_eq!(
        peer.ip(),
        std::net::IpAddr::V4(from_ip),
        "no NAT inside the cluster"
    );
}

/// Exits within `secs` with a failure; returns its log.
fn expect_refused(n: &mut Node, secs: u64) -> String {
    n.spawn();
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(st) = n.daemon.as_mut().unwrap().try_wait().unwrap() {
            assert!(
                !st.success(),
                "{} must refuse to start:\n{}",
                n.name,
                n.log()
            );
            n.daemon = None;
            return n.log();
        }
        assert!(
            Instant::now() < deadline,
            "{} still running:\n{}",
            n.name,
            n.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn twenty_nodes_lease_distinct_subnets_and_reach_each_other() {
    let _one = serial();
    let mut f = Fabric::new(5);
    let etcd = Etcd::new(&mut f, 4, 3);
    let section =
        etcd.section("lease_ttl_secs = 4\ndial_timeout_secs = 2\nstart_timeout_secs = 60\n");
    // Four underlay subnets of five nodes behind the router (auto: host-gw inside a subnet,
    // VXLAN across). Probes every 5 s keep 20 daemons light on 2 cores. (Not one big segment:
    // every namespace shares the kernel's one ARP table.)
    let mut nodes: Vec<Node> = (0..20)
        .map(|i| {
            f.node_with(
                &format!("n{i:02}"),
                i % 4,
                10 + (i / 4) as u8,
                None,
                &etcd_peering("auto", 5),
                &section,
            )
        })
        .collect();
    let t0 = Instant::now();
    for n in &mut nodes {
        n.spawn();
    }
    for n in &mut nodes {
        n.wait_started(Duration::from_secs(120));
    }
    eprintln!("20 daemons serving after {:?}", t0.elapsed());
    let subnets: BTreeSet<String> = nodes.iter().map(leased).collect();
    assert_eq!(subnets.len(), 20, "20 distinct subnets: {subnets:?}");
    for s in &subnets {
        let net: ipnetwork::Ipv4Network = s.parse().unwrap();
        assert_eq!(net.prefix(), 24, "{s}");
        assert!("10.244.0.0/16"
            .parse::<ipnetwork::Ipv4Network>()
            .unwrap()
            .contains(net.network()));
    }
    wait_full_mesh(&nodes.iter().collect::<Vec<_>>(), 120);
    eprintln!("full mesh of 20 after {:?}", t0.elapsed());
    // Containers on four nodes, two per underlay subnet (n00 and n04 on one, n01 and n05 on
    // another).
    let (c0, ip0) = nodes[0].container("c0");
    let (c2, ip2) = nodes[4].container("c4");
    let (c1, ip1) = nodes[1].container("c1");
    let (c3, ip3) = nodes[5].container("c5");
    wait_for(30, "containers on different nodes reach each other", || {
        ping_from(&c0, ip2, &[])
            && ping_from(&c0, ip1, &[])
            && ping_from(&c3, ip2, &[])
            && ping_from(&c1, ip3, &[])
    });
    assert_tcp_keeps_source(&c0, ip0, &c2, ip2, 7201);
    assert_tcp_keeps_source(&c0, ip0, &c1, ip1, 7202);
    assert_tcp_keeps_source(&c3, ip3, &c0, ip0, 7203);
    let routes = nodes[0].owned_routes();
    assert!(
        routes.contains(&format!("{} via {}", leased(&nodes[4]), nodes[4].addr)),
        "host-gw on L2: {routes}"
    );
    assert!(
        routes.contains(&format!(
            "{} via {} dev shimnet-vxlan",
            leased(&nodes[1]),
            leased(&nodes[1]).trim_end_matches("/24")
        )),
        "VXLAN across the router: {routes}"
    );
    // Visibility: source, reservations, metrics.
    let (ok, out) = nodes[0].ctl(&["peers"]);
    assert!(ok, "{out}");
    eprintln!("shimnetctl peers on n00:\n{out}");
    assert!(
        out.contains("membership: etcd") && out.contains("— reachable via http://172.30.4.1"),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("n04") && l.contains("host-gw") && l.contains(" in ")),
        "{out}"
    );
    let (ok, out) = nodes[0].ctl(&["cluster"]);
    assert!(ok, "{out}");
    eprintln!("shimnetctl cluster on n00:\n{out}");
    assert!(out.contains("20 reservation(s), 20 live"), "{out}");
    let m = metrics(&nodes[0]);
    assert!(
        m.contains("shimnet_membership_peers{source=\"etcd\"} 19"),
        "{m}"
    );
    assert!(
        m.contains("shimnet_membership_source_up{source=\"etcd\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("shimnet_etcd_sessions_total{source=\"etcd\"} 1"),
        "{m}"
    );

    // A restart keeps the subnet, and nobody's routes change.
    let before = leased(&nodes[5]);
    nodes[5].stop(Signal::SIGTERM);
    nodes[5].start();
    assert_eq!(leased(&nodes[5]), before, "restart keeps the subnet");
    assert!(
        nodes[5].log().contains("etcd: cluster record")
            || nodes[5].log().contains("pod subnet leased")
    );
    wait_full_mesh(&nodes.iter().collect::<Vec<_>>(), 30);

    // Stopped past the TTL: removed from every peer's routes; back with the same subnet.
    let gone = leased(&nodes[7]);
    nodes[7].stop(Signal::SIGTERM);
    let t = Instant::now();
    wait_for(30, "n07's subnet removed from every other node", || {
        nodes
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != 7)
            .all(|(_, n)| !route_dsts(n).contains(&gone))
    });
    eprintln!(
        "n07 (lease TTL 4 s) dropped by all 19 peers {:?} after its daemon stopped",
        t.elapsed()
    );
    let (_, out) = nodes[0].ctl(&["cluster"]);
    assert!(out.contains("20 reservation(s), 19 live"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with(&gone) && l.contains("n07") && l.contains("gone")),
        "{out}"
    );
    nodes[7].start();
    assert_eq!(leased(&nodes[7]), gone, "its old subnet back");
    let t = Instant::now();
    wait_full_mesh(&nodes.iter().collect::<Vec<_>>(), 30);
    eprintln!(
        "n07 back in every peer's routes {:?} after its daemon answered",
        t.elapsed()
    );
    assert!(ping_from(&c0, ip1, &[]));
}

#[test]
fn etcd_faults_never_withdraw_routes() {
    let _one = serial();
    let mut f = Fabric::new(3);
    let mut etcd = Etcd::new(&mut f, 2, 3);
    let section =
        etcd.section("lease_ttl_secs = 5\ndial_timeout_secs = 2\nstart_timeout_secs = 30\n");
    let peering = etcd_peering("auto", 2);
    let mut a = f.node_with("node-a", 0, 10, None, &peering, &section);
    let mut b = f.node_with("node-b", 0, 11, None, &peering, &section);
    let mut c = f.node_with("node-c", 1, 10, None, &peering, &section);
    for n in [&mut a, &mut b, &mut c] {
        n.start();
    }
    wait_full_mesh(&[&a, &b, &c], 30);
    let (ca, _ipa) = a.container("a");
    let (_cb, ipb) = b.container("b");
    let (cc, ipc) = c.container("c");
    wait_for(30, "containers reach each other", || {
        ping_from(&ca, ipb, &[]) && ping_from(&ca, ipc, &[]) && ping_from(&cc, ipb, &[])
    });
    let mut monitors: Vec<Bg> = [&a, &b, &c].iter().map(|n| route_monitor(n)).collect();
    let mut pings = vec![
        ("a->b (host-gw)", pinger(&ca, ipb)),
        ("a->c (vxlan)", pinger(&ca, ipc)),
        ("c->b (vxlan)", pinger(&cc, ipb)),
    ];
    let mesh_intact = |what: &str| {
        for (n, others) in [(&a, [&b, &c]), (&b, [&a, &c]), (&c, [&a, &b])] {
            let got = route_dsts(n);
            for o in others {
                assert!(
                    got.contains(&leased(o)),
                    "{what}: {} lost its route to {}: {got:?}",
                    n.name,
                    o.name
                );
            }
        }
    };
    std::thread::sleep(Duration::from_secs(2));

    // 1. The leader is killed: a new one is elected, every node's session comes back.
    let leader = etcd.leader().expect("a leader");
    let t = Instant::now();
    etcd.members[leader].signal(Signal::SIGKILL);
    eprintln!("fault 1: killed leader e{leader}");
    wait_for(30, "a new leader among the two left", || {
        etcd.leader().is_some()
    });
    eprintln!("fault 1: new leader after {:?}", t.elapsed());
    etcd.ctl_ok(&["put", "/probe", "after-leader-kill"]);
    wait_for(30, "every node's session established", || {
        [&a, &b, &c].iter().all(|n| reachable(n))
    });
    eprintln!(
        "fault 1: every node reachable again {:?} after the kill",
        t.elapsed()
    );
    mesh_intact("after the leader was killed");
    etcd.members[leader].start();
    etcd.wait_healthy(60);

    // 2. Two of three members stopped: no quorum. Nodes keep their peers and routes.
    let t = Instant::now();
    let keep = (leader + 1) % 3;
    let stopped: Vec<usize> = (0..3).filter(|i| *i != keep).collect();
    for i in &stopped {
        etcd.members[*i].signal(Signal::SIGTERM);
    }
    eprintln!(
        "fault 2: stopped e{} and e{}; only e{keep} left (no quorum)",
        stopped[0], stopped[1]
    );
    wait_for(30, "every node sees etcd unreachable", || {
        [&a, &b, &c].iter().all(|n| !reachable(n))
    });
    let s = source(&a);
    eprintln!("fault 2: node-a's source after {:?}: {s}", t.elapsed());
    assert!(s["error"].as_str().is_some(), "{s}");
    // Longer than three lease TTLs without quorum.
    sample_until(
        Instant::now() + Duration::from_secs(16),
        Duration::from_millis(500),
        || mesh_intact("without quorum"),
    );
    let (ok, out) = a.ctl(&["peers"]);
    assert!(ok && out.contains("NOT reachable"), "{out}");
    eprintln!("shimnetctl peers on node-a without quorum:\n{out}");
    let before = [&a, &b, &c].map(sessions);
    let t = Instant::now();
    for i in &stopped {
        etcd.members[*i].start();
    }
    etcd.wait_healthy(60);
    eprintln!("fault 2: quorum back after {:?}", t.elapsed());
    wait_for(60, "every node re-established its session", || {
        [&a, &b, &c]
            .iter()
            .zip(before)
            .all(|(n, s)| reachable(n) && sessions(n) > s)
    });
    eprintln!(
        "fault 2: every node's lease and watch re-established {:?} after the members restarted",
        t.elapsed()
    );
    mesh_intact("after quorum came back");

    // 3. After recovery a new node joins and is reachable.
    let mut d = f.node_with("node-d", 1, 11, None, &peering, &section);
    let t = Instant::now();
    d.start();
    wait_full_mesh(&[&a, &b, &c, &d], 30);
    eprintln!(
        "node-d joined: in every peer's routes {:?} after its start",
        t.elapsed()
    );
    let (cd, ipd) = d.container("d");
    wait_for(30, "node-d's container reachable", || {
        ping_from(&ca, ipd, &[]) && ping_from(&cd, ipb, &[])
    });

    // Traffic flowed throughout; no route was ever withdrawn.
    for (what, p) in &mut pings {
        let out = p.finish();
        let (tx, rx) = ping_counts(&out);
        eprintln!("continuous ping {what}: {tx} sent, {rx} received during the faults");
        assert!(tx > 150, "{what}: {out}");
        assert_eq!(tx, rx, "{what}: packets lost during the etcd faults\n{out}");
    }
    for (n, m) in [&a, &b, &c].iter().zip(&mut monitors) {
        let text = m.finish();
        let del = deletions(&text);
        assert!(del.is_empty(), "{} withdrew routes: {del:?}", n.name);
    }
}

#[test]
fn node_partitioned_from_etcd_keeps_working() {
    let _one = serial();
    let mut f = Fabric::new(3);
    let etcd = Etcd::new(&mut f, 2, 1);
    let section =
        etcd.section("lease_ttl_secs = 8\ndial_timeout_secs = 1\nstart_timeout_secs = 4\n");
    let peering = etcd_peering("auto", 2);
    let mut a = f.node_with("node-a", 0, 10, None, &peering, &section);
    let mut b = f.node_with("node-b", 0, 11, None, &peering, &section);
    let mut c = f.node_with("node-c", 1, 10, None, &peering, &section);
    for n in [&mut a, &mut b, &mut c] {
        n.start();
    }
    wait_full_mesh(&[&a, &b, &c], 30);
    let (ca, ipa) = a.container("a");
    let (cc, ipc) = c.container("c");
    wait_for(30, "a <-> c", || {
        ping_from(&ca, ipc, &[]) && ping_from(&cc, ipa, &[])
    });
    let mut mon_c = route_monitor(&c);
    let c_subnet = leased(&c);

    // Cut c off from etcd (not from its peers).
    let mut cut = Partition::new(&c.ns, "172.30.2.0/24");
    let t = Instant::now();
    wait_for(20, "node-c sees etcd unreachable", || !reachable(&c));
    eprintln!(
        "partition: node-c noticed after {:?}: {}",
        t.elapsed(),
        source(&c)
    );
    // It keeps serving: a new container on c reaches the one already there and node-a's.
    let (cc2, _) = c.container("c2");
    assert!(
        ping_from(&cc2, ipc, &[]),
        "local traffic on the partitioned node"
    );
    // Meanwhile the cluster changes: b leaves, a new node e joins, the history is compacted.
    b.stop(Signal::SIGTERM);
    let mut e = f.node_with("node-e", 0, 12, None, &peering, &section);
    e.start();
    let e_subnet = leased(&e);
    let b_subnet = {
        // b's subnet from a's reservations view.
        let (_, out) = a.ctl(&["cluster"]);
        out.lines()
            .find(|l| l.contains("node-b"))
            .and_then(|l| l.split_whitespace().next())
            .unwrap()
            .to_string()
    };
    wait_for(30, "a: b gone, e present", || {
        let r = route_dsts(&a);
        !r.contains(&b_subnet) && r.contains(&e_subnet)
    });
    let rev = etcd.revision();
    etcd.ctl_ok(&["compact", &rev.to_string()]);
    // Past c's TTL its peers drop it (a node gone this long is dropped), but c drops nothing.
    wait_for(30, "a drops node-c after its lease ran out", || {
        !route_dsts(&a).contains(&c_subnet)
    });
    eprintln!(
        "partition: node-a dropped node-c {:?} after the cut (TTL 8 s)",
        t.elapsed()
    );
    let rc = route_dsts(&c);
    assert!(
        rc.contains(&leased(&a)) && rc.contains(&b_subnet),
        "c keeps its last known peers: {rc:?}"
    );
    // Healed: c registers again (new lease, same subnet), finds its watch revision compacted
    // away and lists again, learns that b left and e joined; its peers take it back.
    cut.heal();
    let t = Instant::now();
    let converged = |a: &Node, c: &Node, e: &Node| {
        reachable(c)
            && route_dsts(a).contains(&c_subnet)
            && route_dsts(e).contains(&c_subnet)
            && route_dsts(c).contains(&e_subnet)
            && !route_dsts(c).contains(&b_subnet)
    };
    wait_for(30, "node-c back everywhere and up to date", || {
        converged(&a, &c, &e)
    });
    eprintln!(
        "partition healed: node-c re-registered and converged in {:?}",
        t.elapsed()
    );
    wait_for(30, "a <-> c again", || {
        ping_from(&ca, ipc, &[]) && ping_from(&cc, ipa, &[])
    });
    let log = c.log();
    assert!(
        log.contains("compacted past the last revision seen; listing again"),
        "{log}"
    );
    assert!(
        log.contains("lease had expired; registering again with a new one"),
        "{log}"
    );

    // Cut off again and restarted meanwhile: it comes up with the remembered subnet and the
    // saved peers, withdraws nothing, and registers once etcd answers.
    let mut cut = Partition::new(&c.ns, "172.30.2.0/24");
    wait_for(20, "node-c sees etcd unreachable again", || !reachable(&c));
    c.stop(Signal::SIGTERM);
    c.start();
    assert_eq!(leased(&c), c_subnet);
    assert!(
        c.log().contains("starting with the remembered subnet"),
        "{}",
        c.log()
    );
    let rc = route_dsts(&c);
    assert!(
        rc.contains(&leased(&a)) && rc.contains(&e_subnet),
        "saved peers kept: {rc:?}"
    );
    let (cc3, _) = c.container("c3");
    assert!(
        ping_from(&cc3, ipc, &[]),
        "containers attach and talk right after a restart while cut off"
    );
    cut.heal();
    wait_for(30, "node-c registered after its restart", || {
        converged(&a, &c, &e)
    });
    let m = mon_c.finish();
    let del: Vec<String> = deletions(&m)
        .into_iter()
        .filter(|l| !l.contains(&b_subnet))
        .collect();
    assert!(
        del.is_empty(),
        "node-c withdrew routes other than the departed node-b's: {del:?}"
    );
}

#[test]
fn bad_input_is_refused_and_named() {
    let _one = serial();
    let mut f = Fabric::new(3);
    let etcd = Etcd::new(&mut f, 2, 1);
    let section =
        etcd.section("lease_ttl_secs = 10\ndial_timeout_secs = 1\nstart_timeout_secs = 3\n");
    let peering = etcd_peering("host-gw", 1);
    let mut a = f.node_with("node-a", 0, 10, None, &peering, &section);
    let mut b = f.node_with("node-b", 0, 11, None, &peering, &section);
    a.start();
    b.start();
    wait_full_mesh(&[&a, &b], 30);
    let (sa, sb) = (leased(&a), leased(&b));
    let routes_before = (a.owned_routes(), b.owned_routes());

    // A corrupt value, a foreign subnet, a record claiming b's subnet: skipped, named, never
    // applied.
    etcd.ctl_ok(&["put", "/shimnet/nodes/evil", "{garbage"]);
    let foreign = serde_json::json!({"name": "foreign", "address": "172.30.0.77", "subnet": "192.168.77.0/24",
        "vtep_mac": "02:5e:ac:1e:00:4d", "mode": "auto", "vxlan_vni": 4242, "vxlan_port": 4789});
    etcd.ctl_ok(&["put", "/shimnet/nodes/foreign", &foreign.to_string()]);
    let thief = serde_json::json!({"name": "thief", "address": "172.30.0.78", "subnet": sb,
        "vtep_mac": "02:5e:ac:1e:00:4e", "mode": "auto", "vxlan_vni": 4242, "vxlan_port": 4789});
    etcd.ctl_ok(&["put", "/shimnet/nodes/thief", &thief.to_string()]);
    for n in [&a, &b] {
        wait_for(10, "three entries skipped", || {
            source(n)["skipped"]
                .as_array()
                .is_some_and(|s| s.len() == 3)
        });
        let log = n.log();
        for want in [
            "skipping invalid entry (never applied): /shimnet/nodes/evil: not a node record",
            "/shimnet/nodes/foreign: subnet 192.168.77.0/24 is outside cluster_cidr 10.244.0.0/16",
            &format!("/shimnet/nodes/thief: subnet {sb} is reserved by node \"node-b\""),
        ] {
            assert!(log.contains(want), "{}: {want}\n{log}", n.name);
        }
        wait_for(
            10,
            "skipped entries in the metrics (mirrored at each pass)",
            || metrics(n).contains("shimnet_membership_skipped_entries{source=\"etcd\"} 3"),
        );
        let (_, out) = n.ctl(&["peers"]);
        assert!(out.contains("skipped: /shimnet/nodes/evil"), "{out}");
    }
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        (a.owned_routes(), b.owned_routes()),
        routes_before.clone(),
        "nothing applied"
    );
    assert!(!a.owned_routes().contains("192.168.77.0"));
    assert!(ping_from(&a.container("a").0, b.addr, &[]));

    // An unreachable endpoint list: refused, naming the key and the endpoints.
    let dead = "[etcd]\nendpoints = [\"http://172.30.2.99:2379\", \"http://172.30.2.98:2379\"]\ndial_timeout_secs = 1\nstart_timeout_secs = 3\n";
    let mut u = f.node_with("node-u", 0, 20, None, &peering, dead);
    let log = expect_refused(&mut u, 30);
    assert!(
        log.contains("etcd.endpoints: no member of http://172.30.2.99:2379,http://172.30.2.98:2379 answered within 3 s"),
        "{log}"
    );
    // A configured pod_cidr held by another node: refused, naming the holder.
    let octet: u8 = sb.split('.').nth(2).unwrap().parse().unwrap();
    let mut x = f.node_with("node-x", 0, 21, Some(octet), &peering, &section);
    let log = expect_refused(&mut x, 30);
    assert!(
        log.contains(&format!("node.pod_cidr {sb} is held by node \"node-b\"")),
        "{log}"
    );
    // A subnet size that differs from the cluster's.
    let other = etcd.section("subnet_len = 25\ndial_timeout_secs = 1\nstart_timeout_secs = 3\n");
    let mut y = f.node_with("node-y", 0, 22, None, &peering, &other);
    let log = expect_refused(&mut y, 30);
    assert!(
        log.contains("etcd.subnet_len 25 differs from the cluster's 24 (/shimnet/config)"),
        "{log}"
    );
    // source = "etcd" without [etcd].
    let mut z = f.node_with("node-z", 0, 23, None, &peering, "");
    let log = expect_refused(&mut z, 30);
    assert!(
        log.contains("peering.source: \\\"etcd\\\" needs an [etcd] section")
            || log.contains("peering.source: \"etcd\" needs an [etcd] section"),
        "{log}"
    );

    // None of them changed anything: the reservations are a's and b's only.
    let res = etcd.ctl_ok(&["get", "/shimnet/subnets/", "--prefix", "--keys-only"]);
    let keys: Vec<&str> = res.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(keys.len(), 2, "{res}");
    assert_eq!(
        (a.owned_routes(), b.owned_routes()),
        routes_before,
        "nothing applied"
    );
    assert_eq!(route_dsts(&a), vec![sb.clone()]);
    assert_eq!(route_dsts(&b), vec![sa.clone()]);
}

#[test]
fn tls_and_credentials() {
    let _one = serial();
    let mut f = Fabric::new(3);
    let mut etcd = Etcd::with_tls(&mut f, 2);
    // Least privilege: user shimnet may read and write under /shimnet/ only.
    etcd.ctl_ok(&["user", "add", "root:rootpw"]);
    etcd.ctl_ok(&["role", "add", "shimnet"]);
    etcd.ctl_ok(&[
        "role",
        "grant-permission",
        "shimnet",
        "--prefix=true",
        "readwrite",
        "/shimnet/",
    ]);
    etcd.ctl_ok(&["user", "add", "shimnet:s3cret-pw"]);
    etcd.ctl_ok(&["user", "grant-role", "shimnet", "shimnet"]);
    etcd.ctl_ok(&["auth", "enable"]);
    etcd.auth = Some("root:rootpw".into());
    let pwdir = tempfile::tempdir().unwrap();
    let pwfile = pwdir.path().join("etcd-password");
    std::fs::write(&pwfile, "s3cret-pw\n").unwrap();
    let section = etcd.section(&format!(
        "username = \"shimnet\"\npassword_file = \"{}\"\nlease_ttl_secs = 10\ndial_timeout_secs = 2\nstart_timeout_secs = 10\n",
        pwfile.display()
    ));
    let peering = etcd_peering("auto", 2);
    let mut a = f.node_with("node-a", 0, 10, None, &peering, &section);
    let mut b = f.node_with("node-b", 1, 10, None, &peering, &section);
    a.start();
    b.start();
    wait_full_mesh(&[&a, &b], 30);
    let (ca, _) = a.container("a");
    let (_cb, ipb) = b.container("b");
    wait_for(30, "containers reach each other", || {
        ping_from(&ca, ipb, &[])
    });
    assert!(source(&a)["detail"]
        .as_str()
        .unwrap()
        .starts_with("https://"));
    let keys = etcd.ctl_ok(&["get", "/shimnet/", "--prefix", "--keys-only"]);
    assert!(keys.contains("/shimnet/nodes/node-a"), "{keys}");
    // A wrong password is refused, naming the key.
    let bad = etcd.section("username = \"shimnet\"\npassword = \"wrong\"\ndial_timeout_secs = 2\nstart_timeout_secs = 5\n");
    let mut w = f.node_with("node-w", 0, 11, None, &peering, &bad);
    let log = expect_refused(&mut w, 30);
    assert!(
        log.contains("etcd.username:") && log.contains("authentication failed"),
        "{log}"
    );
    // Without a client certificate the member refuses the connection: the start times out.
    let nocert = format!(
        "[etcd]\nendpoints = [{}]\nca_file = \"{}\"\nusername = \"shimnet\"\npassword = \"s3cret-pw\"\ndial_timeout_secs = 1\nstart_timeout_secs = 3\n",
        etcd.endpoints_toml(),
        etcd.tls.as_ref().unwrap().path("ca.pem").display()
    );
    let mut v = f.node_with("node-v", 0, 12, None, &peering, &nocert);
    let log = expect_refused(&mut v, 30);
    assert!(
        log.contains("etcd.endpoints: no member of https://"),
        "{log}"
    );
}
