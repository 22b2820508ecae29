//! One network past one bridge: `SHIMNET_BENCH_BIGNET_N` (default 4,000; 1,100 with
//! `SHIMNET_BENCH_SHORT=1`) sequential REST attaches to one /20 network, then as many sequential
//! detaches, on one shimnetd. Prints the median of the first and last 100 of each and their ratio
//! beside the target (growth ≤ 1.25), and how the endpoints were spread over the main bridge and
//! its extension bridges. Writes `target/bench/bignet.txt`.
//!
//! `cargo bench --bench bignet` as root (see `scripts/bench.sh`).

#[path = "../common/mod.rs"]
mod common;
#[allow(dead_code)]
mod stats;

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use common::{container, tag, use_prefix, TestHost};
use runtime_net::naming::extension_bridge_name;
use runtime_net::types::NetworkName;
use serde_json::{json, Value};
use shimnet_api::client::Client;
use stats::{growth, summarize};

const TARGET: f64 = 1.25;

/// One operation's figures; `held` when they are held to [`TARGET`].
fn line(out: &mut String, who: &str, held: bool, what: &str, samples: &[Duration]) {
    let k = 100.min(samples.len() / 2);
    let first = summarize(&samples[..k]).map_or(f64::NAN, |s| s.median);
    let last = summarize(&samples[samples.len() - k..]).map_or(f64::NAN, |s| s.median);
    let g = growth(samples, k).unwrap_or(f64::NAN);
    let all = summarize(samples).expect("samples");
    writeln!(
        out,
        "  {who} {what:<7} first {k} median {first:.2} ms, last {k} median {last:.2} ms, growth {g:.2}{}; all: median {:.2} p90 {:.2} p99 {:.2} ms",
        match (held, g <= TARGET) {
            (false, _) => String::new(),
            (true, true) => format!(" (target ≤ {TARGET}) met"),
            (true, false) => format!(" (target ≤ {TARGET}) MISSED"),
        },
        all.median,
        all.p90,
        all.p99
    )
    .unwrap();
    // Where it grows: the median of each block of 500 (a step at a bridge boundary would show).
    let blocks: Vec<String> = samples
        .chunks(500)
        .filter_map(|c| summarize(c).map(|s| format!("{:.2}", s.median)))
        .collect();
    writeln!(out, "    medians per 500: {} ms", blocks.join(" ")).unwrap();
}

