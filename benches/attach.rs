//! Attach/detach latency through shimnetd's REST API at 100 and 1,000 endpoints, side by side with
//! the reference CNI `bridge` plugin (+ host-local) and netavark at 100 containers, all in one run
//! on one machine, each in its own "host" namespace. Prints medians, p90s and ratios.
//!
//! `cargo bench --bench attach [-- N]` (N = endpoints for shimnet, default 1000). Run as root.

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{container, sh, TestHost};
use serde_json::json;
use shimnet::netns::NamedNetns;

fn pct(v: &[Duration], p: f64) -> f64 {
    let mut s: Vec<f64> = v.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    s.sort_by(|a, b| a.total_cmp(b));
    s[((s.len() as f64 - 1.0) * p).round() as usize]
}

fn line(what: &str, v: &[Duration]) -> f64 {
    let m = pct(v, 0.5);
    println!(
        "{what:<52} median {m:>7.3} ms   p90 {:>7.3} ms   (n={})",
        pct(v, 0.9),
        v.len()
    );
    m
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("VmRSS:")
                .map(|r| r.trim().trim_end_matches(" kB").trim().parse().unwrap_or(0))
        })
        .unwrap_or(0)
}

/// Runs `cmd` with `stdin` inside namespace `ns` (the child inherits the spawning thread's
/// namespace) and returns how long it took.
fn exec_in(ns: &Path, cmd: &mut Command, stdin: &[u8]) -> Duration {
    shimnet::netns::run_in(ns, || {
        let start = Instant::now();
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        let out = child.wait_with_output().unwrap();
        let took = start.elapsed();
        assert!(
            out.status.success(),
            "{cmd:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        took
    })
    .expect("enter namespace")
}

struct Peer {
    add: Vec<Duration>,
    del: Vec<Duration>,
}

fn reference_bridge(n: usize) -> Option<Peer> {
    let plugin = Path::new("/usr/lib/cni/bridge");
    if !plugin.exists() {
        println!(
            "SKIPPED: reference bridge plugin absent (apt-get install containernetworking-plugins)"
        );
        return None;
    }
    let host = NamedNetns::create(&format!("snb-ref-{}", std::process::id())).unwrap();
    sh(&["ip", "-n", host.name(), "link", "set", "lo", "up"]);
    let dir = tempfile::tempdir().unwrap();
    let conf = json!({
        "cniVersion": "1.0.0", "name": "refnet", "type": "bridge", "bridge": "refbr0",
        "isGateway": true, "ipMasq": true,
        "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.201.0.0/16"}]],
                 "routes": [{"dst": "0.0.0.0/0"}], "dataDir": dir.path().join("ipam")}
    })
    .to_string();
    let cs: Vec<_> = (0..n).map(|i| container(&format!("rb{i}"))).collect();
    let run = |cmd: &str, c: &NamedNetns| {
        let mut command = Command::new(plugin);
        command
            .env("CNI_COMMAND", cmd)
            .env("CNI_CONTAINERID", c.name())
            .env("CNI_NETNS", c.path())
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", "/usr/lib/cni");
        exec_in(host.path(), &mut command, conf.as_bytes())
    };
    let add = cs.iter().map(|c| run("ADD", c)).collect();
    let del = cs.iter().map(|c| run("DEL", c)).collect();
    Some(Peer { add, del })
}

