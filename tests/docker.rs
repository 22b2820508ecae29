//! End-to-end tests against a real dockerd (Debian `docker.io` 20.10): shimnetd serves the plugin
//! socket in a test "host" namespace and dockerd runs in the same namespace with its own mount
//! namespace (see `dockerd/mod.rs`). Containers are real docker containers (busybox). Run as root.

mod common;
mod dockerd;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use dockerd::{Dockerd, IMAGE};
use nix::sys::signal::Signal;
use serde_json::json;

/// dockerd flags for a daemon whose only bridge networks are shimnet's.
const SHIMNET_ONLY: &[&str] = &["--bridge=none", "--iptables=false"];

fn skip() -> bool {
    if let Some(why) = dockerd::unavailable() {
        eprintln!("SKIPPED: dockerd cannot run here: {why}");
        return true;
    }
    false
}

fn setup(dockerd_args: &[&str]) -> (TestHost, Dockerd) {
    let h = TestHost::new("");
    let d = Dockerd::start(h.ns.name(), &h.dir.path().join("plugins"), dockerd_args);
    (h, d)
}

/// `GET /` over busybox nc from namespace `ns`; the body's last line.
fn http_get(ns: &str, ip: &str, port: u16) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "sh", "-c"])
        .arg(format!(
            "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | busybox nc -w 3 {ip} {port}"
        ))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or("")
        .to_string()
}

/// Links of the host namespace that shimnet or docker made for containers/networks.
fn leftovers(h: &TestHost) -> Vec<String> {
    links_in(h.ns.name())
        .into_iter()
        .filter(|l| l.starts_with("br-") || l.starts_with("snv") || l.starts_with("snp"))
        .collect()
}

const HELLO: &str = "hello from shimnet";

