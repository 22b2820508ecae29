//! A private containerd (Debian `containerd`) for `ctr run --cni` tests, confined like the dockerd
//! harness: it runs in a test host's network namespace and a private mount namespace where `/run`
//! is a fresh tmpfs (shim sockets, runc state), `/etc/cni/net.d` and `/opt/cni/bin` (where `ctr`'s
//! go-cni looks, with no way to choose) are the test's folders, and libcni's `/var/lib/cni` cache
//! is the test's too. Root, state and socket live in a temporary directory; `ctr` is run inside
//! the same namespaces. Everything goes when it is dropped.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use crate::dockerd::{image_tar, missing_bin, spawn_confined, terminate};

/// Namespace (containerd's own) every test uses.
pub const NS: &str = "snt";
/// The image every test imports.
pub const IMAGE: &str = "docker.io/library/snt-busybox:latest";

/// Why containerd cannot run here, if it cannot.
pub fn unavailable() -> Option<String> {
    let bins = [
        "containerd",
        "ctr",
        "containerd-shim-runc-v2",
        "runc",
        "nsenter",
        "unshare",
        "busybox",
        "sha256sum",
    ];
    missing_bin(&bins).map(|bin| format!("{bin} not found (scripts/deps.sh test installs it)"))
}

fn sha256(path: &Path) -> String {
    let o = Command::new("sha256sum").arg(path).output().unwrap();
    assert!(o.status.success());
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// A docker-archive (`docker save` format) of the busybox-static root filesystem the dockerd
/// tests import, built in `dir`.
pub fn image_archive(dir: &Path) -> PathBuf {
    let img = dir.join("image");
    std::fs::create_dir_all(&img).unwrap();
    std::fs::rename(image_tar(dir), img.join("layer.tar")).unwrap();
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let config = serde_json::json!({
        "architecture": arch,
        "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{}", sha256(&img.join("layer.tar")))]},
    });
    std::fs::write(img.join("config.json"), config.to_string()).unwrap();
    let manifest = serde_json::json!([{
        "Config": "config.json",
        "RepoTags": ["snt-busybox:latest"],
        "Layers": ["layer.tar"],
    }]);
    std::fs::write(img.join("manifest.json"), manifest.to_string()).unwrap();
    let out = dir.join("image.tar");
    let st = Command::new("tar")
        .arg("-C")
        .arg(&img)
        .arg("-cf")
        .arg(&out)
        .args(["manifest.json", "config.json", "layer.tar"])
        .status()
        .unwrap();
    assert!(st.success(), "tar failed");
    out
}

/// A running containerd.
pub struct Containerd {
    pub dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Containerd {
    /// Starts containerd in network namespace `netns`, with `conf_dir` as `/etc/cni/net.d`,
    /// `bin_dir` as `/opt/cni/bin` and `cache_dir` as `/var/lib/cni`, and imports [`IMAGE`].
    pub fn start(netns: &str, conf_dir: &Path, bin_dir: &Path, cache_dir: &Path) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("snt-ctrd")
            .tempdir()
            .unwrap();
        let d = dir.path().display().to_string();
        std::fs::write(
            dir.path().join("config.toml"),
            format!(
                "version = 2\nroot = \"{d}/root\"\nstate = \"{d}/state\"\n\
                 disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
                 [grpc]\n  address = \"{d}/containerd.sock\"\n\
                 [ttrpc]\n  address = \"{d}/containerd.sock.ttrpc\"\n"
            ),
        )
        .unwrap();
        let script = format!(
            "set -e\n\
             mount -t tmpfs tmpfs /run\n\
             mount -t tmpfs tmpfs /opt\n\
             mkdir -p /opt/cni/bin\n\
             mount --bind {bin} /opt/cni/bin\n\
             mount --bind {conf} /etc/cni/net.d\n\
             mount -t tmpfs tmpfs /var/lib\n\
             mkdir -p /var/lib/cni\n\
             mount --bind {cache} /var/lib/cni\n\
             exec containerd --config {d}/config.toml\n",
            bin = bin_dir.display(),
            conf = conf_dir.display(),
            cache = cache_dir.display(),
        );
        let log = std::fs::File::create(dir.path().join("containerd.log")).unwrap();
        let child = spawn_confined(netns, &script, log);
        let mut c = Containerd {
            dir,
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !c.ctr(&["version"]).status.success() {
            if let Some(st) = c.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("containerd exited with {st}: {}", c.log());
            }
            assert!(
                Instant::now() < deadline,
                "containerd not ready: {}",
                c.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let archive = image_archive(c.dir.path());
        c.ok(&[
            "images",
            "import",
            "--snapshotter",
            "native",
            archive.to_str().unwrap(),
        ]);
        c
    }

    /// containerd's log (last lines).
    pub fn log(&self) -> String {
        let s = std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// `ctr` against this containerd, inside its namespaces (so its go-cni sees the test's CNI
    /// folders).
    pub fn ctr_command(&self, args: &[&str]) -> Command {
        let pid = self.child.as_ref().expect("containerd running").id();
        let mut cmd = Command::new("nsenter");
        cmd.args(["-t", &pid.to_string(), "-m", "-n", "ctr", "--address"])
            .arg(self.dir.path().join("containerd.sock"))
            .args(["--namespace", NS])
            .args(args);
        cmd
    }

    /// Runs `ctr`.
    pub fn ctr(&self, args: &[&str]) -> Output {
        self.ctr_command(args).output().expect("run ctr")
    }

    /// Runs `ctr`; panics with its output (and containerd's log) on failure.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.ctr(args);
        assert!(
            o.status.success(),
            "ctr {args:?} failed: {}{}\n--- containerd log ---\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr),
            self.log()
        );
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if self.child.is_some() {
            // Tasks and containers a failed test left: kill and delete them.
            let tasks =
                String::from_utf8_lossy(&self.ctr(&["tasks", "ls", "-q"]).stdout).to_string();
            for t in tasks.split_whitespace() {
                let _ = self.ctr(&["tasks", "kill", "-s", "SIGKILL", t]).status;
                std::thread::sleep(Duration::from_millis(200));
                let _ = self.ctr(&["tasks", "delete", "-f", t]).status;
            }
            let ids =
                String::from_utf8_lossy(&self.ctr(&["containers", "ls", "-q"]).stdout).to_string();
            for id in ids.split_whitespace() {
                let _ = self.ctr(&["containers", "delete", id]).status;
            }
            if std::thread::panicking() {
                eprintln!("---- containerd log ----\n{}", self.log());
            }
            terminate(
                self.child.take().expect("checked above"),
                Duration::from_secs(20),
            );
        }
    }
}
