//! Attach, join and publish: what gets built, retries, conflicts, and the rollback after each
//! step that can fail.

use super::*;
use crate::engine::EngineError;
use crate::naming;

const NS1: &str = "/run/netns/c1";

/// The kernel journal's lines that start with one of `kinds`, each cut before its peer.
fn pair_journal(h: &Harness, kinds: &[&str]) -> Vec<String> {
    h.kernel
        .journal()
        .into_iter()
        .filter(|j| kinds.iter().any(|k| j.starts_with(k)))
        .map(|j| j.split(" peer ").next().unwrap().to_string())
        .collect()
}

async fn one_network() -> Harness {
    let h = Harness::new().await;
    h.network("n1", "10.1.0.0/24").await;
    h.kernel.add_netns(NS1);
    h
}

#[tokio::test]
async fn managed_attach_builds_the_pair_configures_inside_and_publishes() {
    let h = one_network().await;
    let mut req = managed("n1", "c1", NS1);
    req.ports = vec![tcp(8080, 80)];
    let a = h.engine.attach(req).await.unwrap();
    assert!(a.created);
    assert_eq!(a.record.ipv4.to_string(), "10.1.0.2/24");
    assert_eq!(a.record.kind, EndpointKind::Managed);
    assert_eq!(a.container_end.as_str(), "eth0");
    let host = h.kernel.links()[a.record.host_ifname.as_str()].clone();
    let bridge = h.kernel.links()["n1"].clone();
    assert_eq!(host.master, Some(bridge.index));
    assert!(host.up);
    assert_eq!(host.alias, Some(naming::veth_alias(&a.record.key)));
    let inside = &h.kernel.ns_links(NS1).unwrap()["eth0"];
    assert!(inside.up);
    assert_eq!(inside.addrs, vec!["10.1.0.2/24".parse().unwrap()]);
    assert_eq!(inside.gateways, vec!["10.1.0.1".parse::<IpAddr>().unwrap()]);
    assert_eq!(inside.mac, a.record.mac.0.to_vec());
    assert_eq!(
        h.kernel
            .sysctl(&format!(
                "net/ipv6/conf/{}/disable_ipv6",
                a.record.host_ifname
            ))
            .as_deref(),
        Some("1")
    );
    assert_eq!(h.fw.ports()[&a.record.host_ifname][0].host_port, 8080);
    assert_eq!(h.records().await, vec![a.record.clone()]);
    assert!(h
        .engine
        .check_endpoint(&a.record.key)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn an_intact_retry_changes_nothing_and_a_broken_one_is_rebuilt() {
    let h = one_network().await;
    let first = h.engine.attach(managed("n1", "c1", NS1)).await.unwrap();
    h.kernel.clear_journal();
    let again = h.engine.attach(managed("n1", "c1", NS1)).await.unwrap();
    assert!(!again.created);
    assert_eq!(again.record, first.record);
    assert!(h.kernel.journal().is_empty(), "{:?}", h.kernel.journal());
    // Someone deletes the host end: the retry rebuilds the endpoint with the same address.
    assert!(h
        .kernel
        .delete_behind_back(first.record.host_ifname.as_str()));
    let rebuilt = h.engine.attach(managed("n1", "c1", NS1)).await.unwrap();
    assert_eq!(rebuilt.record, first.record);
    assert!(h.veths().contains(&first.record.host_ifname.to_string()));
    assert!(h
        .engine
        .check_endpoint(&first.record.key)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn a_retry_must_not_contradict_the_record() {
    let h = one_network().await;
    h.kernel.add_netns("/run/netns/other");
    h.engine.attach(managed("n1", "c1", NS1)).await.unwrap();
    let e = h
        .engine
        .attach(managed("n1", "c1", "/run/netns/other"))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, EngineError::Conflict(m) if m.contains("namespace")),
        "{e}"
    );
    let mut other_ip = managed("n1", "c1", NS1);
    other_ip.ipv4 = Some("10.1.0.9".parse().unwrap());
    let e = h.engine.attach(other_ip).await.unwrap_err();
    assert!(
        matches!(&e, EngineError::Conflict(m) if m.contains("address")),
        "{e}"
    );
    let mut other_kind = prepared("n1", "c1");
    other_kind.ifname = IfName::new("eth0").unwrap();
    let e = h.engine.attach(other_kind).await.unwrap_err();
    assert!(
        matches!(&e, EngineError::Conflict(m) if m.contains("managed")),
        "{e}"
    );
}

#[tokio::test]
async fn a_missing_namespace_is_a_field_error_and_changes_nothing() {
    let h = one_network().await;
    let e = h
        .engine
        .attach(managed("n1", "c1", "/run/netns/nope"))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, EngineError::Invalid(f) if f.field == "netns"),
        "{e}"
    );
    assert!(h.records().await.is_empty());
    assert!(h.veths().is_empty());
}

