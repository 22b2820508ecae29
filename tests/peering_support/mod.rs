//! Multi-node fixtures for the peering tests: a "router" namespace holding one bridge per
//! underlay subnet (address .1, forwarding on), node namespaces attached to a subnet by a veth,
//! each node running its own shimnetd with its own config, state dir, socket and peer file,
//! and container namespaces. All names start with `snp`; everything is removed on drop.

#![allow(dead_code)]

pub mod forge;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::Value;
use shimnet::netns::NamedNetns;
use shimnet_api::client::Client;

use crate::common::{sh, tag, try_sh};

/// Cluster CIDR of every fabric.
pub const CLUSTER: &str = "10.244.0.0/16";

/// Polls `cond` for up to `secs` seconds.
pub fn wait_for(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "not within {secs} s: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The router namespace and its subnets.
pub struct Fabric {
    pub router: NamedNetns,
    t: String,
    subnets: usize,
    ports: usize,
}

impl Fabric {
    /// A router namespace with `subnets` underlay subnets `172.30.<i>.0/24` (router at .1).
    pub fn new(subnets: usize) -> Self {
        let t = tag("");
        let router = NamedNetns::create(&format!("snp-r{t}")).expect("router netns");
        let r = router.name().to_string();
        sh(&["ip", "-n", &r, "link", "set", "lo", "up"]);
        sh(&[
            "ip",
            "netns",
            "exec",
            &r,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ]);
        for i in 0..subnets {
            let br = format!("snpb{i}");
            sh(&["ip", "-n", &r, "link", "add", &br, "type", "bridge"]);
            sh(&[
                "ip",
                "-n",
                &r,
                "addr",
                "add",
                &format!("172.30.{i}.1/24"),
                "dev",
                &br,
            ]);
            sh(&["ip", "-n", &r, "link", "set", &br, "up"]);
        }
        Fabric {
            router,
            t,
            subnets,
            ports: 0,
        }
    }

    /// Plugs a new namespace `snp-<kind><tag>` into underlay subnet `subnet` as host `host`
    /// (veth to the router's bridge, address, default route via the router).
    pub fn plug(&mut self, kind: &str, subnet: usize, host: u8) -> Plugged {
        assert!(subnet < self.subnets);
        self.ports += 1;
        let ns = NamedNetns::create(&format!("snp-{kind}{}-{}", self.t, self.ports))
            .expect("underlay host netns");
        let (inside, port) = (
            format!("snpu{}", self.ports),
            format!("snpp{}{}", self.t, self.ports),
        );
        let port: String = port.chars().take(15).collect();
        sh(&[
            "ip",
            "link",
            "add",
            &inside,
            "netns",
            ns.name(),
            "type",
            "veth",
            "peer",
            "name",
            &port,
            "netns",
            self.router.name(),
        ]);
        let r = self.router.name();
        sh(&[
            "ip",
            "-n",
            r,
            "link",
            "set",
            &port,
            "master",
            &format!("snpb{subnet}"),
            "up",
        ]);
        let addr = Ipv4Addr::new(172, 30, subnet as u8, host);
        let n = ns.name().to_string();
        sh(&[
            "ip",
            "-n",
            &n,
            "addr",
            "add",
            &format!("{addr}/24"),
            "dev",
            &inside,
        ]);
        sh(&["ip", "-n", &n, "link", "set", &inside, "up"]);
        sh(&["ip", "-n", &n, "link", "set", "lo", "up"]);
        sh(&[
            "ip",
            "-n",
            &n,
            "route",
            "add",
            "default",
            "via",
            &format!("172.30.{subnet}.1"),
        ]);
        Plugged {
            ns,
            inside,
            port,
            addr,
        }
    }

    /// A plain host on underlay subnet `subnet` with host number `host`: no shimnetd, no peer
    /// of anyone (the attacker of the encapsulation tests).
    pub fn host(&mut self, subnet: usize, host: u8) -> UnderlayHost {
        let p = self.plug("h", subnet, host);
        UnderlayHost {
            ns: p.ns,
            addr: p.addr,
        }
    }

    /// A node on subnet `subnet` with host number `host` and pod subnet `10.244.<pod>.0/24`.
    /// `peering` is the `[peering]` body without `cluster_cidr`/`peers_file`.
    pub fn node(&mut self, name: &str, subnet: usize, host: u8, pod: u8, peering: &str) -> Node {
        self.node_with(name, subnet, host, Some(pod), peering, "")
    }

    /// Like [`Fabric::node`]; `pod: None` leaves `pod_cidr` out (leased through etcd) and
    /// `extra` is appended to the config (e.g. an `[etcd]` section).
    pub fn node_with(
        &mut self,
        name: &str,
        subnet: usize,
        host: u8,
        pod: Option<u8>,
        peering: &str,
        extra: &str,
    ) -> Node {
        let Plugged {
            ns,
            inside,
            port,
            addr,
        } = self.plug("n", subnet, host);
        let dir = tempfile::tempdir().expect("tempdir");
        let pod_cidr = pod.map(|p| format!("10.244.{p}.0/24")).unwrap_or_default();
        let pod_line = pod
            .map(|_| format!("pod_cidr = \"{pod_cidr}\"\n"))
            .unwrap_or_default();
        let peers_file = dir.path().join("peers.toml");
        std::fs::write(&peers_file, "").unwrap();
        let interval = if peering.contains("reconcile_interval_secs") {
            ""
        } else {
            "reconcile_interval_secs = 1\n"
        };
        let socket = dir.path().join("api.sock");
        let config = dir.path().join("shimnetd.toml");
        std::fs::write(
            &config,
            format!(
                "state_dir = \"{}\"\napi_socket = \"{}\"\nplugin_dir = \"{}\"\nreconcile_interval_secs = 0\n\n[docker]\nenabled = false\n\n[node]\nname = \"{name}\"\naddress = \"{addr}\"\n{pod_line}\n[peering]\ncluster_cidr = \"{CLUSTER}\"\npeers_file = \"{}\"\n{interval}{peering}\n{extra}\n",
                dir.path().join("state").display(),
                socket.display(),
                dir.path().join("plugins").display(),
                peers_file.display(),
            ),
        )
        .unwrap();
        Node {
            name: name.into(),
            ns,
            addr,
            pod_cidr,
            port,
            underlay: inside,
            dir,
            socket,
            config,
            peers_file,
            daemon: None,
        }
    }
}

/// A namespace plugged into the underlay.
/// A namespace plugged into the underlay.
pub struct Plugged {
    /// The namespace.
    pub ns: NamedNetns,
    /// Its end of the veth (its underlay interface).
    pub inside: String,
    /// The router's end of the veth.
    pub port: String,
    /// Its underlay address.
    pub addr: Ipv4Addr,
}

/// A host on the underlay that runs no shimnetd.
pub struct UnderlayHost {
    pub ns: NamedNetns,
    pub addr: Ipv4Addr,
}

/// One node: a namespace with an underlay veth and its own shimnetd.
pub struct Node {
    pub name: String,
    pub ns: NamedNetns,
    pub addr: Ipv4Addr,
    pub pod_cidr: String,
    /// The router-side end of the node's underlay veth (capture here).
    pub port: String,
    /// The node-side end (the underlay interface).
    pub underlay: String,
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub config: PathBuf,
    pub peers_file: PathBuf,
    pub daemon: Option<Child>,
}

impl Node {
    /// Writes the peer file with `peers` (and optional per-peer modes).
    pub fn set_peers(&self, peers: &[(&Node, Option<&str>)]) {
        let mut s = String::new();
        for (p, mode) in peers {
            s.push_str(&format!(
                "[[peer]]\nname = \"{}\"\naddress = \"{}\"\npod_cidr = \"{}\"\n",
                p.name, p.addr, p.pod_cidr
            ));
            if let Some(m) = mode {
                s.push_str(&format!("mode = \"{m}\"\n"));
            }
            s.push('\n');
        }
        std::fs::write(&self.peers_file, s).unwrap();
    }

    /// Chooses the firewall backend (`nftables` or `iptables`) of this node's shimnetd; call
    /// before [`Node::start`].
    pub fn use_firewall(&self, backend: &str) {
        let text = std::fs::read_to_string(&self.config).unwrap();
        std::fs::write(&self.config, format!("firewall = \"{backend}\"\n{text}")).unwrap();
    }

    /// The value of the sample `name` (e.g. `shimnet_peer_up{peer="b"}`) in `GET /metrics`.
    pub fn metric(&self, name: &str) -> Option<f64> {
        let reply = self
            .client()
            .request("GET", "/metrics", None)
            .unwrap_or_else(|e| panic!("GET /metrics: {e}\n{}", self.log()));
        String::from_utf8_lossy(&reply.body)
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }

    /// Starts shimnetd and waits until its API answers.
    pub fn start(&mut self) {
        self.spawn();
        self.wait_started(Duration::from_secs(30));
    }

    /// Starts shimnetd without waiting (see [`Node::wait_started`]).
    pub fn spawn(&mut self) {
        assert!(self.daemon.is_none());
        let log = self.dir.path().join("shimnetd.log");
        // Owned by `self` at once, so a failed start is still killed on drop.
        self.daemon = Some(
            crate::common::shimnetd_command(self.ns.name(), &self.config, &log)
                .spawn()
                .expect("spawn shimnetd"),
        );
    }

    /// Waits until the spawned shimnetd answers.
    pub fn wait_started(&mut self, limit: Duration) {
        let log = self.dir.path().join("shimnetd.log");
        let client = self.client();
        let name = self.name.clone();
        let child = self.daemon.as_mut().expect("spawned");
        crate::common::wait_serving(child, &client, limit, || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            format!("(node {name}) {text}")
        });
    }

    /// Sends `sig` to shimnetd and waits for it to exit.
    pub fn stop(&mut self, sig: nix::sys::signal::Signal) {
        if let Some(mut c) = self.daemon.take() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), sig);
            let _ = c.wait();
        }
    }

    /// Sends SIGHUP.
    pub fn hup(&self) {
        let pid = self.daemon.as_ref().expect("running").id();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGHUP,
        )
        .unwrap();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("shimnetd.log")).unwrap_or_default()
    }

    pub fn client(&self) -> Client {
        Client::new(&self.socket)
    }

    /// `GET /v1/peers`.
    pub fn peers(&self) -> Value {
        self.client()
            .call("GET", "/v1/peers", None::<&Value>)
            .unwrap_or_else(|e| panic!("GET /v1/peers: {e}\n{}", self.log()))
    }

    /// The status of peer `name`.
    pub fn peer(&self, name: &str) -> Value {
        self.peers()["peers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .cloned()
            .unwrap_or(Value::Null)
    }

    /// Attaches a new container namespace to `shimnet0`; returns it and its address.
    pub fn container(&self, what: &str) -> (NamedNetns, Ipv4Addr) {
        let c = NamedNetns::create(&format!("snp-c{}", tag(what))).expect("container netns");
        let body =
            serde_json::json!({"container_id": c.name(), "netns": c.path().display().to_string()});
        let ep: Value = self
            .client()
            .call("POST", "/v1/networks/shimnet0/endpoints", Some(&body))
            .unwrap_or_else(|e| panic!("attach: {e}\n{}", self.log()));
        let ip = crate::common::ip_of(&ep).parse().unwrap();
        (c, ip)
    }

    /// `ip -n <node> args...`.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut v = vec!["ip", "-n", self.ns.name()];
        v.extend_from_slice(args);
        sh(&v)
    }

    /// `shimnetctl --socket <node's> args...` run inside the node namespace.
    pub fn ctl(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_shimnetctl"))
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("shimnetctl");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    /// Routes of protocol 201 (shimnet's) in the node.
    pub fn owned_routes(&self) -> String {
        self.ip(&["route", "show", "proto", "201"])
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop(nix::sys::signal::Signal::SIGKILL);
        if std::thread::panicking() {
            eprintln!("---- shimnetd log of {} ----\n{}", self.name, self.log());
        }
    }
}

