//! The systemd units without systemd as PID 1: `systemd-analyze verify` on the shipped units,
//! `systemd-socket-activate` starting the real shimnetd on the first client connection (with the
//! unit's capability bounding set applied by `setpriv`), and `Type=notify` readiness: `READY=1`
//! arrives only once the sockets answer. Everything runs in the test's own network namespaces.
//! Run as root.

mod cni_support;
mod common;

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cni_support::*;
use common::*;
use shimnet::netns::NamedNetns;
use shimnet_api::client::Client;

const UNITS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/systemd");
const DEADLINE: Duration = Duration::from_secs(30);

/// Polls `cond` for up to 30 s.
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < deadline, "not within 30 s: {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// `CapabilityBoundingSet=` of the shipped service as a `setpriv --bounding-set` argument.
fn unit_bounding_set() -> String {
    let unit = std::fs::read_to_string(Path::new(UNITS).join("shimnetd.service")).unwrap();
    let caps: Vec<String> = unit
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("the service sets CapabilityBoundingSet=")
        .split_whitespace()
        .map(|c| {
            format!(
                "+{}",
                c.strip_prefix("CAP_").expect("CAP_ name").to_lowercase()
            )
        })
        .collect();
    assert!(!caps.is_empty());
    format!("-all,{}", caps.join(","))
}

/// A daemon process (by pid) stopped with SIGTERM, then SIGKILL, on drop.
struct Daemon(Option<Child>);

impl Daemon {
    fn pid(&self) -> i32 {
        self.0.as_ref().unwrap().id() as i32
    }

