//! Golden tests: recorded Podman 4.3 traffic (`/work/shared/fixtures/podman-4.3-cni`, copied
//! into `compat/tests/fixtures/`) and the default conflists of Podman and nerdctl.

use serde_json::{json, Value};

use crate::cni::args;
use crate::cni::config::NetConf;
use crate::cni::result::{CniResult, Endpoint, NetworkInfo};
use crate::cni::translate::{attach_request, network_target, AttachEnv, NetworkTarget};
use crate::cni::version::{negotiate, Version};

fn fixture(name: &str) -> Value {
    let path = format!(
        "{}/tests/fixtures/podman-4.3-cni/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn stdin_of(f: &Value) -> NetConf {
    NetConf::parse(f["stdin"].to_string().as_bytes()).unwrap().1
}

#[test]
fn podman_add_with_ports() {
    let f = fixture("01_ADD.json");
    let c = stdin_of(&f);
    assert_eq!(
        negotiate(c.cni_version.as_deref(), &c.cni_versions).unwrap(),
        Version::V0_4_0
    );
    let NetworkTarget::Ensure(n) = network_target(&c, None).unwrap() else {
        panic!()
    };
    assert_eq!(
        serde_json::to_value(&n).unwrap(),
        json!({"name": "recnet", "subnet": "10.232.0.0/24", "bridge": "recbr0", "masquerade": true, "hairpin": true})
    );
    let env = &f["env"];
    let a = args::parse(env["CNI_ARGS"].as_str().unwrap()).unwrap();
    let e = AttachEnv {
        container_id: env["CNI_CONTAINERID"].as_str().unwrap(),
        netns: env["CNI_NETNS"].as_str().unwrap(),
        ifname: env["CNI_IFNAME"].as_str().unwrap(),
    };
    let req = attach_request(&c, e, &a, &[]).unwrap();
    assert_eq!(
        serde_json::to_value(&req).unwrap(),
        json!({
            "container_id": "cc783d35bc58d78fe6e676adf0affdf53b15b6b77a5866abaff124073d68b1a8",
            "netns": "/run/netns/netns-b70a8d97-e0d9-26f3-9d4c-f76fbc9dfa2d",
            "ifname": "eth0",
            // Podman's container name, from CNI_ARGS K8S_POD_NAME.
            "name": "rp1",
            "ports": [
                {"protocol": "tcp", "host_port": 18095, "container_port": 8080},
                {"protocol": "udp", "host_port": 18096, "container_port": 9000},
                {"protocol": "udp", "host_port": 18097, "container_port": 9001}
            ]
        })
    );
}

#[test]
fn podman_add_static_ip_and_mac_via_cni_args() {
    let f = fixture("03_ADD.json");
    let c = stdin_of(&f);
    let a = args::parse(f["env"]["CNI_ARGS"].as_str().unwrap()).unwrap();
    let e = AttachEnv {
        container_id: "x",
        netns: "/run/netns/x",
        ifname: "eth0",
    };
    let req = attach_request(&c, e, &a, &[]).unwrap();
    assert_eq!(req.ip.as_deref(), Some("10.232.0.77"));
    assert_eq!(req.mac.as_deref(), Some("02:00:00:00:00:77"));
    assert!(req.ports.is_empty());
}

/// Our result for the recorded ADD has the reference plugin's shape: same interfaces count and
/// order (bridge, host veth, container), same `ips` (with `version` in 0.4.0), same routes.
#[test]
fn result_matches_reference_shape() {
    let f = fixture("03_ADD.json");
    let c = stdin_of(&f);
    let reference = &f["reference_bridge_stdout"];
    let net = NetworkInfo {
        name: "recnet".into(),
        bridge: "recbr0".into(),
        mtu: 1500,
    };
    let ep = Endpoint {
        host_ifname: "snv000000000001".into(),
        netns: f["env"]["CNI_NETNS"].as_str().unwrap().into(),
        ipv4: "10.232.0.77/24".into(),
        ipv6: None,
        mac: "02:00:00:00:00:77".into(),
        gateway: "10.232.0.1".into(),
        gateway6: None,
        mtu: 1500,
        dns: None,
    };
    let routes = &c.ipam.as_ref().unwrap().routes;
    let ours = CniResult::from_endpoint(&net, &ep, "eth0", routes, c.dns.as_ref())
        .to_json(Version::V0_4_0);
    assert_eq!(ours["cniVersion"], reference["cniVersion"]);
    assert_eq!(ours["ips"], reference["ips"]);
    assert_eq!(ours["routes"], reference["routes"]);
    assert_eq!(ours["dns"], reference["dns"]);
    assert_eq!(
        ours["interfaces"][0]["name"],
        reference["interfaces"][0]["name"]
    );
    assert_eq!(ours["interfaces"][2], reference["interfaces"][2]);
    // The recorded DEL carries that result as prevResult: it round-trips.
    let del = fixture("05_DEL.json");
    let prev = CniResult::parse(&del["stdin"]["prevResult"]).unwrap();
    assert_eq!(prev.to_json(Version::V0_4_0), *reference);
    assert!(prev.has_address("10.232.0.77/24"));
}

#[test]
fn podman_del_resends_ports_and_version_request() {
    let c = stdin_of(&fixture("07_DEL.json"));
    assert_eq!(c.runtime_config.port_mappings.len(), 3);
    let v = fixture("00_VERSION.json");
    assert_eq!(v["stdin"]["cniVersion"], "1.0.0");
}

/// Podman 4's default CNI network (`87-podman-bridge.conflist`), its bridge plugin entry.
#[test]
fn podman_default_conflist() {
    let list = json!({
      "cniVersion": "0.4.0", "name": "podman",
      "plugins": [
        {"type": "bridge", "bridge": "cni-podman0", "isGateway": true, "ipMasq": true, "hairpinMode": true,
         "ipam": {"type": "host-local", "routes": [{"dst": "0.0.0.0/0"}], "ranges": [[{"subnet": "10.88.0.0/16", "gateway": "10.88.0.1"}]]}},
        {"type": "portmap", "capabilities": {"portMappings": true}},
        {"type": "firewall"}, {"type": "tuning"}
      ]
    });
    let mut plugin = list["plugins"][0].clone();
    plugin["cniVersion"] = list["cniVersion"].clone();
    plugin["name"] = list["name"].clone();
    let c = NetConf::from_value(&plugin).unwrap();
    let NetworkTarget::Ensure(n) = network_target(&c, None).unwrap() else {
        panic!()
    };
    assert_eq!(
        (
            n.name.as_str(),
            n.subnet.as_str(),
            n.gateway.as_deref(),
            n.bridge.as_deref(),
            n.masquerade,
            n.hairpin
        ),
        (
            "podman",
            "10.88.0.0/16",
            Some("10.88.0.1"),
            Some("cni-podman0"),
            Some(true),
            Some(true)
        )
    );
}

/// nerdctl's default network (`nerdctl-bridge`, conflist version 1.0.0).
#[test]
fn nerdctl_default_conflist() {
    let plugin = json!({
      "cniVersion": "1.0.0", "name": "bridge", "type": "bridge", "bridge": "nerdctl0",
      "isGateway": true, "ipMasq": true, "hairpinMode": true,
      "ipam": {"type": "host-local", "routes": [{"dst": "0.0.0.0/0"}],
               "ranges": [[{"subnet": "10.4.0.0/24", "gateway": "10.4.0.1"}]]}
    });
    let c = NetConf::from_value(&plugin).unwrap();
    let NetworkTarget::Ensure(n) = network_target(&c, None).unwrap() else {
        panic!()
    };
    assert_eq!(
        (n.bridge.as_deref(), n.subnet.as_str()),
        (Some("nerdctl0"), "10.4.0.0/24")
    );
}

/// The example conflists shipped in `packaging/cni/` translate without error.
#[test]
fn packaged_conflists_translate() {
    let dir = format!("{}/../packaging/cni", env!("CARGO_MANIFEST_DIR"));
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let list: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let mut plugin = list["plugins"][0].clone();
        assert_eq!(plugin["type"], "shimnet", "{}", path.display());
        plugin["cniVersion"] = list["cniVersion"].clone();
        plugin["name"] = list["name"].clone();
        let c = NetConf::from_value(&plugin).unwrap();
        network_target(&c, None).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        seen += 1;
    }
    assert!(seen >= 3);
}

