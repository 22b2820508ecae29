//! The network configuration on the plugin's stdin: every key of the reference `bridge` plugin,
//! its `ipam` section (host-local style or another plugin's), the runtime's `runtimeConfig` and
//! `args`, `prevResult`, and shimnet's own keys (`daemonSocket`, `network`).
//!
//! Keys are matched as Go's `encoding/json` matches them (the `gojson` crate): exactly, else
//! case-insensitively, the last duplicate winning. Unknown keys are ignored, as CNI plugins
//! conventionally do; a known key of the wrong type, or a required one missing, is an invalid
//! configuration (code 7) naming the key.

use serde::Deserialize;
use serde_json::Value;

use crate::cni::error::{code, CniError};

/// One plugin's configuration (as libcni hands it to the plugin).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct NetConf {
    /// Spec version of this configuration.
    pub cni_version: Option<String>,
    /// Versions the configuration supports (1.1.0 conflists), for negotiation.
    pub cni_versions: Vec<String>,
    /// Network name; also the shimnet network name unless `network` is given.
    pub name: String,
    /// Plugin type (`shimnet`).
    #[serde(rename = "type")]
    pub plugin_type: String,
    /// shimnet: the daemon's API socket (default `/run/shimnet/shimnetd.sock`).
    pub daemon_socket: Option<String>,
    /// shimnet: attach to this existing daemon network instead of ensuring one from the config.
    pub network: Option<String>,
    /// Bridge name (default `cni0`).
    pub bridge: Option<String>,
    /// Reference: put the gateway address on the bridge. shimnet always does.
    pub is_gateway: Option<bool>,
    /// Reference: default route via the bridge. shimnet always installs it.
    pub is_default_gateway: Option<bool>,
    /// Reference: replace a differing bridge address. Accepted, no effect.
    pub force_address: Option<bool>,
    /// Masquerade traffic leaving the host (default false, as in the reference plugin).
    pub ip_masq: Option<bool>,
    /// Reference: `iptables` or `nftables`. shimnet uses the daemon's backend.
    pub ip_masq_backend: Option<String>,
    /// MTU of the bridge and veths.
    pub mtu: Option<u32>,
    /// Hairpin mode on the bridge ports.
    pub hairpin_mode: Option<bool>,
    /// Reference: promiscuous bridge. Accepted, no effect (hairpin works without it).
    pub promisc_mode: Option<bool>,
    /// Reference: VLAN tag of the container's port. Not supported (non-zero refused).
    pub vlan: Option<u32>,
    /// Reference: VLAN trunk. Not supported (refused when non-empty).
    pub vlan_trunk: Option<Value>,
    /// Reference: keep the default VLAN. Accepted, no effect (no VLANs are configured).
    pub preserve_default_vlan: Option<bool>,
    /// Reference: MAC spoof check. Not supported (true refused).
    pub macspoofchk: Option<bool>,
    /// Reference: IPv6 duplicate address detection. Accepted, no effect.
    pub enabledad: Option<bool>,
    /// Reference: no container interface at all. Not supported (true refused).
    pub disable_container_interface: Option<bool>,
    /// Reference: isolate bridge ports from each other (maps to shimnet's `icc = false`).
    pub port_isolation: Option<bool>,
    /// Address management.
    pub ipam: Option<Ipam>,
    /// DNS settings passed through into the result (keys as the spec spells them).
    #[serde(deserialize_with = "crate::cni::shape::dns")]
    pub dns: Option<Value>,
    /// Runtime-provided capabilities.
    pub runtime_config: RuntimeConfig,
    /// Runtime arguments (`args.cni.ips`, `args.cni.mac`).
    pub args: Option<Args>,
    /// The previous plugin's result in a chain.
    pub prev_result: Option<Value>,
    /// GC: attachments that must be kept.
    #[serde(rename = "cni.dev/valid-attachments")]
    pub valid_attachments: Vec<Attachment>,
}

/// The `ipam` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Ipam {
    /// IPAM plugin type: `host-local` (or empty) is served by the daemon; others are delegated.
    #[serde(rename = "type")]
    pub kind: String,
    /// Legacy single-range form: subnet.
    pub subnet: Option<String>,
    /// Legacy single-range form: first address handed out.
    pub range_start: Option<String>,
    /// Legacy single-range form: last address handed out.
    pub range_end: Option<String>,
    /// Legacy single-range form: gateway.
    pub gateway: Option<String>,
    /// Range sets: one per address family.
    pub ranges: Vec<Vec<Range>>,
    /// Routes to report (and to require: see the translation).
    pub routes: Vec<Route>,
    /// host-local's state folder; unused (the daemon keeps state).
    pub data_dir: Option<String>,
}

/// One host-local range.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Range {
    /// Subnet (CIDR).
    pub subnet: String,
    /// First address handed out.
    pub range_start: Option<String>,
    /// Last address handed out.
    pub range_end: Option<String>,
    /// Gateway.
    pub gateway: Option<String>,
}

/// A route in `ipam.routes`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Route {
    /// Destination (CIDR).
    pub dst: String,
    /// Next hop; the gateway when absent.
    pub gw: Option<String>,
}

