//! Go clients of the CNI plugin, built offline from Debian's sources: the go-cni/libcni client in
//! `tests/go/cniclient` (built once per test process into `target/tmp/go-cniclient`, Go's build
//! cache beside it), and a recording wrapper that stores the exact stdin a Go library hands the
//! `shimnet` plugin before running it.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Debian's Go sources (`golang-github-containerd-go-cni-dev`, `golang-github-appc-cni-dev`).
pub const GOCODE: &str = "/usr/share/gocode";

/// Why the Go client cannot be built here, if it cannot.
pub fn unavailable() -> Option<String> {
    if Command::new("go").arg("version").output().is_err() {
        return Some("go is not installed (scripts/deps.sh test installs golang-go)".into());
    }
    for pkg in [
        "github.com/containerd/go-cni",
        "github.com/containernetworking/cni/libcni",
    ] {
        if !Path::new(GOCODE).join("src").join(pkg).is_dir() {
            return Some(format!(
                "{pkg} is not under {GOCODE} (scripts/deps.sh test installs it)"
            ));
        }
    }
    None
}

/// The built go-cni client, or `None` (with a loud `SKIPPED`) where Go or the sources are absent.
pub fn cniclient() -> Option<PathBuf> {
    static BUILT: OnceLock<Option<PathBuf>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            if let Some(why) = unavailable() {
                eprintln!("SKIPPED: go-cni client: {why}");
                return None;
            }
            let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
            let out = root.join("go-cniclient");
            let gopath = root.join("go-path");
            std::fs::create_dir_all(&gopath).unwrap();
            let o = Command::new("go")
                .args(["build", "-o"])
                .arg(&out)
                .arg("./tests/go/cniclient")
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .env("GO111MODULE", "off")
                .env("GOPATH", format!("{}:{GOCODE}", gopath.display()))
                .env("GOCACHE", root.join("go-cache"))
                .env("GOFLAGS", "")
                .output()
                .expect("run go build");
            assert!(
                o.status.success(),
                "building the go-cni client failed: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            Some(out)
        })
        .clone()
}

/// Writes, in `dir`, a `shimnet` plugin that saves its stdin to `$SHIMNET_RECORD_DIR/<time>-<CNI
/// command>` and then runs the real plugin `real` on it.
pub fn recording_plugin(dir: &Path, real: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("shimnet");
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\nf=\"$SHIMNET_RECORD_DIR/$(date +%s%N)-$CNI_COMMAND\"\ncat > \"$f\"\nexec {} < \"$f\"\n",
            real.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// The recordings in `dir`, oldest first: (CNI command, exact stdin).
pub fn recordings(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let cmd = name.split_once('-').unwrap().1.to_string();
            (cmd, std::fs::read(&p).unwrap())
        })
        .collect()
}

/// Golden comparison of recorded bytes with `compat/tests/fixtures/<set>/<name>` after `subst`
/// (run-specific values → fixed placeholders). With `SHIMNET_REGEN_FIXTURES=1` the fixture is
/// written instead.
pub fn golden(set: &str, name: &str, recorded: &[u8], subst: &[(String, &str)]) {
    let mut text = String::from_utf8(recorded.to_vec()).expect("UTF-8 stdin");
    for (from, to) in subst {
        text = text.replace(from.as_str(), to);
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("compat/tests/fixtures")
        .join(set)
        .join(name);
    if std::env::var_os("SHIMNET_REGEN_FIXTURES").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &text).unwrap();
        eprintln!("wrote {}", path.display());
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (SHIMNET_REGEN_FIXTURES=1 writes it)",
            path.display()
        )
    });
    assert_eq!(
        text,
        want,
        "the bytes the Go library sent differ from {}",
        path.display()
    );
}
