//! A simulated reboot: shimnetd is killed, the namespaces of most containers disappear, the
//! runtime directory (sockets) is emptied, and shimnetd starts again. Endpoints of every front
//! door whose container is gone are reclaimed (record, address, host veth, firewall rules);
//! endpoints whose container is alive are kept and keep working, also across a further restart.
//! Run as root.

mod cni_support;
mod common;

use std::os::unix::fs::MetadataExt;

use cni_support::{conf, shimnet, Call};
use common::*;
use nix::sys::signal::Signal;
use serde_json::{json, Value};
use shimnet_api::client::Client;

fn plugin(h: &TestHost, call: &str, body: Value) -> Value {
    let r = Client::new(h.dir.path().join("plugins/shimnet.sock"))
        .request(
            "POST",
            &format!("/NetworkDriver.{call}"),
            Some(body.to_string().as_bytes()),
        )
        .unwrap();
    assert_eq!(
        r.status,
        200,
        "{call}: {}",
        String::from_utf8_lossy(&r.body)
    );
    serde_json::from_slice(&r.body).unwrap()
}

#[test]
fn simulated_reboot_reclaims_dead_endpoints_and_keeps_live_ones() {
    use_prefix("snr");
    let mut h = TestHost::new("[[networks]]\nname = \"rb\"\nsubnet = \"10.14.0.0/24\"\n");
    // REST: two that die (one with a published port), one that lives.
    let dead_rest: Vec<_> = (0..2).map(|_| container("rd")).collect();
    let live_rest = container("rl");
    let mut dead_ips = Vec::new();
    let mut dead_veths = Vec::new();
    for (i, c) in dead_rest.iter().enumerate() {
        let extra = if i == 0 {
            json!({"ports": [{"host_port": 18111, "container_port": 80}]})
        } else {
            json!({})
        };
        let e = h.attach("rb", c, extra);
        dead_ips.push(ip_of(&e));
        dead_veths.push(e["host_ifname"].as_str().unwrap().to_string());
    }
    let live = h.attach(
        "rb",
        &live_rest,
        json!({"ports": [{"host_port": 18112, "container_port": 80}]}),
    );
    // CNI: one dies, one lives.
    let net = format!("snr{}", tag("r"));
    let cni = conf("1.0.0", &net, &h.socket, &net, "10.15.0.0/24");
    let (dead_cni, live_cni) = (container("cd"), container("cl"));
    for c in [&dead_cni, &live_cni] {
        let o = shimnet(
            "ADD",
            &Call::new(c.name(), &c.path().display().to_string()),
            &cni,
        );
        assert_eq!(o.code, 0, "{o:?}");
        if std::ptr::eq(c, &dead_cni) {
            dead_ips.push(
                o.out["ips"][0]["address"]
                    .as_str()
                    .unwrap()
                    .split('/')
                    .next()
                    .unwrap()
                    .to_string(),
            );
        }
    }
    // Docker: one joined endpoint that dies.
    let dnet = "c".repeat(64);
    let dep = "e".repeat(64);
    plugin(
        &h,
        "CreateNetwork",
        json!({"NetworkID": dnet, "IPv6Data": [], "Options": {},
        "IPv4Data": [{"AddressSpace": "x", "Pool": "10.16.0.0/24", "Gateway": "10.16.0.1/24"}]}),
    );
    let dead_docker = container("dd");
    plugin(
        &h,
        "CreateEndpoint",
        json!({"NetworkID": dnet, "EndpointID": dep,
        "Interface": {"Address": "10.16.0.5/24"}, "Options": {}}),
    );
    let j = plugin(
        &h,
        "Join",
        json!({"NetworkID": dnet, "EndpointID": dep, "SandboxKey": dead_docker.path(), "Options": {}}),
    );
    let src = j["InterfaceName"]["SrcName"].as_str().unwrap();
    sh(&[
        "ip",
        "-n",
        h.ns.name(),
        "link",
        "set",
        src,
        "netns",
        dead_docker.name(),
    ]);
    dead_ips.push("10.16.0.5".into());
    assert_eq!(
        h.call("GET", "/v1/endpoints", None)
            .as_array()
            .unwrap()
            .len(),
        6
    );

    // The "reboot": the daemon dies, dead containers' namespaces vanish, the runtime dir is emptied.
    h.stop_with(Signal::SIGKILL);
    drop(dead_rest);
    drop(dead_cni);
    drop(dead_docker);
    std::fs::remove_file(&h.socket).unwrap();
    for e in std::fs::read_dir(h.dir.path().join("plugins")).unwrap() {
        std::fs::remove_file(e.unwrap().path()).unwrap();
    }
    // After a real reboot no veth of a dead container exists; here the kernel destroys the
    // deleted namespaces (and with them the veth pairs) in the background: wait for that.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while links_in(h.ns.name())
        .iter()
        .filter(|l| l.starts_with("snv"))
        .count()
        > 2
    {
        assert!(
            std::time::Instant::now() < deadline,
            "dead containers' veths not destroyed"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    h.start();

    let eps = h.call("GET", "/v1/endpoints", None);
    let mut ids: Vec<&str> = eps
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["key"]["container_id"].as_str().unwrap())
        .collect();
    ids.sort();
    let mut want = vec![live_rest.name(), live_cni.name()];
    want.sort();
    assert_eq!(ids, want, "only live endpoints kept: {eps}");
    assert!(ping(&live_rest, "10.14.0.1"), "live REST endpoint works");
    assert!(ping(&live_cni, "10.15.0.1"), "live CNI endpoint works");
    eventually_for(
        "dead host veths gone",
        std::time::Duration::from_secs(30),
        || {
            let links = links_in(h.ns.name());
            dead_veths.iter().all(|v| !links.contains(v))
        },
    );
    let rules = format!("{}{}", h.nft_ruleset(), h.iptables_save());
    for ip in &dead_ips {
        assert!(
            !rules.contains(&format!("{ip} ")) && !rules.contains(&format!("{ip}:")),
            "rule for {ip} left"
        );
    }
    assert!(
        !rules.contains("18111"),
        "published port of a dead endpoint left"
    );
    assert!(
        rules.contains("18112"),
        "published port of the live endpoint kept"
    );
    for s in [h.socket.clone(), h.dir.path().join("plugins/shimnet.sock")] {
        assert_eq!(std::fs::metadata(&s).unwrap().mode() & 0o777, 0o660);
    }
    // The dead addresses are free again: static requests for them succeed.
    for (i, ip) in dead_ips
        .iter()
        .filter(|ip| ip.starts_with("10.14."))
        .enumerate()
    {
        let c = container(&format!("n{i}"));
        let e = h.attach("rb", &c, json!({"ip": ip}));
        assert_eq!(&ip_of(&e), ip);
        h.detach("rb", c.name());
    }
    // A plain restart keeps the live ones as they are.
    h.stop_with(Signal::SIGTERM);
    h.start();
    let again = h.call("GET", "/v1/endpoints", None);
    assert_eq!(again.as_array().unwrap().len(), 2, "{again}");
    assert!(again
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["ipv4"] == live["ipv4"]));
    assert!(ping(&live_rest, "10.14.0.1"));
    // Clean up through the front doors.
    h.detach("rb", live_rest.name());
    assert_eq!(
        shimnet(
            "DEL",
            &Call::new(live_cni.name(), &live_cni.path().display().to_string()),
            &cni
        )
        .code,
        0
    );
    assert_eq!(h.call("GET", "/v1/endpoints", None), json!([]));
}
