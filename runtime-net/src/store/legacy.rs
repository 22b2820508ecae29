//! Reading records written by earlier versions of shimnet, so that an existing state directory
//! keeps working after an upgrade (no schema bump: older binaries read the new records too, they
//! ignore fields they do not know).
//!
//! - Endpoint records before the endpoint kind was recorded: the kind was inferred from the
//!   interface name. Prepared endpoints were keyed by the bare interface name `eth` (a name no
//!   managed endpoint is given by default), so a record without `kind` is [`EndpointKind::Prepared`]
//!   when its `ifname` is `eth`, else [`EndpointKind::Managed`].
//! - Network records before the MAC prefix was recorded: a boolean chose the `02:42` prefix over
//!   the default `0a:58`. Its on-disk name is the name of the front door that introduced it; it is
//!   read here and nowhere else (the shape test's one allowlisted file).

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};
use serde::Deserialize;

use crate::types::{
    EndpointKey, EndpointKind, EndpointRecord, HostName, IfName, MacAddr, MacPrefix, NetworkName,
    NetworkSpec, PortMapping,
};

/// Interface name that marked a prepared endpoint before the kind was recorded.
const PREPARED_IFNAME: &str = "eth";

/// The MAC prefix chosen by the boolean of old network records.
const OLD_FLAG_PREFIX: MacPrefix = MacPrefix([0x02, 0x42]);

/// A network record as any version wrote it.
#[derive(Deserialize)]
pub struct StoredNetwork {
    name: NetworkName,
    bridge: IfName,
    subnet: Ipv4Network,
    gateway: Ipv4Addr,
    #[serde(default)]
    range4: Option<(Ipv4Addr, Ipv4Addr)>,
    #[serde(default)]
    subnet6: Option<Ipv6Network>,
    #[serde(default)]
    gateway6: Option<Ipv6Addr>,
    mtu: u32,
    masquerade: bool,
    icc: bool,
    internal: bool,
    hairpin: bool,
    #[serde(default)]
    no_masquerade_to: Vec<IpNetwork>,
    #[serde(default)]
    allow_from: Vec<IpNetwork>,
    #[serde(default)]
    host_binding_ipv4: Option<Ipv4Addr>,
    #[serde(default)]
    mac_prefix: Option<MacPrefix>,
    /// Before `mac_prefix`: true for `02:42`.
    #[serde(default)]
    docker_mac: bool,
    /// Absent before name resolution existed: off.
    #[serde(default)]
    dns: bool,
}

impl From<StoredNetwork> for NetworkSpec {
    fn from(s: StoredNetwork) -> Self {
        NetworkSpec {
            name: s.name,
            bridge: s.bridge,
            subnet: s.subnet,
            gateway: s.gateway,
            range4: s.range4,
            subnet6: s.subnet6,
            gateway6: s.gateway6,
            mtu: s.mtu,
            masquerade: s.masquerade,
            icc: s.icc,
            internal: s.internal,
            hairpin: s.hairpin,
            no_masquerade_to: s.no_masquerade_to,
            allow_from: s.allow_from,
            host_binding_ipv4: s.host_binding_ipv4,
            mac_prefix: s.mac_prefix.unwrap_or(if s.docker_mac {
                OLD_FLAG_PREFIX
            } else {
                MacPrefix::LOCAL
            }),
            dns: s.dns,
        }
    }
}

/// An endpoint record as any version wrote it.
#[derive(Deserialize)]
pub struct StoredEndpoint {
    key: EndpointKey,
    #[serde(default)]
    kind: Option<EndpointKind>,
    netns: PathBuf,
    host_ifname: IfName,
    ipv4: Ipv4Network,
    #[serde(default)]
    ipv6: Option<Ipv6Network>,
    mac: MacAddr,
    gateway: Ipv4Addr,
    #[serde(default)]
    gateway6: Option<Ipv6Addr>,
    mtu: u32,
    #[serde(default)]
    ports: Vec<PortMapping>,
    /// Absent before name resolution existed: none.
    #[serde(default)]
    names: Vec<HostName>,
    /// Absent before extension bridges existed (and for endpoints on the main bridge).
    #[serde(default)]
    extension: Option<u8>,
}

