//! Real Go clients of the `shimnet` CNI plugin, built offline from Debian's sources: containerd's
//! go-cni + libcni (the library of containerd's CRI plugin, `ctr run --cni` and nerdctl), and
//! `ctr run --cni` itself against a private containerd. They write Go-cased JSON
//! (`runtimeConfig.portMappings[].HostPort`, ...) that shimnet must read as Go's
//! `encoding/json` does. shimnetd runs in a test "host" namespace; run as root.

mod cni_support;
mod common;
mod containerd;
mod dns_support;
mod dockerd;
mod go_support;

use std::io::BufRead;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use cni_support::{conflist, plugin, REF_DIR};
use common::*;
use serde_json::{json, Value};

/// Runs the go-cni client with libcni's cache dir (`/var/lib/cni`) on `cache`, in a private
/// mount namespace so nothing is written to the machine's own; returns its JSON output.
fn run_client(client: &Path, cache: &Path, record: &Path, args: &[&str]) -> Value {
    let o = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c"])
        .arg(
            "mount -t tmpfs none /var/lib && mkdir /var/lib/cni && mount --bind \"$0\" /var/lib/cni && exec \"$@\"",
        )
        .arg(cache)
        .arg(client)
        .args(args)
        .env("SHIMNET_RECORD_DIR", record)
        .output()
        .expect("run the go-cni client");
    let stdout = String::from_utf8_lossy(&o.stdout);
    eprintln!("go-cni client {}: {}", args[0], stdout.trim());
    assert!(
        o.status.success(),
        "go-cni client {args:?} failed: {stdout}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_str(stdout.trim()).expect("client output is JSON")
}

/// What a TCP server at `ip:port` sends, read from namespace `ns` (empty if none within 5 s).
fn read_from(ns: &Path, ip: Ipv4Addr, port: u16) -> String {
    shimnet::netns::run_in(ns, move || {
        use std::io::Read;
        let addr = std::net::SocketAddr::from((ip, port));
        let mut out = String::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            if let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(3)));
                let _ = s.read_to_string(&mut out);
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        out
    })
    .unwrap_or_default()
}

fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files_under(&p));
            } else {
                out.push(p.display().to_string());
            }
        }
    }
    out
}

