//! The Debian package under a real systemd as PID 1: a bookworm minbase + systemd image booted
//! with `systemd-nspawn` (see `tests/nspawn_support`), the package installed into the image
//! before boot as an image builder does (chroot, no systemd running), then used, restarted,
//! reloaded, upgraded, removed and purged on the running system while "containers" (network
//! namespaces inside the machine, attached through the CNI plugin) keep pinging each other.
//! Prints the figures: boot-to-listening time, restart windows and ping loss, and the
//! `systemd-analyze security` exposure level. Run as root; builds (once, cached) the image from
//! the Debian mirror apt uses.

mod nspawn_support;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nspawn_support::{image, poll, Machine};
use serde_json::{json, Value};
use shimnet_api::client::Client;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// The containers' network (inside the machine's own network namespace).
const CNI_SUBNET: &str = "10.91.0.0/24";
const CNI_GATEWAY: &str = "10.91.0.1";
/// Ping interval of the continuous pings, in seconds.
const PING_INTERVAL: f64 = 0.05;

/// Builds the package as `version` (`None`: the crate's) into its own folder; its path.
fn build_deb(version: Option<&str>, out: &str) -> PathBuf {
    let mut cmd = Command::new(Path::new(ROOT).join("scripts/package.sh"));
    cmd.env("PROFILE", "debug")
        .env("PKG_COMPRESS", "none")
        .env("PKG_OUT", format!("target/systemd-pid1/{out}"))
        .current_dir(ROOT);
    if let Some(v) = version {
        cmd.env("PKG_VERSION", v);
    }
    let out = cmd.output().expect("run scripts/package.sh");
    assert!(
        out.status.success(),
        "package.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let deb = Path::new(ROOT).join(stdout.lines().last().expect("deb path").trim());
    assert!(deb.is_file(), "{}", deb.display());
    deb
}

/// The CNI network configuration the "containers" use.
fn cni_conf() -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": "sdnet",
        "type": "shimnet",
        "daemonSocket": "/run/shimnet/shimnetd.sock",
        "bridge": "sdbr0",
        "isGateway": true,
        "ipMasq": true,
        "ipam": {"type": "host-local", "ranges": [[{"subnet": CNI_SUBNET, "gateway": CNI_GATEWAY}]],
                 "routes": [{"dst": "0.0.0.0/0"}]}
    })
}

