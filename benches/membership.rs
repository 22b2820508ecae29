//! Membership convergence with etcd, and the static peer file's reload time, in one run.
//!
//! For each cluster size N: a 3-member etcd in its own namespaces, N nodes in racks of five (one
//! underlay subnet per rack behind the router; `auto` mode: host-gw inside a rack, VXLAN across;
//! default lease TTL and pass interval), started one after another. (Racks, not one big L2
//! segment: all namespaces share the kernel's one ARP table, whose default limit of 1,024
//! entries a full mesh of 25+ nodes on one segment would overflow — every real host has its own.) For each node: the time from its daemon's start (and from its API
//! answering) until every node already running has a route to its leased subnet — taken from
//! `ip -ts monitor route` in every node, so nothing is polled. Then the steady state: etcd
//! requests per node per minute, counted on the members' own `/metrics` (unary calls handled
//! plus messages received on streams), and the daemons' CPU time. Last, the same question for
//! the static peer file: a node appended to every node's file, routes everywhere as the daemons'
//! watch (inotify) takes it, and after a SIGHUP.
//!
//! `cargo bench --bench membership [-- [--steady SECS] [--file-nodes M] N...]` (default: 10 50,
//! 60 s steady state, 10 file nodes). Run as root.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/etcd_support/mod.rs"]
mod etcd_support;
#[path = "../tests/peering_support/mod.rs"]
mod peering_support;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use etcd_support::*;
use peering_support::*;

/// Microseconds since the epoch of an `ip -ts` stamp (`[2026-12-02T06:53:27.347735]`, UTC).
fn stamp_us(line: &str) -> Option<i64> {
    let s = line.strip_prefix('[')?.split(']').next()?;
    let (date, time) = s.split_once('T')?;
    let d: Vec<i64> = date
        .split('-')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    let (hms, frac) = time.split_once('.')?;
    let t: Vec<i64> = hms
        .split(':')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    // Days from the civil date (Howard Hinnant's algorithm).
    let (y, m, day) = (d[0] - i64::from(d[1] <= 2), d[1], d[2]);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + t[0] * 3600 + t[1] * 60 + t[2];
    let us: i64 = format!("{frac:0<6}")[..6].parse().ok()?;
    Some(secs * 1_000_000 + us)
}

/// Nodes per underlay subnet.
const RACK: usize = 5;

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

/// When a route monitor first saw a shimnet route to `subnet` added.
fn route_seen(monitor: &Bg, subnet: &str) -> Option<i64> {
    let prefix = format!("] {subnet} ");
    monitor
        .text()
        .lines()
        .find(|l| l.contains(&prefix) && l.contains("proto 201") && !l.contains("Deleted"))
        .and_then(stamp_us)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// utime + stime of a process, in seconds.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|x| x.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|x| x.parse().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks / hz
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i]
}

fn summary(what: &str, mut v: Vec<f64>) -> String {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    format!(
        "{what}: median {:.0} ms, p90 {:.0} ms, max {:.0} ms (n={})",
        quantile(&v, 0.5),
        quantile(&v, 0.9),
        v.last().copied().unwrap_or(f64::NAN),
        v.len()
    )
}

