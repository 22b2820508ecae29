//! A real etcd cluster (Debian's `etcd-server`) for the membership tests: each member runs in
//! its own namespace plugged into one underlay subnet of a [`Fabric`], with its own data dir;
//! members are killed by pid on drop. Optional TLS (a CA, server and client certificates made
//! with `openssl`) and `etcdctl` helpers run inside a member's namespace.

#![allow(dead_code)]

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use shimnet::netns::NamedNetns;

use crate::common::{sh, tag};
use crate::peering_support::{wait_for, Fabric, Node};

/// Certificates for a TLS cluster.
pub struct Tls {
    pub dir: tempfile::TempDir,
}

impl Tls {
    /// A CA, a server certificate for `ips` and a client certificate, all signed by the CA.
    pub fn new(ips: &[Ipv4Addr]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let p = |f: &str| dir.path().join(f).display().to_string();
        let ossl = |args: &[&str]| {
            let mut v = vec!["openssl"];
            v.extend_from_slice(args);
            sh(&v)
        };
        ossl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &p("ca.key"),
            "-out",
            &p("ca.pem"),
            "-days",
            "2",
            "-subj",
            "/CN=shimnet-test-ca",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        let san = ips
            .iter()
            .map(|ip| format!("IP:{ip}"))
            .collect::<Vec<_>>()
            .join(",");
        for (name, eku, san) in [
            ("server", "serverAuth,clientAuth", san.as_str()),
            ("client", "clientAuth", "DNS:shimnet-client"),
        ] {
            ossl(&[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                &p(&format!("{name}.key")),
                "-out",
                &p(&format!("{name}.csr")),
                "-subj",
                &format!("/CN=shimnet-{name}"),
            ]);
            std::fs::write(
                dir.path().join(format!("{name}.ext")),
                format!("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage={eku}\nsubjectAltName={san}\n"),
            )
            .unwrap();
            ossl(&[
                "x509",
                "-req",
                "-in",
                &p(&format!("{name}.csr")),
                "-CA",
                &p("ca.pem"),
                "-CAkey",
                &p("ca.key"),
                "-CAcreateserial",
                "-days",
                "2",
                "-out",
                &p(&format!("{name}.pem")),
                "-extfile",
                &p(&format!("{name}.ext")),
            ]);
        }
        Tls { dir }
    }

    pub fn path(&self, f: &str) -> PathBuf {
        self.dir.path().join(f)
    }
}

/// One etcd member.
pub struct Member {
    pub name: String,
    pub ns: NamedNetns,
    pub addr: Ipv4Addr,
    pub dir: tempfile::TempDir,
    args: Vec<String>,
    child: Option<Child>,
    scheme: &'static str,
}

impl Member {
    fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    /// Starts (or restarts) the member with its data dir.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "{} already running", self.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        // `ip netns exec` execs etcd: the pid is etcd's.
        let child = Command::new("ip")
            .args(["netns", "exec", self.ns.name(), "etcd"])
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn etcd (Debian package etcd-server)");
        self.child = Some(child);
    }

    /// Sends `sig` and waits for the member to exit.
    pub fn signal(&mut self, sig: Signal) {
        if let Some(mut c) = self.child.take() {
            let _ = kill(Pid::from_raw(c.id() as i32), sig);
            let _ = c.wait();
        }
    }

    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    pub fn endpoint(&self) -> String {
        format!("{}://{}:2379", self.scheme, self.addr)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The member's own `/metrics` (on its client URL), fetched inside its namespace.
    pub fn metrics(&self, tls: Option<&Tls>) -> String {
        let mut cmd = Command::new("ip");
        cmd.args([
            "netns",
            "exec",
            self.ns.name(),
            "curl",
            "-sf",
            "--max-time",
            "5",
        ]);
        if let Some(t) = tls {
            cmd.arg("--cacert")
                .arg(t.path("ca.pem"))
                .arg("--cert")
                .arg(t.path("client.pem"))
                .arg("--key")
                .arg(t.path("client.key"));
        }
        let out = cmd
            .arg(format!("{}/metrics", self.endpoint()))
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.signal(Signal::SIGKILL);
        if std::thread::panicking() {
            let log = self.log();
            let tail: String = log
                .lines()
                .rev()
                .take(15)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n");
            eprintln!("---- etcd log of {} (last lines) ----\n{tail}", self.name);
        }
    }
}