#[test]
fn networks_containers_nat_ports_and_cleanup() {
    if skip() {
        return;
    }
    let (h, d) = setup(SHIMNET_ONLY);
    // shimnet IPAM, options translated.
    d.ok(&[
        "network",
        "create",
        "-d",
        "shimnet",
        "--ipam-driver",
        "shimnet",
        "--subnet",
        "10.230.0.0/24",
        "-o",
        "com.docker.network.driver.mtu=1400",
        "snet",
    ]);
    // docker's default IPAM with a gateway and an aux address.
    d.ok(&[
        "network",
        "create",
        "-d",
        "shimnet",
        "--subnet",
        "10.231.0.0/24",
        "--gateway",
        "10.231.0.254",
        "--aux-address",
        "r=10.231.0.2",
        "-o",
        "com.docker.network.bridge.name=dnet0",
        "dnet",
    ]);
    assert!(h
        .ip(&["-o", "addr", "show", "dnet0"])
        .contains("10.231.0.254/24"));
    let nets = h.call("GET", "/v1/networks", None);
    assert_eq!(nets.as_array().unwrap().len(), 2, "{nets}");

    for (net, gw) in [("snet", "10.230.0.1"), ("dnet", "10.231.0.254")] {
        let c1 = format!("{net}-c1");
        d.ok(&[
            "run",
            "-d",
            "--name",
            &c1,
            "--network",
            net,
            IMAGE,
            "sleep",
            "600",
        ]);
        let ip1 = d.ip_of(&c1);
        // eth0 with docker's MAC scheme, the network MTU, default route via the gateway.
        let link = d.ok(&["exec", &c1, "ip", "-o", "link", "show", "eth0"]);
        let octets: Vec<u8> = ip1.split('.').map(|o| o.parse().unwrap()).collect();
        let mac = format!(
            "02:42:{:02x}:{:02x}:{:02x}:{:02x}",
            octets[0], octets[1], octets[2], octets[3]
        );
        assert!(link.contains(&mac), "{link}");
        if net == "snet" {
            assert!(link.contains("mtu 1400"), "{link}");
        }
        let routes = d.ok(&["exec", &c1, "ip", "route"]);
        assert!(routes.contains(&format!("default via {gw}")), "{routes}");
        if net == "dnet" {
            assert_ne!(ip1, "10.231.0.2", "aux address handed out");
        }
        // Two containers ping each other and the gateway; NAT to the outside namespace.
        let c2 = format!("{net}-c2");
        d.ok(&[
            "run",
            "-d",
            "--name",
            &c2,
            "--network",
            net,
            IMAGE,
            "sleep",
            "600",
        ]);
        d.ok(&["exec", &c2, "ping", "-c1", "-W2", &ip1]);
        d.ok(&["exec", &c2, "ping", "-c1", "-W2", gw]);
        d.ok(&["exec", &c2, "ping", "-c1", "-W2", &h.outside_ip.to_string()]);
        d.ok(&["rm", "-f", &c1, &c2]);
    }
    // MTU on the host end too (docker does not apply it): every veth on the snet bridge.
    d.ok(&[
        "run",
        "-d",
        "--name",
        "mtu1",
        "--network",
        "snet",
        IMAGE,
        "sleep",
        "600",
    ]);
    let veths = h.ip(&["-o", "link", "show", "type", "veth"]);
    assert!(
        veths
            .lines()
            .any(|l| l.contains("mtu 1400") && l.contains("snv")),
        "{veths}"
    );
    d.ok(&["rm", "-f", "mtu1"]);

    // Published ports: from outside, from the host (own address and 127.0.0.1), from a sibling.
    d.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "--network",
        "snet",
        "-p",
        "18090:8080",
        "-p",
        "18100-18101:9000-9001",
        IMAGE,
        "httpd",
        "-f",
        "-p",
        "8080",
        "-h",
        "/www",
    ]);
    let host_ip = h.host_ip.to_string();
    let deadline = Instant::now() + Duration::from_secs(5);
    while http_get(h.outside.name(), &host_ip, 18090) != HELLO {
        assert!(
            Instant::now() < deadline,
            "port not reachable from outside\n{}",
            h.nft_ruleset()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        http_get(h.ns.name(), &host_ip, 18090),
        HELLO,
        "from the host"
    );
    assert_eq!(
        http_get(h.ns.name(), "127.0.0.1", 18090),
        HELLO,
        "from host loopback"
    );
    let sib = d.ok(&[
        "run",
        "--rm",
        "--network",
        "snet",
        IMAGE,
        "sh",
        "-c",
        &format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {host_ip} 18090"),
    ]);
    assert!(sib.ends_with(HELLO), "from a sibling: {sib}");
    let webip = d.ip_of("web");
    let hairpin = d.ok(&[
        "exec",
        "web",
        "sh",
        "-c",
        &format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {host_ip} 18090"),
    ]);
    assert!(hairpin.ends_with(HELLO), "hairpin from {webip}: {hairpin}");
    // Nobody else gets the same host port.
    let clash = d.docker(&[
        "run",
        "-d",
        "--name",
        "web2",
        "--network",
        "snet",
        "-p",
        "18090:8080",
        IMAGE,
        "sleep",
        "600",
    ]);
    assert!(
        !clash.status.success(),
        "second claim of host port 18090 succeeded"
    );
    let err = String::from_utf8_lossy(&clash.stderr);
    assert!(err.contains("18090"), "{err}");
    let _ = d.docker(&["rm", "-f", "web2"]);
    // Revoke removes exactly the ports.
    d.ok(&["rm", "-f", "web"]);
    assert_ne!(http_get(h.outside.name(), &host_ip, 18090), HELLO);
    eventually("no published ports left", || {
        !h.nft_ruleset().contains("18090")
    });

    // Removing everything leaves nothing behind.
    d.ok(&["network", "rm", "snet", "dnet"]);
    eventually("no links left", || leftovers(&h).is_empty());
    assert_eq!(h.call("GET", "/v1/networks", None), json!([]));
    assert_eq!(h.call("GET", "/v1/endpoints", None), json!([]));
    let rules = h.nft_ruleset();
    assert!(
        !rules.contains("br-") && !rules.contains("dnet0"),
        "{rules}"
    );
}

