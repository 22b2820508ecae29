//! sysctl writes under /proc/sys (forwarding, per-interface settings): the [`Sysctl`] executor.
//!
//! `SHIMNET_SYSCTL_DIR` replaces `/proc/sys` where that is read-only, e.g. inside a plugin
//! container that mounts the host's `/proc` elsewhere.

use std::path::PathBuf;

use crate::kernel::Sysctl;

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

/// The sysctls of the daemon's namespace, as files under `/proc/sys` (or `SHIMNET_SYSCTL_DIR`).
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcSys;

impl Sysctl for ProcSys {
    fn set(&self, key: &str, value: &str) -> Result<(), SysctlError> {
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

    fn exists(&self, key: &str) -> bool {
        dir().join(key).exists()
    }
}
