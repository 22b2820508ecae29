//! JSON reply bodies of the plugin protocols, with dockerd's exact field names (pure).

use std::net::IpAddr;

use ipnetwork::IpNetwork;
use runtime_net::{EndpointRecord, NetworkSpec, PortMapping, Protocol};
use serde_json::{json, Map, Value};
use shimnet_compat::docker::wire::Call;

/// Address space names reported by `GetDefaultAddressSpaces`.
pub const LOCAL_ADDRESS_SPACE: &str = "shimnet-local";
/// Global address space name.
pub const GLOBAL_ADDRESS_SPACE: &str = "shimnet-global";

/// Replies of the calls that need no engine (`None` for the others).
pub fn without_engine(call: &Call) -> Option<Value> {
    Some(match call {
        Call::Activate => json!({"Implements": ["NetworkDriver", "IpamDriver"]}),
        Call::NetCapabilities => json!({"Scope": "local", "ConnectivityScope": "local"}),
        Call::IpamCapabilities => {
            // Pools and addresses are persistent: nothing needs replaying after a restart.
            json!({"RequiresMACAddress": false, "RequiresRequestReplay": false})
        }
        Call::DefaultAddressSpaces => json!({
            "LocalDefaultAddressSpace": LOCAL_ADDRESS_SPACE,
            "GlobalDefaultAddressSpace": GLOBAL_ADDRESS_SPACE
        }),
        Call::AllocateNetwork { .. } => json!({"Options": {}}),
        Call::FreeNetwork { .. } | Call::DiscoverNew | Call::DiscoverDelete => json!({}),
        _ => return None,
    })
}

/// CreateEndpoint: only what dockerd left empty (dockerd fails the endpoint if a value it sent
/// comes back changed).
pub fn create_endpoint(
    rec: &EndpointRecord,
    sent_address: bool,
    sent_address6: bool,
    sent_mac: bool,
) -> Value {
    let mut iface = Map::new();
    if !sent_address {
        iface.insert("Address".into(), json!(rec.ipv4.to_string()));
    }
    if !sent_address6 {
        if let Some(a6) = rec.ipv6 {
            iface.insert("AddressIPv6".into(), json!(a6.to_string()));
        }
    }
    if !sent_mac {
        iface.insert("MacAddress".into(), json!(rec.mac.to_string()));
    }
    if iface.is_empty() {
        json!({})
    } else {
        json!({ "Interface": iface })
    }
}

/// Join: the prepared interface and (unless the network is internal) the gateways.
pub fn join(spec: &NetworkSpec, rec: &EndpointRecord, src_name: &str, dst_prefix: &str) -> Value {
    let mut v = json!({
        "InterfaceName": {"SrcName": src_name, "DstPrefix": dst_prefix},
        "DisableGatewayService": false,
    });
    if !spec.internal {
        v["Gateway"] = json!(rec.gateway.to_string());
        if let Some(g6) = rec.gateway6 {
            v["GatewayIPv6"] = json!(g6.to_string());
        }
    }
    v
}

fn proto_number(p: Protocol) -> u8 {
    match p {
        Protocol::Tcp => 6,
        Protocol::Udp => 17,
        Protocol::Sctp => 132,
    }
}

/// One port binding in dockerd's `types.PortBinding` shape.
pub fn port_binding(ip: IpAddr, p: &PortMapping) -> Value {
    json!({
        "Proto": proto_number(p.protocol),
        "IP": ip.to_string(),
        "Port": p.container_port,
        "HostIP": p.host_ip.map(|h| h.to_string()).unwrap_or_else(|| "0.0.0.0".into()),
        "HostPort": p.host_port,
        "HostPortEnd": p.host_port,
    })
}

/// EndpointOperInfo: MAC and the published ports as they were chosen.
pub fn oper_info(rec: Option<&EndpointRecord>) -> Value {
    let Some(rec) = rec else {
        return json!({"Value": {}});
    };
    let ip = IpAddr::V4(rec.ipv4.ip());
    let ports: Vec<Value> = rec.ports.iter().map(|p| port_binding(ip, p)).collect();
    json!({"Value": {
        "com.docker.network.endpoint.macaddress": rec.mac.to_string(),
        "com.docker.network.portmap": ports,
    }})
}

/// RequestPool.
pub fn request_pool(id: &str, pool: IpNetwork) -> Value {
    json!({"PoolID": id, "Pool": pool.to_string(), "Data": {}})
}

/// RequestAddress: the address with the pool's prefix.
pub fn request_address(ip: IpAddr, prefix: u8) -> Value {
    json!({"Address": format!("{ip}/{prefix}"), "Data": {}})
}
