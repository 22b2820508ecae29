//! The benchmark suite: shimnet's front doors (REST, CNI binary, Docker plugin calls) and its
//! peers (reference CNI `bridge` + `host-local` + `ipMasq`, netavark) measured in the same run on
//! the same machine, each peer in its own "host" namespace; shimnetd's footprint; data-plane
//! throughput with iperf3 next to its kernel floors. Prints one table, writes
//! `target/bench/{results.txt,latency.csv,latency.png,shimnetd.log}`.
//!
//! `cargo bench --bench suite` as root (see `scripts/bench.sh`). `SHIMNET_BENCH_SHORT=1`: 20
//! containers, 2 s iperf3 runs (proves the suite works; figures are not meaningful).
//! `SHIMNET_BENCH_N`: containers in the sequential runs (default 1000). `SHIMNET_BENCH_DOORS`:
//! comma-separated subset (e.g. `rest,cni`). `SHIMNET_BENCH_IPERF_SECS`: iperf3 run length
//! (0 skips the data plane).

mod churn;
#[path = "../cni_support/mod.rs"]
mod cni_support;
#[path = "../common/mod.rs"]
mod common;
mod dataplane;
mod doors;
mod footprint;
mod plot;
mod run;
mod stats;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{container, TestHost};
use doors::{peer_host, Cni, DockerPlugin, Door, Metered, Netavark, Rest};
use shimnet::netns::NamedNetns;
use stats::{growth, summarize, table, Row};

struct Settings {
    n: usize,
    parallel: usize,
    block: usize,
    idle: Duration,
    reconcile_secs: u64,
    iperf_secs: u32,
    doors: Option<Vec<String>>,
}

impl Settings {
    fn from_env() -> Self {
        let short = std::env::var("SHIMNET_BENCH_SHORT").is_ok_and(|v| v == "1");
        let n = std::env::var("SHIMNET_BENCH_N")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(if short { 20 } else { 1000 });
        Settings {
            n,
            parallel: n.min(if short { 10 } else { 100 }),
            block: (n / 2).min(100),
            idle: Duration::from_secs(
                std::env::var("SHIMNET_BENCH_IDLE_SECS")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(if short { 4 } else { 60 }),
            ),
            reconcile_secs: if short { 1 } else { 10 },
            iperf_secs: std::env::var("SHIMNET_BENCH_IPERF_SECS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(if short { 2 } else { 10 }),
            doors: std::env::var("SHIMNET_BENCH_DOORS")
                .ok()
                .map(|v| v.split(',').map(|d| d.trim().to_lowercase()).collect()),
        }
    }
}

/// Picks the samples of one table group from a run: setup (false) or teardown (true).
type Pick<'a> = dyn Fn(&run::Run, bool) -> Vec<Duration> + 'a;

/// One door's sequential and parallel runs.
struct Measured {
    name: String,
    ops: (&'static str, &'static str),
    seq: run::Run,
    par: run::Run,
    shimnet: bool,
}

fn out_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench")
}

/// A shimnetd host whose periodic reconcile runs every `secs` (TestHost starts with it off).
fn daemon(secs: u64) -> TestHost {
    let mut h = TestHost::new("[[networks]]\nname = \"bench\"\nsubnet = \"10.200.0.0/16\"\n");
    h.stop_with(nix::sys::signal::Signal::SIGTERM);
    let cfg = std::fs::read_to_string(&h.config).expect("config");
    let cfg = cfg.replace(
        "reconcile_interval_secs = 0",
        &format!("reconcile_interval_secs = {secs}"),
    );
    std::fs::write(&h.config, cfg).expect("config");
    h.start();
    h
}

