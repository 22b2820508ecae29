//! Golden tests: every request dockerd 20.10 sent (recorded) decodes; malformed bodies are refused
//! naming the field.

use super::*;
use serde_json::json;

fn fixtures() -> Vec<(String, Value)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/docker-20.10-remote-driver");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let v: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
            (p.file_name().unwrap().to_string_lossy().into_owned(), v)
        })
        .collect()
}

fn decode_json(path: &str, v: Value) -> Result<Call, DecodeError> {
    decode(path, &serde_json::to_vec(&v).unwrap())
}

fn field_of(r: Result<Call, DecodeError>) -> String {
    match r {
        Err(DecodeError::Invalid(e)) => e.field,
        other => panic!("expected a field error, got {other:?}"),
    }
}

#[test]
fn every_recorded_request_decodes() {
    let all = fixtures();
    assert_eq!(all.len(), 31);
    for (name, f) in all {
        let path = f["path"].as_str().unwrap();
        let call =
            decode_json(path, f["request"].clone()).unwrap_or_else(|e| panic!("{name}: {e:?}"));
        // Spot checks of the values that matter.
        match (&*name, call) {
            ("07_NetworkDriver.CreateNetwork.json", Call::CreateNetwork(c)) => {
                assert_eq!(c.ipv4[0].pool.to_string(), "10.230.0.0/24");
                assert_eq!(c.ipv4[0].gateway.unwrap().to_string(), "10.230.0.1/24");
                assert!(c.ipv6.is_empty());
            }
            ("09_NetworkDriver.CreateEndpoint.json", Call::CreateEndpoint(c)) => {
                assert_eq!(c.address.unwrap().to_string(), "10.230.0.2/24");
                assert_eq!(c.mac, None);
                assert_eq!(c.ports.len(), 4);
                assert_eq!(
                    c.ports[2],
                    PortBinding {
                        proto: 17,
                        port: 8081,
                        host_ip: Some("127.0.0.1".parse().unwrap()),
                        host_port: 18091,
                        host_port_end: 18091
                    }
                );
            }
            ("10_NetworkDriver.Join.json", Call::Join(j)) => {
                assert_eq!(
                    j.sandbox_key,
                    PathBuf::from("/var/run/docker/netns/854dabe492fb")
                );
            }
            ("11_NetworkDriver.ProgramExternalConnectivity.json", Call::ProgramExternal(p)) => {
                assert_eq!(p.ports.len(), 4);
            }
            ("06_IpamDriver.RequestAddress.json", Call::RequestAddress(r)) => {
                assert!(r.gateway);
                assert_eq!(r.address, None);
            }
            ("08_IpamDriver.RequestAddress.json", Call::RequestAddress(r)) => {
                assert!(!r.gateway, "Options: null is a plain request");
            }
            ("24_IpamDriver.RequestPool.json", Call::RequestPool(r)) => {
                assert!(r.v6);
                assert_eq!(r.pool.unwrap().to_string(), "fd00:231::/64");
                assert_eq!(r.sub_pool, None);
            }
            ("26_NetworkDriver.CreateNetwork.json", Call::CreateNetwork(c)) => {
                assert_eq!(c.ipv6[0].pool.to_string(), "fd00:231::/64");
                assert_eq!(c.options["com.docker.network.internal"], json!(true));
            }
            ("18_IpamDriver.ReleaseAddress.json", Call::ReleaseAddress { address, .. }) => {
                assert_eq!(address.to_string(), "10.230.0.2");
            }
            _ => {}
        }
    }
}

#[test]
fn unknown_calls_are_not_found() {
    assert_eq!(
        decode("/NetworkDriver.Frobnicate", b"{}"),
        Err(DecodeError::UnknownCall("/NetworkDriver.Frobnicate".into()))
    );
    assert!(matches!(decode("/", b""), Err(DecodeError::UnknownCall(_))));
}

#[test]
fn empty_bodies_count_as_empty_objects() {
    assert_eq!(decode("/Plugin.Activate", b""), Ok(Call::Activate));
    assert_eq!(
        decode("/NetworkDriver.DiscoverNew", b" \n"),
        Ok(Call::DiscoverNew)
    );
}

