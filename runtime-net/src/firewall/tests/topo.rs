//! Root-test harness: a namespace topology (host with a bridge, containers, an outside peer),
//! threads entered into namespaces, and real TCP probes.

use std::fs::File;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use nix::sched::{setns, CloneFlags};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Runs a command, panicking with its stderr on failure.
pub fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `f` on a new thread inside network namespace `ns`.
pub fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let fd = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        setns(&fd, CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

/// A TCP connection attempt: server in `srv_ns` bound to `bind`, client in `cli_ns` connecting
/// to `to`. Returns the client address the server saw, or `None` when no connection was made.
pub fn probe(srv_ns: &str, bind: SocketAddr, cli_ns: &str, to: SocketAddr) -> Option<IpAddr> {
    let (ready_tx, ready_rx) = mpsc::channel();
    let done = Arc::new(AtomicBool::new(false));
    let done2 = done.clone();
    let srv_path = format!("/run/netns/{srv_ns}");
    let server = std::thread::spawn(move || {
        let fd = File::open(&srv_path).expect("open netns");
        setns(&fd, CloneFlags::CLONE_NEWNET).expect("setns");
        // A previous probe's connection on the same port may linger for a moment.
        let start = Instant::now();
        let l = loop {
            match TcpListener::bind(bind) {
                Ok(l) => break l,
                Err(e) if start.elapsed() > Duration::from_secs(5) => panic!("bind {bind}: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        };
        l.set_nonblocking(true).expect("nonblocking");
        ready_tx.send(()).expect("ready");
        let mut last_chance = None;
        loop {
            if let Ok((_, peer)) = l.accept() {
                return Some(peer.ip());
            }
            if done2.load(Ordering::SeqCst) {
                let t = *last_chance.get_or_insert_with(Instant::now);
                if t.elapsed() > Duration::from_millis(200) {
                    return None;
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    ready_rx.recv().expect("server ready");
    let connected = in_ns(cli_ns, move || {
        TcpStream::connect_timeout(&to, Duration::from_millis(1500)).is_ok()
    });
    done.store(true, Ordering::SeqCst);
    let seen = server
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e));
    if !connected {
        return None;
    }
    seen
}

/// Namespaces of one test, deleted on drop.
pub struct Topo {
    /// Host namespace.
    pub host: String,
    /// Outside namespace.
    pub outside: String,
    /// Container namespaces.
    pub containers: Vec<String>,
    /// Outside-facing address of the host.
    pub host_out: IpAddr,
    /// Address of the outside peer.
    pub out_ip: IpAddr,
    /// IPv6 variants when set up.
    pub host_out6: Option<IpAddr>,
    /// Outside peer IPv6.
    pub out_ip6: Option<IpAddr>,
    all: Vec<String>,
}

impl Drop for Topo {
    fn drop(&mut self) {
        for ns in &self.all {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// One bridge network of a topology: `10.<a>.<b>.0/24`, gateway `.1`, containers `.2`, `.3`…
pub struct BridgeSpec {
    /// Bridge name in the host namespace.
    pub bridge: &'static str,
    /// Subnet prefix `10.a.b`.
    pub prefix: String,
    /// Containers on it.
    pub containers: usize,
    /// Also IPv6 `fd00:<a>:<b>::/64`.
    pub v6: Option<String>,
}

impl Topo {
    /// Builds host, outside and container namespaces. `out_prefix` is `10.a.b` of the host ↔
    /// outside link.
    pub fn new(tag: &str, out_prefix: &str, bridges: &[BridgeSpec], out6: Option<&str>) -> Topo {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let base = format!("snt-fw-{}-{n}-{tag}", std::process::id());
        let host = format!("{base}-h");
        let outside = format!("{base}-o");
        let mut t = Topo {
            host: host.clone(),
            outside: outside.clone(),
            containers: Vec::new(),
            host_out: format!("{out_prefix}.1").parse().expect("ip"),
            out_ip: format!("{out_prefix}.2").parse().expect("ip"),
            host_out6: out6.map(|p| format!("{p}::1").parse().expect("ip6")),
            out_ip6: out6.map(|p| format!("{p}::2").parse().expect("ip6")),
            all: vec![],
        };
        for ns in [&host, &outside] {
            sh(&["ip", "netns", "add", ns]);
            t.all.push(ns.clone());
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
            no_dad(ns);
        }
        let ex = |ns: &str, cmd: &[&str]| {
            let mut v = vec!["ip", "netns", "exec", ns];
            v.extend_from_slice(cmd);
            sh(&v);
        };
        ex(&host, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        ex(&host, &["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);
        // Host <-> outside.
        sh(&[
            "ip", "-n", &host, "link", "add", "vout", "type", "veth", "peer", "name", "eth0",
            "netns", &outside,
        ]);
        sh(&[
            "ip",
            "-n",
            &host,
            "addr",
            "add",
            &format!("{out_prefix}.1/24"),
            "dev",
            "vout",
        ]);
        sh(&[
            "ip",
            "-n",
            &outside,
            "addr",
            "add",
            &format!("{out_prefix}.2/24"),
            "dev",
            "eth0",
        ]);
        if let Some(p) = out6 {
            sh(&[
                "ip",
                "-n",
                &host,
                "addr",
                "add",
                &format!("{p}::1/64"),
                "dev",
                "vout",
                "nodad",
            ]);
            sh(&[
                "ip",
                "-n",
                &outside,
                "addr",
                "add",
                &format!("{p}::2/64"),
                "dev",
                "eth0",
                "nodad",
            ]);
        }
        sh(&["ip", "-n", &host, "link", "set", "vout", "up"]);
        sh(&["ip", "-n", &outside, "link", "set", "eth0", "up"]);
        for b in bridges {
            let br = b.bridge;
            sh(&["ip", "-n", &host, "link", "add", br, "type", "bridge"]);
            sh(&[
                "ip",
                "-n",
                &host,
                "addr",
                "add",
                &format!("{}.1/24", b.prefix),
                "dev",
                br,
            ]);
            if let Some(p6) = &b.v6 {
                sh(&[
                    "ip",
                    "-n",
                    &host,
                    "addr",
                    "add",
                    &format!("{p6}::1/64"),
                    "dev",
                    br,
                    "nodad",
                ]);
            }
            sh(&["ip", "-n", &host, "link", "set", br, "up"]);
            // The outside can route back to the subnet (so "not masqueraded" is observable).
            sh(&[
                "ip",
                "-n",
                &outside,
                "route",
                "add",
                &format!("{}.0/24", b.prefix),
                "via",
                &format!("{out_prefix}.1"),
            ]);
            if let (Some(p6), Some(o6)) = (&b.v6, out6) {
                sh(&[
                    "ip",
                    "-n",
                    &outside,
                    "-6",
                    "route",
                    "add",
                    &format!("{p6}::/64"),
                    "via",
                    &format!("{o6}::1"),
                ]);
            }
            for i in 0..b.containers {
                let cns = format!("{base}-c{}", t.containers.len());
                sh(&["ip", "netns", "add", &cns]);
                t.all.push(cns.clone());
                no_dad(&cns);
                let hv = format!("v{}{}", br, i);
                sh(&[
                    "ip", "-n", &host, "link", "add", &hv, "type", "veth", "peer", "name", "eth0",
                    "netns", &cns,
                ]);
                sh(&["ip", "-n", &host, "link", "set", &hv, "master", br, "up"]);
                sh(&["ip", "-n", &cns, "link", "set", "lo", "up"]);
                sh(&[
                    "ip",
                    "-n",
                    &cns,
                    "addr",
                    "add",
                    &format!("{}.{}/24", b.prefix, i + 2),
                    "dev",
                    "eth0",
                ]);
                if let Some(p6) = &b.v6 {
                    sh(&[
                        "ip",
                        "-n",
                        &cns,
                        "addr",
                        "add",
                        &format!("{p6}::{}/64", i + 2),
                        "dev",
                        "eth0",
                        "nodad",
                    ]);
                }
                sh(&["ip", "-n", &cns, "link", "set", "eth0", "up"]);
                sh(&[
                    "ip",
                    "-n",
                    &cns,
                    "route",
                    "add",
                    "default",
                    "via",
                    &format!("{}.1", b.prefix),
                ]);
                if let Some(p6) = &b.v6 {
                    sh(&[
                        "ip",
                        "-n",
                        &cns,
                        "-6",
                        "route",
                        "add",
                        "default",
                        "via",
                        &format!("{p6}::1"),
                    ]);
                }
                if let Some(p6) = &b.v6 {
                    // Warm up neighbour discovery (the first IPv6 packets can be lost for ~1s).
                    let gw6 = format!("{p6}::1");
                    let _ = Command::new("ip")
                        .args(["netns", "exec", &cns, "ping", "-6", "-c1", "-W2", &gw6])
                        .output();
                }
                t.containers.push(cns);
            }
        }
        if let Some(o6) = out6 {
            let _ = Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &host,
                    "ping",
                    "-6",
                    "-c1",
                    "-W2",
                    &format!("{o6}::2"),
                ])
                .output();
        }
        t
    }

    /// Runs a command inside the host namespace.
    pub fn host_sh(&self, cmd: &[&str]) -> String {
        let mut v = vec!["ip", "netns", "exec", &self.host];
        v.extend_from_slice(cmd);
        sh(&v)
    }

    /// True when br_netfilter is usable in the host namespace (enables it there).
    pub fn br_netfilter(&self) -> bool {
        let ok = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.host,
                "test",
                "-d",
                "/proc/sys/net/bridge",
            ])
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            self.host_sh(&["sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1"]);
            self.host_sh(&["sysctl", "-qw", "net.bridge.bridge-nf-call-ip6tables=1"]);
        }
        ok
    }
}

/// No duplicate address detection on links created later in `ns` (link-local addresses would
/// stay tentative for a second or two and delay neighbour discovery).
fn no_dad(ns: &str) {
    sh(&[
        "ip",
        "netns",
        "exec",
        ns,
        "sysctl",
        "-qw",
        "net.ipv6.conf.default.accept_dad=0",
    ]);
    sh(&[
        "ip",
        "netns",
        "exec",
        ns,
        "sysctl",
        "-qw",
        "net.ipv6.conf.all.accept_dad=0",
    ]);
}

/// Socket address helper.
pub fn sa(ip: IpAddr, port: u16) -> SocketAddr {
    SocketAddr::new(ip, port)
}
