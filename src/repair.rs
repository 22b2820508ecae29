//! The daemon's event-driven repair: [`runtime_net::repair::run`] with the engine (and the
//! peering controller, through a request channel) as the repairer; outcomes go to the metrics
//! (`shimnet_repairs_total{kind}`, `shimnet_repair_latency_seconds{kind}`, …) and the log. The
//! loop also runs the periodic full pass (the safety net), so no other timer does.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use runtime_net::engine::Engine;
use runtime_net::repair::run::{self, Repairer, RunConfig};
use runtime_net::repair::Dirty;
use shimnet_api::metrics::Metrics;
use tokio::sync::{mpsc, oneshot, watch};

/// The peering loop's answer to a pass request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PassAnswer {
    /// Kernel changes the pass made.
    pub changes: usize,
    /// What it could not do (a device still being torn down, …); the repair is tried again.
    pub errors: Vec<String>,
}

impl PassAnswer {
    /// `Ok(changed)`, or the errors as one message.
    pub fn outcome(&self) -> Result<bool, String> {
        match self.errors.is_empty() {
            true => Ok(self.changes > 0),
            false => Err(self.errors.join("; ")),
        }
    }
}

/// A request to the peering loop for one pass, answered with what the pass did.
pub type PeeringPass = oneshot::Sender<PassAnswer>;

/// The engine, metrics and peering loop as a [`Repairer`].
pub struct DaemonRepairer {
    engine: Arc<Engine>,
    metrics: Arc<Metrics>,
    peering: Option<mpsc::Sender<PeeringPass>>,
}

/// One full reconciliation pass, recorded in the metrics; then the heap's free pages go back to
/// the kernel (the pass allocates more at once than anything else the daemon does).
pub async fn full_reconcile(
    engine: &Engine,
    metrics: &Metrics,
) -> runtime_net::engine::Result<runtime_net::engine::ReconcileReport> {
    let report = engine.reconcile().await;
    metrics.record_reconcile(report.as_ref().ok());
    crate::process::release_free_memory();
    report
}

impl DaemonRepairer {
    /// `peering`: the peering loop's pass requests, when peering is on.
    pub fn new(
        engine: Arc<Engine>,
        metrics: Arc<Metrics>,
        peering: Option<mpsc::Sender<PeeringPass>>,
    ) -> Self {
        DaemonRepairer {
            engine,
            metrics,
            peering,
        }
    }

    async fn peering_pass(&self) -> Result<bool, String> {
        let Some(tx) = &self.peering else {
            return Ok(false);
        };
        let (reply, answer) = oneshot::channel();
        tx.send(reply)
            .await
            .map_err(|_| "the peering loop has stopped".to_string())?;
        answer
            .await
            .map_err(|_| "the peering loop did not answer".to_string())?
            .outcome()
    }

    async fn full_pass(&self) -> Result<bool, String> {
        let report = full_reconcile(&self.engine, &self.metrics).await;
        let peering = self.peering_pass().await;
        let r = report.map_err(|e| e.to_string())?;
        if r.errors.is_empty() {
            tracing::info!(
                networks = r.networks,
                reclaimed = r.reclaimed,
                links_removed = r.links_removed,
                "safety pass: reconciled"
            );
        } else {
            tracing::warn!(errors = ?r.errors, "safety pass: reconciled with errors");
        }
        Ok(r.reclaimed + r.links_removed + r.firewall_removed + r.ports_reattached > 0 || peering?)
    }
}

impl Repairer for DaemonRepairer {
    async fn bridges(&self) -> HashSet<String> {
        self.engine.bridge_names().await.unwrap_or_default()
    }

