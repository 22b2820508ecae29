use super::*;
use runtime_net::plan::{build_spec, NetworkRequest};

fn spec(name: &str, subnet: &str) -> NetworkSpec {
    build_spec(NetworkRequest::new(
        name.parse().unwrap(),
        subnet.parse().unwrap(),
    ))
    .unwrap()
}

fn endpoint(network: &str, id: &str, ip: &str) -> EndpointRecord {
    serde_json::from_value(serde_json::json!({
        "key": {"network": network, "container_id": id, "ifname": "eth0"},
        "netns": format!("/run/netns/{id}"),
        "host_ifname": format!("veth{id}"),
        "ipv4": ip,
        "mac": "02:00:00:00:00:01",
        "gateway": "10.1.0.1",
        "mtu": 1500
    }))
    .unwrap()
}

#[test]
fn capacity_leaves_out_network_broadcast_and_gateway() {
    assert_eq!(ipv4_capacity(&spec("a", "10.1.0.0/24")), 253);
    assert_eq!(ipv4_capacity(&spec("b", "10.2.0.0/16")), 65533);
    assert_eq!(ipv4_capacity(&spec("c", "10.3.0.0/30")), 1);
}

#[test]
fn usage_counts_per_network_including_empty_ones() {
    let nets = [spec("a", "10.1.0.0/24"), spec("b", "10.2.0.0/24")];
    let eps = [
        endpoint("a", "c1", "10.1.0.2/24"),
        endpoint("a", "c2", "10.1.0.3/24"),
    ];
    let u = usage(&nets, &eps, |_| 1023);
    assert_eq!(
        u,
        vec![
            NetworkUsage {
                network: "a".into(),
                endpoints: 2,
                ipv4_used: 2,
                ipv4_capacity: 253,
                ports_used: 2,
                ports_capacity: 1023,
            },
            NetworkUsage {
                network: "b".into(),
                endpoints: 0,
                ipv4_used: 0,
                ipv4_capacity: 253,
                ports_used: 0,
                ports_capacity: 1023,
            },
        ]
    );
}

#[test]
fn operation_names_are_bounded() {
    assert_eq!(
        rest_operation("POST", "/v1/networks/a/endpoints"),
        "endpoint_attach"
    );
    assert_eq!(
        rest_operation("DELETE", "/v1/networks/a/endpoints/c1"),
        "endpoint_detach"
    );
    assert_eq!(rest_operation("PUT", "/v1/networks/a"), "network_ensure");
    assert_eq!(
        rest_operation("POST", "/v1/networks/a/attach"),
        "network_attach"
    );
    assert_eq!(rest_operation("PATCH", "/v1/networks/a"), "other");
    assert_eq!(rest_operation("GET", "/etc/passwd"), "other");
}

#[test]
fn cni_is_told_apart_by_user_agent() {
    assert_eq!(
        FrontDoor::of_user_agent(Some("shimnet-cni/0.1.0")),
        FrontDoor::Cni
    );
    assert_eq!(FrontDoor::of_user_agent(Some("curl/8")), FrontDoor::Rest);
    assert_eq!(FrontDoor::of_user_agent(None), FrontDoor::Rest);
}

#[test]
fn exposition_holds_recorded_values() {
    let m = Metrics::new();
    m.record(
        FrontDoor::Cni,
        "endpoint_attach",
        true,
        Duration::from_millis(3),
    );
    m.record(
        FrontDoor::Cni,
        "endpoint_attach",
        true,
        Duration::from_millis(5),
    );
    m.record(
        FrontDoor::Docker,
        "NetworkDriver.Join",
        false,
        Duration::from_millis(1),
    );
    m.record_reconcile(Some(&ReconcileReport {
        networks: 1,
        reclaimed: 2,
        links_removed: 1,
        firewall_removed: 0,
        ports_reattached: 3,
        errors: vec![],
    }));
    m.set_peer_up("hostb", true);
    m.record_encap_dropped(5, 0);
    m.record_encap_dropped(7, 2);
    // The data plane's VXLAN counter started over (filter recreated): 3 more, not 7 - 3 less.
    m.record_encap_dropped(3, 2);
    m.set_usage(&usage(
        &[spec("a", "10.1.0.0/24")],
        &[endpoint("a", "c1", "10.1.0.2/24")],
        |_| 1023,
    ));
    let text = m.encode();
    for line in [
        "shimnet_operations_total{front_door=\"cni\",operation=\"endpoint_attach\",result=\"ok\"} 2",
        "shimnet_operations_total{front_door=\"docker\",operation=\"NetworkDriver.Join\",result=\"error\"} 1",
        "shimnet_operation_duration_seconds_count{front_door=\"cni\",operation=\"endpoint_attach\"} 2",
        "shimnet_reconcile_repairs_total{kind=\"endpoint_reclaimed\"} 2",
        "shimnet_reconcile_repairs_total{kind=\"link_removed\"} 1",
        "shimnet_reconcile_repairs_total{kind=\"firewall_removed\"} 0",
        "shimnet_reconcile_repairs_total{kind=\"port_reattached\"} 3",
        "shimnet_reconcile_runs_total{result=\"ok\"} 1",
        "shimnet_peer_up{peer=\"hostb\"} 1",
        "shimnet_peering_encap_dropped_total{mode=\"vxlan\"} 10",
        "shimnet_peering_encap_dropped_total{mode=\"ipip\"} 2",
        "shimnet_endpoints{network=\"a\"} 1",
        "shimnet_ipam_ipv4_addresses_used{network=\"a\"} 1",
        "shimnet_ipam_ipv4_addresses_capacity{network=\"a\"} 253",
        "shimnet_bridge_ports_used{network=\"a\"} 1",
        "shimnet_bridge_ports_capacity{network=\"a\"} 1023",
        "# EOF",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
    }
    m.remove_peer("hostb");
    m.set_usage(&[]);
    let text = m.encode();
    assert!(!text.contains("peer=\"hostb\""));
    assert!(!text.contains("network=\"a\""));
}

#[test]
fn membership_metrics_mirror_the_source() {
    let m = Metrics::new();
    let mut s = MembershipSample {
        source: "etcd",
        up: true,
        peers: 19,
        skipped: 1,
        watch_events: 40,
        sessions: 1,
    };
    m.set_membership(&s);
    s.up = false;
    s.watch_events = 45;
    m.set_membership(&s);
    s.watch_events = 45;
    s.sessions = 2;
    m.set_membership(&s);
    let text = m.encode();
    for line in [
        "shimnet_membership_source_up{source=\"etcd\"} 0",
        "shimnet_membership_peers{source=\"etcd\"} 19",
        "shimnet_membership_skipped_entries{source=\"etcd\"} 1",
        "shimnet_etcd_watch_events_total{source=\"etcd\"} 45",
        "shimnet_etcd_sessions_total{source=\"etcd\"} 2",
    ] {
        assert!(text.contains(line), "{line}\n{text}");
    }
    let f = Metrics::new();
    f.set_membership(&MembershipSample {
        source: "file",
        up: true,
        peers: 2,
        skipped: 0,
        watch_events: 0,
        sessions: 0,
    });
    let text = f.encode();
    assert!(
        text.contains("shimnet_membership_peers{source=\"file\"} 2"),
        "{text}"
    );
    assert!(!text.contains("shimnet_etcd_watch_events_total{"), "{text}");
}
