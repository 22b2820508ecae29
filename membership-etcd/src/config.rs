//! `[etcd]` in `shimnetd.toml`: endpoints, key prefix, subnet size, lease TTL, TLS and
//! credentials. Pure parsing and validation; every error names its key (`etcd.endpoints[1]`).

use std::path::PathBuf;
use std::time::Duration;

use ipnetwork::Ipv4Network;
use serde::{Deserialize, Serialize};

/// etcd's smallest lease TTL with its default election timeout (1 s × 3/2, rounded up).
pub const MIN_LEASE_TTL_SECS: u64 = 2;

/// `[etcd]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdConfig {
    /// Client URLs of the etcd members (`http://198.19.9.1:2379`, `https://...`).
    pub endpoints: Vec<String>,
    /// Every key lives under this prefix.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// Prefix length of each node's leased pod subnet.
    #[serde(default = "default_subnet_len")]
    pub subnet_len: u8,
    /// Liveness: a node whose lease is not renewed for this long is dropped by its peers.
    #[serde(default = "default_ttl")]
    pub lease_ttl_secs: u64,
    /// CA certificate (PEM) that signed the members' certificates (TLS, `https://` endpoints).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM), with `key_file`.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// Client private key (PEM), with `cert_file`.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// etcd user (with `password` or `password_file`).
    #[serde(default)]
    pub username: Option<String>,
    /// Password of `username`.
    #[serde(default)]
    pub password: Option<String>,
    /// File holding the password of `username` (first line), instead of `password`.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Time to connect to one member, and for one request, before trying again.
    #[serde(default = "default_dial")]
    pub dial_timeout_secs: u64,
    /// How long a start waits for etcd before it falls back to the subnet remembered in the
    /// state dir (or, without one, fails).
    #[serde(default = "default_start")]
    pub start_timeout_secs: u64,
}

fn default_prefix() -> String {
    "/shimnet".into()
}
fn default_subnet_len() -> u8 {
    24
}
fn default_ttl() -> u64 {
    60
}
fn default_dial() -> u64 {
    5
}
fn default_start() -> u64 {
    20
}

/// A key of `[etcd]` refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ConfigError {
    /// The key at fault (`etcd.endpoints[0]`).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

fn bad(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError {
        field: field.into(),
        message: message.into(),
    }
}

/// The scheme of an endpoint URL (`http`/`https`) and its `host:port`.
pub fn split_endpoint(url: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    let hostport = rest.strip_suffix('/').unwrap_or(rest);
    let (host, port) = hostport.rsplit_once(':')?;
    let ok = matches!(scheme, "http" | "https")
        && !host.is_empty()
        && !host.contains(['/', '@', ' '])
        && port.parse::<u16>().is_ok_and(|p| p > 0);
    ok.then_some((scheme, hostport))
}

impl EtcdConfig {
    /// Checks every key against itself and `[peering] cluster_cidr`.
    pub fn validate(&self, cluster: Ipv4Network) -> Result<(), ConfigError> {
        if self.endpoints.is_empty() {
            return Err(bad("etcd.endpoints", "must list at least one member"));
        }
        let mut schemes = Vec::new();
        for (i, e) in self.endpoints.iter().enumerate() {
            let (scheme, _) = split_endpoint(e).ok_or_else(|| {
                bad(
                    format!("etcd.endpoints[{i}]"),
                    format!("{e:?}: expected http://HOST:PORT or https://HOST:PORT"),
                )
            })?;
            schemes.push(scheme);
        }
        let https = schemes.iter().filter(|s| **s == "https").count();
        if https != 0 && https != schemes.len() {
            return Err(bad(
                "etcd.endpoints",
                "mixes http:// and https:// members; use one scheme",
            ));
        }
        let tls = self.ca_file.is_some() || self.cert_file.is_some() || self.key_file.is_some();
        if https > 0 && self.ca_file.is_none() {
            return Err(bad(
                "etcd.ca_file",
                "required with https:// endpoints (the CA that signed the members' certificates)",
            ));
        }
        if tls && https == 0 {
            return Err(bad(
                "etcd.endpoints",
                "ca_file/cert_file/key_file are set but the endpoints are http://; use https://",
            ));
        }
        if self.cert_file.is_some() != self.key_file.is_some() {
            let field = if self.cert_file.is_some() {
                "etcd.key_file"
            } else {
                "etcd.cert_file"
            };
            return Err(bad(field, "cert_file and key_file go together"));
        }
        let secret = self.password.is_some() || self.password_file.is_some();
        if self.password.is_some() && self.password_file.is_some() {
            return Err(bad(
                "etcd.password_file",
                "set password or password_file, not both",
            ));
        }
        if self.username.is_some() != secret {
            let field = if self.username.is_some() {
                "etcd.password"
            } else {
                "etcd.username"
            };
            return Err(bad(
                field,
                "username and password (or password_file) go together",
            ));
        }
        if self.username.as_deref() == Some("") {
            return Err(bad("etcd.username", "must not be empty"));
        }
        let p = &self.prefix;
        if !p.starts_with('/') || p.len() < 2 || p.ends_with('/') || p.contains("//") {
            return Err(bad(
                "etcd.prefix",
                format!("{p:?}: expected an absolute key prefix such as \"/shimnet\""),
            ));
        }
        if self.subnet_len < cluster.prefix() || self.subnet_len > 30 {
            return Err(bad(
                "etcd.subnet_len",
                format!(
                    "/{} does not fit peering.cluster_cidr {cluster} (expected {} to 30)",
                    self.subnet_len,
                    cluster.prefix()
                ),
            ));
        }
        if self.lease_ttl_secs < MIN_LEASE_TTL_SECS || self.lease_ttl_secs > 3600 {
            return Err(bad(
                "etcd.lease_ttl_secs",
                format!(
                    "{} is outside {MIN_LEASE_TTL_SECS}..3600",
                    self.lease_ttl_secs
                ),
            ));
        }
        if self.dial_timeout_secs == 0 {
            return Err(bad("etcd.dial_timeout_secs", "must be at least 1"));
        }
        Ok(())
    }