#[test]
fn internal_and_icc_off() {
    if skip() {
        return;
    }
    let (h, d) = setup(SHIMNET_ONLY);
    d.ok(&[
        "network",
        "create",
        "-d",
        "shimnet",
        "--ipam-driver",
        "shimnet",
        "--internal",
        "--subnet",
        "10.232.0.0/24",
        "inet",
    ]);
    d.ok(&[
        "run",
        "-d",
        "--name",
        "i1",
        "--network",
        "inet",
        IMAGE,
        "sleep",
        "600",
    ]);
    d.ok(&[
        "run",
        "-d",
        "--name",
        "i2",
        "--network",
        "inet",
        IMAGE,
        "sleep",
        "600",
    ]);
    let i1 = d.ip_of("i1");
    d.ok(&["exec", "i2", "ping", "-c1", "-W2", &i1]);
    let routes = d.ok(&["exec", "i2", "ip", "route"]);
    assert!(
        !routes.contains("default"),
        "internal network has a default route: {routes}"
    );
    let out = d.docker(&[
        "exec",
        "i2",
        "ping",
        "-c1",
        "-W2",
        &h.outside_ip.to_string(),
    ]);
    assert!(
        !out.status.success(),
        "internal network reached the outside"
    );

    d.ok(&[
        "network",
        "create",
        "-d",
        "shimnet",
        "--subnet",
        "10.233.0.0/24",
        "-o",
        "com.docker.network.bridge.enable_icc=false",
        "noicc",
    ]);
    d.ok(&[
        "run",
        "-d",
        "--name",
        "n1",
        "--network",
        "noicc",
        IMAGE,
        "sleep",
        "600",
    ]);
    d.ok(&[
        "run",
        "-d",
        "--name",
        "n2",
        "--network",
        "noicc",
        IMAGE,
        "sleep",
        "600",
    ]);
    let n1 = d.ip_of("n1");
    let out = d.docker(&["exec", "n2", "ping", "-c1", "-W1", &n1]);
    assert!(!out.status.success(), "icc=false let containers talk");
    d.ok(&["exec", "n2", "ping", "-c1", "-W2", "10.233.0.1"]);
    d.ok(&[
        "exec",
        "n2",
        "ping",
        "-c1",
        "-W2",
        &h.outside_ip.to_string(),
    ]);
    d.ok(&["rm", "-f", "i1", "i2", "n1", "n2"]);
    d.ok(&["network", "rm", "inet", "noicc"]);
    eventually("no links left", || leftovers(&h).is_empty());
}

