//! Name resolution benchmark: shimnetd's DNS server next to Debian's dnsmasq serving the same
//! names (an `--addn-hosts` file with the same names and addresses), asked by the same client
//! container in the same run. Latency samples alternate between the two servers query by query,
//! so machine noise lands on both alike.
//!
//! - answer latency p50/p99 for a local name (a random one of N each time) and for a forwarded
//!   name (both servers forward to the same upstream dnsmasq in the "outside" namespace; dnsmasq
//!   runs with `--cache-size=0`, so neither caches);
//! - queries per second on one core: each server pinned to CPU 0 (shimnetd's UDP listener
//!   thread, dnsmasq's only thread), the load generator on CPU 1 keeping 64 queries in flight;
//! - resident memory: shimnetd with the network and no endpoints, then with N endpoints named;
//!   dnsmasq with the N names.
//!
//! `cargo bench --bench dns` as root (scripts/bench.sh). `SHIMNET_BENCH_SHORT=1`: 50 names,
//! fewer samples, 1 s load (proves the bench works; figures are not meaningful).
//! `SHIMNET_BENCH_DNS_NAMES` overrides the number of names (default 1000).

#[path = "../common/mod.rs"]
mod common;
#[path = "../dns_support/mod.rs"]
mod dns_support;
#[allow(dead_code)]
mod footprint;
#[allow(dead_code)]
mod stats;

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{container, sh, TestHost};
use dns_support::{answer_of, query_bytes, Answer, Dnsmasq};
use hickory_proto::op::Message;
use hickory_proto::rr::RecordType;
use serde_json::json;
use shimnet::netns::{run_in, NamedNetns};
use stats::summarize;

/// Where dnsmasq listens: an address on the host namespace's loopback, reached from the client
/// through the gateway exactly like the gateway itself.
const DNSMASQ_ADDR: Ipv4Addr = Ipv4Addr::new(10, 149, 8, 53);
const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 149, 0, 1);
/// Queries kept in flight by the load generator.
const WINDOW: usize = 64;

struct Settings {
    names: usize,
    samples: usize,
    load: Duration,
}

fn out_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench")
}

/// Pins the calling thread to `cpu`.
fn pin_self(cpu: usize) {
    let mut set = nix::sched::CpuSet::new();
    if set.set(cpu).is_ok() {
        let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
    }
}

/// The thread id of shimnetd's UDP listener thread (`shimnet-dns-udp`; the bench's network has
/// one).
fn dns_thread(pid: u32) -> Option<u32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
        .find(|t| {
            std::fs::read_to_string(t.path().join("comm"))
                .is_ok_and(|c| c.trim() == "shimnet-dns-udp")
        })
        .and_then(|t| t.file_name().to_str()?.parse().ok())
}

fn pin(tid: u32, cpu: usize) {
    sh(&["taskset", "-p", "-c", &cpu.to_string(), &tid.to_string()]);
}

/// One query, one reply: the round trip and what came back.
fn exchange(s: &UdpSocket, server: IpAddr, name: &str, id: u16) -> (Duration, Answer) {
    let q = query_bytes(name, RecordType::A, id);
    let mut buf = [0u8; 1500];
    let t = Instant::now();
    s.send_to(&q, (server, 53)).expect("send");
    loop {
        match s.recv(&mut buf) {
            Ok(n) => {
                let m = Message::from_vec(&buf[..n]).expect("decodes");
                if m.id == id {
                    return (t.elapsed(), answer_of(&m));
                }
            }
            Err(_) => return (t.elapsed(), Answer::Timeout),
        }
    }
}