/// What containerd's CRI plugin does for a pod sandbox: go-cni `New` + `Load(WithLoNetwork,
/// WithDefaultConf)`, `Setup` with a port map and the pod's labels as `CNI_ARGS`,
/// libcni's cached result and `CheckNetworkList`, `Remove` twice and once without a namespace.
/// The exact stdin the libraries wrote is compared with `compat/tests/fixtures/go-cni-1.1.7/`.
#[test]
fn go_cni_setup_check_remove_like_containerd() {
    let Some(client) = go_support::cniclient() else {
        return;
    };
    let h = TestHost::new("");
    let net = tag("gc");
    let dir = tempfile::tempdir().unwrap();
    let (conf_dir, bin_dir, cache, record) = (
        dir.path().join("net.d"),
        dir.path().join("bin"),
        dir.path().join("cache"),
        dir.path().join("record"),
    );
    for d in [&conf_dir, &bin_dir, &cache, &record] {
        std::fs::create_dir_all(d).unwrap();
    }
    let caps = json!({"portMappings": true});
    let list = conflist("1.0.0", &net, &h.socket, &net, "10.74.0.0/24", caps);
    std::fs::write(conf_dir.join("10-shimnet.conflist"), list.to_string()).unwrap();
    go_support::recording_plugin(&bin_dir, &plugin());
    let plugin_dirs = format!("{}:{REF_DIR}", bin_dir.display());
    let ns = container("gc");
    let netns = ns.path().display().to_string();
    let args = |cmd: &'static str| {
        [
            cmd,
            conf_dir.to_str().unwrap(),
            plugin_dirs.as_str(),
            ns.name(),
            netns.as_str(),
        ]
    };

    // Setup: addresses on eth0 and lo.
    let out = run_client(&client, &cache, &record, &args("setup"));
    let ifs = &out["setup"]["Interfaces"];
    let eth0 = &ifs["eth0"]["IPConfigs"][0];
    let ip: Ipv4Addr = eth0["IP"].as_str().unwrap().parse().unwrap();
    assert_eq!(ip, Ipv4Addr::new(10, 74, 0, 2), "{out}");
    assert_eq!(eth0["Gateway"], "10.74.0.1", "{out}");
    assert_eq!(ifs["eth0"]["Sandbox"], netns.as_str());
    assert_eq!(ifs["lo"]["IPConfigs"][0]["IP"], "127.0.0.1", "{out}");
    let addrs = sh(&["ip", "-n", ns.name(), "-o", "addr", "show"]);
    assert!(
        addrs.contains("10.74.0.2/24") && addrs.contains("127.0.0.1/8"),
        "{addrs}"
    );
    assert!(ping(&ns, "10.74.0.1"), "container reaches its gateway");
    // The published port (HostPort 18690 → 80) from another namespace.
    let seen = spawn_listener(ns.path(), ip, 80);
    assert!(
        connect_from(h.outside.path(), h.host_ip, 18690),
        "published port reachable from outside"
    );
    assert!(seen.recv().unwrap().is_some(), "the container accepted it");

    // libcni's cached result and CHECK.
    let out = run_client(&client, &cache, &record, &args("check"));
    assert_eq!(out["check"], "ok");
    assert_eq!(out["cached"]["ips"][0]["address"], "10.74.0.2/24", "{out}");
    assert!(!files_under(&cache).is_empty(), "libcni cached the result");

    // Remove twice, then without a namespace: all succeed, and nothing is left.
    let out = run_client(&client, &cache, &record, &args("remove"));
    assert_eq!(out["remove"].as_array().unwrap().len(), 3);
    assert_eq!(h.call("GET", "/v1/endpoints", None), json!([]));
    eventually("host veths removed", || {
        !links_in(h.ns.name()).iter().any(|l| l.starts_with("snv"))
    });
    assert!(!links_in(ns.name()).contains(&"eth0".to_string()));
    let rules = format!("{}{}", h.nft_ruleset(), h.iptables_save());
    assert!(!rules.contains("18690"), "port rules removed: {rules}");
    assert!(!connect_from(h.outside.path(), h.host_ip, 18690));
    assert_eq!(
        files_under(&cache.join("results")),
        Vec::<String>::new(),
        "libcni's cache entry removed"
    );

    // The exact bytes go-cni and libcni wrote to the plugin, as golden fixtures.
    let rec = go_support::recordings(&record);
    let cmds: Vec<&str> = rec.iter().map(|(c, _)| c.as_str()).collect();
    assert_eq!(cmds, ["ADD", "CHECK", "DEL", "DEL", "DEL"]);
    let prev: Value = serde_json::from_slice(&rec[1].1).unwrap();
    let host_veth = prev["prevResult"]["interfaces"][1]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let subst = [
        (h.socket.display().to_string(), "/run/shimnet/shimnetd.sock"),
        (netns.clone(), "/var/run/netns/gocni-pod"),
        (host_veth, "snv0123456789ab"),
        (net.clone(), "gocni"),
    ];
    for (i, (cmd, bytes)) in rec.iter().enumerate() {
        go_support::golden(
            "go-cni-1.1.7",
            &format!("{:02}-{cmd}.json", i + 1),
            bytes,
            &subst,
        );
    }
}

