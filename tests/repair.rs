//! Event-driven repair against the real kernel: the notification loop in a test-made namespace
//! sees shimnet's objects change (and nothing else), and shimnetd puts each owned kind back
//! after it is broken from outside.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use runtime_net::repair::run::{self, Repairer, RunConfig};
use runtime_net::repair::{driver::Timing, Dirty};
use shimnet::netns::{run_in, NamedNetns};

/// Records what the loop asks for; repairs nothing.
#[derive(Default, Clone)]
struct Recorder {
    seen: Arc<Mutex<Vec<Dirty>>>,
}

impl Repairer for Recorder {
    async fn bridges(&self) -> HashSet<String> {
        HashSet::new()
    }
    async fn repair(&self, d: &Dirty) -> Result<bool, String> {
        self.seen.lock().unwrap().push(d.clone());
        Ok(false)
    }
    fn report(&self, _: &Dirty, _: &Result<bool, String>, _: Duration) {}
}

/// Runs the loop inside `ns` on its own thread until `stop` is dropped.
fn watch(
    ns: &NamedNetns,
    rec: Recorder,
) -> (
    std::thread::JoinHandle<()>,
    tokio::sync::oneshot::Sender<()>,
) {
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let path = ns.path().to_path_buf();
    let h = std::thread::spawn(move || {
        run_in(&path, move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let (l, d) = run::start(std::process::id(), Timing::default())
                    .await
                    .unwrap();
                ready_tx.send(()).unwrap();
                let cfg = RunConfig {
                    timing: Timing::default(),
                    full_every: None,
                };
                run::run(l, d, &rec, cfg, async move {
                    let _ = stop_rx.await;
                })
                .await
                .unwrap();
            })
        })
        .unwrap()
    });
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("loop started");
    (h, stop_tx)
}

#[test]
fn the_loop_reports_owned_objects_and_ignores_the_rest() {
    let ns = NamedNetns::create(&format!("{}-{}", prefix(), tag("rw"))).unwrap();
    let n = ns.name();
    // Owned: a bridge with its owner alias and an address; a peering-marked device; nft table.
    sh(&["ip", "-n", n, "link", "add", "rwbr", "type", "bridge"]);
    sh(&[
        "ip",
        "-n",
        n,
        "link",
        "set",
        "rwbr",
        "alias",
        "shimnet:net=rw",
        "up",
    ]);
    sh(&["ip", "-n", n, "addr", "add", "10.251.0.1/24", "dev", "rwbr"]);
    sh(&[
        "ip", "netns", "exec", n, "nft", "add", "table", "inet", "shimnet",
    ]);
    sh(&["ip", "-n", n, "link", "add", "other", "type", "bridge"]);
    sh(&[
        "ip", "netns", "exec", n, "iptables", "-P", "FORWARD", "ACCEPT",
    ]);
    let rec = Recorder::default();
    let (h, stop) = watch(&ns, rec.clone());

    // Unrelated: another bridge's address, a route on it, another nft table, an iptables chain
    // that is not shimnet's.
    sh(&["ip", "-n", n, "link", "set", "other", "up"]);
    sh(&[
        "ip",
        "-n",
        n,
        "addr",
        "add",
        "10.252.0.1/24",
        "dev",
        "other",
    ]);
    sh(&[
        "ip",
        "-n",
        n,
        "route",
        "add",
        "10.253.0.0/24",
        "via",
        "10.252.0.2",
    ]);
    sh(&[
        "ip", "netns", "exec", n, "nft", "add", "table", "inet", "other",
    ]);
    sh(&["ip", "netns", "exec", n, "iptables", "-N", "NOTOURS"]);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(*rec.seen.lock().unwrap(), vec![], "unrelated changes");

    // Owned, from outside.
    sh(&["ip", "-n", n, "addr", "del", "10.251.0.1/24", "dev", "rwbr"]);
    sh(&[
        "ip", "netns", "exec", n, "nft", "delete", "table", "inet", "shimnet",
    ]);
    sh(&[
        "ip", "netns", "exec", n, "iptables", "-I", "FORWARD", "1", "-j", "ACCEPT",
    ]);
    sh(&[
        "ip",
        "-n",
        n,
        "route",
        "add",
        "10.254.0.0/24",
        "dev",
        "other",
        "proto",
        "201",
    ]);
    sh(&["ip", "-n", n, "link", "del", "rwbr"]);
    let want: HashSet<Dirty> = [
        Dirty::Gateway("rwbr".into()),
        Dirty::NftTable("shimnet".into()),
        Dirty::Iptables("filter".into()),
        Dirty::PeerRoutes,
        Dirty::Bridge("rwbr".into()),
    ]
    .into();
    eventually("every owned change reported", || {
        rec.seen
            .lock()
            .unwrap()
            .iter()
            .cloned()
            .collect::<HashSet<_>>()
            == want
    });
    drop(stop);
    h.join().unwrap();
}
