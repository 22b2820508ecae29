//! A real dockerd (Debian `docker.io`) for end-to-end tests, confined to a test host: it runs in
//! the host's network namespace and a private mount namespace where `/run` is a fresh tmpfs,
//! `/run/docker/plugins` is the test's plugin folder (where shimnetd's socket is), `/sys` is
//! remounted for the namespace (keeping the cgroup mounts) and dockerd spawns its own containerd.
//! Data and exec roots live in a temporary directory; everything goes when it is dropped.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Image name every test daemon imports (a static busybox rootfs).
pub const IMAGE: &str = "snt-busybox:latest";

/// The first of `bins` that is not on `PATH`, if any.
pub fn missing_bin(bins: &[&'static str]) -> Option<&'static str> {
    bins.iter().copied().find(|bin| {
        !std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
            .unwrap_or(false)
    })
}

/// Why dockerd cannot run here, if it cannot.
pub fn unavailable() -> Option<String> {
    let bins = [
        "dockerd",
        "docker",
        "containerd",
        "runc",
        "nsenter",
        "unshare",
        "busybox",
    ];
    if let Some(bin) = missing_bin(&bins) {
        return Some(format!(
            "{bin} not found (install docker.io and busybox-static)"
        ));
    }
    if !Path::new("/sys/fs/cgroup").exists() {
        return Some("no cgroup filesystem at /sys/fs/cgroup".into());
    }
    None
}

fn which(bin: &str) -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(bin))
                .find(|c| c.is_file())
        })
        .unwrap_or_else(|| panic!("{bin} not in PATH"))
}

/// A busybox-static rootfs tarball, built in `dir`.
pub fn image_tar(dir: &Path) -> PathBuf {
    {
        let root = dir.join("rootfs");
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::create_dir_all(root.join("www")).unwrap();
        std::fs::write(root.join("www/index.html"), "hello from shimnet\n").unwrap();
        std::fs::copy(which("busybox"), root.join("bin/busybox")).unwrap();
        for a in [
            "sh", "ping", "nc", "httpd", "ip", "cat", "echo", "sleep", "true", "printf", "grep",
            "ifconfig", "timeout",
        ] {
            let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(a));
        }
        let tar = dir.join("rootfs.tar");
        let st = Command::new("tar")
            .arg("-C")
            .arg(&root)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .unwrap();
        assert!(st.success(), "tar failed");
        tar
    }
}

/// Runs `script` with `sh` in network namespace `netns` and a private mount namespace (its mounts
/// vanish with it), output to `log`; the script `exec`s the daemon, so the child is the daemon.
pub fn spawn_confined(netns: &str, script: &str, log: std::fs::File) -> Child {
    Command::new("nsenter")
        .arg(format!("--net=/run/netns/{netns}"))
        .args([
            "unshare",
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
        ])
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("spawn a confined daemon")
}

/// SIGTERM, then SIGKILL after `grace`; waits for the exit.
pub fn terminate(mut c: Child, grace: Duration) {
    let pid = nix::unistd::Pid::from_raw(c.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while c.try_wait().ok().flatten().is_none() {
        if Instant::now() > deadline {
            let _ = c.kill();
            let _ = c.wait();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A running dockerd.
pub struct Dockerd {
    pub dir: tempfile::TempDir,
    pub plugins: PathBuf,
    pub netns: String,
    pub args: Vec<String>,
    child: Option<Child>,
}

impl Dockerd {
    /// Starts dockerd in network namespace `netns` with `plugins` as its plugin folder and the
    /// given extra flags, and imports [`IMAGE`].
    pub fn start(netns: &str, plugins: &Path, args: &[&str]) -> Self {
        let mut d = Dockerd {
            dir: tempfile::Builder::new()
                .prefix("snt-dockerd")
                .tempdir()
                .unwrap(),
            plugins: plugins.to_path_buf(),
            netns: netns.to_string(),
            args: args.iter().map(|s| s.to_string()).collect(),
            child: None,
        };
        std::fs::create_dir_all(plugins).unwrap();
        std::fs::write(d.dir.path().join("daemon.json"), "{}").unwrap();
        d.spawn();
        let tar = image_tar(d.dir.path());
        d.ok(&["import", &tar.display().to_string(), IMAGE]);
        d
    }

    fn spawn(&mut self) {
        let dir = self.dir.path().display().to_string();
        let script = format!(
            "set -e\n\
             mkdir -p {dir}/cg\n\
             mount --rbind /sys/fs/cgroup {dir}/cg\n\
             mount -t sysfs sysfs /sys\n\
             mount --rbind {dir}/cg /sys/fs/cgroup\n\
             mount -t tmpfs tmpfs /run\n\
             mkdir -p /run/docker/plugins /run/containerd\n\
             mount --bind {plugins} /run/docker/plugins\n\
             exec dockerd --config-file {dir}/daemon.json --data-root {dir}/data --exec-root {dir}/exec \
               --pidfile {dir}/dockerd.pid -H unix://{dir}/docker.sock {args}\n",
            plugins = self.plugins.display(),
            args = self.args.join(" "),
        );
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("dockerd.log"))
            .unwrap();
        self.child = Some(spawn_confined(&self.netns, &script, log));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if self
                .docker(&["version", "--format", "{{.Server.Version}}"])
                .status
                .success()
            {
                return;
            }
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("dockerd exited with {st}: {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "dockerd not ready: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// dockerd's log.
    pub fn log(&self) -> String {
        let s = std::fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default();
        s.lines()
            .filter(|l| !l.contains("module=grpc"))
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Runs the docker CLI against this daemon.
    pub fn docker(&self, args: &[&str]) -> Output {
        Command::new("docker")
            .arg("-H")
            .arg(format!("unix://{}/docker.sock", self.dir.path().display()))
            .args(args)
            .output()
            .expect("run docker")
    }

    /// Runs the docker CLI; panics with its output (and dockerd's log) on failure.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.docker(args);
        assert!(
            o.status.success(),
            "docker {args:?} failed: {}{}\n--- dockerd log ---\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr),
            self.log()
        );
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    /// IPv4 address of a container on its (only) network.
    pub fn ip_of(&self, container: &str) -> String {
        self.ok(&[
            "inspect",
            "-f",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
            container,
        ])
    }

    /// Stops dockerd (SIGTERM, containers are stopped) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(c) = self.child.take() {
            terminate(c, Duration::from_secs(30));
        }
    }

    /// Stops and starts dockerd again on the same data.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        if self.child.is_some() {
            let ids = self.docker(&["ps", "-aq"]);
            let ids = String::from_utf8_lossy(&ids.stdout).to_string();
            let ids: Vec<&str> = ids.split_whitespace().collect();
            if !ids.is_empty() {
                let mut args = vec!["rm", "-f"];
                args.extend(ids);
                let _ = self.docker(&args);
            }
            if std::thread::panicking() {
                eprintln!("---- dockerd log ----\n{}", self.log());
            }
        }
        self.stop();
    }
}
