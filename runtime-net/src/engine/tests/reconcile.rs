//! Reconciliation and repair decisions against the fake kernel: reclaiming endpoints that are
//! gone, removing orphans, re-installing missing ports, leaving live prepared endpoints alone,
//! old state directories.

use super::*;
use crate::firewall::Firewall as _;
use crate::netlink::LinkKind;

#[tokio::test]
async fn reconcile_reclaims_gone_endpoints_and_removes_orphans() {
    let h = Harness::new().await;
    h.network("n1", "10.1.0.0/24").await;
    for c in ["live", "dead"] {
        h.kernel.add_netns(&format!("/run/netns/{c}"));
        let mut req = managed("n1", c, &format!("/run/netns/{c}"));
        req.ports = vec![tcp(if c == "live" { 8080 } else { 8081 }, 80)];
        h.engine.attach(req).await.unwrap();
    }
    let live = h.engine.endpoint(&key("n1", "live", "eth0")).await.unwrap();
    // The dead container's namespace is gone (with its pair); an orphan link and orphan rules
    // appear; the live endpoint's port rules are flushed from outside.
    h.kernel.remove_netns("/run/netns/dead");
    h.kernel
        .add_host_link("snvorphan", LinkKind::Veth, Some("shimnet:ep=n1/x/eth0"));
    h.kernel.add_host_link("foreign0", LinkKind::Bridge, None);
    h.fw.drop_ports_behind_back(&live.host_ifname);
    let r = h.engine.reconcile().await.unwrap();
    assert_eq!(r.reclaimed, 1, "{r:?}");
    assert_eq!(r.links_removed, 1, "{r:?}");
    assert!(r.errors.is_empty(), "{r:?}");
    assert_eq!(h.records().await, vec![live.clone()]);
    let links = h.kernel.links();
    assert!(!links.contains_key("snvorphan"));
    assert!(links.contains_key("foreign0"), "not shimnet's: kept");
    assert_eq!(
        h.fw.ports().keys().cloned().collect::<Vec<_>>(),
        vec![live.host_ifname.clone()],
        "the dead endpoint's ports purged, the live one's re-installed"
    );
    // A second pass finds nothing to do.
    let again = h.engine.reconcile().await.unwrap();
    assert_eq!((again.reclaimed, again.links_removed), (0, 0));
}

/// Links left in the reap group (a daemon killed before its background deletion, a retire cut
/// short) are deleted whatever their alias or record says; the record stays for the caller's
/// detach to release.
#[tokio::test]
async fn reconcile_deletes_every_link_left_in_the_reap_group() {
    let h = Harness::new().await;
    h.network("n1", "10.1.0.0/24").await;
    let a = h.attach_c1().await;
    h.kernel.strand_in_reap_group(a.record.host_ifname.as_str());
    h.kernel.add_host_link("snvnoalias", LinkKind::Veth, None);
    h.kernel.strand_in_reap_group("snvnoalias");
    h.kernel.add_host_link("foreign1", LinkKind::Veth, None);
    let r = h.engine.reconcile().await.unwrap();
    assert_eq!((r.links_removed, r.reclaimed), (2, 0), "{r:?}");
    let links = h.kernel.links();
    assert!(!links.contains_key(a.record.host_ifname.as_str()));
    assert!(!links.contains_key("snvnoalias"));
    assert!(
        links.contains_key("foreign1"),
        "not in the group, not shimnet's: kept"
    );
    assert_eq!(h.records().await, vec![a.record.clone()]);
    // The detach that follows finds the pair gone and releases the record.
    let gone = h.engine.detach(&a.record.key).await.unwrap();
    assert_eq!(gone.map(|r| r.key), Some(a.record.key.clone()));
    assert!(h.records().await.is_empty());
}

#[tokio::test]
async fn a_full_pass_recreating_a_bridge_puts_its_ports_back() {
    let h = Harness::new().await;
    let spec = h.network("n1", "10.1.0.0/24").await;
    let a = h.attach_c1().await;
    assert!(h.kernel.delete_behind_back(spec.bridge.as_str()));
    let r = h.engine.reconcile().await.unwrap();
    assert_eq!(r.ports_reattached, 1, "{r:?}");
    let links = h.kernel.links();
    assert_eq!(
        links[a.record.host_ifname.as_str()].master,
        Some(links[spec.bridge.as_str()].index)
    );
    let r = h.engine.reconcile().await.unwrap();
    assert_eq!(r.ports_reattached, 0, "in place");
}

