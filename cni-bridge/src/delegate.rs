//! Delegation to another IPAM plugin (`static`, `dhcp`, ...) through `CNI_PATH`, as the
//! reference bridge plugin does: same environment, same stdin, its result or error passed on.

use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use ipnetwork::IpNetwork;
use serde_json::Value;
use shimnet_compat::cni::error::code;
use shimnet_compat::cni::{CniError, CniResult};

use crate::env::Env;

fn find(kind: &str, cni_path: &str) -> Result<PathBuf, CniError> {
    if kind.contains('/') {
        return Err(CniError::config(format!(
            "ipam.type {kind:?} must be a plugin name, not a path"
        )));
    }
    cni_path
        .split(':')
        .filter(|d| !d.is_empty())
        .map(|d| PathBuf::from(d).join(kind))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            CniError::config(format!(
                "IPAM plugin {kind:?} was not found in CNI_PATH {cni_path:?}; install it or use host-local style ipam (served by shimnetd)"
            ))
        })
}

/// Runs the IPAM plugin `kind` with `command` (ADD or DEL); returns its stdout as JSON (`Null`
/// when empty).
pub fn run(kind: &str, command: &str, env: &Env, stdin: &[u8]) -> Result<Value, CniError> {
    let bin = find(kind, &env.path)?;
    let mut child = Command::new(&bin)
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", &env.container_id)
        .env("CNI_NETNS", &env.netns)
        .env("CNI_IFNAME", &env.ifname)
        .env("CNI_ARGS", &env.args)
        .env("CNI_PATH", &env.path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            CniError::new(
                code::IPAM_FAILED,
                format!("cannot run IPAM plugin {}: {e}", bin.display()),
            )
        })?;
    if let Some(mut i) = child.stdin.take() {
        let _ = i.write_all(stdin);
    }
    let out = child.wait_with_output().map_err(|e| {
        CniError::new(
            code::IPAM_FAILED,
            format!("IPAM plugin {}: {e}", bin.display()),
        )
    })?;
    let value: Value = if out.stdout.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        serde_json::from_slice(&out.stdout).map_err(|e| {
            CniError::new(
                code::IPAM_FAILED,
                format!("IPAM plugin {kind} printed something that is not JSON"),
            )
            .with_details(e.to_string())
        })?
    };
    if !out.status.success() {
        // Pass the delegate's own error on, as the reference plugin does.
        let c = value
            .get("code")
            .and_then(Value::as_u64)
            .unwrap_or(u64::from(code::IPAM_FAILED));
        let msg = value.get("msg").and_then(Value::as_str).unwrap_or("failed");
        return Err(
            CniError::new(c as u32, format!("IPAM plugin {kind}: {msg}"))
                .with_details(String::from_utf8_lossy(&out.stderr).trim().to_string()),
        );
    }
    Ok(value)
}

/// Addresses (with prefix) and gateways of a delegated IPAM result.
pub fn addresses(result: &Value) -> Result<Vec<(IpNetwork, Option<IpAddr>)>, CniError> {
    let r = CniResult::parse(result)?;
    let bad = |what: String| CniError::new(code::IPAM_FAILED, what);
    let out = r
        .ips
        .iter()
        .map(|ip| {
            let a = ip.get("address").and_then(Value::as_str).unwrap_or("");
            let net: IpNetwork = a
                .parse()
                .map_err(|e| bad(format!("IPAM result address {a:?}: {e}")))?;
            let gw = match ip.get("gateway").and_then(Value::as_str) {
                Some(g) => Some(
                    g.parse()
                        .map_err(|e| bad(format!("IPAM result gateway {g:?}: {e}")))?,
                ),
                None => None,
            };
            Ok((net, gw))
        })
        .collect::<Result<Vec<_>, CniError>>()?;
    if out.is_empty() {
        return Err(bad("the IPAM plugin handed out no address".into()));
    }
    Ok(out)
}
