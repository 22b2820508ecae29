//! The observer hook at the pipeline's record point: told an endpoint is up only once it is
//! recorded and built (never for a failed attach), told it is down before its address is
//! released (and up again if the release fails), told about networks as they are recorded, and
//! told everything recorded when it is installed.

use std::sync::Mutex;

use super::*;
use crate::engine::Observer;
use crate::types::{EndpointRecord, HostName};

const NS1: &str = "/run/netns/c1";

/// Records each call.
#[derive(Default)]
struct Journal {
    calls: Mutex<Vec<String>>,
}

impl Journal {
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut self.calls.lock().unwrap())
    }
}

impl Observer for Journal {
    fn network_up(&self, spec: &NetworkSpec) {
        self.calls
            .lock()
            .unwrap()
            .push(format!("net+ {}", spec.name));
    }
    fn network_down(&self, name: &NetworkName) {
        self.calls.lock().unwrap().push(format!("net- {name}"));
    }
    fn endpoint_up(&self, _spec: &NetworkSpec, rec: &EndpointRecord) {
        let names: Vec<&str> = rec.names.iter().map(|n| n.as_str()).collect();
        self.calls.lock().unwrap().push(format!(
            "ep+ {} {} {}",
            rec.key.container_id,
            rec.ipv4.ip(),
            names.join(",")
        ));
    }
    fn endpoint_down(&self, key: &EndpointKey) {
        self.calls
            .lock()
            .unwrap()
            .push(format!("ep- {}", key.container_id));
    }
}

async fn observed() -> (Harness, Arc<Journal>) {
    let h = Harness::new().await;
    let j = Arc::new(Journal::default());
    assert!(h.engine.set_observer(j.clone()).await.unwrap());
    assert!(
        !h.engine.set_observer(j.clone()).await.unwrap(),
        "installed once"
    );
    h.kernel.add_netns(NS1);
    (h, j)
}

fn named(req: &mut AttachRequest, names: &[&str]) {
    req.names = names.iter().map(|n| HostName::new(n).unwrap()).collect();
}

#[tokio::test]
async fn attach_and_detach_are_told_at_the_record_point() {
    let (h, j) = observed().await;
    h.network("n1", "10.1.0.0/24").await;
    assert_eq!(j.take(), ["net+ n1"]);
    let mut req = managed("n1", "c1", NS1);
    named(&mut req, &["web", "www"]);
    let a = h.engine.attach(req.clone()).await.unwrap();
    assert_eq!(a.record.names.len(), 2, "names are recorded");
    assert_eq!(j.take(), ["ep+ c1 10.1.0.2 web,www"]);
    // A retry is told again (same record: an idempotent re-registration).
    h.engine.attach(req).await.unwrap();
    assert_eq!(j.take(), ["ep+ c1 10.1.0.2 web,www"]);
    h.engine.detach(&a.record.key).await.unwrap();
    assert_eq!(j.take(), ["ep- c1"]);
    // Nothing recorded: nothing told.
    h.engine.detach(&a.record.key).await.unwrap();
    assert!(j.take().is_empty());
    h.engine
        .delete_network(&NetworkName::new("n1").unwrap(), false)
        .await
        .unwrap();
    assert_eq!(j.take(), ["net- n1"]);
}

#[tokio::test]
async fn a_failed_attach_is_never_told() {
    let (h, j) = observed().await;
    h.network("n1", "10.1.0.0/24").await;
    j.take();
    for op in ["create_pair", "configure"] {
        h.kernel.fail(op);
        let mut req = managed("n1", "c1", NS1);
        named(&mut req, &["web"]);
        assert!(h.engine.attach(req).await.is_err(), "{op}");
        assert!(
            j.take().is_empty(),
            "{op}: told about an endpoint that was rolled back"
        );
    }
}

#[tokio::test]
async fn a_failed_detach_keeps_the_names_and_a_failed_release_restores_them() {
    let (h, j) = observed().await;
    h.network("n1", "10.1.0.0/24").await;
    let mut req = managed("n1", "c1", NS1);
    named(&mut req, &["web"]);
    let a = h.engine.attach(req).await.unwrap();
    j.take();
    // Teardown fails: the record stays, and so do its names (nothing told).
    h.kernel.fail("retire_link");
    assert!(h.engine.detach(&a.record.key).await.is_err());
    assert!(j.take().is_empty());
    // The release fails after teardown: down, then up again (still recorded).
    h.engine.store.fail_next_write("disk full (injected)");
    assert!(h.engine.detach(&a.record.key).await.is_err());
    assert_eq!(j.take(), ["ep- c1", "ep+ c1 10.1.0.2 web"]);
    assert_eq!(h.records().await.len(), 1);
    h.engine.detach(&a.record.key).await.unwrap();
    assert_eq!(j.take(), ["ep- c1"]);
}

#[tokio::test]
async fn a_new_observer_is_told_what_is_recorded() {
    let h = Harness::new().await;
    h.network("n1", "10.1.0.0/24").await;
    h.kernel.add_netns(NS1);
    let mut req = managed("n1", "c1", NS1);
    named(&mut req, &["web"]);
    h.engine.attach(req).await.unwrap();
    let h = h.restart();
    let j = Arc::new(Journal::default());
    assert!(h.engine.set_observer(j.clone()).await.unwrap());
    assert_eq!(j.take(), ["net+ n1", "ep+ c1 10.1.0.2 web"]);
}