/// go-cni (containerd's CRI path) on a conflist with `dnsEnabled`: the pod's name — go-cni passes
/// the CRI label `K8S_POD_NAME` in CNI_ARGS — resolves on the gateway for another container of the
/// network, bare and under the search domain; the result's DNS announces the gateway and the
/// domain; the name goes with `Remove`.
#[test]
fn go_cni_pod_name_resolves_on_the_gateway() {
    let Some(client) = go_support::cniclient() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // No upstream: nothing here is ever forwarded off the test's namespaces.
    let resolv = dir.path().join("resolv.conf");
    std::fs::write(&resolv, "").unwrap();
    let h = TestHost::new(&format!(
        "[dns]\nresolv_conf = \"{}\"\nresolved_resolv_conf = \"{}\"\n",
        resolv.display(),
        dir.path().join("resolved.conf").display()
    ));
    let net = tag("gd");
    let (conf_dir, bin_dir, cache, record) = (
        dir.path().join("net.d"),
        dir.path().join("bin"),
        dir.path().join("cache"),
        dir.path().join("record"),
    );
    for d in [&conf_dir, &bin_dir, &cache, &record] {
        std::fs::create_dir_all(d).unwrap();
    }
    let caps = json!({"portMappings": true});
    let mut list = conflist("1.0.0", &net, &h.socket, &net, "10.75.0.0/24", caps);
    list["plugins"][0]["dnsEnabled"] = json!(true);
    std::fs::write(conf_dir.join("10-shimnet.conflist"), list.to_string()).unwrap();
    go_support::recording_plugin(&bin_dir, &plugin());
    let plugin_dirs = format!("{}:{REF_DIR}", bin_dir.display());
    let pod = container("gp");
    let netns = pod.path().display().to_string();
    let args = |cmd: &'static str| {
        [
            cmd,
            conf_dir.to_str().unwrap(),
            plugin_dirs.as_str(),
            pod.name(),
            netns.as_str(),
        ]
    };

    let out = run_client(&client, &cache, &record, &args("setup"));
    let pod_ip = out["setup"]["Interfaces"]["eth0"]["IPConfigs"][0]["IP"]
        .as_str()
        .unwrap_or_else(|| panic!("{out}"))
        .to_string();
    let dns: Vec<&Value> = out["setup"]["DNS"]
        .as_array()
        .unwrap_or_else(|| panic!("no DNS in go-cni's result: {out}"))
        .iter()
        .filter(|d| d.get("nameservers").is_some())
        .collect();
    assert_eq!(dns.len(), 1, "{out}");
    assert_eq!(dns[0]["nameservers"], json!(["10.75.0.1"]), "{out}");
    assert_eq!(dns[0]["search"], json!(["dns.shimnet"]), "{out}");

    // Another container of the network (through REST) asks the gateway.
    let cli = container("gq");
    h.attach(&net, &cli, json!({"name": "asker"}));
    let g: std::net::IpAddr = "10.75.0.1".parse().unwrap();
    use dns_support::{ask_a, Answer};
    assert_eq!(
        ask_a(cli.path(), g, "gocni-pod.").addrs(),
        [pod_ip.as_str()]
    );
    assert_eq!(
        ask_a(cli.path(), g, "gocni-pod.dns.shimnet.").addrs(),
        [pod_ip.as_str()]
    );
    let _rc = dns_support::NetnsResolvConf::from_reply(cli.name(), dns[0]);
    assert_eq!(
        dns_support::getent(cli.name(), "gocni-pod").as_deref(),
        Some(pod_ip.as_str()),
        "glibc in the other container, configured from go-cni's DNS"
    );
    assert!(dns_support::ping_name(cli.name(), "gocni-pod"));

    let out = run_client(&client, &cache, &record, &args("remove"));
    assert_eq!(out["remove"].as_array().unwrap().len(), 3);
    assert_eq!(ask_a(cli.path(), g, "gocni-pod."), Answer::NxDomain);
}

