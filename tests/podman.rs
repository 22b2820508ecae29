//! Podman 4 (CNI backend) end to end: podman runs in the root namespace with per-test storage and
//! a conflist whose `shimnet` plugin talks to a shimnetd running in a test "host" namespace, so
//! bridges, veths and rules stay out of the root namespace. Run as root.

mod cni_support;
mod common;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

use cni_support::*;
use common::*;
use serde_json::json;

/// Podman with its own storage, runroot, CNI config dir and containers.conf.
struct Podman {
    dir: tempfile::TempDir,
    conf_dir: PathBuf,
    containers_conf: PathBuf,
}

impl Podman {
    fn new() -> Option<Self> {
        if Command::new("podman").arg("--version").output().is_err() {
            eprintln!("SKIPPED: podman is not installed (scripts/deps.sh test)");
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let conf_dir = dir.path().join("cni");
        std::fs::create_dir_all(&conf_dir).unwrap();
        let containers_conf = dir.path().join("containers.conf");
        std::fs::write(
            &containers_conf,
            format!(
                "[containers]\ndefault_ulimits = []\nlog_driver = \"k8s-file\"\n\n\
                 [engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\nevents_logfile_path = \"{ev}\"\n\
                 runtime = \"runc\"\n\n\
                 [network]\nnetwork_backend = \"cni\"\ncni_plugin_dirs = [\"{plug}\", \"{REF_DIR}\"]\nnetwork_config_dir = \"{cd}\"\n",
                ev = dir.path().join("events.log").display(),
                plug = plugin().parent().unwrap().display(),
                cd = conf_dir.display(),
            ),
        )
        .unwrap();
        Some(Podman {
            dir,
            conf_dir,
            containers_conf,
        })
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("podman");
        c.env("CONTAINERS_CONF", &self.containers_conf)
            .arg("--root")
            .arg(self.dir.path().join("root"))
            .arg("--runroot")
            .arg(self.dir.path().join("runroot"))
            .arg("--tmpdir")
            .arg(self.dir.path().join("tmp"))
            .args([
                "--storage-driver",
                "vfs",
                "--cgroup-manager",
                "cgroupfs",
                "--events-backend",
                "file",
            ])
            .arg("--network-config-dir")
            .arg(&self.conf_dir)
            .args(args);
        c
    }

    /// Runs podman; panics with its output on failure.
    fn run(&self, args: &[&str]) -> String {
        let out = self.cmd(args).output().expect("run podman");
        assert!(
            out.status.success(),
            "podman {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Imports a busybox-static root filesystem as image `snt-busybox`.
    fn import_busybox(&self) {
        let root = self.dir.path().join("rootfs");
        for d in ["bin", "www", "tmp", "etc"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::copy("/usr/bin/busybox", root.join("bin/busybox"))
            .expect("busybox-static at /usr/bin/busybox");
        for app in [
            "sh", "ping", "nc", "httpd", "sleep", "ip", "echo", "cat", "wget", "ifconfig",
            "nslookup",
        ] {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(app)).unwrap();
        }
        std::fs::write(root.join("www/index.html"), "shimnet\n").unwrap();
        std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/:/bin/sh\n").unwrap();
        let tar = self.dir.path().join("rootfs.tar");
        sh(&[
            "tar",
            "-C",
            root.to_str().unwrap(),
            "-cf",
            tar.to_str().unwrap(),
            ".",
        ]);
        self.run(&[
            "import",
            "--change",
            "ENV=PATH=/bin",
            tar.to_str().unwrap(),
            "snt-busybox",
        ]);
    }

    /// Imports the busybox root filesystem again as `snt-pause`, a pod infra image that sleeps
    /// (Podman's own infra image would come from a registry). Call after `import_busybox`.
    fn import_pause(&self) {
        let tar = self.dir.path().join("rootfs.tar");
        self.run(&[
            "import",
            "--change",
            "ENTRYPOINT=[\"/bin/sleep\",\"1000000\"]",
            tar.to_str().unwrap(),
            "snt-pause",
        ]);
    }

    fn ip_of(&self, container: &str, net: &str) -> Ipv4Addr {
        let f = format!("{{{{(index .NetworkSettings.Networks \"{net}\").IPAddress}}}}");
        self.run(&["inspect", "-f", &f, container])
            .parse()
            .expect("container address")
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.cmd(&["rm", "-fa", "-t", "0"]).output();
        let _ = self.cmd(&["system", "reset", "-f"]).output();
        // Anything podman left mounted under the test's dirs.
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let base = self.dir.path().display().to_string();
        let mut points: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(1))
            .filter(|m| m.starts_with(&base))
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for p in points {
            let _ = Command::new("umount").args(["-l", p]).status();
        }
    }
}

fn podman_rules(h: &TestHost) -> String {
    format!("{}{}", h.nft_ruleset(), h.iptables_save())
}

fn connect(ns: &Path, ip: Ipv4Addr, port: u16) -> bool {
    connect_from(ns, ip, port)
}

#[test]
fn podman_run_ping_nat_ports_and_rm() {
    let Some(pm) = Podman::new() else { return };
    let h = TestHost::new("");
    let net = tag("pn");
    let conflist = json!({
        "cniVersion": "1.0.0",
        "name": net,
        "plugins": [{
            "type": "shimnet",
            "daemonSocket": h.socket,
            "bridge": net,
            "isGateway": true,
            "ipMasq": true,
            "hairpinMode": true,
            "capabilities": {"portMappings": true, "ips": true, "mac": true},
            "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.71.0.0/24", "gateway": "10.71.0.1"}]], "routes": [{"dst": "0.0.0.0/0"}]}
        }]
    });
    std::fs::write(
        pm.conf_dir.join(format!("{net}.conflist")),
        conflist.to_string(),
    )
    .unwrap();
    pm.import_busybox();
    assert!(
        pm.run(&["network", "ls", "--format", "{{.Name}}"])
            .lines()
            .any(|l| l == net),
        "podman sees the conflist"
    );

    pm.run(&[
        "run",
        "-d",
        "--name",
        "c1",
        "--network",
        &net,
        "snt-busybox",
        "sleep",
        "600",
    ]);
    pm.run(&[
        "run",
        "-d",
        "--name",
        "c2",
        "--network",
        &net,
        "--ip",
        "10.71.0.77",
        "--mac-address",
        "02:00:00:00:00:77",
        "-p",
        "18480:80",
        "snt-busybox",
        "httpd",
        "-f",
        "-p",
        "80",
        "-h",
        "/www",
    ]);
    let (ip1, ip2) = (pm.ip_of("c1", &net), pm.ip_of("c2", &net));
    assert_eq!(
        ip2,
        Ipv4Addr::new(10, 71, 0, 77),
        "static IP through CNI_ARGS"
    );
    assert!(pm
        .run(&["exec", "c2", "ip", "link", "show", "eth0"])
        .contains("02:00:00:00:00:77"));
    assert_eq!(
        h.call("GET", "/v1/endpoints", None)
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // Containers reach each other.
    pm.run(&["exec", "c1", "ping", "-c1", "-W2", &ip2.to_string()]);
    pm.run(&["exec", "c2", "ping", "-c1", "-W2", &ip1.to_string()]);
    // Outside through NAT: the outside namespace sees the host's address.
    let seen = spawn_listener(h.outside.path(), h.outside_ip, 8090);
    pm.run(&[
        "exec",
        "c1",
        "sh",
        "-c",
        &format!("echo hi | nc -w 2 {} 8090", h.outside_ip),
    ]);
    let peer = seen.recv().unwrap().expect("outside saw a connection");
    assert_eq!(peer.ip(), std::net::IpAddr::V4(h.host_ip), "masqueraded");
    // -p works from outside and from the host itself.
    assert!(
        connect(h.outside.path(), h.host_ip, 18480),
        "published port from outside"
    );
    assert!(
        connect(h.ns.path(), h.host_ip, 18480),
        "published port from the host"
    );
    assert!(
        connect(h.ns.path(), Ipv4Addr::LOCALHOST, 18480),
        "published port on the host's localhost"
    );
    assert!(podman_rules(&h).contains("18480"));

    // podman rm leaves nothing behind.
    pm.run(&["rm", "-f", "-t", "0", "c1", "c2"]);
    assert_eq!(h.call("GET", "/v1/endpoints", None), json!([]));
    eventually("host veths removed", || {
        !links_in(h.ns.name()).iter().any(|l| l.starts_with("snv"))
    });
    assert!(!podman_rules(&h).contains("18480"), "port rules removed");
    assert!(!connect(h.outside.path(), h.host_ip, 18480));
}

