//! CNI error objects (`{"cniVersion", "code", "msg", "details"}`) and the codes shimnet uses.

use serde_json::{json, Value};

/// Well-known codes from the CNI specification and shimnet's own (100 and up).
pub mod code {
    /// Incompatible CNI version.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// Container unknown or does not exist.
    pub const UNKNOWN_CONTAINER: u32 = 3;
    /// Invalid necessary environment variables.
    pub const INVALID_ENV: u32 = 4;
    /// I/O failure.
    pub const IO: u32 = 5;
    /// Failed to decode content.
    pub const DECODE: u32 = 6;
    /// Invalid network configuration.
    pub const INVALID_CONFIG: u32 = 7;
    /// Try again later (the daemon is not reachable).
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// STATUS: the plugin is not available.
    pub const NOT_AVAILABLE: u32 = 50;
    /// shimnetd failed internally.
    pub const DAEMON_FAILED: u32 = 100;
    /// shimnetd refused the request as conflicting with existing state (address or port in
    /// use, a network of that name with another subnet).
    pub const CONFLICT: u32 = 101;
    /// Something the request names does not exist in shimnetd (e.g. the `network` key).
    pub const NOT_FOUND: u32 = 102;
    /// The delegated IPAM plugin failed or gave an unusable result.
    pub const IPAM_FAILED: u32 = 103;
    /// shimnetd answered something the plugin does not understand (version mismatch?).
    pub const BAD_REPLY: u32 = 104;
    /// CHECK found the attachment differs from what was set up.
    pub const CHECK_FAILED: u32 = 105;
    /// The network takes no more endpoints (its bridge has no free port) until one is
    /// detached. Not 11 ("try again later"): it does not clear by itself.
    pub const NETWORK_FULL: u32 = 106;
}

/// An error the plugin reports on stdout (and by a non-zero exit).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("CNI error {code}: {msg}{}", if .details.is_empty() { String::new() } else { format!(" ({})", .details) })]
pub struct CniError {
    /// Error code.
    pub code: u32,
    /// Short message saying what is wrong and what to fix.
    pub msg: String,
    /// Longer details (e.g. the daemon's own message).
    pub details: String,
}

impl CniError {
    /// An error with `code` and `msg`, no details.
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        CniError {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    /// Adds details.
    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }

    /// Invalid network configuration (code 7).
    pub fn config(msg: impl Into<String>) -> Self {
        Self::new(code::INVALID_CONFIG, msg)
    }

    /// Invalid environment (code 4).
    pub fn env(msg: impl Into<String>) -> Self {
        Self::new(code::INVALID_ENV, msg)
    }

    /// The error object in the spec's shape, labelled with `cni_version`.
    pub fn to_json(&self, cni_version: &str) -> Value {
        let mut v = json!({"cniVersion": cni_version, "code": self.code, "msg": self.msg});
        if !self.details.is_empty() {
            v["details"] = Value::String(self.details.clone());
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_shape() {
        let e = CniError::config("ipam: no subnet").with_details("more");
        assert_eq!(
            e.to_json("1.0.0"),
            json!({"cniVersion": "1.0.0", "code": 7, "msg": "ipam: no subnet", "details": "more"})
        );
        assert!(CniError::env("x").to_json("1.1.0").get("details").is_none());
    }
}
