//! A network takes as many endpoints as its bridges have ports: past its main bridge they go to
//! extension bridges joined to it by trunks; once every bridge it may have is full, the next
//! attach is refused as `NetworkFull` before anything is built, and the kernel's `EXFULL` is the
//! same refusal.

use super::*;
use crate::engine::EngineError;

fn is_full(e: &EngineError, net: &str, capacity: usize) -> bool {
    matches!(e, EngineError::NetworkFull { network, capacity: c }
        if network.as_str() == net && *c == capacity)
}

#[tokio::test]
async fn a_full_network_refuses_the_next_attach_and_builds_nothing() {
    let mut h = Harness::new().await.with_port_capacity(3);
    h.engine = h.engine.with_max_extensions(0);
    h.network("n1", "10.1.0.0/24").await;
    h.network("n2", "10.2.0.0/24").await;
    for i in 0..3 {
        h.engine
            .attach(prepared("n1", &format!("c{i}")))
            .await
            .unwrap();
    }
    let (links, records, fw) = (h.kernel.links(), h.records().await, h.fw.journal());
    h.kernel.clear_journal();

    let e = h.engine.attach(prepared("n1", "c9")).await.unwrap_err();
    assert!(is_full(&e, "n1", 3), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("network n1 is full") && msg.contains('3'),
        "{msg}"
    );
    // Nothing built, recorded or allowed.
    assert!(h.kernel.journal().is_empty(), "{:?}", h.kernel.journal());
    assert_eq!(h.kernel.links(), links);
    assert_eq!(h.records().await, records);
    assert_eq!(h.fw.journal(), fw);

    // A retry of an endpoint it holds is still answered; another network is not affected.
    let again = h.engine.attach(prepared("n1", "c1")).await.unwrap();
    assert!(!again.created);
    h.engine.attach(prepared("n2", "c9")).await.unwrap();

    // Status counts the ports.
    let s = h.engine.status().await.unwrap();
    let n1 = s
        .capacity
        .iter()
        .find(|c| c.network.as_str() == "n1")
        .unwrap();
    assert_eq!((n1.endpoints, n1.ports_used, n1.ports_capacity), (3, 3, 3));
    let n2 = s
        .capacity
        .iter()
        .find(|c| c.network.as_str() == "n2")
        .unwrap();
    assert_eq!((n2.ports_used, n2.ports_capacity), (1, 3));

    // A detach frees a place.
    h.engine.detach(&key("n1", "c0", "eth")).await.unwrap();
    let a = h.engine.attach(prepared("n1", "c9")).await.unwrap();
    assert!(a.created);
}

#[tokio::test]
async fn the_kernels_exchange_full_is_the_same_refusal_and_leaves_nothing() {
    // The store's count says there is room (the default 1023), the bridge says no: e.g. an
    // admin enslaved links of their own.
    let h = Harness::new().await;
    h.network("n1", "10.1.0.0/24").await;
    h.kernel.limit_bridge_ports(2);
    for i in 0..2 {
        h.engine
            .attach(prepared("n1", &format!("c{i}")))
            .await
            .unwrap();
    }
    let (links, records) = (h.kernel.links(), h.records().await);
    let e = h.engine.attach(prepared("n1", "c9")).await.unwrap_err();
    assert!(is_full(&e, "n1", crate::netlink::BRIDGE_MAX_PORTS), "{e:?}");
    assert_eq!(h.kernel.links(), links);
    assert_eq!(h.records().await, records);
}

/// The proxy entries a network with extensions 1 and 2 should have, worked out from the
/// records: each extension knows the gateway (behind its trunk end) and its own endpoints
/// (behind their ports); main knows its own endpoints (behind their ports) and every endpoint
/// on an extension (behind that extension's trunk end).
fn proxies_wanted(
    spec: &NetworkSpec,
    records: &[crate::types::EndpointRecord],
) -> std::collections::HashSet<crate::kernel::ProxyEntry> {
    use crate::kernel::ProxyEntry;
    use crate::naming::{extension_bridge_name, trunk_names};
    let gw = crate::types::MacAddr(crate::netlink::bridge_mac(spec.bridge.as_str()));
    let mut want = std::collections::HashSet::new();
    for i in 1..=2u8 {
        want.insert(ProxyEntry {
            bridge: extension_bridge_name(&spec.name, i),
            port: trunk_names(&spec.name, i).1,
            port_is_trunk: true,
            ip: spec.gateway,
            mac: gw,
        });
    }
    for r in records {
        let home = crate::plan::bridges::endpoint_bridge(spec, r);
        want.insert(ProxyEntry {
            bridge: home,
            port: r.host_ifname.clone(),
            port_is_trunk: false,
            ip: r.ipv4.ip(),
            mac: r.mac,
        });
        if let Some(i) = r.extension {
            want.insert(ProxyEntry {
                bridge: spec.bridge.clone(),
                port: trunk_names(&spec.name, i).0,
                port_is_trunk: true,
                ip: r.ipv4.ip(),
                mac: r.mac,
            });
        }
    }
    want
}

