//! iperf3 throughput (one TCP stream) between containers on two nodes for each peering mode,
//! next to the underlay's own node-to-node throughput, all measured in one run; each container
//! run follows an underlay run on the same fabric, and its share is taken against that one.
//! Each mode gets a fresh two-node fabric (nodes on one underlay subnet behind the router
//! namespace). Every figure is the median of several runs (the machine may be shared), printed
//! with the load average at the time and the target it is held to.
//!
//! `cargo bench --bench peering [-- SECONDS [MODE]]` (default 5 s per run, all modes);
//! `SHIMNET_BENCH_REPEATS` runs per figure (default 3). Run as root.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/peering_support/mod.rs"]
mod peering_support;

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::time::Duration;

use peering_support::*;
use shimnet::netns::NamedNetns;

/// One iperf3 run: Gbit/s received, the sender's TCP retransmissions and how many of them the
/// receiver reported as duplicates (D-SACK: the original had arrived, only out of order).
#[derive(Debug, Clone, Copy)]
struct Sample {
    gbps: f64,
    retrans: u64,
    spurious: u64,
}

/// A `TcpExt` counter of namespace `ns` (`/proc/net/netstat`: a line of names, then one of
/// values).
fn tcp_ext(ns: &str, name: &str) -> u64 {
    let o = Command::new("ip")
        .args(["netns", "exec", ns, "cat", "/proc/net/netstat"])
        .output()
        .expect("read /proc/net/netstat");
    let text = String::from_utf8_lossy(&o.stdout);
    let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == name)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

/// Runs an iperf3 server in `srv` on `addr` and a client in `cli`.
fn iperf(srv: &str, cli: &str, addr: Ipv4Addr, secs: u64) -> Sample {
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
    let dsack = || tcp_ext(cli, "TCPDSACKRecvSegs");
    let dsack_before = dsack();
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
    let gbps = v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or_else(|| panic!("no bits_per_second in {v}"))
        / 1e9;
    Sample {
        gbps,
        retrans: v["end"]["sum_sent"]["retransmits"].as_u64().unwrap_or(0),
        spurious: dsack().saturating_sub(dsack_before),
    }
}

/// The one-minute load average.
fn load() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

/// CPU time (user + system) of the threads of `pid` whose name starts with `prefix`.
fn thread_cpu(pid: u32, prefix: &str) -> Duration {
    let tick = 100.0; // USER_HZ
    let mut ticks = 0u64;
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Duration::ZERO;
    };
    for t in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(t.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ...: comm may hold spaces, so split after the last ')'.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        if !stat[open + 1..close].starts_with(prefix) {
            continue;
        }
        let f: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        // After the comm: state is field 3, utime 14, stime 15 (1-based over the whole line).
        let (u, s) = (f[11].parse::<u64>(), f[12].parse::<u64>());
        ticks += u.unwrap_or(0) + s.unwrap_or(0);
    }
    Duration::from_secs_f64(ticks as f64 / tick)
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

/// What a figure is held to.
#[derive(Clone, Copy)]
enum Target {
    /// No target (the floor).
    None,
    /// No target; this says why.
    Info(&'static str),
    /// At least this share of the underlay.
    Share(f64),
    /// At least this many Gbit/s.
    Gbps(f64),
}

struct Row {
    what: String,
    samples: Vec<Sample>,
    /// The underlay measured right before each sample, on the same fabric.
    underlay: Vec<Sample>,
    load: f64,
    target: Target,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

impl Row {
    fn median(&self) -> f64 {
        median(self.samples.iter().map(|s| s.gbps).collect())
    }

