//! shimnetd configuration: TOML file or the embedded default, overridden by command-line flags.

use std::path::{Path, PathBuf};

use membership_etcd::EtcdConfig;
use runtime_net::firewall::BackendKind;
use runtime_net::peering::peers::{validate_settings, NodeSettings, PeeringConfig, SourceKind};
use runtime_net::plan;
use serde::Deserialize;
use shimnet_api::rest::convert;
use shimnet_api::server::Limits;
use shimnet_wire::NetworkCreate;
use std::time::Duration;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

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
    /// Seconds between full reconciliation passes, the safety net behind event-driven repair
    /// (0 = never periodically).
    #[serde(default = "default_interval")]
    pub reconcile_interval_secs: u64,
    /// Repair owned objects when the kernel reports a change to them (default on).
    #[serde(default = "default_true")]
    pub repair_on_events: bool,
    /// Extension bridges one network may have beyond its main bridge, so that it holds more
    /// endpoints than one bridge's 1,023 ports (0..=15, default 15; 0: one bridge per network).
    #[serde(default = "default_max_extensions")]
    pub max_bridge_extensions: u8,
    /// Ports shimnet fills on each bridge (2..=1023, the kernel's most; default
    /// [`DEFAULT_BRIDGE_PORTS`]).
    #[serde(default = "default_bridge_ports")]
    pub bridge_ports: usize,
    /// Networks declared by the configuration (created at start and on reload if missing).
    #[serde(default)]
    pub networks: Vec<NetworkCreate>,
    /// Docker plugin settings (`[docker]`).
    #[serde(default)]
    pub docker: DockerConfig,
    /// Socket ownership and server limits of both sockets (`[api]`).
    #[serde(default)]
    pub api: ApiConfig,
    /// This node (`[node]`), for multi-host peering.
    #[serde(default)]
    pub node: Option<NodeSettings>,
    /// Multi-host peering (`[peering]`); needs `[node]`.
    #[serde(default)]
    pub peering: Option<PeeringConfig>,
    /// Cluster membership through etcd (`[etcd]`); with `[peering] source = "etcd"`.
    #[serde(default)]
    pub etcd: Option<EtcdConfig>,
    /// Name resolution on networks with `dns` (`[dns]`).
    #[serde(default)]
    pub dns: DnsSection,
}

/// `[dns]`: the name service of networks created with `dns` (see README, "Name resolution").
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsSection {
    /// Search domain: every name also answers as `NAME.DOMAIN`.
    pub domain: String,
    /// TTL of local answers, seconds.
    pub ttl_secs: u32,
    /// The host's resolv.conf: where other names are forwarded.
    pub resolv_conf: PathBuf,
    /// systemd-resolved's upstream list, used when `resolv_conf` names only its stub.
    pub resolved_resolv_conf: PathBuf,
    /// Longest wait for one upstream resolver, milliseconds.
    pub upstream_timeout_ms: u64,
    /// Longest time a forwarded query takes in all (then SERVFAIL), milliseconds.
    pub forward_timeout_ms: u64,
    /// Forwarded queries in flight at most (more get SERVFAIL at once).
    pub max_forwards: usize,
    /// TCP connections open at most, across networks.
    pub max_tcp_connections: usize,
    /// UDP queries per source address and second at most (0: no limit); more are dropped.
    pub max_queries_per_source: u32,
}

impl Default for DnsSection {
    fn default() -> Self {
        let d = shimnet_dns::DnsConfig::default();
        DnsSection {
            domain: d.domain,
            ttl_secs: d.ttl,
            resolv_conf: d.resolv_conf,
            resolved_resolv_conf: d.resolved_conf,
            upstream_timeout_ms: d.attempt_timeout.as_millis() as u64,
            forward_timeout_ms: d.forward_deadline.as_millis() as u64,
            max_forwards: d.max_forwards,
            max_tcp_connections: d.max_tcp_connections,
            max_queries_per_source: d.per_source_qps,
        }
    }
}