/// Runs the packaged CNI plugin inside the machine for container (netns) `id`.
fn cni(m: &Machine, command: &str, id: &str) -> Value {
    let env = [
        format!("CNI_COMMAND={command}"),
        format!("CNI_CONTAINERID={id}"),
        format!("CNI_NETNS=/run/netns/{id}"),
        "CNI_IFNAME=eth0".to_string(),
        "CNI_PATH=/usr/lib/cni".to_string(),
    ];
    let env: Vec<&str> = env.iter().map(String::as_str).collect();
    let out = m.run_with(
        &env,
        &["/usr/lib/cni/shimnet"],
        cni_conf().to_string().as_bytes(),
    );
    assert!(
        out.status.success(),
        "CNI {command} {id}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

/// The container's IPv4 address from a CNI result.
fn address(result: &Value) -> String {
    let a = result["ips"][0]["address"]
        .as_str()
        .unwrap_or_else(|| panic!("no address in {result}"));
    a.split('/').next().unwrap().to_string()
}

/// `ping` from the host's iputils, run in a container's netns inside the machine.
fn ping_cmd(m: &Machine, from: &str) -> Command {
    let mut c = Command::new("nsenter");
    c.arg(format!(
        "--net={}",
        m.path(&format!("run/netns/{from}")).display()
    ))
    .arg("ping");
    c
}

/// One ping (up to 3 tries) from container `from` to `to` succeeds.
fn pings(m: &Machine, from: &str, to: &str) -> bool {
    ping_cmd(m, from)
        .args(["-c", "1", "-W", "1", to])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
        || ping_cmd(m, from)
            .args(["-c", "2", "-W", "1", to])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

/// A continuous ping (every [`PING_INTERVAL`] s) from a container; killed on drop.
struct Pinger(Option<Child>);

impl Pinger {
    fn start(m: &Machine, from: &str, to: &str) -> Pinger {
        let child = ping_cmd(m, from)
            .args(["-q", "-n", "-i", &PING_INTERVAL.to_string(), "-W", "1", to])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn ping");
        // Let the first replies arrive before anything happens.
        std::thread::sleep(Duration::from_millis(300));
        Pinger(Some(child))
    }

    /// Stops it (SIGINT: ping prints its summary); (transmitted, received).
    fn finish(mut self) -> (u64, u64) {
        // The last echo request may still be on its way.
        std::thread::sleep(Duration::from_millis(200));
        let mut child = self.0.take().unwrap();
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
        let mut text = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        let _ = child.wait();
        let line = text
            .lines()
            .find(|l| l.contains("packets transmitted"))
            .unwrap_or_else(|| panic!("no ping summary: {text}"));
        let num = |word: &str| -> u64 {
            let words: Vec<&str> = line.split([' ', ',']).filter(|w| !w.is_empty()).collect();
            let i = words.iter().position(|w| *w == word).unwrap();
            words[i - 1].parse().unwrap()
        };
        (num("packets"), num("received"))
    }
}

impl Drop for Pinger {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `/v1/...` of the daemon inside, through the API socket.
fn api(m: &Machine, path: &str) -> (u16, Value) {
    let r = Client::new(m.path("run/shimnet/shimnetd.sock"))
        .request("GET", path, None)
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let body = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    (r.status, body)
}

/// Every endpoint record, sorted.
fn endpoints(m: &Machine) -> Vec<Value> {
    let out = m.sh(&["shimnetctl", "--json", "endpoint", "ls"]);
    let mut v: Vec<Value> = match serde_json::from_str(&out).expect("endpoint ls JSON") {
        Value::Array(a) => a,
        other => panic!("endpoint ls: {other}"),
    };
    v.sort_by_key(|e| e.to_string());
    v
}

/// A monotonic timestamp property of a unit, in µs.
fn mono(m: &Machine, unit: &str, prop: &str) -> u64 {
    m.prop(unit, prop).parse().unwrap_or(0)
}

/// How long the service was down in its last (re)start: from leaving active to READY=1.
fn restart_window(m: &Machine) -> Duration {
    let exit = mono(m, "shimnetd.service", "ActiveExitTimestampMonotonic");
    let enter = mono(m, "shimnetd.service", "ActiveEnterTimestampMonotonic");
    assert!(enter > exit, "no restart recorded ({exit} → {enter})");
    Duration::from_micros(enter - exit)
}

/// Ping loss during an event that took the daemon down for `window`: asserts that no more
/// replies were lost than fit in the window (plus one in flight), prints the figures.
fn check_loss(what: &str, (tx, rx): (u64, u64), window: Duration) {
    let lost = tx - rx;
    let allowed = (window.as_secs_f64() / PING_INTERVAL).ceil() as u64 + 1;
    println!(
        "systemd-pid1: {what}: daemon down {:.0} ms; ping every {:.0} ms: {tx} sent, {lost} lost ({:.0} ms)",
        window.as_secs_f64() * 1000.0,
        PING_INTERVAL * 1000.0,
        lost as f64 * PING_INTERVAL * 1000.0
    );
    assert!(tx > 10, "{what}: too few pings ({tx})");
    assert!(
        lost <= allowed,
        "{what}: {lost} pings lost, more than the restart window allows ({allowed})"
    );
}

/// The default route of the root namespace (must not change).
fn root_default_routes() -> String {
    let out = Command::new("ip")
        .args(["route", "show", "default"])
        .output()
        .unwrap();
    let v6 = Command::new("ip")
        .args(["-6", "route", "show", "default"])
        .output()
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&v6.stdout)
    )
}

#[test]
fn package_under_systemd_as_pid1() {
    let started = Instant::now();
    let version = env!("CARGO_PKG_VERSION");
    let v1 = format!("{version}+sdtest1");
    let v2 = format!("{version}+sdtest2");
    let debs = [
        build_deb(None, "v0"),
        build_deb(Some(&v1), "v1"),
        build_deb(Some(&v2), "v2"),
    ];
    let root = image();
    let routes = root_default_routes();
    let name = format!("sd{}", std::process::id() % 100_000);
    let mut m = Machine::prepare(&root, &name);

    // ---- Installed into the image before boot, as an image builder does: no systemd runs.
    for (i, d) in debs.iter().enumerate() {
        std::fs::copy(d, m.image_root().join(format!("root/shimnet-{i}.deb"))).unwrap();
    }
    assert!(
        !m.image_root().join("usr/bin/kill").exists() && !m.image_root().join("bin/kill").exists(),
        "the image has a kill program: the reload check would prove nothing"
    );
    m.chroot(&["dpkg", "-i", "/root/shimnet-0.deb"]);

    // ---- First boot: the socket is enabled and listening, the service waits for a call.
    let boot = Instant::now();
    m.boot();
    let listening = poll(Duration::from_secs(60), || {
        m.run(&[
            "systemctl",
            "show",
            "-p",
            "SubState",
            "--value",
            "shimnetd.socket",
        ])
        .stdout
        .starts_with(b"listening")
    });
    let to_listening = boot.elapsed();
    let state = m.wait_booted();
    let to_booted = boot.elapsed();
    assert!(
        listening,
        "shimnetd.socket not listening after boot: {}\n{}",
        String::from_utf8_lossy(&m.run(&["systemctl", "status", "shimnetd.socket"]).stdout),
        m.journal(&["-b", "-n", "60"])
    );
    println!(
        "systemd-pid1: boot to shimnetd.socket listening: {:.2} s; boot finished ({state}) after {:.2} s",
        to_listening.as_secs_f64(),
        to_booted.as_secs_f64()
    );
    assert_eq!(
        state,
        "running",
        "{}",
        m.sh(&["systemctl", "--failed", "--no-pager"])
    );
    assert_eq!(
        m.sh(&["systemctl", "is-enabled", "shimnetd.socket"]).trim(),
        "enabled"
    );
    assert_eq!(m.prop("shimnetd.service", "ActiveState"), "inactive");
    assert!(
        m.pids_named("shimnetd").is_empty(),
        "shimnetd runs before any call"
    );

    // nspawn left the root namespace's side alone: the veth is down, without addresses or
    // routes, and the default routes are unchanged.
    let veth = m.host_veth();
    let addrs = String::from_utf8_lossy(
        &Command::new("ip")
            .args(["-o", "addr", "show", "dev", &veth])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    assert!(!addrs.contains("inet"), "{veth} got an address: {addrs}");
    let vroutes = String::from_utf8_lossy(
        &Command::new("ip")
            .args(["route", "show", "table", "all", "dev", &veth])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    assert!(vroutes.trim().is_empty(), "routes via {veth}: {vroutes}");
    let tables = String::from_utf8_lossy(
        &Command::new("nft")
            .args(["list", "tables"])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    assert!(
        !tables.contains("io.systemd"),
        "nspawn added firewall rules to the root namespace: {tables}"
    );

    // ---- The first CNI call starts the service through the socket.
    for c in ["c1", "c2"] {
        m.sh(&["ip", "netns", "add", c]);
    }
    let r1 = cni(&m, "ADD", "c1");
    assert_eq!(m.prop("shimnetd.service", "ActiveState"), "active");
    let r2 = cni(&m, "ADD", "c2");
    let (ip1, ip2) = (address(&r1), address(&r2));
    assert!(pings(&m, "c1", &ip2), "c1 cannot reach c2 ({ip2})");
    assert!(pings(&m, "c2", CNI_GATEWAY), "c2 cannot reach its gateway");

    // ---- The status line, and READY=1 only once the sockets answer.
    let status = m.sh(&["systemctl", "status", "--no-pager", "shimnetd.service"]);
    assert!(
        status.contains("Status: \"serving the REST API"),
        "no daemon status line: {status}"
    );
    let plugin_sock = m.path("run/docker/plugins/shimnet.sock");
    m.sh(&["systemctl", "stop", "shimnetd.service"]);
    assert_eq!(m.prop("shimnetd.socket", "SubState"), "listening");
    assert!(
        !plugin_sock.exists(),
        "the plugin socket outlived the daemon"
    );
    // shimnetctl, too, starts it.
    m.sh(&["shimnetctl", "status"]);
    assert_eq!(m.prop("shimnetd.service", "ActiveState"), "active");
    m.sh(&["systemctl", "stop", "shimnetd.service"]);
    // `systemctl start` returns when READY=1 arrives: both sockets answer at once, no retry.
    m.sh(&["systemctl", "start", "shimnetd.service"]);
    let plugin = Client::new(&plugin_sock).request("POST", "/Plugin.Activate", Some(b"{}"));
    let health =
        Client::new(m.path("run/shimnet/shimnetd.sock")).request("GET", "/v1/health", None);
    assert_eq!(plugin.expect("plugin socket at READY=1").status, 200);
    assert_eq!(health.expect("API at READY=1").status, 200);

    // ---- SIGKILL: systemd restarts it; the containers keep pinging, the records are intact.
    let records = endpoints(&m);
    assert_eq!(records.len(), 2, "{records:?}");
    let pid = m.prop("shimnetd.service", "MainPID");
    let p = Pinger::start(&m, "c1", &ip2);
    m.sh(&[
        "systemctl",
        "kill",
        "--kill-who=main",
        "--signal=SIGKILL",
        "shimnetd.service",
    ]);
    let restarted = poll(Duration::from_secs(30), || {
        m.prop("shimnetd.service", "NRestarts") == "1"
            && m.prop("shimnetd.service", "ActiveState") == "active"
    });
    assert!(
        restarted,
        "not restarted after SIGKILL: {}",
        m.journal(&["-u", "shimnetd", "-n", "30"])
    );
    assert_ne!(m.prop("shimnetd.service", "MainPID"), pid);
    check_loss("SIGKILL + restart", p.finish(), restart_window(&m));
    assert_eq!(endpoints(&m), records, "records changed across the restart");
    for c in ["c1", "c2"] {
        cni(&m, "CHECK", c);
    }
    assert!(pings(&m, "c2", &ip1));

    // ---- `systemctl reload` applies a new [[networks]] entry (no kill program needed).
    let conf_path = m.path("etc/shimnet/shimnetd.toml");
    let mut conf = std::fs::read_to_string(&conf_path).unwrap();
    conf.push_str(
        "\n# added by the systemd test\n[[networks]]\nname = \"sdreload\"\nbridge = \"sdreload0\"\nsubnet = \"10.92.0.0/24\"\n",
    );
    std::fs::write(&conf_path, &conf).unwrap();
    assert_eq!(api(&m, "/v1/networks/sdreload").0, 404);
    let pid = m.prop("shimnetd.service", "MainPID");
    let out = m.run(&["systemctl", "reload", "shimnetd.service"]);
    assert!(
        out.status.success(),
        "systemctl reload failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        m.journal(&["-u", "shimnetd", "-n", "20"])
    );
    assert!(
        poll(Duration::from_secs(20), || api(&m, "/v1/networks/sdreload")
            .0
            == 200),
        "the reload did not create the new network: {}",
        m.journal(&["-u", "shimnetd", "-n", "20"])
    );
    assert_eq!(
        m.prop("shimnetd.service", "MainPID"),
        pid,
        "reload restarted it"
    );
    m.sh(&["ip", "link", "show", "sdreload0"]);

    // ---- The sandbox as systemd rates it.
    let security = m.sh(&[
        "systemd-analyze",
        "security",
        "--no-pager",
        "shimnetd.service",
    ]);
    let overall = security
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("{security}"))
        .trim()
        .to_string();
    println!("systemd-pid1: systemd-analyze security shimnetd.service: {overall}");

    // ---- Upgrade while c1 pings c2: the service restarts, the socket stays, the edit is kept.
    let pid = m.prop("shimnetd.service", "MainPID");
    let socket_since = m.prop("shimnetd.socket", "ActiveEnterTimestampMonotonic");
    let p = Pinger::start(&m, "c1", &ip2);
    let t = Instant::now();
    m.sh(&["dpkg", "-i", "/root/shimnet-1.deb"]);
    let took = t.elapsed();
    let loss = p.finish();
    let window = restart_window(&m);
    println!(
        "systemd-pid1: upgrade {version} → {v1}: dpkg -i took {:.2} s",
        took.as_secs_f64()
    );
    check_loss("upgrade", loss, window);
    assert_eq!(
        m.sh(&["dpkg-query", "-W", "-f=${Version}", "shimnet"])
            .trim(),
        v1
    );
    assert_eq!(m.prop("shimnetd.service", "ActiveState"), "active");
    assert_ne!(m.prop("shimnetd.service", "MainPID"), pid, "not restarted");
    assert_eq!(
        m.prop("shimnetd.socket", "ActiveEnterTimestampMonotonic"),
        socket_since,
        "the upgrade restarted the socket"
    );
    assert_eq!(
        std::fs::read_to_string(&conf_path).unwrap(),
        conf,
        "conffile edit lost"
    );
    assert_eq!(api(&m, "/v1/networks/sdreload").0, 200);
    assert_eq!(endpoints(&m), records);
    assert_eq!(
        m.sh(&["systemctl", "is-enabled", "shimnetd.socket"]).trim(),
        "enabled"
    );

    // ---- An admin's `systemctl disable` survives the next upgrade.
    m.sh(&["systemctl", "disable", "shimnetd.socket"]);
    m.sh(&["dpkg", "-i", "/root/shimnet-2.deb"]);
    assert_eq!(
        m.sh(&["dpkg-query", "-W", "-f=${Version}", "shimnet"])
            .trim(),
        v2
    );
    let enabled = m.run(&["systemctl", "is-enabled", "shimnetd.socket"]);
    assert_eq!(
        String::from_utf8_lossy(&enabled.stdout).trim(),
        "disabled",
        "the upgrade re-enabled the socket"
    );
    assert_eq!(m.prop("shimnetd.service", "ActiveState"), "active");

    // The admin then enables the service (and, through Also=, the socket): purge undoes it.
    m.sh(&["systemctl", "enable", "shimnetd.service"]);

    // ---- dpkg -r: stopped, containers keep working, configuration and state kept.
    m.sh(&["dpkg", "-r", "shimnet"]);
    for unit in ["shimnetd.service", "shimnetd.socket"] {
        assert_eq!(m.prop(unit, "ActiveState"), "inactive", "{unit}");
    }
    assert!(
        poll(Duration::from_secs(10), || m
            .pids_named("shimnetd")
            .is_empty()),
        "shimnetd still runs after dpkg -r"
    );
    assert!(!m.path("usr/bin/shimnetd").exists());
    assert!(pings(&m, "c1", &ip2), "c1 lost c2 after dpkg -r");
    assert!(
        pings(&m, "c2", CNI_GATEWAY),
        "c2 lost its gateway after dpkg -r"
    );
    assert!(
        m.path("var/lib/shimnet").is_dir(),
        "remove deleted the state"
    );
    assert_eq!(std::fs::read_to_string(&conf_path).unwrap(), conf);

    // ---- dpkg --purge: state, configuration and every trace of the enablement are gone.
    m.sh(&["dpkg", "--purge", "shimnet"]);
    assert!(!m.path("var/lib/shimnet").exists(), "purge kept the state");
    assert!(!m.path("etc/shimnet").exists(), "purge kept /etc/shimnet");
    let traces = m.sh(&[
        "find",
        "/etc/systemd/system",
        "/var/lib/systemd",
        "-name",
        "*shimnetd*",
    ]);
    assert!(traces.trim().is_empty(), "left after purge: {traces}");
    assert!(pings(&m, "c1", &ip2), "c1 lost c2 after the purge");

    // ---- Shutdown; the root namespace is as it was.
    assert!(m.shutdown(), "the machine did not shut down cleanly");
    drop(m);
    assert!(
        !Path::new("/sys/class/net").join(&veth).exists(),
        "{veth} left behind"
    );
    assert_eq!(
        root_default_routes(),
        routes,
        "the root namespace's default routes changed"
    );
    println!(
        "systemd-pid1: whole test {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