#[test]
fn shimnetd_and_dockerd_restarts() {
    if skip() {
        return;
    }
    let (mut h, mut d) = setup(SHIMNET_ONLY);
    d.ok(&[
        "network",
        "create",
        "-d",
        "shimnet",
        "--ipam-driver",
        "shimnet",
        "--subnet",
        "10.234.0.0/24",
        "rnet",
    ]);
    d.ok(&[
        "run",
        "-d",
        "--name",
        "r1",
        "--restart",
        "always",
        "--network",
        "rnet",
        "-p",
        "18190:8080",
        IMAGE,
        "httpd",
        "-f",
        "-p",
        "8080",
        "-h",
        "/www",
    ]);
    d.ok(&[
        "run",
        "-d",
        "--name",
        "r2",
        "--network",
        "rnet",
        IMAGE,
        "sleep",
        "600",
    ]);
    let r1 = d.ip_of("r1");
    let host_ip = h.host_ip.to_string();
    // shimnetd restart: running containers keep talking, ports stay, dockerd keeps working.
    h.stop_with(Signal::SIGTERM);
    d.ok(&["exec", "r2", "ping", "-c1", "-W2", &r1]);
    h.start();
    d.ok(&["exec", "r2", "ping", "-c1", "-W2", &r1]);
    assert_eq!(http_get(h.outside.name(), &host_ip, 18190), HELLO);
    d.ok(&[
        "run",
        "--rm",
        "--network",
        "rnet",
        IMAGE,
        "ping",
        "-c1",
        "-W2",
        &r1,
    ]);
    // kill -9 as well: records and kernel state survive.
    h.stop_with(Signal::SIGKILL);
    h.start();
    d.ok(&["exec", "r2", "ping", "-c1", "-W2", &r1]);
    // dockerd restart: containers stop (no live-restore), start again on the same network.
    d.restart();
    // r1 (--restart always) comes back by itself, r2 by hand.
    let deadline = Instant::now() + Duration::from_secs(20);
    while d.ok(&["inspect", "-f", "{{.State.Running}}", "r1"]) != "true" {
        assert!(
            Instant::now() < deadline,
            "r1 not restarted by dockerd\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    d.ok(&["start", "r2"]);
    let r1b = d.ip_of("r1");
    d.ok(&["exec", "r2", "ping", "-c1", "-W2", &r1b]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while http_get(h.outside.name(), &host_ip, 18190) != HELLO {
        assert!(Instant::now() < deadline, "port lost after dockerd restart");
        std::thread::sleep(Duration::from_millis(100));
    }
    let eps = h.call("GET", "/v1/endpoints", None);
    assert_eq!(
        eps.as_array().unwrap().len(),
        2,
        "stale endpoints after restarts: {eps}"
    );
    d.ok(&["rm", "-f", "r1", "r2"]);
    d.ok(&["network", "rm", "rnet"]);
    eventually("no links left", || leftovers(&h).is_empty());
    assert_eq!(h.call("GET", "/v1/endpoints", None), json!([]));
}

fn summary(mut v: Vec<f64>) -> String {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    format!(
        "n={} median={:.0}ms mean={:.0}ms min={:.0}ms max={:.0}ms",
        v.len(),
        v[v.len() / 2],
        mean,
        v[0],
        v[v.len() - 1]
    )
}

/// Median of `v` (0 when empty).
fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The time stamp of a dockerd log line (`time="2026-...Z"`) as seconds since the epoch.
fn dockerd_time(line: &str) -> Option<f64> {
    let t = line.split("time=\"").nth(1)?.split('"').next()?;
    let (date, rest) = t.split_once('T')?;
    let (hms, frac) = rest
        .trim_end_matches('Z')
        .split_once('.')
        .unwrap_or((rest, "0"));
    let d: Vec<i64> = date.split('-').filter_map(|x| x.parse().ok()).collect();
    let h: Vec<f64> = hms.split(':').filter_map(|x| x.parse().ok()).collect();
    // Days from the civil date (Howard Hinnant's algorithm); only differences matter here.
    let (y, m) = if d[1] <= 2 {
        (d[0] - 1, d[1] + 9)
    } else {
        (d[0], d[1] - 3)
    };
    let days = 365 * y + y / 4 - y / 100 + y / 400 + (153 * m + 2) / 5 + d[2];
    Some(
        days as f64 * 86400.0
            + h[0] * 3600.0
            + h[1] * 60.0
            + h[2]
            + format!("0.{frac}").parse::<f64>().ok()?,
    )
}

/// `docker run --rm` on a shimnet network next to docker's default bridge, a user-defined docker
/// bridge (which, like every user-defined network, gets the embedded DNS resolver) and `--network
/// none`, interleaved; every plugin call timed from dockerd's side (a proxy on the plugin
/// socket) and from shimnet's (its log), and dockerd's phases from its debug log. Run by
/// `scripts/bench.sh`; alone: `cargo test --release --test docker -- --ignored --nocapture
/// bench_docker_run_timeline` (`SHIMNET_BENCH_RUNS` per network, default 20).
#[test]
#[ignore]
fn bench_docker_run_timeline() {
    if skip() {
        return;
    }
    std::env::set_var("SHIMNET_TEST_LOG", "info,shimnet::docker=debug");
    let h = TestHost::new("");
    let proxied = h.dir.path().join("proxied");
    std::fs::create_dir_all(&proxied).unwrap();
    let proxy = dockerd::proxy::PluginProxy::start(
        &proxied.join("shimnet.sock"),
        &h.dir.path().join("plugins/shimnet.sock"),
    );
    let d = Dockerd::start(h.ns.name(), &proxied, &["--iptables=true", "--debug"]);
    d.ok(&[
        "network",
        "create",
        "-d",
        "shimnet",
        "--ipam-driver",
        "shimnet",
        "--subnet",
        "10.235.0.0/24",
        "bnet",
    ]);
    d.ok(&[
        "network",
        "create",
        "-d",
        "bridge",
        "--subnet",
        "10.236.0.0/24",
        "ubr",
    ]);
    let n: usize = std::env::var("SHIMNET_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let nets = ["bnet", "bridge", "ubr", "none"];
    let ids = tempfile::tempdir().unwrap();
    let run = |net: &str, name: &str| {
        let cid = ids.path().join(name);
        let t = Instant::now();
        d.ok(&[
            "run",
            "--rm",
            "--name",
            name,
            "--cidfile",
            &cid.display().to_string(),
            "--network",
            net,
            IMAGE,
            "true",
        ]);
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        (ms, std::fs::read_to_string(&cid).unwrap_or_default())
    };
    for net in nets {
        run(net, &format!("tl-warm-{net}"));
    }
    let log_from = h.log().len();
    let calls_from = proxy.calls.lock().unwrap().len();
    let mut runs: Vec<(&str, String, String, f64)> = Vec::new();
    for i in 0..n {
        for net in nets {
            let name = format!("tl-{net}-{i}");
            let (ms, id) = run(net, &name);
            runs.push((net, name, id, ms));
        }
    }
    // dockerd's side of every plugin call, shimnet's from its own log.
    let mut table: Vec<(String, Vec<f64>, Vec<f64>)> = Vec::new();
    fn slot(table: &mut Vec<(String, Vec<f64>, Vec<f64>)>, path: &str) -> usize {
        let path = path.trim_start_matches('/').to_string();
        match table.iter().position(|(p, _, _)| *p == path) {
            Some(i) => i,
            None => {
                table.push((path, Vec::new(), Vec::new()));
                table.len() - 1
            }
        }
    }
    for c in &proxy.calls.lock().unwrap()[calls_from..] {
        let i = slot(&mut table, &c.path);
        table[i].1.push(c.took.as_secs_f64() * 1000.0);
    }
    for l in h.log()[log_from..].lines() {
        let (Some(call), Some(us)) = (
            l.split("call=")
                .nth(1)
                .and_then(|s| s.split_whitespace().next()),
            l.split("elapsed_us=")
                .nth(1)
                .and_then(|s| s.trim().parse::<f64>().ok()),
        ) else {
            continue;
        };
        let i = slot(&mut table, call);
        table[i].2.push(us / 1000.0);
    }
    eprintln!(
        "\ndocker run --rm, {n} runs per network, interleaved; load {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    eprintln!(
        "{:<42} {:>6} {:>16} {:>16}",
        "plugin call (per docker run on bnet)", "calls", "dockerd-side ms", "shimnet-side ms"
    );
    let (mut sum_d, mut sum_s) = (0.0, 0.0);
    for (path, dk, sh) in &table {
        let per_run = dk.len() as f64 / n as f64;
        let (md, ms) = (median(dk.clone()), median(sh.clone()));
        sum_d += md * per_run;
        sum_s += ms * per_run;
        eprintln!("{path:<42} {per_run:>6.1} {md:>16.2} {ms:>16.2}");
    }
    eprintln!(
        "{:<42} {:>6} {sum_d:>16.2} {sum_s:>16.2}",
        "sum per docker run (medians)", ""
    );
    // dockerd's phases, from its debug log.
    let log = std::fs::read_to_string(d.dir.path().join("dockerd.log")).unwrap();
    let at = |needle: &str| -> Option<f64> {
        log.lines()
            .find(|l| l.contains(needle))
            .and_then(dockerd_time)
    };
    eprintln!(
        "\n{:<8} {:>9} {:>22} {:>24} {:>22}",
        "network", "run ms", "endpoint+join ms (a)", "namespace setup ms (b)", "teardown ms (c)"
    );
    for net in nets {
        let mine: Vec<_> = runs.iter().filter(|r| r.0 == net).collect();
        let total = median(mine.iter().map(|r| r.3).collect());
        let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
        for (_, name, id, _) in &mine {
            if let (Some(t0), Some(t1)) = (
                at(&format!("Assigning addresses for endpoint {name}'s")),
                at(&format!(
                    "Programming external connectivity on endpoint {name} "
                )),
            ) {
                a.push((t1 - t0) * 1000.0);
            }
            let setkey = log.lines().find(|l| {
                l.contains("sandbox set key processing took")
                    && !id.is_empty()
                    && l.contains(id.trim())
            });
            if let Some(ms) = setkey
                .and_then(|l| l.split("took ").nth(1))
                .and_then(|s| s.split("ms").next())
                .and_then(|s| s.parse::<f64>().ok())
            {
                b.push(ms);
            }
            if let (Some(t0), Some(t1)) = (
                at(&format!(
                    "Revoking external connectivity on endpoint {name} "
                )),
                at(&format!("Releasing addresses for endpoint {name}'s")),
            ) {
                c.push((t1 - t0) * 1000.0);
            }
        }
        let f = |v: Vec<f64>| {
            if v.is_empty() {
                "-".to_string()
            } else {
                format!("{:.1}", median(v))
            }
        };
        eprintln!(
            "{net:<8} {total:>9.1} {:>22} {:>24} {:>22}",
            f(a),
            f(b),
            f(c)
        );
    }
    let total =
        |net: &str| -> Vec<f64> { runs.iter().filter(|r| r.0 == net).map(|r| r.3).collect() };
    eprintln!("\ndocker run --rm start-to-exit:");
    for (net, what) in [
        ("bnet", "shimnet network"),
        ("bridge", "docker's default bridge"),
        ("ubr", "user-defined docker bridge"),
        ("none", "--network none"),
    ] {
        eprintln!("  {what:<27}: {}", summary(total(net)));
    }
    let over = |peer: &str| median(total("bnet")) - median(total(peer));
    let verdict = if over("bridge") <= 10.0 {
        "met"
    } else {
        "MISSED"
    };
    eprintln!(
        "  shimnet over docker's default bridge: {:+.1} ms (target: within 10 ms: {verdict}); over a user-defined docker bridge: {:+.1} ms",
        over("bridge"),
        over("ubr")
    );
    eprintln!(
        "(a) first \"Assigning addresses\" to \"Programming external connectivity\": IPAM, CreateEndpoint, Join\n\
         (b) dockerd's \"sandbox set key processing\": the container's namespace gets its interface, addresses, \
         routes and, on user-defined networks (bnet, ubr), the embedded DNS resolver's iptables rules\n\
         (c) \"Revoking external connectivity\" to \"Releasing addresses\": Revoke, Leave, DeleteEndpoint"
    );
}

/// What a container sees of its network: address, MAC, MTU, default route.
fn container_view(d: &Dockerd, c: &str) -> (String, String, String, String) {
    let link = d.ok(&["exec", c, "ip", "-o", "link", "show", "eth0"]);
    let mac = link
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .unwrap_or("")
        .to_string();
    let mtu = link
        .split_whitespace()
        .skip_while(|w| *w != "mtu")
        .nth(1)
        .unwrap_or("")
        .to_string();
    let addr = d.ok(&["exec", c, "ip", "-o", "-4", "addr", "show", "eth0"]);
    let addr = addr
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .unwrap_or("")
        .to_string();
    let route = d.ok(&["exec", c, "ip", "route"]);
    let gw = route
        .lines()
        .find(|l| l.starts_with("default"))
        .unwrap_or("")
        .split_whitespace()
        .nth(2)
        .unwrap_or("")
        .to_string();
    (addr, mac, mtu, gw)
}

#[test]
fn docker0_compatible_mode_matches_dockers_own_bridge() {
    if skip() {
        return;
    }
    // Docker's own docker0.
    let (ha, da) = setup(&["--iptables=true"]);
    da.ok(&["run", "-d", "--name", "ref", IMAGE, "sleep", "600"]);
    let reference = container_view(&da, "ref");
    assert!(ha
        .ip(&["-o", "addr", "show", "docker0"])
        .contains("172.17.0.1/16"));
    drop(da);

    // shimnet's docker0 for a dockerd with --bridge=none.
    let h = TestHost::new(
        "[docker]\ndocker0_compat = true\ndaemon_json = \"/nonexistent/daemon.json\"\n",
    );
    assert!(h
        .ip(&["-o", "addr", "show", "docker0"])
        .contains("172.17.0.1/16"));
    // dockerd --bridge=none deletes any link called docker0 when it starts ...
    let d = Dockerd::start(h.ns.name(), &h.dir.path().join("plugins"), SHIMNET_ONLY);
    d.ok(&[
        "network",
        "create",
        "-d",
        "shimnet",
        "--subnet",
        "172.17.0.0/16",
        "--gateway",
        "172.17.0.1",
        "-o",
        "com.docker.network.bridge.name=docker0",
        "bridge0",
    ]);
    // ... a moment after its API is up; shimnet puts it back within a second.
    std::thread::sleep(Duration::from_millis(500));
    eventually("docker0 is back", || {
        links_in(h.ns.name()).contains(&"docker0".to_string())
    });
    d.ok(&[
        "run",
        "-d",
        "--name",
        "twin",
        "--network",
        "bridge0",
        IMAGE,
        "sleep",
        "600",
    ]);
    let twin = container_view(&d, "twin");
    assert_eq!(
        twin, reference,
        "(address, MAC, MTU, gateway) differ from docker's docker0"
    );
    let nets = h.call("GET", "/v1/networks", None);
    assert_eq!(
        nets.as_array().unwrap().len(),
        1,
        "adopted, not a second network: {nets}"
    );
    d.ok(&[
        "exec",
        "twin",
        "ping",
        "-c1",
        "-W2",
        &h.outside_ip.to_string(),
    ]);

    // docker's chain layout: admin rules in DOCKER-USER filter container traffic.
    let forward = sh(&[
        "ip",
        "netns",
        "exec",
        h.ns.name(),
        "iptables",
        "-S",
        "FORWARD",
    ]);
    let first = forward
        .lines()
        .find(|l| l.starts_with("-A FORWARD"))
        .unwrap_or("");
    assert_eq!(first, "-A FORWARD -j DOCKER-USER", "{forward}");
    let out = h.outside_ip.to_string();
    let rule = ["-s", "172.17.0.2", "-d", out.as_str(), "-j", "DROP"];
    let ipt = |op: &str| {
        let mut a = vec![
            "ip",
            "netns",
            "exec",
            h.ns.name(),
            "iptables",
            op,
            "DOCKER-USER",
        ];
        if op == "-I" {
            a.push("1");
        }
        a.extend(rule);
        sh(&a);
    };
    ipt("-I");
    assert!(
        !d.docker(&["exec", "twin", "ping", "-c1", "-W1", &out])
            .status
            .success(),
        "DOCKER-USER DROP was ignored"
    );
    ipt("-D");
    d.ok(&["exec", "twin", "ping", "-c1", "-W2", &out]);

    // Removing the Docker network leaves shimnet's docker0 in place; a new one adopts it again.
    d.ok(&["rm", "-f", "twin"]);
    d.ok(&["network", "rm", "bridge0"]);
    assert!(h
        .ip(&["-o", "addr", "show", "docker0"])
        .contains("172.17.0.1/16"));
    d.ok(&[
        "network",
        "create",
        "-d",
        "shimnet",
        "--subnet",
        "172.17.0.0/16",
        "-o",
        "com.docker.network.bridge.name=docker0",
        "bridge1",
    ]);
    d.ok(&[
        "run",
        "--rm",
        "--network",
        "bridge1",
        IMAGE,
        "ping",
        "-c1",
        "-W2",
        "172.17.0.1",
    ]);
}

#[test]
fn docker0_compatible_mode_reads_daemon_json() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("daemon.json");
    std::fs::write(
        &json,
        r#"{"bip": "10.240.7.1/24", "fixed-cidr": "10.240.7.128/25", "mtu": 1400, "icc": false}"#,
    )
    .unwrap();
    let h = TestHost::new(&format!(
        "[docker]\ndocker0_compat = true\ndaemon_json = \"{}\"\n",
        json.display()
    ));
    let link = h.ip(&["-o", "link", "show", "docker0"]);
    assert!(link.contains("mtu 1400"), "{link}");
    assert!(h
        .ip(&["-o", "addr", "show", "docker0"])
        .contains("10.240.7.1/24"));
    let net = h.call("GET", "/v1/networks/docker0", None)["network"].clone();
    assert_eq!(net["icc"], json!(false));
    assert_eq!(net["docker_mac"], json!(true));
    assert_eq!(net["range4"], json!(["10.240.7.128", "10.240.7.254"]));
    let c = container("fx");
    let ep = h.attach("docker0", &c, json!({}));
    assert_eq!(
        ip_of(&ep),
        "10.240.7.128",
        "fixed-cidr is the allocation range"
    );
    assert!(
        ep["mac"].as_str().unwrap().starts_with("02:42:0a:f0:07:80"),
        "{ep}"
    );
}

#[test]
fn ipv6_network_and_udp_port() {
    if skip() {
        return;
    }
    let (h, d) = setup(SHIMNET_ONLY);
    d.ok(&[
        "network",
        "create",
        "-d",
        "shimnet",
        "--ipam-driver",
        "shimnet",
        "--ipv6",
        "--subnet",
        "10.238.0.0/24",
        "--subnet",
        "fd00:238::/64",
        "v6net",
    ]);
    d.ok(&[
        "run",
        "-d",
        "--name",
        "s6",
        "--network",
        "v6net",
        "-p",
        "127.0.0.1:18391:5353/udp",
        IMAGE,
        "sleep",
        "600",
    ]);
    d.ok(&[
        "run",
        "-d",
        "--name",
        "t6",
        "--network",
        "v6net",
        IMAGE,
        "sleep",
        "600",
    ]);
    let addrs = d.ok(&[
        "exec", "s6", "ip", "-o", "-6", "addr", "show", "eth0", "scope", "global",
    ]);
    let s6 = addrs
        .split_whitespace()
        .skip_while(|w| *w != "inet6")
        .nth(1)
        .expect("global IPv6 address")
        .split('/')
        .next()
        .unwrap()
        .to_string();
    assert!(s6.starts_with("fd00:238::"), "{addrs}");
    let routes = d.ok(&["exec", "t6", "ip", "-6", "route"]);
    assert!(routes.contains("default via fd00:238::1"), "{routes}");
    d.ok(&["exec", "t6", "ping", "-6", "-c1", "-W2", &s6]);
    d.ok(&["exec", "t6", "ping", "-6", "-c1", "-W2", "fd00:238::1"]);
    // UDP published on the host's loopback: a datagram sent there arrives in the container
    // (whose namespace is reached through its process, as the sandbox path is dockerd's).
    let pid = d.ok(&["inspect", "-f", "{{.State.Pid}}", "s6"]);
    let ns = std::path::PathBuf::from(format!("/proc/{pid}/ns/net"));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = shimnet::netns::run_in(&ns, move || {
            let s = std::net::UdpSocket::bind("0.0.0.0:5353").expect("bind udp");
            s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            tx.send(None).unwrap();
            let mut buf = [0u8; 64];
            let got = s.recv(&mut buf).ok().map(|n| buf[..n].to_vec());
            tx.send(got).unwrap();
        });
    });
    assert_eq!(rx.recv().unwrap(), None, "listener ready");
    shimnet::netns::run_in(h.ns.path(), || {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.send_to(b"ping-udp", "127.0.0.1:18391").unwrap();
    })
    .unwrap();
    let got = rx.recv().unwrap();
    assert_eq!(
        got.as_deref(),
        Some(&b"ping-udp"[..]),
        "UDP datagram not delivered\n{}",
        h.nft_ruleset()
    );
    d.ok(&["rm", "-f", "s6", "t6"]);
    d.ok(&["network", "rm", "v6net"]);
    eventually("no links left", || leftovers(&h).is_empty());
}