impl DnsSection {
    /// The name service's settings (zero limits raised to the smallest that works).
    pub fn settings(&self) -> shimnet_dns::DnsConfig {
        shimnet_dns::DnsConfig {
            domain: self.domain.trim_end_matches('.').to_string(),
            ttl: self.ttl_secs,
            resolv_conf: self.resolv_conf.clone(),
            resolved_conf: self.resolved_resolv_conf.clone(),
            attempt_timeout: Duration::from_millis(self.upstream_timeout_ms.max(1)),
            forward_deadline: Duration::from_millis(self.forward_timeout_ms.max(1)),
            max_forwards: self.max_forwards.max(1),
            max_tcp_connections: self.max_tcp_connections.max(1),
            per_source_qps: self.max_queries_per_source,
            ..shimnet_dns::DnsConfig::default()
        }
    }
}

/// `[api]`: who may use the sockets and the limits that protect the daemon from slow or hostile
/// clients (both the REST and the Docker plugin socket).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Group owning the sockets (mode 0660); unset = root's group.
    pub socket_group: Option<String>,
    /// Open connections per socket at most; more wait to be accepted.
    pub max_connections: usize,
    /// Requests handled at once per socket; more queue in arrival order.
    pub max_concurrent_requests: usize,
    /// Largest request body in bytes (larger: 413).
    pub max_body_bytes: usize,
    /// Seconds for a request's headers to arrive.
    pub header_timeout_secs: u64,
    /// Seconds for a request's body to arrive.
    pub body_timeout_secs: u64,
    /// Seconds an idle connection stays open.
    pub idle_timeout_secs: u64,
    /// Longest time a REST request waits for the engine before it is answered 503 (the Docker
    /// socket has `[docker] call_timeout_secs`).
    pub call_timeout_secs: u64,
}

impl Default for ApiConfig {
    fn default() -> Self {
        let d = Limits::default();
        ApiConfig {
            socket_group: None,
            max_connections: d.max_connections,
            max_concurrent_requests: d.max_concurrent_requests,
            max_body_bytes: d.max_body_bytes,
            header_timeout_secs: d.header_read_timeout.as_secs(),
            body_timeout_secs: d.body_read_timeout.as_secs(),
            idle_timeout_secs: d.idle_timeout.as_secs(),
            call_timeout_secs: 20,
        }
    }
}

impl ApiConfig {
    /// The server limits (zero values are raised to the smallest that works).
    pub fn limits(&self) -> Limits {
        let secs = |s: u64| Duration::from_secs(s.max(1));
        Limits {
            max_connections: self.max_connections.max(1),
            max_concurrent_requests: self.max_concurrent_requests.max(1),
            max_body_bytes: self.max_body_bytes.max(1024),
            header_read_timeout: secs(self.header_timeout_secs),
            body_read_timeout: secs(self.body_timeout_secs),
            idle_timeout: secs(self.idle_timeout_secs),
        }
    }

