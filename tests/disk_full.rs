//! A full disk under the state store (issue 12, item 5): the state dir is a small tmpfs, attaches
//! go on until one fails with "No space left on device". That attach leaves nothing in the
//! kernel (what it built is taken down again) and the daemon lives; the condition shows in `/v1/health`, `/metrics` and
//! `shimnetctl status`. Once space is freed (a filler file is deleted), attach and detach work
//! again without a restart, and every record acknowledged before is intact — also after a
//! restart. Run as root.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::signal::Signal;
use serde_json::{json, Value};
use shimnet::netns::NamedNetns;

/// A tmpfs of `size` mounted on a fresh temp dir; unmounted (lazily, so a process still holding
/// a file cannot stop it) on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn new(size: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        mount(
            Some("tmpfs"),
            dir.path(),
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(format!("size={size},mode=0700").as_str()),
        )
        .expect("mount tmpfs");
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = umount2(self.dir.path(), MntFlags::MNT_DETACH);
    }
}

/// Fills the file system holding `path` with a file of zeros until it refuses more.
fn fill(path: &Path) -> u64 {
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 4096];
    let mut written = 0u64;
    while let Ok(n) = f.write(&chunk) {
        if n == 0 {
            break;
        }
        written += n as u64;
    }
    let _ = f.sync_all();
    written
}

const NET: &str = "df";

fn try_attach(h: &TestHost, c: &NamedNetns, port: u16) -> Result<Value, String> {
    let body = json!({
        "container_id": c.name(),
        "netns": c.path().display().to_string(),
        "ports": [{"host_port": port, "container_port": 80}],
    });
    h.try_call("POST", &format!("/v1/networks/{NET}/endpoints"), Some(body))
        .map_err(|e| e.to_string())
}