fn main() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("SKIPPED: the benchmark suite needs root (network namespaces)");
        return;
    }
    // Every namespace this process creates is named snb-...
    std::env::set_var("SHIMNET_TEST_PREFIX", "snb");
    let s = Settings::from_env();
    let mut report = String::new();
    macro_rules! say {
        ($($t:tt)*) => {{ let l = format!($($t)*); println!("{l}"); let _ = writeln!(report, "{l}"); }};
    }
    say!(
        "== shimnet benchmark suite: {} containers in turn, {} in parallel (same machine, same run) ==",
        s.n,
        s.parallel
    );

    let h = daemon(s.reconcile_secs);
    let pid = h.daemon.as_ref().expect("daemon").id();
    std::thread::sleep(Duration::from_millis(500));
    let rss_idle = footprint::Memory::of(pid);

    let rest = Rest {
        socket: h.socket.clone(),
        network: "bench".into(),
        host: h.ns.path().to_path_buf(),
    };
    let cni = Cni::shimnet(h.ns.path(), &h.socket, "snbcni0", "10.210.0.0/16");
    let docker = DockerPlugin::create(
        &h.dir.path().join("plugins/shimnet.sock"),
        h.ns.path(),
        "10.220.0.0/16",
    );
    let ref_host = peer_host("ref");
    let ref_data = tempfile::tempdir().expect("tempdir");
    let nv_host = peer_host("nv");
    let reference = Cni::reference(ref_host.path(), ref_data.path(), "10.201.0.0/16");
    let netavark = Netavark {
        bin: "/usr/lib/podman/netavark".into(),
        host: nv_host.path().to_path_buf(),
        config: tempfile::tempdir().expect("tempdir"),
    };
    let metered = [
        Metered::new(&rest, pid),
        Metered::new(&cni, pid),
        Metered::new(&docker, pid),
    ];
    let mut doors: Vec<(&dyn Door, bool)> =
        metered.iter().map(|m| (m as &dyn Door, true)).collect();
    if reference.bin.is_file() {
        doors.push((&reference, false));
    } else {
        say!("SKIPPED: reference CNI bridge plugin absent (apt-get install containernetworking-plugins)");
    }
    if netavark.bin.is_file() {
        doors.push((&netavark, false));
    } else {
        say!("SKIPPED: netavark absent (apt-get install netavark)");
    }
    if let Some(only) = &s.doors {
        doors.retain(|(d, _)| only.iter().any(|o| d.name().to_lowercase().contains(o)));
        say!("(only front doors and peers matching {only:?})");
    }

    // Warm-up: one setup/teardown each (network creation, page cache).
    let warm = [container("bw")];
    for (d, _) in &doors {
        run::sequential(*d, &warm);
    }
    for m in &metered {
        m.reset();
    }

    let mut measured = Vec::new();
    let (mut rss_full, mut rss_after_idle, mut idle_cpu, mut passes) = (
        footprint::Memory::default(),
        footprint::Memory::default(),
        Duration::ZERO,
        0,
    );
    for (d, shimnet) in &doors {
        // Fresh container namespaces for every door, as every real container has: a namespace
        // the host has never seen costs the kernel more on its first veth (it gets a namespace
        // id, found by a walk over all the others), and that part grows with the number of
        // containers; reusing the namespaces of an earlier door would hide it.
        let cs: Vec<NamedNetns> = (0..s.n).map(|_| container("bc")).collect();
        eprintln!("-- {} sequential {}", d.name(), s.n);
        let seq = if d.name() == rest.name() {
            run::sequential_with(*d, &cs, || {
                // Footprint with every endpoint attached, then idle CPU over a window that
                // holds several periodic reconcile passes.
                rss_full = footprint::Memory::of(pid);
                let before = (
                    footprint::cpu_time(pid),
                    h.log().matches("reconciled").count(),
                );
                std::thread::sleep(s.idle);
                idle_cpu = footprint::cpu_time(pid) - before.0;
                rss_after_idle = footprint::Memory::of(pid);
                passes = h.log().matches("reconciled").count() - before.1;
            })
        } else {
            run::sequential(*d, &cs)
        };
        eprintln!("-- {} parallel {}", d.name(), s.parallel);
        let par = run::parallel(*d, &cs[..s.parallel]);
        measured.push(Measured {
            name: d.name(),
            ops: d.ops(),
            seq,
            par,
            shimnet: *shimnet,
        });
    }

    // Table: first block, last block, parallel; peers' ratio against shimnet's CNI plugin (both
    // are a process started per operation).
    let k = s.block;
    let mut rows = Vec::new();
    let cni_name = cni.name();
    let groups: [(String, &Pick<'_>); 3] = [
        (format!("seq 1..{k}"), &|r, td| {
            if td {
                r.teardown[r.teardown.len() - k..].to_vec()
            } else {
                r.setup[..k].to_vec()
            }
        }),
        (format!("seq {}..{}", s.n - k + 1, s.n), &|r, td| {
            if td {
                r.teardown[..k].to_vec()
            } else {
                r.setup[r.setup.len() - k..].to_vec()
            }
        }),
        (format!("parallel {}", s.parallel), &|r, td| {
            if td {
                r.teardown.clone()
            } else {
                r.setup.clone()
            }
        }),
    ];
    for (group, pick) in &groups {
        for td in [false, true] {
            let base = measured
                .iter()
                .find(|m| m.name == cni_name)
                .and_then(|m| {
                    summarize(&pick(
                        if group.starts_with("par") {
                            &m.par
                        } else {
                            &m.seq
                        },
                        td,
                    ))
                })
                .map(|x| x.median);
            for m in &measured {
                let r = if group.starts_with("par") {
                    &m.par
                } else {
                    &m.seq
                };
                let Some(summary) = summarize(&pick(r, td)) else {
                    continue;
                };
                rows.push(Row {
                    group: group.clone(),
                    what: format!("{} {}", m.name, if td { m.ops.1 } else { m.ops.0 }),
                    summary,
                    ratio: (!m.shimnet)
                        .then(|| base.map(|b| summary.median / b))
                        .flatten(),
                });
            }
        }
    }
    say!("\n-- control plane (ms per container; ratio = peer median / shimnet CNI median) --");
    say!("{}", table(&rows).trim_end());
    // The CNI target: every peer's setup median at least 10x shimnet CNI's ADD median, in
    // the first and the last block of the sequential run.
    for m in measured.iter().filter(|m| !m.shimnet) {
        let what = format!("{} {}", m.name, m.ops.0);
        let ratios: Vec<String> = rows
            .iter()
            .filter(|r| r.what == what && r.group.starts_with("seq"))
            .filter_map(|r| r.ratio.map(|x| format!("{x:.1}x at {}", r.group)))
            .collect();
        if !ratios.is_empty() {
            say!(
                "shimnet CNI ADD vs {what}: {} (target >= 10x)",
                ratios.join(", ")
            );
        }
    }
    say!("\n-- growth with endpoints present: median of the last {k} / first {k} (target <= 1.25) --");
    for m in &measured {
        let g = |v: &[Duration]| growth(v, k).map_or("-".into(), |x| format!("{x:.2}"));
        let mut rev = m.seq.teardown.clone();
        rev.reverse();
        say!(
            "{:<28} {:<12} {:>5}   {:<12} {:>5}   deletions drained {:.0} ms after the last of {}",
            m.name,
            m.ops.0,
            g(&m.seq.setup),
            m.ops.1,
            g(&rev),
            m.seq.drain.as_secs_f64() * 1e3,
            s.n
        );
    }
    for m in &measured {
        say!(
            "parallel {}: {:<28} all set up in {:.0} ms, all torn down in {:.0} ms",
            s.parallel,
            m.name,
            m.par.wall.0.as_secs_f64() * 1e3,
            m.par.wall.1.as_secs_f64() * 1e3
        );
    }
    say!("\n-- shimnetd CPU time per operation (user+system, all threads; independent of load from other processes) --");
    for m in metered
        .iter()
        .filter(|m| measured.iter().any(|x| x.name == m.name()))
    {
        let (a, b) = m.ops();
        let f = |setup, r: std::ops::Range<usize>| {
            m.cpu_per_op(setup, r)
                .map_or("-".into(), |x| format!("{x:.2} ms"))
        };
        let ratio = |setup, r1: std::ops::Range<usize>, r2: std::ops::Range<usize>| match (
            m.cpu_per_op(setup, r1),
            m.cpu_per_op(setup, r2),
        ) {
            (Some(x), Some(y)) if x > 0.0 => format!("{:.2}x", y / x),
            _ => "-".into(),
        };
        let n = s.n;
        say!(
            "{:<24} {a} {} at 1..{k}, {} at {}..{n} ({});  {b} {} with <= {k} present, {} with ~{n} ({})",
            m.name(),
            f(true, 0..k),
            f(true, n - k..n),
            n - k + 1,
            ratio(true, 0..k, n - k..n),
            f(false, n - k..n),
            f(false, 0..k),
            ratio(false, n - k..n, 0..k),
        );
    }
    if s.doors
        .as_ref()
        .is_none_or(|d| d.iter().any(|x| "shimnet rest".contains(x.as_str())))
    {
        eprintln!("-- interleaved churn");
        let rounds = k;
        let c = churn::interleaved(&h, k, s.n, rounds);
        say!(
            "\n-- shimnet REST, {rounds} rounds alternating between a network with {k} endpoints and one with {} (same moments, same load) --",
            s.n
        );
        for (what, (small, large)) in [("attach", &c.attach), ("detach", &c.detach)] {
            let (a, b) = (summarize(small), summarize(large));
            if let (Some(a), Some(b)) = (a, b) {
                say!(
                    "{what}: median {:.2} ms with {k} present, {:.2} ms with {} present: {:.2}x (target <= 1.25); p90 {:.2} / {:.2} ms",
                    a.median,
                    b.median,
                    s.n,
                    b.median / a.median,
                    a.p90,
                    b.p90
                );
            }
        }
    }
    say!("\n-- footprint (shimnetd) --");
    say!("RSS idle (one network, no endpoints): {rss_idle}");
    say!("RSS with {} endpoints: {rss_full} (target < 20 MiB)", s.n);
    say!(
        "RSS with {} endpoints after {} s idle ({passes} safety pass(es)): {rss_after_idle} (target < 20 MiB)",
        s.n,
        s.idle.as_secs()
    );
    say!(
        "CPU while idle with {} endpoints: {:.1} ms over {} s ({:.3} %), {} periodic reconcile pass(es) every {} s",
        s.n,
        idle_cpu.as_secs_f64() * 1e3,
        s.idle.as_secs(),
        idle_cpu.as_secs_f64() / s.idle.as_secs_f64() * 100.0,
        passes,
        s.reconcile_secs
    );

    say!(
        "\n-- data plane (iperf3, one TCP stream, {} s) --",
        s.iperf_secs
    );
    let mut results: Vec<(&str, f64)> = Vec::new();
    for sc in dataplane::scenarios()
        .into_iter()
        .filter(|_| s.iperf_secs > 0)
    {
        eprintln!("-- iperf3 {}", sc.name);
        let ends = (sc.build)();
        let gbps = dataplane::iperf3(&ends, s.iperf_secs);
        drop(ends);
        let vs = sc
            .floor
            .and_then(|f| results.iter().find(|(n, _)| *n == f))
            .map_or(String::new(), |(f, g)| {
                format!("  {:.0} % of {f}", gbps / g * 100.0)
            });
        say!("{:<44} {:>6.1} Gbit/s{vs}", sc.name, gbps);
        results.push((sc.name, gbps));
    }

    let mut series = Vec::new();
    for m in &measured {
        let n = m.seq.setup.len();
        series.push(plot::Series {
            label: format!("{} {}", m.name, m.ops.0),
            teardown: false,
            points: m
                .seq
                .setup
                .iter()
                .enumerate()
                .map(|(i, d)| (i, *d))
                .collect(),
        });
        series.push(plot::Series {
            label: format!("{} {}", m.name, m.ops.1),
            teardown: true,
            points: m
                .seq
                .teardown
                .iter()
                .enumerate()
                .map(|(i, d)| (n - i, *d))
                .collect(),
        });
    }
    match plot::render(&out_dir(), &series) {
        Ok(p) => say!("\nplot: {}", p.display()),
        Err(e) => say!("\nplot not rendered: {e}"),
    }
    let _ = std::fs::create_dir_all(out_dir());
    std::fs::write(out_dir().join("results.txt"), &report).expect("write results");
    std::fs::write(out_dir().join("shimnetd.log"), h.log()).expect("write daemon log");
    println!("results: {}", out_dir().join("results.txt").display());
}
