//! The daemon's own protection and its behaviour under concurrency, against a real shimnetd:
//! socket mode and group, no TCP listener, slowloris and huge-body clients on both sockets do not
//! stop normal clients, and hundreds of parallel attach/detach requests through the three front
//! doors get distinct addresses with no request starved. Run as root.

mod cni_support;
mod common;

use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cni_support::{conf, shimnet, Call};
use common::*;
use serde_json::{json, Value};
use shimnet_api::client::Client;

/// Small limits so the test sees them act within seconds.
const LIMITS: &str = "[api]\nsocket_group = \"nogroup\"\nmax_connections = 32\nmax_concurrent_requests = 4\nmax_body_bytes = 65536\nheader_timeout_secs = 2\nbody_timeout_secs = 2\nidle_timeout_secs = 3\n";

fn host() -> TestHost {
    use_prefix("snr");
    TestHost::new(LIMITS)
}

fn plugin_socket(h: &TestHost) -> PathBuf {
    h.dir.path().join("plugins/shimnet.sock")
}

/// Sends raw bytes and returns the connection (kept open by the caller).
fn raw(socket: &Path, bytes: &[u8]) -> UnixStream {
    let mut s = UnixStream::connect(socket).expect("connect");
    s.write_all(bytes).expect("write");
    s
}

/// Reads a reply until the server closes (or `wait` passes); returns status line and body.
fn read_reply(s: &mut UnixStream, wait: Duration) -> (String, String) {
    s.set_read_timeout(Some(wait)).unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.lines().next().unwrap_or_default().to_string();
    let body = text
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_string();
    (status, body)
}

/// True if the server closes the connection within `wait`.
fn closed_within(s: &mut UnixStream, wait: Duration) -> bool {
    s.set_read_timeout(Some(wait)).unwrap();
    let mut b = [0u8; 512];
    loop {
        match s.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) => return e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }
}

/// A Docker plugin call that must succeed.
fn docker(h: &TestHost, path: &str, body: Value) -> Value {
    let r = Client::new(plugin_socket(h))
        .with_timeout(Duration::from_secs(120))
        .request("POST", path, Some(body.to_string().as_bytes()))
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    assert_eq!(
        r.status,
        200,
        "{path}: {}",
        String::from_utf8_lossy(&r.body)
    );
    serde_json::from_slice(&r.body).unwrap()
}

/// A normal client's request must be answered within `limit`.
fn served_within(socket: &Path, path: &str, limit: Duration) -> Duration {
    let t = Instant::now();
    let r = Client::new(socket)
        .with_timeout(Duration::from_secs(30))
        .request(
            if path.starts_with("/v1") {
                "GET"
            } else {
                "POST"
            },
            path,
            None,
        )
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    assert_eq!(
        r.status,
        200,
        "{path}: {}",
        String::from_utf8_lossy(&r.body)
    );
    let took = t.elapsed();
    assert!(took < limit, "{path} took {took:?}");
    took
}

#[test]
fn sockets_are_0660_with_the_configured_group_and_there_is_no_tcp_listener() {
    let h = host();
    for s in [h.socket.clone(), plugin_socket(&h)] {
        let md = std::fs::metadata(&s).unwrap();
        assert_eq!(md.mode() & 0o777, 0o660, "{}", s.display());
        assert_eq!(md.gid(), 65534, "{} group nogroup", s.display());
    }
    let listeners = sh(&["ip", "netns", "exec", h.ns.name(), "ss", "-Hltnp"]);
    assert_eq!(
        listeners.trim(),
        "",
        "TCP listeners in the daemon's namespace"
    );
    let udp = sh(&["ip", "netns", "exec", h.ns.name(), "ss", "-Hlunp"]);
    assert_eq!(udp.trim(), "", "UDP sockets in the daemon's namespace");
}

#[test]
fn unknown_socket_group_stops_the_daemon_with_a_clear_message() {
    use_prefix("snr");
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "state_dir = \"{0}/s\"\napi_socket = \"{0}/a.sock\"\nplugin_dir = \"{0}/p\"\n[api]\nsocket_group = \"snr-no-such-group\"\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let ns = container("g");
    let o = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            ns.name(),
            env!("CARGO_BIN_EXE_shimnetd"),
            "--config",
        ])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("socket_group") && err.contains("snr-no-such-group"),
        "{err}"
    );
}

