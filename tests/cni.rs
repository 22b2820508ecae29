//! End-to-end tests of the `shimnet` CNI plugin: the built binary, run with `CNI_*` and stdin
//! against a real shimnetd in a test "host" namespace, containers as namespaces. Run as root.

mod cni_support;
mod common;

use std::collections::HashSet;
use std::sync::Arc;

use cni_support::*;
use common::*;
use serde_json::{json, Value};

const NO_NETWORKS: &str = "";

fn host() -> TestHost {
    TestHost::new(NO_NETWORKS)
}

/// A fresh network configuration on a per-test bridge name.
fn net_conf(h: &TestHost, version: &str, subnet: &str) -> Value {
    let name = tag("cn");
    conf(version, &name, &h.socket, &name, subnet)
}

fn add_ok(call: &Call, c: &Value) -> Value {
    let o = shimnet("ADD", call, c);
    assert_eq!(o.code, 0, "ADD failed: {:?}", o);
    o.out
}

fn endpoints(h: &TestHost) -> Vec<Value> {
    h.call("GET", "/v1/endpoints", None)
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn add_check_del_in_every_version() {
    let h = host();
    for (i, v) in ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]
        .into_iter()
        .enumerate()
    {
        let c = net_conf(&h, v, &format!("10.60.{i}.0/24"));
        let ns = container("v");
        let call = Call::new(ns.name(), &ns.path().display().to_string());
        let r = add_ok(&call, &c);
        assert_eq!(r["cniVersion"], v);
        let ip = &r["ips"][0];
        assert_eq!(ip["gateway"], format!("10.60.{i}.1"));
        assert_eq!(ip["interface"], 2);
        assert_eq!(ip.get("version").is_some(), v.starts_with("0."), "{v}: {r}");
        assert_eq!(r["interfaces"][0]["name"], c["bridge"]);
        assert_eq!(r["interfaces"][2]["name"], "eth0");
        assert_eq!(r["interfaces"][2]["sandbox"], call.netns);
        assert_eq!(r["interfaces"][2].get("mtu").is_some(), v == "1.1.0");
        assert_eq!(r["routes"], json!([{"dst": "0.0.0.0/0"}]));
        // The kernel agrees with the result.
        let addr = ip["address"].as_str().unwrap();
        assert!(sh(&["ip", "-n", ns.name(), "-o", "addr", "show", "dev", "eth0"]).contains(addr));
        assert!(sh(&["ip", "-n", ns.name(), "link", "show", "eth0"])
            .contains(r["interfaces"][2]["mac"].as_str().unwrap()));
        assert!(ping(&ns, &format!("10.60.{i}.1")));
        // ADD again (a runtime retry) returns the same address.
        assert_eq!(add_ok(&call, &c)["ips"][0]["address"], ip["address"]);
        // CHECK with the ADD result as prevResult (0.4.0+), refused before 0.4.0.
        let mut with_prev = c.clone();
        with_prev["prevResult"] = r.clone();
        let o = shimnet("CHECK", &call, &with_prev);
        if v.starts_with("0.3") {
            assert_eq!(o.cni_code(), Some(1), "{o:?}");
        } else {
            assert_eq!(o.code, 0, "{o:?}");
        }
        // DEL twice, both succeed; everything is gone.
        assert_eq!(shimnet("DEL", &call, &with_prev).code, 0);
        assert_eq!(shimnet("DEL", &call, &with_prev).code, 0);
        eventually("container end removed", || {
            !links_in(ns.name()).contains(&"eth0".to_string())
        });
    }
    assert!(endpoints(&h).is_empty());
    eventually("host veths removed", || {
        !links_in(h.ns.name()).iter().any(|l| l.starts_with("snv"))
    });
}