    /// SIGTERM and wait; the exit status.
    fn stop(&mut self) -> std::process::ExitStatus {
        let mut c = self.0.take().expect("running");
        let pid = nix::unistd::Pid::from_raw(c.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(st) = c.try_wait().unwrap() {
                return st;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                return c.wait().unwrap();
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.0.is_some() {
            self.stop();
        }
    }
}

/// A test host namespace with a config whose paths are all in a temp dir.
struct Host {
    ns: NamedNetns,
    dir: tempfile::TempDir,
}

impl Host {
    fn new() -> Self {
        let ns = NamedNetns::create(&format!("snk-{}", tag("s"))).unwrap();
        sh(&["ip", "-n", ns.name(), "link", "set", "lo", "up"]);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("shimnetd.toml"),
            format!(
                "state_dir = \"{d}/state\"\napi_socket = \"{d}/api.sock\"\nplugin_dir = \"{d}/plugins\"\nreconcile_interval_secs = 0\nnetworks = []\n",
                d = dir.path().display()
            ),
        )
        .unwrap();
        Host { ns, dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.path("shimnetd.log")).unwrap_or_default()
    }

    /// Runs `argv` inside the namespace, stderr to the log.
    fn spawn(&self, argv: &[&str], env: &[(&str, &Path)]) -> Daemon {
        let log = std::fs::File::create(self.path("shimnetd.log")).unwrap();
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", self.ns.name()])
            .args(argv)
            .env("SHIMNET_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Daemon(Some(cmd.spawn().expect("spawn")))
    }
}

#[test]
fn units_pass_systemd_analyze_verify() {
    // The units name /usr/bin/shimnetd; verify checks it exists, so check copies that point at
    // the binary under test.
    let dir = tempfile::tempdir().unwrap();
    for unit in ["shimnetd.service", "shimnetd.socket"] {
        let text = std::fs::read_to_string(Path::new(UNITS).join(unit)).unwrap();
        let text = text.replace("/usr/bin/shimnetd", env!("CARGO_BIN_EXE_shimnetd"));
        std::fs::write(dir.path().join(unit), text).unwrap();
    }
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(dir.path().join("shimnetd.service"))
        .arg(dir.path().join("shimnetd.socket"))
        .output()
        .expect("systemd-analyze (package systemd) is installed");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && err.trim().is_empty(),
        "verify: {err}"
    );
    // The offline security review: print the exposure level (lower is better).
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(dir.path().join("shimnetd.service"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let overall = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| {
            panic!(
                "no exposure level: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    println!("systemd-analyze security: {}", overall.trim());
}

#[test]
fn socket_activation_starts_the_real_daemon_on_first_connection() {
    use_prefix("snk");
    let h = Host::new();
    let sock = h.path("activated.sock");
    let bounding = format!("--bounding-set={}", unit_bounding_set());
    let mut d = h.spawn(
        &[
            "systemd-socket-activate",
            "-l",
            sock.to_str().unwrap(),
            "-E",
            "SHIMNET_LOG=info",
            "--",
            "setpriv",
            "--no-new-privs",
            &bounding,
            "--inh-caps=-all",
            "--",
            env!("CARGO_BIN_EXE_shimnetd"),
            "--config",
            h.path("shimnetd.toml").to_str().unwrap(),
        ],
        &[],
    );
    wait_for("the activation socket exists", || sock.exists());
    assert!(
        !h.log().contains("engine started"),
        "shimnetd ran before any connection: {}",
        h.log()
    );
    // First connection: shimnetctl status. The daemon is started and answers on that very
    // connection (it was queued on the inherited socket meanwhile).
    let out = Command::new(env!("CARGO_BIN_EXE_shimnetctl"))
        .arg("--socket")
        .arg(&sock)
        .arg("status")
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{status}{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        h.log()
    );
    assert!(status.starts_with("shimnetd "), "{status}");
    assert!(h.log().contains("API socket inherited"), "{}", h.log());
    // systemd-socket-activate exec'd shimnetd in place (LISTEN_PID is its pid).
    let exe = std::fs::read_link(format!("/proc/{}/exe", d.pid())).unwrap();
    assert_eq!(exe, Path::new(env!("CARGO_BIN_EXE_shimnetd")));
    let caps = std::fs::read_to_string(format!("/proc/{}/status", d.pid())).unwrap();
    let eff = caps.lines().find(|l| l.starts_with("CapEff:")).unwrap();
    // NET_BIND_SERVICE(10) NET_ADMIN(12) NET_RAW(13) SYS_ADMIN(21) SYS_PTRACE(19): 0x283400.
    assert!(eff.ends_with("0000000000283400"), "{eff}");

    // Real work with only the unit's capabilities: a CNI ADD through the plugin binary, the
    // container reaches its gateway, DEL.
    let c = container("a");
    let net = tag("sk");
    let mut conf = conf("1.0.0", &net, &sock, &net, "10.74.0.0/24");
    conf["dnsEnabled"] = serde_json::json!(true);
    let mut call = Call::new(c.name(), &c.path().display().to_string());
    call.args = "K8S_POD_NAME=web".into();
    let o = shimnet("ADD", &call, &conf);
    assert_eq!(o.code, 0, "ADD: {o:?}\n{}", h.log());
    assert!(ping(&c, "10.74.0.1"), "container cannot reach its gateway");
    // The name service binds port 53 on the gateway with the unit's capabilities.
    let dig = Command::new("ip")
        .args([
            "netns",
            "exec",
            c.name(),
            "dig",
            "+short",
            "+time=2",
            "+tries=1",
        ])
        .args(["@10.74.0.1", "web"])
        .output()
        .unwrap();
    let ip = o.out["ips"][0]["address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&dig.stdout).trim(),
        ip,
        "{}",
        h.log()
    );
    let o = shimnet("DEL", &call, &conf);
    assert_eq!(o.code, 0, "DEL: {o:?}");

    // SIGTERM: clean exit, and the inherited socket file is left to its owner.
    let st = d.stop();
    assert!(st.success(), "{st}: {}", h.log());
    assert!(sock.exists(), "an inherited socket must not be unlinked");
}

#[test]
fn ready_is_notified_only_when_the_sockets_answer() {
    use_prefix("snk");
    let h = Host::new();
    let notify = h.path("notify.sock");
    let rx = UnixDatagram::bind(&notify).unwrap();
    rx.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut d = h.spawn(
        &[
            env!("CARGO_BIN_EXE_shimnetd"),
            "--config",
            h.path("shimnetd.toml").to_str().unwrap(),
        ],
        &[("NOTIFY_SOCKET", &notify)],
    );
    let mut buf = [0u8; 4096];
    let n = rx
        .recv(&mut buf)
        .unwrap_or_else(|e| panic!("no notification: {e}\n{}", h.log()));
    // At this moment, without any retry, both sockets answer.
    let api = Client::new(h.path("api.sock")).request("GET", "/v1/health", None);
    let plugin = Client::new(h.path("plugins/shimnet.sock")).request(
        "POST",
        "/Plugin.Activate",
        Some(b"{}"),
    );
    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(msg.lines().any(|l| l == "READY=1"), "{msg}");
    assert_eq!(api.expect("API answers at READY=1").status, 200);
    assert_eq!(plugin.expect("plugin answers at READY=1").status, 200);

    let st = d.stop();
    assert!(st.success(), "{st}: {}", h.log());
    let n = rx.recv(&mut buf).expect("STOPPING=1");
    assert!(
        String::from_utf8_lossy(&buf[..n])
            .lines()
            .any(|l| l == "STOPPING=1"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    assert!(
        !h.path("api.sock").exists(),
        "a socket shimnetd bound itself is removed at exit"
    );
}

/// Starts shimnetd in `h`'s namespace on `listener` passed as descriptor 3 with `LISTEN_FDS=1`,
/// as systemd does for `shimnetd.socket`.
fn start_on_held_socket(h: &Host, listener: &std::os::unix::net::UnixListener) -> Daemon {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(h.path("shimnetd.log"))
        .unwrap();
    let fd = listener.as_raw_fd();
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", h.ns.name(), "sh", "-c"])
        .arg("LISTEN_PID=$$ LISTEN_FDS=1 exec \"$0\" --config \"$1\"")
        .arg(env!("CARGO_BIN_EXE_shimnetd"))
        .arg(h.path("shimnetd.toml"))
        .stdout(Stdio::null())
        .stderr(log);
    // SAFETY: dup2 is async-signal-safe; the child only duplicates an open descriptor.
    unsafe {
        cmd.pre_exec(move || {
            // dup2 onto itself would keep close-on-exec: clear the flag instead.
            let r = if fd == 3 {
                libc::fcntl(3, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, 3)
            };
            if r < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Daemon(Some(cmd.spawn().expect("spawn")))
}

#[test]
fn restart_on_a_held_socket_keeps_containers_and_answers_queued_calls() {
    use std::io::{Read, Write};
    use_prefix("snk");
    let h = Host::new();
    let sock = h.path("held.sock");
    // The socket outlives the daemon, as shimnetd.socket's does under systemd.
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let mut d = start_on_held_socket(&h, &listener);
    let client = Client::new(&sock);
    wait_for("shimnetd answers", || {
        if let Some(st) = d.0.as_mut().unwrap().try_wait().unwrap() {
            panic!("shimnetd exited with {st}: {}", h.log());
        }
        client
            .request("GET", "/v1/health", None)
            .is_ok_and(|r| r.status == 200)
    });
    let net = tag("rk");
    let c = container("r");
    client
        .call::<serde_json::Value>(
            "POST",
            "/v1/networks",
            Some(&serde_json::json!({"name": net, "subnet": "10.77.0.0/24"})),
        )
        .unwrap();
    client
        .call::<serde_json::Value>(
            "POST",
            &format!("/v1/networks/{net}/endpoints"),
            Some(&serde_json::json!({"container_id": c.name(), "netns": c.path()})),
        )
        .unwrap();
    assert!(ping(&c, "10.77.0.1"));

    // "Upgrade": the daemon stops. The container keeps its networking, the socket stays.
    assert!(d.stop().success(), "{}", h.log());
    assert!(sock.exists(), "the held socket must stay");
    assert!(
        ping(&c, "10.77.0.1"),
        "container lost its network with the daemon stopped"
    );
    // A call made while no daemon runs waits in the socket's queue...
    let mut queued = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    queued
        .write_all(
            format!(
                "GET /v1/networks/{net}/endpoints/{}/check HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                c.name()
            )
            .as_bytes(),
        )
        .unwrap();
    // ...and the new daemon answers it: the endpoint is intact.
    let mut d2 = start_on_held_socket(&h, &listener);
    queued.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut reply = String::new();
    queued.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}\n{}", h.log());
    assert!(reply.contains("\"ok\":true"), "{reply}");
    assert!(ping(&c, "10.77.0.1"));
    client
        .call::<serde_json::Value>(
            "DELETE",
            &format!("/v1/networks/{net}?force=true"),
            None::<&serde_json::Value>,
        )
        .unwrap();
    assert!(d2.stop().success(), "{}", h.log());
}
