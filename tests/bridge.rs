//! End-to-end tests of single-host bridge networks: a real shimnetd in its own "host" namespace,
//! containers as namespaces, an "outside" namespace behind the host. Run as root.

mod common;

use std::net::Ipv4Addr;

use common::*;
use nix::sys::signal::Signal;
use serde_json::json;

const NET: &str = "[[networks]]\nname = \"n1\"\nsubnet = \"10.10.0.0/24\"\n";

#[test]
fn attach_ping_detach() {
    let h = TestHost::new(NET);
    let (c1, c2) = (container("a"), container("b"));
    let e1 = h.attach("n1", &c1, json!({}));
    let e2 = h.attach("n1", &c2, json!({"ifname": "net0"}));
    assert_eq!(e1["gateway"], "10.10.0.1");
    assert_eq!(e1["key"]["ifname"], "eth0");
    assert_ne!(e1["ipv4"], e2["ipv4"]);
    assert!(e1["ipv4"].as_str().unwrap().ends_with("/24"));
    // Inside the container: the address, the MAC, lo up, default route via the gateway.
    let addr = sh(&["ip", "-n", c1.name(), "-o", "addr", "show", "dev", "eth0"]);
    assert!(addr.contains(e1["ipv4"].as_str().unwrap()), "{addr}");
    let link = sh(&["ip", "-n", c1.name(), "-o", "link", "show", "dev", "eth0"]);
    assert!(link.contains(e1["mac"].as_str().unwrap()), "{link}");
    assert!(sh(&["ip", "-n", c1.name(), "route"]).contains("default via 10.10.0.1 dev eth0"));
    assert!(sh(&["ip", "-n", c1.name(), "-o", "link", "show", "lo"]).contains("UP"));
    assert!(links_in(c2.name()).contains(&"net0".to_string()));
    // Host side: deterministic veth enslaved to the bridge.
    let host_veth = e1["host_ifname"].as_str().unwrap();
    assert!(h
        .ip(&["-o", "link", "show", host_veth])
        .contains("master n1"));
    assert!(ping(&c1, &ip_of(&e2)), "container to container");
    assert!(ping(&c1, "10.10.0.1"), "container to gateway");
    // Listing.
    let eps = h.call("GET", "/v1/networks/n1/endpoints", None);
    assert_eq!(eps.as_array().unwrap().len(), 2);
    // Detach is idempotent.
    assert_eq!(h.detach("n1", c1.name())["released"]["ipv4"], e1["ipv4"]);
    assert!(h.detach("n1", c1.name())["released"].is_null());
    h.call(
        "DELETE",
        &format!("/v1/networks/n1/endpoints/{}?ifname=net0", c2.name()),
        None,
    );
    eventually("host veths removed", || {
        !links_in(h.ns.name()).iter().any(|l| l.starts_with("snv"))
    });
    eventually("container end removed", || {
        !links_in(c1.name()).contains(&"eth0".to_string())
    });
    assert_eq!(h.call("GET", "/v1/endpoints", None), json!([]));
}

#[test]
fn dynamic_addresses_come_from_the_range_static_from_the_subnet() {
    let h = TestHost::new(
        "[[networks]]\nname = \"n1\"\nsubnet = \"10.10.0.0/24\"\nrange_start = \"10.10.0.200\"\nrange_end = \"10.10.0.201\"\n",
    );
    let cs: Vec<_> = (0..3).map(|i| container(&format!("r{i}"))).collect();
    assert_eq!(ip_of(&h.attach("n1", &cs[0], json!({}))), "10.10.0.200");
    assert_eq!(ip_of(&h.attach("n1", &cs[1], json!({}))), "10.10.0.201");
    let err = h
        .try_call(
            "POST",
            "/v1/networks/n1/endpoints",
            Some(json!({"container_id": cs[2].name(), "netns": cs[2].path()})),
        )
        .unwrap_err();
    assert!(err.to_string().contains("exhausted"), "{err}");
    assert_eq!(
        ip_of(&h.attach("n1", &cs[2], json!({"ip": "10.10.0.5"}))),
        "10.10.0.5"
    );
}

#[test]
fn released_address_is_not_handed_straight_back() {
    let h = TestHost::new(NET);
    let c1 = container("a");
    let first = ip_of(&h.attach("n1", &c1, json!({})));
    h.detach("n1", c1.name());
    let c2 = container("b");
    let second = ip_of(&h.attach("n1", &c2, json!({})));
    assert_ne!(first, second);
}

