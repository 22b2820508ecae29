//! CNI results: built from the daemon's endpoint record, merged with a `prevResult`, and written
//! in the shape of the requested spec version (0.3.0 to 1.1.0).

use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::cni::config::Route;
use crate::cni::error::{code, CniError};
use crate::cni::shape::{canonical, ResultShape};
use crate::cni::version::Version;
use shimnet_wire::DnsInfo;

/// What the plugin reads from the daemon's network reply (`NetworkSpec`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct NetworkInfo {
    /// Network name.
    pub name: String,
    /// Bridge device.
    pub bridge: String,
    /// MTU.
    pub mtu: u32,
}

/// What the plugin reads from the daemon's endpoint record (`EndpointRecord`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Endpoint {
    /// Host-side veth.
    pub host_ifname: String,
    /// Namespace path.
    pub netns: String,
    /// IPv4 address with prefix.
    pub ipv4: String,
    /// IPv6 address with prefix.
    #[serde(default)]
    pub ipv6: Option<String>,
    /// Container MAC.
    pub mac: String,
    /// IPv4 gateway.
    pub gateway: String,
    /// IPv6 gateway.
    #[serde(default)]
    pub gateway6: Option<String>,
    /// MTU.
    pub mtu: u32,
    /// The network's name service, when it has one (`dns` in the daemon's reply).
    #[serde(default)]
    pub dns: Option<DnsInfo>,
}

/// What the plugin reads from the reply to `POST /v1/networks/{name}/attach` (ADD in one
/// request).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct AttachReply {
    /// The network.
    pub network: NetworkInfo,
    /// The endpoint.
    pub endpoint: Endpoint,
}

/// The result's `dns`: the daemon's name service (its gateway as nameserver, its search domain)
/// first, then what the configuration's `dns` says (its servers after ours, its `domain` and
/// `options` as they are).
pub fn merge_dns(conf: Option<&Value>, ours: Option<&DnsInfo>) -> Option<Value> {
    let Some(ours) = ours else {
        return conf.cloned();
    };
    let mut out = conf.and_then(Value::as_object).cloned().unwrap_or_default();
    let list = |key: &str, first: &[String]| -> Value {
        let mut all: Vec<String> = first.to_vec();
        for v in out.get(key).and_then(Value::as_array).into_iter().flatten() {
            if let Some(s) = v.as_str().filter(|s| !all.iter().any(|a| a == s)) {
                all.push(s.to_string());
            }
        }
        json!(all)
    };
    let ns = list("nameservers", &ours.nameservers);
    let search = list("search", &ours.search);
    out.insert("nameservers".into(), ns);
    out.insert("search".into(), search);
    Some(Value::Object(out))
}

/// A result in version-neutral form: JSON objects as the spec names their keys, normalised on
/// output for the requested version.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CniResult {
    /// `interfaces`.
    pub interfaces: Vec<Value>,
    /// `ips` (`address`, `gateway`, `interface`).
    pub ips: Vec<Value>,
    /// `routes`.
    pub routes: Vec<Value>,
    /// `dns`.
    pub dns: Value,
}

fn is_v6(addr: &str) -> bool {
    addr.contains(':')
}

impl CniResult {
    /// The result of one attachment: bridge, host veth and container interface, the addresses
    /// (on the container interface), the configured routes (a default route via the gateway is
    /// added when missing: the daemon always installs it) and the configured DNS.
    pub fn from_endpoint(
        net: &NetworkInfo,
        ep: &Endpoint,
        ifname: &str,
        routes: &[Route],
        dns: Option<&Value>,
    ) -> Self {
        let interfaces = vec![
            json!({"name": net.bridge, "mtu": net.mtu}),
            json!({"name": ep.host_ifname, "mtu": ep.mtu}),
            json!({"name": ifname, "mac": ep.mac, "mtu": ep.mtu, "sandbox": ep.netns}),
        ];
        let mut ips = vec![json!({"address": ep.ipv4, "gateway": ep.gateway, "interface": 2})];
        if let Some(a6) = &ep.ipv6 {
            let mut ip = json!({"address": a6, "interface": 2});
            if let Some(g6) = &ep.gateway6 {
                ip["gateway"] = json!(g6);
            }
            ips.push(ip);
        }
        let mut out: Vec<Value> = routes
            .iter()
            .map(|r| match &r.gw {
                Some(gw) => json!({"dst": r.dst, "gw": gw}),
                None => json!({"dst": r.dst}),
            })
            .collect();
        let has = |dst: &str| routes.iter().any(|r| r.dst == dst);
        if !has("0.0.0.0/0") {
            out.push(json!({"dst": "0.0.0.0/0", "gw": ep.gateway}));
        }
        if let (Some(_), Some(g6)) = (&ep.ipv6, &ep.gateway6) {
            if !has("::/0") {
                out.push(json!({"dst": "::/0", "gw": g6}));
            }
        }
        CniResult {
            interfaces,
            ips,
            routes: out,
            dns: dns.cloned().unwrap_or_else(|| json!({})),
        }
    }