/// An etcd cluster on the fabric.
pub struct Etcd {
    pub members: Vec<Member>,
    pub tls: Option<Tls>,
    /// `user:password` for etcdctl once auth is enabled.
    pub auth: Option<String>,
}

impl Etcd {
    /// `n` members on underlay subnet `subnet` (hosts .11, .12, ...), started and healthy.
    pub fn new(f: &mut Fabric, subnet: usize, n: usize) -> Self {
        Self::build(f, subnet, n, false)
    }

    /// One member serving TLS only (client certificates required).
    pub fn with_tls(f: &mut Fabric, subnet: usize) -> Self {
        Self::build(f, subnet, 1, true)
    }

    fn build(f: &mut Fabric, subnet: usize, n: usize, tls: bool) -> Self {
        let token = tag("etcd");
        let mut members = Vec::new();
        let addrs: Vec<Ipv4Addr> = (0..n)
            .map(|i| Ipv4Addr::new(172, 30, subnet as u8, 11 + i as u8))
            .collect();
        let certs = tls.then(|| Tls::new(&addrs));
        let scheme = if tls { "https" } else { "http" };
        let initial = addrs
            .iter()
            .enumerate()
            .map(|(i, a)| format!("e{i}=http://{a}:2380"))
            .collect::<Vec<_>>()
            .join(",");
        for (i, addr) in addrs.iter().enumerate() {
            let plugged = f.plug("e", subnet, 11 + i as u8);
            assert_eq!(plugged.addr, *addr);
            let ns = plugged.ns;
            let dir = tempfile::tempdir().unwrap();
            let mut args: Vec<String> = [
                "--name".into(),
                format!("e{i}"),
                "--data-dir".into(),
                dir.path().join("data").display().to_string(),
                "--listen-client-urls".into(),
                format!("{scheme}://{addr}:2379"),
                "--advertise-client-urls".into(),
                format!("{scheme}://{addr}:2379"),
                "--listen-peer-urls".into(),
                format!("http://{addr}:2380"),
                "--initial-advertise-peer-urls".into(),
                format!("http://{addr}:2380"),
                "--initial-cluster".into(),
                initial.clone(),
                "--initial-cluster-state".into(),
                "new".into(),
                "--initial-cluster-token".into(),
                token.clone(),
                "--heartbeat-interval".into(),
                "100".into(),
                "--election-timeout".into(),
                "1000".into(),
                "--logger".into(),
                "zap".into(),
                "--log-outputs".into(),
                "stderr".into(),
            ]
            .into();
            if let Some(t) = &certs {
                for (flag, file) in [
                    ("--cert-file", "server.pem"),
                    ("--key-file", "server.key"),
                    ("--trusted-ca-file", "ca.pem"),
                ] {
                    args.push(flag.into());
                    args.push(t.path(file).display().to_string());
                }
                args.push("--client-cert-auth".into());
            }
            members.push(Member {
                name: format!("e{i}"),
                ns,
                addr: *addr,
                dir,
                args,
                child: None,
                scheme,
            });
        }
        for m in &mut members {
            m.start();
        }
        let e = Etcd {
            members,
            tls: certs,
            auth: None,
        };
        e.wait_healthy(60);
        e
    }

    /// Every endpoint, as a TOML array body (`"http://a:2379", ...`).
    pub fn endpoints_toml(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("\"{}\"", m.endpoint()))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The `[etcd]` section for a node (`extra` lines appended).
    pub fn section(&self, extra: &str) -> String {
        let mut s = format!("[etcd]\nendpoints = [{}]\n", self.endpoints_toml());
        if let Some(t) = &self.tls {
            s.push_str(&format!(
                "ca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
                t.path("ca.pem").display(),
                t.path("client.pem").display(),
                t.path("client.key").display()
            ));
        }
        s.push_str(extra);
        s
    }