/// Pings `dst` from namespace `ns` (`extra` e.g. `-M do -s 1472`); true if answered.
pub fn ping_from(ns: &NamedNetns, dst: Ipv4Addr, extra: &[&str]) -> bool {
    let d = dst.to_string();
    let mut v = vec!["ip", "netns", "exec", ns.name(), "ping", "-c1", "-W2"];
    v.extend_from_slice(extra);
    v.push(&d);
    try_sh(&v)
}

/// A tcpdump running in a namespace until it has seen `count` packets matching `filter`.
pub struct Capture {
    child: Child,
    out: PathBuf,
    err: PathBuf,
    _dir: tempfile::TempDir,
}

impl Capture {
    /// Starts capturing on `iface` in `ns` and waits until tcpdump listens.
    pub fn start(ns: &NamedNetns, iface: &str, filter: &str, count: usize) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (out, err) = (dir.path().join("out"), dir.path().join("err"));
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                ns.name(),
                "timeout",
                "30",
                "tcpdump",
                "-n",
                "-l",
                "-v",
            ])
            .args(["-i", iface, "-c", &count.to_string()])
            .arg(filter)
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .expect("tcpdump");
        wait_for(20, "tcpdump listening", || {
            std::fs::read_to_string(&err).is_ok_and(|s| s.contains("listening on"))
        });
        Capture {
            child,
            out,
            err,
            _dir: dir,
        }
    }

    /// Waits for tcpdump to have seen its packets; returns what it printed. Panics if it did not
    /// see them within its 30 s.
    pub fn finish(mut self) -> String {
        let st = self.child.wait().unwrap();
        let out = std::fs::read_to_string(&self.out).unwrap_or_default();
        assert!(
            st.success(),
            "tcpdump did not see its packets: {st}\n{out}\n{}",
            std::fs::read_to_string(&self.err).unwrap_or_default()
        );
        out
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SIGTERM: `timeout` passes it on to tcpdump.
            let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let _ = self.child.wait();
        }
    }
}

/// Kernel IPIP support, probed in a scratch namespace.
pub fn kernel_has_ipip() -> bool {
    runtime_net::features::kernel_ipip().is_ok()
}
