//! sysctl writes under /proc/sys (forwarding, per-interface settings).
//!
//! `SHIMNET_SYSCTL_DIR` replaces `/proc/sys` where that is read-only, e.g. inside the Docker
//! managed plugin, which mounts the host's `/proc` elsewhere.

use std::path::PathBuf;

/// A sysctl write failed.
#[derive(Debug, thiserror::Error)]
#[error("sysctl {path}: {source}")]
pub struct SysctlError {
    /// File written.
    pub path: PathBuf,
    /// Cause.
    #[source]
    pub source: std::io::Error,
}

/// Environment variable naming the sysctl folder (default `/proc/sys`).
pub const DIR_ENV: &str = "SHIMNET_SYSCTL_DIR";

fn dir() -> PathBuf {
    std::env::var_os(DIR_ENV)
        .filter(|d| !d.is_empty())
        .map_or_else(|| PathBuf::from("/proc/sys"), PathBuf::from)
}

/// Writes `value` to `/proc/sys/<key>` (slash-separated, e.g. `net/ipv4/ip_forward`) unless it
/// already holds it.
pub fn set(key: &str, value: &str) -> Result<(), SysctlError> {
    let path = dir().join(key);
    let io = |source| SysctlError {
        path: path.clone(),
        source,
    };
    let current = std::fs::read_to_string(&path).map_err(io)?;
    if current.trim() == value {
        return Ok(());
    }
    std::fs::write(&path, value).map_err(io)
}

/// Turns on IPv4 (and optionally IPv6) forwarding in the current namespace.
pub fn enable_forwarding(ipv6: bool) -> Result<(), SysctlError> {
    set("net/ipv4/ip_forward", "1")?;
    if ipv6 {
        set("net/ipv6/conf/all/forwarding", "1")?;
    }
    Ok(())
}