    /// Reads a `prevResult` of any supported version (0.3.0 and later), its keys matched as Go
    /// matches them.
    pub fn parse(prev: &Value) -> Result<Self, CniError> {
        if !prev.is_object() {
            return Err(CniError::new(
                code::DECODE,
                "prevResult is not a JSON object",
            ));
        }
        let prev = canonical::<ResultShape>(prev)
            .map_err(|e| CniError::new(code::DECODE, format!("prevResult.{e}")))?;
        let obj = prev.as_object().expect("a struct shape writes an object");
        let list = |k: &str| -> Result<Vec<Value>, CniError> {
            match obj.get(k) {
                None | Some(Value::Null) => Ok(Vec::new()),
                Some(Value::Array(a)) if a.iter().all(Value::is_object) => Ok(a.clone()),
                Some(_) => Err(CniError::new(
                    code::DECODE,
                    format!("prevResult.{k} is not a list of objects"),
                )),
            }
        };
        if obj.contains_key("ip4") || obj.contains_key("ip6") {
            return Err(CniError::new(
                code::INCOMPATIBLE_VERSION,
                "prevResult is in the 0.1/0.2 shape (ip4/ip6), which shimnet does not read; use cniVersion 0.3.0 or later",
            ));
        }
        Ok(CniResult {
            interfaces: list("interfaces")?,
            ips: list("ips")?,
            routes: list("routes")?,
            dns: obj.get("dns").cloned().unwrap_or_else(|| json!({})),
        })
    }

    /// `prev` followed by `ours`: our interface indexes are shifted past prev's interfaces,
    /// routes already present are not repeated, our DNS wins when it says anything.
    pub fn chain(prev: CniResult, ours: CniResult) -> CniResult {
        let shift = prev.interfaces.len() as u64;
        let mut out = prev;
        out.interfaces.extend(ours.interfaces);
        out.ips.extend(ours.ips.into_iter().map(|mut ip| {
            if let Some(i) = ip.get("interface").and_then(Value::as_u64) {
                ip["interface"] = json!(i + shift);
            }
            ip
        }));
        for r in ours.routes {
            if !out.routes.contains(&r) {
                out.routes.push(r);
            }
        }
        if ours.dns.as_object().is_some_and(|d| !d.is_empty()) {
            out.dns = ours.dns;
        }
        out
    }

    /// True if an `ips` entry has `address` (with or without checking the prefix).
    pub fn has_address(&self, address: &str) -> bool {
        self.ips
            .iter()
            .any(|ip| ip.get("address").and_then(Value::as_str) == Some(address))
    }