#[tokio::test]
async fn endpoints_past_the_main_bridge_go_to_extensions_joined_by_trunks() {
    use crate::naming::{extension_bridge_name, trunk_names};
    // Bridges of 4 ports, a /24: two extensions; main keeps 1 port for endpoints (besides two
    // trunk ends and the anchor), each extension 3.
    let h = Harness::new().await.with_port_capacity(4);
    let spec = h.network("n1", "10.1.0.0/24").await;
    let layout = h.engine.bridge_layout(&spec);
    assert_eq!((layout.extensions, layout.total()), (2, 7));
    let mut placed = Vec::new();
    for i in 0..7 {
        let a = h
            .engine
            .attach(prepared("n1", &format!("c{i}")))
            .await
            .unwrap();
        placed.push(a.record.extension);
    }
    let (s1, s2) = (Some(1), Some(2));
    assert_eq!(placed, vec![None, s1, s1, s1, s2, s2, s2]);
    // The entries of plan::proxy; proxy ARP on the trunks' main ends, ARP suppression on their
    // extension ends and on the anchor, which is on the main bridge and never forwards.
    assert_eq!(
        h.kernel.proxy_entries(),
        proxies_wanted(&spec, &h.records().await)
    );
    let links = h.kernel.links();
    for i in 1..=2u8 {
        let (t, u) = trunk_names(&spec.name, i);
        let (t, u) = (&links[t.as_str()], &links[u.as_str()]);
        assert!(t.proxy_arp_wifi && !t.neigh_suppress, "{t:?}");
        assert!(u.neigh_suppress && !u.proxy_arp_wifi, "{u:?}");
    }
    let (anchor, anchor_peer) = crate::naming::anchor_names(&spec.name);
    let a = &links[anchor.as_str()];
    assert!(
        a.neigh_suppress && a.master == links.get("n1").map(|l| l.index),
        "{a:?}"
    );
    assert!(!links[anchor_peer.as_str()].up && links[anchor_peer.as_str()].master.is_none());
    let index = |n: &str| links.get(n).map(|l| l.index);
    let master = |n: &str| links.get(n).and_then(|l| l.master);
    let main = index("n1");
    for i in 1..=2u8 {
        let ext = extension_bridge_name(&spec.name, i);
        let (to_main, to_ext) = trunk_names(&spec.name, i);
        assert!(index(ext.as_str()).is_some(), "{ext}: {links:?}");
        assert_eq!(master(to_main.as_str()), main);
        assert_eq!(master(to_ext.as_str()), index(ext.as_str()));
        assert_eq!(
            h.kernel
                .sysctl(&format!("net/ipv6/conf/{ext}/disable_ipv6"))
                .as_deref(),
            Some("1")
        );
    }
    for rec in h.records().await {
        let want = match rec.extension {
            None => main,
            Some(i) => index(extension_bridge_name(&spec.name, i).as_str()),
        };
        assert_eq!(master(rec.host_ifname.as_str()), want, "{}", rec.key);
    }
    // All bridges full: refused, nothing built.
    h.kernel.clear_journal();
    let e = h.engine.attach(prepared("n1", "c9")).await.unwrap_err();
    assert!(is_full(&e, "n1", 7), "{e:?}");
    assert!(h.kernel.journal().is_empty());
    let s = h.engine.status().await.unwrap();
    assert_eq!(
        (s.capacity[0].ports_used, s.capacity[0].ports_capacity),
        (7, 7)
    );

    // An extension deleted from outside is rebuilt with its trunk and its ports put back.
    let ext1 = extension_bridge_name(&spec.name, 1);
    assert!(h.kernel.delete_behind_back(ext1.as_str()));
    assert!(h.engine.repair_bridge_link(ext1.as_str()).await.unwrap());
    let links = h.kernel.links();
    let x1 = links.get(ext1.as_str()).map(|l| l.index);
    assert!(x1.is_some());
    let on_x1: Vec<_> = h
        .records()
        .await
        .into_iter()
        .filter(|r| r.extension == Some(1))
        .collect();
    assert_eq!(on_x1.len(), 3);
    for r in &on_x1 {
        assert_eq!(links.get(r.host_ifname.as_str()).unwrap().master, x1);
    }
    // A trunk deleted from outside (both ends go) is rebuilt by its extension's repair.
    let (t2, u2) = trunk_names(&spec.name, 2);
    assert!(h.kernel.delete_behind_back(t2.as_str()));
    assert!(!h.kernel.links().contains_key(u2.as_str()));
    let ext2 = extension_bridge_name(&spec.name, 2);
    assert!(h.engine.repair_bridge_link(ext2.as_str()).await.unwrap());
    assert!(!h.engine.repair_bridge_link(ext2.as_str()).await.unwrap());
    assert!(h.kernel.links().get(t2.as_str()).unwrap().master == main);
    // Both repairs put the lost proxy entries back.
    assert_eq!(
        h.kernel.proxy_entries(),
        proxies_wanted(&spec, &h.records().await)
    );
    // The port repair puts an endpoint back on its own bridge, not the main one.
    let r = &on_x1[0];
    h.kernel
        .change_behind_back(r.host_ifname.as_str(), |l| l.master = None);
    assert!(h.engine.repair_port(r.host_ifname.as_str()).await.unwrap());
    assert_eq!(
        h.kernel.links().get(r.host_ifname.as_str()).unwrap().master,
        x1
    );

    // The main bridge deleted: everything comes back on a restart's reconcile too.
    let h = h.restart().with_port_capacity(4);
    assert!(h.kernel.delete_behind_back("n1"));
    assert!(h.kernel.delete_behind_back(ext2.as_str()));
    let report = h.engine.reconcile().await.unwrap();
    assert!(report.errors.is_empty(), "{report:?}");
    let links = h.kernel.links();
    for rec in h.records().await {
        let b = crate::plan::bridges::endpoint_bridge(&spec, &rec);
        assert_eq!(
            links.get(rec.host_ifname.as_str()).unwrap().master,
            links.get(b.as_str()).map(|l| l.index),
            "{}",
            rec.key
        );
    }
    assert_eq!(
        links.get(t2.as_str()).unwrap().master,
        links.get("n1").map(|l| l.index)
    );
    assert_eq!(
        h.kernel.proxy_entries(),
        proxies_wanted(&spec, &h.records().await)
    );
    // A detach takes its entries away.
    let gone = h
        .records()
        .await
        .into_iter()
        .find(|r| r.extension == Some(2));
    let gone = gone.expect("an endpoint on extension 2");
    h.kernel.clear_journal();
    h.engine.detach(&gone.key).await.unwrap();
    let left = h.records().await;
    assert_eq!(left.len(), 6);
    assert_eq!(h.kernel.proxy_entries(), proxies_wanted(&spec, &left));
    // Its entries (on its own bridge and on the main one) go before its pair is retired: the
    // pair's deletion in the background would hold the kernel's link lock ahead of them.
    let journal = h.kernel.journal();
    let retired = format!("retire {}", gone.host_ifname);
    let at = |line: &str| journal.iter().position(|j| j == line);
    let unproxied: Vec<_> = journal
        .iter()
        .filter(|j| j.starts_with(&format!("unproxy {} ", gone.ipv4.ip())))
        .collect();
    assert_eq!(unproxied.len(), 2, "{journal:?}");
    assert!(
        unproxied.iter().all(|j| at(j) < at(&retired)) && at(&retired).is_some(),
        "{journal:?}"
    );

    // Deleting the network (force) leaves no extension or trunk behind.
    h.engine.delete_network(&spec.name, true).await.unwrap();
    let left: Vec<String> = h.kernel.links().into_keys().collect();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test]
async fn with_icc_off_trunk_main_ends_and_extension_ports_are_isolated() {
    use crate::naming::trunk_names;
    let h = Harness::new().await.with_port_capacity(4);
    let mut req = crate::plan::NetworkRequest::new(
        crate::types::NetworkName::new("n1").unwrap(),
        "10.1.0.0/24".parse().unwrap(),
    );
    req.icc = Some(false);
    let spec = h.engine.create_network(req).await.unwrap();
    for i in 0..3 {
        h.engine
            .attach(prepared("n1", &format!("c{i}")))
            .await
            .unwrap();
    }
    let (to_main, to_ext) = trunk_names(&spec.name, 1);
    let links = h.kernel.links();
    assert!(links.get(to_main.as_str()).unwrap().flags.1);
    assert!(!links.get(to_ext.as_str()).unwrap().flags.1);
    for r in h.records().await {
        assert!(
            links.get(r.host_ifname.as_str()).unwrap().flags.1,
            "{}",
            r.key
        );
    }
}