/// Latency samples for each server, alternating query by query.
fn latencies(
    servers: [IpAddr; 2],
    names: &[String],
    samples: usize,
) -> ([Vec<Duration>; 2], usize) {
    let s = UdpSocket::bind("0.0.0.0:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut out = [Vec::new(), Vec::new()];
    let mut bad = 0;
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for i in 0..samples {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let name = &names[(seed % names.len() as u64) as usize];
        // Alternate which server goes first as well.
        let order = if i % 2 == 0 { [0, 1] } else { [1, 0] };
        for k in order {
            let (d, a) = exchange(&s, servers[k], name, (i * 2 + k) as u16);
            match a {
                Answer::Records(_) => out[k].push(d),
                _ => bad += 1,
            }
        }
    }
    (out, bad)
}

/// Replies per second from `server` with WINDOW queries kept in flight for `dur`.
fn throughput(server: IpAddr, names: &[String], dur: Duration) -> (f64, usize) {
    let s = UdpSocket::bind("0.0.0.0:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let queries: Vec<Vec<u8>> = names
        .iter()
        .take(256)
        .enumerate()
        .map(|(i, n)| query_bytes(n, RecordType::A, i as u16))
        .collect();
    let mut buf = [0u8; 1500];
    let (mut inflight, mut replies, mut lost, mut next) = (0usize, 0usize, 0usize, 0usize);
    let start = Instant::now();
    while start.elapsed() < dur {
        while inflight < WINDOW {
            let q = &queries[next % queries.len()];
            next += 1;
            if s.send_to(q, (server, 53)).is_ok() {
                inflight += 1;
            }
        }
        match s.recv(&mut buf) {
            Ok(_) => {
                replies += 1;
                inflight -= 1;
            }
            Err(_) => {
                // Nothing for 100 ms: whatever is in flight is lost.
                lost += inflight;
                inflight = 0;
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    (replies as f64 / secs, lost)
}

fn us(d: f64) -> String {
    format!("{:.0}", d * 1e3)
}

fn main() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("SKIPPED: the DNS benchmark needs root (network namespaces)");
        return;
    }
    std::env::set_var("SHIMNET_TEST_PREFIX", "snd");
    let short = std::env::var("SHIMNET_BENCH_SHORT").is_ok_and(|v| v == "1");
    let s = Settings {
        names: std::env::var("SHIMNET_BENCH_DNS_NAMES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(if short { 50 } else { 1000 }),
        samples: if short { 300 } else { 5000 },
        load: Duration::from_secs(if short { 1 } else { 5 }),
    };
    let mut report = String::new();
    macro_rules! say {
        ($($t:tt)*) => {{ let l = format!($($t)*); println!("{l}"); let _ = writeln!(report, "{l}"); }};
    }

    let dir = tempfile::tempdir().unwrap();
    let resolv = dir.path().join("resolv.conf");
    let h = TestHost::new(&format!(
        "[dns]\nresolv_conf = \"{}\"\nmax_queries_per_source = 0\n",
        resolv.display()
    ));
    std::fs::write(&resolv, format!("nameserver {}\n", h.outside_ip)).unwrap();
    let Some(upstream) = Dnsmasq::start(
        h.outside.name(),
        h.outside_ip,
        &[("fwd.example", "192.0.2.77")],
    ) else {
        return;
    };
    let pid = h.daemon.as_ref().expect("daemon").id();
    h.create_network(json!({"name": "bd", "subnet": "10.149.0.0/22", "gateway": GATEWAY.to_string(), "dns": true}));
    std::thread::sleep(Duration::from_millis(300));
    let rss_before = footprint::Memory::of(pid).rss_kib;

    // N containers with one name each, attached in parallel through the REST API.
    eprintln!("-- attaching {} named containers", s.names);
    let cs: Vec<NamedNetns> = (0..s.names).map(|_| container("bn")).collect();
    let names: Vec<String> = (0..s.names).map(|i| format!("host{i:04}")).collect();
    let hosts = std::sync::Mutex::new(String::new());
    std::thread::scope(|sc| {
        for chunk in cs
            .chunks(s.names.div_ceil(8))
            .zip(names.chunks(s.names.div_ceil(8)))
        {
            let (h, hosts) = (&h, &hosts);
            sc.spawn(move || {
                for (c, n) in chunk.0.iter().zip(chunk.1) {
                    let ep = h.attach("bd", c, json!({"name": n}));
                    let ip = common::ip_of(&ep);
                    hosts.lock().unwrap().push_str(&format!("{ip} {n}\n"));
                }
            });
        }
    });
    let client = container("bq");
    h.attach("bd", &client, json!({"name": "client"}));
    std::thread::sleep(Duration::from_millis(300));
    let rss_names = footprint::Memory::of(pid).rss_kib;

    // dnsmasq in the host namespace on a loopback address, the same names from a hosts file,
    // forwarding to the same upstream, no cache.
    sh(&[
        "ip",
        "-n",
        h.ns.name(),
        "addr",
        "add",
        &format!("{DNSMASQ_ADDR}/32"),
        "dev",
        "lo",
    ]);
    let hosts_file = dir.path().join("hosts");
    std::fs::write(&hosts_file, hosts.into_inner().unwrap()).unwrap();
    let dm = Dnsmasq::start_with(
        h.ns.name(),
        DNSMASQ_ADDR,
        &[
            format!("--addn-hosts={}", hosts_file.display()),
            format!("--server={}", h.outside_ip),
            "--cache-size=0".into(),
            "--local-ttl=5".into(),
        ],
    )
    .expect("dnsmasq");
    let dm_pid = dm.pid() as u32;
    std::thread::sleep(Duration::from_millis(300));
    let version = String::from_utf8_lossy(
        &std::process::Command::new("/usr/sbin/dnsmasq")
            .arg("--version")
            .output()
            .unwrap()
            .stdout,
    )
    .split_whitespace()
    .take(3)
    .collect::<Vec<_>>()
    .join(" ");

    let servers: [IpAddr; 2] = [GATEWAY.into(), DNSMASQ_ADDR.into()];
    let local = names.clone();
    let fwd = vec!["fwd.example.".to_string()];
    let local_q: Vec<String> = local.iter().map(|n| format!("{n}.")).collect();
    // Both answer the same thing before anything is timed.
    let check = run_in(client.path(), {
        let q = local_q.clone();
        move || {
            let s = UdpSocket::bind("0.0.0.0:0").unwrap();
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            [
                exchange(&s, servers[0], &q[0], 1).1,
                exchange(&s, servers[1], &q[0], 2).1,
            ]
        }
    })
    .unwrap();
    assert_eq!(
        check[0], check[1],
        "both servers answer {} alike",
        local_q[0]
    );
    assert!(matches!(check[0], Answer::Records(_)), "{:?}", check[0]);

    eprintln!("-- latency, {} samples each", s.samples);
    let (lat_local, bad_local) = run_in(client.path(), {
        let (q, n) = (local_q.clone(), s.samples);
        move || latencies(servers, &q, n)
    })
    .unwrap();
    let (lat_fwd, bad_fwd) = run_in(client.path(), {
        let (q, n) = (fwd.clone(), s.samples / 5);
        move || latencies(servers, &q, n)
    })
    .unwrap();

    eprintln!(
        "-- throughput, {:?} each, servers pinned to CPU 0, client to CPU 1",
        s.load
    );
    let tid = dns_thread(pid).expect("shimnet-dns-udp thread");
    pin(tid, 0);
    pin(dm_pid, 0);
    let qps = run_in(client.path(), {
        let (q, load) = (local_q.clone(), s.load);
        move || {
            pin_self(1);
            // Alternate the servers in halves so both see the same moments.
            let mut out = [(0.0, 0usize), (0.0, 0usize)];
            for round in 0..2 {
                for k in [round % 2, 1 - round % 2] {
                    let (r, l) = throughput(servers[k], &q, load / 2);
                    out[k].0 += r / 2.0;
                    out[k].1 += l;
                }
            }
            out
        }
    })
    .unwrap();
    let rss_dm = footprint::Memory::of(dm_pid).rss_kib;

    // What the names cost an attach: a named container attached and detached on this network
    // (N names), on a network with as many endpoints and DNS off (the same containers' second
    // interfaces: the same bridge size, no names), and on a network with DNS on and no other
    // endpoints, alternating, fresh containers.
    let rounds = if short { 10 } else { 100 };
    eprintln!(
        "-- churn: {rounds} named attach + detach with {} names, with as many endpoints and no names, and on an empty network",
        s.names
    );
    h.create_network(json!({"name": "bf", "subnet": "10.149.32.0/22", "dns": false}));
    std::thread::scope(|sc| {
        for chunk in cs.chunks(s.names.div_ceil(8)) {
            let h = &h;
            sc.spawn(move || {
                for c in chunk {
                    h.attach("bf", c, json!({"ifname": "eth1"}));
                }
            });
        }
    });
    h.create_network(json!({"name": "be", "subnet": "10.149.16.0/22", "dns": true}));
    let spares: Vec<[NamedNetns; 3]> = (0..rounds)
        .map(|_| [container("bc"), container("bc"), container("bc")])
        .collect();
    let mut churn: [Vec<Duration>; 3] = Default::default();
    for (r, trio) in spares.iter().enumerate() {
        for (k, (net, c)) in ["bd", "bf", "be"].into_iter().zip(trio).enumerate() {
            let t = Instant::now();
            h.attach(net, c, json!({"name": format!("churn{r}")}));
            h.detach(net, c.name());
            churn[k].push(t.elapsed());
        }
    }
    drop(spares);

    let sum = |v: &[Duration]| summarize(v).expect("samples");
    let (sl, dl) = (sum(&lat_local[0]), sum(&lat_local[1]));
    let (sf, df) = (sum(&lat_fwd[0]), sum(&lat_fwd[1]));
    say!(
        "== name resolution: shimnetd next to {version}, {} names, same client, same run ==",
        s.names
    );
    say!(
        "{:<44} {:>16} {:>16} {:>16}",
        "",
        "shimnetd",
        "dnsmasq",
        "shimnetd/dnsmasq"
    );
    say!(
        "{:<44} {:>16} {:>16} {:>16}",
        format!("local name, p50 / p99 (µs, {} each)", sl.n),
        format!("{} / {}", us(sl.median), us(sl.p99)),
        format!("{} / {}", us(dl.median), us(dl.p99)),
        format!("{:.2} / {:.2}", sl.median / dl.median, sl.p99 / dl.p99)
    );
    say!(
        "{:<44} {:>16} {:>16} {:>16}",
        format!("forwarded name, p50 / p99 (µs, {} each)", sf.n),
        format!("{} / {}", us(sf.median), us(sf.p99)),
        format!("{} / {}", us(df.median), us(df.p99)),
        format!("{:.2} / {:.2}", sf.median / df.median, sf.p99 / df.p99)
    );
    say!(
        "{:<44} {:>16} {:>16} {:>16}",
        "local name, queries/s on one core",
        format!("{:.0}", qps[0].0),
        format!("{:.0}", qps[1].0),
        format!("{:.2}", qps[0].0 / qps[1].0)
    );
    say!(
        "{:<44} {:>16} {:>16}",
        format!("RSS with {} names (MiB)", s.names),
        format!("{:.1}", rss_names as f64 / 1024.0),
        format!("{:.1}", rss_dm as f64 / 1024.0)
    );
    say!(
        "shimnetd RSS before the names: {:.1} MiB (the rest is {} endpoints' records as much as their names); dnsmasq forwards with --cache-size=0",
        rss_before as f64 / 1024.0,
        s.names
    );
    say!(
        "failed samples: local {bad_local}, forwarded {bad_fwd}; lost in the load runs: shimnetd {}, dnsmasq {}",
        qps[0].1,
        qps[1].1
    );
    let (full, unnamed, empty) = (sum(&churn[0]), sum(&churn[1]), sum(&churn[2]));
    say!(
        "named attach + detach (REST), median of {}: {:.2} ms with {} names, {:.2} ms with as many endpoints and no names: {:.2}x (the names' share; target <= 1.25)",
        full.n,
        full.median,
        s.names,
        unnamed.median,
        full.median / unnamed.median
    );
    say!(
        "  on an empty network with DNS: {:.2} ms; with {} names {:.2}x of it, with as many endpoints and no names {:.2}x (the bridge's size)",
        empty.median,
        s.names,
        full.median / empty.median,
        unnamed.median / empty.median
    );
    say!("target: local answers at least as fast as dnsmasq (p50 ratio <= 1.00)");
    drop(dm);
    drop(upstream);
    drop(client);
    drop(cs);
    let _ = std::fs::create_dir_all(out_dir());
    std::fs::write(out_dir().join("dns.txt"), &report).expect("write results");
    println!("results: {}", out_dir().join("dns.txt").display());
}