#[test]
fn static_ip_and_mac() {
    let h = TestHost::new(NET);
    let (c1, c2) = (container("a"), container("b"));
    let e = h.attach(
        "n1",
        &c1,
        json!({"ip": "10.10.0.77", "mac": "02:00:00:00:00:77"}),
    );
    assert_eq!(e["ipv4"], "10.10.0.77/24");
    assert_eq!(e["mac"], "02:00:00:00:00:77");
    assert!(sh(&["ip", "-n", c1.name(), "link", "show", "eth0"]).contains("02:00:00:00:00:77"));
    // The same static address for another container is refused and changes nothing.
    let err = h
        .try_call(
            "POST",
            "/v1/networks/n1/endpoints",
            Some(json!({"container_id": c2.name(), "netns": c2.path(), "ip": "10.10.0.77"})),
        )
        .unwrap_err();
    assert!(err.to_string().contains("10.10.0.77"), "{err}");
    assert!(!links_in(c2.name()).contains(&"eth0".to_string()));
    assert_eq!(
        h.call("GET", "/v1/endpoints", None)
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn nat_to_outside_shows_host_address() {
    let h = TestHost::new(NET);
    let c1 = container("a");
    h.attach("n1", &c1, json!({}));
    let seen = spawn_listener(h.outside.path(), h.outside_ip, 8080);
    assert!(
        connect_from(c1.path(), h.outside_ip, 8080),
        "container reaches the outside"
    );
    let peer = seen.recv().unwrap().expect("outside saw a connection");
    assert_eq!(
        peer.ip(),
        std::net::IpAddr::V4(h.host_ip),
        "masqueraded to the host's address"
    );
}

#[test]
fn no_masquerade_to_listed_destination() {
    let h = TestHost::new(
        "[[networks]]\nname = \"n1\"\nsubnet = \"10.10.0.0/24\"\nno_masquerade_to = [\"198.18.0.0/16\"]\n",
    );
    sh(&[
        "ip",
        "-n",
        h.outside.name(),
        "route",
        "add",
        "10.10.0.0/24",
        "via",
        &h.host_ip.to_string(),
    ]);
    let c1 = container("a");
    let e = h.attach("n1", &c1, json!({}));
    let seen = spawn_listener(h.outside.path(), h.outside_ip, 8081);
    assert!(connect_from(c1.path(), h.outside_ip, 8081));
    let peer = seen.recv().unwrap().expect("connection");
    assert_eq!(peer.ip().to_string(), ip_of(&e), "not masqueraded");
}

#[test]
fn icc_off_blocks_containers_but_not_gateway_or_outside() {
    let h = TestHost::new("[[networks]]\nname = \"n1\"\nsubnet = \"10.10.0.0/24\"\nicc = false\n");
    let (c1, c2) = (container("a"), container("b"));
    h.attach("n1", &c1, json!({}));
    let e2 = h.attach("n1", &c2, json!({}));
    assert!(
        !ping(&c1, &ip_of(&e2)),
        "icc=false must block container to container"
    );
    assert!(ping(&c1, "10.10.0.1"), "gateway still reachable");
    let seen = spawn_listener(h.outside.path(), h.outside_ip, 8082);
    assert!(connect_from(c1.path(), h.outside_ip, 8082));
    assert!(seen.recv().unwrap().is_some());
}

#[test]
fn two_networks_are_isolated() {
    let h = TestHost::new(
        "[[networks]]\nname = \"n1\"\nsubnet = \"10.10.0.0/24\"\n[[networks]]\nname = \"n2\"\nsubnet = \"10.11.0.0/24\"\n",
    );
    let (c1, c2) = (container("a"), container("b"));
    let e1 = h.attach("n1", &c1, json!({}));
    let e2 = h.attach("n2", &c2, json!({}));
    assert!(ping(&c1, "10.10.0.1"));
    assert!(ping(&c2, "10.11.0.1"));
    assert!(!ping(&c1, &ip_of(&e2)), "n1 must not reach n2");
    assert!(!ping(&c2, &ip_of(&e1)), "n2 must not reach n1");
}

#[test]
fn internal_network_has_no_outside_access() {
    let h =
        TestHost::new("[[networks]]\nname = \"n1\"\nsubnet = \"10.10.0.0/24\"\ninternal = true\n");
    let (c1, c2) = (container("a"), container("b"));
    h.attach("n1", &c1, json!({}));
    let e2 = h.attach("n1", &c2, json!({}));
    assert!(
        ping(&c1, &ip_of(&e2)),
        "containers on an internal network still talk"
    );
    let _seen = spawn_listener(h.outside.path(), h.outside_ip, 8083);
    assert!(
        !connect_from(c1.path(), h.outside_ip, 8083),
        "internal network reached the outside"
    );
    assert!(!ping(&c1, &h.outside_ip.to_string()));
}

#[test]
fn forwarding_survives_docker_style_forward_drop_and_br_netfilter() {
    let h = TestHost::new(NET);
    // What dockerd does on start, here inside the test's host namespace only.
    let ns = h.ns.name().to_string();
    sh(&[
        "ip", "netns", "exec", &ns, "iptables", "-P", "FORWARD", "DROP",
    ]);
    let brnf = std::path::Path::new("/proc/sys/net/bridge/bridge-nf-call-iptables").exists();
    if brnf {
        sh(&[
            "ip",
            "netns",
            "exec",
            &ns,
            "sysctl",
            "-qw",
            "net.bridge.bridge-nf-call-iptables=1",
        ]);
    } else {
        eprintln!("SKIPPED PART: bridge netfilter absent; testing FORWARD DROP only");
    }
    // The shim is installed when networks change; trigger a reconcile as the periodic loop would.
    h.call("POST", "/v1/reconcile", None);
    let (c1, c2) = (container("a"), container("b"));
    h.attach("n1", &c1, json!({}));
    let e2 = h.attach("n1", &c2, json!({}));
    assert!(ping(&c1, &ip_of(&e2)), "bridged traffic with FORWARD DROP");
    let seen = spawn_listener(h.outside.path(), h.outside_ip, 8084);
    assert!(
        connect_from(c1.path(), h.outside_ip, 8084),
        "routed traffic with FORWARD DROP"
    );
    assert!(seen.recv().unwrap().is_some());
}

#[test]
fn kill9_and_restart_keeps_allocations() {
    let mut h = TestHost::new(NET);
    let cs: Vec<_> = (0..3).map(|i| container(&format!("k{i}"))).collect();
    let before: Vec<_> = cs.iter().map(|c| h.attach("n1", c, json!({}))).collect();
    h.stop_with(Signal::SIGKILL);
    // Networking is untouched while the daemon is down.
    assert!(ping(&cs[0], &ip_of(&before[1])));
    h.start();
    let after = h.call("GET", "/v1/endpoints", None);
    for b in &before {
        assert!(
            after
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a["ipv4"] == b["ipv4"] && a["key"] == b["key"]),
            "{b} lost"
        );
    }
    let c = container("new");
    let e = h.attach("n1", &c, json!({}));
    assert!(
        before.iter().all(|b| b["ipv4"] != e["ipv4"]),
        "address handed out twice"
    );
    assert!(ping(&c, &ip_of(&before[0])));
}

#[test]
fn sigterm_keeps_networking_and_restart_detaches() {
    let mut h = TestHost::new(NET);
    let (c1, c2) = (container("a"), container("b"));
    h.attach("n1", &c1, json!({}));
    let e2 = h.attach("n1", &c2, json!({}));
    h.stop_with(Signal::SIGTERM);
    assert!(!h.socket.exists(), "socket removed on clean shutdown");
    assert!(
        ping(&c1, &ip_of(&e2)),
        "containers keep networking after SIGTERM"
    );
    h.start();
    assert!(ping(&c1, &ip_of(&e2)), "and after restart");
    h.detach("n1", c1.name());
    h.detach("n1", c2.name());
    assert_eq!(h.call("GET", "/v1/endpoints", None), json!([]));
}

#[test]
fn detach_after_namespace_vanished_releases_everything() {
    let h = TestHost::new(NET);
    let c1 = container("a");
    let id = c1.name().to_string();
    let e = h.attach("n1", &c1, json!({}));
    drop(c1);
    let r = h.detach("n1", &id);
    assert_eq!(r["released"]["ipv4"], e["ipv4"]);
    eventually("veth removed", || {
        !links_in(h.ns.name()).contains(&e["host_ifname"].as_str().unwrap().to_string())
    });
    assert_eq!(h.call("GET", "/v1/endpoints", None), json!([]));
}

#[test]
fn restart_reclaims_endpoints_whose_namespace_is_gone() {
    let mut h = TestHost::new(NET);
    let (c1, c2) = (container("a"), container("b"));
    let e1 = h.attach("n1", &c1, json!({}));
    h.attach("n1", &c2, json!({}));
    h.stop_with(Signal::SIGKILL);
    drop(c1); // as after a reboot: the namespace is gone
    h.start();
    let eps = h.call("GET", "/v1/endpoints", None);
    assert_eq!(eps.as_array().unwrap().len(), 1, "{eps}");
    assert_eq!(eps[0]["key"]["container_id"], c2.name());
    eventually("reclaimed veth removed", || {
        !links_in(h.ns.name()).contains(&e1["host_ifname"].as_str().unwrap().to_string())
    });
}

#[test]
fn restart_removes_owned_links_without_record() {
    let mut h = TestHost::new(NET);
    h.create_network(json!({"name": "tmp", "subnet": "10.12.0.0/24"}));
    h.stop_with(Signal::SIGKILL);
    // Forget the network behind the daemon's back: a fresh state dir, same kernel.
    std::fs::remove_dir_all(h.dir.path().join("state")).unwrap();
    h.start();
    assert!(
        !links_in(h.ns.name()).contains(&"tmp".to_string()),
        "orphan bridge removed"
    );
    assert!(
        links_in(h.ns.name()).contains(&"n1".to_string()),
        "declared network rebuilt"
    );
}

#[test]
fn network_lifecycle_leaves_nothing_behind() {
    let h = TestHost::new("");
    let before_links = links_in(h.ns.name());
    h.create_network(json!({"name": "lc", "subnet": "10.13.0.0/24", "mtu": 1400}));
    assert!(h.ip(&["link", "show", "lc"]).contains("mtu 1400"));
    assert!(h.nft_ruleset().contains("lc") || h.iptables_save().contains("shimnet:lc"));
    let c = container("a");
    let e = h.attach(
        "lc",
        &c,
        json!({"ports": [{"host_port": 18080, "container_port": 80}]}),
    );
    assert!(sh(&["ip", "-n", c.name(), "link", "show", "eth0"]).contains("mtu 1400"));
    // A network with endpoints is not deleted without force.
    let err = h.try_call("DELETE", "/v1/networks/lc", None).unwrap_err();
    assert!(
        matches!(
            err,
            shimnet_api::client::ClientError::Api { status: 409, .. }
        ),
        "{err}"
    );
    h.detach("lc", c.name());
    h.call("DELETE", "/v1/networks/lc", None);
    eventually("no links left behind", || {
        links_in(h.ns.name()) == before_links
    });
    let rules = h.nft_ruleset();
    assert!(
        !rules.contains("\"lc\"") && !rules.contains(&ip_of(&e)),
        "nft rules left behind:\n{rules}"
    );
    assert!(
        !h.iptables_save().contains("shimnet:lc"),
        "iptables rules left behind"
    );
    assert_eq!(h.call("GET", "/v1/networks", None), json!([]));
}

#[test]
fn bad_input_gets_clear_errors_and_changes_nothing() {
    let h = TestHost::new(NET);
    let cases = [
        (
            json!({"name": "x", "subnet": "10.20.0.0/33"}),
            400,
            Some("subnet"),
        ),
        (
            json!({"name": "x", "subnet": "10.20.0.0/24", "gateway": "10.21.0.1"}),
            400,
            Some("gateway"),
        ),
        (
            json!({"name": "bad name", "subnet": "10.20.0.0/24"}),
            400,
            Some("name"),
        ),
        (
            json!({"name": "x", "subnet": "10.20.0.0/24", "mtu": 10}),
            400,
            Some("mtu"),
        ),
        (
            json!({"name": "x", "subnet": "10.20.0.0/24", "colour": "red"}),
            400,
            Some("colour"),
        ),
        (json!({"name": "n1", "subnet": "10.20.0.0/24"}), 409, None),
        (json!({"name": "y", "subnet": "10.10.0.128/25"}), 409, None),
    ];
    for (body, status, field) in cases {
        match h.try_call("POST", "/v1/networks", Some(body.clone())) {
            Err(shimnet_api::client::ClientError::Api {
                status: s,
                field: f,
                code,
                ..
            }) => {
                assert_eq!(s, status, "{body}");
                assert_eq!(f.as_deref(), field, "{body}");
                assert!(!code.is_empty());
            }
            other => panic!("{body}: {other:?}"),
        }
    }
    let c = container("a");
    let bad_attach = [
        (
            json!({"container_id": c.name(), "netns": "/run/netns/does-not-exist"}),
            400,
            "netns",
        ),
        (
            json!({"container_id": c.name(), "netns": c.path(), "ip": "10.99.0.5"}),
            400,
            "ip",
        ),
        (
            json!({"container_id": c.name(), "netns": c.path(), "ifname": "x/y"}),
            400,
            "ifname",
        ),
        (
            json!({"container_id": "", "netns": c.path()}),
            400,
            "container_id",
        ),
    ];
    for (body, status, field) in bad_attach {
        match h.try_call("POST", "/v1/networks/n1/endpoints", Some(body.clone())) {
            Err(shimnet_api::client::ClientError::Api {
                status: s,
                field: f,
                ..
            }) => {
                assert_eq!((s, f.as_deref()), (status, Some(field)), "{body}");
            }
            other => panic!("{body}: {other:?}"),
        }
    }
    match h.try_call(
        "POST",
        "/v1/networks/nope/endpoints",
        Some(json!({"container_id": "c", "netns": c.path()})),
    ) {
        Err(shimnet_api::client::ClientError::Api { status: 404, .. }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(
        h.call("GET", "/v1/networks", None)
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(h.call("GET", "/v1/endpoints", None), json!([]));
    assert_eq!(links_in(c.name()), vec!["lo".to_string()]);
    let r = h.client().request("PUT", "/v1/networks", None).unwrap();
    assert_eq!(r.status, 405);
    let r = h.client().request("GET", "/v2/whatever", None).unwrap();
    assert_eq!(r.status, 404);
}

#[test]
fn published_port_reachable_from_outside_host_and_sibling() {
    let h =
        TestHost::new("[[networks]]\nname = \"n1\"\nsubnet = \"10.10.0.0/24\"\nhairpin = true\n");
    let (srv, sib) = (container("srv"), container("sib"));
    let e = h.attach(
        "n1",
        &srv,
        json!({"ports": [{"host_port": 18090, "container_port": 8080}]}),
    );
    h.attach("n1", &sib, json!({}));
    let srv_ip: Ipv4Addr = ip_of(&e).parse().unwrap();
    for (from, target, what) in [
        (h.outside.path(), h.host_ip, "outside"),
        (h.ns.path(), h.host_ip, "host"),
        (h.ns.path(), Ipv4Addr::LOCALHOST, "host loopback"),
        (sib.path(), h.host_ip, "sibling (hairpin)"),
    ] {
        let seen = spawn_listener(srv.path(), srv_ip, 8080);
        assert!(
            connect_from(from, target, 18090),
            "published port not reachable from {what}"
        );
        assert!(seen.recv().unwrap().is_some(), "{what}");
    }
    // A second container cannot claim the same host port.
    let other = container("o");
    let err = h
        .try_call("POST", "/v1/networks/n1/endpoints", Some(json!({"container_id": other.name(), "netns": other.path(), "ports": [{"host_port": 18090, "container_port": 80}]})))
        .unwrap_err();
    assert!(
        matches!(
            err,
            shimnet_api::client::ClientError::Api { status: 409, .. }
        ),
        "{err}"
    );
    h.detach("n1", srv.name());
    let ruleset = h.nft_ruleset();
    assert!(
        !ruleset.contains(&srv_ip.to_string()),
        "port rule left after detach:\n{ruleset}"
    );
    assert!(
        !connect_from(h.outside.path(), h.host_ip, 18090),
        "port still published after detach"
    );
}

#[test]
fn sighup_reload_creates_new_declared_network() {
    let mut h = TestHost::new(NET);
    let mut cfg = std::fs::read_to_string(&h.config).unwrap();
    cfg.push_str("[[networks]]\nname = \"n2\"\nsubnet = \"10.14.0.0/24\"\n");
    std::fs::write(&h.config, cfg).unwrap();
    let pid = nix::unistd::Pid::from_raw(h.daemon.as_ref().unwrap().id() as i32);
    nix::sys::signal::kill(pid, Signal::SIGHUP).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while h.try_call("GET", "/v1/networks/n2", None).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "n2 not created on SIGHUP: {}",
            h.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    h.stop_with(Signal::SIGTERM);
}

#[test]
fn iptables_backend_end_to_end() {
    if !try_sh(&["iptables", "--version"]) {
        eprintln!("SKIPPED: iptables binary absent; the iptables backend is not verified here");
        return;
    }
    let h = TestHost::with_args(NET, &["--firewall", "iptables"]);
    assert_eq!(
        h.call("GET", "/v1/status", None)["status"]["firewall"],
        "iptables"
    );
    let (c1, c2) = (container("a"), container("b"));
    h.attach("n1", &c1, json!({}));
    let e2 = h.attach(
        "n1",
        &c2,
        json!({"ports": [{"host_port": 18095, "container_port": 8080}]}),
    );
    assert!(ping(&c1, &ip_of(&e2)));
    let seen = spawn_listener(h.outside.path(), h.outside_ip, 8085);
    assert!(connect_from(c1.path(), h.outside_ip, 8085));
    assert_eq!(
        seen.recv().unwrap().unwrap().ip(),
        std::net::IpAddr::V4(h.host_ip)
    );
    let srv = spawn_listener(c2.path(), ip_of(&e2).parse().unwrap(), 8080);
    assert!(
        connect_from(h.outside.path(), h.host_ip, 18095),
        "published port via iptables"
    );
    assert!(srv.recv().unwrap().is_some());
    h.detach("n1", c1.name());
    h.detach("n1", c2.name());
    h.call("DELETE", "/v1/networks/n1", None);
    assert!(
        !h.iptables_save().contains("shimnet:"),
        "iptables rules left:\n{}",
        h.iptables_save()
    );
}

#[test]
fn embedded_default_configuration_and_cli_check() {
    if std::path::Path::new(shimnet::config::DEFAULT_CONFIG_PATH).exists() {
        panic!(
            "{} exists on this machine; this test needs the embedded default",
            shimnet::config::DEFAULT_CONFIG_PATH
        );
    }
    let mut h = TestHost::new("");
    h.stop_with(Signal::SIGKILL);
    // Restart without --config: the embedded default, with paths overridden by flags.
    let state = h.dir.path().join("state2");
    let plugins = h.dir.path().join("plugins").display().to_string();
    let child = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            h.ns.name(),
            env!("CARGO_BIN_EXE_shimnetd"),
            "--state-dir",
        ])
        .arg(&state)
        .arg("--api-socket")
        .arg(&h.socket)
        .args(["--plugin-dir", &plugins])
        .stderr(
            std::fs::OpenOptions::new()
                .append(true)
                .open(h.dir.path().join("shimnetd.log"))
                .unwrap(),
        )
        .spawn()
        .unwrap();
    h.daemon = Some(child);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while h.try_call("GET", "/v1/networks/shimnet0", None).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "default network not created: {}",
            h.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let n = h.call("GET", "/v1/networks/shimnet0", None);
    assert_eq!(n["network"]["subnet"], "10.87.0.0/16");
    assert!(links_in(h.ns.name()).contains(&"shimnet0".to_string()));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_shimnetctl"))
        .arg("--socket")
        .arg(&h.socket)
        .arg("check")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "check failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("ping peer") && text.contains("ping gateway"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("bridge") && l.contains("yes")),
        "{text}"
    );
    assert_eq!(
        h.call("GET", "/v1/endpoints", None),
        json!([]),
        "probe cleaned up"
    );
}

#[test]
fn dual_stack_network() {
    let h = TestHost::new(
        "[[networks]]\nname = \"n6\"\nsubnet = \"10.15.0.0/24\"\nsubnet6 = \"fd00:15::/64\"\n",
    );
    let (c1, c2) = (container("a"), container("b"));
    let e1 = h.attach("n6", &c1, json!({}));
    let e2 = h.attach("n6", &c2, json!({"ip6": "fd00:15::99"}));
    assert_eq!(e2["ipv6"], "fd00:15::99/64");
    assert_eq!(e1["gateway6"], "fd00:15::1");
    let ip6 = e1["ipv6"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    assert!(sh(&["ip", "-n", c1.name(), "-6", "route"]).contains("default via fd00:15::1"));
    assert!(ping(&c2, &ip6), "IPv6 container to container");
    assert!(ping(&c2, "fd00:15::1"), "IPv6 container to gateway");
    assert!(ping(&c2, &ip_of(&e1)), "IPv4 still works");
}

#[test]
fn subnet_overlapping_a_host_interface_is_refused() {
    let h = TestHost::new("");
    // The host's uplink carries 198.18.x.1/30.
    let err = h
        .try_call(
            "POST",
            "/v1/networks",
            Some(json!({"name": "clash", "subnet": "198.18.0.0/16"})),
        )
        .unwrap_err();
    assert!(
        matches!(&err, shimnet_api::client::ClientError::Api { status: 409, message, .. } if message.contains("host interface")),
        "{err}"
    );
    assert!(!links_in(h.ns.name()).contains(&"clash".to_string()));
}
