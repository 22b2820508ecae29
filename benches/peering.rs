//! iperf3 throughput (one TCP stream) between containers on two nodes for each peering mode,
//! next to the underlay's own node-to-node throughput, all measured in one run. Each mode gets
//! a fresh two-node fabric (nodes on one underlay subnet behind the router namespace).
//!
//! `cargo bench --bench peering [-- SECONDS [MODE]]` (default 5 s per measurement, all modes).
//! Run as root.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/peering_support/mod.rs"]
mod peering_support;

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::time::Duration;

use peering_support::*;
use shimnet::netns::NamedNetns;

/// Runs an iperf3 server in `srv` on `addr` and a client in `cli`; returns Gbit/s received and
/// the sender's TCP retransmissions.
fn iperf(srv: &str, cli: &str, addr: Ipv4Addr, secs: u64) -> (f64, u64) {
    let mut server = Command::new("ip")
        .args([
            "netns",
            "exec",
            srv,
            "iperf3",
            "-s",
            "-1",
            "-B",
            &addr.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("iperf3 server");
    let mut out = None;
    for _ in 0..50 {
        let o = Command::new("ip")
            .args([
                "netns",
                "exec",
                cli,
                "iperf3",
                "-J",
                "-c",
                &addr.to_string(),
            ])
            .args(["-t", &secs.to_string()])
            .output()
            .expect("iperf3 client");
        // iperf3 -J may exit 0 with {"error": ...} (server not listening yet): retry.
        let refused = serde_json::from_slice::<serde_json::Value>(&o.stdout)
            .map_or(true, |v| v.get("error").is_some());
        if o.status.success() && !refused {
            out = Some(o.stdout);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = server.kill();
    let _ = server.wait();
    let v: serde_json::Value = serde_json::from_slice(&out.expect("iperf3 ran")).unwrap();
    let g = v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or_else(|| panic!("no bits_per_second in {v}"))
        / 1e9;
    (g, v["end"]["sum_sent"]["retransmits"].as_u64().unwrap_or(0))
}

struct Pair {
    _f: Fabric,
    a: Node,
    b: Node,
    ca: NamedNetns,
    cb: NamedNetns,
    ipb: Ipv4Addr,
}

fn pair(peering: &str) -> Pair {
    let mut f = Fabric::new(1);
    let mut a = f.node("node-a", 0, 10, 1, peering);
    let mut b = f.node("node-b", 0, 11, 2, peering);
    a.set_peers(&[(&b, None)]);
    b.set_peers(&[(&a, None)]);
    a.start();
    b.start();
    let (ca, _) = a.container("a");
    let (cb, ipb) = b.container("b");
    wait_for(30, "containers reach each other", || {
        ping_from(&ca, ipb, &[])
    });
    Pair {
        _f: f,
        a,
        b,
        ca,
        cb,
        ipb,
    }
}

fn main() {
    let secs: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(5);
    let mut rows: Vec<(String, (f64, u64))> = Vec::new();
    let modes = [
        ("host-gw", "mode = \"host-gw\""),
        ("vxlan (kernel)", "mode = \"vxlan\""),
        ("ipip (userspace)", "mode = \"ipip\"\nipip = \"userspace\""),
    ];
    // Optional filter: `-- 5 ipip` measures only the modes whose name contains "ipip".
    let only: Option<String> = std::env::args()
        .skip(1)
        .find(|a| a.parse::<u64>().is_err() && !a.starts_with('-'));
    for (i, (name, cfg)) in modes.iter().enumerate() {
        if i > 0 && only.as_deref().is_some_and(|o| !name.contains(o)) {
            continue;
        }
        let p = pair(cfg);
        if i == 0 {
            let g = iperf(p.b.ns.name(), p.a.ns.name(), p.b.addr, secs);
            rows.push(("underlay node <-> node".into(), g));
        }
        let g = iperf(p.cb.name(), p.ca.name(), p.ipb, secs);
        rows.push((format!("containers, {name}"), g));
        if let Some(u) = p.a.peers().get("userspace_ipip").filter(|u| !u.is_null()) {
            eprintln!("sender's userspace IPIP counters: {u}");
        }
        if let Some(u) = p.b.peers().get("userspace_ipip").filter(|u| !u.is_null()) {
            eprintln!("receiver's userspace IPIP counters: {u}");
        }
        drop(p);
    }
    let base = rows[0].1 .0;
    println!("\niperf3, one TCP stream, {secs} s each, veth underlay in namespaces");
    println!(
        "{:<34} {:>8} {:>12} {:>8}",
        "path", "Gbit/s", "vs underlay", "retrans"
    );
    for (what, (g, r)) in &rows {
        println!("{what:<34} {g:>8.2} {:>12.2} {r:>8}", g / base);
    }
}
