//! Option translation tests, using the recorded CreateNetwork bodies.

use super::*;
use crate::docker::wire::{decode, Call};
use serde_json::json;

const ID: &str = "2d2c3363a68186d56fdc2a78f451bb5dc77dc13360e7b7e904dad96845f79978";

fn create(body: Value) -> CreateNetwork {
    match decode(
        "/NetworkDriver.CreateNetwork",
        &serde_json::to_vec(&body).unwrap(),
    )
    .unwrap()
    {
        Call::CreateNetwork(c) => c,
        other => panic!("{other:?}"),
    }
}

fn recorded(name: &str) -> Value {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/docker-20.10-remote-driver")
        .join(name);
    let v: Value = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
    v["request"].clone()
}

#[test]
fn recorded_network_with_icc_off_and_mtu() {
    let r = network_request(&create(recorded("07_NetworkDriver.CreateNetwork.json"))).unwrap();
    assert_eq!(r.name.as_str(), ID);
    assert_eq!(r.subnet.to_string(), "10.230.0.0/24");
    assert_eq!(r.gateway, Some("10.230.0.1".parse().unwrap()));
    assert_eq!(r.icc, Some(false));
    assert_eq!(r.mtu, Some(1400));
    assert_eq!(r.internal, Some(false));
    assert_eq!(r.bridge.unwrap().as_str(), "br-2d2c3363a681");
    assert_eq!(r.mac_prefix, Some(crate::docker::conventions::MAC_PREFIX));
    assert_eq!(r.subnet6, None);
}

#[test]
fn recorded_internal_ipv6_network() {
    let r = network_request(&create(recorded("26_NetworkDriver.CreateNetwork.json"))).unwrap();
    assert_eq!(r.internal, Some(true));
    assert_eq!(r.subnet6.unwrap().to_string(), "fd00:231::/64");
    assert_eq!(r.gateway6, Some("fd00:231::1".parse().unwrap()));
}

#[test]
fn generic_options_are_honoured() {
    let r = network_request(&create(json!({
        "NetworkID": ID,
        "Options": {"com.docker.network.generic": {
            "com.docker.network.bridge.name": "mybr0",
            "com.docker.network.bridge.enable_ip_masquerade": "false",
            "com.docker.network.bridge.enable_icc": true,
            "com.docker.network.bridge.host_binding_ipv4": "127.0.0.1",
            "com.docker.network.driver.mtu": "9000"
        }},
        "IPv4Data": [{"Pool": "10.9.0.0/16", "Gateway": "10.9.0.254/16", "AuxAddresses": {"r": "10.9.0.3/16"}}]
    })))
    .unwrap();
    assert_eq!(r.bridge.unwrap().as_str(), "mybr0");
    assert_eq!(r.masquerade, Some(false));
    assert_eq!(r.icc, Some(true));
    assert_eq!(r.host_binding_ipv4, Some("127.0.0.1".parse().unwrap()));
    assert_eq!(r.mtu, Some(9000));
    assert_eq!(r.gateway, Some("10.9.0.254".parse().unwrap()));
}

#[test]
fn bad_options_name_the_field() {
    let bad = |opts: Value, v4: Value| {
        network_request(&create(
            json!({"NetworkID": ID, "Options": opts, "IPv4Data": v4}),
        ))
        .unwrap_err()
        .field
    };
    let v4 = json!([{"Pool": "10.9.0.0/16"}]);
    assert_eq!(
        bad(
            json!({"com.docker.network.generic": {"com.docker.network.driver.mtu": "big"}}),
            v4.clone()
        ),
        "Options.com.docker.network.generic.com.docker.network.driver.mtu"
    );
    assert_eq!(
        bad(
            json!({"com.docker.network.generic": {"com.docker.network.bridge.name": "a-very-long-bridge-name"}}),
            v4.clone()
        ),
        "Options.com.docker.network.generic.com.docker.network.bridge.name"
    );
    assert_eq!(
        bad(
            json!({"com.docker.network.generic": {"com.docker.network.bridge.enable_icc": "sometimes"}}),
            v4.clone()
        ),
        "Options.com.docker.network.generic.com.docker.network.bridge.enable_icc"
    );
    assert_eq!(bad(json!({}), json!([])), "IPv4Data");
    assert_eq!(
        bad(json!({}), json!([{"Pool": "fd00::/64"}])),
        "IPv4Data[0].Pool"
    );
    assert_eq!(
        bad(
            json!({}),
            json!([{"Pool": "10.9.0.0/16", "AuxAddresses": {"x": "10.10.0.1/16"}}])
        ),
        "IPv4Data[0].AuxAddresses.x"
    );
    assert_eq!(
        bad(json!({"com.docker.network.enable_ipv6": true}), v4),
        "IPv6Data"
    );
}

#[test]
fn port_maps_resolve_protocols_and_ranges() {
    let b = |proto, host_port, host_port_end| PortBinding {
        proto,
        port: 80,
        host_ip: None,
        host_port,
        host_port_end,
    };
    let r = port_requests(&[
        b(6, 8080, 8080),
        b(17, 5000, 5010),
        b(132, 0, 0),
        b(6, 9000, 0),
    ])
    .unwrap();
    assert_eq!(r[0].protocol, Protocol::Tcp);
    assert_eq!(r[0].host_ports, 8080..=8080);
    assert_eq!(r[1].protocol, Protocol::Udp);
    assert_eq!(r[1].host_ports, 5000..=5010);
    assert_eq!(r[2].protocol, Protocol::Sctp);
    assert_eq!(r[2].host_ports, EPHEMERAL_PORTS);
    assert_eq!(r[3].host_ports, 9000..=9000);
    assert_eq!(
        port_requests(&[b(1, 80, 80)]).unwrap_err().field,
        "Options.com.docker.network.portmap[0].Proto"
    );
    assert_eq!(
        port_requests(&[b(6, 90, 80)]).unwrap_err().field,
        "Options.com.docker.network.portmap[0].HostPortEnd"
    );
}

#[test]
fn subnets_are_picked_around_taken_ones() {
    let bases = vec![("10.1.0.0/23".parse().unwrap(), 24u8)];
    assert_eq!(
        pick_subnet(&bases, &[]),
        Some("10.1.0.0/24".parse().unwrap())
    );
    let taken = vec!["10.1.0.128/25".parse().unwrap()];
    assert_eq!(
        pick_subnet(&bases, &taken),
        Some("10.1.1.0/24".parse().unwrap())
    );
    let taken = vec!["10.0.0.0/8".parse().unwrap()];
    assert_eq!(pick_subnet(&bases, &taken), None);
    assert_eq!(
        pick_subnet(&docker_default_pools(), &["172.17.0.0/16".parse().unwrap()]),
        Some("172.18.0.0/16".parse().unwrap())
    );
}