    async fn repair(&self, d: &Dirty) -> Result<bool, String> {
        let e = &self.engine;
        match d {
            Dirty::Bridge(b) | Dirty::Gateway(b) => {
                let fixed = e.repair_bridge_link(b).await.map_err(|e| e.to_string())?;
                // A new bridge has a new index: peering's forwarding programs send to it.
                let peering = if fixed {
                    self.peering_pass().await?
                } else {
                    false
                };
                Ok(fixed | peering)
            }
            Dirty::Port(p) => e.repair_port(p).await.map_err(|e| e.to_string()),
            Dirty::Endpoint(k) => e.repair_endpoint(k).await.map_err(|e| e.to_string()),
            // The encapsulation filter is peering's (see runtime-net's `firewall::encap`).
            Dirty::NftTable(t) if is_encap_table(t) => self.peering_pass().await,
            Dirty::NftTable(_) => e.repair_firewall().await.map_err(|e| e.to_string()),
            Dirty::Iptables(t) => {
                let fw = e.repair_firewall().await.map_err(|e| e.to_string());
                // iptables' filter table also holds the encapsulation filter (chain
                // SHIMNET-ENCAP, jumped from INPUT).
                let peering = if t == "filter" {
                    self.peering_pass().await
                } else {
                    Ok(false)
                };
                Ok(fw? | peering?)
            }
            Dirty::PeerRoutes | Dirty::Tunnel(_) | Dirty::Fdb(_) => self.peering_pass().await,
            Dirty::All => self.full_pass().await,
        }
    }

    fn report(&self, d: &Dirty, outcome: &Result<bool, String>, latency: Duration) {
        let kind = d.kind().label();
        self.metrics.repair.record(
            kind,
            outcome.as_ref().map(|b| *b).map_err(|e| e.as_str()),
            latency,
        );
        let ms = latency.as_secs_f64() * 1000.0;
        match outcome {
            Ok(true) => {
                tracing::info!(object = %d, latency_ms = ms, "repaired after a change from outside")
            }
            Ok(false) => tracing::debug!(object = %d, "checked after a notification: in place"),
            Err(e) => tracing::warn!(object = %d, "repair failed: {e}"),
        }
    }
}

/// Whether an nftables table name is the encapsulation filter's (`ip shimnet-encap`).
fn is_encap_table(name: &str) -> bool {
    runtime_net::firewall::encap::nft::TABLE.rsplit(' ').next() == Some(name)
}

/// Runs the repair loop in the daemon's namespace until `stop` turns true; subscribes again
/// (after a full pass) if the notifications fail.
pub fn spawn(
    repairer: DaemonRepairer,
    cfg: RunConfig,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut first = true;
        loop {
            match run::start(Box::new(run::own_thread), cfg.timing).await {
                Ok((listener, driver)) => {
                    if !first {
                        // Changes may have gone unseen while nobody listened.
                        let r = repairer.repair(&Dirty::All).await;
                        repairer.report(&Dirty::All, &r, Duration::ZERO);
                    }
                    first = false;
                    let mut rx = stop.clone();
                    let stopped = async move {
                        let _ = rx.wait_for(|s| *s).await;
                    };
                    match run::run(listener, driver, &repairer, cfg, stopped).await {
                        Ok(()) => return,
                        Err(e) => {
                            tracing::warn!("repair: notifications failed ({e}); subscribing again")
                        }
                    }
                }
                Err(e) => tracing::error!(
                    "repair: cannot subscribe to kernel notifications ({e}); retrying"
                ),
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::PassAnswer;

    #[test]
    fn a_pass_with_errors_is_a_failed_repair() {
        let ok = |changes| PassAnswer {
            changes,
            errors: vec![],
        };
        assert_eq!(ok(0).outcome(), Ok(false));
        assert_eq!(ok(3).outcome(), Ok(true));
        let failed = PassAnswer {
            changes: 2,
            errors: vec!["vxlan: File exists".into(), "route: gone".into()],
        };
        assert_eq!(
            failed.outcome(),
            Err("vxlan: File exists; route: gone".into())
        );
    }

    #[test]
    fn the_encapsulation_table_is_peerings() {
        assert!(super::is_encap_table("shimnet-encap"));
        assert!(!super::is_encap_table("shimnet"));
    }
}
