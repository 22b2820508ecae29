//! The session loop of the etcd source, steered by [`crate::session::Session`]: register (lease,
//! reservation, node record), watch the prefix (resuming after the last revision, or listing
//! again after a compaction), keep the lease alive, back off on failure. Every etcd call is
//! bounded by `dial_timeout_secs`; nothing here ever publishes a peer set that did not come from
//! records actually read, so an outage leaves the running peers in place.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, PutOptions, Txn, TxnOp,
    TxnOpResponse, WatchOptions, WatchStream,
};
use runtime_net::peering::peers::NodeConfig;
use runtime_net::peering::source::{PeerFeed, PeerMeta};

use crate::boot::{kvs, now_unix, reservation_value, within};
use crate::client;
use crate::config::EtcdConfig;
use crate::keys::Keys;
use crate::record::{NodeRecord, Reservation};
use crate::session::{Outcome, Session, Step};
use crate::store::Store;
use crate::view::{ClusterView, Event, Kv};

/// The running etcd source: one session at a time, steered by [`Session`].
pub struct EtcdSource {
    pub(crate) cfg: EtcdConfig,
    pub(crate) opts: ConnectOptions,
    pub(crate) keys: Keys,
    pub(crate) node: NodeConfig,
    pub(crate) record: NodeRecord,
    pub(crate) client: Option<Client>,
    pub(crate) shared: Arc<Mutex<Option<Client>>>,
    pub(crate) view: ClusterView,
    pub(crate) feed: PeerFeed,
    pub(crate) store: Store,
    pub(crate) session: Session,
    pub(crate) lease: Option<i64>,
    pub(crate) watch: Option<WatchStream>,
    /// Skipped entries already logged.
    pub(crate) logged: BTreeSet<String>,
    /// The member in use (the next one after a failure).
    pub(crate) endpoints: client::Endpoints,
}

impl EtcdSource {
    /// Runs sessions until `stop`: register, watch, keep the lease alive, back off on failure.
    pub async fn run(mut self, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        let mut last_error: Option<String> = None;
        loop {
            let step = self.session.step();
            let outcome = tokio::select! {
                o = self.do_step(step) => o,
                () = &mut stop => break,
            };
            if let Outcome::Failed(e) = &outcome {
                self.watch = None;
                // The next attempt talks to the next member.
                let failed = self.endpoints.current().to_string();
                self.endpoints.advance();
                self.client = None;
                let e = &format!("{e} (member {failed})");
                self.feed.set_reachable(false, Some(e.clone()));
                if last_error.as_ref() != Some(e) {
                    tracing::warn!(endpoints = %self.cfg.endpoints_line(), "etcd: {e}; keeping the last known peers and retrying");
                } else {
                    tracing::debug!("etcd: still failing: {e}");
                }
                last_error = Some(e.clone());
            }
            let before = self.session.live();
            self.session.on(outcome);
            if self.session.live() && !before {
                last_error = None;
                self.feed.set_reachable(true, None);
                let n = self.session.established();
                self.feed.update(|s| s.sessions = n);
                tracing::info!(revision = ?self.session.revision(), lease = ?self.lease.map(|l| format!("{l:x}")), sessions = n, member = %self.endpoints.current(), "etcd: session established (lease kept alive, watching {})", self.keys.root());
            }
        }
        tracing::info!("etcd: membership source stopped (the lease runs out on its own)");
    }

    async fn do_step(&mut self, step: Step) -> Outcome {
        match step {
            Step::Register => self.register().await,
            Step::Sync { resume_after } => self.sync(resume_after).await,
            Step::Live => self.live().await,
            Step::Wait(d) => {
                tokio::time::sleep(d).await;
                Outcome::Waited
            }
        }
    }

    async fn client(&mut self) -> Result<Client, String> {
        if let Some(c) = &self.client {
            return Ok(c.clone());
        }
        let at = self.endpoints.current().to_string();
        let c = client::connect(&self.cfg, &self.opts, &at)
            .await
            .map_err(|e| format!("connect {at}: {e}"))?;
        self.feed.update(|s| s.endpoint = Some(at));
        *self.shared.lock().unwrap_or_else(|e| e.into_inner()) = Some(c.clone());
        self.client = Some(c.clone());
        Ok(c)
    }

    async fn register(&mut self) -> Outcome {
        match self.try_register().await {
            Ok(()) => Outcome::Registered,
            Err(e) => Outcome::Failed(e),
        }
    }