#[test]
fn slowloris_and_idle_clients_do_not_stop_normal_clients() {
    let h = host();
    for socket in [h.socket.clone(), plugin_socket(&h)] {
        let ok_path = if socket == h.socket {
            "/v1/networks"
        } else {
            "/Plugin.Activate"
        };
        // Below the connection limit: half a request head each, and connections that send nothing.
        let mut slow: Vec<UnixStream> = (0..20)
            .map(|_| {
                raw(
                    &socket,
                    b"POST /v1/networks HTTP/1.1\r\nHost: x\r\nContent-Le",
                )
            })
            .collect();
        let mut idle: Vec<UnixStream> = (0..8).map(|_| raw(&socket, b"")).collect();
        for _ in 0..10 {
            served_within(&socket, ok_path, Duration::from_secs(5));
        }
        // The server closes them: header timeout 2 s, idle timeout 3 s.
        for s in slow.iter_mut().chain(idle.iter_mut()) {
            assert!(
                closed_within(s, Duration::from_secs(15)),
                "slow client not closed"
            );
        }
        // Above the connection limit (32): normal clients still get through once the
        // header timeout frees connections.
        let _flood: Vec<UnixStream> = (0..64)
            .map(|_| raw(&socket, b"GET /v1/health HTTP/1.1\r\nHo"))
            .collect();
        let took = served_within(&socket, ok_path, Duration::from_secs(20));
        println!("limits: served past 64 slowloris connections in {took:?}");
    }
}