    /// The median of each sample's share of the underlay measured just before it (the machine's
    /// speed drifts over minutes; a share against a floor measured at another time drifts with
    /// it).
    fn share(&self) -> f64 {
        median(
            self.samples
                .iter()
                .zip(&self.underlay)
                .map(|(s, u)| s.gbps / u.gbps)
                .collect(),
        )
    }
}

/// `repeats` runs of `run`, each right after a run of `underlay` (if any).
fn measure(
    what: String,
    target: Target,
    repeats: usize,
    mut underlay: Option<&mut dyn FnMut() -> Sample>,
    mut run: impl FnMut() -> Sample,
) -> Row {
    let load = load();
    let mut base = Vec::new();
    let mut samples = Vec::new();
    for _ in 0..repeats {
        if let Some(u) = underlay.as_mut() {
            base.push(u());
        }
        samples.push(run());
    }
    let round = |v: &[Sample]| {
        v.iter()
            .map(|s| (s.gbps * 100.0).round() / 100.0)
            .collect::<Vec<_>>()
    };
    eprintln!(
        "{what}: {:?} Gbit/s, underlay before each {:?} (load {load:.1})",
        round(&samples),
        round(&base)
    );
    Row {
        what,
        underlay: if base.is_empty() {
            samples.clone()
        } else {
            base
        },
        samples,
        load,
        target,
    }
}

fn main() {
    let secs: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(5);
    let repeats: usize = std::env::var("SHIMNET_BENCH_REPEATS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(3);
    let mut rows: Vec<Row> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    let modes = [
        (
            "host-gw (tc programs)",
            "mode = \"host-gw\"",
            Target::Share(0.95),
        ),
        (
            "host-gw (kernel forwarding)",
            "mode = \"host-gw\"\nforwarding = \"kernel\"",
            Target::Info("(forwarding = \"kernel\")"),
        ),
        (
            "vxlan (tc programs)",
            "mode = \"vxlan\"",
            Target::Share(0.85),
        ),
        (
            "vxlan (kernel forwarding)",
            "mode = \"vxlan\"\nforwarding = \"kernel\"",
            Target::Info("(forwarding = \"kernel\")"),
        ),
        (
            "ipip (tc programs)",
            "mode = \"ipip\"\nipip = \"bpf\"",
            Target::Gbps(5.0),
        ),
        (
            "ipip (userspace alone)",
            "mode = \"ipip\"\nipip = \"userspace\"",
            Target::Info("(fallback where the programs cannot load)"),
        ),
    ];
    // Optional filter: `-- 5 ipip` measures only the modes whose name contains "ipip".
    let only: Option<String> = std::env::args()
        .skip(1)
        .find(|a| a.parse::<u64>().is_err() && !a.starts_with('-'));
    for (i, (name, cfg, target)) in modes.iter().enumerate() {
        if i > 0 && only.as_deref().is_some_and(|o| !name.contains(o)) {
            continue;
        }
        let p = pair(cfg);
        let mut underlay = || iperf(p.b.ns.name(), p.a.ns.name(), p.b.addr, secs);
        if i == 0 {
            rows.push(measure(
                "underlay node <-> node".into(),
                Target::None,
                repeats,
                None,
                &mut underlay,
            ));
        }
        let pids = (
            p.a.daemon.as_ref().map(|c| c.id()),
            p.b.daemon.as_ref().map(|c| c.id()),
        );
        let cpu = |pid: Option<u32>| pid.map_or(Duration::ZERO, |p| thread_cpu(p, "ipip-"));
        let before = (cpu(pids.0), cpu(pids.1));
        let row = measure(
            format!("containers, {name}"),
            *target,
            repeats,
            Some(&mut underlay),
            || iperf(p.cb.name(), p.ca.name(), p.ipb, secs),
        );
        let (tx_cpu, rx_cpu) = (cpu(pids.0) - before.0, cpu(pids.1) - before.1);
        if !tx_cpu.is_zero() {
            // Bytes moved ≈ the median rate over every run's length.
            let gbytes = row.samples.iter().map(|s| s.gbps).sum::<f64>() * secs as f64 / 8.0;
            notes.push(format!(
                "{name}: data-plane threads used {:.2} CPU-s per GB on the sender, {:.2} on the receiver ({} CPUs)",
                tx_cpu.as_secs_f64() / gbytes,
                rx_cpu.as_secs_f64() / gbytes,
                std::thread::available_parallelism().map_or(1, |n| n.get()),
            ));
        }
        rows.push(row);
        if let Some(u) = p.a.peers().get("userspace_ipip").filter(|u| !u.is_null()) {
            eprintln!("sender's userspace IPIP counters: {u}");
        }
        if let Some(u) = p.b.peers().get("userspace_ipip").filter(|u| !u.is_null()) {
            eprintln!("receiver's userspace IPIP counters: {u}");
        }
        drop(p);
    }
    println!(
        "\niperf3, one TCP stream, {secs} s per run, median of {repeats} runs, veth underlay in namespaces;"
    );
    println!(
        "each share is the median of the runs' shares of the underlay measured right before each run on the same fabric;"
    );
    println!(
        "retrans and spurious are means per run: spurious counts retransmissions the receiver already had (D-SACK), i.e. packets reordered on the way, not lost"
    );
    println!(
        "{:<40} {:>8} {:>15} {:>12} {:>8} {:>9} {:>6}  target",
        "path", "Gbit/s", "(min-max)", "vs underlay", "retrans", "spurious", "load"
    );
    for r in &rows {
        let m = r.median();
        let lo = r
            .samples
            .iter()
            .map(|s| s.gbps)
            .fold(f64::INFINITY, f64::min);
        let hi = r.samples.iter().map(|s| s.gbps).fold(0.0, f64::max);
        let mean =
            |f: fn(&Sample) -> u64| r.samples.iter().map(f).sum::<u64>() / r.samples.len() as u64;
        let (retrans, spurious) = (mean(|s| s.retrans), mean(|s| s.spurious));
        let share = r.share();
        let target = match r.target {
            Target::None => "(floor)".to_string(),
            Target::Info(why) => why.to_string(),
            Target::Share(t) => format!(
                ">= {t:.2} of the underlay: {}",
                if share >= t { "met" } else { "MISSED" }
            ),
            Target::Gbps(t) => format!(">= {t} Gbit/s: {}", if m >= t { "met" } else { "MISSED" }),
        };
        println!(
            "{:<40} {m:>8.2} {:>15} {share:>12.2} {retrans:>8} {spurious:>9} {:>6.1}  {target}",
            r.what,
            format!("({lo:.2}-{hi:.2})"),
            r.load,
        );
    }
    for n in &notes {
        println!("{n}");
    }
}