/// `ctr run --cni` (containerd 1.6, Debian): ctr's go-cni loads the first conflist of
/// `/etc/cni/net.d` (the test's, in containerd's private mount namespace) with plugins from
/// `/opt/cni/bin`, sets the container up, and removes it (without a namespace path) when the task
/// exits. The container sees its address and reaches its gateway; the test host reaches the
/// container, and its published port is reached from outside; nothing is left afterwards.
#[test]
fn ctr_run_cni() {
    if let Some(why) = containerd::unavailable() {
        eprintln!("SKIPPED: ctr run --cni: {why}");
        return;
    }
    let h = TestHost::new("");
    let net = tag("ct");
    let dir = tempfile::tempdir().unwrap();
    let (conf_dir, bin_dir, cache) = (
        dir.path().join("net.d"),
        dir.path().join("bin"),
        dir.path().join("cache"),
    );
    for d in [&conf_dir, &bin_dir, &cache] {
        std::fs::create_dir_all(d).unwrap();
    }
    // ctr has no -p and sends no capability arguments, so libcni passes a static
    // `runtimeConfig` in the conflist through untouched: a published port, Go-cased.
    let caps = json!({"portMappings": true});
    let mut list = conflist("1.0.0", &net, &h.socket, &net, "10.79.0.0/24", caps);
    list["plugins"][0]["runtimeConfig"] =
        json!({"portMappings": [{"HostPort": 18790, "ContainerPort": 8080, "Protocol": "tcp"}]});
    std::fs::write(conf_dir.join("10-shimnet.conflist"), list.to_string()).unwrap();
    std::fs::copy(plugin(), bin_dir.join("shimnet")).unwrap();
    let ctrd = containerd::Containerd::start(h.ns.name(), &conf_dir, &bin_dir, &cache);

    let id = tag("ctr");
    let script = "ip -o -4 addr show dev eth0; ip route; \
        ping -c1 -W2 10.79.0.1 >/dev/null && echo gateway-reachable; echo ready; \
        echo hi-from-ctr | timeout 20 nc -l -p 8080; echo served";
    let mut child = ctrd
        .ctr_command(&[
            "run",
            "--rm",
            "--cni",
            "--snapshotter",
            "native",
            containerd::IMAGE,
            &id,
            "sh",
            "-c",
            script,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ctr run");
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    while !seen.iter().any(|l: &String| l == "ready") {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(l) => {
                eprintln!("ctr run --cni | {l}");
                seen.push(l);
            }
            Err(_) => {
                let _ = child.kill();
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                let _ = child.wait();
                panic!(
                    "ctr run printed no `ready`: {seen:?}\n{err}\n{}",
                    ctrd.log()
                )
            }
        }
    }
    let addr_line = seen
        .iter()
        .find(|l| l.contains("inet "))
        .unwrap_or_else(|| panic!("no address on eth0: {seen:?}"));
    let ip: Ipv4Addr = addr_line
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|a| a.split('/').next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("{addr_line}"));
    assert!(addr_line.contains("10.79.0."), "{addr_line}");
    assert!(
        seen.iter().any(|l| l == "gateway-reachable"),
        "the container reached its gateway: {seen:?}"
    );
    assert!(
        seen.iter().any(|l| l.starts_with("default via 10.79.0.1")),
        "{seen:?}"
    );
    let eps = h.call("GET", "/v1/endpoints", None);
    assert_eq!(eps.as_array().unwrap().len(), 1, "{eps}");
    // From the test host's namespace to the container.
    assert!(
        try_sh(&[
            "ip",
            "netns",
            "exec",
            h.ns.name(),
            "ping",
            "-c1",
            "-W2",
            &ip.to_string()
        ]),
        "host reaches the container"
    );
    let got = read_from(h.outside.path(), h.host_ip, 18790);
    assert_eq!(
        got.trim(),
        "hi-from-ctr",
        "published port 18790 → container 8080, from outside the host"
    );
    assert_eq!(
        got.trim(),
        "hi-from-ctr",
        "TCP from the host to the container"
    );

    // The task exits; ctr removes the network (DEL without a namespace path).
    let out = child.wait_with_output().unwrap();
    for l in rx.try_iter() {
        eprintln!("ctr run --cni | {l}");
    }
    assert!(
        out.status.success(),
        "ctr run --cni failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        ctrd.log()
    );
    assert_eq!(h.call("GET", "/v1/endpoints", None), json!([]));
    eventually("host veths removed", || {
        !links_in(h.ns.name()).iter().any(|l| l.starts_with("snv"))
    });
    assert_eq!(
        files_under(&cache.join("results")),
        Vec::<String>::new(),
        "libcni's cache entry removed"
    );
    assert_eq!(
        ctrd.ok(&["containers", "ls", "-q"]),
        "",
        "container removed"
    );
    let rules = format!("{}{}", h.nft_ruleset(), h.iptables_save());
    assert!(!rules.contains("18790"), "port rules removed: {rules}");
}