#[test]
fn huge_and_slow_bodies_get_413_and_408_in_each_front_doors_shape() {
    let h = host();
    // Declared too large: refused at once, without reading the body.
    let mut s = raw(
        &h.socket,
        b"POST /v1/networks HTTP/1.1\r\nHost: x\r\nContent-Length: 104857600\r\n\r\n{",
    );
    let (status, body) = read_reply(&mut s, Duration::from_secs(10));
    assert!(status.contains("413"), "{status}");
    let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(v["error"]["code"], "payload_too_large");
    assert_eq!(v["error"]["field"], "body");
    assert!(v["error"]["message"].as_str().unwrap().contains("65536"));
    // Chunked, growing past the limit.
    let mut s = raw(
        &h.socket,
        b"POST /v1/networks HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    let chunk = vec![b'a'; 16384];
    for _ in 0..6 {
        if s.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .is_err()
            || s.write_all(&chunk).is_err()
            || s.write_all(b"\r\n").is_err()
        {
            break;
        }
    }
    let (status, _) = read_reply(&mut s, Duration::from_secs(10));
    assert!(status.contains("413"), "{status}");
    // Docker plugin socket: same limit, docker's error shape.
    let mut s = raw(
        &plugin_socket(&h),
        b"POST /NetworkDriver.CreateNetwork HTTP/1.1\r\nHost: x\r\nContent-Length: 104857600\r\n\r\n",
    );
    let (status, body) = read_reply(&mut s, Duration::from_secs(10));
    assert!(status.contains("413"), "{status}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert!(v["Err"].as_str().unwrap().contains("limit"), "{v}");
    // A body that never finishes: 408 after the body timeout, and others are served meanwhile.
    let mut slow = raw(
        &h.socket,
        b"POST /v1/networks HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"name\":",
    );
    served_within(&h.socket, "/v1/networks", Duration::from_secs(5));
    let (status, body) = read_reply(&mut slow, Duration::from_secs(15));
    assert!(status.contains("408"), "{status} {body}");
    assert!(body.contains("request_timeout"), "{body}");
    assert_eq!(h.call("GET", "/v1/networks", None), json!([]));
}

/// Several clients at once through every front door (REST, CNI, Docker network + IPAM driver):
/// all addresses distinct, every request answered, none starved (the daemon runs with at most 4
/// requests in its handler at once).
#[test]
fn hundreds_of_parallel_attach_and_detach_requests() {
    let h = host();
    let net = format!("snr{}", tag("p"));
    let cni = conf("1.0.0", &net, &h.socket, &net, "10.79.0.0/22");
    let warm = container("w");
    let wc = Call::new("warm", &warm.path().display().to_string());
    assert_eq!(shimnet("ADD", &wc, &cni).code, 0);
    assert_eq!(shimnet("DEL", &wc, &cni).code, 0);
    // Docker: shimnet's IPAM driver hands out the addresses, as with `--ipam-driver shimnet`.
    let pool = docker(
        &h,
        "/IpamDriver.RequestPool",
        json!({"AddressSpace": "x", "Pool": "10.80.0.0/22", "Options": {}, "V6": false}),
    );
    let pool_id = pool["PoolID"].as_str().unwrap().to_string();
    let gw = docker(
        &h,
        "/IpamDriver.RequestAddress",
        json!({"PoolID": pool_id, "Address": "", "Options": {"RequestAddressType": "com.docker.network.gateway"}}),
    );
    let dnet = "a".repeat(64);
    docker(
        &h,
        "/NetworkDriver.CreateNetwork",
        json!({"NetworkID": dnet, "IPv6Data": [], "Options": {},
        "IPv4Data": [{"AddressSpace": "x", "Pool": "10.80.0.0/22", "Gateway": gw["Address"]}]}),
    );
    const CLIENTS: usize = 9;
    const PER_CLIENT: usize = 30;
    let containers: Vec<Vec<_>> = (0..CLIENTS)
        .map(|_| (0..PER_CLIENT).map(|_| container("p")).collect())
        .collect();
    let slowest = std::sync::Mutex::new(Duration::ZERO);
    let timed = |f: &dyn Fn() -> bool| {
        let t = Instant::now();
        assert!(f());
        let d = t.elapsed();
        let mut s = slowest.lock().unwrap();
        *s = (*s).max(d);
    };
    let threads = ThreadPeak::watch(h.daemon.as_ref().expect("daemon").id());
    let started = Instant::now();
    let addresses: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = containers
            .iter()
            .enumerate()
            .map(|(i, cs)| {
                let (h, cni, net, timed) = (&h, &cni, &net, &timed);
                let (pool_id, dnet) = (&pool_id, &dnet);
                scope.spawn(move || {
                    let mut got = Vec::new();
                    for (k, c) in cs.iter().enumerate() {
                        let path = c.path().display().to_string();
                        if i % 3 == 2 {
                            let ep = format!("{:064x}", i * 1000 + k + 1);
                            let addr = std::cell::RefCell::new(String::new());
                            let src = std::cell::RefCell::new(String::new());
                            timed(&|| {
                                let a = docker(h, "/IpamDriver.RequestAddress", json!({"PoolID": pool_id, "Address": "", "Options": {}}));
                                *addr.borrow_mut() = a["Address"].as_str().unwrap().to_string();
                                true
                            });
                            let addr = addr.into_inner();
                            timed(&|| {
                                docker(h, "/NetworkDriver.CreateEndpoint", json!({"NetworkID": dnet, "EndpointID": ep,
                                    "Interface": {"Address": addr, "AddressIPv6": "", "MacAddress": ""}, "Options": {}}));
                                true
                            });
                            timed(&|| {
                                let j = docker(h, "/NetworkDriver.Join", json!({"NetworkID": dnet, "EndpointID": ep, "SandboxKey": c.path(), "Options": {}}));
                                *src.borrow_mut() = j["InterfaceName"]["SrcName"].as_str().unwrap().to_string();
                                true
                            });
                            let src = src.into_inner();
                            // What libnetwork then does: the container end into the sandbox.
                            sh(&["ip", "-n", h.ns.name(), "link", "set", &src, "netns", c.name()]);
                            sh(&["ip", "-n", c.name(), "link", "set", &src, "name", "eth0"]);
                            sh(&["ip", "-n", c.name(), "addr", "add", &addr, "dev", "eth0"]);
                            got.push(addr.split('/').next().unwrap().to_string());
                        } else if i % 3 == 0 {
                            let mut ip = String::new();
                            timed(&|| {
                                let body = json!({"container_id": c.name(), "netns": path});
                                let e = h
                                    .client()
                                    .with_timeout(Duration::from_secs(120))
                                    .call::<Value>(
                                        "POST",
                                        &format!("/v1/networks/{net}/endpoints"),
                                        Some(&body),
                                    );
                                e.is_ok()
                            });
                            let e = h.call(
                                "GET",
                                &format!("/v1/networks/{net}/endpoints/{}", c.name()),
                                None,
                            );
                            ip.push_str(&ip_of(&e));
                            got.push(ip);
                        } else {
                            let call = Call::new(c.name(), &path);
                            let out = std::cell::RefCell::new(Value::Null);
                            timed(&|| {
                                let o = shimnet("ADD", &call, cni);
                                *out.borrow_mut() = o.out.clone();
                                o.code == 0
                            });
                            let a = out.borrow()["ips"][0]["address"]
                                .as_str()
                                .unwrap()
                                .to_string();
                            got.push(a.split('/').next().unwrap().to_string());
                        }
                    }
                    got
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let attach_time = started.elapsed();
    let distinct: std::collections::BTreeSet<_> = addresses.iter().collect();
    assert_eq!(
        distinct.len(),
        CLIENTS * PER_CLIENT,
        "addresses handed out twice"
    );
    // Every kernel address matches and is distinct too.
    let mut kernel = std::collections::BTreeSet::new();
    for c in containers.iter().flatten() {
        let a = sh(&[
            "ip",
            "-n",
            c.name(),
            "-o",
            "-4",
            "addr",
            "show",
            "dev",
            "eth0",
        ]);
        assert!(kernel.insert(a.split_whitespace().nth(3).unwrap().to_string()));
    }
    let started = Instant::now();
    std::thread::scope(|scope| {
        for (i, cs) in containers.iter().enumerate() {
            let (h, cni, net, timed) = (&h, &cni, &net, &timed);
            let (pool_id, dnet) = (&pool_id, &dnet);
            scope.spawn(move || {
                for (k, c) in cs.iter().enumerate() {
                    if i % 3 == 2 {
                        let ep = format!("{:064x}", i * 1000 + k + 1);
                        let addr = sh(&[
                            "ip",
                            "-n",
                            c.name(),
                            "-o",
                            "-4",
                            "addr",
                            "show",
                            "dev",
                            "eth0",
                        ]);
                        let addr = addr
                            .split_whitespace()
                            .nth(3)
                            .unwrap()
                            .split('/')
                            .next()
                            .unwrap()
                            .to_string();
                        let body = json!({"NetworkID": dnet, "EndpointID": ep});
                        timed(&|| !docker(h, "/NetworkDriver.Leave", body.clone()).is_null());
                        timed(&|| {
                            !docker(h, "/NetworkDriver.DeleteEndpoint", body.clone()).is_null()
                        });
                        timed(&|| {
                            !docker(
                                h,
                                "/IpamDriver.ReleaseAddress",
                                json!({"PoolID": pool_id, "Address": addr}),
                            )
                            .is_null()
                        });
                    } else if i % 3 == 0 {
                        timed(&|| {
                            h.client()
                                .with_timeout(Duration::from_secs(120))
                                .call::<Value>(
                                    "DELETE",
                                    &format!("/v1/networks/{net}/endpoints/{}", c.name()),
                                    None::<&Value>,
                                )
                                .is_ok()
                        });
                    } else {
                        let call = Call::new(c.name(), &c.path().display().to_string());
                        timed(&|| shimnet("DEL", &call, cni).code == 0);
                    }
                }
            });
        }
    });
    let detach_time = started.elapsed();
    assert_eq!(h.call("GET", "/v1/endpoints", None), json!([]));
    // Detached veths are deleted in the background: allow for a loaded machine.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left: Vec<String> = links_in(h.ns.name())
            .into_iter()
            .filter(|l| l.starts_with("snv") || l.starts_with("snp"))
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "veths left: {left:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Only the gateway is left in the Docker pool: the next address is the lowest host after it
    // or a recycled one, never one still held.
    let next = docker(
        &h,
        "/IpamDriver.RequestAddress",
        json!({"PoolID": pool_id, "Address": "10.80.0.2", "Options": {}}),
    );
    assert_eq!(
        next["Address"], "10.80.0.2/22",
        "released addresses are free again"
    );
    let slowest = *slowest.lock().unwrap();
    let peak = threads.stop();
    println!(
        "limits: {} parallel attaches in {attach_time:?}, {} detaches in {detach_time:?}, slowest request {slowest:?}, tokio threads in the daemon at most {peak}",
        CLIENTS * PER_CLIENT,
        CLIENTS * PER_CLIENT
    );
    // tokio's threads (async workers and the blocking pool) must not grow with the load: the
    // pool reached ~50 threads before it was capped, each with a malloc arena of its own.
    let bound = shimnet::process::WORKER_THREADS + shimnet::process::BLOCKING_THREADS;
    assert!(
        peak <= bound,
        "the daemon ran {peak} tokio threads (at most {bound} expected)"
    );
    assert!(
        slowest < Duration::from_secs(60),
        "a request waited {slowest:?}"
    );
}

/// Samples how many of a process's threads are tokio's (`tokio-rt-worker`: async workers and
/// the blocking pool) every 10 ms on a thread of its own; `stop` gives the peak.
struct ThreadPeak {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    sampler: std::thread::JoinHandle<usize>,
}

impl ThreadPeak {
    fn watch(pid: u32) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let sampler = std::thread::spawn(move || {
            let mut peak = 0;
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                let n = std::fs::read_dir(format!("/proc/{pid}/task"))
                    .into_iter()
                    .flatten()
                    .flatten()
                    .filter(|t| {
                        std::fs::read_to_string(t.path().join("comm"))
                            .is_ok_and(|c| c.trim() == "tokio-rt-worker")
                    })
                    .count();
                peak = peak.max(n);
                std::thread::sleep(Duration::from_millis(10));
            }
            peak
        });
        ThreadPeak { stop, sampler }
    }

    fn stop(self) -> usize {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.sampler.join().expect("thread sampler")
    }
}

/// A Docker plugin call expected to fail: its HTTP status and `Err` text.
fn docker_err(h: &TestHost, path: &str, body: Value) -> (u16, String) {
    let r = Client::new(plugin_socket(h))
        .request("POST", path, Some(body.to_string().as_bytes()))
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    (r.status, v["Err"].as_str().unwrap_or_default().to_string())
}

/// Links of the host namespace, one name each.
fn host_links(h: &TestHost) -> std::collections::BTreeSet<String> {
    h.ip(&["-o", "link", "show"])
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap().to_string())
        .collect()
}

/// The kernel's limit, proven: with one extension bridge allowed and full-size bridges
/// (`max_bridge_extensions = 1`, `bridge_ports = 1023`),
/// a /20 network takes 1,021 endpoints on its main bridge (ports kept for the trunk and the
/// anchor) and
/// 1,022 on its extension — both real bridges then hold the kernel's 1,023 ports — and the next
/// attach through each front door is refused as a full network (REST 409 `network_full`, CNI
/// code 106, Docker `Err` naming it) before anything is built, `status` and `/metrics` count the
/// ports of both bridges, and each bridge itself refuses a 1,024th port with EXFULL. A detach
/// frees a place.
#[test]
fn a_network_full_at_the_kernels_1023_bridge_ports_is_refused_in_every_front_door() {
    const CAP: usize = 2043;
    use_prefix("snr");
    let h = TestHost::new(&format!(
        "max_bridge_extensions = 1\nbridge_ports = 1023\n{LIMITS}"
    ));
    let dnet = "f".repeat(64);
    let (pool, gw) = ("10.81.0.0/20", "10.81.0.1/20");
    docker(
        &h,
        "/NetworkDriver.CreateNetwork",
        json!({"NetworkID": dnet, "IPv6Data": [], "Options": {},
        "IPv4Data": [{"AddressSpace": "LocalDefault", "Pool": pool, "Gateway": gw}]}),
    );
    let nets = h.call("GET", "/v1/networks", None);
    let info = nets
        .as_array()
        .or_else(|| nets["networks"].as_array())
        .expect("network list")
        .iter()
        .find(|n| n["subnet"] == pool)
        .unwrap_or_else(|| panic!("no network on {pool}: {nets}"))
        .clone();
    let (name, bridge) = (
        info["name"].as_str().unwrap().to_string(),
        info["bridge"].as_str().unwrap().to_string(),
    );
    let addr = |i: usize| {
        let n = u32::from(std::net::Ipv4Addr::new(10, 81, 0, 2)) + i as u32;
        format!("{}/20", std::net::Ipv4Addr::from(n))
    };
    let create = |i: usize| {
        json!({"NetworkID": dnet, "EndpointID": format!("{:064x}", i + 1),
            "Interface": {"Address": addr(i), "AddressIPv6": "", "MacAddress": ""}, "Options": {}})
    };
    let started = Instant::now();
    for i in 0..CAP {
        docker(&h, "/NetworkDriver.CreateEndpoint", create(i));
    }
    eprintln!(
        "{CAP} endpoints attached through the Docker door in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let ext = runtime_net::naming::extension_bridge_name(
        &runtime_net::types::NetworkName::new(&name).unwrap(),
        1,
    )
    .to_string();
    for b in [&bridge, &ext] {
        let ports = h.ip(&["-o", "link", "show", "master", b]).lines().count();
        assert_eq!(ports, 1023, "ports on {b}");
    }
    let before = host_links(&h);

    // Docker: the 1024th endpoint.
    let (status, err) = docker_err(&h, "/NetworkDriver.CreateEndpoint", create(CAP));
    assert_eq!(status, 409, "{err}");
    assert!(
        err.contains(&format!("network {name} is full")) && err.contains("2043"),
        "{err}"
    );
    // REST.
    let c = container("f");
    let body = json!({"container_id": c.name(), "netns": c.path().display().to_string()});
    match h.try_call(
        "POST",
        &format!("/v1/networks/{name}/endpoints"),
        Some(body.clone()),
    ) {
        Err(shimnet_api::client::ClientError::Api {
            status,
            code,
            message,
            ..
        }) => {
            assert_eq!((status, code.as_str()), (409, "network_full"), "{message}");
            assert!(
                message.contains(&name) && message.contains("2043"),
                "{message}"
            );
        }
        other => panic!("expected network_full, got {other:?}"),
    }
    // CNI, on the same network by name.
    let cni = json!({"cniVersion": "1.0.0", "name": "full", "type": "shimnet",
        "daemonSocket": h.socket, "network": name});
    let out = shimnet(
        "ADD",
        &Call::new(c.name(), &c.path().display().to_string()),
        &cni,
    );
    assert_ne!(out.code, 0);
    assert_eq!(out.out["code"], 106, "{}", out.out);
    let msg = out.out["msg"].as_str().unwrap_or_default();
    assert!(msg.contains("full") && msg.contains(&name), "{msg}");

    // Nothing was built or recorded.
    assert_eq!(host_links(&h), before);
    assert!(
        !links_in(c.name()).iter().any(|l| l != "lo"),
        "{:?}",
        links_in(c.name())
    );
    let eps = h.call("GET", &format!("/v1/networks/{name}/endpoints"), None);
    let count = eps
        .as_array()
        .or_else(|| eps["endpoints"].as_array())
        .map(|a| a.len());
    assert_eq!(count, Some(CAP));

    // Capacity as ports, in status and the metrics.
    let s = h.call("GET", "/v1/status", None);
    let cap = s["status"]["capacity"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["network"] == name.as_str())
        .unwrap_or_else(|| panic!("{s}"))
        .clone();
    assert_eq!(
        (&cap["ports_used"], &cap["ports_capacity"]),
        (&json!(CAP), &json!(CAP)),
        "{cap}"
    );
    let m = h.client().request("GET", "/metrics", None).unwrap();
    let text = String::from_utf8_lossy(&m.body);
    for line in [
        format!("shimnet_bridge_ports_used{{network=\"{name}\"}} {CAP}"),
        format!("shimnet_bridge_ports_capacity{{network=\"{name}\"}} {CAP}"),
    ] {
        assert!(text.contains(&line), "{line} missing");
    }

    // The kernel agrees: neither bridge takes a 1024th port.
    for br in [&bridge, &ext] {
        let (a, b) = (format!("x{}", tag("a")), format!("x{}", tag("b")));
        sh(&[
            "ip",
            "-n",
            h.ns.name(),
            "link",
            "add",
            &a,
            "type",
            "veth",
            "peer",
            "name",
            &b,
        ]);
        let enslave = std::process::Command::new("ip")
            .args(["-n", h.ns.name(), "link", "set", &a, "master", br])
            .output()
            .unwrap();
        sh(&["ip", "-n", h.ns.name(), "link", "del", &a]);
        assert!(!enslave.status.success(), "{br} took a 1024th port");
        let why = String::from_utf8_lossy(&enslave.stderr);
        assert!(why.contains("Exchange full"), "{why}");
    }

    // A detach frees a place, which the next attach takes.
    docker(
        &h,
        "/NetworkDriver.DeleteEndpoint",
        json!({"NetworkID": dnet, "EndpointID": format!("{:064x}", 1)}),
    );
    h.call(
        "POST",
        &format!("/v1/networks/{name}/endpoints"),
        Some(body),
    );
    assert!(links_in(c.name()).iter().any(|l| l == "eth0"));
}