/// The exact bytes go-cni 1.1.7 + libcni 1.1.2 wrote to the plugin's stdin (recorded by
/// `tests/go_clients.rs`; see `tests/fixtures/go-cni-1.1.7/README.md`).
fn go_cni(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/tests/fixtures/go-cni-1.1.7/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap()
}

#[test]
fn go_cni_add_publishes_its_go_cased_port() {
    let (_, c) = NetConf::parse(&go_cni("01-ADD.json")).unwrap();
    let e = AttachEnv {
        container_id: "c",
        netns: "/var/run/netns/gocni-pod",
        ifname: "eth0",
    };
    let req = attach_request(&c, e, &args::CniArgs::default(), &[]).unwrap();
    assert_eq!(
        serde_json::to_value(&req.ports).unwrap(),
        json!([{"protocol": "tcp", "host_port": 18690, "container_port": 80}])
    );
    let NetworkTarget::Ensure(n) = network_target(&c, None).unwrap() else {
        panic!()
    };
    assert_eq!(
        (n.name.as_str(), n.subnet.as_str()),
        ("gocni", "10.74.0.0/24")
    );
}

#[test]
fn go_cni_check_and_del_carry_libcni_cached_result() {
    for (name, has_prev) in [
        ("02-CHECK.json", true),
        ("03-DEL.json", true),
        ("04-DEL.json", false),
        ("05-DEL.json", false),
    ] {
        let (_, c) = NetConf::parse(&go_cni(name)).unwrap();
        assert_eq!(c.runtime_config.port_mappings[0].host_port, 18690, "{name}");
        assert_eq!(c.prev_result.is_some(), has_prev, "{name}");
        if let Some(prev) = &c.prev_result {
            let r = CniResult::parse(prev).unwrap();
            assert!(r.has_address("10.74.0.2/24"), "{name}");
            assert_eq!(r.interfaces[2]["sandbox"], "/var/run/netns/gocni-pod");
        }
    }
}