/// Attach fails at `op`: everything done before is undone, the record and its address are
/// released, and the same attach succeeds afterwards with the same address.
async fn rollback_after(op: &str, on_firewall: bool) {
    let h = one_network().await;
    let mut req = managed("n1", "c1", NS1);
    req.ports = vec![tcp(8080, 80)];
    if on_firewall {
        h.fw.fail(op);
    } else {
        h.kernel.fail(op);
    }
    let e = h.engine.attach(req.clone()).await.unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains(op) && text.contains("injected"),
        "{op}: {text}"
    );
    assert!(h.records().await.is_empty(), "{op}: record left");
    assert!(h.veths().is_empty(), "{op}: links left: {:?}", h.veths());
    assert!(
        h.kernel.ns_links(NS1).unwrap().is_empty(),
        "{op}: container end left"
    );
    assert!(h.fw.ports().is_empty(), "{op}: ports left");
    // The address is free again (asked for statically: dynamic picks move on past it).
    req.ipv4 = Some("10.1.0.2".parse().unwrap());
    let a = h.engine.attach(req).await.unwrap();
    assert_eq!(
        a.record.ipv4.to_string(),
        "10.1.0.2/24",
        "{op}: address leaked"
    );
}

#[tokio::test]
async fn rollback_when_creating_the_pair_fails() {
    rollback_after("create_pair", false).await;
}

#[tokio::test]
async fn rollback_when_the_port_sysctl_fails() {
    rollback_after("sysctl", false).await;
}

#[tokio::test]
async fn rollback_when_configuring_the_bridge_port_fails() {
    rollback_after("configure_port", false).await;
}

#[tokio::test]
async fn rollback_when_entering_the_namespace_fails() {
    rollback_after("enter", false).await;
}

#[tokio::test]
async fn rollback_when_configuring_the_container_end_fails() {
    rollback_after("configure", false).await;
}

#[tokio::test]
async fn rollback_when_publishing_ports_fails() {
    rollback_after("add_ports", true).await;
}

#[tokio::test]
async fn rollback_when_observing_fails() {
    rollback_after("index", false).await;
}

#[tokio::test]
async fn a_failed_reservation_builds_nothing() {
    let h = one_network().await;
    h.engine.store.fail_next_write("disk full (injected)");
    let e = h.engine.attach(managed("n1", "c1", NS1)).await.unwrap_err();
    assert!(e.to_string().contains("disk full"), "{e}");
    assert!(h
        .kernel
        .journal()
        .iter()
        .all(|j| !j.starts_with("create pair")));
    assert!(h.veths().is_empty() && h.records().await.is_empty());
}

#[tokio::test]
async fn a_reservation_that_cannot_be_made_durable_takes_down_what_was_built() {
    let h = one_network().await;
    let mut req = managed("n1", "c1", NS1);
    req.ports = vec![tcp(8080, 80)];
    h.engine.store.fail_next_flush("disk full (injected)");
    let e = h.engine.attach(req.clone()).await.unwrap_err();
    assert!(e.to_string().contains("disk full"), "{e}");
    // Built (the flush runs beside the kernel work), then taken down: ports withdrawn, pair
    // retired, record released.
    let journal = h.kernel.journal();
    assert!(
        journal.iter().any(|j| j.starts_with("create pair")),
        "{journal:?}"
    );
    assert!(h.veths().is_empty(), "{:?}", h.veths());
    assert!(h.records().await.is_empty());
    assert!(h.fw.ports().is_empty(), "{:?}", h.fw.ports());
    // Nothing held: the same request goes through, with the same port.
    let a = h.engine.attach(req).await.unwrap();
    assert_eq!(a.record.ports[0].host_port, 8080);
}