    async fn try_register(&mut self) -> Result<(), String> {
        let d = self.cfg.dial_timeout();
        let mut c = self.client().await?;
        // The lease: kept if alive, else a new one.
        let alive = match self.lease {
            Some(id) => within(d, c.lease_time_to_live(id, None))
                .await
                .map(|r| r.ttl() > 0)
                .map_err(|e| format!("lease check: {e}"))?,
            None => false,
        };
        if !alive {
            let ttl = self.cfg.lease_ttl_secs as i64;
            let g = within(d, c.lease_grant(ttl, None))
                .await
                .map_err(|e| format!("lease grant: {e}"))?;
            if self.lease.is_some() {
                tracing::warn!(old = ?self.lease.map(|l| format!("{l:x}")), new = %format!("{:x}", g.id()), "etcd: lease had expired; registering again with a new one");
            }
            self.lease = Some(g.id());
            self.feed.update(|s| s.lease_id = Some(g.id()));
        }
        let lease = self.lease.expect("set above");
        // The reservation: re-created if it vanished; another holder is a conflict to report.
        let sk = self.keys.subnet(self.record.subnet);
        let txn = Txn::new()
            .when([Compare::create_revision(sk.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                sk.clone(),
                reservation_value(&self.node.name),
                None,
            )])
            .or_else([TxnOp::get(sk.clone(), None)]);
        let r = within(d, c.txn(txn))
            .await
            .map_err(|e| format!("reservation: {e}"))?;
        if r.succeeded() {
            tracing::warn!(key = %sk, "etcd: this node's reservation was missing; re-created");
        } else {
            let holder = r.op_responses().into_iter().find_map(|o| match o {
                TxnOpResponse::Get(g) => g
                    .kvs()
                    .first()
                    .and_then(|kv| Reservation::decode(kv.value()).ok())
                    .map(|r| r.node),
                _ => None,
            });
            if holder.as_deref() != Some(self.node.name.as_str()) {
                return Err(format!(
                    "{sk}: subnet {} of this node is now held by {:?}; not registering (routes and containers stay)",
                    self.record.subnet,
                    holder.unwrap_or_else(|| "an unreadable reservation".into())
                ));
            }
        }
        // The node record, attached to the lease (written only when it differs).
        let nk = self.keys.node(&self.node.name);
        let value = self.record.encode();
        let txn = Txn::new()
            .when([
                Compare::value(nk.clone(), CompareOp::Equal, value.clone()),
                Compare::lease(nk.clone(), CompareOp::Equal, lease),
            ])
            .or_else([TxnOp::put(
                nk.clone(),
                value,
                Some(PutOptions::new().with_lease(lease)),
            )]);
        let r = within(d, c.txn(txn))
            .await
            .map_err(|e| format!("node record: {e}"))?;
        if !r.succeeded() {
            tracing::info!(key = %nk, subnet = %self.record.subnet, lease = %format!("{lease:x}"), "etcd: node record published");
        }
        Ok(())
    }

    async fn sync(&mut self, resume_after: Option<i64>) -> Outcome {
        match self.try_sync(resume_after).await {
            Ok(Some(rev)) => Outcome::Synced { revision: rev },
            Ok(None) => Outcome::Compacted,
            Err(e) => Outcome::Failed(e),
        }
    }

    /// Starts the watch (after a listing when `resume_after` is `None`); `Ok(None)` when the
    /// resume revision was compacted away.
    async fn try_sync(&mut self, resume_after: Option<i64>) -> Result<Option<i64>, String> {
        let d = self.cfg.dial_timeout();
        let mut c = self.client().await?;
        let root = self.keys.root();
        let from = match resume_after {
            Some(r) => r,
            None => {
                let listed = within(
                    d,
                    c.get(root.clone(), Some(GetOptions::new().with_prefix())),
                )
                .await
                .map_err(|e| format!("list: {e}"))?;
                let rev = listed.header().map_or(0, |h| h.revision());
                self.view.reset(kvs(&listed), rev);
                tracing::info!(
                    revision = rev,
                    keys = listed.kvs().len(),
                    "etcd: listed {root}"
                );
                self.note_view();
                rev
            }
        };
        let opts = WatchOptions::new()
            .with_prefix()
            .with_start_revision(from + 1);
        let mut ws = within(d, c.watch(root.clone(), Some(opts)))
            .await
            .map_err(|e| format!("watch: {e}"))?;
        let first = within(d, ws.message())
            .await
            .map_err(|e| format!("watch: {e}"))?
            .ok_or_else(|| "watch: stream closed".to_string())?;
        if first.canceled() {
            if first.compact_revision() > 0 {
                tracing::info!(
                    resume = from + 1,
                    compacted = first.compact_revision(),
                    "etcd: history compacted past the last revision seen; listing again"
                );
                return Ok(None);
            }
            return Err(format!("watch cancelled: {}", first.cancel_reason()));
        }
        if !first.events().is_empty() {
            self.take_events(&first);
        }
        self.watch = Some(ws);
        Ok(Some(from))
    }

    fn take_events(&mut self, resp: &etcd_client::WatchResponse) -> crate::view::OwnChanges {
        let events: Vec<Event> = resp
            .events()
            .iter()
            .filter_map(|e| {
                let kv = e.kv()?;
                Some(match e.event_type() {
                    EventType::Put => Event::Put(Kv {
                        key: kv.key().to_vec(),
                        value: kv.value().to_vec(),
                        lease: kv.lease(),
                        mod_revision: kv.mod_revision(),
                    }),
                    EventType::Delete => Event::Delete {
                        key: kv.key().to_vec(),
                        mod_revision: kv.mod_revision(),
                    },
                })
            })
            .collect();
        let n = events.len() as u64;
        let own = self.view.apply(events);
        if let Some(h) = resp.header() {
            self.view.revision = self.view.revision.max(h.revision());
        }
        self.feed.update(|s| s.watch_events += n);
        self.note_view();
        own
    }

