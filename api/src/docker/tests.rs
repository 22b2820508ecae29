//! Handler tests without an engine: recorded dockerd 20.10 requests (golden), static replies with
//! dockerd's field names, malformed bodies, unknown calls, reply builders.

use super::*;
use runtime_net::{
    EndpointKey, EndpointRecord, IfName, MacAddr, NetworkSpec, PortMapping, Protocol,
};

fn fixtures() -> Vec<(String, Value)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../compat/tests/fixtures/docker-20.10-remote-driver");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let v = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
            (p.file_name().unwrap().to_string_lossy().into_owned(), v)
        })
        .collect()
}

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    k.sort();
    k
}

#[test]
fn recorded_calls_decode_and_static_replies_match_dockerd_field_names() {
    for (name, f) in fixtures() {
        let path = f["path"].as_str().unwrap();
        let body = serde_json::to_vec(&f["request"]).unwrap();
        let step = prepare(path, &body).unwrap_or_else(|e| panic!("{name}: {e:?}"));
        match step {
            Step::Reply(v) => {
                // The recording plugin's replies were accepted by dockerd: same fields.
                let recorded = &f["reply"];
                for k in keys(recorded) {
                    assert!(v.get(&k).is_some(), "{name}: reply lacks {k}: {v}");
                }
                if path == "/Plugin.Activate" || path == "/NetworkDriver.GetCapabilities" {
                    assert_eq!(&v, recorded, "{name}");
                }
            }
            Step::Engine(_) => assert!(
                !path.starts_with("/Plugin.") && !path.ends_with("GetCapabilities"),
                "{name} should be answered without the engine"
            ),
        }
    }
}

#[test]
fn every_protocol_call_is_known() {
    let calls = [
        "/NetworkDriver.GetCapabilities",
        "/NetworkDriver.CreateNetwork",
        "/NetworkDriver.AllocateNetwork",
        "/NetworkDriver.DeleteNetwork",
        "/NetworkDriver.FreeNetwork",
        "/NetworkDriver.CreateEndpoint",
        "/NetworkDriver.EndpointOperInfo",
        "/NetworkDriver.DeleteEndpoint",
        "/NetworkDriver.Join",
        "/NetworkDriver.Leave",
        "/NetworkDriver.DiscoverNew",
        "/NetworkDriver.DiscoverDelete",
        "/NetworkDriver.ProgramExternalConnectivity",
        "/NetworkDriver.RevokeExternalConnectivity",
        "/IpamDriver.GetCapabilities",
        "/IpamDriver.GetDefaultAddressSpaces",
        "/IpamDriver.RequestPool",
        "/IpamDriver.ReleasePool",
        "/IpamDriver.RequestAddress",
        "/IpamDriver.ReleaseAddress",
    ];
    for c in calls {
        let e = prepare(c, b"{}");
        assert!(
            !matches!(&e, Err(PluginError { status, .. }) if *status == StatusCode::NOT_FOUND),
            "{c}: {e:?}"
        );
    }
    assert_eq!(
        prepare("/NetworkDriver.AllocateNetwork", br#"{"NetworkID": "n"}"#),
        Ok(Step::Reply(json!({"Options": {}})))
    );
}

#[test]
fn unknown_calls_are_404_with_err() {
    let e = prepare("/VolumeDriver.Create", b"{}").unwrap_err();
    assert_eq!(e.status, StatusCode::NOT_FOUND);
    let r = error_response(&e);
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(r.headers()["content-type"], CONTENT_TYPE);
}

#[test]
fn malformed_bodies_are_400_naming_the_field() {
    let cases: [(&str, &[u8], &str); 6] = [
        (
            "/NetworkDriver.Join",
            b"{\"NetworkID\": \"n\", \"EndpointID\": \"e\"}",
            "SandboxKey",
        ),
        (
            "/NetworkDriver.CreateNetwork",
            b"{\"NetworkID\": \"n\", \"IPv4Data\": {}}",
            "IPv4Data",
        ),
        (
            "/NetworkDriver.CreateEndpoint",
            b"{\"NetworkID\": \"n\", \"EndpointID\": \"e\", \"Interface\": {\"Address\": \"x\"}}",
            "Interface.Address",
        ),
        (
            "/IpamDriver.RequestPool",
            b"{\"Pool\": \"10.0.0.0/99\"}",
            "Pool",
        ),
        (
            "/IpamDriver.RequestAddress",
            b"{\"Address\": \"10.0.0.1\"}",
            "PoolID",
        ),
        ("/NetworkDriver.DeleteEndpoint", b"not json", "body"),
    ];
    for (path, body, field) in cases {
        let e = prepare(path, body).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST, "{path}");
        assert!(
            e.message.contains(&format!("{field}:")),
            "{path}: {}",
            e.message
        );
        let r = error_response(&e);
        assert_eq!(r.headers()["content-type"], CONTENT_TYPE);
    }
}

