//! Detach: teardown keeps going past each failing step and the record is released only when the
//! kernel side is gone, so a retry finishes the job.

use super::*;

const NS1: &str = "/run/netns/c1";

async fn attached() -> (Harness, crate::types::EndpointRecord) {
    let h = Harness::new().await;
    h.network("n1", "10.1.0.0/24").await;
    h.kernel.add_netns(NS1);
    let mut req = managed("n1", "c1", NS1);
    req.ports = vec![tcp(8080, 80)];
    let a = h.engine.attach(req).await.unwrap();
    (h, a.record)
}

#[tokio::test]
async fn detach_withdraws_ports_retires_the_pair_and_releases_idempotently() {
    let (h, rec) = attached().await;
    let released = h.engine.detach(&rec.key).await.unwrap();
    assert_eq!(released, Some(rec.clone()));
    assert!(h.veths().is_empty());
    assert!(h.kernel.ns_links(NS1).unwrap().is_empty());
    assert!(h.fw.ports().is_empty());
    assert!(h.records().await.is_empty());
    assert_eq!(h.engine.detach(&rec.key).await.unwrap(), None);
}

/// Detach fails at `op`: the error is reported, the other steps still ran, the record stays;
/// the next detach completes.
async fn keeps_going_after(op: &str, on_firewall: bool) {
    let (h, rec) = attached().await;
    if on_firewall {
        h.fw.fail(op);
    } else {
        h.kernel.fail(op);
    }
    let e = h.engine.detach(&rec.key).await.unwrap_err();
    assert!(e.to_string().contains("injected"), "{op}: {e}");
    assert_eq!(
        h.records().await,
        vec![rec.clone()],
        "{op}: record kept for a retry"
    );
    if on_firewall {
        assert!(h.veths().is_empty(), "{op}: the pair was still retired");
    } else {
        assert!(
            h.fw.ports().is_empty(),
            "{op}: the ports were still withdrawn"
        );
    }
    assert_eq!(h.engine.detach(&rec.key).await.unwrap(), Some(rec));
    assert!(h.veths().is_empty() && h.fw.ports().is_empty() && h.records().await.is_empty());
}

#[tokio::test]
async fn detach_keeps_going_when_withdrawing_ports_fails() {
    keeps_going_after("remove_ports", true).await;
}

#[tokio::test]
async fn detach_keeps_going_when_retiring_the_pair_fails() {
    keeps_going_after("retire_link", false).await;
}

#[tokio::test]
async fn detach_keeps_the_record_when_releasing_it_fails() {
    let (h, rec) = attached().await;
    h.engine.store.fail_next_write("disk full (injected)");
    let e = h.engine.detach(&rec.key).await.unwrap_err();
    assert!(e.to_string().contains("disk full"), "{e}");
    assert!(
        h.veths().is_empty() && h.fw.ports().is_empty(),
        "torn down first"
    );
    assert_eq!(h.records().await, vec![rec.clone()]);
    assert_eq!(h.engine.detach(&rec.key).await.unwrap(), Some(rec));
    assert!(h.records().await.is_empty());
}

#[tokio::test]
async fn detach_without_a_record_removes_what_a_crashed_attach_left() {
    let h = Harness::new().await;
    h.network("n1", "10.1.0.0/24").await;
    let k = key("n1", "ghost", "eth0");
    let leftover = naming_host(&k);
    h.kernel
        .add_host_link(&leftover, crate::netlink::LinkKind::Veth, None);
    assert_eq!(h.engine.detach(&k).await.unwrap(), None);
    assert!(!h.kernel.links().contains_key(&leftover));
}

#[tokio::test]
async fn a_network_deleted_with_force_detaches_its_endpoints_first() {
    let (h, rec) = attached().await;
    let e = h
        .engine
        .delete_network(&rec.key.network, false)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("still has 1 endpoint"), "{e}");
    h.engine
        .delete_network(&rec.key.network, true)
        .await
        .unwrap();
    assert!(h.kernel.links().is_empty(), "{:?}", h.kernel.links());
    assert!(h.fw.networks().is_empty() && h.fw.ports().is_empty());
    assert!(h.engine.networks().await.unwrap().is_empty());
}

fn naming_host(k: &EndpointKey) -> String {
    crate::naming::host_veth_name(k).to_string()
}