/// `podman network reload` (one container, then `--all`) tears a container's network down and
/// sets it up again; Podman resends a static address twice (`"ips":["a","a"]`). After each reload
/// the static address, the published ports and the pod's network must work again.
#[test]
fn podman_network_reload_static_ip_ports_and_pod() {
    let Some(pm) = Podman::new() else { return };
    let h = TestHost::new("");
    let net = tag("pr");
    let caps = json!({"portMappings": true, "ips": true, "mac": true});
    let conflist = conflist("1.0.0", &net, &h.socket, &net, "10.73.0.0/24", caps);
    std::fs::write(
        pm.conf_dir.join(format!("{net}.conflist")),
        conflist.to_string(),
    )
    .unwrap();
    pm.import_busybox();
    pm.import_pause();
    let httpd = ["snt-busybox", "httpd", "-f", "-p", "80", "-h", "/www"];
    let mut run = vec!["run", "-d", "--name", "st", "--network", &net];
    run.extend(["--ip", "10.73.0.60", "-p", "18590:80"]);
    run.extend(httpd);
    pm.run(&run);
    pm.run(&[
        "pod",
        "create",
        "--name",
        "pd",
        "--network",
        &net,
        "--infra-image",
        "snt-pause",
        "-p",
        "18591:80",
    ]);
    let mut run = vec!["run", "-d", "--name", "inpod", "--pod", "pd"];
    run.extend(httpd);
    pm.run(&run);
    let infra = pm.run(&["pod", "inspect", "-f", "{{.InfraContainerID}}", "pd"]);

    let works = |when: &str| {
        assert_eq!(
            pm.ip_of("st", &net),
            Ipv4Addr::new(10, 73, 0, 60),
            "{when}: static address kept"
        );
        let pod_ip = pm.ip_of(&infra, &net);
        assert_eq!(
            h.call("GET", "/v1/endpoints", None)
                .as_array()
                .unwrap()
                .len(),
            2,
            "{when}: one attachment each: {}",
            h.call("GET", "/v1/endpoints", None)
        );
        pm.run(&["exec", "st", "ping", "-c1", "-W2", "10.73.0.1"]);
        pm.run(&["exec", "st", "ping", "-c1", "-W2", &pod_ip.to_string()]);
        pm.run(&["exec", "inpod", "ping", "-c1", "-W2", "10.73.0.60"]);
        for port in [18590, 18591] {
            assert!(
                connect(h.outside.path(), h.host_ip, port),
                "{when}: published port {port} from outside"
            );
        }
        eprintln!("{when}: static 10.73.0.60, pod {pod_ip}, ports 18590/18591 reachable");
    };
    works("before reload");
    let out = pm.cmd(&["network", "reload", "st"]).output().unwrap();
    assert!(
        out.status.success(),
        "podman network reload st: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    works("after `network reload st`");
    pm.run(&["network", "reload", "--all"]);
    works("after `network reload --all`");

    pm.run(&["pod", "rm", "-f", "-t", "0", "pd"]);
    pm.run(&["rm", "-f", "-t", "0", "st"]);
    assert_eq!(h.call("GET", "/v1/endpoints", None), json!([]));
    eventually("host veths removed", || {
        !links_in(h.ns.name()).iter().any(|l| l.starts_with("snv"))
    });
    let rules = podman_rules(&h);
    assert!(
        !rules.contains("18590") && !rules.contains("18591"),
        "port rules removed"
    );
}

#[test]
fn podman_names_and_aliases_resolve_and_go_with_rm() {
    let Some(pm) = Podman::new() else { return };
    // shimnetd forwards other names to an empty upstream list: nothing leaves the test.
    let dir = tempfile::tempdir().unwrap();
    let resolv = dir.path().join("resolv.conf");
    std::fs::write(&resolv, "").unwrap();
    let h = TestHost::new(&format!("[dns]\nresolv_conf = \"{}\"\n", resolv.display()));
    let net = tag("pd");
    let conflist = json!({
        "cniVersion": "1.0.0",
        "name": net,
        "plugins": [{
            "type": "shimnet",
            "daemonSocket": h.socket,
            "bridge": net,
            "dnsEnabled": true,
            "capabilities": {"portMappings": true, "ips": true, "mac": true, "aliases": true},
            "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.148.0.0/24", "gateway": "10.148.0.1"}]], "routes": [{"dst": "0.0.0.0/0"}]}
        }]
    });
    std::fs::write(
        pm.conf_dir.join(format!("{net}.conflist")),
        conflist.to_string(),
    )
    .unwrap();
    pm.import_busybox();
    pm.run(&[
        "run",
        "-d",
        "--name",
        "web",
        "--network",
        &net,
        "--network-alias",
        "webalias",
        "snt-busybox",
        "httpd",
        "-f",
        "-p",
        "80",
        "-h",
        "/www",
    ]);
    let web_ip = pm.ip_of("web", &net).to_string();
    let id = pm.run(&["inspect", "-f", "{{.Id}}", "web"]);
    let short = &id[..12];

    // A second container: Podman wrote its resolv.conf from the CNI result's dns; it resolves
    // the name, the alias and the short id, and reaches the server by name.
    let script = format!(
        "cat /etc/resolv.conf; nslookup web; nslookup webalias; nslookup {short}; \
         wget -qO- http://web/; wget -qO- http://webalias/; ping -c1 -W2 web"
    );
    let out = pm.run(&[
        "run",
        "--rm",
        "--network",
        &net,
        "snt-busybox",
        "sh",
        "-c",
        &script,
    ]);
    println!("{out}");
    assert!(
        out.contains("nameserver 10.148.0.1"),
        "resolv.conf from the result: {out}"
    );
    assert!(out.contains("dns.shimnet"), "search domain: {out}");
    assert!(
        out.matches(&format!("Address: {web_ip}")).count() >= 3,
        "web, webalias and {short} resolve to {web_ip}: {out}"
    );
    assert_eq!(
        out.lines().filter(|l| *l == "shimnet").count(),
        2,
        "fetched by name and by alias: {out}"
    );
    assert!(out.contains("1 packets received"), "ping web: {out}");
    let v = h.call("GET", &format!("/v1/networks/{net}/names"), None);
    let names: Vec<&str> = v["names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    for n in ["web", "webalias", short] {
        assert!(names.contains(&n), "{n} in {names:?}");
    }

    // podman rm: the names are gone (asked of the gateway directly).
    pm.run(&["rm", "-f", "-t", "0", "web"]);
    let gone = pm
        .cmd(&[
            "run",
            "--rm",
            "--network",
            &net,
            "snt-busybox",
            "sh",
            "-c",
            "nslookup web 10.148.0.1; nslookup webalias 10.148.0.1",
        ])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&gone.stdout),
        String::from_utf8_lossy(&gone.stderr)
    );
    assert!(!text.contains(&web_ip), "stale answer after rm: {text}");
    assert!(text.contains("NXDOMAIN"), "{text}");
    let v = h.call("GET", &format!("/v1/networks/{net}/names"), None);
    assert!(!v["names"].to_string().contains("web"), "{v}");
}