    /// The endpoints as one line (status, logs).
    pub fn endpoints_line(&self) -> String {
        self.endpoints.join(",")
    }

    /// Lease TTL.
    pub fn ttl(&self) -> Duration {
        Duration::from_secs(self.lease_ttl_secs)
    }

    /// How often the lease is renewed: a third of its TTL (at least every 500 ms).
    pub fn keepalive_every(&self) -> Duration {
        (self.ttl() / 3).max(Duration::from_millis(500))
    }

    /// Dial and request timeout.
    pub fn dial_timeout(&self) -> Duration {
        Duration::from_secs(self.dial_timeout_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> EtcdConfig {
        toml::from_str(text).unwrap()
    }

    fn err(text: &str) -> String {
        cfg(text)
            .validate("10.244.0.0/16".parse().unwrap())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn defaults_and_a_valid_config() {
        let c = cfg("endpoints = [\"http://198.19.9.1:2379\", \"http://198.19.9.2:2379\"]");
        assert_eq!(
            (c.prefix.as_str(), c.subnet_len, c.lease_ttl_secs),
            ("/shimnet", 24, 60)
        );
        c.validate("10.244.0.0/16".parse().unwrap()).unwrap();
        assert_eq!(c.keepalive_every(), Duration::from_secs(20));
        assert_eq!(
            c.endpoints_line(),
            "http://198.19.9.1:2379,http://198.19.9.2:2379"
        );
    }

    #[test]
    fn each_bad_key_is_named() {
        for (text, field) in [
            ("endpoints = []", "etcd.endpoints:"),
            ("endpoints = [\"http://a:2379\", \"198.19.9.2:2379\"]", "etcd.endpoints[1]"),
            ("endpoints = [\"ftp://a:2379\"]", "etcd.endpoints[0]"),
            ("endpoints = [\"http://a:0\"]", "etcd.endpoints[0]"),
            ("endpoints = [\"http://a:1\", \"https://b:2\"]", "etcd.endpoints:"),
            ("endpoints = [\"https://a:1\"]", "etcd.ca_file"),
            ("endpoints = [\"http://a:1\"]\nca_file = \"/ca\"", "etcd.endpoints:"),
            ("endpoints = [\"https://a:1\"]\nca_file = \"/ca\"\ncert_file = \"/c\"", "etcd.key_file"),
            ("endpoints = [\"http://a:1\"]\nusername = \"u\"", "etcd.password"),
            ("endpoints = [\"http://a:1\"]\npassword = \"p\"", "etcd.username"),
            ("endpoints = [\"http://a:1\"]\nusername = \"u\"\npassword = \"p\"\npassword_file = \"/p\"", "etcd.password_file"),
            ("endpoints = [\"http://a:1\"]\nprefix = \"shimnet\"", "etcd.prefix"),
            ("endpoints = [\"http://a:1\"]\nprefix = \"/shimnet/\"", "etcd.prefix"),
            ("endpoints = [\"http://a:1\"]\nsubnet_len = 12", "etcd.subnet_len"),
            ("endpoints = [\"http://a:1\"]\nsubnet_len = 31", "etcd.subnet_len"),
            ("endpoints = [\"http://a:1\"]\nlease_ttl_secs = 1", "etcd.lease_ttl_secs"),
        ] {
            let e = err(text);
            assert!(e.starts_with(field), "{text}: {e}");
        }
        let e = toml::from_str::<EtcdConfig>("endpoints = []\nttl = 5").unwrap_err();
        assert!(e.to_string().contains("ttl"), "{e}");
    }

    #[test]
    fn endpoint_urls_split() {
        assert_eq!(
            split_endpoint("https://198.19.9.1:2379/"),
            Some(("https", "198.19.9.1:2379"))
        );
        assert_eq!(split_endpoint("198.19.9.1:2379"), None);
        assert_eq!(split_endpoint("http://:2379"), None);
    }
}