    /// The group id of `socket_group` (a name or a number).
    pub fn socket_gid(&self) -> Result<Option<u32>, ConfigError> {
        let Some(g) = &self.socket_group else {
            return Ok(None);
        };
        if let Ok(n) = g.parse::<u32>() {
            return Ok(Some(n));
        }
        match nix::unistd::Group::from_name(g) {
            Ok(Some(grp)) => Ok(Some(grp.gid.as_raw())),
            Ok(None) => Err(ConfigError::Parse {
                origin: "[api]".into(),
                message: format!("socket_group: no group named {g:?}"),
            }),
            Err(e) => Err(ConfigError::Parse {
                origin: "[api]".into(),
                message: format!("socket_group: looking up {g:?}: {e}"),
            }),
        }
    }
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

/// Ports filled per bridge by default: half the kernel's 1,023, so that one broadcast's copies
/// into a bridge's ports stay well inside the kernel's default per-CPU input backlog
/// (`net.core.netdev_max_backlog`, 1,000; a flood past it drops the bridge's oldest ports, an
/// extension's trunk among them), and each port join or leave walks at most this many ports.
pub const DEFAULT_BRIDGE_PORTS: usize = 512;

fn default_bridge_ports() -> usize {
    DEFAULT_BRIDGE_PORTS
}

fn default_max_extensions() -> u8 {
    runtime_net::naming::MAX_EXTENSIONS
}

fn default_interval() -> u64 {
    600
}

fn default_true() -> bool {
    true
}

/// Deserializes `text` layered over [`EMBEDDED_DEFAULT`]. On error, also names the embedded
/// default when the offending value came from it rather than from `text`.
fn layered(text: &str) -> Result<Config, (Option<&'static str>, toml::de::Error)> {
    let from_default = |e| (Some("embedded default"), e);
    let mut base = DeTable::parse(EMBEDDED_DEFAULT).map_err(from_default)?;
    let top = DeTable::parse(text).map_err(|e| (None, e))?;
    // Spans of embedded values are moved past the end of `text`, so that an error in one of them
    // is never shown against a line of `text`.
    let offset = text.len() + 1;
    for (_, v) in base.get_mut().iter_mut() {
        shift_spans(v, offset);
    }
    let span = top.span();
    let mut root = base.into_inner();
    overlay(&mut root, top.into_inner());
    let de = toml::de::Deserializer::from(Spanned::new(span, root));
    Config::deserialize(de).map_err(|mut e| {
        if e.span().is_some_and(|s| s.start >= offset) {
            e.set_input(None);
            (Some("embedded default"), e)
        } else {
            e.set_input(Some(text));
            (None, e)
        }
    })
}

/// Puts every key of `top` over `base`: tables present in both are merged key by key, anything
/// else in `top` replaces the value in `base`.
fn overlay<'a>(base: &mut DeTable<'a>, top: DeTable<'a>) {
    for (k, v) in top {
        match (base.get_mut(k.get_ref().as_ref()), v.get_ref()) {
            (Some(b), DeValue::Table(_)) if matches!(b.get_ref(), DeValue::Table(_)) => {
                let span = v.span();
                let (DeValue::Table(bt), DeValue::Table(tt)) = (b.get_mut(), v.into_inner()) else {
                    unreachable!("both checked to be tables")
                };
                overlay(bt, tt);
                // Errors about the merged table (a missing key) point at the text's table.
                let merged = std::mem::replace(bt, DeTable::new());
                *b = Spanned::new(span, DeValue::Table(merged));
            }
            _ => {
                base.insert(k, v);
            }
        }
    }
}

