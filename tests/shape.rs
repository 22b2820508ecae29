//! The architecture, held by tests (no root, no kernel): the engine knows no front door, `compat`
//! does not depend on `api`, the wire types depend on no other workspace crate, iptables is run
//! from one module, and the engine's test fakes are never part of a normal build. See the README's
//! "Architecture" section.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

fn rel(p: &Path) -> String {
    p.strip_prefix(root()).unwrap().display().to_string()
}

/// Words of a line: runs of ASCII letters, digits and `_`.
fn words(line: &str) -> impl Iterator<Item = &str> {
    line.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
}

/// Front-door vocabulary: a word containing one of these (case-insensitive).
const FRONT_DOOR_WORDS: &[&str] = &["docker", "cni", "http"];

/// Files of `runtime-net/src` allowed to spell front-door words, and why.
const ALLOWED: &[(&str, &str)] = &[(
    "runtime-net/src/store/legacy.rs",
    "reads records written by older versions: their field for the 02:42 MAC prefix was named \
     after the front door that introduced it; that name is part of the on-disk format and is \
     read in this one file only",
)];

#[test]
fn the_engine_has_no_front_door_vocabulary() {
    let mut files = Vec::new();
    rust_files(&root().join("runtime-net/src"), &mut files);
    assert!(files.len() > 40, "found only {} files", files.len());
    let mut found = Vec::new();
    for f in &files {
        let name = rel(f);
        if ALLOWED.iter().any(|(a, _)| *a == name) {
            continue;
        }
        let text = std::fs::read_to_string(f).unwrap();
        for (n, line) in text.lines().enumerate() {
            for w in words(line) {
                let lower = w.to_ascii_lowercase();
                if FRONT_DOOR_WORDS.iter().any(|d| lower.contains(d)) {
                    found.push(format!("{name}:{}: {w}", n + 1));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "front-door words in runtime-net (translate in compat or the front door instead):\n{}",
        found.join("\n")
    );
    // The check itself can fail: the allowlisted file does spell one.
    let legacy = std::fs::read_to_string(root().join(ALLOWED[0].0)).unwrap();
    assert!(words(&legacy).any(|w| w.to_ascii_lowercase().contains("docker")));
}

fn metadata() -> Value {
    let cargo = option_env!("CARGO").unwrap_or("cargo");
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(root())
        .output()
        .expect("cargo metadata");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// (dependency name, kind, features) of a workspace package.
fn deps(meta: &Value, package: &str) -> Vec<(String, String, Vec<String>)> {
    let p = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == package)
        .unwrap_or_else(|| panic!("no package {package}"));
    p["dependencies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["name"].as_str().unwrap().to_string(),
                d["kind"].as_str().unwrap_or("normal").to_string(),
                d["features"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|f| f.as_str().unwrap().to_string())
                    .collect(),
            )
        })
        .collect()
}

const WORKSPACE: &[&str] = &[
    "shimnet",
    "runtime-net",
    "shimnet-wire",
    "shimnet-api",
    "shimnet-cni",
    "shimnet-compat",
    "gojson",
    "shimnet-membership-etcd",
];

#[test]
fn crate_edges_point_one_way() {
    let meta = metadata();
    let on = |pkg: &str| -> Vec<String> {
        deps(&meta, pkg)
            .into_iter()
            .filter(|(n, _, _)| WORKSPACE.contains(&n.as_str()))
            .map(|(n, _, _)| n)
            .collect()
    };
    let compat = on("shimnet-compat");
    assert!(!compat.contains(&"shimnet-api".to_string()), "{compat:?}");
    assert!(compat.contains(&"shimnet-wire".to_string()), "{compat:?}");
    assert_eq!(on("shimnet-wire"), Vec::<String>::new());
    assert_eq!(on("runtime-net"), Vec::<String>::new());
    assert_eq!(
        on("shimnet-membership-etcd"),
        vec!["runtime-net".to_string()]
    );
    // The iptables crate is the engine's alone.
    for p in WORKSPACE.iter().filter(|p| **p != "runtime-net") {
        assert!(
            !deps(&meta, p).iter().any(|(n, _, _)| n == "iptables"),
            "{p} depends on iptables"
        );
    }
}

#[test]
fn the_engine_fakes_are_only_ever_a_dev_dependency() {
    let meta = metadata();
    for p in WORKSPACE {
        for (name, kind, features) in deps(&meta, p) {
            if name == "runtime-net" && features.iter().any(|f| f == "fakes") {
                assert_eq!(
                    kind, "dev",
                    "{p} enables runtime-net/fakes outside its tests"
                );
            }
        }
    }
    let rn = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "runtime-net")
        .unwrap();
    let default = rn["features"]["default"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(!default.iter().any(|f| f == "fakes"), "{default:?}");
}

/// The text of `f` before its test module (`#[cfg(test)]` at the start of a line).
fn production_part(text: &str) -> &str {
    match text.find("\n#[cfg(test)]") {
        Some(i) => &text[..i],
        None => text,
    }
}

/// Whether a line runs iptables: the `iptables` crate, or a command named after it.
fn runs_iptables(line: &str) -> bool {
    let l = line.trim_start();
    if l.starts_with("//") {
        return false;
    }
    l.contains("iptables::new(")
        || l.contains("iptables::IPTables")
        || l.starts_with("use iptables")
        || (l.contains("Command::new(") && (l.contains("iptables") || l.contains("ip6tables")))
}

#[test]
fn iptables_is_run_from_one_module() {
    let mut files = Vec::new();
    for d in [
        "runtime-net/src",
        "api/src",
        "compat/src",
        "wire/src",
        "cni-bridge/src",
        "src",
    ] {
        rust_files(&root().join(d), &mut files);
    }
    let mut callers: Vec<String> = Vec::new();
    for f in &files {
        let name = rel(f);
        if name.contains("/tests/") || name.ends_with("/tests.rs") {
            continue;
        }
        let text = std::fs::read_to_string(f).unwrap();
        if production_part(&text).lines().any(runs_iptables) {
            callers.push(name);
        }
    }
    assert_eq!(callers, vec!["runtime-net/src/firewall/ipt.rs".to_string()]);
    assert!(runs_iptables(
        r#"    let o = Command::new("ip6tables").arg("-S");"#
    ));
    assert!(!runs_iptables(
        "    // iptables::new(false) is done in ipt.rs"
    ));
}
