//! `shimnetd`: the shimnet daemon. Serves the REST API and the Docker plugin (remote network
//! driver and IPAM, `<plugin_dir>/shimnet.sock`) on unix sockets over one engine,
//! reconciles the kernel with its records at start, on SIGHUP and periodically, and exits on
//! SIGTERM without touching containers' networking.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use runtime_net::engine::{Engine, EngineConfig, Observer, Observers};
use runtime_net::firewall::BackendKind;
use runtime_net::peering::file_source::FileSource;
use runtime_net::peering::peers::{ForwardingChoice, SourceKind};
use runtime_net::peering::reachability::{Freshness, Prober};
use runtime_net::peering::retry::Retry;
use runtime_net::peering::source::{MembershipView, PeerSubscription, RefreshHook, SourceHandle};
use runtime_net::peering::tc_ipip::forwarding::TcForwarding;
use runtime_net::peering::StatusHandle;
use runtime_net::peering::{IpipPath, Peering};
use shimnet::activation;
use shimnet::config::{Config, FirewallChoice, DEFAULT_CONFIG_PATH};
use shimnet::dns::DnsHook;
use shimnet_api::docker::{Docker0Adoption, PluginApi, PluginConfig, SOCKET_NAME};
use shimnet_api::metrics::Metrics;
use shimnet_api::rest::{convert, RestApi};
use shimnet_api::server;
use shimnet_compat::docker::conventions;
use shimnet_compat::docker::daemon_json::{docker0_settings, Docker0Settings};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

/// shimnet daemon: docker0-style container networking for Docker, CNI and bare hosts.
#[derive(Debug, Parser)]
#[command(name = "shimnetd", version)]
struct Args {
    /// Config file; the embedded default is used when the default path does not exist.
    #[arg(long)]
    config: Option<PathBuf>,
    /// State directory (overrides the config).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// REST API socket path (overrides the config).
    #[arg(long)]
    api_socket: Option<PathBuf>,
    /// Docker plugin socket folder (overrides the config).
    #[arg(long)]
    plugin_dir: Option<PathBuf>,
    /// Firewall backend: auto, nftables or iptables (overrides the config).
    #[arg(long, value_parser = ["auto", "nftables", "iptables"])]
    firewall: Option<String>,
    /// Group owning the sockets, name or number (overrides `[api] socket_group`).
    #[arg(long)]
    socket_group: Option<String>,
    /// Write man pages and shell completions into DIR and exit (packaging).
    #[arg(long, hide = true, value_name = "DIR")]
    generate_docs: Option<PathBuf>,
}

fn load_config(args: &Args) -> Result<Config> {
    let (path, explicit) = match &args.config {
        Some(p) => (p.clone(), true),
        None => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
    };
    let (mut cfg, origin) = Config::load(&path, explicit)?;
    tracing::info!(config = %origin, "configuration loaded");
    if let Some(d) = &args.state_dir {
        cfg.state_dir = d.clone();
    }
    if let Some(s) = &args.api_socket {
        cfg.api_socket = s.clone();
    }
    if let Some(p) = &args.plugin_dir {
        cfg.plugin_dir = p.clone();
    }
    if let Some(g) = &args.socket_group {
        cfg.api.socket_group = Some(g.clone());
    }
    if let Some(f) = &args.firewall {
        cfg.firewall = match f.as_str() {
            "nftables" => FirewallChoice::Nftables,
            "iptables" => FirewallChoice::Iptables,
            _ => FirewallChoice::Auto,
        };
    }
    Ok(cfg)
}

/// Creates the networks the configuration declares, if missing. Errors are logged, not fatal:
/// the daemon still serves the networks that work.
async fn ensure_declared(engine: &Engine, cfg: &Config) {
    for n in &cfg.networks {
        let req = match convert::network_request(n) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(network = %n.name, "declared network is invalid: {}", e.message);
                continue;
            }
        };
        match engine.ensure_network(req).await {
            Ok(spec) => {
                tracing::info!(network = %spec.name, bridge = %spec.bridge, subnet = %spec.subnet, "network ready")
            }
            Err(e) => tracing::error!(network = %n.name, "declared network not created: {e}"),
        }
    }
}