    /// The result in the shape of version `v`.
    pub fn to_json(&self, v: Version) -> Value {
        let keep = |obj: &Value, keys: &[&str]| -> Value {
            let mut m = Map::new();
            if let Some(o) = obj.as_object() {
                for k in keys {
                    if let Some(x) = o.get(*k).filter(|x| !x.is_null()) {
                        m.insert((*k).to_string(), x.clone());
                    }
                }
            }
            Value::Object(m)
        };
        let if_keys: &[&str] = if v >= Version::V1_1_0 {
            &["name", "mac", "mtu", "sandbox", "socketPath", "pciID"]
        } else {
            &["name", "mac", "sandbox"]
        };
        let route_keys: &[&str] = if v >= Version::V1_1_0 {
            &["dst", "gw", "mtu", "advmss", "priority", "table", "scope"]
        } else {
            &["dst", "gw"]
        };
        let ips: Vec<Value> = self
            .ips
            .iter()
            .map(|ip| {
                let mut o = keep(ip, &["address", "gateway", "interface"]);
                if v.ips_have_version() {
                    let addr = ip.get("address").and_then(Value::as_str).unwrap_or("");
                    o["version"] = json!(if is_v6(addr) { "6" } else { "4" });
                }
                o
            })
            .collect();
        json!({
            "cniVersion": v.as_str(),
            "interfaces": self.interfaces.iter().map(|i| keep(i, if_keys)).collect::<Vec<_>>(),
            "ips": ips,
            "routes": self.routes.iter().map(|r| keep(r, route_keys)).collect::<Vec<_>>(),
            "dns": keep(&self.dns, &["nameservers", "domain", "search", "options"]),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep() -> (NetworkInfo, Endpoint) {
        (
            NetworkInfo {
                name: "n".into(),
                bridge: "cni0".into(),
                mtu: 1500,
            },
            Endpoint {
                host_ifname: "snv0123456789ab".into(),
                netns: "/run/netns/c1".into(),
                ipv4: "10.5.0.2/24".into(),
                ipv6: Some("fd00:5::2/64".into()),
                mac: "02:42:0a:05:00:02".into(),
                gateway: "10.5.0.1".into(),
                gateway6: Some("fd00:5::1".into()),
                mtu: 1500,
                dns: None,
            },
        )
    }

    #[test]
    fn the_name_service_comes_first_in_dns() {
        let ours = DnsInfo {
            nameservers: vec!["10.5.0.1".into()],
            search: vec!["dns.shimnet".into()],
        };
        assert_eq!(merge_dns(None, None), None);
        let conf = json!({"nameservers": ["192.0.2.53", "10.5.0.1"], "search": ["corp"], "options": ["ndots:2"]});
        assert_eq!(merge_dns(Some(&conf), None), Some(conf.clone()));
        assert_eq!(
            merge_dns(Some(&conf), Some(&ours)).unwrap(),
            json!({"nameservers": ["10.5.0.1", "192.0.2.53"], "search": ["dns.shimnet", "corp"], "options": ["ndots:2"]})
        );
        assert_eq!(
            merge_dns(None, Some(&ours)).unwrap(),
            json!({"nameservers": ["10.5.0.1"], "search": ["dns.shimnet"]})
        );
        let e: Endpoint = serde_json::from_value(
            json!({"host_ifname": "v", "netns": "/n", "ipv4": "10.5.0.2/24",
            "mac": "02:00:00:00:00:01", "gateway": "10.5.0.1", "mtu": 1500,
            "dns": {"nameservers": ["10.5.0.1"], "search": ["dns.shimnet"]}}),
        )
        .unwrap();
        assert_eq!(e.dns, Some(ours));
    }

    #[test]
    fn shapes_by_version() {
        let (n, e) = ep();
        let r = CniResult::from_endpoint(&n, &e, "eth0", &[], None);
        let old = r.to_json(Version::V0_4_0);
        assert_eq!(old["cniVersion"], "0.4.0");
        assert_eq!(
            old["ips"][0],
            json!({"version": "4", "address": "10.5.0.2/24", "gateway": "10.5.0.1", "interface": 2})
        );
        assert_eq!(old["ips"][1]["version"], "6");
        assert!(old["interfaces"][2].get("mtu").is_none());
        let new = r.to_json(Version::V1_0_0);
        assert!(new["ips"][0].get("version").is_none());
        assert_eq!(
            new["interfaces"][2],
            json!({"name": "eth0", "mac": "02:42:0a:05:00:02", "sandbox": "/run/netns/c1"})
        );
        assert_eq!(r.to_json(Version::V1_1_0)["interfaces"][2]["mtu"], 1500);
        assert_eq!(
            new["routes"],
            json!([{"dst": "0.0.0.0/0", "gw": "10.5.0.1"}, {"dst": "::/0", "gw": "fd00:5::1"}])
        );
        assert_eq!(new["dns"], json!({}));
    }

    #[test]
    fn configured_routes_are_reported() {
        let (n, mut e) = ep();
        e.ipv6 = None;
        let routes = [Route {
            dst: "0.0.0.0/0".into(),
            gw: None,
        }];
        let r = CniResult::from_endpoint(
            &n,
            &e,
            "eth0",
            &routes,
            Some(&json!({"nameservers": ["10.5.0.1"]})),
        );
        assert_eq!(
            r.to_json(Version::V1_0_0)["routes"],
            json!([{"dst": "0.0.0.0/0"}])
        );
        assert_eq!(
            r.to_json(Version::V1_0_0)["dns"]["nameservers"][0],
            "10.5.0.1"
        );
    }

    #[test]
    fn chaining_shifts_interfaces() {
        let (n, e) = ep();
        let prev = CniResult::parse(&json!({"cniVersion": "1.0.0", "interfaces": [{"name": "dummy0"}],
            "ips": [{"address": "192.0.2.5/24", "interface": 0}], "routes": [{"dst": "0.0.0.0/0", "gw": "10.5.0.1"}]})).unwrap();
        let ours = CniResult::from_endpoint(&n, &e, "eth0", &[], None);
        let out = CniResult::chain(prev, ours).to_json(Version::V1_0_0);
        assert_eq!(out["interfaces"].as_array().unwrap().len(), 4);
        assert_eq!(out["ips"][1]["interface"], 3);
        assert_eq!(
            out["routes"].as_array().unwrap().len(),
            2,
            "default route not repeated"
        );
        assert_eq!(CniResult::parse(&json!({"ip4": {}})).unwrap_err().code, 1);
        assert_eq!(CniResult::parse(&json!({"ips": 3})).unwrap_err().code, 6);
    }
}
