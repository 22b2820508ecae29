//! Carrying out an endpoint plan through the executors: stage by stage (the steps of a stage run
//! side by side), entering the container's namespace while the first stage runs. [`Engine::apply`]
//! stops at the first failure and undoes what it did, in reverse ([`Step::undo`]);
//! [`Engine::apply_all`] (teardown) attempts every step and reports every failure.

use futures::future::join_all;

use super::{collect, Engine, EngineError, Result};
use crate::kernel::InNetns;
use crate::netlink::NetlinkError;
use crate::plan::endpoint::{EndpointPlan, Step};

/// The container namespace a plan enters: not yet, entered, or failed (its error, once).
enum Inside {
    None,
    Entered(Box<dyn InNetns>),
    Failed(Option<NetlinkError>),
}

impl Engine {
    /// Applies `plan`; on a failure undoes the steps done so far in reverse and returns the
    /// failure together with any failure of the undo.
    pub(super) async fn apply(&self, plan: &EndpointPlan) -> Result<()> {
        let mut inside = Inside::None;
        let mut undo: Vec<Step> = Vec::new();
        let mut failed: Vec<EngineError> = Vec::new();
        for (i, stage) in plan.stages.iter().enumerate() {
            let results = if i == 0 {
                let enter = async {
                    match plan.container_netns() {
                        Some(p) => Some(self.kernel.netns.enter(p).await),
                        None => None,
                    }
                };
                let mut none = Inside::None;
                let (results, entered) = futures::join!(self.run_stage(stage, &mut none), enter);
                inside = match entered {
                    None => Inside::None,
                    Some(Ok(ns)) => Inside::Entered(ns),
                    Some(Err(e)) => Inside::Failed(Some(e)),
                };
                results
            } else {
                self.run_stage(stage, &mut inside).await
            };
            for (step, r) in stage.iter().zip(results) {
                match r {
                    Ok(()) => undo.extend(step.undo()),
                    Err(e) => failed.push(e),
                }
            }
            // A namespace that cannot be entered is the cause when the first steps failed too
            // (the pair is created into it): report that, as the caller's mistake it is.
            if !failed.is_empty() {
                if let Inside::Failed(e) = &mut inside {
                    if let Some(e) = e.take() {
                        for f in failed.drain(..) {
                            tracing::debug!(endpoint = %plan.key, "failed as well: {f}");
                        }
                        failed.push(e.into());
                    }
                }
            }
            if !failed.is_empty() {
                break;
            }
        }
        if failed.is_empty() {
            return Ok(());
        }
        for step in undo.iter().rev() {
            if let Err(e) = self.run_step(step, None).await {
                tracing::warn!(endpoint = %plan.key, "undoing {step}: {e}");
                failed.push(e);
            }
        }
        collect(failed)
    }

    /// Applies every step of `plan` whatever fails (teardown keeps going) and returns every
    /// failure.
    pub(super) async fn apply_all(&self, plan: &EndpointPlan) -> Result<()> {
        let mut failed = Vec::new();
        for stage in &plan.stages {
            let mut none = Inside::None;
            for r in self.run_stage(stage, &mut none).await {
                if let Err(e) = r {
                    failed.push(e);
                }
            }
        }
        collect(failed)
    }

    async fn run_stage(&self, stage: &[Step], inside: &mut Inside) -> Vec<Result<()>> {
        let enters = stage
            .iter()
            .any(|s| matches!(s, Step::ConfigureContainer { .. }));
        let mut ns_err: Option<EngineError> = match inside {
            Inside::Failed(e) if enters => e.take().map(Into::into),
            _ => None,
        };
        let ns: Option<&dyn InNetns> = match &*inside {
            Inside::Entered(ns) => Some(&**ns),
            _ => None,
        };
        let mut results = Vec::with_capacity(stage.len());
        let mut pending = Vec::new();
        for (i, step) in stage.iter().enumerate() {
            let failed = match step {
                Step::ConfigureContainer { .. } => ns_err.take(),
                _ => None,
            };
            match failed {
                Some(e) => results.push((i, Err(e))),
                None => pending.push((i, step)),
            }
        }
        let ran = join_all(pending.iter().map(|(_, s)| self.run_step(s, ns))).await;
        results.extend(pending.iter().map(|(i, _)| *i).zip(ran));
        results.sort_by_key(|(i, _)| *i);
        results.into_iter().map(|(_, r)| r).collect()
    }

    /// One step through its executor.
    async fn run_step(&self, step: &Step, inside: Option<&dyn InNetns>) -> Result<()> {
        let links = &self.kernel.links;
        match step {
            Step::RestoreNetwork(name) => {
                let spec = self.network(name).await?;
                self.restore_network(&spec).await
            }
            Step::EnsureExtension { network, index } => {
                let spec = self.network(network).await?;
                self.ensure_extension_step(&spec, *index).await
            }
            Step::RemoveStale(name) => Ok(links.delete_link(name.as_str()).await.map(drop)?),
            Step::CreatePair(pair) => Ok(links.create_pair(pair).await?),
            Step::Sysctl { key, value } => self.write_sysctl(key, value),
            Step::ConfigurePort(port) => Ok(links.configure_port(port).await?),
            Step::ConfigureContainer { netns, config } => match inside {
                Some(ns) => Ok(ns.configure(config).await?),
                None => Err(NetlinkError::Netns {
                    path: netns.clone(),
                    msg: "namespace not entered".into(),
                }
                .into()),
            },
            Step::PublishPorts(rules) => {
                let r = rules.clone();
                self.fw(move |fw| fw.add_ports(&r)).await
            }
            Step::UnpublishPorts(rules) => {
                let r = rules.clone();
                self.fw(move |fw| fw.remove_ports(&r)).await
            }
            Step::RetirePair(name) => Ok(links.retire_link(name.as_str()).await.map(drop)?),
        }
    }

    /// Writes a sysctl; an IPv6 setting on a kernel without IPv6 has nothing to change.
    pub(super) fn write_sysctl(&self, key: &str, value: &str) -> Result<()> {
        let sysctl = &self.kernel.sysctl;
        match sysctl.set(key, value) {
            Err(e)
                if e.source.kind() == std::io::ErrorKind::NotFound
                    && key.starts_with("net/ipv6/")
                    && !sysctl.exists("net/ipv6") =>
            {
                Ok(())
            }
            other => Ok(other?),
        }
    }
}