/// Reads dockerd's daemon.json (absent = docker's defaults).
fn docker_settings(cfg: &Config) -> Result<Docker0Settings> {
    let path = &cfg.docker.daemon_json;
    let text = match std::fs::read_to_string(path) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    docker0_settings(text.as_deref()).with_context(|| format!("{}", path.display()))
}

/// The docker0-compatible network, if configured: created from daemon.json unless present.
async fn ensure_docker0(
    engine: &Engine,
    cfg: &Config,
    s: &Docker0Settings,
) -> Option<Docker0Adoption> {
    if !cfg.docker.docker0_compat {
        return None;
    }
    match engine.ensure_network(s.network.clone()).await {
        Ok(spec) => {
            tracing::info!(network = %spec.name, bridge = %spec.bridge, subnet = %spec.subnet, "docker0-compatible network ready");
            Some(Docker0Adoption {
                network: spec.name.clone(),
                bridge: spec.bridge.to_string(),
                id_file: cfg.state_dir.join("docker0.network-id"),
            })
        }
        Err(e) => {
            tracing::error!("docker0-compatible network not created: {e}");
            None
        }
    }
}

/// dockerd `--bridge=none` deletes any link called docker0 shortly after it starts: puts the
/// docker0 network's bridge back the moment it is deleted (link notifications, no polling), and
/// whenever the subscription (re)starts, in case it went while nobody was listening (shimnetd not
/// running, notifications lost).
fn watch_docker0(
    engine: Arc<Engine>,
    network: runtime_net::NetworkName,
    bridge: String,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) {
    tokio::spawn(async move {
        let repair = |why: &'static str| {
            let (engine, network) = (engine.clone(), network.clone());
            async move {
                match engine.repair_bridge(&network).await {
                    Ok(true) => tracing::info!(network = %network, why, "docker0 bridge restored"),
                    Ok(false) => {}
                    Err(e) => tracing::warn!(network = %network, "docker0 repair failed: {e}"),
                }
            }
        };
        tokio::pin!(stop);
        loop {
            let mut deleted = match runtime_net::netlink::watch::deleted_links() {
                Ok(rx) => rx,
                Err(e) => {
                    tracing::error!("docker0: cannot watch for the bridge being deleted: {e}");
                    return;
                }
            };
            repair("watch started").await;
            loop {
                tokio::select! {
                    name = deleted.recv() => match name {
                        Some(n) if n == bridge => repair("deleted").await,
                        Some(_) => {}
                        None => break,
                    },
                    () = &mut stop => return,
                }
            }
            tracing::warn!("docker0: link notifications ended; subscribing again");
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                () = &mut stop => return,
            }
        }
    });
}

async fn reconcile(engine: &Engine, metrics: &Metrics, why: &str) {
    match shimnet::repair::full_reconcile(engine, metrics).await {
        Ok(r) if r.errors.is_empty() => tracing::info!(
            why,
            networks = r.networks,
            reclaimed = r.reclaimed,
            links_removed = r.links_removed,
            "reconciled"
        ),
        Ok(r) => tracing::warn!(why, errors = ?r.errors, "reconciled with errors"),
        Err(e) => tracing::error!(why, "reconciliation failed: {e}"),
    }
}