    /// `etcdctl` inside the namespace of the first running member, against the running members.
    pub fn ctl(&self, args: &[&str]) -> (bool, String) {
        let m = self
            .members
            .iter()
            .find(|m| m.running())
            .expect("a running member");
        let eps = self
            .members
            .iter()
            .filter(|m| m.running())
            .map(Member::endpoint)
            .collect::<Vec<_>>()
            .join(",");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", m.ns.name(), "etcdctl"])
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={eps}"))
            .arg("--command-timeout=5s")
            .arg("--dial-timeout=3s");
        if let Some(t) = &self.tls {
            cmd.arg(format!("--cacert={}", t.path("ca.pem").display()))
                .arg(format!("--cert={}", t.path("client.pem").display()))
                .arg(format!("--key={}", t.path("client.key").display()));
        }
        if let Some(a) = &self.auth {
            cmd.arg(format!("--user={a}"));
        }
        let out = cmd
            .args(args)
            .output()
            .expect("etcdctl (Debian package etcd-client)");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    /// `etcdctl` that must succeed.
    pub fn ctl_ok(&self, args: &[&str]) -> String {
        let (ok, out) = self.ctl(args);
        assert!(ok, "etcdctl {args:?}: {out}");
        out
    }

    /// Waits until every running member answers and one is the leader.
    pub fn wait_healthy(&self, secs: u64) {
        wait_for(secs, "etcd healthy with a leader", || {
            self.leader().is_some()
        });
    }

    /// Index of the leader among the running members.
    pub fn leader(&self) -> Option<usize> {
        let (ok, out) = self.ctl(&["endpoint", "status", "-w", "json"]);
        if !ok {
            return None;
        }
        let v: Value = serde_json::from_str(&out).ok()?;
        let arr = v.as_array()?;
        if arr.len() != self.members.iter().filter(|m| m.running()).count() {
            return None;
        }
        let leader = arr.first()?["Status"]["leader"].as_u64()?;
        if leader == 0 {
            return None;
        }
        arr.iter()
            .find(|s| s["Status"]["header"]["member_id"].as_u64() == Some(leader))
            .and_then(|s| s["Endpoint"].as_str())
            .and_then(|ep| self.members.iter().position(|m| m.endpoint() == ep))
    }

    /// Current revision of the store.
    pub fn revision(&self) -> i64 {
        let out = self.ctl_ok(&[
            "get",
            "/",
            "--prefix",
            "--keys-only",
            "-w",
            "json",
            "--limit=1",
        ]);
        let v: Value = serde_json::from_str(&out).unwrap();
        v["header"]["revision"].as_i64().unwrap()
    }

    /// Sum over the running members of a counter family in their `/metrics`, filtered by
    /// `labels` substrings (e.g. `grpc_method="Range"`).
    pub fn metric_sum(&self, family: &str, labels: &[&str]) -> f64 {
        self.members
            .iter()
            .filter(|m| m.running())
            .map(|m| m.metrics(self.tls.as_ref()))
            .flat_map(|text| {
                text.lines()
                    .filter(|l| l.starts_with(family) && labels.iter().all(|x| l.contains(x)))
                    .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                    .collect::<Vec<_>>()
            })
            .sum()
    }
}

/// The `[peering]` body of an etcd node.
pub fn etcd_peering(mode: &str, interval_secs: u64) -> String {
    format!("mode = \"{mode}\"\nsource = \"etcd\"\nreconcile_interval_secs = {interval_secs}\n")
}

/// The pod subnet a node leased (from its `/v1/peers`).
pub fn leased(n: &Node) -> String {
    n.peers()["pod_cidr"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Routes of protocol 201 in a node, as destination prefixes.
pub fn route_dsts(n: &Node) -> Vec<String> {
    n.owned_routes()
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

/// Waits until every node routes to every other node's subnet (and to nothing else).
pub fn wait_full_mesh(nodes: &[&Node], secs: u64) {
    let subnets: Vec<String> = nodes.iter().map(|n| leased(n)).collect();
    wait_for(
        secs,
        "every node routes to every other node's subnet",
        || {
            nodes.iter().enumerate().all(|(i, n)| {
                let mut got = route_dsts(n);
                got.sort();
                let mut want: Vec<String> = subnets
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(_, s)| s.clone())
                    .collect();
                want.sort();
                got == want
            })
        },
    );
}

/// A process in a namespace that is stopped (SIGINT) and reaped on drop.
pub struct Bg {
    child: Option<Child>,
    pub out: PathBuf,
    _dir: tempfile::TempDir,
}

impl Bg {
    /// Runs `args` inside `ns` with stdout+stderr to a file.
    pub fn start(ns: &str, args: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let f = std::fs::File::create(&out).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .expect("spawn");
        Bg {
            child: Some(child),
            out,
            _dir: dir,
        }
    }

    /// Stops it with SIGINT and returns its output.
    pub fn finish(&mut self) -> String {
        if let Some(mut c) = self.child.take() {
            let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGINT);
            let _ = c.wait();
        }
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// Output so far.
    pub fn text(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }
}

impl Drop for Bg {
    fn drop(&mut self) {
        self.finish();
    }
}

/// A continuous ping (every 100 ms) from a container.
pub fn pinger(from: &NamedNetns, to: Ipv4Addr) -> Bg {
    Bg::start(
        from.name(),
        &["ping", "-n", "-i", "0.1", "-W", "1", &to.to_string()],
    )
}

/// (transmitted, received) from ping's summary.
pub fn ping_counts(out: &str) -> (u64, u64) {
    let line = out
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or_else(|| panic!("no ping summary in {out}"));
    let nums: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .take(2)
        .filter_map(|s| s.parse().ok())
        .collect();
    (nums[0], nums[1])
}

/// `ip monitor route` in a node: records every route change as it happens.
pub fn route_monitor(n: &Node) -> Bg {
    Bg::start(n.ns.name(), &["ip", "-ts", "monitor", "route"])
}

/// Lines of a route monitor that deleted one of shimnet's routes.
pub fn deletions(monitor_text: &str) -> Vec<String> {
    monitor_text
        .lines()
        .filter(|l| l.contains("Deleted") && l.contains("proto 201"))
        .map(str::to_string)
        .collect()
}

/// Drops traffic between `ns` and `net` (both ways), as a partition would; undone on drop.
pub struct Partition {
    ns: String,
    table: String,
}

impl Partition {
    pub fn new(ns: &NamedNetns, net: &str) -> Self {
        let table = format!("snp_part_{}", std::process::id());
        let script = format!(
            "table ip {table} {{\n chain out {{ type filter hook output priority -300; ip daddr {net} drop; }}\n chain in {{ type filter hook input priority -300; ip saddr {net} drop; }}\n}}\n"
        );
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("p.nft");
        std::fs::write(&f, script).unwrap();
        sh(&[
            "ip",
            "netns",
            "exec",
            ns.name(),
            "nft",
            "-f",
            &f.display().to_string(),
        ]);
        Partition {
            ns: ns.name().to_string(),
            table,
        }
    }

    pub fn heal(&mut self) {
        if !self.table.is_empty() {
            let _ = Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &self.ns,
                    "nft",
                    "delete",
                    "table",
                    "ip",
                    &self.table,
                ])
                .status();
            self.table.clear();
        }
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        self.heal();
    }
}

/// Polls until `deadline` passes, calling `f` (for sampling during a fault).
pub fn sample_until(deadline: Instant, every: Duration, mut f: impl FnMut()) {
    while Instant::now() < deadline {
        f();
        std::thread::sleep(every);
    }
}

pub fn file_exists(p: &Path) -> bool {
    p.exists()
}
