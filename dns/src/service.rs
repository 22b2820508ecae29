//! [`Dns`]: the name service as the daemon uses it — networks added and removed with their
//! listeners, endpoints' names registered and unregistered, views for the API.
//!
//! Each UDP socket is served by a thread of its own ([`crate::udp`]); TCP listeners and forwarded
//! queries run on one dedicated thread with its own single-threaded tokio runtime. A query flood
//! can take those threads, never the daemon's API or engine workers. Writers (the engine's hook)
//! take a mutex, make the network's next [`Zone`] from the current one and the changed entry and
//! swap it in with one atomic pointer store; readers (the query path) only load that pointer.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::Semaphore;
use tokio::task::AbortHandle;

use crate::access::LocalAddrs;
use crate::forward::Forwarder;
use crate::listen::{bind_tcp, bind_udp, serve_tcp, Shared};
use crate::metrics::DnsMetrics;
use crate::name;
use crate::udp::UdpServer;
use crate::upstream::Source;
use crate::zone::{Entry, NetworkDns, Zone, ZoneSettings};

/// Settings of the name service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsConfig {
    /// Search domain: every name also answers as `NAME.DOMAIN`.
    pub domain: String,
    /// TTL of local answers (and of negative ones).
    pub ttl: u32,
    /// Port of the listeners (53; tests may use another).
    pub port: u16,
    /// The host's resolv.conf (upstream resolvers).
    pub resolv_conf: PathBuf,
    /// systemd-resolved's own resolv.conf, used when the host's lists only its stub.
    pub resolved_conf: PathBuf,
    /// Port of the upstream resolvers (53; tests may use another).
    pub upstream_port: u16,
    /// Longest wait for one upstream.
    pub attempt_timeout: Duration,
    /// Longest time a forwarded query takes in all (then SERVFAIL).
    pub forward_deadline: Duration,
    /// Forwarded queries in flight at most (more get SERVFAIL at once).
    pub max_forwards: usize,
    /// TCP connections open at most (more wait to be accepted).
    pub max_tcp_connections: usize,
    /// A TCP connection without a complete query for this long is closed.
    pub tcp_idle: Duration,
    /// UDP queries per source address and second at most, per listener (0: no limit); beyond
    /// it queries are dropped unanswered.
    pub per_source_qps: u32,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            domain: "dns.shimnet".into(),
            ttl: 5,
            port: 53,
            resolv_conf: "/etc/resolv.conf".into(),
            resolved_conf: "/run/systemd/resolve/resolv.conf".into(),
            upstream_port: crate::upstream::DNS_PORT,
            attempt_timeout: Duration::from_millis(1500),
            forward_deadline: Duration::from_millis(4000),
            max_forwards: 256,
            max_tcp_connections: 64,
            tcp_idle: Duration::from_secs(10),
            per_source_qps: 2000,
        }
    }
}

/// Starting the service failed.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// The search domain is not a valid DNS name.
    #[error("dns domain {0:?}: {1}")]
    Domain(String, name::NameError),
    /// The service thread could not start.
    #[error("starting the DNS thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// How a socket is served.
#[derive(Debug)]
enum Serving {
    /// A UDP socket's thread (held: dropping it stops the thread).
    Udp(#[allow(dead_code)] UdpServer),
    /// A TCP listener's task on the runtime.
    Tcp(AbortHandle),
}

impl Drop for Serving {
    fn drop(&mut self) {
        if let Serving::Tcp(t) = self {
            t.abort();
        }
    }
}

/// One socket of a network.
#[derive(Debug)]
struct Listener {
    addr: SocketAddr,
    tcp: bool,
    task: Option<Serving>,
    error: Option<String>,
}

#[derive(Debug)]
struct NetState {
    net: Arc<NetworkDns>,
    entries: BTreeMap<String, Entry>,
    shared: Arc<Shared>,
    listeners: Vec<Listener>,
}

impl NetState {
    fn stop(&mut self) {
        for l in &mut self.listeners {
            l.task = None;
        }
    }
}

/// A listener in a [`NetworkView`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerView {
    /// Address and port.
    pub address: SocketAddr,
    /// `udp` or `tcp`.
    pub protocol: &'static str,
    /// True while it is served.
    pub serving: bool,
    /// Why binding failed (retried every few seconds).
    pub error: Option<String>,
}