#[test]
fn version_command_and_error_codes() {
    let h = host();
    let c = net_conf(&h, "1.0.0", "10.61.0.0/24");
    let ns = container("e");
    let call = Call::new(ns.name(), &ns.path().display().to_string());
    // VERSION echoes the asked version and lists what shimnet speaks.
    let v = exec(
        &plugin(),
        None,
        &[("CNI_COMMAND", "VERSION")],
        br#"{"cniVersion":"1.0.0"}"#,
    );
    assert_eq!(v.code, 0);
    assert_eq!(
        v.out,
        json!({"cniVersion": "1.0.0", "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]})
    );
    // 6: not JSON.
    let o = exec(
        &plugin(),
        None,
        &[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "x"),
            ("CNI_NETNS", "/run/netns/x"),
            ("CNI_IFNAME", "eth0"),
        ],
        b"{nope",
    );
    assert_eq!(o.cni_code(), Some(6), "{o:?}");
    // 4: env missing or bad.
    let o = exec(
        &plugin(),
        None,
        &[("CNI_COMMAND", "ADD")],
        c.to_string().as_bytes(),
    );
    assert_eq!(o.cni_code(), Some(4), "{o:?}");
    assert_eq!(
        o.out["cniVersion"], "1.0.0",
        "error labelled with the config's version"
    );
    let o = exec(
        &plugin(),
        None,
        &[("CNI_COMMAND", "BOGUS")],
        c.to_string().as_bytes(),
    );
    assert_eq!(o.cni_code(), Some(4));
    // 1: incompatible version (config, or negotiated from cniVersions).
    let mut old = c.clone();
    old["cniVersion"] = json!("0.2.0");
    assert_eq!(shimnet("ADD", &call, &old).cni_code(), Some(1));
    let mut list = c.clone();
    list.as_object_mut().unwrap().remove("cniVersion");
    list["cniVersions"] = json!(["0.2.0", "9.0.0"]);
    assert_eq!(shimnet("ADD", &call, &list).cni_code(), Some(1));
    list["cniVersions"] = json!(["0.4.0", "1.0.0", "2.0.0"]);
    let r = add_ok(&call, &list);
    assert_eq!(r["cniVersion"], "1.0.0", "newest common version chosen");
    assert_eq!(shimnet("DEL", &call, &list).code, 0);
    // 7: invalid configuration, saying what to fix.
    let mut bad = c.clone();
    bad["vlan"] = json!(100);
    let o = shimnet("ADD", &call, &bad);
    assert_eq!(o.cni_code(), Some(7));
    assert!(o.out["msg"].as_str().unwrap().contains("vlan"), "{o:?}");
    let mut bad = c.clone();
    bad["mtu"] = json!("big");
    assert_eq!(shimnet("ADD", &call, &bad).cni_code(), Some(7));
    let mut bad = c.clone();
    bad["ipam"]["ranges"] = json!([[{"subnet": "10.61.0.0/33"}]]);
    assert_eq!(shimnet("ADD", &call, &bad).cni_code(), Some(7));
    // Daemon refuses (bad bridge name) → 7 naming the field.
    let mut bad = c.clone();
    bad["bridge"] = json!("much-too-long-bridge");
    let o = shimnet("ADD", &call, &bad);
    assert_eq!(o.cni_code(), Some(7), "{o:?}");
    assert!(o.out["msg"].as_str().unwrap().contains("bridge"), "{o:?}");
    // 102: the `network` key names no daemon network.
    let ext = json!({"cniVersion": "1.0.0", "name": "x", "type": "shimnet", "daemonSocket": h.socket, "network": "nosuchnet"});
    let o = shimnet("ADD", &call, &ext);
    assert_eq!(o.cni_code(), Some(102), "{o:?}");
    // 101: a static address another container holds.
    let r = add_ok(&call, &c);
    let taken = r["ips"][0]["address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let ns2 = container("e");
    let mut call2 = Call::new(ns2.name(), &ns2.path().display().to_string());
    call2.args = format!("IgnoreUnknown=1;IP={taken}");
    let o = shimnet("ADD", &call2, &c);
    assert_eq!(o.cni_code(), Some(101), "{o:?}");
    assert!(o.out["msg"].as_str().unwrap().contains(&taken), "{o:?}");
    // 105: CHECK on drift; 3: CHECK of an unknown attachment.
    let o = shimnet("CHECK", &call2, &c);
    assert_eq!(o.cni_code(), Some(3), "{o:?}");
    // STATUS: 0 while the daemon runs.
    let mut c11 = c.clone();
    c11["cniVersion"] = json!("1.1.0");
    let st = exec(
        &plugin(),
        None,
        &[("CNI_COMMAND", "STATUS")],
        c11.to_string().as_bytes(),
    );
    assert_eq!((st.code, &st.out), (0, &Value::Null), "{st:?}");
    assert_eq!(shimnet("DEL", &call, &c).code, 0);
    // Unreachable daemon: 11 on ADD, 50 on STATUS.
    let mut gone = c11.clone();
    gone["daemonSocket"] = json!(h.dir.path().join("nope.sock"));
    let o = shimnet("ADD", &call, &gone);
    assert_eq!(o.cni_code(), Some(11), "{o:?}");
    assert!(o.out["msg"].as_str().unwrap().contains("nope.sock"));
    let st = exec(
        &plugin(),
        None,
        &[("CNI_COMMAND", "STATUS")],
        gone.to_string().as_bytes(),
    );
    assert_eq!(st.cni_code(), Some(50), "{st:?}");
}

#[test]
fn check_reports_drift() {
    // CHECK must see the drift before anything repairs it: no event-driven repair here (it
    // builds a deleted pair again within milliseconds; tests/repair.rs covers that).
    let h = TestHost::new("repair_on_events = false\n");
    let c = net_conf(&h, "1.0.0", "10.62.0.0/24");
    let ns = container("d");
    let call = Call::new(ns.name(), &ns.path().display().to_string());
    let r = add_ok(&call, &c);
    let mut with_prev = c.clone();
    with_prev["prevResult"] = r.clone();
    assert_eq!(shimnet("CHECK", &call, &with_prev).code, 0);
    // Remove the address inside the container.
    let addr = r["ips"][0]["address"].as_str().unwrap();
    sh(&["ip", "-n", ns.name(), "addr", "del", addr, "dev", "eth0"]);
    let o = shimnet("CHECK", &call, &with_prev);
    assert_eq!(o.cni_code(), Some(105), "{o:?}");
    assert!(
        o.out["msg"]
            .as_str()
            .unwrap()
            .contains(addr.split('/').next().unwrap()),
        "{o:?}"
    );
    // A prevResult that does not list our address is drift too.
    let mut other = Call::new("other", &ns.path().display().to_string());
    other.ifname = "eth1".into();
    let fresh = add_ok(&other, &c);
    let mut wrong = c.clone();
    wrong["prevResult"] = fresh;
    sh(&["ip", "-n", ns.name(), "addr", "add", addr, "dev", "eth0"]);
    let o = shimnet("CHECK", &call, &wrong);
    assert_eq!(o.cni_code(), Some(105), "{o:?}");
    assert!(o.out["msg"].as_str().unwrap().contains("prevResult"));
    // Delete the container end entirely.
    sh(&["ip", "-n", ns.name(), "link", "del", "eth0"]);
    let o = shimnet("CHECK", &call, &with_prev);
    assert_eq!(o.cni_code(), Some(105), "{o:?}");
    assert!(o.out["msg"].as_str().unwrap().contains("missing"), "{o:?}");
}

#[test]
fn del_cleans_up_after_vanished_netns_and_daemon_restart() {
    // CHECK must see the port rules missing before anything restores them: no event-driven
    // repair here (it would put the table back within milliseconds; tests/repair.rs covers it).
    let mut h = TestHost::new("repair_on_events = false\n");
    let mut c = net_conf(&h, "1.0.0", "10.63.0.0/24");
    c["capabilities"] = json!({"portMappings": true});
    c["runtimeConfig"] =
        json!({"portMappings": [{"hostPort": 18180, "containerPort": 80, "protocol": "tcp"}]});
    let ns = container("p");
    let call = Call::new(ns.name(), &ns.path().display().to_string());
    let r = add_ok(&call, &c);
    // The published port works from outside.
    let ip: std::net::Ipv4Addr = r["ips"][0]["address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let seen = spawn_listener(ns.path(), ip, 80);
    assert!(
        connect_from(h.outside.path(), h.host_ip, 18180),
        "published port reachable from outside"
    );
    assert!(seen.recv().unwrap().is_some());
    let rules = |h: &TestHost| format!("{}{}", h.nft_ruleset(), h.iptables_save());
    assert!(rules(&h).contains("18180"), "port rule installed");
    // CHECK passes, and catches the rules' removal.
    assert_eq!(shimnet("CHECK", &call, &c).code, 0);
    if h.nft_ruleset().contains("table inet shimnet") {
        sh(&[
            "ip",
            "netns",
            "exec",
            h.ns.name(),
            "nft",
            "delete",
            "table",
            "inet",
            "shimnet",
        ]);
        let o = shimnet("CHECK", &call, &c);
        assert_eq!(o.cni_code(), Some(105), "{o:?}");
        assert!(
            o.out["msg"].as_str().unwrap().contains("port rules"),
            "{o:?}"
        );
        h.call("POST", "/v1/reconcile", None);
        assert_eq!(
            shimnet("CHECK", &call, &c).code,
            0,
            "reconcile repaired the rules"
        );
    } else {
        eprintln!("SKIPPED: rule-drift CHECK (daemon not on nftables)");
    }
    // Daemon restart, namespace gone, DEL without a netns and without the port mappings resent.
    h.stop_with(nix::sys::signal::Signal::SIGKILL);
    h.start();
    let path = ns.path().to_path_buf();
    drop(ns);
    assert!(!path.exists());
    let mut del_conf = c.clone();
    del_conf.as_object_mut().unwrap().remove("runtimeConfig");
    let empty = Call::new(&call.container_id, "");
    assert_eq!(shimnet("DEL", &empty, &del_conf).code, 0);
    assert_eq!(shimnet("DEL", &empty, &del_conf).code, 0);
    assert_eq!(
        shimnet("DEL", &call, &del_conf).code,
        0,
        "vanished netns path"
    );
    assert!(endpoints(&h).is_empty());
    assert!(
        !rules(&h).contains("18180"),
        "port rule removed: {}",
        rules(&h)
    );
    eventually("host veths removed", || {
        !links_in(h.ns.name()).iter().any(|l| l.starts_with("snv"))
    });
}

#[test]
fn gc_keeps_only_valid_attachments() {
    let h = host();
    let mut c = net_conf(&h, "1.1.0", "10.64.0.0/24");
    let nss: Vec<_> = (0..3).map(|_| container("g")).collect();
    for ns in &nss {
        add_ok(&Call::new(ns.name(), &ns.path().display().to_string()), &c);
    }
    // Another network's attachment is not this GC's business.
    let other = net_conf(&h, "1.1.0", "10.64.1.0/24");
    let mut second = Call::new(nss[2].name(), &nss[2].path().display().to_string());
    second.ifname = "eth1".into();
    add_ok(&second, &other);
    c["cni.dev/valid-attachments"] = json!([{"containerID": nss[0].name(), "ifname": "eth0"}]);
    let o = exec(
        &plugin(),
        None,
        &[("CNI_COMMAND", "GC"), ("CNI_PATH", REF_DIR)],
        c.to_string().as_bytes(),
    );
    assert_eq!(o.code, 0, "{o:?}");
    let left: Vec<String> = endpoints(&h)
        .iter()
        .map(|e| {
            format!(
                "{}/{}",
                e["key"]["network"].as_str().unwrap(),
                e["key"]["container_id"].as_str().unwrap()
            )
        })
        .collect();
    let name = c["name"].as_str().unwrap();
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(left.contains(&format!("{name}/{}", nss[0].name())));
    assert!(left.contains(&format!(
        "{}/{}",
        other["name"].as_str().unwrap(),
        nss[2].name()
    )));
    eventually("removed containers lose eth0", || {
        !links_in(nss[1].name()).contains(&"eth0".to_string())
    });
    // GC of a network the daemon does not have succeeds.
    let mut unknown = c.clone();
    unknown["name"] = json!("nosuchnet");
    assert_eq!(
        exec(
            &plugin(),
            None,
            &[("CNI_COMMAND", "GC")],
            unknown.to_string().as_bytes()
        )
        .code,
        0
    );
}

#[test]
fn chains_with_reference_plugins() {
    for p in ["portmap", "tuning", "firewall", "bandwidth"] {
        if !std::path::Path::new(REF_DIR).join(p).is_file() {
            eprintln!("SKIPPED: reference plugin {p} not installed (containernetworking-plugins)");
            return;
        }
    }
    let h = host();
    let name = tag("ch");
    let list = json!({
        "cniVersion": "1.0.0",
        "name": name,
        "plugins": [
            {"type": "shimnet", "daemonSocket": h.socket, "bridge": name, "ipMasq": true,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.65.0.0/24"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
            {"type": "tuning", "sysctl": {"net.ipv4.conf.eth0.accept_redirects": "0", "net.core.somaxconn": "1234"}},
            {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true,
             "runtimeConfig": {"portMappings": [{"hostPort": 18281, "containerPort": 81, "protocol": "tcp"}]}},
            {"type": "firewall", "backend": "iptables"},
            {"type": "bandwidth", "capabilities": {"bandwidth": true},
             "runtimeConfig": {"bandwidth": {"ingressRate": 100000000, "ingressBurst": 1000000, "egressRate": 100000000, "egressBurst": 1000000}}}
        ]
    });
    let ns = container("ch");
    let call = Call::new(ns.name(), &ns.path().display().to_string());
    let result = match run_chain("ADD", &call, &list, h.ns.name(), None) {
        Ok(r) => r,
        Err(o)
            if o.err.contains("ifb")
                || o.out["msg"].as_str().is_some_and(|m| m.contains("ifb")) =>
        {
            eprintln!("SKIPPED: bandwidth plugin needs the ifb module: {o:?}");
            return;
        }
        Err(o) => panic!("chain ADD failed: {o:?}\n{}", h.log()),
    };
    assert_eq!(result["cniVersion"], "1.0.0");
    assert_eq!(result["interfaces"][2]["sandbox"], call.netns);
    // tuning applied its sysctl inside the container.
    let v = sh(&[
        "ip",
        "netns",
        "exec",
        ns.name(),
        "sysctl",
        "-n",
        "net.core.somaxconn",
    ]);
    assert_eq!(v.trim(), "1234");
    // portmap's DNAT (in the host namespace) reaches the container from outside.
    let ip: std::net::Ipv4Addr = result["ips"][0]["address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let seen = spawn_listener(ns.path(), ip, 81);
    assert!(
        connect_from(h.outside.path(), h.host_ip, 18281),
        "portmap DNAT through shimnet's bridge"
    );
    assert!(seen.recv().unwrap().is_some());
    // bandwidth shaped the host veth shimnet reported.
    let host_veth = result["interfaces"][1]["name"].as_str().unwrap();
    assert!(h.ip(&["link", "show", host_veth]).contains(host_veth));
    let qdisc = sh(&[
        "ip",
        "netns",
        "exec",
        h.ns.name(),
        "tc",
        "qdisc",
        "show",
        "dev",
        host_veth,
    ]);
    assert!(
        qdisc.contains("tbf") || qdisc.contains("ingress"),
        "{qdisc}"
    );
    // CHECK through the chain, then DEL in reverse order removes everyone's state.
    // (portmap 1.1's CHECK looks for an IPv6 DNAT chain even on IPv4-only results and fails, so
    // it is left out of the CHECK pass.)
    let mut check_list = list.clone();
    check_list["plugins"]
        .as_array_mut()
        .unwrap()
        .retain(|p| p["type"] != "portmap");
    run_chain("CHECK", &call, &check_list, h.ns.name(), Some(&result))
        .unwrap_or_else(|o| panic!("chain CHECK: {o:?}"));
    run_chain("DEL", &call, &list, h.ns.name(), Some(&result))
        .unwrap_or_else(|o| panic!("chain DEL: {o:?}"));
    run_chain("DEL", &call, &list, h.ns.name(), Some(&result))
        .unwrap_or_else(|o| panic!("second chain DEL: {o:?}"));
    assert!(endpoints(&h).is_empty());
    assert!(!h.iptables_save().contains("18281"), "portmap rules gone");
    eventually("host veth removed", || {
        !links_in(h.ns.name()).iter().any(|l| l.starts_with("snv"))
    });
}

#[test]
fn shimnet_after_another_plugin_keeps_its_result() {
    let h = host();
    let c = net_conf(&h, "1.0.0", "10.66.0.0/24");
    let ns = container("pr");
    let call = Call::new(ns.name(), &ns.path().display().to_string());
    let prev = json!({"cniVersion": "1.0.0", "interfaces": [{"name": "lo", "sandbox": call.netns}],
        "ips": [{"address": "127.0.0.1/8", "interface": 0}], "dns": {"nameservers": ["192.0.2.53"]}});
    let mut chained = c.clone();
    chained["prevResult"] = prev;
    let r = add_ok(&call, &chained);
    assert_eq!(r["interfaces"][0]["name"], "lo");
    assert_eq!(r["interfaces"][3]["name"], "eth0");
    assert_eq!(r["ips"][0]["address"], "127.0.0.1/8");
    assert_eq!(r["ips"][1]["interface"], 3);
    assert_eq!(r["dns"]["nameservers"][0], "192.0.2.53");
}

#[test]
fn attach_to_existing_daemon_network() {
    let h = TestHost::new("[[networks]]\nname = \"shared0\"\nsubnet = \"10.67.0.0/24\"\n");
    let ns = container("x");
    let call = Call::new(ns.name(), &ns.path().display().to_string());
    let c = json!({"cniVersion": "1.0.0", "name": "podman-facing", "type": "shimnet", "daemonSocket": h.socket, "network": "shared0"});
    let r = add_ok(&call, &c);
    assert!(r["ips"][0]["address"]
        .as_str()
        .unwrap()
        .starts_with("10.67.0."));
    assert_eq!(r["interfaces"][0]["name"], "shared0");
    assert_eq!(endpoints(&h)[0]["key"]["network"], "shared0");
    assert_eq!(shimnet("DEL", &call, &c).code, 0);
    assert!(endpoints(&h).is_empty());
}

#[test]
fn static_ip_and_mac_from_capabilities_and_args() {
    let h = host();
    let mut c = net_conf(&h, "1.0.0", "10.68.0.0/24");
    let (a, b) = (container("s"), container("s"));
    let mut ca = Call::new(a.name(), &a.path().display().to_string());
    ca.args = "IgnoreUnknown=1;K8S_POD_NAME=x;MAC=02:00:00:00:00:77;IP=10.68.0.77".into();
    let r = add_ok(&ca, &c);
    assert_eq!(r["ips"][0]["address"], "10.68.0.77/24");
    assert_eq!(r["interfaces"][2]["mac"], "02:00:00:00:00:77");
    c["runtimeConfig"] = json!({"ips": ["10.68.0.88/24"], "mac": "02:00:00:00:00:88"});
    let r = add_ok(&Call::new(b.name(), &b.path().display().to_string()), &c);
    assert_eq!(r["ips"][0]["address"], "10.68.0.88/24");
    assert!(sh(&["ip", "-n", b.name(), "link", "show", "eth0"]).contains("02:00:00:00:00:88"));
    assert!(ping(&a, "10.68.0.88"));
}

#[test]
fn delegates_static_ipam() {
    if !std::path::Path::new(REF_DIR).join("static").is_file() {
        eprintln!("SKIPPED: reference static IPAM plugin not installed");
        return;
    }
    let h = host();
    let name = tag("st");
    let c = json!({"cniVersion": "1.0.0", "name": name, "type": "shimnet", "daemonSocket": h.socket, "bridge": name,
        "ipam": {"type": "static", "addresses": [{"address": "10.69.0.42/24", "gateway": "10.69.0.1"}]}});
    let ns = container("st");
    let call = Call::new(ns.name(), &ns.path().display().to_string());
    let r = add_ok(&call, &c);
    assert_eq!(r["ips"][0]["address"], "10.69.0.42/24");
    assert_eq!(r["ips"][0]["gateway"], "10.69.0.1");
    assert!(ping(&ns, "10.69.0.1"));
    assert_eq!(shimnet("DEL", &call, &c).code, 0);
    assert!(endpoints(&h).is_empty());
}

#[test]
fn hundred_parallel_adds_then_mixed_add_del() {
    let h = Arc::new(host());
    let c = Arc::new(net_conf(&h, "1.0.0", "10.70.0.0/22"));
    let nss: Vec<_> = (0..150).map(|_| Arc::new(container("q"))).collect();
    let add = |ns: &Arc<shimnet::netns::NamedNetns>| {
        let (ns, c) = (ns.clone(), c.clone());
        std::thread::spawn(move || {
            let o = shimnet(
                "ADD",
                &Call::new(ns.name(), &ns.path().display().to_string()),
                &c,
            );
            assert_eq!(o.code, 0, "{o:?}");
            o.out["ips"][0]["address"].as_str().unwrap().to_string()
        })
    };
    let handles: Vec<_> = nss[..100].iter().map(add).collect();
    let addrs: Vec<String> = handles.into_iter().map(|t| t.join().unwrap()).collect();
    let distinct: HashSet<&String> = addrs.iter().collect();
    assert_eq!(distinct.len(), 100, "100 distinct addresses");
    // Mixed: DEL the first 50 while ADDing 50 new ones, in parallel.
    let mut handles = Vec::new();
    for ns in &nss[..50] {
        let (ns, c) = (ns.clone(), c.clone());
        handles.push(std::thread::spawn(move || {
            let o = shimnet(
                "DEL",
                &Call::new(ns.name(), &ns.path().display().to_string()),
                &c,
            );
            assert_eq!(o.code, 0, "{o:?}");
            String::new()
        }));
    }
    handles.extend(nss[100..].iter().map(add));
    for t in handles {
        t.join().unwrap();
    }
    let eps = endpoints(&h);
    let ids: HashSet<String> = eps
        .iter()
        .map(|e| e["key"]["container_id"].as_str().unwrap().to_string())
        .collect();
    let want: HashSet<String> = nss[50..].iter().map(|n| n.name().to_string()).collect();
    assert_eq!(ids, want, "exactly the live containers are attached");
    let ips: HashSet<&str> = eps.iter().map(|e| e["ipv4"].as_str().unwrap()).collect();
    assert_eq!(ips.len(), 100, "no address handed out twice");
    let host_links = links_in(h.ns.name())
        .into_iter()
        .filter(|l| l.starts_with("snv"))
        .count();
    eventually("one host veth per live endpoint", || {
        links_in(h.ns.name())
            .into_iter()
            .filter(|l| l.starts_with("snv"))
            .count()
            == 100
    });
    let _ = host_links;
    for ns in &nss[50..] {
        assert_eq!(
            shimnet(
                "DEL",
                &Call::new(ns.name(), &ns.path().display().to_string()),
                &c
            )
            .code,
            0
        );
    }
    assert!(endpoints(&h).is_empty());
}

/// The CNI front door's operation counts in shimnetd's metrics (`operation/result` → count).
fn cni_ops(h: &TestHost) -> std::collections::BTreeMap<String, u64> {
    let reply = h.client().request("GET", "/metrics", None).unwrap();
    let text = String::from_utf8(reply.body).unwrap();
    let head = "shimnet_operations_total{front_door=\"cni\",operation=\"";
    text.lines()
        .filter_map(|l| l.strip_prefix(head))
        .map(|l| {
            let (op, rest) = l.split_once("\",result=\"").unwrap();
            let (result, n) = rest.split_once("\"} ").unwrap();
            (format!("{op}/{result}"), n.trim().parse().unwrap())
        })
        .collect()
}

/// What `cni_ops` gained since `before`.
fn ops_since(h: &TestHost, before: &std::collections::BTreeMap<String, u64>) -> Vec<(String, u64)> {
    cni_ops(h)
        .into_iter()
        .filter_map(|(k, n)| {
            let d = n - before.get(&k).copied().unwrap_or(0);
            (d > 0).then_some((k, d))
        })
        .collect()
}

#[test]
fn add_and_check_are_one_request_each() {
    let h = TestHost::new("[[networks]]\nname = \"one0\"\nsubnet = \"10.74.9.0/24\"\n");
    let c = net_conf(&h, "1.1.0", "10.74.0.0/24");
    let ext = json!({"cniVersion": "1.1.0", "name": "x", "type": "shimnet", "daemonSocket": h.socket, "network": "one0"});
    let op = |k: &str, n: u64| (k.to_string(), n);
    let (a, b) = (container("o"), container("o"));
    let (ca, cb) = (
        Call::new(a.name(), &a.path().display().to_string()),
        Call::new(b.name(), &b.path().display().to_string()),
    );
    // The network ensured from the configuration (created by this ADD), then one the `network`
    // key names: each ADD is one request.
    let before = cni_ops(&h);
    let r = add_ok(&ca, &c);
    assert_eq!(ops_since(&h, &before), [op("network_attach/ok", 1)]);
    assert_eq!(r["interfaces"][0]["name"], c["bridge"]);
    assert!(r["ips"][0]["address"]
        .as_str()
        .unwrap()
        .starts_with("10.74.0."));
    let before = cni_ops(&h);
    let r = add_ok(&cb, &ext);
    assert_eq!(ops_since(&h, &before), [op("network_attach/ok", 1)]);
    assert_eq!(r["interfaces"][0]["name"], "one0");
    assert_eq!(r["interfaces"][2]["mtu"], 1500);
    // CHECK: one request (the drift report carries the attachment).
    let mut with_prev = c.clone();
    with_prev["prevResult"] = add_ok(&ca, &c);
    let before = cni_ops(&h);
    let o = shimnet("CHECK", &ca, &with_prev);
    assert_eq!(o.code, 0, "{o:?}");
    assert_eq!(ops_since(&h, &before), [op("endpoint_check/ok", 1)]);
    // DEL: one request.
    let before = cni_ops(&h);
    assert_eq!(shimnet("DEL", &ca, &c).code, 0);
    assert_eq!(ops_since(&h, &before), [op("endpoint_detach/ok", 1)]);

    // Errors keep their CNI codes and texts, still in one request each.
    // 102: the `network` key names no network; nothing is created.
    let mut gone = ext.clone();
    gone["network"] = json!("nosuchnet");
    let before = cni_ops(&h);
    let o = shimnet("ADD", &ca, &gone);
    assert_eq!(o.cni_code(), Some(102), "{o:?}");
    assert_eq!(
        o.out["msg"],
        "shimnet network \"nosuchnet\" (the \"network\" key) does not exist; create it with `shimnetctl network create` or fix the name"
    );
    assert_eq!(ops_since(&h, &before), [op("network_attach/error", 1)]);
    assert!(h.try_call("GET", "/v1/networks/nosuchnet", None).is_err());
    // 7: a field the daemon refuses is named by its configuration key; the network is not
    // created.
    let mut bad = net_conf(&h, "1.1.0", "10.74.1.0/24");
    bad["bridge"] = json!("much-too-long-bridge");
    let o = shimnet("ADD", &ca, &bad);
    assert_eq!(o.cni_code(), Some(7), "{o:?}");
    let msg = o.out["msg"].as_str().unwrap();
    assert!(msg.contains("(field bridge)"), "{o:?}");
    let name = bad["name"].as_str().unwrap();
    assert!(h
        .try_call("GET", &format!("/v1/networks/{name}"), None)
        .is_err());
    // 7: an endpoint field (a static address outside the subnet) refused after the network part
    // passed.
    let mut ca2 = Call::new(a.name(), &a.path().display().to_string());
    ca2.args = "IgnoreUnknown=1;IP=10.99.0.5".into();
    let o = shimnet("ADD", &ca2, &c);
    assert_eq!(o.cni_code(), Some(7), "{o:?}");
    // 101: an address another container holds; 101: the network exists with another subnet.
    let held = r["ips"][0]["address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let mut ca3 = Call::new(a.name(), &a.path().display().to_string());
    ca3.args = format!("IgnoreUnknown=1;IP={held}");
    let o = shimnet("ADD", &ca3, &ext);
    assert_eq!(o.cni_code(), Some(101), "{o:?}");
    assert!(o.out["msg"].as_str().unwrap().contains(&held), "{o:?}");
    let mut other = c.clone();
    other["ipam"]["ranges"] = json!([[{"subnet": "10.74.2.0/24"}]]);
    let o = shimnet("ADD", &ca, &other);
    assert_eq!(o.cni_code(), Some(101), "{o:?}");
    // Nothing of the failed ADDs is attached: only b remains.
    let eps = endpoints(&h);
    assert_eq!(eps.len(), 1, "{eps:?}");
    assert_eq!(eps[0]["key"]["container_id"], b.name());
    assert_eq!(shimnet("DEL", &cb, &ext).code, 0);
}