#[tokio::test]
async fn the_undo_keeps_going_and_reports_its_own_failures() {
    let h = one_network().await;
    let mut req = managed("n1", "c1", NS1);
    req.ports = vec![tcp(8080, 80)];
    h.fw.fail("add_ports");
    h.kernel.fail("retire_link");
    let e = h.engine.attach(req).await.unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("add_ports") && text.contains("retire_link"),
        "{text}"
    );
    assert!(
        h.records().await.is_empty(),
        "the reservation is released all the same"
    );
}

#[tokio::test]
async fn one_port_conflict_mechanism_for_every_kind_of_endpoint() {
    let h = one_network().await;
    let mut a = managed("n1", "c1", NS1);
    a.ports = vec![tcp(8080, 80)];
    h.engine.attach(a).await.unwrap();
    // Another managed endpoint asking for the same port: refused, nothing built, nothing kept.
    h.kernel.add_netns("/run/netns/c2");
    let mut b = managed("n1", "c2", "/run/netns/c2");
    b.ports = vec![tcp(8080, 81)];
    let e = h.engine.attach(b).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "ports: host port 8080/tcp is already published by endpoint n1/c1/eth0 (all addresses)"
    );
    assert_eq!(h.records().await.len(), 1);
    assert_eq!(h.veths().len(), 1);
    // A prepared endpoint asking for any port of a range gets the first free one.
    let p = h.engine.attach(prepared("n1", "e1")).await.unwrap();
    let k = p.record.key.clone();
    let (got, _) = h
        .engine
        .publish(&k, vec![tcp_range(8080..=8082, 80)])
        .await
        .unwrap();
    assert_eq!(got[0].host_port, 8081);
    let e = h
        .engine
        .publish(&k, vec![tcp_range(8080..=8080, 80)])
        .await
        .unwrap_err();
    assert!(matches!(e, EngineError::Conflict(_)), "{e}");
    // The refused publish changed nothing: 8081 is still published and recorded.
    assert_eq!(
        h.engine.endpoint(&k).await.unwrap().ports[0].host_port,
        8081
    );
    assert_eq!(h.fw.ports()[&p.record.host_ifname][0].host_port, 8081);
}

#[tokio::test]
async fn a_prepared_endpoint_reserves_its_ports_with_its_address() {
    let h = one_network().await;
    let mut p = prepared("n1", "e1");
    p.ports = vec![tcp_range(8080..=8081, 80)];
    let a = h.engine.attach(p).await.unwrap();
    assert_eq!(a.record.ports[0].host_port, 8080);
    assert!(h.fw.ports().is_empty(), "published only once joined");
    // The reserved port is taken for everybody else already.
    let mut m = managed("n1", "c1", NS1);
    m.ports = vec![tcp(8080, 80)];
    let e = h.engine.attach(m).await.unwrap_err();
    assert!(e.to_string().contains("n1/e1/eth"), "{e}");
    // Publishing the same map keeps the same port and installs it.
    let (got, plan) = h
        .engine
        .publish(&a.record.key, vec![tcp_range(8080..=8081, 80)])
        .await
        .unwrap();
    assert_eq!(got[0].host_port, 8080);
    assert_eq!(plan.stages.len(), 1, "{plan}");
    assert_eq!(h.fw.ports()[&a.record.host_ifname][0].host_port, 8080);
}