#[tokio::test]
async fn a_prepared_endpoint_lives_while_its_pair_does() {
    let h = Harness::new().await;
    h.network("n1", "10.1.0.0/24").await;
    let a = h.engine.attach(prepared("n1", "e1")).await.unwrap();
    // Handed over into a sandbox the daemon cannot see.
    h.kernel
        .move_into(a.container_end.as_str(), "/invisible/sandbox", "eth0");
    h.engine
        .join(&a.record.key, std::path::Path::new("/hidden/sandbox"))
        .await
        .unwrap();
    let r = h.engine.reconcile().await.unwrap();
    assert_eq!(r.reclaimed, 0, "{r:?}");
    assert_eq!(h.records().await.len(), 1);
    // The sandbox dies and takes the pair with it: reclaimed.
    h.kernel.remove_netns("/invisible/sandbox");
    let r = h.engine.reconcile().await.unwrap();
    assert_eq!(r.reclaimed, 1, "{r:?}");
    assert!(h.records().await.is_empty());
}

#[tokio::test]
async fn reconcile_restores_network_rules_and_removes_unrecorded_ones() {
    let h = Harness::new().await;
    let spec = h.network("n1", "10.1.0.0/24").await;
    h.fw.drop_network_behind_back(&spec.name);
    let stray = NetworkName::new("gone").unwrap();
    h.fw.apply_network(&crate::firewall::NetworkRules {
        name: stray.clone(),
        bridge: IfName::new("gone").unwrap(),
        extensions: vec![],
        subnet4: "10.9.0.0/24".parse().unwrap(),
        subnet6: None,
        masquerade: true,
        icc: true,
        internal: false,
        no_masquerade_to: vec![],
        allow_from: vec![],
    })
    .unwrap();
    let r = h.engine.reconcile().await.unwrap();
    assert_eq!((r.networks, r.firewall_removed), (1, 1), "{r:?}");
    assert_eq!(h.fw.networks(), vec![spec.name]);
}

#[tokio::test]
async fn records_of_an_old_state_dir_keep_working() {
    let h = Harness::new().await;
    h.network("n1", "10.1.0.0/24").await;
    let m = h.attach_c1().await;
    let p = h.engine.attach(prepared("n1", "e1")).await.unwrap();
    let h = h.restart();
    // Rewrite both records as an older version wrote them (no kind) and the network with the
    // old MAC flag; the store reads them as before.
    drop(h.engine);
    crate::store::legacy::tests_support::rewrite_as_old(h.dir.path());
    let h = Harness {
        engine: Engine::from_parts(
            Store::open(h.dir.path()).unwrap(),
            h.kernel.kernel(),
            h.fw.clone(),
        ),
        ..h
    };
    let recs = h.records().await;
    let kinds: Vec<_> = recs
        .iter()
        .map(|r| (r.key.ifname.to_string(), r.kind))
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("eth0".to_string(), EndpointKind::Managed),
            ("eth".to_string(), EndpointKind::Prepared)
        ]
    );
    assert_eq!(
        h.engine
            .network(&m.record.key.network)
            .await
            .unwrap()
            .mac_prefix
            .to_string(),
        "02:42"
    );
    // The old prepared endpoint is still recognised as one: alive while its pair is.
    let r = h.engine.reconcile().await.unwrap();
    assert_eq!(r.reclaimed, 0, "{r:?}");
    assert!(h
        .engine
        .check_endpoint(&p.record.key)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        h.engine.detach(&p.record.key).await.unwrap().unwrap().kind,
        EndpointKind::Prepared
    );
}

#[tokio::test]
async fn only_a_dual_stack_network_keeps_ipv6_on_its_bridge() {
    let h = Harness::new().await;
    let v4 = h.network("n1", "10.1.0.0/24").await;
    let mut req = NetworkRequest::new(
        NetworkName::new("n6").unwrap(),
        "10.2.0.0/24".parse().unwrap(),
    );
    req.subnet6 = Some("fd00:6::/64".parse().unwrap());
    let v6 = h.engine.create_network(req).await.unwrap();
    let ipv6_off = |b: &IfName| h.kernel.sysctl(&format!("net/ipv6/conf/{b}/disable_ipv6"));
    assert_eq!(ipv6_off(&v4.bridge).as_deref(), Some("1"));
    assert_eq!(ipv6_off(&v6.bridge), None);
    assert_eq!(
        h.kernel.sysctl("net/ipv6/conf/all/forwarding").as_deref(),
        Some("1")
    );
}