/// Moves the span of `v` and of everything inside it by `by` bytes.
fn shift_spans(v: &mut Spanned<DeValue<'_>>, by: usize) {
    let span = v.span();
    let mut inner = std::mem::replace(v.get_mut(), DeValue::Boolean(false));
    match &mut inner {
        DeValue::Table(t) => t.iter_mut().for_each(|(_, x)| shift_spans(x, by)),
        DeValue::Array(a) => a.iter_mut().for_each(|x| shift_spans(x, by)),
        _ => {}
    }
    *v = Spanned::new(span.start + by..span.end + by, inner);
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
    /// Parses TOML text layered over the embedded default: every key the text leaves out keeps
    /// its embedded value (tables are merged key by key, any other value — arrays such as
    /// `networks` included — is replaced whole). `origin` names the text in errors, which point
    /// at the offending key's line.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let bad = |message: String| ConfigError::Parse {
            origin: origin.to_string(),
            message,
        };
        let cfg = layered(text).map_err(|(o, e)| ConfigError::Parse {
            origin: o.unwrap_or(origin).to_string(),
            message: e.to_string(),
        })?;
        match (&cfg.node, &cfg.peering) {
            (None, Some(_)) => return Err(bad("[peering] needs a [node] section".into())),
            (Some(n), p) => validate_settings(n, p.as_ref()).map_err(|e| bad(e.to_string()))?,
            _ => {}
        }
        let etcd_source = cfg
            .peering
            .as_ref()
            .filter(|p| p.source == SourceKind::Etcd);
        match (etcd_source, &cfg.etcd) {
            (Some(_), None) => {
                return Err(bad(
                    "peering.source: \"etcd\" needs an [etcd] section (endpoints = [...])".into(),
                ))
            }
            (Some(p), Some(e)) => e
                .validate(p.cluster_cidr)
                .map_err(|e| bad(e.to_string()))?,
            (None, Some(_)) => {
                return Err(bad(
                    "[etcd] is set but [peering] source is not \"etcd\"; set source = \"etcd\" or remove [etcd]".into(),
                ))
            }
            (None, None) => {}
        }
        if cfg.max_bridge_extensions > runtime_net::naming::MAX_EXTENSIONS {
            return Err(bad(format!(
                "max_bridge_extensions: {} is more than {}",
                cfg.max_bridge_extensions,
                runtime_net::naming::MAX_EXTENSIONS
            )));
        }
        if !(2..=runtime_net::netlink::BRIDGE_MAX_PORTS).contains(&cfg.bridge_ports) {
            return Err(bad(format!(
                "bridge_ports: {} is out of range 2..={}",
                cfg.bridge_ports,
                runtime_net::netlink::BRIDGE_MAX_PORTS
            )));
        }
        cfg.check_networks().map_err(bad)?;
        shimnet_dns::name::check(cfg.dns.domain.trim_end_matches('.'))
            .map_err(|e| bad(format!("dns.domain: {:?} {e}", cfg.dns.domain)))?;
        Ok(cfg)
    }

    /// With `[node]` and its `pod_cidr` (set, or leased through etcd and filled in by the
    /// daemon): the default network `shimnet0` takes `pod_cidr` as its subnet (gateway =
    /// first host) and `mtu`; with `[peering]` also, traffic to `cluster_cidr` is never
    /// masqueraded and is let in. The network is added when the configuration lacks it.
    pub fn apply_node(&mut self, mtu: Option<u32>) {
        let Some(pod_cidr) = self.node.as_ref().and_then(|n| n.pod_cidr) else {
            return;
        };
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
        n.subnet = pod_cidr.to_string();
        n.gateway = Some(std::net::Ipv4Addr::from(u32::from(pod_cidr.network()) + 1).to_string());
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

    /// Every declared network is valid on its own and clashes with no other one; the message
    /// names the key (`networks[1].gateway: ...`).
    fn check_networks(&self) -> Result<(), String> {
        let mut specs = Vec::new();
        for (i, n) in self.networks.iter().enumerate() {
            let req =
                convert::network_request(n).map_err(|e| format!("networks[{i}].{}", e.message))?;
            let spec = plan::build_spec(req)
                .map_err(|e| format!("networks[{i}].{}: {}", e.field, e.message))?;
            plan::check_clash(&spec, &specs).map_err(|c| format!("networks[{i}]: {c}"))?;
            specs.push(spec);
        }
        Ok(())
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
    use runtime_net::peering::peers::ForwardingChoice;

    #[test]
    fn declared_networks_are_checked_and_errors_name_the_key() {
        let base = "state_dir = \"/s\"\napi_socket = \"/a\"\nplugin_dir = \"/p\"\n";
        for (nets, key) in [
            ("[[networks]]\nname = \"a\"\nsubnet = \"10.0.0.0/33\"\n", "networks[0].subnet"),
            (
                "[[networks]]\nname = \"a\"\nsubnet = \"10.0.0.0/24\"\ngateway = \"10.1.0.1\"\n",
                "networks[0].gateway",
            ),
            (
                "[[networks]]\nname = \"a\"\nsubnet = \"10.0.0.0/24\"\n[[networks]]\nname = \"b\"\nsubnet = \"10.0.0.128/25\"\n",
                "networks[1]",
            ),
            ("[[networks]]\nname = \"a b\"\nsubnet = \"10.0.0.0/24\"\n", "networks[0].name"),
        ] {
            let e = Config::parse(&format!("{base}{nets}"), "t").unwrap_err().to_string();
            assert!(e.contains(key), "{key}: {e}");
        }
    }

    #[test]
    fn embedded_default_is_valid_and_avoids_docker_and_podman() {
        let c = Config::parse(EMBEDDED_DEFAULT, "embedded").unwrap();
        // Event-driven repair on, the full pass every 10 minutes as the safety net.
        assert!(c.repair_on_events);
        assert_eq!(c.reconcile_interval_secs, 600);
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
        assert_eq!(c.api.call_timeout_secs, 20);
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
        // Pod forwarding: auto by default; kernel and tc taken; anything else named.
        assert_eq!(p.forwarding, ForwardingChoice::Auto);
        let with = |v: &str| {
            text.replace(
                "cluster_cidr = \"10.0.0.0/8\"\n",
                &format!("cluster_cidr = \"10.0.0.0/8\"\nforwarding = \"{v}\"\n"),
            )
        };
        let c = Config::parse(&with("kernel"), "x").unwrap();
        assert_eq!(c.peering.unwrap().forwarding, ForwardingChoice::Kernel);
        assert_eq!(
            Config::parse(&with("tc"), "x")
                .unwrap()
                .peering
                .unwrap()
                .forwarding,
            ForwardingChoice::Tc
        );
        let e = Config::parse(&with("xdp"), "x").unwrap_err().to_string();
        assert!(e.contains("forwarding") && e.contains("xdp"), "{e}");
    }

    #[test]
    fn dns_section_defaults_and_checks() {
        let c = Config::parse(EMBEDDED_DEFAULT, "x").unwrap();
        assert_eq!(c.dns.settings(), shimnet_dns::DnsConfig::default());
        let text = format!(
            "{EMBEDDED_DEFAULT}\n[dns]\ndomain = \"ctr.example.\"\nresolv_conf = \"/tmp/r.conf\"\nttl_secs = 30\n"
        );
        let s = Config::parse(&text, "x").unwrap().dns.settings();
        assert_eq!(s.domain, "ctr.example");
        assert_eq!(s.ttl, 30);
        assert_eq!(s.resolv_conf, PathBuf::from("/tmp/r.conf"));
        let bad = format!("{EMBEDDED_DEFAULT}\n[dns]\ndomain = \"a b\"\n");
        let e = Config::parse(&bad, "x").unwrap_err().to_string();
        assert!(e.contains("dns.domain"), "{e}");
        let typo = format!("{EMBEDDED_DEFAULT}\n[dns]\ndomian = \"x\"\n");
        assert!(Config::parse(&typo, "x")
            .unwrap_err()
            .to_string()
            .contains("domian"));
    }

    #[test]
    fn etcd_membership_settings_are_checked_and_named() {
        let node = "[node]\nname = \"a\"\naddress = \"192.168.1.10\"\n";
        let peering =
            "[peering]\nmode = \"auto\"\ncluster_cidr = \"10.244.0.0/16\"\nsource = \"etcd\"\n";
        let etcd = "[etcd]\nendpoints = [\"http://198.19.9.1:2379\"]\n";
        // No pod_cidr: leased later; the default network is shaped once it is known.
        let mut c =
            Config::parse(&format!("{EMBEDDED_DEFAULT}\n{node}{peering}{etcd}"), "x").unwrap();
        let e = c.etcd.clone().unwrap();
        assert_eq!(
            (e.prefix.as_str(), e.subnet_len, e.lease_ttl_secs),
            ("/shimnet", 24, 60)
        );
        c.apply_node(Some(1450));
        assert_eq!(
            c.networks[0].subnet, "10.87.0.0/16",
            "not shaped before the lease"
        );
        c.node.as_mut().unwrap().pod_cidr = Some("10.244.7.0/24".parse().unwrap());
        c.apply_node(Some(1450));
        assert_eq!(c.networks[0].subnet, "10.244.7.0/24");
        for (text, want) in [
            (
                format!("{node}{peering}"),
                "peering.source: \"etcd\" needs an [etcd] section",
            ),
            (
                format!(
                    "{node}pod_cidr = \"10.244.1.0/24\"\n{}{etcd}",
                    peering.replace("source = \"etcd\"\n", "")
                ),
                "[etcd] is set but [peering] source is not \"etcd\"",
            ),
            (
                format!("{node}{}", peering.replace("\"etcd\"", "\"file\"")),
                "node.pod_cidr: required unless",
            ),
            (
                format!("{node}{peering}[etcd]\nendpoints = [\"198.19.9.1:2379\"]\n"),
                "etcd.endpoints[0]",
            ),
            (
                format!("{node}{peering}{etcd}subnet_len = 8\n"),
                "etcd.subnet_len",
            ),
            (format!("{node}{peering}{etcd}ttl = 5\n"), "ttl"),
            (
                format!("{}{peering}{etcd}", node.replace("\"a\"", "\"a/b\"")),
                "node.name",
            ),
        ] {
            let e = Config::parse(&format!("{EMBEDDED_DEFAULT}\n{text}"), "x")
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{want}: {e}");
        }
    }

    #[test]
    fn missing_default_path_falls_back_but_explicit_does_not() {
        let (_, origin) = Config::load(Path::new("/nonexistent/shimnetd.toml"), false).unwrap();
        assert_eq!(origin, "embedded default");
        assert!(Config::load(Path::new("/nonexistent/shimnetd.toml"), true).is_err());
    }

    #[test]
    fn a_file_sets_only_what_it_changes() {
        let default = Config::parse(EMBEDDED_DEFAULT, "embedded").unwrap();
        assert_eq!(Config::parse("", "empty").unwrap(), default);
        // The README's multi-host file: [node] and [peering] alone.
        let text = "[node]\nname = \"a\"\naddress = \"192.168.1.10\"\npod_cidr = \"10.244.1.0/24\"\n[peering]\nmode = \"auto\"\ncluster_cidr = \"10.244.0.0/16\"\npeers_file = \"/etc/shimnet/peers.toml\"\n";
        let c = Config::parse(text, "x").unwrap();
        assert_eq!(c.state_dir, default.state_dir);
        assert_eq!(c.api_socket, default.api_socket);
        assert_eq!(c.plugin_dir, default.plugin_dir);
        assert_eq!(c.networks, default.networks);
        assert_eq!(c.node.as_ref().unwrap().name, "a");
        assert_eq!(c.peering.as_ref().unwrap().vxlan_port, 4789);
        // One key of a section: the section's other keys keep their defaults.
        let c = Config::parse("[docker]\ndocker0_compat = true\n", "x").unwrap();
        assert!(c.docker.docker0_compat && c.docker.enabled);
        assert_eq!(c.docker.call_timeout_secs, 20);
        assert_eq!(c.networks, default.networks);
        let c = Config::parse("[api]\nmax_body_bytes = 4096\n", "x").unwrap();
        assert_eq!(c.api.max_body_bytes, 4096);
        assert_eq!(c.api.max_connections, ApiConfig::default().max_connections);
        let c = Config::parse("firewall = \"iptables\"\n", "x").unwrap();
        assert_eq!(c.firewall, FirewallChoice::Iptables);
        assert_eq!(c.reconcile_interval_secs, default.reconcile_interval_secs);
    }

    #[test]
    fn bridge_extensions_default_to_the_most_and_are_bounded() {
        assert_eq!(Config::parse("", "x").unwrap().max_bridge_extensions, 15);
        let c = Config::parse("max_bridge_extensions = 0\n", "x").unwrap();
        assert_eq!(c.max_bridge_extensions, 0);
        let e = Config::parse("max_bridge_extensions = 16\n", "x")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("max_bridge_extensions") && e.contains("16"),
            "{e}"
        );
        assert!(Config::parse("max_bridge_extensions = -1\n", "x").is_err());
        assert_eq!(Config::parse("", "x").unwrap().bridge_ports, 512);
        assert_eq!(
            Config::parse("bridge_ports = 16\n", "x")
                .unwrap()
                .bridge_ports,
            16
        );
        for bad in ["bridge_ports = 1\n", "bridge_ports = 1024\n"] {
            let e = Config::parse(bad, "x").unwrap_err().to_string();
            assert!(e.contains("bridge_ports"), "{e}");
        }
    }

    #[test]
    fn declared_networks_replace_the_default_network() {
        let c = Config::parse(
            "[[networks]]\nname = \"a\"\nsubnet = \"10.9.0.0/24\"\n",
            "x",
        )
        .unwrap();
        assert_eq!(c.networks.len(), 1);
        assert_eq!(c.networks[0].name, "a");
        assert!(Config::parse("networks = []\n", "x")
            .unwrap()
            .networks
            .is_empty());
    }

    #[test]
    fn errors_in_a_partial_file_point_at_its_line() {
        for (text, line, key) in [
            ("\n\nfirewal = \"auto\"\n", 3, "firewal"),
            ("[docker]\ndocker0 = true\n", 2, "docker0"),
            ("[api]\nmax_connections = -1\n", 2, "-1"),
            ("reconcile_interval_secs = \"often\"\n", 1, "often"),
            ("[node]\nname = \"a\"\n", 1, "address"),
        ] {
            let e = Config::parse(text, "f.toml").unwrap_err().to_string();
            assert!(e.starts_with("config f.toml: "), "{e}");
            assert!(e.contains(&format!("line {line},")), "{text:?}: {e}");
            assert!(e.contains(key), "{text:?}: {e}");
        }
        let e = Config::parse("[[networks]\n", "f.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 1"), "{e}");
    }
}