fn main() {
    let short = std::env::var("SHIMNET_BENCH_SHORT").is_ok_and(|v| v == "1");
    let n: usize = std::env::var("SHIMNET_BENCH_BIGNET_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if short { 1100 } else { 4000 });
    use_prefix("sbg");
    let h = TestHost::new("");
    let net = tag("big");
    let name = NetworkName::new(&net).unwrap();
    let spec = h.create_network(json!({"name": net, "subnet": "10.86.0.0/20"}));
    let bridge = spec["bridge"]
        .as_str()
        .or_else(|| spec["network"]["bridge"].as_str())
        .expect("bridge")
        .to_string();
    let client = Client::new(&h.socket);
    let containers: Vec<_> = (0..n).map(|_| container("b")).collect();
    let mut attach = Vec::with_capacity(n);
    for c in &containers {
        let body = json!({"container_id": c.name(), "netns": c.path()});
        let t = Instant::now();
        let _: Value = client
            .call(
                "POST",
                &format!("/v1/networks/{net}/endpoints"),
                Some(&body),
            )
            .expect("attach");
        attach.push(t.elapsed());
    }
    let mut spread = vec![(bridge.clone(), ports(&h, &bridge))];
    for i in 1..=runtime_net::naming::MAX_EXTENSIONS {
        let x = extension_bridge_name(&name, i).to_string();
        let p = ports(&h, &x);
        if p == 0 {
            break;
        }
        spread.push((x, p));
    }
    let mut detach = Vec::with_capacity(n);
    for c in &containers {
        let t = Instant::now();
        let _: Value = client
            .call(
                "DELETE",
                &format!("/v1/networks/{net}/endpoints/{}", c.name()),
                None::<&()>,
            )
            .expect("detach");
        detach.push(t.elapsed());
    }
    let mut out = String::new();
    writeln!(
        out,
        "{n} sequential REST attaches, then detaches, on one /20 network (one shimnetd):"
    )
    .unwrap();
    line(&mut out, "shimnet REST", true, "attach", &attach);
    line(&mut out, "shimnet REST", true, "detach", &detach);
    let bridges: Vec<String> = spread.iter().map(|(b, p)| format!("{b} {p}")).collect();
    writeln!(
        out,
        "  ports per bridge at {n} endpoints (trunk ends included): {}",
        bridges.join(", ")
    )
    .unwrap();
    h.call("DELETE", &format!("/v1/networks/{net}"), None);
    let per_bridge = spread.iter().map(|(_, p)| *p).max().unwrap_or(1);
    let (fa, fd) = ip_floor(&containers, per_bridge);
    writeln!(
        out,
        "The kernel's floor: the host side of each attach by one long-lived `ip -batch` in a namespace of its own (veth pair with its peer created in the same container namespaces, host end enslaved to a bridge of at most {per_bridge} ports and up, IPv6 off; detach = delete the pair):"
    )
    .unwrap();
    line(&mut out, "ip floor", false, "attach", &fa);
    line(&mut out, "ip floor", false, "detach", &fd);
    print!("{out}");
    let _ = std::fs::create_dir_all("target/bench");
    let _ = std::fs::write("target/bench/bignet.txt", &out);
}

/// One long-lived `ip -n NS -batch -` whose output is line-buffered, so a command's answer can
/// be waited for: what the kernel alone takes for a sequence of link operations, without a
/// process start per operation.
struct IpBatch {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    stdout: std::io::BufReader<std::process::ChildStdout>,
}

impl IpBatch {
    fn new(ns: &str) -> Self {
        use std::process::Stdio;
        let mut child = std::process::Command::new("stdbuf")
            .args(["-oL", "ip", "-n", ns, "-batch", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("ip -batch");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
        IpBatch {
            child,
            stdin,
            stdout,
        }
    }

    /// Runs `cmds` and waits until the kernel has answered all of them (a marker command
    /// after them prints its line once they are done; `ip -batch` stops at the first error).
    fn run(&mut self, cmds: &str) -> Duration {
        use std::io::{BufRead, Write};
        let t = Instant::now();
        writeln!(self.stdin, "{cmds}link show dev lo").expect("write to ip -batch");
        self.stdin.flush().expect("flush ip -batch");
        let mut l = String::new();
        loop {
            l.clear();
            let n = self.stdout.read_line(&mut l).expect("read ip -batch");
            assert!(n > 0, "ip -batch stopped (a command failed): {cmds}");
            if l.contains(": lo:") {
                return t.elapsed();
            }
        }
    }
}

impl Drop for IpBatch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The same host-side kernel work as the attaches and detaches above, done by `ip` in a fresh
/// namespace with the same container namespaces: per endpoint a veth pair whose peer goes
/// straight into the container, the host end enslaved to one of as many bridges as needed
/// (at most `per_bridge` ports each) and brought up. Returns (attach, detach) times.
fn ip_floor(
    containers: &[shimnet::netns::NamedNetns],
    per_bridge: usize,
) -> (Vec<Duration>, Vec<Duration>) {
    let ns = common::container("floor");
    // New links start with IPv6 off, as shimnet's bridge ports do.
    common::sh(&[
        "ip",
        "netns",
        "exec",
        ns.name(),
        "sysctl",
        "-qw",
        "net.ipv6.conf.default.disable_ipv6=1",
    ]);
    let mut ip = IpBatch::new(ns.name());
    let bridges = containers.len().div_ceil(per_bridge.max(1));
    for b in 0..bridges {
        ip.run(&format!(
            "link add flb{b} type bridge\nlink set flb{b} up\n"
        ));
    }
    let attach = containers
        .iter()
        .enumerate()
        .map(|(i, c)| {
            ip.run(&format!(
                "link add flv{i} type veth peer name fl0 netns {}\nlink set flv{i} master flb{} up\n",
                c.name(),
                i / per_bridge
            ))
        })
        .collect();
    let detach = (0..containers.len())
        .map(|i| ip.run(&format!("link del flv{i}\n")))
        .collect();
    (attach, detach)
}

/// Links enslaved to `br` in the daemon's namespace.
fn ports(h: &TestHost, br: &str) -> usize {
    std::process::Command::new("ip")
        .args(["-n", h.ns.name(), "-o", "link", "show", "master", br])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().count())
        .unwrap_or(0)
}