/// etcd requests so far: unary calls handled plus messages received on streams, by method.
fn etcd_requests(etcd: &Etcd) -> std::collections::BTreeMap<String, f64> {
    let mut out = std::collections::BTreeMap::new();
    for m in etcd.members.iter().filter(|m| m.running()) {
        for l in m.metrics(None).lines() {
            let unary =
                l.starts_with("grpc_server_handled_total{") && l.contains("grpc_type=\"unary\"");
            let stream =
                l.starts_with("grpc_server_msg_received_total{") && l.contains("_stream\"");
            if !(unary || stream) {
                continue;
            }
            let method = l
                .split("grpc_method=\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .unwrap_or("?")
                .to_string();
            let n: f64 = l
                .rsplit(' ')
                .next()
                .and_then(|x| x.parse().ok())
                .unwrap_or(0.0);
            *out.entry(method).or_insert(0.0) += n;
        }
    }
    out
}

fn etcd_run(n: usize, steady: u64) {
    let racks = n.div_ceil(RACK);
    println!("== etcd membership, {n} nodes in {racks} racks of up to {RACK} (3 etcd members; auto mode) ==");
    println!("load average before: {}", loadavg());
    let mut f = Fabric::new(racks + 1);
    let etcd = Etcd::new(&mut f, racks, 3);
    let section = etcd.section("dial_timeout_secs = 2\n");
    let peering = "mode = \"auto\"\nsource = \"etcd\"\nreconcile_interval_secs = 3\n";
    let mut nodes: Vec<Node> = Vec::new();
    let mut monitors: Vec<Bg> = Vec::new();
    let (mut from_start, mut from_ready, mut startup) = (Vec::new(), Vec::new(), Vec::new());
    for k in 0..n {
        let mut node = f.node_with(
            &format!("m{k:02}"),
            k % racks,
            10 + (k / racks) as u8,
            None,
            peering,
            &section,
        );
        let mon = Bg::start(
            node.ns.name(),
            &["env", "TZ=UTC", "ip", "-ts", "monitor", "route"],
        );
        std::thread::sleep(Duration::from_millis(50));
        let t0 = now_us();
        node.spawn();
        node.wait_started(Duration::from_secs(60));
        let ready = now_us();
        let subnet = leased(&node);
        let deadline = Instant::now() + Duration::from_secs(60);
        let seen: Vec<i64> = loop {
            let s: Vec<Option<i64>> = monitors.iter().map(|m| route_seen(m, &subnet)).collect();
            if s.iter().all(Option::is_some) {
                break s.into_iter().flatten().collect();
            }
            assert!(
                Instant::now() < deadline,
                "{subnet} not routed everywhere within 60 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        startup.push((ready - t0) as f64 / 1000.0);
        if let Some(last) = seen.iter().max() {
            from_start.push((last - t0) as f64 / 1000.0);
            from_ready.push((last - ready).max(0) as f64 / 1000.0);
        }
        nodes.push(node);
        monitors.push(mon);
    }
    println!(
        "{}",
        summary(
            "daemon start -> API answering (incl. subnet lease)",
            startup
        )
    );
    println!(
        "{}",
        summary(
            "convergence: daemon start -> every other node routes to its subnet",
            from_start
        )
    );
    println!(
        "{}",
        summary(
            "convergence: API answering -> every other node routes to its subnet",
            from_ready
        )
    );
    println!("load average after the joins: {}", loadavg());
    // Steady state.
    std::thread::sleep(Duration::from_secs(5));
    let pids: Vec<u32> = nodes
        .iter()
        .filter_map(|n| n.daemon.as_ref().map(|c| c.id()))
        .collect();
    let cpu0: f64 = pids.iter().map(|p| cpu_secs(*p)).sum();
    let r0 = etcd_requests(&etcd);
    std::thread::sleep(Duration::from_secs(steady));
    let r1 = etcd_requests(&etcd);
    let cpu1: f64 = pids.iter().map(|p| cpu_secs(*p)).sum();
    let per_min = |total: f64| total / n as f64 / (steady as f64 / 60.0);
    let total: f64 = r1
        .iter()
        .map(|(k, v)| v - r0.get(k).copied().unwrap_or(0.0))
        .sum();
    println!(
        "steady state over {steady} s: {:.2} etcd requests per node per minute (lease TTL 60 s: keep-alives every 20 s expected = 3.00)",
        per_min(total)
    );
    for (k, v) in &r1 {
        let d = v - r0.get(k).copied().unwrap_or(0.0);
        if d > 0.0 {
            println!("  {k}: {:.2} per node per minute", per_min(d));
        }
    }
    println!(
        "steady state: shimnetd CPU {:.2} % of one core per node (pass every 3 s probing {} peers); load average {}",
        (cpu1 - cpu0) / steady as f64 / n as f64 * 100.0,
        n - 1,
        loadavg()
    );
    drop(monitors);
}

fn file_run(m: usize) {
    println!(
        "== static peer file, {m} nodes + 2 joining (watched with inotify; [peering] reconcile_interval_secs = 3 unused with event-driven repair) =="
    );
    let mut f = Fabric::new(2);
    let peering = "mode = \"auto\"\nreconcile_interval_secs = 3\n";
    let mut nodes: Vec<Node> = (0..m + 2)
        .map(|k| {
            f.node(
                &format!("f{k:02}"),
                k % 2,
                10 + (k / 2) as u8,
                100 + k as u8,
                peering,
            )
        })
        .collect();
    let write = |nodes: &[Node], members: usize| {
        for i in 0..members {
            let others: Vec<(&Node, Option<&str>)> = (0..members)
                .filter(|j| *j != i)
                .map(|j| (&nodes[j], None))
                .collect();
            nodes[i].set_peers(&others);
        }
    };
    write(&nodes, m);
    for n in nodes.iter_mut().take(m) {
        n.start();
    }
    let monitors: Vec<Bg> = nodes
        .iter()
        .take(m)
        .map(|n| {
            Bg::start(
                n.ns.name(),
                &["env", "TZ=UTC", "ip", "-ts", "monitor", "route"],
            )
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    for (k, hup) in [(m, false), (m + 1, true)] {
        nodes[k].start();
        let t0 = now_us();
        write(&nodes, k + 1);
        if hup {
            for n in nodes.iter().take(k) {
                n.hup();
            }
        }
        let subnet = nodes[k].pod_cidr.clone();
        let deadline = Instant::now() + Duration::from_secs(30);
        let last = loop {
            let s: Vec<Option<i64>> = monitors.iter().map(|mo| route_seen(mo, &subnet)).collect();
            if s.iter().all(Option::is_some) {
                break s.into_iter().flatten().max().unwrap();
            }
            assert!(Instant::now() < deadline, "{subnet} not routed everywhere");
            std::thread::sleep(Duration::from_millis(20));
        };
        println!(
            "peer file: new entry written on every node -> every node routes to it: {:.0} ms ({})",
            (last - t0) as f64 / 1000.0,
            if hup {
                "SIGHUP sent to every daemon after writing"
            } else {
                "taken from the watch, no SIGHUP"
            }
        );
    }
}

fn main() {
    let mut sizes = Vec::new();
    let mut steady = 60;
    let mut file_nodes = 10;
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    while let Some(a) = args.next() {
        match a.as_str() {
            "--steady" => {
                steady = args
                    .next()
                    .and_then(|s| s.parse().ok())
                    .expect("--steady SECS")
            }
            "--file-nodes" => {
                file_nodes = args
                    .next()
                    .and_then(|s| s.parse().ok())
                    .expect("--file-nodes M")
            }
            n => sizes.push(n.parse::<usize>().expect("a node count")),
        }
    }
    if sizes.is_empty() {
        sizes = vec![10, 50];
    }
    println!(
        "membership benchmark on {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    for n in sizes {
        etcd_run(n, steady);
    }
    file_run(file_nodes);
}
