//! shimnetd configuration: TOML file or the embedded default, overridden by command-line flags.

use std::path::{Path, PathBuf};

use runtime_net::firewall::BackendKind;
use runtime_net::peering::peers::{validate_config, NodeConfig, PeeringConfig};
use serde::Deserialize;
use shimnet_api::wire::NetworkCreate;

/// The embedded default configuration (also shipped as `packaging/shimnetd.toml`).
pub const EMBEDDED_DEFAULT: &str = include_str!("../packaging/shimnetd.toml");

/// Default config file path.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/shimnet/shimnetd.toml";

/// Firewall choice in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum FirewallChoice {
    /// nftables where it works, else iptables.
    #[default]
    Auto,
    /// nftables only.
    Nftables,
    /// iptables only.
    Iptables,
}

impl FirewallChoice {
    /// The engine's preference.
    pub fn preference(self) -> Option<BackendKind> {
        match self {
            FirewallChoice::Auto => None,
            FirewallChoice::Nftables => Some(BackendKind::Nftables),
            FirewallChoice::Iptables => Some(BackendKind::Iptables),
        }
    }
}

/// The daemon's configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// State directory.
    pub state_dir: PathBuf,
    /// REST API socket path.
    pub api_socket: PathBuf,
    /// Docker plugin socket folder.
    pub plugin_dir: PathBuf,
    /// Firewall backend.
    #[serde(default)]
    pub firewall: FirewallChoice,
    /// Seconds between reconciliation passes (0 = never periodically).
    #[serde(default = "default_interval")]
    pub reconcile_interval_secs: u64,
    /// Networks declared by the configuration (created at start and on reload if missing).
    #[serde(default)]
    pub networks: Vec<NetworkCreate>,
    /// Docker plugin settings (`[docker]`).
    #[serde(default)]
    pub docker: DockerConfig,
    /// This node (`[node]`), for multi-host peering.
    #[serde(default)]
    pub node: Option<NodeConfig>,
    /// Multi-host peering (`[peering]`); needs `[node]`.
    #[serde(default)]
    pub peering: Option<PeeringConfig>,
}

/// Name of the default network whose subnet is `[node] pod_cidr`.
pub const DEFAULT_NETWORK: &str = "shimnet0";

/// `[docker]`: the Docker plugin socket and the docker0-compatible mode.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DockerConfig {
    /// Serve `<plugin_dir>/shimnet.sock`.
    pub enabled: bool,
    /// Reproduce docker0 (bridge `docker0`, docker's subnet, MAC scheme) for a dockerd started
    /// with `--bridge=none`; a Docker network created with
    /// `-o com.docker.network.bridge.name=docker0` is mapped onto it.
    pub docker0_compat: bool,
    /// dockerd's daemon.json (read for `bip`, `fixed-cidr`, `mtu`, `icc`, `ip-masq`,
    /// `iptables`, `default-address-pools`).
    pub daemon_json: PathBuf,
    /// Longest time a plugin call waits for the engine before answering an error.
    pub call_timeout_secs: u64,
}

impl Default for DockerConfig {
    fn default() -> Self {
        DockerConfig {
            enabled: true,
            docker0_compat: false,
            daemon_json: PathBuf::from("/etc/docker/daemon.json"),
            call_timeout_secs: 20,
        }
    }
}

fn default_interval() -> u64 {
    30
}

/// Loading the configuration failed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("config {path}: {source}")]
    Read {
        /// Path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid.
    #[error("config {origin}: {message}")]
    Parse {
        /// File path or "embedded default".
        origin: String,
        /// Parser message (names the key and line).
        message: String,
    },
}