#[tokio::test]
async fn prepared_attach_then_join_then_publish() {
    let h = one_network().await;
    let a = h.engine.attach(prepared("n1", "e1")).await.unwrap();
    let peer = naming::peer_temp_name(&a.record.host_ifname);
    assert_eq!(a.container_end, peer);
    assert_eq!(a.record.kind, EndpointKind::Prepared);
    assert_eq!(a.record.netns, PathBuf::from(naming::UNJOINED_NETNS));
    let links = h.kernel.links();
    assert!(
        links.contains_key(peer.as_str()),
        "container end waits beside the host end"
    );
    assert!(links[a.record.host_ifname.as_str()].up);
    // The caller moves the container end into its sandbox and joins.
    h.kernel.add_netns("/run/sandbox/e1");
    h.kernel.move_into(peer.as_str(), "/run/sandbox/e1", "eth0");
    h.kernel.clear_journal();
    let (rec, name, plan) = h
        .engine
        .join(&a.record.key, std::path::Path::new("/run/sandbox/e1"))
        .await
        .unwrap();
    assert_eq!(name, peer);
    assert!(plan.stages.is_empty(), "intact: nothing rebuilt: {plan}");
    assert!(h.kernel.journal().is_empty());
    assert_eq!(rec.netns, PathBuf::from("/run/sandbox/e1"));
    let (chosen, _) = h
        .engine
        .publish(&rec.key, vec![tcp(9090, 80)])
        .await
        .unwrap();
    assert_eq!(chosen[0].host_port, 9090);
    h.engine.unpublish(&rec.key).await.unwrap();
    assert!(h.fw.ports().is_empty());
    assert!(h.engine.endpoint(&rec.key).await.unwrap().ports.is_empty());
}

#[tokio::test]
async fn join_rebuilds_a_prepared_endpoint_whose_pair_is_gone() {
    let h = one_network().await;
    let a = h.engine.attach(prepared("n1", "e1")).await.unwrap();
    h.kernel.delete_behind_back(a.record.host_ifname.as_str());
    let (_, _, plan) = h
        .engine
        .join(&a.record.key, std::path::Path::new("/run/sandbox/e1"))
        .await
        .unwrap();
    assert!(plan
        .steps()
        .any(|s| matches!(s, crate::plan::endpoint::Step::CreatePair(_))));
    assert!(h.kernel.links().contains_key(a.container_end.as_str()));
}

#[tokio::test]
async fn a_failed_publish_puts_the_previous_ports_back() {
    let h = one_network().await;
    let a = h.engine.attach(prepared("n1", "e1")).await.unwrap();
    let k = a.record.key.clone();
    h.engine.publish(&k, vec![tcp(8080, 80)]).await.unwrap();
    h.fw.fail("add_ports");
    let e = h.engine.publish(&k, vec![tcp(9090, 80)]).await.unwrap_err();
    assert!(e.to_string().contains("injected"), "{e}");
    assert_eq!(
        h.engine.endpoint(&k).await.unwrap().ports[0].host_port,
        8080
    );
    assert_eq!(h.fw.ports()[&a.record.host_ifname][0].host_port, 8080);
}

#[tokio::test]
async fn every_kind_restores_a_missing_bridge() {
    for kind in [EndpointKind::Managed, EndpointKind::Prepared] {
        let h = one_network().await;
        h.kernel.add_netns("/run/netns/c0");
        let before = h
            .engine
            .attach(managed("n1", "c0", "/run/netns/c0"))
            .await
            .unwrap();
        assert!(h.kernel.delete_behind_back("n1"));
        let req = match kind {
            EndpointKind::Managed => managed("n1", "c1", NS1),
            EndpointKind::Prepared => prepared("n1", "e1"),
        };
        let a = h.engine.attach(req).await.unwrap();
        assert!(matches!(
            &a.plan.stages[0][0],
            crate::plan::endpoint::Step::RestoreNetwork(_)
        ));
        let links = h.kernel.links();
        let bridge = links["n1"].index;
        assert_eq!(links[a.record.host_ifname.as_str()].master, Some(bridge));
        assert_eq!(
            links[before.record.host_ifname.as_str()].master,
            Some(bridge),
            "{kind}: existing endpoints are put back on the new bridge"
        );
    }
}

