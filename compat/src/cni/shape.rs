//! The shapes of CNI's Go result types (`types100.Result`, `Interface`, `IPConfig`, `Route`,
//! `DNS`, and the 0.1/0.2 `ip4`/`ip6` markers), so that a `prevResult`, a delegated IPAM plugin's
//! result or a `dns` section sent with Go's key casing reads like the spec's. Decoding through
//! them (with `gojson`) and writing them back out yields the same JSON with every known key in the
//! spec's spelling; unknown keys are dropped, as Go drops them. Leaves stay `Value`s: what they
//! must hold is checked where they are used.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `types100.Result` (and the 0.x markers).
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ResultShape {
    #[serde(skip_serializing_if = "Option::is_none")]
    cni_version: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    interfaces: Option<Vec<InterfaceShape>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ips: Option<Vec<IpShape>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    routes: Option<Vec<RouteShape>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dns: Option<DnsShape>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ip4: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ip6: Option<Value>,
}

/// `types100.Interface`.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default, rename_all = "camelCase")]
struct InterfaceShape {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mac: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mtu: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sandbox: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    socket_path: Option<Value>,
    #[serde(rename = "pciID", skip_serializing_if = "Option::is_none")]
    pci_id: Option<Value>,
}

/// `types100.IPConfig` (and 0.4's `version`).
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default)]
struct IpShape {
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    interface: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    address: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gateway: Option<Value>,
}

/// `types.Route`.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default)]
struct RouteShape {
    #[serde(skip_serializing_if = "Option::is_none")]
    dst: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gw: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mtu: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    advmss: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    priority: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    table: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<Value>,
}

/// `types.DNS`.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct DnsShape {
    #[serde(skip_serializing_if = "Option::is_none")]
    nameservers: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    domain: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    search: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    options: Option<Value>,
}

/// `v` read as Go reads a `T` and written back with the spec's key spelling.
pub fn canonical<T: for<'de> Deserialize<'de> + Serialize>(
    v: &Value,
) -> Result<Value, gojson::Error> {
    let shaped: T = gojson::from_value(v)?;
    Ok(serde_json::to_value(shaped).unwrap_or(Value::Null))
}

/// serde `deserialize_with` for a `dns` section kept as a `Value`.
pub fn dns<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    let shaped = Option::<DnsShape>::deserialize(d)?;
    Ok(shaped.map(|s| serde_json::to_value(s).unwrap_or(Value::Null)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn go_cased_result_reads_as_the_spec_spells_it() {
        let v = json!({"CNIVersion": "1.0.0", "Interfaces": [{"Name": "eth0", "Sandbox": "/x", "PciId": "p"}],
            "IPs": [{"Address": "10.0.0.2/24", "Interface": 0}], "Routes": [{"Dst": "0.0.0.0/0", "GW": "10.0.0.1"}],
            "DNS": {"Nameservers": ["10.0.0.1"]}, "Junk": 1});
        assert_eq!(
            canonical::<ResultShape>(&v).unwrap(),
            json!({"cniVersion": "1.0.0", "interfaces": [{"name": "eth0", "sandbox": "/x", "pciID": "p"}],
                "ips": [{"address": "10.0.0.2/24", "interface": 0}], "routes": [{"dst": "0.0.0.0/0", "gw": "10.0.0.1"}],
                "dns": {"nameservers": ["10.0.0.1"]}})
        );
        let e = canonical::<ResultShape>(&json!({"ips": 3})).unwrap_err();
        assert_eq!(e.path(), "ips");
    }
}