fn record(ports: Vec<PortMapping>) -> (NetworkSpec, EndpointRecord) {
    let spec = NetworkSpec {
        name: NetworkName::new("n1").unwrap(),
        bridge: IfName::new("br-n1").unwrap(),
        subnet: "10.230.0.0/24".parse().unwrap(),
        gateway: "10.230.0.1".parse().unwrap(),
        subnet6: None,
        gateway6: None,
        mtu: 1400,
        masquerade: true,
        icc: false,
        internal: false,
        hairpin: true,
        no_masquerade_to: vec![],
        allow_from: vec![],
        host_binding_ipv4: None,
        mac_prefix: shimnet_compat::docker::conventions::MAC_PREFIX,
        range4: None,
        dns: false,
    };
    let rec = EndpointRecord {
        kind: runtime_net::EndpointKind::Prepared,
        key: EndpointKey {
            network: spec.name.clone(),
            container_id: runtime_net::ContainerId::new("e1").unwrap(),
            ifname: IfName::new("eth").unwrap(),
        },
        netns: "/proc/self/ns/net".into(),
        host_ifname: IfName::new("snv000000000001").unwrap(),
        ipv4: "10.230.0.2/24".parse().unwrap(),
        ipv6: None,
        mac: MacAddr([2, 0x42, 10, 230, 0, 2]),
        gateway: spec.gateway,
        gateway6: None,
        mtu: 1400,
        ports,
        names: vec![],
        extension: None,
    };
    (spec, rec)
}

#[test]
fn create_endpoint_returns_only_what_dockerd_left_empty() {
    let (_, rec) = record(vec![]);
    assert_eq!(
        reply::create_endpoint(&rec, true, false, false),
        json!({"Interface": {"MacAddress": "02:42:0a:e6:00:02"}})
    );
    assert_eq!(reply::create_endpoint(&rec, true, true, true), json!({}));
    assert_eq!(
        reply::create_endpoint(&rec, false, true, true),
        json!({"Interface": {"Address": "10.230.0.2/24"}})
    );
}

#[test]
fn join_names_the_prepared_interface_and_gateway() {
    let (mut spec, rec) = record(vec![]);
    let v = reply::join(&spec, &rec, "snp000000000001", "eth");
    assert_eq!(
        v["InterfaceName"],
        json!({"SrcName": "snp000000000001", "DstPrefix": "eth"})
    );
    assert_eq!(v["Gateway"], json!("10.230.0.1"));
    spec.internal = true;
    let v = reply::join(&spec, &rec, "snp000000000001", "eth");
    assert!(
        v.get("Gateway").is_none(),
        "internal networks have no gateway: {v}"
    );
}

#[test]
fn oper_info_reports_chosen_ports() {
    let (_, rec) = record(vec![PortMapping {
        protocol: Protocol::Udp,
        host_ip: Some("127.0.0.1".parse().unwrap()),
        host_port: 18091,
        container_port: 8081,
    }]);
    let v = reply::oper_info(Some(&rec));
    assert_eq!(
        v["Value"]["com.docker.network.portmap"][0],
        json!({"Proto": 17, "IP": "10.230.0.2", "Port": 8081, "HostIP": "127.0.0.1", "HostPort": 18091, "HostPortEnd": 18091})
    );
    assert_eq!(reply::oper_info(None), json!({"Value": {}}));
    assert_eq!(
        reply::request_address("10.230.0.1".parse().unwrap(), 24),
        json!({"Address": "10.230.0.1/24", "Data": {}})
    );
}

#[test]
fn late_engine_work_is_a_503_naming_the_call() {
    let e = PluginError::from(crate::http::TimedOut::Late {
        call: "/NetworkDriver.Join".into(),
        limit: Duration::from_millis(50),
    });
    assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        e.message.contains("/NetworkDriver.Join") && e.message.contains("did not finish"),
        "{}",
        e.message
    );
}

#[test]
fn metric_labels_are_known_calls_only() {
    assert_eq!(
        super::operation_of("/NetworkDriver.Join"),
        "NetworkDriver.Join"
    );
    assert_eq!(
        super::operation_of("/IpamDriver.RequestPool"),
        "IpamDriver.RequestPool"
    );
    assert_eq!(super::operation_of("/NetworkDriver.Nope"), "other");
    assert_eq!(super::operation_of("/etc/passwd"), "other");
}
