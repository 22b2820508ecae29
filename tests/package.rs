//! The Debian package: built by `scripts/package.sh` (debug profile, to reuse the test build),
//! its contents and control fields checked, lintian run when installed, then installed into and
//! purged from a throwaway dpkg root (maintainer scripts run chrootless with `DPKG_ROOT`; no
//! systemd runs there, as in an image being built, and the units' enablement is still recorded). With
//! `SHIMNET_TEST_REAL_DPKG=1` (set by `.ci/run` on its throwaway machine) it is also installed for
//! real with `dpkg -i` and purged again, whatever happens in between. Run as root.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Builds the package once per test process; its path.
fn deb() -> PathBuf {
    static DEB: OnceLock<PathBuf> = OnceLock::new();
    DEB.get_or_init(|| {
        let out = run(Command::new(Path::new(ROOT).join("scripts/package.sh"))
            .env("PROFILE", "debug")
            .current_dir(ROOT));
        let deb = Path::new(ROOT).join(out.lines().last().expect("package path").trim());
        assert!(deb.is_file(), "{} missing", deb.display());
        deb
    })
    .clone()
}

/// Paths the package must hold (files and symlinks).
const EXPECTED: &[&str] = &[
    "/usr/bin/shimnetd",
    "/usr/bin/shimnetctl",
    "/usr/lib/cni/shimnet",
    "/opt/cni/bin/shimnet",
    "/etc/shimnet/shimnetd.toml",
    "/lib/systemd/system/shimnetd.service",
    "/lib/systemd/system/shimnetd.socket",
    "/usr/share/doc/shimnet/examples/87-shimnet.conflist",
    "/usr/share/doc/shimnet/copyright",
    "/usr/share/man/man8/shimnetd.8.gz",
    "/usr/share/man/man8/shimnetctl.8.gz",
    "/usr/share/man/man8/shimnetctl-network-create.8.gz",
    "/usr/share/bash-completion/completions/shimnetctl",
    "/usr/share/bash-completion/completions/shimnetd",
    "/usr/share/zsh/vendor-completions/_shimnetctl",
    "/usr/share/fish/vendor_completions.d/shimnetctl.fish",
];

fn contents(deb: &Path) -> BTreeSet<String> {
    run(Command::new("dpkg-deb").arg("-c").arg(deb))
        .lines()
        .filter(|l| !l.starts_with('d'))
        .filter_map(|l| l.split_whitespace().nth(5))
        .map(|p| p.trim_start_matches('.').to_string())
        .collect()
}

#[test]
fn package_contents_and_fields() {
    let deb = deb();
    let files = contents(&deb);
    println!("---- {} ----", deb.display());
    for f in &files {
        println!("{f}");
    }
    for e in EXPECTED {
        assert!(files.contains(*e), "{e} missing from the package");
    }
    let field = |f: &str| run(Command::new("dpkg-deb").arg("-f").arg(&deb).arg(f));
    let depends = field("Depends");
    for d in [
        "libc6",
        "libnftables1",
        "iptables",
        "iproute2",
        "init-system-helpers",
    ] {
        assert!(depends.contains(d), "Depends lacks {d}: {depends}");
    }
    assert_eq!(field("Package").trim(), "shimnet");
    assert_eq!(field("Version").trim(), env!("CARGO_PKG_VERSION"));
    let tmp = tempfile::tempdir().unwrap();
    run(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(tmp.path()));
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("conffiles")).unwrap(),
        "/etc/shimnet/shimnetd.toml\n"
    );
    // The shipped config is the embedded default.
    let x = tempfile::tempdir().unwrap();
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(x.path()));
    assert_eq!(
        std::fs::read(x.path().join("etc/shimnet/shimnetd.toml")).unwrap(),
        std::fs::read(Path::new(ROOT).join("packaging/shimnetd.toml")).unwrap()
    );
    // The packaged man page is a man page of shimnetd.
    let man = run(Command::new("sh").arg("-c").arg(format!(
        "zcat {}/usr/share/man/man8/shimnetd.8.gz",
        x.path().display()
    )));
    assert!(
        man.contains(".TH shimnetd 8") && man.contains("\\-\\-config"),
        "{man}"
    );

    if Command::new("lintian").arg("--version").output().is_ok() {
        let out = Command::new("lintian")
            .args(["--tag-display-limit", "0", "--fail-on", "error,warning"])
            .arg(&deb)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        println!(
            "lintian: {}",
            if text.trim().is_empty() {
                "clean"
            } else {
                &text
            }
        );
        assert!(out.status.success(), "lintian: {text}");
    } else {
        println!("lintian SKIPPED: lintian is not installed");
    }
}

