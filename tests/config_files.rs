//! Partial configuration files (issue 12, item 3): every key has the embedded default
//! (`packaging/shimnetd.toml`), a file sets only what it changes, and the `--state-dir`,
//! `--api-socket` and `--plugin-dir` flags override both. The real shimnetd is started from a
//! minimal file per section — and from an empty one — in its own namespace, and what it serves
//! is checked against the defaults plus that section's values. Run as root.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use common::*;
use serde_json::Value;
use shimnet::netns::NamedNetns;
use shimnet_api::client::Client;

/// shimnetd started in a fresh namespace from `config` (the file's text, `{dir}` standing for
/// its temp dir) with the three path flags pointing into that dir; killed on drop.
struct Daemon {
    ns: NamedNetns,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Daemon {
    fn start(config: &str, setup: impl FnOnce(&NamedNetns, &Path)) -> Self {
        let ns = container("cf");
        sh(&["ip", "-n", ns.name(), "link", "set", "lo", "up"]);
        let dir = tempfile::tempdir().unwrap();
        setup(&ns, dir.path());
        let file = dir.path().join("shimnetd.toml");
        let config = config.replace("{dir}", &dir.path().display().to_string());
        std::fs::write(&file, &config).unwrap();
        let mut d = Daemon {
            ns,
            dir,
            child: None,
        };
        let mut cmd = shimnetd_command(d.ns.name(), &file, &d.path("shimnetd.log"));
        cmd.arg("--state-dir")
            .arg(d.path("state"))
            .arg("--api-socket")
            .arg(d.path("api.sock"))
            .arg("--plugin-dir")
            .arg(d.path("plugins"));
        let (log, client) = (d.path("shimnetd.log"), d.client());
        let child = d.child.insert(cmd.spawn().expect("spawn shimnetd"));
        wait_serving(child, &client, Duration::from_secs(20), || {
            format!(
                "config:\n{config}\nlog:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        });
        d
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn client(&self) -> Client {
        Client::new(self.path("api.sock"))
    }

    fn get(&self, path: &str) -> Value {
        self.client()
            .call("GET", path, None::<&()>)
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    fn status(&self, path: &str) -> u16 {
        self.client().request("GET", path, None).unwrap().status
    }

    /// (name, subnet, bridge) of every network.
    fn networks(&self) -> Vec<(String, String, String)> {
        self.get("/v1/networks")
            .as_array()
            .unwrap()
            .iter()
            .map(|n| {
                let s = |k: &str| n[k].as_str().unwrap().to_string();
                (s("name"), s("subnet"), s("bridge"))
            })
            .collect()
    }

    fn firewall(&self) -> String {
        self.get("/v1/status")["status"]["firewall"]
            .as_str()
            .unwrap()
            .to_string()
    }

    fn plugin_socket(&self) -> bool {
        self.path("plugins/shimnet.sock").exists()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn default_network() -> (String, String, String) {
    ("shimnet0".into(), "10.87.0.0/16".into(), "shimnet0".into())
}

#[test]
fn daemon_starts_from_a_minimal_file_per_section() {
    // Empty file: the embedded default, paths from the flags.
    let empty = Daemon::start("", |_, _| {});
    assert_eq!(empty.networks(), vec![default_network()]);
    assert!(empty.plugin_socket(), "[docker] enabled by default");
    assert_eq!(empty.status("/v1/peers"), 404, "no peering by default");
    assert!(empty.path("state").is_dir(), "--state-dir used");
    let auto = empty.firewall();
    drop(empty);

    // Top-level keys only.
    let d = Daemon::start(
        "firewall = \"iptables\"\nreconcile_interval_secs = 0\n",
        |_, _| {},
    );
    assert_eq!(d.firewall(), "iptables");
    assert_eq!(d.networks(), vec![default_network()]);
    assert!(d.plugin_socket());
    drop(d);

    // [[networks]] only: the declared networks replace the default one.
    let d = Daemon::start(
        "[[networks]]\nname = \"mine\"\nbridge = \"snmine0\"\nsubnet = \"10.93.0.0/24\"\n",
        |_, _| {},
    );
    assert_eq!(
        d.networks(),
        vec![(
            "mine".to_string(),
            "10.93.0.0/24".to_string(),
            "snmine0".to_string()
        )]
    );
    assert_eq!(d.firewall(), auto);
    assert!(d.plugin_socket());
    drop(d);

    // [docker] only.
    let d = Daemon::start("[docker]\nenabled = false\n", |_, _| {});
    assert!(!d.plugin_socket(), "[docker] enabled = false");
    assert_eq!(d.networks(), vec![default_network()]);
    assert_eq!(d.firewall(), auto);
    drop(d);

    // [api] only: the group of the sockets and a body limit; everything else default.
    let d = Daemon::start(
        "[api]\nsocket_group = \"4242\"\nmax_body_bytes = 2048\n",
        |_, _| {},
    );
    let gid = |p: PathBuf| std::fs::metadata(p).unwrap().gid();
    assert_eq!(gid(d.path("api.sock")), 4242);
    assert_eq!(gid(d.path("plugins/shimnet.sock")), 4242);
    let big = serde_json::json!({"name": "x".repeat(4096), "subnet": "10.94.0.0/24"}).to_string();
    let r = d
        .client()
        .request("POST", "/v1/networks", Some(big.as_bytes()))
        .unwrap();
    assert_eq!(r.status, 413, "max_body_bytes = 2048");
    assert_eq!(d.networks(), vec![default_network()]);
    drop(d);

    // [node] only: the default network takes the pod subnet; no peering.
    let node =
        "[node]\nname = \"node-a\"\naddress = \"192.168.231.10\"\npod_cidr = \"10.244.31.0/24\"\n";
    let underlay = |ns: &NamedNetns, _: &Path| {
        let (a, b) = (format!("u{}", tag("")), format!("p{}", tag("")));
        sh(&[
            "ip",
            "-n",
            ns.name(),
            "link",
            "add",
            &a,
            "type",
            "veth",
            "peer",
            "name",
            &b,
        ]);
        sh(&[
            "ip",
            "-n",
            ns.name(),
            "addr",
            "add",
            "192.168.231.10/24",
            "dev",
            &a,
        ]);
        for l in [&a, &b] {
            sh(&["ip", "-n", ns.name(), "link", "set", l, "up"]);
        }
    };
    let d = Daemon::start(node, underlay);
    assert_eq!(
        d.networks(),
        vec![(
            "shimnet0".to_string(),
            "10.244.31.0/24".to_string(),
            "shimnet0".to_string()
        )]
    );
    assert_eq!(d.status("/v1/peers"), 404);
    assert!(d.plugin_socket());
    drop(d);

    // [node] and [peering], as the README's multi-host section shows them.
    let d = Daemon::start(
        &format!("{node}[peering]\nmode = \"auto\"\ncluster_cidr = \"10.244.0.0/16\"\npeers_file = \"{{dir}}/peers.toml\"\n"),
        |ns, dir| {
            underlay(ns, dir);
            std::fs::write(dir.join("peers.toml"), "").unwrap();
        },
    );
    let peers = d.get("/v1/peers");
    assert_eq!(peers["node"], "node-a", "{peers}");
    let net = d.get("/v1/networks/shimnet0")["network"].clone();
    assert_eq!(net["subnet"], "10.244.31.0/24", "{net}");
    assert!(
        net["no_masquerade_to"]
            .to_string()
            .contains("10.244.0.0/16"),
        "{net}"
    );
    assert_eq!(d.firewall(), auto);
    assert!(d.plugin_socket());
}