/// container id → IPv4 of every recorded endpoint.
fn records(h: &TestHost) -> BTreeMap<String, String> {
    h.call("GET", "/v1/endpoints", None)
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["key"]["container_id"].as_str().unwrap().to_string(),
                e["ipv4"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn store_health(h: &TestHost) -> Value {
    let v = h.call("GET", "/v1/health", None);
    v["store"].clone()
}

fn metric(h: &TestHost, name: &str) -> Option<f64> {
    let r = h.client().request("GET", "/metrics", None).unwrap();
    String::from_utf8(r.body)
        .unwrap()
        .lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
}

fn shimnetctl_status(h: &TestHost) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_shimnetctl"))
        .arg("--socket")
        .arg(&h.socket)
        .arg("status")
        .output()
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn full_state_disk_fails_cleanly_and_recovers_without_a_restart() {
    use_prefix("snf");
    // Dropped last: the daemon (in `h`) is gone before the file system is unmounted.
    let fs = Tmpfs::new("4m");
    let state: PathBuf = fs.path().join("state");
    let mut h = TestHost::with_args(
        &format!("[[networks]]\nname = \"{NET}\"\nsubnet = \"10.96.0.0/22\"\n"),
        &["--state-dir", state.to_str().unwrap()],
    );
    let pid = h.daemon.as_ref().unwrap().id();
    assert_eq!(store_health(&h)["healthy"], true, "{}", h.log());

    // Some attaches on an empty disk, then fill it and attach until one fails.
    let mut containers: Vec<NamedNetns> = Vec::new();
    let mut acknowledged: BTreeMap<String, String> = BTreeMap::new();
    let mut port = 19000u16;
    for _ in 0..3 {
        let c = container("a");
        let e = try_attach(&h, &c, port).expect("attach with space left");
        acknowledged.insert(c.name().to_string(), e["ipv4"].as_str().unwrap().into());
        containers.push(c);
        port += 1;
    }
    let filler = fs.path().join("filler");
    let filled = fill(&filler);
    assert!(filled > 0, "the filler took the free space");
    let (failed, err) = loop {
        let c = container("a");
        match try_attach(&h, &c, port) {
            Ok(e) => {
                acknowledged.insert(c.name().to_string(), e["ipv4"].as_str().unwrap().into());
                containers.push(c);
                port += 1;
                assert!(
                    acknowledged.len() < 300,
                    "a full disk never refused an attach"
                );
            }
            Err(e) => break (c, e),
        }
    };
    println!(
        "disk full after {} acknowledged attaches; the next one failed: {err}",
        acknowledged.len()
    );
    assert!(err.contains("500"), "{err}");
    assert!(err.contains("No space left on device"), "{err}");
    // Nothing of the failed attach is left: no record, no link in its namespace, no bridge port
    // and no published port rule for it. (The attach may have failed when its reservation was
    // made durable, beside the kernel work: then its pair was retired, and the retired pair is
    // deleted in the background like every detached one.)
    assert!(!records(&h).contains_key(failed.name()));
    eventually("the failed attach's pair deleted", || {
        links_in(failed.name()) == ["lo"]
    });
    eventually("one bridge port per acknowledged attach", || {
        h.ip(&["-o", "link", "show", "master", NET]).lines().count() == acknowledged.len()
    });
    let rules = format!("{}{}", h.nft_ruleset(), h.iptables_save());
    assert!(
        !rules.contains(&port.to_string()),
        "no rule for port {port}"
    );
    // The daemon lives and says what is wrong.
    assert!(h.daemon.as_mut().unwrap().try_wait().unwrap().is_none());
    let st = store_health(&h);
    println!("store health while full: {st}");
    assert_eq!(st["healthy"], false, "{st}");
    assert!(st["io_errors"].as_u64().unwrap() >= 1, "{st}");
    assert!(
        st["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("No space left on device"),
        "{st}"
    );
    assert_eq!(h.call("GET", "/v1/health", None)["status"], "degraded");
    assert_eq!(metric(&h, "shimnet_store_healthy"), Some(0.0));
    assert!(metric(&h, "shimnet_store_io_errors_total").unwrap_or(0.0) >= 1.0);
    let status = shimnetctl_status(&h);
    println!("shimnetctl status while full:\n{status}");
    assert!(
        status.contains("state store: FAILING") && status.contains("No space left on device"),
        "{status}"
    );
    // Still full: a second attach fails just as cleanly.
    let again = container("a");
    let e = try_attach(&h, &again, port + 1).unwrap_err();
    println!("second attach while full: {e}");
    assert!(e.contains("No space left on device"), "{e}");
    eventually("the second failed attach's pair deleted", || {
        links_in(again.name()) == ["lo"]
    });

    // Free the space: attach and detach work again, same daemon.
    std::fs::remove_file(&filler).unwrap();
    let c = container("a");
    let e = try_attach(&h, &c, port + 2)
        .unwrap_or_else(|e| panic!("attach after freeing: {e}\n{}", h.log()));
    acknowledged.insert(c.name().to_string(), e["ipv4"].as_str().unwrap().into());
    containers.push(c);
    let gone = containers.remove(0);
    h.detach(NET, gone.name());
    acknowledged.remove(gone.name());
    assert!(
        ping(&containers[0], "10.96.0.1"),
        "an endpoint made before still works"
    );
    assert_eq!(h.daemon.as_ref().unwrap().id(), pid, "no restart");
    let st = store_health(&h);
    println!("store health after freeing space: {st}");
    assert_eq!(st["healthy"], true, "{st}");
    assert!(st["reopens"].as_u64().unwrap() >= 1, "{st}");
    assert_eq!(h.call("GET", "/v1/health", None)["status"], "ok");
    assert_eq!(metric(&h, "shimnet_store_healthy"), Some(1.0));
    assert!(shimnetctl_status(&h).contains("state store: ok"));

    // Every acknowledged record is intact, no address is recorded twice — now and after a
    // restart.
    let check = |h: &TestHost, when: &str| {
        let now = records(h);
        assert_eq!(now, acknowledged, "{when}");
        let ips: BTreeSet<&String> = now.values().collect();
        assert_eq!(ips.len(), now.len(), "{when}: an address recorded twice");
    };
    check(&h, "after recovery");
    h.stop_with(Signal::SIGKILL);
    h.start();
    check(&h, "after a restart");
    for c in &containers {
        h.detach(NET, c.name());
    }
    assert!(records(&h).is_empty());
}

/// When the database cannot be reopened safely (here: someone scribbled over the file, then a
/// write fails on the full disk), shimnetd says so and exits with an error for the service
/// manager to restart it, instead of serving from a store it cannot trust.
#[test]
fn unsafe_reopen_makes_the_daemon_exit_for_a_restart() {
    use_prefix("snf");
    let fs = Tmpfs::new("4m");
    let state: PathBuf = fs.path().join("state");
    let mut h = TestHost::with_args(
        &format!("[[networks]]\nname = \"{NET}\"\nsubnet = \"10.97.0.0/24\"\n"),
        &["--state-dir", state.to_str().unwrap()],
    );
    let c = container("u");
    try_attach(&h, &c, 19500).expect("attach with space left");
    // Overwritten in place (no new space needed), then the disk is filled.
    let db = state.join("shimnet.redb");
    let len = std::fs::metadata(&db).unwrap().len() as usize;
    let mut f = std::fs::OpenOptions::new().write(true).open(&db).unwrap();
    f.write_all(&vec![0x55u8; len]).unwrap();
    drop(f);
    let filler = fs.path().join("filler");
    fill(&filler);
    let e = try_attach(&h, &container("u"), 19501).unwrap_err();
    assert!(e.contains("500"), "{e}");
    let child = h.daemon.as_mut().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "shimnetd kept running on a store it cannot reopen:\n{}",
            h.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    h.daemon = None;
    let log = h.log();
    let said: Vec<&str> = log.lines().filter(|l| l.contains("state store")).collect();
    println!("exit: {status}; log:\n{}", said.join("\n"));
    assert!(!status.success(), "exit status {status}");
    assert!(log.contains("cannot be reopened safely"), "{log}");
    assert!(
        log.contains("exiting so that the service manager restarts shimnetd"),
        "{log}"
    );
    std::fs::remove_file(&filler).unwrap();
}
