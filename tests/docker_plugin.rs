//! The Docker managed plugin bundle (`scripts/docker-plugin.sh`: config.json + rootfs holding
//! shimnetd) against a real dockerd confined to a test namespace (see `dockerd/mod.rs`):
//! `docker plugin create` from the local folder (offline), `enable`, `docker network create -d`
//! with the plugin as network and IPAM driver, two busybox containers that reach their gateway
//! and each other, then everything is removed again. Run as root.

mod common;
mod dockerd;

use std::path::Path;
use std::process::Command;

use common::*;
use dockerd::{Dockerd, IMAGE};
use shimnet::netns::NamedNetns;

const PLUGIN: &str = "snk-shimnet";
/// The driver name of a managed plugin is its full reference.
const DRIVER: &str = "snk-shimnet:latest";

/// Disables and removes the plugin before dockerd goes away.
struct PluginGuard<'a>(&'a Dockerd);

impl Drop for PluginGuard<'_> {
    fn drop(&mut self) {
        let _ = self.0.docker(&["plugin", "disable", "-f", PLUGIN]);
        let _ = self.0.docker(&["plugin", "rm", "-f", PLUGIN]);
    }
}

#[test]
fn managed_plugin_serves_network_create_and_containers() {
    if let Some(why) = dockerd::unavailable() {
        eprintln!("SKIPPED: dockerd cannot run here: {why}");
        return;
    }
    use_prefix("snk");
    let ns = NamedNetns::create(&format!("snk-{}", tag("p"))).unwrap();
    sh(&["ip", "-n", ns.name(), "link", "set", "lo", "up"]);
    let tmp = tempfile::tempdir().unwrap();
    let bundle = tmp.path().join("bundle");
    let out = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/docker-plugin.sh"))
        .arg(&bundle)
        .env("PROFILE", "debug")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        bundle.join("config.json").is_file() && bundle.join("rootfs/usr/bin/shimnetd").is_file()
    );

    let d = Dockerd::start(
        ns.name(),
        &tmp.path().join("plugins"),
        &["--bridge=none", "--iptables=false"],
    );
    let _plugin = PluginGuard(&d);
    d.ok(&["plugin", "create", PLUGIN, bundle.to_str().unwrap()]);
    d.ok(&["plugin", "enable", PLUGIN]);
    let ls = d.ok(&["plugin", "ls", "--format", "{{.Name}} {{.Enabled}}"]);
    assert!(
        ls.lines().any(|l| l == format!("{PLUGIN}:latest true")),
        "{ls}"
    );

    d.ok(&[
        "network",
        "create",
        "-d",
        DRIVER,
        "--ipam-driver",
        DRIVER,
        "--subnet",
        "10.76.0.0/24",
        "pnet",
    ]);
    let id = d.ok(&["network", "inspect", "-f", "{{.Id}}", "pnet"]);
    let bridge = format!("br-{}", &id[..12]);
    assert!(
        links_in(ns.name()).contains(&bridge),
        "no {bridge} in the namespace"
    );
    // Forwarding was turned on through the host /proc the plugin mounts (its own /proc/sys is
    // read-only).
    let fwd = sh(&[
        "ip",
        "netns",
        "exec",
        ns.name(),
        "cat",
        "/proc/sys/net/ipv4/ip_forward",
    ]);
    assert_eq!(fwd.trim(), "1");
    for c in ["pa", "pb"] {
        d.ok(&[
            "run",
            "-d",
            "--name",
            c,
            "--network",
            "pnet",
            IMAGE,
            "sleep",
            "600",
        ]);
    }
    let ip_b = d.ip_of("pb");
    assert!(ip_b.starts_with("10.76.0."), "{ip_b}");
    d.ok(&["exec", "pa", "ping", "-c1", "-W5", "10.76.0.1"]);
    d.ok(&["exec", "pa", "ping", "-c1", "-W5", &ip_b]);

    d.ok(&["rm", "-f", "pa", "pb"]);
    d.ok(&["network", "rm", "pnet"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while links_in(ns.name()).contains(&bridge) {
        assert!(std::time::Instant::now() < deadline, "{bridge} left behind");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    d.ok(&["plugin", "disable", PLUGIN]);
    d.ok(&["plugin", "rm", PLUGIN]);
    assert!(d.ok(&["plugin", "ls", "-q"]).is_empty());
}