#[tokio::test]
async fn repair_bridge_puts_it_back_once() {
    let h = one_network().await;
    let a = h.engine.attach(managed("n1", "c1", NS1)).await.unwrap();
    assert!(!h.engine.repair_bridge(&a.record.key.network).await.unwrap());
    h.kernel.delete_behind_back("n1");
    assert!(h.engine.repair_bridge(&a.record.key.network).await.unwrap());
    let links = h.kernel.links();
    assert_eq!(
        links[a.record.host_ifname.as_str()].master,
        Some(links["n1"].index)
    );
    assert!(h
        .engine
        .check_endpoint(&a.record.key)
        .await
        .unwrap()
        .is_empty());
}

/// The undo runs in reverse: what was done last is undone first, across executors.
#[tokio::test]
async fn the_undo_runs_in_reverse_order() {
    use crate::firewall::PortRules;
    use crate::kernel::{BridgePort, PairSpec};
    use crate::plan::endpoint::{EndpointPlan, Op, Step};
    use crate::types::MacAddr;

    let h = one_network().await;
    let pair = |host: &str| PairSpec {
        host: IfName::new(host).unwrap(),
        mtu: 1500,
        bridge: IfName::new("n1").unwrap(),
        bridge_index: None,
        peer: IfName::new(&format!("{host}p")).unwrap(),
        peer_mac: MacAddr([2, 0, 0, 0, 0, 1]),
        peer_netns: None,
    };
    let rules = PortRules {
        id: IfName::new("vb").unwrap(),
        network: NetworkName::new("n1").unwrap(),
        bridge: IfName::new("n1").unwrap(),
        subnet4: "10.1.0.0/24".parse().unwrap(),
        ip4: "10.1.0.9".parse().unwrap(),
        ip6: None,
        ports: vec![PortMapping {
            protocol: Protocol::Tcp,
            host_ip: None,
            host_port: 8080,
            container_port: 80,
        }],
    };
    let plan = EndpointPlan {
        op: Op::Attach,
        key: key("n1", "c1", "eth0"),
        kind: EndpointKind::Managed,
        reserved: None,
        stages: vec![
            vec![Step::CreatePair(pair("va"))],
            vec![Step::PublishPorts(rules)],
            vec![Step::CreatePair(pair("vb"))],
            vec![Step::ConfigurePort(BridgePort {
                name: IfName::new("va").unwrap(),
                alias: "x".into(),
                hairpin: false,
                isolated: false,
                neigh_suppress: false,
                proxy_arp_wifi: false,
                enslave: None,
            })],
        ],
    };
    h.kernel.fail("configure_port");
    h.kernel.clear_journal();
    let e = h.engine.apply(&plan).await.unwrap_err();
    assert!(e.to_string().contains("configure_port"), "{e}");
    assert_eq!(
        pair_journal(&h, &["retire", "create pair"]),
        vec!["create pair va", "create pair vb", "retire vb", "retire va"]
    );
    assert!(h.fw.ports().is_empty(), "the ports are withdrawn");
    let fw: Vec<String> =
        h.fw.journal()
            .into_iter()
            .filter(|j| j.contains("ports"))
            .collect();
    assert_eq!(fw, vec!["add ports of vb", "remove ports of vb"]);
    assert!(h.veths().is_empty(), "{:?}", h.veths());
}

#[tokio::test]
async fn a_first_attach_removes_links_left_under_its_names_before_building() {
    let h = one_network().await;
    let p = prepared("n1", "e1");
    let host = naming::host_veth_name(&p.key());
    let temp = naming::peer_temp_name(&host);
    for name in [host.as_str(), temp.as_str()] {
        h.kernel
            .add_host_link(name, crate::netlink::LinkKind::Veth, None);
    }
    let stale = h.kernel.links()[host.as_str()].index;
    h.kernel.clear_journal();
    let a = h.engine.attach(p).await.unwrap();
    assert!(a.created);
    assert_eq!(
        pair_journal(&h, &["delete", "create pair"]),
        vec![
            format!("delete {host}"),
            format!("delete {temp}"),
            format!("create pair {host}"),
        ]
    );
    let built = h.kernel.links()[host.as_str()].clone();
    assert_ne!(built.index, stale, "the leftover was kept");
    assert_eq!(built.master, Some(h.kernel.links()["n1"].index));
}