/// Serves the REST API on the socket the service manager passed (left in place at exit), else on
/// `path`, bound here (removed at exit).
fn spawn_api(
    inherited: Option<std::os::unix::net::UnixListener>,
    path: &std::path::Path,
    gid: Option<u32>,
    limits: server::Limits,
    rest: Arc<RestApi>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<tokio::task::JoinHandle<()>> {
    let grace = Duration::from_secs(10);
    Ok(match inherited {
        Some(l) => {
            let name = l
                .local_addr()
                .ok()
                .and_then(|a| a.as_pathname().map(PathBuf::from))
                .unwrap_or_else(|| path.to_path_buf());
            let listener = tokio::net::UnixListener::from_std(l)?;
            tracing::info!(socket = %name.display(), "API socket inherited (socket activation)");
            tokio::spawn(server::serve_inherited(
                listener, name, rest, limits, shutdown, grace,
            ))
        }
        None => {
            let listener = server::bind(path, 0o660, gid)?;
            tokio::spawn(server::serve(
                listener,
                path.to_path_buf(),
                rest,
                limits,
                shutdown,
                grace,
            ))
        }
    })
}

/// The MTU `apply_node` gave the default network (kept across reloads).
fn node_mtu(cfg: &Config) -> Option<u32> {
    cfg.node.as_ref()?;
    cfg.networks
        .iter()
        .find(|n| n.name == shimnet::config::DEFAULT_NETWORK)
        .and_then(|n| n.mtu)
}

/// Where the peers come from, started and ready to run.
enum Source {
    /// The peer file, re-read when its directory reports a change and on SIGHUP.
    File(FileSource, tokio::sync::mpsc::Receiver<()>),
    /// etcd.
    Etcd(Box<membership_etcd::EtcdSource>),
}

/// Peering, started: the controller, its membership source and what the API serves.
struct PeeringRun {
    peering: Peering,
    source: Source,
    subscription: PeerSubscription,
    view: MembershipView,
    /// The peering loop's own timer (and the peer file's poll): only without event-driven
    /// repair.
    every: Option<Duration>,
    prober: Arc<Prober>,
    /// SIGHUP: re-read the peer file (file source).
    reload_source: Option<tokio::sync::mpsc::Sender<()>>,
}

/// With `[node]` and `[peering]`: starts the membership source (the peer file, or etcd: lease
/// the pod subnet, list the cluster), then peering (finds the underlay, chooses the IPIP path)
/// with the peers known at start, opens the encapsulation filter of the engine's firewall
/// backend, and shapes the default network (subnet, MTU, no NAT inside the cluster).
/// The pod forwarding programs' owner, when peering may use them (`[peering] forwarding` is
/// not `kernel`) and the kernel lets this process create eBPF maps.
fn forwarding_programs(cfg: &Config) -> Option<Arc<TcForwarding>> {
    let pc = cfg.peering.as_ref()?;
    if pc.forwarding == ForwardingChoice::Kernel {
        return None;
    }
    match TcForwarding::new() {
        Ok(h) => Some(Arc::new(h)),
        Err(e) if pc.forwarding == ForwardingChoice::Auto => {
            tracing::info!("{e}; pod traffic to peers takes the kernel's forwarding path");
            None
        }
        Err(e) => {
            tracing::error!("{e}; pod traffic to peers takes the kernel's forwarding path");
            None
        }
    }
}

async fn start_peering(
    cfg: &mut Config,
    firewall: BackendKind,
    metrics: &Arc<Metrics>,
    forwarding: Option<Arc<TcForwarding>>,
) -> Result<Option<PeeringRun>> {
    let (Some(settings), Some(pc)) = (cfg.node.clone(), cfg.peering.clone()) else {
        cfg.apply_node(None);
        return Ok(None);
    };
    // With event-driven repair, peering passes follow events (and the repair loop's safety
    // pass); `[peering] reconcile_interval_secs` is the timer only without it.
    let every =
        (!cfg.repair_on_events).then(|| Duration::from_secs(pc.reconcile_interval_secs.max(1)));
    let (node, initial, source, subscription, status, refresh, reload_source) = match pc.source {
        SourceKind::File => {
            let pod_cidr = settings
                .pod_cidr
                .context("node.pod_cidr: required with the peer file")?;
            let node = settings.resolve(pod_cidr);
            let (mut fs, sub) =
                FileSource::new(pc.peers_file.clone(), node.clone(), pc.cluster_cidr);
            let initial = match fs.load(true) {
                Ok(p) => p.unwrap_or_default(),
                Err(e) => {
                    tracing::error!("peer file refused, starting without peers: {e}");
                    Vec::new()
                }
            };
            let status = fs.feed().status();
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            (
                node,
                Some(initial),
                Source::File(fs, rx),
                sub,
                status,
                None,
                Some(tx),
            )
        }
        SourceKind::Etcd => {
            let etcd = cfg
                .etcd
                .clone()
                .context("peering.source = \"etcd\" needs [etcd]")?;
            let started = membership_etcd::start(membership_etcd::StartArgs {
                etcd,
                node: settings.clone(),
                peering: pc.clone(),
                state_dir: cfg.state_dir.clone(),
            })
            .await
            .context("etcd membership")?;
            tracing::info!(
                pod_cidr = %started.node.pod_cidr,
                peers = started.initial.as_ref().map(Vec::len),
                "etcd membership: pod subnet leased"
            );
            (
                started.node,
                started.initial,
                Source::Etcd(Box::new(started.source)),
                started.subscription,
                started.status,
                Some(started.refresh),
                None,
            )
        }
    };
    if let Some(n) = cfg.node.as_mut() {
        n.pod_cidr = Some(node.pod_cidr);
    }
    let mut p = Peering::new(node, pc, firewall, initial)
        .await
        .context("starting peering")?;
    if let Some(h) = forwarding {
        p = p.with_forwarding(h);
    }
    let mtu = p.container_mtu();
    tracing::info!(
        ipip = ?p.ipip_path(),
        container_mtu = mtu,
        underlay_mtu = p.underlay().mtu,
        peers = p.peers().len(),
        "peering ready; IPIP uses the {} data plane",
        match p.ipip_path() {
            IpipPath::Kernel => "kernel",
            IpipPath::Userspace => "userspace",
            IpipPath::Bpf => "userspace (encapsulation in the kernel by tc programs)",
        }
    );
    cfg.apply_node(Some(mtu));
    let prober = Arc::new(p.prober(Freshness::default()));
    let freshen: RefreshHook = {
        let (prober, peering, source, metrics) =
            (prober.clone(), p.status(), status.clone(), metrics.clone());
        Arc::new(move || {
            let (prober, peering, source, metrics) = (
                prober.clone(),
                peering.clone(),
                source.clone(),
                metrics.clone(),
            );
            Box::pin(async move {
                prober.freshen().await;
                publish_live(&peering, &metrics);
                let peers = peering
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .peers
                    .len();
                publish_membership(&source, peers, &metrics);
            })
        })
    };
    let view = MembershipView {
        peering: p.status(),
        source: status,
        refresh,
        freshen: Some(freshen),
    };
    Ok(Some(PeeringRun {
        peering: p,
        source,
        subscription,
        view,
        every,
        prober,
        reload_source,
    }))
}

/// What the peering loop is asked for (besides its timer, when it has one).
struct PeeringAsks {
    /// SIGHUP.
    reload: tokio::sync::mpsc::Receiver<()>,
    /// Passes asked for by event-driven repair (answered with the number of changes).
    passes: tokio::sync::mpsc::Receiver<shimnet::repair::PeeringPass>,
}

/// Applies each new peer set from the membership source at once, and reconciles when asked
/// (SIGHUP, or a pass asked for by event-driven repair — a drifted peering object or the safety
/// pass — which gets the number of changes back) and, only when `every` is given (event-driven
/// repair off), on that timer; a pass that ends with errors is tried again with a backoff
/// ([`Retry`]). After each pass it probes the peers in the background (one probe
/// at a time); between passes the status probes on demand (see [`Prober`]).
#[allow(clippy::too_many_arguments)]
async fn peering_loop(
    mut p: Peering,
    mut peers: PeerSubscription,
    source: SourceHandle,
    every: Option<Duration>,
    prober: Arc<Prober>,
    metrics: Arc<Metrics>,
    mut asks: PeeringAsks,
    stop: impl std::future::Future<Output = ()>,
) {
    let mut shown: Vec<String> = Vec::new();
    let mut tick = every.map(|e| {
        let mut t = tokio::time::interval_at(tokio::time::Instant::now() + e, e);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });
    tokio::pin!(stop);
    let mut last_errors: Vec<String> = Vec::new();
    let mut probing: Option<tokio::task::JoinHandle<()>> = None;
    let mut retry = Retry::default();
    let mut retry_at: Option<tokio::time::Instant> = None;
    // The first pass runs at once.
    let mut first = true;
    loop {
        let mut taken = false;
        let mut reply = None;
        if !std::mem::take(&mut first) {
            tokio::select! {
                _ = async { tick.as_mut().expect("guarded").tick().await }, if tick.is_some() => {}
                () = async { tokio::time::sleep_until(retry_at.expect("guarded")).await }, if retry_at.is_some() => {}
                Some(()) = asks.reload.recv() => {}
                Some(r) = asks.passes.recv() => reply = Some(r),
                set = peers.changed() => {
                    taken = p.take(set.to_vec());
                }
                () = &mut stop => break,
            }
        }
        let r = p.reconcile().await;
        retry_at = retry
            .after(!r.errors.is_empty())
            .map(|wait| tokio::time::Instant::now() + wait);
        if let Some(reply) = reply {
            let _ = reply.send(shimnet::repair::PassAnswer {
                changes: r.changes,
                errors: r.errors.clone(),
            });
        }
        if r.changes > 0 || taken {
            tracing::info!(
                changes = r.changes,
                new_peer_set = taken,
                peers = p.peers().len(),
                "peering reconciled"
            );
        }
        if r.errors != last_errors {
            if r.errors.is_empty() {
                tracing::info!("peering: errors cleared");
            } else {
                tracing::warn!(errors = ?r.errors, "peering reconciled with errors");
            }
            last_errors = r.errors;
        }
        publish_peers(&p, &source, &metrics, &mut shown);
        if probing.as_ref().is_none_or(|h| h.is_finished()) {
            let (prober, status, metrics) = (prober.clone(), p.status(), metrics.clone());
            probing = Some(tokio::spawn(async move {
                prober.probe().await;
                publish_live(&status, &metrics);
            }));
        }
    }
}

/// One publisher of the peering metrics at a time: the drop counters are totals, recorded as
/// increments, so an older total recorded after a newer one would count twice.
static PUBLISHING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Mirrors the peers' reachability, as the last probe found it, into `shimnet_peer_up` and the
/// drop counters, as they are now, into `shimnet_peering_encap_dropped_total`.
fn publish_live(status: &StatusHandle, metrics: &Metrics) {
    let _one = PUBLISHING.lock().unwrap_or_else(|e| e.into_inner());
    let st = status
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .with_live_counters();
    for peer in &st.peers {
        metrics.set_peer_up(&peer.name, peer.reachable);
    }
    metrics.record_encap_dropped(st.encap_dropped.vxlan, st.encap_dropped.ipip);
}

/// Mirrors the peers' reachability into `shimnet_peer_up` (dropping peers no longer listed) and
/// the encapsulation drop counters into `shimnet_peering_encap_dropped_total` and the membership
/// source's state into its metrics.
fn publish_peers(p: &Peering, source: &SourceHandle, metrics: &Metrics, shown: &mut Vec<String>) {
    let _one = PUBLISHING.lock().unwrap_or_else(|e| e.into_inner());
    let snap = p
        .status()
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .with_live_counters();
    let now: Vec<String> = snap.peers.iter().map(|p| p.name.clone()).collect();
    for gone in shown.iter().filter(|n| !now.contains(n)) {
        metrics.remove_peer(gone);
    }
    for peer in &snap.peers {
        metrics.set_peer_up(&peer.name, peer.reachable);
    }
    metrics.record_encap_dropped(snap.encap_dropped.vxlan, snap.encap_dropped.ipip);
    *shown = now;
    publish_membership(source, p.peers().len(), metrics);
}

/// Mirrors the membership source's state (up, skipped entries, watch events…) and the number
/// of peers into the membership metrics: after each pass and for each reader of the metrics
/// (the source changes without a pass, e.g. an entry skipped).
fn publish_membership(source: &SourceHandle, peers: usize, metrics: &Metrics) {
    let src = source.read().unwrap_or_else(|e| e.into_inner()).clone();
    metrics.set_membership(&shimnet_api::metrics::MembershipSample {
        source: src.kind.as_str(),
        up: src.reachable,
        peers: peers as u64,
        skipped: src.skipped.len() as u64,
        watch_events: src.watch_events,
        sessions: src.sessions,
    });
}

fn main() -> Result<()> {
    shimnet::process::runtime()
        .context("starting the async runtime")?
        .block_on(run())
}

async fn run() -> Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SHIMNET_LOG")
        .unwrap_or_else(|_| "info".into());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::env::var("SHIMNET_LOG_FORMAT").as_deref() == Ok("json") {
        logs.json().init();
    } else {
        logs.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
    let args = Args::parse();
    if let Some(dir) = &args.generate_docs {
        use clap::CommandFactory;
        shimnet::docs::generate(Args::command(), dir)
            .with_context(|| format!("writing docs into {}", dir.display()))?;
        return Ok(());
    }
    // Handlers first: a SIGHUP that arrives as soon as the API answers must reload, not kill
    // (the default action of SIGHUP is to terminate).
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let cfg = load_config(&args)?;
    let gid = cfg.api.socket_gid()?;
    let limits = cfg.api.limits();
    // Taken first so a bad descriptor fails the start before anything is built.
    let inherited = activation::inherited_listener().context("socket activation")?;
    let metrics = Arc::new(Metrics::new());
    let settings = cfg.docker.enabled.then(|| {
        docker_settings(&cfg).unwrap_or_else(|e| {
            tracing::error!("daemon.json ignored: {e:#}");
            docker0_settings(None).expect("defaults parse")
        })
    });
    // docker0-compatible mode keeps dockerd's chain layout in iptables' FORWARD (unless
    // daemon.json turns iptables off); the firewall owns its order.
    let admin_chains = settings
        .as_ref()
        .filter(|s| cfg.docker.docker0_compat && s.iptables)
        .map(|_| conventions::chain_layout());
    let engine = Arc::new(
        Engine::new(&EngineConfig {
            state_dir: cfg.state_dir.clone(),
            firewall: cfg.firewall.preference(),
            admin_chains,
        })
        .await
        .context("starting the engine")?
        .with_max_extensions(cfg.max_bridge_extensions)
        .with_port_capacity(cfg.bridge_ports),
    );
    tracing::info!(firewall = ?engine.firewall_kind(), state_dir = %cfg.state_dir.display(), "engine started");
    // The name service follows the records from here on: networks with `dns` are served and the
    // recorded names registered before reconciliation reclaims anything.
    let dns = Arc::new(
        shimnet_dns::Dns::start(cfg.dns.settings(), metrics.dns().clone())
            .context("starting the name service")?,
    );
    // Pod forwarding in tc programs learns the pod ports from the records, like the names.
    let forwarding = forwarding_programs(&cfg);
    let mut observers: Vec<Arc<dyn Observer>> = vec![Arc::new(DnsHook::new(dns.clone()))];
    if let Some(h) = &forwarding {
        observers.push(h.clone());
    }
    engine
        .set_observer(Arc::new(Observers(observers)))
        .await
        .context("loading names")?;
    reconcile(&engine, &metrics, "start").await;
    let mut cfg = cfg;
    let peering = start_peering(&mut cfg, engine.firewall_kind(), &metrics, forwarding).await?;
    ensure_declared(&engine, &cfg).await;

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let plugin = if let Some(settings) = settings {
        let docker0 = ensure_docker0(&engine, &cfg, &settings).await;
        if let Some(d) = docker0.as_ref().filter(|_| !cfg.repair_on_events) {
            watch_docker0(
                engine.clone(),
                d.network.clone(),
                d.bridge.clone(),
                stopped(stop_rx.clone()),
            );
        }
        let path = cfg.plugin_dir.join(SOCKET_NAME);
        let listener = server::bind(&path, 0o660, gid)?;
        let api = PluginApi::new(
            engine.clone(),
            PluginConfig {
                call_timeout: Duration::from_secs(cfg.docker.call_timeout_secs.max(1)),
                default_pools: settings.default_pools.clone(),
                docker0,
            },
        )
        .with_metrics(metrics.clone());
        tracing::info!(socket = %path.display(), "docker plugin ready");
        Some(tokio::spawn(server::serve(
            listener,
            path,
            Arc::new(api),
            limits,
            stopped(stop_rx.clone()),
            Duration::from_secs(10),
        )))
    } else {
        None
    };
    // The REST API comes up last: once it answers, every declared network (docker0 included)
    // exists. Under socket activation the service manager's socket is served instead (and left
    // in place at exit); connections queued on it meanwhile are answered now.
    let mut rest = RestApi::with_metrics(engine.clone(), metrics.clone())
        .with_call_timeout(Duration::from_secs(cfg.api.call_timeout_secs.max(1)))
        .with_dns(dns.clone());
    if let Some(run) = &peering {
        rest = rest.with_peers(run.view.clone());
    }
    let api = spawn_api(
        inherited,
        &cfg.api_socket,
        gid,
        limits,
        Arc::new(rest),
        stopped(stop_rx.clone()),
    )?;
    tracing::info!(socket = %cfg.api_socket.display(), "shimnetd ready");
    // Every socket is listening and served: connections made from now on are answered.
    activation::notify_ready(if plugin.is_some() {
        "serving the REST API and the Docker plugin"
    } else {
        "serving the REST API"
    });

    let (pass_tx, pass_rx) = tokio::sync::mpsc::channel::<shimnet::repair::PeeringPass>(4);
    let full_every =
        (cfg.reconcile_interval_secs > 0).then(|| Duration::from_secs(cfg.reconcile_interval_secs));
    if cfg.repair_on_events {
        // Event-driven repair; its loop also runs the periodic full pass.
        let repairer = shimnet::repair::DaemonRepairer::new(
            engine.clone(),
            metrics.clone(),
            peering.is_some().then(|| pass_tx.clone()),
        );
        shimnet::repair::spawn(
            repairer,
            runtime_net::repair::run::RunConfig {
                timing: runtime_net::repair::driver::Timing::default(),
                full_every,
            },
            stop_rx.clone(),
        );
    } else if let Some(every) = full_every {
        let e = engine.clone();
        let m = metrics.clone();
        let stop = stopped(stop_rx.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            tokio::pin!(stop);
            loop {
                tokio::select! {
                    _ = tick.tick() => reconcile(&e, &m, "periodic").await,
                    () = &mut stop => break,
                }
            }
        });
    }

    let reload_peers = peering.map(|run| {
        let (tx, rx) = tokio::sync::mpsc::channel::<()>(4);
        let source = run.view.source.clone();
        match run.source {
            Source::File(fs, reload) => {
                tokio::spawn(fs.run(run.every, reload, stopped(stop_rx.clone())));
            }
            Source::Etcd(src) => {
                tokio::spawn(src.run(stopped(stop_rx.clone())));
            }
        }
        tokio::spawn(peering_loop(
            run.peering,
            run.subscription,
            source,
            run.every,
            run.prober,
            metrics.clone(),
            PeeringAsks {
                reload: rx,
                passes: pass_rx,
            },
            stopped(stop_rx.clone()),
        ));
        (tx, run.reload_source)
    });

    let mut store_health = engine.store_health_changes();
    let mut failure = None;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            Ok(h) = store_health.wait_for(|h| h.fatal.is_some()) => {
                // Reopening the store in this process is not safe (see runtime-net's
                // store::handle); a restart by the service manager recovers it or stops with
                // the reason.
                failure = h.fatal.clone();
                break;
            }
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading configuration");
                match load_config(&args) {
                    Ok(mut new) => {
                        let leased = cfg.node.as_ref().and_then(|n| n.pod_cidr);
                        if let Some(n) = new.node.as_mut().filter(|n| n.pod_cidr.is_none()) {
                            // The subnet leased through etcd at start stays this node's.
                            n.pod_cidr = leased;
                        }
                        new.apply_node(node_mtu(&cfg));
                        if new.api_socket != cfg.api_socket || new.state_dir != cfg.state_dir {
                            tracing::warn!("api_socket and state_dir changes take effect at the next start");
                        }
                        if new.dns != cfg.dns {
                            tracing::warn!("[dns] changes take effect at the next start");
                        }
                        if new.node != cfg.node || new.peering != cfg.peering || new.etcd != cfg.etcd {
                            tracing::warn!("[node], [peering] and [etcd] changes take effect at the next start; the peer file reloads now");
                        }
                        reconcile(&engine, &metrics, "reload").await;
                        ensure_declared(&engine, &new).await;
                        if let Some((tx, file)) = &reload_peers {
                            if let Some(f) = file {
                                let _ = f.try_send(());
                            }
                            let _ = tx.try_send(());
                        }
                    }
                    Err(e) => tracing::error!("reload failed, keeping the running configuration: {e:#}"),
                }
            }
        }
    }
    match &failure {
        Some(why) => tracing::error!(
            "state store: {why}; exiting so that the service manager restarts shimnetd (containers keep their networking)"
        ),
        None => tracing::info!("shutting down; containers keep their networking"),
    }
    activation::notify_stopping();
    let _ = stop_tx.send(true);
    let _ = api.await;
    if let Some(p) = plugin {
        let _ = p.await;
    }
    match failure {
        Some(why) => Err(anyhow::anyhow!(
            "state store cannot be reopened safely: {why}"
        )),
        None => Ok(()),
    }
}
