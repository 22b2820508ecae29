//! Test hosts built from network namespaces: a "host" namespace running its own shimnetd, an
//! "outside" namespace behind it, and container namespaces. Everything is removed on drop.

#![allow(dead_code)]

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use shimnet::netns::{run_in, NamedNetns};
use shimnet_api::client::{Client, ClientError};

static SEQ: AtomicUsize = AtomicUsize::new(0);
static PREFIX: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();

/// Sets the prefix of every namespace this test process creates (default `snt`); call first.
pub fn use_prefix(prefix: &'static str) {
    let _ = PREFIX.set(prefix);
}

/// The namespace name prefix of this test process.
pub fn prefix() -> &'static str {
    // `SHIMNET_TEST_PREFIX` lets the benchmark suite keep clear of a concurrent test run.
    PREFIX.get_or_init(|| {
        std::env::var("SHIMNET_TEST_PREFIX")
            .map(|p| &*Box::leak(p.into_boxed_str()))
            .unwrap_or("snt")
    })
}

/// A unique short tag for names in this test process.
pub fn tag(prefix: &str) -> String {
    format!(
        "{prefix}{}x{}",
        std::process::id() % 100_000,
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs a command, panicking with its output if it fails.
pub fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command and tells whether it succeeded.
pub fn try_sh(args: &[&str]) -> bool {
    Command::new(args[0])
        .args(&args[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `ip netns exec NS ping -c1 -W2 IP` succeeded.
pub fn ping(ns: &NamedNetns, ip: &str) -> bool {
    try_sh(&["ip", "netns", "exec", ns.name(), "ping", "-c1", "-W2", ip])
}

/// One simulated host: a namespace with shimnetd running in it and an outside namespace linked to
/// it (host 198.18.<n>.1/30 ↔ outside 198.18.<n>.2/30, host default route via outside).
pub struct TestHost {
    pub ns: NamedNetns,
    pub outside: NamedNetns,
    pub dir: tempfile::TempDir,
    pub daemon: Option<Child>,
    pub host_ip: Ipv4Addr,
    pub outside_ip: Ipv4Addr,
    pub socket: PathBuf,
    pub config: PathBuf,
    pub extra_args: Vec<String>,
}

impl TestHost {
    /// A host whose daemon runs with `config_toml` (paths are filled in).
    pub fn new(config_networks: &str) -> Self {
        Self::with_args(config_networks, &[])
    }

    /// Like [`TestHost::new`] with extra daemon flags (e.g. `--firewall iptables`).
    pub fn with_args(config_networks: &str, extra: &[&str]) -> Self {
        let t = tag("h");
        let ns = NamedNetns::create(&format!("{}-{t}", prefix())).expect("host netns");
        let outside = NamedNetns::create(&format!("{}-{t}-out", prefix())).expect("outside netns");
        let n = (SEQ.fetch_add(1, Ordering::Relaxed) % 250) as u8;
        let host_ip = Ipv4Addr::new(198, 18, n, 1);
        let outside_ip = Ipv4Addr::new(198, 18, n, 2);
        let (a, b) = (format!("up{t}"), format!("dn{t}"));
        sh(&[
            "ip",
            "link",
            "add",
            &a,
            "netns",
            ns.name(),
            "type",
            "veth",
            "peer",
            "name",
            &b,
            "netns",
            outside.name(),
        ]);
        sh(&[
            "ip",
            "-n",
            ns.name(),
            "addr",
            "add",
            &format!("{host_ip}/30"),
            "dev",
            &a,
        ]);
        sh(&["ip", "-n", ns.name(), "link", "set", &a, "up"]);
        sh(&["ip", "-n", ns.name(), "link", "set", "lo", "up"]);
        sh(&[
            "ip",
            "-n",
            outside.name(),
            "addr",
            "add",
            &format!("{outside_ip}/30"),
            "dev",
            &b,
        ]);
        sh(&["ip", "-n", outside.name(), "link", "set", &b, "up"]);
        sh(&["ip", "-n", outside.name(), "link", "set", "lo", "up"]);
        sh(&[
            "ip",
            "-n",
            ns.name(),
            "route",
            "add",
            "default",
            "via",
            &outside_ip.to_string(),
        ]);
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("api.sock");
        let config = dir.path().join("shimnetd.toml");
        // Only the networks the test declares (none: not even the embedded default's).
        let no_networks = if config_networks.contains("[[networks]]") {
            ""
        } else {
            "networks = []\n"
        };
        std::fs::write(
            &config,
            format!(
                "state_dir = \"{}\"\napi_socket = \"{}\"\nplugin_dir = \"{}\"\nreconcile_interval_secs = 0\n{no_networks}{}\n",
                dir.path().join("state").display(),
                socket.display(),
                dir.path().join("plugins").display(),
                config_networks
            ),
        )
        .unwrap();
        let mut h = TestHost {
            ns,
            outside,
            dir,
            daemon: None,
            host_ip,
            outside_ip,
            socket,
            config,
            extra_args: extra.iter().map(|s| s.to_string()).collect(),
        };
        h.start();
        h
    }

    /// A command that runs shimnetd in the host namespace (log appended to `shimnetd.log`).
    pub fn daemon_command(&self) -> Command {
        let mut cmd = shimnetd_command(
            self.ns.name(),
            &self.config,
            &self.dir.path().join("shimnetd.log"),
        );
        cmd.args(&self.extra_args);
        cmd
    }

    /// Starts shimnetd in the host namespace and waits until it answers.
    pub fn start(&mut self) {
        assert!(self.daemon.is_none(), "daemon already running");
        let (client, log) = (self.client(), self.dir.path().join("shimnetd.log"));
        // Owned by `self` before the wait, so a failed start is still killed on drop.
        let child = self
            .daemon
            .insert(self.daemon_command().spawn().expect("spawn shimnetd"));
        wait_serving(child, &client, Duration::from_secs(20), || {
            std::fs::read_to_string(&log).unwrap_or_default()
        });
    }

    /// Sends `sig` to the daemon and waits for it to exit.
    pub fn stop_with(&mut self, sig: nix::sys::signal::Signal) {
        if let Some(mut c) = self.daemon.take() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), sig);
            let _ = c.wait();
        }
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("shimnetd.log")).unwrap_or_default()
    }

    /// API client.
    pub fn client(&self) -> Client {
        Client::new(&self.socket)
    }

    /// JSON call that must succeed.
    pub fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.try_call(method, path, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}\n{}", self.log()))
    }

    /// JSON call.
    pub fn try_call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, ClientError> {
        self.client().call(method, path, body.as_ref())
    }

    /// Creates a network through the API.
    pub fn create_network(&self, body: Value) -> Value {
        self.call("POST", "/v1/networks", Some(body))
    }

    /// Attaches a container namespace.
    pub fn attach(&self, net: &str, c: &NamedNetns, extra: Value) -> Value {
        let mut body =
            serde_json::json!({"container_id": c.name(), "netns": c.path().display().to_string()});
        if let Value::Object(m) = extra {
            body.as_object_mut().unwrap().extend(m);
        }
        self.call("POST", &format!("/v1/networks/{net}/endpoints"), Some(body))
    }

    /// Detaches a container.
    pub fn detach(&self, net: &str, id: &str) -> Value {
        self.call(
            "DELETE",
            &format!("/v1/networks/{net}/endpoints/{id}"),
            None,
        )
    }

    /// `ip -n host ...` output.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut v = vec!["ip", "-n", self.ns.name()];
        v.extend_from_slice(args);
        sh(&v)
    }

    /// The host namespace's nftables ruleset (empty string if nft is absent).
    pub fn nft_ruleset(&self) -> String {
        Command::new("ip")
            .args(["netns", "exec", self.ns.name(), "nft", "list", "ruleset"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    /// The host namespace's iptables rules (all tables, iptables-save format).
    pub fn iptables_save(&self) -> String {
        Command::new("ip")
            .args(["netns", "exec", self.ns.name(), "iptables-save"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        self.stop_with(nix::sys::signal::Signal::SIGKILL);
        if std::thread::panicking() {
            eprintln!("---- shimnetd log ----\n{}", self.log());
        }
    }
}

/// A command running shimnetd with `config` inside namespace `ns`, its log appended to `log`.
pub fn shimnetd_command(ns: &str, config: &Path, log: &Path) -> Command {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let mut cmd = Command::new("ip");
    cmd.args([
        "netns",
        "exec",
        ns,
        env!("CARGO_BIN_EXE_shimnetd"),
        "--config",
    ])
    .arg(config)
    .env("SHIMNET_LOG", "info,runtime_net=debug")
    .stdout(Stdio::null())
    .stderr(log);
    cmd
}

/// Waits until the daemon `child` answers `GET /v1/health` on `client`; panics with `log()` if it
/// exits or does not answer within `timeout` (the caller owns the child and kills it on drop).
pub fn wait_serving(
    child: &mut Child,
    client: &Client,
    timeout: Duration,
    log: impl Fn() -> String,
) {
    let deadline = Instant::now() + timeout;
    loop {
        if client
            .request("GET", "/v1/health", None)
            .is_ok_and(|r| r.status == 200)
        {
            return;
        }
        if let Some(st) = child.try_wait().unwrap() {
            panic!("shimnetd exited with {st}: {}", log());
        }
        assert!(
            Instant::now() < deadline,
            "shimnetd did not become ready: {}",
            log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A container: a fresh named namespace.
pub fn container(prefix: &str) -> NamedNetns {
    NamedNetns::create(&format!("{}-{}", self::prefix(), tag(prefix))).expect("container netns")
}

/// The address part of an endpoint's `ipv4` (`10.0.0.2/24` → `10.0.0.2`).
pub fn ip_of(ep: &Value) -> String {
    ep["ipv4"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string()
}

/// Listens on `port` in namespace `ns` and returns the source address of the first connection
/// (None after `timeout`).
pub fn spawn_listener(
    ns: &Path,
    addr: Ipv4Addr,
    port: u16,
) -> std::sync::mpsc::Receiver<Option<SocketAddr>> {
    let (tx, rx) = std::sync::mpsc::channel();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let path = ns.to_path_buf();
    std::thread::spawn(move || {
        let _ = run_in(&path, move || {
            let l = TcpListener::bind((addr, port)).expect("bind listener");
            l.set_nonblocking(true).unwrap();
            ready_tx.send(()).unwrap();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok((_, peer)) = l.accept() {
                    // Close the listener before reporting, so the caller may bind the port again.
                    drop(l);
                    let _ = tx.send(Some(peer));
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = tx.send(None);
        });
    });
    ready_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("listener ready");
    rx
}

/// Connects from namespace `ns` to `addr:port`; true on success within 2 s.
pub fn connect_from(ns: &Path, addr: Ipv4Addr, port: u16) -> bool {
    run_in(ns, move || {
        TcpStream::connect_timeout(&SocketAddr::from((addr, port)), Duration::from_secs(2)).is_ok()
    })
    .unwrap_or(false)
}

/// Names of links in a namespace (`ip -n NS -o link`).
pub fn links_in(ns: &str) -> Vec<String> {
    sh(&["ip", "-n", ns, "-o", "link", "show"])
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap().to_string())
        .collect()
}

/// Polls `cond` for up to 3 s (detached veths are deleted in the background).
pub fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(3);
    while !cond() {
        assert!(Instant::now() < deadline, "not within 3 s: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `cond` for up to `limit` (for work the kernel finishes in the background on a loaded
/// machine, e.g. destroying many veths).
pub fn eventually_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "not within {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