impl Config {
    /// Parses TOML text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            origin: origin.to_string(),
            message: e.to_string(),
        })?;
        let bad = |message: String| ConfigError::Parse {
            origin: origin.to_string(),
            message,
        };
        match (&cfg.node, &cfg.peering) {
            (None, Some(_)) => return Err(bad("[peering] needs a [node] section".into())),
            (Some(n), Some(p)) => validate_config(n, p).map_err(|e| bad(e.to_string()))?,
            _ => {}
        }
        Ok(cfg)
    }

    /// With `[node]`: the default network `shimnet0` takes `pod_cidr` as its subnet (gateway =
    /// first host) and `mtu`; with `[peering]` also, traffic to `cluster_cidr` is never
    /// masqueraded and is let in. The network is added when the configuration lacks it.
    pub fn apply_node(&mut self, mtu: Option<u32>) {
        let Some(node) = &self.node else { return };
        let idx = match self.networks.iter().position(|n| n.name == DEFAULT_NETWORK) {
            Some(i) => i,
            None => {
                self.networks.push(NetworkCreate {
                    name: DEFAULT_NETWORK.into(),
                    bridge: Some(DEFAULT_NETWORK.into()),
                    ..NetworkCreate::default()
                });
                self.networks.len() - 1
            }
        };
        let n = &mut self.networks[idx];
        n.subnet = node.pod_cidr.to_string();
        n.gateway =
            Some(std::net::Ipv4Addr::from(u32::from(node.pod_cidr.network()) + 1).to_string());
        n.range_start = None;
        n.range_end = None;
        if mtu.is_some() {
            n.mtu = mtu;
        }
        if let Some(p) = &self.peering {
            let c = p.cluster_cidr.to_string();
            for list in [&mut n.no_masquerade_to, &mut n.allow_from] {
                if !list.contains(&c) {
                    list.push(c.clone());
                }
            }
        }
    }

    /// Loads `path`; when `path` is the default location and does not exist, the embedded default.
    pub fn load(path: &Path, explicit: bool) -> Result<(Self, String), ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Ok((
                Self::parse(&text, &path.display().to_string())?,
                path.display().to_string(),
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => Ok((
                Self::parse(EMBEDDED_DEFAULT, "embedded default")?,
                "embedded default".to_string(),
            )),
            Err(source) => Err(ConfigError::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_is_valid_and_avoids_docker_and_podman() {
        let c = Config::parse(EMBEDDED_DEFAULT, "embedded").unwrap();
        assert_eq!(c.networks.len(), 1);
        let n = &c.networks[0];
        assert_eq!(n.name, "shimnet0");
        let subnet: ipnetwork::Ipv4Network = n.subnet.parse().unwrap();
        for other in ["172.17.0.0/16", "10.88.0.0/16"] {
            let o: ipnetwork::Ipv4Network = other.parse().unwrap();
            assert!(!subnet.overlaps(o), "{subnet} overlaps {o}");
        }
        assert_eq!(c.firewall, FirewallChoice::Auto);
        assert_eq!(c.api_socket, PathBuf::from("/run/shimnet/shimnetd.sock"));
        assert!(c.docker.enabled);
        assert!(!c.docker.docker0_compat);
    }

    #[test]
    fn unknown_keys_are_named() {
        let text = EMBEDDED_DEFAULT.replace("firewall = \"auto\"", "firewal = \"auto\"");
        let e = Config::parse(&text, "x").unwrap_err().to_string();
        assert!(e.contains("firewal"), "{e}");
        let text = EMBEDDED_DEFAULT.replace("firewall = \"auto\"", "firewall = \"pf\"");
        assert!(Config::parse(&text, "x").is_err());
    }

    #[test]
    fn docker_section_parses_and_names_unknown_keys() {
        let text = format!(
            "{EMBEDDED_DEFAULT}\n[docker]\ndocker0_compat = true\ndaemon_json = \"/tmp/d.json\"\n"
        );
        let c = Config::parse(&text, "x").unwrap();
        assert!(c.docker.docker0_compat && c.docker.enabled);
        assert_eq!(c.docker.daemon_json, PathBuf::from("/tmp/d.json"));
        assert_eq!(c.docker.call_timeout_secs, 20);
        let text = format!("{EMBEDDED_DEFAULT}\n[docker]\ndocker0 = true\n");
        let e = Config::parse(&text, "x").unwrap_err().to_string();
        assert!(e.contains("docker0"), "{e}");
    }

    #[test]
    fn node_and_peering_shape_the_default_network() {
        let text = format!(
            "{EMBEDDED_DEFAULT}\n[node]\nname = \"a\"\naddress = \"192.168.1.10\"\npod_cidr = \"10.1.0.0/24\"\n[peering]\nmode = \"auto\"\ncluster_cidr = \"10.0.0.0/8\"\npeers_file = \"/etc/shimnet/peers.toml\"\n"
        );
        let mut c = Config::parse(&text, "x").unwrap();
        c.apply_node(Some(1450));
        let n = &c.networks[0];
        assert_eq!(n.name, DEFAULT_NETWORK);
        assert_eq!(n.subnet, "10.1.0.0/24");
        assert_eq!(n.gateway.as_deref(), Some("10.1.0.1"));
        assert_eq!(n.mtu, Some(1450));
        assert_eq!(n.no_masquerade_to, vec!["10.0.0.0/8".to_string()]);
        assert_eq!(n.allow_from, vec!["10.0.0.0/8".to_string()]);
        let p = c.peering.unwrap();
        assert_eq!((p.vxlan_port, p.reconcile_interval_secs), (4789, 3));
        // [peering] alone, a pod subnet outside the cluster, an unknown mode: refused, named.
        let alone = format!("{EMBEDDED_DEFAULT}\n[peering]\nmode = \"auto\"\ncluster_cidr = \"10.0.0.0/8\"\npeers_file = \"/p\"\n");
        assert!(Config::parse(&alone, "x")
            .unwrap_err()
            .to_string()
            .contains("[node]"));
        let outside = text.replace("10.0.0.0/8", "172.16.0.0/12");
        let e = Config::parse(&outside, "x").unwrap_err().to_string();
        assert!(e.contains("node.pod_cidr"), "{e}");
        let e = Config::parse(&text.replace("\"auto\"", "\"gre\""), "x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("mode") || e.contains("gre"), "{e}");
    }

    #[test]
    fn missing_default_path_falls_back_but_explicit_does_not() {
        let (_, origin) = Config::load(Path::new("/nonexistent/shimnetd.toml"), false).unwrap();
        assert_eq!(origin, "embedded default");
        assert!(Config::load(Path::new("/nonexistent/shimnetd.toml"), true).is_err());
    }
}