    /// Publishes the view's peer set and mirrors it into the status; logs newly skipped entries.
    pub(crate) fn note_view(&mut self) {
        let (peers, skipped) = self.view.peers(&self.node);
        for s in &skipped {
            if !self.logged.contains(s) {
                tracing::warn!("etcd: skipping invalid entry (never applied): {s}");
            }
        }
        self.logged = skipped.iter().cloned().collect();
        let leases = self.view.leases();
        let reservations = self.view.reservations();
        let revision = self.view.revision;
        let count = peers.len();
        let changed = self.feed.publish(peers.clone());
        if changed {
            tracing::info!(peers = count, revision, "etcd: peer set changed");
            if let Err(e) = self.store.set_peers(&peers) {
                tracing::warn!("etcd: cannot save the peer set in the state dir: {e}");
            }
        }
        self.feed.update(|s| {
            s.skipped = skipped;
            s.revision = Some(revision);
            let old = std::mem::take(&mut s.meta);
            s.meta = leases
                .into_iter()
                .map(|(name, id)| {
                    let kept = old
                        .get(&name)
                        .filter(|m| m.lease_id == Some(id))
                        .and_then(|m| m.lease_expires);
                    (
                        name,
                        PeerMeta {
                            lease_id: Some(id),
                            lease_expires: kept,
                        },
                    )
                })
                .collect();
            s.reservations = reservations;
        });
    }

    async fn live(&mut self) -> Outcome {
        let d = self.cfg.dial_timeout();
        let Some(lease) = self.lease else {
            return Outcome::OwnLost;
        };
        let mut c = match self.client().await {
            Ok(c) => c,
            Err(e) => return Outcome::Failed(e),
        };
        let (mut keeper, mut acks) = match within(d, c.lease_keep_alive(lease)).await {
            Ok(k) => k,
            Err(e) if e.contains("lease not found") => return Outcome::OwnLost,
            Err(e) => return Outcome::Failed(format!("lease keep-alive: {e}")),
        };
        let Some(mut ws) = self.watch.take() else {
            return Outcome::Failed("no watch".into());
        };
        let every = self.cfg.keepalive_every();
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // A keep-alive sent and not answered yet: the member must answer within the dial
        // timeout, or it is gone or cut off (found well before the lease could run out).
        let mut awaiting: Option<tokio::time::Instant> = None;
        let far = || tokio::time::Instant::now() + Duration::from_secs(3600);
        let note_ack = |feed: &PeerFeed, ttl: i64| {
            feed.update(|s| s.lease_expires = Some(now_unix() + ttl.max(0) as u64));
        };
        note_ack(&self.feed, self.cfg.lease_ttl_secs as i64);
        loop {
            let deadline = awaiting.map_or_else(far, |t| t + d);
            tokio::select! {
                _ = tick.tick() => {
                    if let Err(e) = keeper.keep_alive().await {
                        return Outcome::Failed(format!("lease keep-alive: {e}"));
                    }
                    awaiting.get_or_insert_with(tokio::time::Instant::now);
                }
                () = tokio::time::sleep_until(deadline) => {
                    return Outcome::Failed(format!(
                        "lease keep-alive not answered within {} ms",
                        d.as_millis()
                    ));
                }
                m = acks.message() => match m {
                    Ok(Some(r)) if r.ttl() > 0 => {
                        awaiting = None;
                        note_ack(&self.feed, r.ttl());
                    }
                    Ok(Some(_)) => {
                        tracing::warn!(lease = %format!("{lease:x}"), "etcd: lease expired");
                        return Outcome::OwnLost;
                    }
                    Ok(None) => return Outcome::Failed("lease keep-alive stream closed".into()),
                    Err(e) => return Outcome::Failed(format!("lease keep-alive: {e}")),
                },
                m = ws.message() => match m {
                    Ok(Some(resp)) => {
                        if resp.canceled() {
                            if resp.compact_revision() > 0 {
                                tracing::info!(compacted = resp.compact_revision(), "etcd: history compacted past the last revision seen; listing again");
                                return Outcome::Compacted;
                            }
                            return Outcome::Failed(format!("watch cancelled: {}", resp.cancel_reason()));
                        }
                        let own = self.take_events(&resp);
                        self.session.on(Outcome::Progress { revision: self.view.revision });
                        if own.record_gone || own.reservation_lost {
                            tracing::warn!(record_gone = own.record_gone, reservation_lost = own.reservation_lost, "etcd: this node's own entry changed; registering again");
                            return Outcome::OwnLost;
                        }
                    }
                    Ok(None) => return Outcome::Failed("watch stream closed".into()),
                    Err(e) => return Outcome::Failed(format!("watch: {e}")),
                },
            }
        }
    }
}