impl From<StoredEndpoint> for EndpointRecord {
    fn from(s: StoredEndpoint) -> Self {
        let kind = s
            .kind
            .unwrap_or(if s.key.ifname.as_str() == PREPARED_IFNAME {
                EndpointKind::Prepared
            } else {
                EndpointKind::Managed
            });
        EndpointRecord {
            key: s.key,
            kind,
            netns: s.netns,
            host_ifname: s.host_ifname,
            ipv4: s.ipv4,
            ipv6: s.ipv6,
            mac: s.mac,
            gateway: s.gateway,
            gateway6: s.gateway6,
            mtu: s.mtu,
            ports: s.ports,
            names: s.names,
            extension: s.extension,
        }
    }
}

/// Turning a state directory back into what an older version wrote (tests of the engine).
#[cfg(test)]
pub(crate) mod tests_support {
    use std::path::Path;

    use redb::{ReadableDatabase, ReadableTable};

    use super::super::schema::{ENDPOINTS, NETWORKS};
    use super::super::DB_FILE;

    fn rewrite(
        txn: &redb::WriteTransaction,
        def: redb::TableDefinition<&str, &str>,
        f: impl Fn(&mut serde_json::Map<String, serde_json::Value>),
    ) {
        let mut t = txn.open_table(def).unwrap();
        let rows: Vec<(String, String)> = t
            .iter()
            .unwrap()
            .map(|r| {
                let (k, v) = r.unwrap();
                (k.value().to_string(), v.value().to_string())
            })
            .collect();
        for (k, v) in rows {
            let mut obj: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(&v).unwrap();
            f(&mut obj);
            t.insert(k.as_str(), serde_json::to_string(&obj).unwrap().as_str())
                .unwrap();
        }
    }

    /// Drops every endpoint's `kind` and turns every network's MAC prefix into the old flag
    /// (set), as records looked before either was recorded.
    pub(crate) fn rewrite_as_old(dir: &Path) {
        let db = redb::Database::open(dir.join(DB_FILE)).unwrap();
        let txn = db.begin_write().unwrap();
        rewrite(&txn, ENDPOINTS, |o| {
            o.remove("kind");
        });
        rewrite(&txn, NETWORKS, |o| {
            o.remove("mac_prefix");
            o.insert(OLD_FLAG.into(), true.into());
        });
        txn.commit().unwrap();
        let _ = db.begin_read();
    }

    const OLD_FLAG: &str = "docker_mac";
}

#[cfg(test)]
mod tests {
    use super::*;

    const OLD_NETWORK: &str = r#"{"name":"n1","bridge":"br-n1","subnet":"10.230.0.0/24","gateway":"10.230.0.1","mtu":1500,"masquerade":true,"icc":true,"internal":false,"hairpin":true,"docker_mac":true}"#;

    fn old_endpoint(ifname: &str) -> String {
        format!(
            r#"{{"key":{{"network":"n1","container_id":"c1","ifname":"{ifname}"}},"netns":"/proc/self/ns/net","host_ifname":"snv000000000001","ipv4":"10.230.0.2/24","mac":"02:42:0a:e6:00:02","gateway":"10.230.0.1","mtu":1500}}"#
        )
    }

    #[test]
    fn old_records_get_their_kind_from_the_interface_name() {
        let r: EndpointRecord = serde_json::from_str(&old_endpoint("eth")).unwrap();
        assert_eq!(r.kind, EndpointKind::Prepared);
        let r: EndpointRecord = serde_json::from_str(&old_endpoint("eth0")).unwrap();
        assert_eq!(r.kind, EndpointKind::Managed);
        // Written back, the kind is recorded and wins over the name.
        let mut r: EndpointRecord = serde_json::from_str(&old_endpoint("eth")).unwrap();
        r.kind = EndpointKind::Managed;
        let again: EndpointRecord =
            serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(again.kind, EndpointKind::Managed);
    }

    #[test]
    fn old_networks_keep_their_mac_prefix() {
        let n: NetworkSpec = serde_json::from_str(OLD_NETWORK).unwrap();
        assert_eq!(n.mac_prefix.to_string(), "02:42");
        let plain = OLD_NETWORK.replace(r#","docker_mac":true"#, "");
        let n: NetworkSpec = serde_json::from_str(&plain).unwrap();
        assert_eq!(n.mac_prefix, MacPrefix::LOCAL);
        let text = serde_json::to_string(&n).unwrap();
        assert!(text.contains(r#""mac_prefix":"0a:58""#), "{text}");
        assert_eq!(serde_json::from_str::<NetworkSpec>(&text).unwrap(), n);
    }
}