/// `runtimeConfig`: values for the capabilities shimnet declares.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RuntimeConfig {
    /// `portMappings`.
    pub port_mappings: Vec<PortMap>,
    /// `ips`: static addresses.
    pub ips: Vec<String>,
    /// `mac`: static MAC.
    pub mac: Option<String>,
    /// `ipRanges`: range sets replacing `ipam.ranges`.
    pub ip_ranges: Vec<Vec<Range>>,
}

/// One port mapping.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMap {
    /// Host port (required: a missing one is reported as missing, not as port 0).
    pub host_port: u16,
    /// Container port (required).
    pub container_port: u16,
    /// `tcp`, `udp` or `sctp`.
    #[serde(default)]
    pub protocol: String,
    /// Host address; all when empty.
    #[serde(rename = "hostIP", default)]
    pub host_ip: String,
}

/// `args`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Args {
    /// `args.cni`.
    pub cni: ArgsCni,
}

/// `args.cni`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ArgsCni {
    /// Static addresses.
    pub ips: Vec<String>,
    /// Static MAC.
    pub mac: Option<String>,
}

/// One entry of `cni.dev/valid-attachments`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Attachment {
    /// Container id.
    #[serde(rename = "containerID")]
    pub container_id: String,
    /// Interface name.
    pub ifname: String,
}

/// A key of the wrong type, or a required value missing: code 7 naming the key by its path.
fn invalid(e: gojson::Error) -> CniError {
    CniError::config(format!(
        "invalid network configuration: key {e}; fix that key"
    ))
}

impl NetConf {
    /// Decodes stdin as Go's `encoding/json` would (keys in any case, the last duplicate wins:
    /// go-cni writes `runtimeConfig.portMappings` as `HostPort`, `ContainerPort`, ...): invalid JSON is code 6, a known key of the wrong type code 7.
    pub fn parse(stdin: &[u8]) -> Result<(Value, NetConf), CniError> {
        let raw: Value = serde_json::from_slice(stdin).map_err(|e| {
            CniError::new(
                code::DECODE,
                "the network configuration on stdin is not valid JSON",
            )
            .with_details(e.to_string())
        })?;
        if !raw.is_object() {
            return Err(CniError::new(
                code::DECODE,
                "the network configuration on stdin must be a JSON object",
            ));
        }
        let conf = gojson::from_slice(stdin).map_err(invalid)?;
        Ok((raw, conf))
    }

    /// Decodes an already parsed configuration object (code 7 on a mistyped key). Prefer
    /// [`NetConf::parse`]: only the bytes tell which of two keys differing in case came last.
    pub fn from_value(raw: &Value) -> Result<NetConf, CniError> {
        gojson::from_value(raw).map_err(invalid)
    }

    /// The daemon socket to use.
    pub fn socket(&self) -> &str {
        self.daemon_socket
            .as_deref()
            .filter(|s| !s.is_empty())
            .unwrap_or(shimnet_wire::DEFAULT_API_SOCKET)
    }

    /// The IPAM plugin type to delegate to, if it is not host-local style.
    pub fn delegated_ipam(&self) -> Option<&str> {
        self.ipam
            .as_ref()
            .map(|i| i.kind.as_str())
            .filter(|k| !k.is_empty() && *k != "host-local" && *k != "shimnet")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_errors() {
        assert_eq!(NetConf::parse(b"{nope").unwrap_err().code, 6);
        assert_eq!(NetConf::parse(b"[1]").unwrap_err().code, 6);
        let e = NetConf::parse(br#"{"name":"n","mtu":"big"}"#).unwrap_err();
        assert_eq!(e.code, 7);
        assert!(e.msg.contains("invalid type"), "{e}");
    }

    #[test]
    fn keys_and_defaults() {
        let (_, c) = NetConf::parse(
            br#"{"cniVersion":"1.0.0","name":"n","type":"shimnet","unknownKey":1,
                 "ipam":{"type":"static","addresses":[{"address":"10.0.0.5/24"}]},
                 "runtimeConfig":{"portMappings":[{"hostPort":80,"containerPort":8080,"protocol":"tcp","hostIP":""}]},
                 "cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"}]}"#,
        )
        .unwrap();
        assert_eq!(c.socket(), "/run/shimnet/shimnetd.sock");
        assert_eq!(c.delegated_ipam(), Some("static"));
        assert_eq!(c.runtime_config.port_mappings[0].container_port, 8080);
        assert_eq!(c.valid_attachments[0].container_id, "a");
    }
}

#[cfg(test)]
mod go_tests {
    use super::*;

    #[test]
    fn go_cased_keys_decode() {
        let (_, c) = NetConf::parse(
            br#"{"cniVersion":"1.0.0","name":"n","type":"shimnet",
                 "runtimeConfig":{"portMappings":[{"HostPort":18090,"ContainerPort":8080,"Protocol":"tcp","HostIP":""}]}}"#,
        )
        .unwrap();
        assert_eq!(
            c.runtime_config.port_mappings,
            vec![PortMap {
                host_port: 18090,
                container_port: 8080,
                protocol: "tcp".into(),
                host_ip: String::new()
            }]
        );
    }

    #[test]
    fn missing_port_is_missing() {
        let e = NetConf::parse(
            br#"{"name":"n","runtimeConfig":{"portMappings":[{"containerPort":80}]}}"#,
        )
        .unwrap_err();
        assert_eq!(e.code, 7);
        assert!(
            e.msg
                .contains("runtimeConfig.portMappings[0].hostPort: missing"),
            "{e}"
        );
    }
}