fn netavark(n: usize) -> Option<Peer> {
    let bin = Path::new("/usr/lib/podman/netavark");
    if !bin.exists() {
        println!("SKIPPED: netavark absent (apt-get install netavark)");
        return None;
    }
    let host = NamedNetns::create(&format!("snb-nv-{}", std::process::id())).unwrap();
    sh(&["ip", "-n", host.name(), "link", "set", "lo", "up"]);
    let dir = tempfile::tempdir().unwrap();
    let cs: Vec<_> = (0..n).map(|i| container(&format!("nv{i}"))).collect();
    let opts: Vec<String> = cs
        .iter()
        .enumerate()
        .map(|(i, c)| {
            json!({
                "container_id": c.name(), "container_name": c.name(),
                "networks": {"nvnet": {"interface_name": "eth0",
                    "static_ips": [format!("10.202.{}.{}", (i + 2) / 256, (i + 2) % 256)]}},
                "network_info": {"nvnet": {"name": "nvnet", "id": "f".repeat(64), "driver": "bridge",
                    "network_interface": "nvbr0", "internal": false, "ipv6_enabled": false,
                    "dns_enabled": false, "subnets": [{"subnet": "10.202.0.0/16", "gateway": "10.202.0.1"}]}}
            })
            .to_string()
        })
        .collect();
    let run = |cmd: &str, c: &NamedNetns, o: &String| {
        let mut command = Command::new(bin);
        command
            .arg("--config")
            .arg(dir.path())
            .arg(cmd)
            .arg(c.path());
        exec_in(host.path(), &mut command, o.as_bytes())
    };
    let add = cs
        .iter()
        .zip(&opts)
        .map(|(c, o)| run("setup", c, o))
        .collect();
    let del = cs
        .iter()
        .zip(&opts)
        .map(|(c, o)| run("teardown", c, o))
        .collect();
    Some(Peer { add, del })
}

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1000);
    assert!(n >= 100, "need at least 100 endpoints");
    println!("== shimnet attach/detach through the REST API, {n} endpoints on one bridge ==");
    let h = TestHost::new("[[networks]]\nname = \"bench\"\nsubnet = \"10.200.0.0/16\"\n");
    let cs: Vec<_> = (0..n).map(|i| container(&format!("sb{i}"))).collect();
    let client = h.client();
    let mut attach = Vec::with_capacity(n);
    for c in &cs {
        let body = json!({"container_id": c.name(), "netns": c.path()});
        let start = Instant::now();
        let _: serde_json::Value = client
            .call("POST", "/v1/networks/bench/endpoints", Some(&body))
            .expect("attach");
        attach.push(start.elapsed());
    }
    let pid = h.daemon.as_ref().unwrap().id();
    let rss = rss_kib(pid);
    let mut detach = Vec::with_capacity(n);
    for c in &cs {
        let start = Instant::now();
        let _: serde_json::Value = client
            .call(
                "DELETE",
                &format!("/v1/networks/bench/endpoints/{}", c.name()),
                None::<&()>,
            )
            .expect("detach");
        detach.push(start.elapsed());
    }
    let a100 = line("shimnet attach, endpoints 1..100", &attach[..100]);
    line(
        &format!("shimnet attach, endpoints {}..{n}", n - 99),
        &attach[n - 100..],
    );
    line("shimnet attach, all", &attach);
    line(
        &format!("shimnet detach, first 100 (with ~{n} attached)"),
        &detach[..100],
    );
    let d100 = line(
        "shimnet detach, last 100 (with <=100 attached)",
        &detach[n - 100..],
    );
    line("shimnet detach, all", &detach);
    println!(
        "shimnetd RSS with {n} endpoints: {:.1} MiB",
        rss as f64 / 1024.0
    );
    if let Ok(path) = std::env::var("SHIMNET_BENCH_LOG") {
        std::fs::write(&path, h.log()).expect("write daemon log");
        println!("daemon log (per-call alloc_us/build_us) written to {path}");
    }
    drop(cs);

    println!("\n== peers, 100 containers each, same machine, same run ==");
    let peers = [
        ("reference CNI bridge+host-local", reference_bridge(100)),
        ("netavark 1.4", netavark(100)),
    ];
    for (name, p) in peers {
        let Some(p) = p else { continue };
        let pa = line(&format!("{name} ADD/setup"), &p.add);
        let pd = line(&format!("{name} DEL/teardown"), &p.del);
        println!(
            "  ratio {name} / shimnet: attach {:.1}x, detach {:.1}x",
            pa / a100,
            pd / d100
        );
    }
}
