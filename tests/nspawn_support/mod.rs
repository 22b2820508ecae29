//! A Debian system booted with systemd as PID 1 in `systemd-nspawn`, for tests.
//!
//! The root is the one `scripts/nspawn-image.sh` builds and caches; each [`Machine`] boots it under
//! its own overlay (the cache stays pristine), in its own cgroup (nspawn splits that into
//! `supervisor`/`payload`) and its own network namespace (`--network-veth`: the host side
//! `ve-<name>` stays down and address-less; it goes away with the machine, and is deleted on drop
//! if not). Commands run inside with `nsenter -a`; files and sockets inside are reached from the
//! host through `/proc/<pid of the machine's systemd>/root`. Everything is undone on drop.

#![allow(dead_code)]

use std::ffi::CString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// `PATH` inside the machine.
const PATH: &str = "PATH=/usr/sbin:/usr/bin:/sbin:/bin";
/// Longest a single command inside may take.
const COMMAND_TIMEOUT: &str = "120";

/// Runs `cmd`; its output whatever the exit status.
fn output(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

/// Stdout of a command that must succeed.
fn checked(cmd: &mut Command) -> String {
    let out = output(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The cached root (built on first use; needs the Debian mirror apt uses).
pub fn image() -> PathBuf {
    let out = Command::new(Path::new(ROOT).join("scripts/nspawn-image.sh"))
        .stderr(Stdio::inherit())
        .output()
        .expect("run scripts/nspawn-image.sh");
    assert!(out.status.success(), "scripts/nspawn-image.sh failed");
    let root = PathBuf::from(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .expect("root path")
            .trim(),
    );
    assert!(
        root.join("usr/lib/os-release").exists(),
        "{}",
        root.display()
    );
    root
}

/// Polls `cond` every 50 ms for up to `limit`; false if it never held.
pub fn poll(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The cgroup folders (one per hierarchy nspawn uses) for a cgroup called `name`.
fn cgroup_dirs(name: &str) -> Vec<PathBuf> {
    let base = Path::new("/sys/fs/cgroup");
    if base.join("cgroup.controllers").exists() {
        return vec![base.join(name)];
    }
    // Hybrid or legacy: the named systemd hierarchy and, if mounted, the unified one.
    ["systemd", "unified"]
        .iter()
        .map(|h| base.join(h))
        .filter(|h| h.join("cgroup.procs").exists())
        .map(|h| h.join(name))
        .collect()
}

/// Removes a cgroup folder and its children, deepest first (cgroups are removed with rmdir).
fn remove_cgroup(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// A booted (or, before [`Machine::boot`], prepared) machine.
pub struct Machine {
    name: String,
    dir: tempfile::TempDir,
    merged: PathBuf,
    mounted: bool,
    cgroups: Vec<PathBuf>,
    nspawn: Option<Child>,
    init: i32,
}

impl Machine {
    /// Mounts a fresh overlay of `image` (writes go to a temp dir) for a machine called `name`
    /// (short: the host veth is `ve-<name>`).
    pub fn prepare(image: &Path, name: &str) -> Machine {
        assert!(
            name.len() <= 12,
            "machine name {name} too long for ve-<name>"
        );
        let dir = tempfile::Builder::new()
            .prefix("shimnet-nspawn-")
            .tempdir_in("/var/tmp")
            .unwrap();
        for d in ["upper", "work", "root"] {
            std::fs::create_dir(dir.path().join(d)).unwrap();
        }
        let merged = dir.path().join("root");
        checked(
            Command::new("mount")
                .args(["-t", "overlay", "overlay", "-o"])
                .arg(format!(
                    "lowerdir={},upperdir={},workdir={}",
                    image.display(),
                    dir.path().join("upper").display(),
                    dir.path().join("work").display()
                ))
                .arg(&merged),
        );
        Machine {
            name: name.to_string(),
            dir,
            merged,
            mounted: true,
            cgroups: Vec::new(),
            nspawn: None,
            init: 0,
        }
    }

    /// The machine's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The host side of the machine's veth.
    pub fn host_veth(&self) -> String {
        format!("ve-{}", self.name)
    }

    /// The root tree as written before boot.
    pub fn image_root(&self) -> &Path {
        &self.merged
    }

    /// Runs `argv` chrooted into the (not yet booted) image, as an image builder does.
    pub fn chroot(&self, argv: &[&str]) -> String {
        assert!(self.nspawn.is_none(), "chroot into a booted machine");
        checked(
            Command::new("chroot")
                .arg(&self.merged)
                .args(["env", "-i", PATH, "DEBIAN_FRONTEND=noninteractive"])
                .args(argv),
        )
    }

    /// Boots the image with systemd as PID 1; returns once the machine's systemd runs (not once
    /// the boot is finished).
    pub fn boot(&mut self) {
        let cg_name = format!("shimnet-test-{}", self.name);
        self.cgroups = cgroup_dirs(&cg_name);
        assert!(!self.cgroups.is_empty(), "no cgroup hierarchy found");
        for c in &self.cgroups {
            std::fs::create_dir_all(c).unwrap();
        }
        let procs: Vec<CString> = self
            .cgroups
            .iter()
            .map(|c| CString::new(c.join("cgroup.procs").to_str().unwrap()).unwrap())
            .collect();
        let log = std::fs::File::create(self.dir.path().join("nspawn.log")).unwrap();
        let mut cmd = Command::new("systemd-nspawn");
        cmd.arg("-D")
            .arg(&self.merged)
            .args(["-M", &self.name, "-b", "--keep-unit", "--register=no"])
            .args(["--network-veth", "--link-journal=no", "--console=passive"])
            .arg("--capability=CAP_NET_ADMIN,CAP_SYS_ADMIN,CAP_NET_RAW,CAP_SYS_PTRACE")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        // SAFETY: between fork and exec the child only calls open/write/close (async-signal-safe)
        // on paths prepared before the fork: it moves itself into the machine's cgroup.
        unsafe {
            cmd.pre_exec(move || {
                for p in &procs {
                    let fd = libc::open(p.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                    if fd < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    let ok = libc::write(fd, b"0".as_ptr().cast(), 1) == 1;
                    libc::close(fd);
                    if !ok {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn systemd-nspawn");
        let parent = child.id() as i32;
        self.nspawn = Some(child);
        let found = poll(Duration::from_secs(30), || {
            self.init = child_named(parent, "systemd").unwrap_or(0);
            self.init != 0 || self.nspawn.as_mut().unwrap().try_wait().unwrap().is_some()
        });
        assert!(
            found && self.init != 0,
            "the machine's systemd did not start: {}",
            self.log()
        );
    }

    /// Host pid of the machine's PID 1.
    pub fn init_pid(&self) -> i32 {
        self.init
    }

    /// nspawn's output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("nspawn.log")).unwrap_or_default()
    }

    /// A path inside the booted machine, as seen from the host.
    pub fn path(&self, inner: &str) -> PathBuf {
        assert!(self.init != 0, "not booted");
        PathBuf::from(format!(
            "/proc/{}/root/{}",
            self.init,
            inner.trim_start_matches('/')
        ))
    }

    fn command(&self, env: &[&str], argv: &[&str]) -> Command {
        assert!(self.init != 0, "not booted");
        let mut cmd = Command::new("timeout");
        cmd.args(["-k", "5", COMMAND_TIMEOUT, "nsenter", "-t"])
            .arg(self.init.to_string())
            .args(["-a", "env", "-i", PATH, "LANG=C.UTF-8"])
            .args(env)
            .args(argv);
        cmd
    }

    /// Runs `argv` inside; its output whatever the status.
    pub fn run(&self, argv: &[&str]) -> Output {
        output(&mut self.command(&[], argv))
    }

    /// Runs `argv` inside; its stdout, panicking if it fails.
    pub fn sh(&self, argv: &[&str]) -> String {
        checked(&mut self.command(&[], argv))
    }

    /// Runs `argv` inside with extra `env` (`NAME=value`) and `stdin`; its output.
    pub fn run_with(&self, env: &[&str], argv: &[&str], stdin: &[u8]) -> Output {
        use std::io::Write;
        let mut child = self
            .command(env, argv)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn nsenter");
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        child.wait_with_output().unwrap()
    }

    /// `systemctl show -p PROP --value UNIT` inside.
    pub fn prop(&self, unit: &str, prop: &str) -> String {
        self.sh(&["systemctl", "show", "-p", prop, "--value", unit])
            .trim()
            .to_string()
    }

    /// Waits (up to 2 min) until the boot is finished; `systemctl is-system-running`'s answer.
    pub fn wait_booted(&self) -> String {
        let out = self.run(&["systemctl", "is-system-running", "--wait"]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Host pids of processes inside the machine whose command name is `comm`.
    pub fn pids_named(&self, comm: &str) -> Vec<i32> {
        let ns = std::fs::read_link(format!("/proc/{}/ns/pid", self.init)).ok();
        let mut pids = Vec::new();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|p| p.parse::<i32>().ok()) else {
                continue;
            };
            let c = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if c.trim() == comm && std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok() == ns {
                pids.push(pid);
            }
        }
        pids
    }

    /// The journal inside (last lines), for failure reports.
    pub fn journal(&self, args: &[&str]) -> String {
        let mut argv = vec!["journalctl", "--no-pager", "-o", "short-monotonic"];
        argv.extend_from_slice(args);
        let out = self.run(&argv);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Shuts the machine down (SIGTERM to nspawn: a clean poweroff), killing it if that takes
    /// over 30 s; true if it shut down cleanly.
    pub fn shutdown(&mut self) -> bool {
        let Some(mut child) = self.nspawn.take() else {
            return true;
        };
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let clean = poll(Duration::from_secs(30), || {
            child.try_wait().unwrap().is_some()
        });
        if !clean {
            let _ = child.kill();
        }
        let _ = child.wait();
        clean
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        if std::thread::panicking() && self.nspawn.is_some() && self.init != 0 {
            eprintln!(
                "---- journal of {} (last 150 lines) ----\n{}",
                self.name,
                self.journal(&["-n", "150"])
            );
        }
        if self.nspawn.is_some() && !self.shutdown() {
            eprintln!("{}: killed after 30 s of shutdown", self.name);
        }
        if self.mounted {
            let _ = Command::new("umount").arg(&self.merged).status();
            if self.merged.join("usr").exists() {
                let _ = Command::new("umount").arg("-l").arg(&self.merged).status();
            }
        }
        for c in &self.cgroups {
            remove_cgroup(c);
        }
        // The veth goes with the machine's network namespace; delete it if it did not.
        let veth = self.host_veth();
        if Path::new("/sys/class/net").join(&veth).exists() {
            let _ = Command::new("ip").args(["link", "del", &veth]).status();
        }
    }
}

/// A child process of `parent` whose command name is `comm`.
fn child_named(parent: i32, comm: &str) -> Option<i32> {
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        let ppid = status
            .lines()
            .find_map(|l| l.strip_prefix("PPid:"))
            .and_then(|p| p.trim().parse::<i32>().ok());
        let name = status
            .lines()
            .find_map(|l| l.strip_prefix("Name:"))
            .map(str::trim);
        if ppid == Some(parent) && name == Some(comm) {
            return Some(pid);
        }
    }
    None
}