/// A dpkg database in a temp dir.
fn throwaway_root() -> tempfile::TempDir {
    let r = tempfile::tempdir().unwrap();
    for d in [
        "var/lib/dpkg/info",
        "var/lib/dpkg/updates",
        "var/lib/dpkg/triggers",
    ] {
        std::fs::create_dir_all(r.path().join(d)).unwrap();
    }
    for f in ["var/lib/dpkg/status", "var/lib/dpkg/available"] {
        std::fs::write(r.path().join(f), "").unwrap();
    }
    r
}

fn dpkg_in(root: &Path) -> Command {
    let mut c = Command::new("dpkg");
    c.arg(format!("--root={}", root.display()))
        .arg("--force-script-chrootless")
        .arg("--log=/dev/null");
    c
}

#[test]
fn install_remove_purge_in_a_throwaway_root() {
    let deb = deb();
    let root = throwaway_root();
    let r = root.path();
    // The dependencies live on the host, not in the empty root.
    run(dpkg_in(r).arg("--force-depends").arg("-i").arg(&deb));
    for e in EXPECTED {
        let p = r.join(e.trim_start_matches('/'));
        assert!(p.symlink_metadata().is_ok(), "{e} not installed");
    }
    assert_eq!(
        std::fs::read_link(r.join("opt/cni/bin/shimnet")).unwrap(),
        Path::new("/usr/lib/cni/shimnet")
    );
    let status = run(dpkg_in(r).args(["-s", "shimnet"]));
    assert!(status.contains("Status: install ok installed"), "{status}");
    // The installed daemon runs.
    let v = run(Command::new(r.join("usr/bin/shimnetd")).arg("--version"));
    assert_eq!(v.trim(), format!("shimnetd {}", env!("CARGO_PKG_VERSION")));

    // No systemd runs here (as in a chroot or an image being built), yet the enablement is
    // recorded: the socket is enabled, the service is not (the socket starts it).
    let socket_link = r.join("etc/systemd/system/sockets.target.wants/shimnetd.socket");
    let service_link = r.join("etc/systemd/system/multi-user.target.wants/shimnetd.service");
    assert_eq!(
        std::fs::read_link(&socket_link).ok().as_deref(),
        Some(Path::new("/lib/systemd/system/shimnetd.socket")),
        "shimnetd.socket is not enabled in the root"
    );
    assert!(
        service_link.symlink_metadata().is_err(),
        "shimnetd.service must not be enabled"
    );
    let dsh = r.join("var/lib/systemd/deb-systemd-helper-enabled");
    for unit in ["shimnetd.socket", "shimnetd.service"] {
        let state = std::fs::read_to_string(dsh.join(format!("{unit}.dsh-also")))
            .unwrap_or_else(|e| panic!("no deb-systemd-helper state for {unit}: {e}"));
        assert!(
            state.contains("/etc/systemd/system/sockets.target.wants/shimnetd.socket"),
            "{unit}: {state}"
        );
    }

    // An admin disables the socket (`systemctl disable` removes the link) and edits the
    // conffile. Reinstalling (the upgrade path of the maintainer scripts) keeps both.
    std::fs::remove_file(&socket_link).unwrap();
    let conf = r.join("etc/shimnet/shimnetd.toml");
    let edited = format!(
        "{}\n# local edit\n",
        std::fs::read_to_string(&conf).unwrap()
    );
    std::fs::write(&conf, &edited).unwrap();
    run(dpkg_in(r).arg("--force-depends").arg("-i").arg(&deb));
    assert_eq!(std::fs::read_to_string(&conf).unwrap(), edited);
    assert!(
        socket_link.symlink_metadata().is_err(),
        "an upgrade re-enabled the socket the admin disabled"
    );
    // The admin runs `systemctl enable shimnetd` (the service, and the socket through Also=):
    // the purge below undoes it.
    for (link, unit) in [
        (&socket_link, "shimnetd.socket"),
        (&service_link, "shimnetd.service"),
    ] {
        std::fs::create_dir_all(link.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(format!("/lib/systemd/system/{unit}"), link).unwrap();
    }

    // Remove keeps the conffile and the state; purge removes both.
    std::fs::create_dir_all(r.join("var/lib/shimnet")).unwrap();
    std::fs::write(r.join("var/lib/shimnet/state.redb"), "x").unwrap();
    run(dpkg_in(r).args(["-r", "shimnet"]));
    assert!(!r.join("usr/bin/shimnetd").exists());
    assert!(r.join("opt/cni/bin/shimnet").symlink_metadata().is_err());
    assert!(
        r.join("etc/shimnet/shimnetd.toml").exists(),
        "remove keeps the conffile"
    );
    assert!(
        r.join("var/lib/shimnet/state.redb").exists(),
        "remove keeps the state"
    );
    run(dpkg_in(r).args(["-P", "shimnet"]));
    assert!(
        !r.join("etc/shimnet").exists(),
        "purge removes the conffile"
    );
    assert!(
        !r.join("var/lib/shimnet").exists(),
        "purge removes the state"
    );
    // ...and the enablement: the links and deb-systemd-helper's records (checked with every
    // other file below).
    assert!(socket_link.symlink_metadata().is_err());
    assert!(service_link.symlink_metadata().is_err());
    let left: Vec<_> = walk(r)
        .into_iter()
        .filter(|p| !p.starts_with(r.join("var/lib/dpkg")))
        .filter(|p| p.is_file() || p.is_symlink())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() && !p.is_symlink() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}

/// Purges the package on drop, so a failed assertion never leaves it installed.
struct PurgeOnDrop;

impl Drop for PurgeOnDrop {
    fn drop(&mut self) {
        let _ = Command::new("dpkg").args(["--purge", "shimnet"]).status();
    }
}

#[test]
fn real_dpkg_install_and_purge() {
    if std::env::var("SHIMNET_TEST_REAL_DPKG").as_deref() != Ok("1") {
        println!(
            "real dpkg install SKIPPED: set SHIMNET_TEST_REAL_DPKG=1 (CI does) to install on this machine"
        );
        return;
    }
    let before = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", "shimnet"])
        .output()
        .unwrap();
    if String::from_utf8_lossy(&before.stdout).contains("installed") {
        println!("real dpkg install SKIPPED: a shimnet package is already installed here");
        return;
    }
    for e in EXPECTED {
        assert!(
            Path::new(e).symlink_metadata().is_err(),
            "{e} exists before the install; refusing to touch it"
        );
    }
    let socket_link = Path::new("/etc/systemd/system/sockets.target.wants/shimnetd.socket");
    let dsh_state =
        Path::new("/var/lib/systemd/deb-systemd-helper-enabled/shimnetd.socket.dsh-also");
    assert!(
        socket_link.symlink_metadata().is_err() && !dsh_state.exists(),
        "shimnetd.socket is enabled before the install; refusing to touch it"
    );
    let deb = deb();
    let _purge = PurgeOnDrop;
    run(Command::new("dpkg").arg("-i").arg(&deb));
    for e in EXPECTED {
        assert!(Path::new(e).symlink_metadata().is_ok(), "{e} not installed");
    }
    // Enabled whether or not systemd runs here.
    assert!(socket_link.symlink_metadata().is_ok(), "socket not enabled");
    assert!(dsh_state.exists(), "no deb-systemd-helper state");
    let v = run(Command::new("/usr/bin/shimnetctl").arg("--version"));
    assert_eq!(
        v.trim(),
        format!("shimnetctl {}", env!("CARGO_PKG_VERSION"))
    );
    if Path::new("/usr/bin/man").exists() {
        let man = run(Command::new("man").args(["-w", "shimnetd"]));
        assert!(man.contains("/usr/share/man/man8/shimnetd.8.gz"), "{man}");
    }
    run(Command::new("dpkg").args(["--purge", "shimnet"]));
    for e in EXPECTED {
        assert!(
            Path::new(e).symlink_metadata().is_err(),
            "{e} left after purge"
        );
    }
    assert!(!Path::new("/etc/shimnet").exists());
    assert!(
        socket_link.symlink_metadata().is_err(),
        "purge left the socket enabled"
    );
    assert!(!dsh_state.exists(), "purge left deb-systemd-helper state");
}
