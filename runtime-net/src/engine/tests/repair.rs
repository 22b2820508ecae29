//! Targeted repair against the fake kernel and firewall: each object put back when it drifted,
//! nothing changed (and `false` reported) when it is in place.

use super::*;
use crate::firewall::Firewall as _;

#[tokio::test]
async fn a_deleted_bridge_comes_back_with_its_ports() {
    let h = Harness::new().await;
    let spec = h.network("n1", "10.1.0.0/24").await;
    let a = h.attach_c1().await;
    let bridge = spec.bridge.to_string();
    assert!(
        !h.engine.repair_bridge_link(&bridge).await.unwrap(),
        "in place"
    );
    assert!(h.kernel.delete_behind_back(&bridge));
    assert!(h.engine.repair_bridge_link(&bridge).await.unwrap());
    let links = h.kernel.links();
    let br = &links[&bridge];
    assert_eq!(links[a.record.host_ifname.as_str()].master, Some(br.index));
    assert!(!h.engine.repair_bridge_link(&bridge).await.unwrap(), "once");
    assert!(
        !h.engine.repair_bridge_link("foreign0").await.unwrap(),
        "not ours"
    );
}

#[tokio::test]
async fn gateway_address_and_up_state_come_back() {
    let h = Harness::new().await;
    let spec = h.network("n1", "10.1.0.0/24").await;
    let bridge = spec.bridge.to_string();
    h.kernel.change_behind_back(&bridge, |l| {
        l.addrs.clear();
        l.up = false;
    });
    assert!(h.engine.repair_bridge_link(&bridge).await.unwrap());
    let l = &h.kernel.links()[&bridge];
    assert!(l.up);
    assert_eq!(l.addrs, vec!["10.1.0.1/24".parse().unwrap()]);
    h.kernel.clear_journal();
    assert!(!h.engine.repair_bridge_link(&bridge).await.unwrap());
    assert!(h.kernel.journal().is_empty(), "{:?}", h.kernel.journal());
}

#[tokio::test]
async fn a_port_cut_off_its_bridge_is_put_back() {
    let h = Harness::new().await;
    h.network("n1", "10.1.0.0/24").await;
    let a = h.attach_c1().await;
    let veth = a.record.host_ifname.to_string();
    let master = h.kernel.links()[&veth].master;
    // A port in place costs one read.
    let reads = h.kernel.reads_of(&veth);
    assert!(!h.engine.repair_port(&veth).await.unwrap(), "in place");
    assert_eq!(
        h.kernel.reads_of(&veth),
        reads + 1,
        "one read when in place"
    );
    h.kernel.change_behind_back(&veth, |l| l.master = None);
    let reads = h.kernel.reads_of(&veth);
    assert!(h.engine.repair_port(&veth).await.unwrap());
    assert_eq!(h.kernel.links()[&veth].master, master);
    // Cut off: read again under the endpoint's lock before the repair (then the repair's own).
    assert!(
        h.kernel.reads_of(&veth) > reads + 1,
        "read again before repair"
    );
    assert!(!h.engine.repair_port(&veth).await.unwrap());
    // Not an endpoint's (or detached): nothing to do.
    assert!(!h.engine.repair_port("snv000000000000").await.unwrap());
    h.engine.detach(&a.record.key).await.unwrap();
    assert!(!h.engine.repair_port(&veth).await.unwrap());
}

#[tokio::test]
async fn a_deleted_host_end_is_built_again_with_the_same_address() {
    let h = Harness::new().await;
    h.network("n1", "10.1.0.0/24").await;
    let a = h.attach_c1().await;
    let key = a.record.key.to_string();
    let veth = a.record.host_ifname.to_string();
    let before = h.kernel.ns_links("/run/netns/c1").unwrap()["eth0"].clone();
    assert!(!h.engine.repair_endpoint(&key).await.unwrap(), "in place");
    assert!(h.kernel.delete_behind_back(&veth));
    assert!(!h
        .kernel
        .ns_links("/run/netns/c1")
        .unwrap()
        .contains_key("eth0"));
    assert!(h.engine.repair_endpoint(&key).await.unwrap());
    let eth0 = &h.kernel.ns_links("/run/netns/c1").unwrap()["eth0"];
    assert_eq!(
        (&eth0.mac, &eth0.addrs, &eth0.gateways, eth0.up),
        (&before.mac, &before.addrs, &before.gateways, true)
    );
    assert!(h.kernel.links()[&veth].master.is_some());
    assert!(!h.engine.repair_endpoint(&key).await.unwrap(), "once");
    assert_eq!(
        h.engine.endpoint(&a.record.key).await.unwrap().ipv4,
        a.record.ipv4,
        "the record is untouched"
    );
    // Its namespace gone: nothing to build (the full pass reclaims it).
    h.kernel.remove_netns("/run/netns/c1");
    assert!(!h.engine.repair_endpoint(&key).await.unwrap());
    // Detached, or never an endpoint: nothing to do.
    h.kernel.add_netns("/run/netns/c1");
    h.engine.detach(&a.record.key).await.unwrap();
    assert!(!h.engine.repair_endpoint(&key).await.unwrap());
    assert!(!h.engine.repair_endpoint("n1/nobody/eth0").await.unwrap());
    assert!(!h.engine.repair_endpoint("not a key").await.unwrap());
}

#[tokio::test]
async fn a_flushed_firewall_comes_back_whole() {
    let h = Harness::new().await;
    let spec = h.network("n1", "10.1.0.0/24").await;
    h.kernel.add_netns("/run/netns/c1");
    let mut req = managed("n1", "c1", "/run/netns/c1");
    req.ports = vec![tcp(8080, 80)];
    let a = h.engine.attach(req).await.unwrap();
    h.fw.ensure_base().unwrap(); // as Engine::new does
    assert!(!h.engine.repair_firewall().await.unwrap(), "in place");
    h.fw.flush_behind_back();
    assert!(!h.fw.base_in_place().unwrap());
    assert!(h.engine.repair_firewall().await.unwrap());
    assert!(h.fw.base_in_place().unwrap());
    assert_eq!(h.fw.networks(), vec![spec.name.clone()]);
    assert_eq!(
        h.fw.ports().keys().cloned().collect::<Vec<_>>(),
        vec![a.record.host_ifname.clone()]
    );
    assert!(!h.engine.repair_firewall().await.unwrap(), "once");
    // One endpoint's ports removed from outside: only those re-installed.
    h.fw.drop_ports_behind_back(&a.record.host_ifname);
    assert!(h.engine.repair_firewall().await.unwrap());
    assert_eq!(h.fw.ports().len(), 1);
}
