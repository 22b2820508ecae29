//! Running the built `shimnet` CNI plugin (and reference plugins) the way a runtime does: `CNI_*`
//! environment, configuration on stdin, JSON on stdout, exit code.

#![allow(dead_code)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use serde_json::{json, Value};

/// Folder of the reference plugins (Debian `containernetworking-plugins`).
pub const REF_DIR: &str = "/usr/lib/cni";

/// Path of the `shimnet` plugin binary next to `shimnetd`, built (once per test process) so that
/// it is current even when only the root package's tests were asked for.
pub fn plugin() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let daemon = PathBuf::from(env!("CARGO_BIN_EXE_shimnetd"));
            let dir = daemon.parent().expect("target dir").to_path_buf();
            let release = dir.file_name().is_some_and(|n| n == "release");
            let mut cmd = Command::new(env!("CARGO"));
            cmd.args(["build", "-q", "-p", "shimnet-cni", "--bin", "shimnet"]);
            if release {
                cmd.arg("--release");
            }
            let st = cmd
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .status()
                .expect("run cargo build");
            assert!(st.success(), "building the shimnet plugin failed");
            let bin = dir.join("shimnet");
            assert!(bin.is_file(), "{} missing", bin.display());
            bin
        })
        .clone()
}

/// One plugin run's outcome.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Exit code.
    pub code: i32,
    /// Stdout as JSON (Null when empty).
    pub out: Value,
    /// Stderr.
    pub err: String,
}

impl Outcome {
    /// The CNI error code, if the run failed with an error object.
    pub fn cni_code(&self) -> Option<u64> {
        (self.code != 0)
            .then(|| self.out["code"].as_u64())
            .flatten()
    }
}

/// Runs plugin `bin` with `env` and `stdin`, inside namespace `netns` when given (`ip netns exec`).
pub fn exec(
    bin: &std::path::Path,
    netns: Option<&str>,
    env: &[(&str, &str)],
    stdin: &[u8],
) -> Outcome {
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(bin);
            c
        }
        None => Command::new(bin),
    };
    cmd.env_clear().env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn plugin");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let o = child.wait_with_output().unwrap();
    let out = if o.stdout.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
            panic!(
                "plugin stdout is not JSON ({e}): {}",
                String::from_utf8_lossy(&o.stdout)
            )
        })
    };
    Outcome {
        code: o.status.code().unwrap_or(-1),
        out,
        err: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// An invocation's identity.
#[derive(Debug, Clone)]
pub struct Call {
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    pub args: String,
}

impl Call {
    pub fn new(container_id: &str, netns: &str) -> Self {
        Call {
            container_id: container_id.into(),
            netns: netns.into(),
            ifname: "eth0".into(),
            args: String::new(),
        }
    }
}

/// Runs `shimnet` with `command` for `call` and configuration `conf`.
pub fn shimnet(command: &str, call: &Call, conf: &Value) -> Outcome {
    let path = format!("{}:{REF_DIR}", plugin().parent().unwrap().display());
    exec(
        &plugin(),
        None,
        &[
            ("CNI_COMMAND", command),
            ("CNI_CONTAINERID", &call.container_id),
            ("CNI_NETNS", &call.netns),
            ("CNI_IFNAME", &call.ifname),
            ("CNI_ARGS", &call.args),
            ("CNI_PATH", &path),
        ],
        conf.to_string().as_bytes(),
    )
}

/// A `shimnet` network configuration talking to `socket`, on `subnet` with bridge `bridge`.
pub fn conf(
    version: &str,
    name: &str,
    socket: &std::path::Path,
    bridge: &str,
    subnet: &str,
) -> Value {
    json!({
        "cniVersion": version,
        "name": name,
        "type": "shimnet",
        "daemonSocket": socket,
        "bridge": bridge,
        "isGateway": true,
        "ipMasq": true,
        "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet}]], "routes": [{"dst": "0.0.0.0/0"}]}
    })
}

/// A conflist whose one plugin is [`conf`]'s `shimnet`, declaring `capabilities`.
pub fn conflist(
    version: &str,
    name: &str,
    socket: &std::path::Path,
    bridge: &str,
    subnet: &str,
    capabilities: Value,
) -> Value {
    let mut plugin = conf(version, name, socket, bridge, subnet);
    let p = plugin.as_object_mut().expect("an object");
    p.remove("cniVersion");
    p.remove("name");
    p.insert("capabilities".into(), capabilities);
    json!({"cniVersion": version, "name": name, "plugins": [plugin]})
}

/// Runs a conflist's plugins in order like libcni: each gets the network name and version and the
/// previous result as `prevResult`; returns the last result or the first failure. Plugins run
/// inside namespace `host_ns` (reference plugins touch the firewall and links of the namespace
/// they run in).
pub fn run_chain(
    command: &str,
    call: &Call,
    list: &Value,
    host_ns: &str,
    prev: Option<&Value>,
) -> Result<Value, Outcome> {
    let path = format!("{}:{REF_DIR}", plugin().parent().unwrap().display());
    let mut plugins: Vec<Value> = list["plugins"].as_array().unwrap().clone();
    if command == "DEL" {
        plugins.reverse();
    }
    let mut result = prev.cloned();
    for mut p in plugins {
        p["name"] = list["name"].clone();
        p["cniVersion"] = list["cniVersion"].clone();
        if let Some(r) = &result {
            p["prevResult"] = r.clone();
        }
        let ty = p["type"].as_str().unwrap().to_string();
        let bin = if ty == "shimnet" {
            plugin()
        } else {
            PathBuf::from(REF_DIR).join(&ty)
        };
        let o = exec(
            &bin,
            Some(host_ns),
            &[
                ("CNI_COMMAND", command),
                ("CNI_CONTAINERID", &call.container_id),
                ("CNI_NETNS", &call.netns),
                ("CNI_IFNAME", &call.ifname),
                ("CNI_ARGS", &call.args),
                ("CNI_PATH", &path),
            ],
            p.to_string().as_bytes(),
        );
        if o.code != 0 {
            return Err(o);
        }
        if command == "ADD" {
            result = Some(o.out);
        }
    }
    Ok(result.unwrap_or(Value::Null))
}
