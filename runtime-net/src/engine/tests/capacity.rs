//! A network takes as many endpoints as its bridge has ports: the next attach is refused as
//! `NetworkFull` before anything is built, and the kernel's `EXFULL` is the same refusal.

use super::*;
use crate::engine::EngineError;

fn is_full(e: &EngineError, net: &str, capacity: usize) -> bool {
    matches!(e, EngineError::NetworkFull { network, capacity: c }
        if network.as_str() == net && *c == capacity)
}

#[tokio::test]
async fn a_full_network_refuses_the_next_attach_and_builds_nothing() {
    let h = Harness::new().await.with_port_capacity(3);
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
