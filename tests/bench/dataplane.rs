//! Data-plane throughput: one single-stream TCP iperf3 run between two namespaces per scenario.
//!
//! Scenarios are a list of [`Scenario`] values (name, the floor it is compared with, a builder
//! returning the two ends); cross-node peering modes add rows by appending to [`scenarios`].

use std::any::Any;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use shimnet::netns::NamedNetns;

use crate::common::{sh, tag, TestHost};

/// Two ends ready for traffic; whatever keeps them alive is held in `_keep`.
pub struct Ends {
    /// Namespace running the iperf3 server.
    pub server: String,
    /// Namespace running the client.
    pub client: String,
    /// Address the client connects to.
    pub server_ip: String,
    /// RAII guards (namespaces, endpoints).
    pub _keep: Vec<Box<dyn Any>>,
}

/// One data-plane scenario.
pub struct Scenario {
    /// Row label.
    pub name: &'static str,
    /// Name of the scenario this one is compared with (its kernel floor), if any.
    pub floor: Option<&'static str>,
    /// Builds the two ends.
    pub build: Box<dyn Fn() -> Ends>,
}

fn ns(what: &str) -> NamedNetns {
    let n = NamedNetns::create(&format!("snb-{}", tag(what))).expect("netns");
    sh(&["ip", "-n", n.name(), "link", "set", "lo", "up"]);
    n
}

fn ip(ns: &NamedNetns, args: &[&str]) {
    let mut v = vec!["ip", "-n", ns.name()];
    v.extend_from_slice(args);
    sh(&v);
}

/// Two namespaces joined by a bare veth pair.
fn bare_veth() -> Ends {
    let (a, b) = (ns("dva"), ns("dvb"));
    sh(&[
        "ip",
        "link",
        "add",
        "eth0",
        "netns",
        a.name(),
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        b.name(),
    ]);
    ip(&a, &["addr", "add", "10.251.0.1/24", "dev", "eth0"]);
    ip(&b, &["addr", "add", "10.251.0.2/24", "dev", "eth0"]);
    ip(&a, &["link", "set", "eth0", "up"]);
    ip(&b, &["link", "set", "eth0", "up"]);
    Ends {
        server: a.name().into(),
        client: b.name().into(),
        server_ip: "10.251.0.1".into(),
        _keep: vec![Box::new(a), Box::new(b)],
    }
}

/// Two namespaces on a plain Linux bridge made with `ip` (in a third namespace).
fn plain_bridge() -> Ends {
    let (br, a, b) = (ns("dbr"), ns("dba"), ns("dbb"));
    ip(&br, &["link", "add", "br0", "type", "bridge"]);
    ip(&br, &["link", "set", "br0", "up"]);
    for (i, c) in [&a, &b].into_iter().enumerate() {
        let port = format!("p{i}");
        sh(&[
            "ip",
            "link",
            "add",
            &port,
            "netns",
            br.name(),
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            c.name(),
        ]);
        ip(&br, &["link", "set", &port, "master", "br0", "up"]);
        ip(
            c,
            &[
                "addr",
                "add",
                &format!("10.252.0.{}/24", i + 2),
                "dev",
                "eth0",
            ],
        );
        ip(c, &["link", "set", "eth0", "up"]);
    }
    Ends {
        server: a.name().into(),
        client: b.name().into(),
        server_ip: "10.252.0.2".into(),
        _keep: vec![Box::new(a), Box::new(b), Box::new(br)],
    }
}

/// Two containers attached to one shimnet network.
fn shimnet_bridge() -> Ends {
    let h = TestHost::new("[[networks]]\nname = \"dp\"\nsubnet = \"10.253.0.0/24\"\n");
    let (a, b) = (ns("dsa"), ns("dsb"));
    let ea = h.attach("dp", &a, serde_json::json!({}));
    h.attach("dp", &b, serde_json::json!({}));
    Ends {
        server: a.name().into(),
        client: b.name().into(),
        server_ip: crate::common::ip_of(&ea),
        _keep: vec![Box::new(a), Box::new(b), Box::new(h)],
    }
}

/// The built-in scenarios. Cross-node rows (host-gw, VXLAN, IPIP and their underlay floor) are
/// appended here with their own builders.
pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "bare veth pair",
            floor: None,
            build: Box::new(bare_veth),
        },
        Scenario {
            name: "linux bridge (ip)",
            floor: Some("bare veth pair"),
            build: Box::new(plain_bridge),
        },
        Scenario {
            name: "shimnet container<->container, one bridge",
            floor: Some("linux bridge (ip)"),
            build: Box::new(shimnet_bridge),
        },
    ]
}

/// Kills the server on drop (it exits by itself after one test with `-1`).
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Single-stream TCP throughput in Gbit/s from client to server over `secs` seconds.
pub fn iperf3(e: &Ends, secs: u32) -> f64 {
    let _server = Server(
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &e.server,
                "iperf3",
                "-s",
                "-1",
                "-B",
                &e.server_ip,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn iperf3 server"),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &e.client,
                "iperf3",
                "-J",
                "-c",
                &e.server_ip,
            ])
            .args(["-t", &secs.to_string()])
            .output()
            .expect("spawn iperf3 client");
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        if let Some(bps) = v["end"]["sum_received"]["bits_per_second"].as_f64() {
            return bps / 1e9;
        }
        assert!(
            Instant::now() < deadline,
            "iperf3 to {} failed: {}{}",
            e.server_ip,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