#[test]
fn malformed_bodies_name_the_field() {
    assert_eq!(field_of(decode("/NetworkDriver.Join", b"{nope")), "body");
    assert_eq!(field_of(decode("/NetworkDriver.Join", b"[1]")), "body");
    assert_eq!(
        field_of(decode_json(
            "/NetworkDriver.Join",
            json!({"NetworkID": "n", "EndpointID": "e"})
        )),
        "SandboxKey"
    );
    assert_eq!(
        field_of(decode_json(
            "/NetworkDriver.DeleteNetwork",
            json!({"NetworkID": 5})
        )),
        "NetworkID"
    );
    assert_eq!(
        field_of(decode_json(
            "/NetworkDriver.CreateNetwork",
            json!({"NetworkID": "n", "IPv4Data": [{"Pool": "10.0.0.0/33"}]})
        )),
        "IPv4Data[0].Pool"
    );
    assert_eq!(
        field_of(decode_json(
            "/NetworkDriver.CreateNetwork",
            json!({"NetworkID": "n", "IPv4Data": [{"Pool": "10.0.0.0/24", "AuxAddresses": {"a": "x"}}]})
        )),
        "IPv4Data[0].AuxAddresses.a"
    );
    assert_eq!(
        field_of(decode_json(
            "/NetworkDriver.CreateEndpoint",
            json!({"NetworkID": "n", "EndpointID": "e", "Interface": {"MacAddress": "01:00:5e:00:00:01"}})
        )),
        "Interface.MacAddress"
    );
    assert_eq!(
        field_of(decode_json(
            "/NetworkDriver.CreateEndpoint",
            json!({"NetworkID": "n", "EndpointID": "e", "Interface": {"Address": "fd00::2/64"}})
        )),
        "Interface.Address"
    );
    assert_eq!(
        field_of(decode_json(
            "/NetworkDriver.ProgramExternalConnectivity",
            json!({"NetworkID": "n", "EndpointID": "e", "Options": {"com.docker.network.portmap": [{"Proto": 6, "Port": 70000}]}})
        )),
        "Options.com.docker.network.portmap[0].Port"
    );
    assert_eq!(
        field_of(decode_json(
            "/IpamDriver.RequestAddress",
            json!({"PoolID": "p", "Address": "10.0.0.300"})
        )),
        "Address"
    );
    assert_eq!(
        field_of(decode_json(
            "/IpamDriver.ReleaseAddress",
            json!({"PoolID": "p"})
        )),
        "Address"
    );
    assert_eq!(
        field_of(decode_json(
            "/IpamDriver.RequestPool",
            json!({"V6": "perhaps"})
        )),
        "V6"
    );
    let e = match decode_json("/IpamDriver.ReleasePool", json!({})) {
        Err(DecodeError::Invalid(e)) => e,
        other => panic!("{other:?}"),
    };
    assert_eq!(e.to_string(), "PoolID: is required");
}

#[test]
fn keys_are_matched_as_go_matches_them() {
    // A Go client marshalling its own structs may spell keys in any case; Go's decoder (and so
    // libnetwork's own plugins) accepts them. The last of two keys for one field wins.
    let call = decode_json(
        "/NetworkDriver.CreateEndpoint",
        json!({"networkid": "n", "endpointId": "e", "INTERFACE": {"address": "10.0.0.2/24", "macaddress": "02:00:00:00:00:02"},
               "options": {"com.docker.network.portmap": [{"Proto": 6, "Port": 80, "HostPort": 8080}]}}),
    )
    .unwrap();
    let Call::CreateEndpoint(c) = call else {
        panic!("{call:?}")
    };
    assert_eq!((c.network_id.as_str(), c.endpoint_id.as_str()), ("n", "e"));
    assert_eq!(c.address.unwrap().to_string(), "10.0.0.2/24");
    assert_eq!(c.mac.unwrap().to_string(), "02:00:00:00:00:02");
    assert_eq!(c.ports[0].host_port, 8080);
    let call = decode(
        "/NetworkDriver.CreateNetwork",
        br#"{"NetworkID":"a","networkID":"b","ipv4data":[{"pool":"10.1.0.0/24","GATEWAY":"10.1.0.1/24"}]}"#,
    )
    .unwrap();
    let Call::CreateNetwork(c) = call else {
        panic!("{call:?}")
    };
    assert_eq!(c.network_id, "b", "last duplicate wins");
    assert_eq!(c.ipv4[0].gateway.unwrap().to_string(), "10.1.0.1/24");
    // Option keys are a Go map's: exact.
    let call = decode_json(
        "/IpamDriver.RequestAddress",
        json!({"poolid": "p", "Options": {"requestaddresstype": "com.docker.network.gateway"}}),
    )
    .unwrap();
    assert_eq!(
        call,
        Call::RequestAddress(RequestAddress {
            pool_id: "p".into(),
            address: None,
            gateway: false,
            mac: None
        })
    );
}

#[test]
fn a_missing_container_port_is_missing_not_zero() {
    let e = field_of(decode_json(
        "/NetworkDriver.ProgramExternalConnectivity",
        json!({"NetworkID": "n", "EndpointID": "e", "Options": {"com.docker.network.portmap": [{"Proto": 6, "HostPort": 8080}]}}),
    ));
    assert_eq!(e, "Options.com.docker.network.portmap[0].Port");
}