/// One name in a [`NetworkView`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameView {
    /// The name (also answered under the domain).
    pub name: String,
    /// IPv4 addresses.
    pub ipv4: Vec<Ipv4Addr>,
    /// IPv6 addresses.
    pub ipv6: Vec<Ipv6Addr>,
}

/// What a network's server serves, for the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkView {
    /// Network name.
    pub network: String,
    /// Search domain.
    pub domain: String,
    /// Internal (nothing forwarded).
    pub internal: bool,
    /// Sockets.
    pub listeners: Vec<ListenerView>,
    /// Where other names are forwarded (empty on an internal network).
    pub upstreams: Vec<SocketAddr>,
    /// Version of the table.
    pub serial: u32,
    /// Names, sorted.
    pub names: Vec<NameView>,
}

/// What a container on the network puts in its resolv.conf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announce {
    /// Name servers: the network's gateways.
    pub nameservers: Vec<IpAddr>,
    /// Search domains.
    pub search: Vec<String>,
}

struct Inner {
    cfg: DnsConfig,
    settings: Arc<ZoneSettings>,
    rt: tokio::runtime::Handle,
    forwarder: Arc<Forwarder>,
    local: Arc<LocalAddrs>,
    forwards: Arc<Semaphore>,
    tcp: Arc<Semaphore>,
    metrics: DnsMetrics,
    serial: AtomicU32,
    retrying: AtomicBool,
    nets: Mutex<BTreeMap<String, NetState>>,
    /// Every served network's table cell, for containers on several networks.
    all: Arc<ArcSwap<Vec<Arc<ArcSwap<Zone>>>>>,
}

/// The name service (see the module doc). Dropping it stops every listener.
pub struct Dns {
    inner: Arc<Inner>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Dns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dns").field("cfg", &self.inner.cfg).finish()
    }
}

impl Dns {
    /// Starts the service thread; no network is served yet.
    pub fn start(cfg: DnsConfig, metrics: DnsMetrics) -> Result<Dns, DnsError> {
        let domain = name::key(&cfg.domain).ok_or_else(|| {
            DnsError::Domain(cfg.domain.clone(), name::check(&cfg.domain).unwrap_err())
        })?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = rt.handle().clone();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("shimnet-dns".into())
            .spawn(move || {
                rt.block_on(async {
                    let _ = stop_rx.await;
                });
                // Dropping the runtime ends every task: the sockets close.
                drop(rt);
            })?;
        let source = Arc::new(Source::new(
            cfg.resolv_conf.clone(),
            cfg.resolved_conf.clone(),
            cfg.upstream_port,
        ));
        let forwarder = Arc::new(Forwarder::new(
            source,
            cfg.attempt_timeout,
            cfg.forward_deadline,
            metrics.clone(),
        ));
        let inner = Inner {
            settings: Arc::new(ZoneSettings {
                domain,
                ttl: cfg.ttl,
            }),
            rt: handle,
            forwarder,
            local: Arc::new(LocalAddrs::new()),
            forwards: Arc::new(Semaphore::new(cfg.max_forwards.max(1))),
            tcp: Arc::new(Semaphore::new(cfg.max_tcp_connections.max(1))),
            metrics,
            serial: AtomicU32::new(0),
            retrying: AtomicBool::new(false),
            nets: Mutex::new(BTreeMap::new()),
            all: Arc::new(ArcSwap::from_pointee(Vec::new())),
            cfg,
        };
        Ok(Dns {
            inner: Arc::new(inner),
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// The search domain.
    pub fn domain(&self) -> &str {
        &self.inner.settings.domain
    }

    /// Serves a network (or updates it: listeners follow a changed address list, the table a
    /// changed subnet list; its names are kept). Idempotent; sockets that failed to bind are
    /// tried again. Returns the bind failures (they are retried every few seconds).
    pub fn set_network(&self, net: NetworkDns) -> Vec<String> {
        let inner = &self.inner;
        let mut nets = inner.nets.lock().unwrap_or_else(|e| e.into_inner());
        let name = net.name.clone();
        let changed = nets.get(&name).is_some_and(|s| *s.net != net);
        if changed {
            if let Some(mut old) = nets.remove(&name) {
                old.stop();
                let entries = std::mem::take(&mut old.entries);
                let st = inner.new_state(net, entries);
                nets.insert(name.clone(), st);
            }
        } else if !nets.contains_key(&name) {
            let st = inner.new_state(net, BTreeMap::new());
            nets.insert(name.clone(), st);
        }
        inner.publish(&nets);
        let st = nets.get_mut(&name).expect("inserted above");
        let errors = inner.bind_missing(st);
        drop(nets);
        if !errors.is_empty() {
            for e in &errors {
                tracing::error!(network = %name, "DNS listener not bound (retried every 5 s): {e}");
            }
            inner.clone().retry_later();
        } else {
            tracing::info!(network = %name, "DNS served on the gateway");
        }
        errors
    }

    /// Stops serving a network and forgets its names.
    pub fn remove_network(&self, network: &str) {
        let mut nets = self.inner.nets.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(mut st) = nets.remove(network) {
            st.stop();
            self.inner.publish(&nets);
            self.inner.metrics.remove_network(network);
            tracing::info!(network, "DNS stopped");
        }
    }

    /// Registers (or replaces) an endpoint's names; false if the network is not served.
    pub fn set_entry(&self, network: &str, entry: Entry) -> bool {
        let mut nets = self.inner.nets.lock().unwrap_or_else(|e| e.into_inner());
        let Some(st) = nets.get_mut(network) else {
            return false;
        };
        if st.entries.get(&entry.id) == Some(&entry) {
            return true;
        }
        let old = st.entries.insert(entry.id.clone(), entry.clone());
        self.inner.update(st, old.as_ref(), Some(&entry));
        true
    }

    /// Unregisters an endpoint's names (no-op if unknown).
    pub fn remove_entry(&self, network: &str, id: &str) {
        let mut nets = self.inner.nets.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(st) = nets.get_mut(network) {
            if let Some(old) = st.entries.remove(id) {
                self.inner.update(st, Some(&old), None);
            }
        }
    }

    /// Names of the served networks.
    pub fn networks(&self) -> Vec<String> {
        let nets = self.inner.nets.lock().unwrap_or_else(|e| e.into_inner());
        nets.keys().cloned().collect()
    }

    /// What a container of `network` should use as resolver, if the network is served.
    pub fn announce(&self, network: &str) -> Option<Announce> {
        let nets = self.inner.nets.lock().unwrap_or_else(|e| e.into_inner());
        let st = nets.get(network)?;
        Some(Announce {
            nameservers: st.net.listen.clone(),
            search: vec![self.inner.settings.domain.clone()],
        })
    }

    /// The served state of a network, if it is served.
    pub fn view(&self, network: &str) -> Option<NetworkView> {
        let nets = self.inner.nets.lock().unwrap_or_else(|e| e.into_inner());
        let st = nets.get(network)?;
        let zone = st.shared.zone.load_full();
        let listeners = st
            .listeners
            .iter()
            .map(|l| ListenerView {
                address: l.addr,
                protocol: if l.tcp { "tcp" } else { "udp" },
                serving: l.task.is_some(),
                error: l.error.clone(),
            })
            .collect();
        let upstreams = if st.net.internal {
            Vec::new()
        } else {
            self.inner
                .forwarder
                .source()
                .current()
                .servers
                .iter()
                .map(|u| u.addr)
                .collect()
        };
        Some(NetworkView {
            network: network.to_string(),
            domain: self.inner.settings.domain.clone(),
            internal: st.net.internal,
            listeners,
            upstreams,
            serial: zone.serial(),
            names: zone
                .names()
                .into_iter()
                .map(|(n, a)| NameView {
                    name: n.to_string(),
                    ipv4: a.v4.clone(),
                    ipv6: a.v6.clone(),
                })
                .collect(),
        })
    }
}

impl Inner {
    fn new_state(&self, net: NetworkDns, entries: BTreeMap<String, Entry>) -> NetState {
        let net = Arc::new(net);
        let serial = self.serial.fetch_add(1, Ordering::Relaxed) + 1;
        let zone = Zone::build(net.clone(), self.settings.clone(), serial, entries.values());
        let shared = Arc::new(Shared {
            zone: Arc::new(ArcSwap::from_pointee(zone)),
            all: self.all.clone(),
            forwarder: self.forwarder.clone(),
            local: self.local.clone(),
            counters: self.metrics.network(&net.name),
            forwards: self.forwards.clone(),
            tcp: self.tcp.clone(),
            tcp_idle: self.cfg.tcp_idle,
            per_source_qps: self.cfg.per_source_qps,
        });
        let listeners = net
            .listen
            .iter()
            .flat_map(|ip| {
                let addr = SocketAddr::new(*ip, self.cfg.port);
                [false, true].map(|tcp| Listener {
                    addr,
                    tcp,
                    task: None,
                    error: None,
                })
            })
            .collect();
        NetState {
            net,
            entries,
            shared,
            listeners,
        }
    }

    /// Makes the list of every network's table match `nets`.
    fn publish(&self, nets: &BTreeMap<String, NetState>) {
        let cells = nets.values().map(|st| st.shared.zone.clone()).collect();
        self.all.store(Arc::new(cells));
        let own = nets.values().flat_map(|st| st.net.listen.clone()).collect();
        self.forwarder.set_own(own);
    }

    /// Swaps in the table after one entry of `st` changed (`st.entries` already changed).
    fn update(&self, st: &mut NetState, old: Option<&Entry>, new: Option<&Entry>) {
        let serial = self.serial.fetch_add(1, Ordering::Relaxed) + 1;
        let zone = st.shared.zone.load().update(serial, old, new, &st.entries);
        st.shared.zone.store(Arc::new(zone));
    }

    /// Binds every listener of `st` that is not served; returns the failures.
    fn bind_missing(&self, st: &mut NetState) -> Vec<String> {
        let mut errors = Vec::new();
        for l in st.listeners.iter_mut().filter(|l| l.task.is_none()) {
            let sh = st.shared.clone();
            let bound = if l.tcp {
                bind_tcp(l.addr)
                    .map(|s| Serving::Tcp(self.rt.spawn(serve_tcp(s, sh)).abort_handle()))
            } else {
                bind_udp(l.addr)
                    .and_then(|s| UdpServer::start(s, sh, self.rt.clone()))
                    .map(Serving::Udp)
            };
            match bound {
                Ok(task) => {
                    l.task = Some(task);
                    l.error = None;
                }
                Err(e) => {
                    let proto = if l.tcp { "tcp" } else { "udp" };
                    let msg = format!("{proto} {}: {e}", l.addr);
                    l.error = Some(msg.clone());
                    errors.push(msg);
                }
            }
        }
        errors
    }

    /// Retries failed binds every 5 s until none is left (one retry loop at a time).
    fn retry_later(self: Arc<Self>) {
        if self.retrying.swap(true, Ordering::AcqRel) {
            return;
        }
        let me = self.clone();
        self.rt.spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                let mut nets = me.nets.lock().unwrap_or_else(|e| e.into_inner());
                let mut left = 0;
                for (name, st) in nets.iter_mut() {
                    let errors = me.bind_missing(st);
                    if errors.is_empty() && st.listeners.iter().all(|l| l.task.is_some()) {
                        continue;
                    }
                    left += errors.len();
                    tracing::debug!(network = %name, ?errors, "DNS listeners still not bound");
                }
                if left == 0 {
                    me.retrying.store(false, Ordering::Release);
                    tracing::info!("every DNS listener is bound");
                    return;
                }
            }
        });
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests;
