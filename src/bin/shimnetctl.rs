//! `shimnetctl`: control CLI of shimnetd. Human tables by default, `--json` for scripts.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args as ClapArgs, Parser, Subcommand};
use serde_json::Value;
use shimnet::netns::{run_in, NamedNetns};
use shimnet::ping::ping;
use shimnet_api::client::Client;
use shimnet_wire::{
    ClusterReply, EndpointAttach, NamesReply, NetworkCreate, PeersReply, PortSpec,
    DEFAULT_API_SOCKET,
};

/// Control shimnetd.
#[derive(Debug, Parser)]
#[command(name = "shimnetctl", version)]
struct Cli {
    /// API socket of the daemon.
    #[arg(long, global = true, default_value = DEFAULT_API_SOCKET, env = "SHIMNET_SOCKET")]
    socket: PathBuf,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Manage networks.
    #[command(subcommand)]
    Network(NetworkCmd),
    /// Manage endpoints (container attachments).
    #[command(subcommand)]
    Endpoint(EndpointCmd),
    /// Daemon status.
    Status,
    /// Run a reconciliation pass now.
    Reconcile,
    /// Peers of this node: where they come from (peer file or etcd, reachable since when), each
    /// peer's subnet, address, chosen mode, reachability across the data plane, lease expiry.
    Peers {
        /// List etcd's subnet reservations instead (same as `shimnetctl cluster`).
        #[arg(long)]
        reservations: bool,
    },
    /// Subnet reservations of the etcd membership: which node holds which subnet, live or gone.
    Cluster,
    /// Report usable kernel features and run a live probe: two throwaway namespaces attached to a
    /// network ping each other and the gateway, then everything is removed.
    Check {
        /// Network to probe (default: the first one).
        #[arg(long)]
        network: Option<String>,
        /// Only report features.
        #[arg(long)]
        no_probe: bool,
    },
    /// Write man pages and shell completions into DIR (packaging).
    #[command(hide = true)]
    GenerateDocs { dir: PathBuf },
}

#[derive(Debug, Subcommand)]
enum NetworkCmd {
    /// Create a bridge network.
    Create(CreateArgs),
    /// List networks.
    Ls,
    /// Show one network.
    Inspect { name: String },
    /// Delete a network.
    Rm {
        name: String,
        /// Detach its endpoints first.
        #[arg(long)]
        force: bool,
    },
    /// The names a network with --dns answers (and where its DNS server listens and forwards).
    Names { name: String },
}

#[derive(Debug, ClapArgs)]
struct CreateArgs {
    name: String,
    /// IPv4 subnet (CIDR).
    #[arg(long)]
    subnet: String,
    /// Gateway (default: first address).
    #[arg(long)]
    gateway: Option<String>,
    /// Bridge name (default: the network name).
    #[arg(long)]
    bridge: Option<String>,
    /// IPv6 subnet.
    #[arg(long)]
    subnet6: Option<String>,
    /// IPv6 gateway.
    #[arg(long)]
    gateway6: Option<String>,
    /// MTU.
    #[arg(long)]
    mtu: Option<u32>,
    /// No access to or from the outside.
    #[arg(long)]
    internal: bool,
    /// Do not masquerade outgoing traffic.
    #[arg(long)]
    no_masquerade: bool,
    /// Forbid container-to-container traffic (docker's icc=false).
    #[arg(long)]
    no_icc: bool,
    /// Hairpin mode on bridge ports.
    #[arg(long)]
    hairpin: bool,
    /// Destination never masqueraded (repeatable).
    #[arg(long)]
    no_masquerade_to: Vec<String>,
    /// Answer the containers' names on the gateway (DNS, UDP and TCP port 53).
    #[arg(long)]
    dns: bool,
}

#[derive(Debug, Subcommand)]
enum EndpointCmd {
    /// Attach a network namespace to a network.
    Attach {
        network: String,
        /// Network namespace path.
        #[arg(long)]
        netns: String,
        /// Container id.
        #[arg(long)]
        id: String,
        /// Interface name in the container.
        #[arg(long, default_value = "eth0")]
        ifname: String,
        /// Static IPv4 address.
        #[arg(long)]
        ip: Option<String>,
        /// Static IPv6 address.
        #[arg(long)]
        ip6: Option<String>,
        /// MAC address.
        #[arg(long)]
        mac: Option<String>,
        /// Publish a port: [HOST_IP:]HOST_PORT:CONTAINER_PORT[/PROTO] (repeatable).
        #[arg(short = 'p', long = "publish")]
        publish: Vec<String>,
        /// The container's name (resolvable on a network with --dns).
        #[arg(long)]
        name: Option<String>,
        /// Another name it answers to on this network (repeatable).
        #[arg(long = "alias")]
        aliases: Vec<String>,
    },
    /// Detach (idempotent).
    Detach {
        network: String,
        #[arg(long)]
        id: String,
        #[arg(long, default_value = "eth0")]
        ifname: String,
    },
    /// List endpoints.
    Ls { network: Option<String> },
    /// Compare an endpoint's kernel state with its record.
    Check {
        network: String,
        #[arg(long)]
        id: String,
        #[arg(long, default_value = "eth0")]
        ifname: String,
    },
}

/// Parses `[HOST_IP:]HOST_PORT:CONTAINER_PORT[/PROTO]`.
fn parse_publish(s: &str) -> Result<PortSpec> {
    let (spec, proto) = match s.rsplit_once('/') {
        Some((a, p)) => (a, Some(p.to_string())),
        None => (s, None),
    };
    let parts: Vec<&str> = spec.rsplitn(3, ':').collect();
    let port = |p: &str| {
        p.parse::<u16>()
            .with_context(|| format!("--publish {s}: {p:?} is not a port"))
    };
    match parts.as_slice() {
        [c, h] => Ok(PortSpec {
            protocol: proto,
            host_ip: None,
            host_port: port(h)?,
            container_port: port(c)?,
        }),
        [c, h, ip] => Ok(PortSpec {
            protocol: proto,
            host_ip: Some(ip.to_string()),
            host_port: port(h)?,
            container_port: port(c)?,
        }),
        _ => bail!("--publish {s}: expected [HOST_IP:]HOST_PORT:CONTAINER_PORT[/PROTO]"),
    }
}

fn table(headers: &[&str], rows: Vec<Vec<String>>) {
    for line in shimnet::peers_view::table(headers, &rows) {
        println!("{line}");
    }
}

fn s(v: &Value, path: &str) -> String {
    let mut cur = v;
    for p in path.split('.') {
        cur = &cur[p];
    }
    match cur {
        Value::Null => "-".into(),
        Value::String(x) => x.clone(),
        other => other.to_string(),
    }
}

/// `network names`: where the server listens and forwards, then one line per name.
fn print_names(v: &NamesReply) {
    if !v.dns {
        println!(
            "network {} does not resolve names (create it with --dns)",
            v.network
        );
        return;
    }
    let listening: Vec<String> = v
        .listeners
        .iter()
        .map(|l| match &l.error {
            None => format!("{}/{}", l.address, l.protocol),
            Some(e) => format!("{}/{} NOT BOUND ({e})", l.address, l.protocol),
        })
        .collect();
    println!(
        "network {}: domain {}, listening on {}",
        v.network,
        v.domain.as_deref().unwrap_or("-"),
        listening.join(", ")
    );
    if v.internal {
        println!("internal: other names are refused, nothing is forwarded");
    } else if v.upstreams.is_empty() {
        println!("upstreams: none (other names get SERVFAIL)");
    } else {
        println!("upstreams: {}", v.upstreams.join(", "));
    }
    let rows = v
        .names
        .iter()
        .map(|n| {
            let v6 = if n.ipv6.is_empty() {
                "-".to_string()
            } else {
                n.ipv6.join(",")
            };
            vec![n.name.clone(), n.ipv4.join(","), v6]
        })
        .collect();
    table(&["NAME", "IPV4", "IPV6"], rows);
}

fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

fn endpoint_rows(eps: &Value) -> Vec<Vec<String>> {
    eps.as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            vec![
                s(e, "key.network"),
                s(e, "key.container_id"),
                s(e, "key.ifname"),
                s(e, "ipv4"),
                s(e, "mac"),
                s(e, "host_ifname"),
                s(e, "netns"),
            ]
        })
        .collect()
}

const EP_HEADERS: [&str; 7] = [
    "NETWORK",
    "CONTAINER",
    "IFNAME",
    "ADDRESS",
    "MAC",
    "HOST-VETH",
    "NETNS",
];

fn run(cli: Cli) -> Result<()> {
    let c = Client::new(&cli.socket);
    let none: Option<&Value> = None;
    match cli.cmd {
        Cmd::Network(NetworkCmd::Create(a)) => {
            let body = NetworkCreate {
                name: a.name,
                subnet: a.subnet,
                gateway: a.gateway,
                bridge: a.bridge,
                subnet6: a.subnet6,
                gateway6: a.gateway6,
                mtu: a.mtu,
                masquerade: a.no_masquerade.then_some(false),
                icc: a.no_icc.then_some(false),
                internal: a.internal.then_some(true),
                hairpin: a.hairpin.then_some(true),
                no_masquerade_to: a.no_masquerade_to,
                dns: a.dns.then_some(true),
                ..Default::default()
            };
            let v: Value = c.call("POST", "/v1/networks", Some(&body))?;
            if cli.json {
                print_json(&v);
            } else {
                println!(
                    "created network {} (bridge {}, subnet {}, gateway {})",
                    s(&v, "name"),
                    s(&v, "bridge"),
                    s(&v, "subnet"),
                    s(&v, "gateway")
                );
            }
        }
        Cmd::Network(NetworkCmd::Ls) => {
            let v: Value = c.call("GET", "/v1/networks", none)?;
            if cli.json {
                print_json(&v);
                return Ok(());
            }
            let rows = v
                .as_array()
                .into_iter()
                .flatten()
                .map(|n| {
                    let mut flags = vec![];
                    if n["internal"] == true {
                        flags.push("internal");
                    }
                    if n["masquerade"] == false {
                        flags.push("no-masq");
                    }
                    if n["icc"] == false {
                        flags.push("no-icc");
                    }
                    if n["dns"] == true {
                        flags.push("dns");
                    }
                    vec![
                        s(n, "name"),
                        s(n, "bridge"),
                        s(n, "subnet"),
                        s(n, "gateway"),
                        s(n, "mtu"),
                        flags.join(","),
                    ]
                })
                .collect();
            table(
                &["NAME", "BRIDGE", "SUBNET", "GATEWAY", "MTU", "FLAGS"],
                rows,
            );
        }
        Cmd::Network(NetworkCmd::Inspect { name }) => {
            let v: Value = c.call("GET", &format!("/v1/networks/{name}"), none)?;
            print_json(&v);
        }
        Cmd::Network(NetworkCmd::Names { name }) => {
            let v: NamesReply = c.call("GET", &format!("/v1/networks/{name}/names"), none)?;
            if cli.json {
                print_json(&serde_json::to_value(&v)?);
                return Ok(());
            }
            print_names(&v);
        }
        Cmd::Network(NetworkCmd::Rm { name, force }) => {
            let q = if force { "?force=true" } else { "" };
            let v: Value = c.call("DELETE", &format!("/v1/networks/{name}{q}"), none)?;
            if cli.json {
                print_json(&v);
            } else {
                println!("deleted network {name}");
            }
        }
        Cmd::Endpoint(EndpointCmd::Attach {
            network,
            netns,
            id,
            ifname,
            ip,
            ip6,
            mac,
            publish,
            name,
            aliases,
        }) => {
            let ports = publish
                .iter()
                .map(|p| parse_publish(p))
                .collect::<Result<Vec<_>>>()?;
            let body = EndpointAttach {
                container_id: id,
                netns,
                ifname: Some(ifname),
                ip,
                ip6,
                mac,
                ports,
                name,
                aliases,
            };
            let v: Value = c.call(
                "POST",
                &format!("/v1/networks/{network}/endpoints"),
                Some(&body),
            )?;
            if cli.json {
                print_json(&v);
            } else {
                table(&EP_HEADERS, endpoint_rows(&Value::Array(vec![v])));
            }
        }
        Cmd::Endpoint(EndpointCmd::Detach {
            network,
            id,
            ifname,
        }) => {
            let v: Value = c.call(
                "DELETE",
                &format!("/v1/networks/{network}/endpoints/{id}?ifname={ifname}"),
                none,
            )?;
            if cli.json {
                print_json(&v);
            } else if v["released"].is_null() {
                println!("nothing attached as {network}/{id}/{ifname}");
            } else {
                println!(
                    "detached {network}/{id}/{ifname} (released {})",
                    s(&v, "released.ipv4")
                );
            }
        }
        Cmd::Endpoint(EndpointCmd::Ls { network }) => {
            let path = match network {
                Some(n) => format!("/v1/networks/{n}/endpoints"),
                None => "/v1/endpoints".into(),
            };
            let v: Value = c.call("GET", &path, none)?;
            if cli.json {
                print_json(&v);
                return Ok(());
            }
            table(&EP_HEADERS, endpoint_rows(&v));
        }
        Cmd::Endpoint(EndpointCmd::Check {
            network,
            id,
            ifname,
        }) => {
            let v: Value = c.call(
                "GET",
                &format!("/v1/networks/{network}/endpoints/{id}/check?ifname={ifname}"),
                none,
            )?;
            if cli.json {
                print_json(&v);
            } else if v["ok"] == true {
                println!("ok");
            } else {
                for p in v["problems"].as_array().into_iter().flatten() {
                    println!("problem: {}", p.as_str().unwrap_or_default());
                }
            }
            if v["ok"] != true {
                bail!("endpoint {network}/{id}/{ifname} has drifted");
            }
        }
        Cmd::Status => {
            // Health first: it answers even while the state store cannot be read.
            let health = c.request("GET", "/v1/health", None)?;
            let health: Value = serde_json::from_slice(&health.body).context("/v1/health")?;
            let status: Result<Value, _> = c.call("GET", "/v1/status", none);
            let scrape = c.request("GET", "/metrics", None)?;
            if scrape.status != 200 {
                bail!("GET /metrics answered HTTP {}", scrape.status);
            }
            let text = String::from_utf8(scrape.body).context("/metrics is not UTF-8")?;
            let summary = shimnet::status::summarize(&text).context("parsing /metrics")?;
            if cli.json {
                let mut v = match &status {
                    Ok(v) => v.clone(),
                    Err(e) => serde_json::json!({"status_error": e.to_string()}),
                };
                v["health"] = health;
                v["metrics"] = serde_json::to_value(&summary)?;
                print_json(&v);
                return Ok(());
            }
            match &status {
                Ok(v) => println!(
                    "shimnetd {} — firewall {}, {} network(s), {} endpoint(s), up {} s",
                    s(v, "version"),
                    s(v, "status.firewall"),
                    s(v, "status.networks"),
                    s(v, "status.endpoints"),
                    s(v, "status.uptime_seconds")
                ),
                Err(e) => println!("shimnetd — status unavailable: {e}"),
            }
            println!("{}", shimnet::status::store_line(&health["store"]));
            for line in shimnet::status::render(&summary) {
                println!("{line}");
            }
        }
        Cmd::Reconcile => {
            let v: Value = c.call("POST", "/v1/reconcile", none)?;
            print_json(&v);
        }
        Cmd::Check { network, no_probe } => check(&c, cli.json, network, no_probe)?,
        Cmd::GenerateDocs { dir } => {
            use clap::CommandFactory;
            shimnet::docs::generate(Cli::command(), &dir)
                .with_context(|| format!("writing docs into {}", dir.display()))?;
        }
        Cmd::Peers {
            reservations: false,
        } => {
            let v: PeersReply = c.call("GET", "/v1/peers?leases=true", none)?;
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                for line in shimnet::peers_view::render_peers(&v, now_unix()) {
                    println!("{line}");
                }
            }
        }
        Cmd::Peers { reservations: true } | Cmd::Cluster => {
            let v: ClusterReply = c.call("GET", "/v1/cluster", none)?;
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                for line in shimnet::peers_view::render_cluster(&v, now_unix()) {
                    println!("{line}");
                }
            }
        }
    }
    Ok(())
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Result of the live probe.
#[derive(Debug, serde::Serialize)]
struct ProbeStep {
    step: String,
    ok: bool,
    detail: String,
}

fn check(c: &Client, json: bool, network: Option<String>, no_probe: bool) -> Result<()> {
    let none: Option<&Value> = None;
    let features: Value = c.call("GET", "/v1/features", none)?;
    let mut steps = Vec::new();
    if !no_probe {
        let net = match network {
            Some(n) => n,
            None => {
                let nets: Value = c.call("GET", "/v1/networks", none)?;
                nets.as_array()
                    .and_then(|a| a.first())
                    .map(|n| s(n, "name"))
                    .ok_or_else(|| anyhow!("no network to probe: create one or pass --network"))?
            }
        };
        steps = probe(c, &net);
    }
    let failed = steps.iter().any(|s| !s.ok);
    // Peering, when configured: which IPIP data plane this node uses.
    let peering: Option<PeersReply> = c.call("GET", "/v1/peers", none).ok();
    let ipip_path = peering.and_then(|p| p.ipip);
    if json {
        print_json(
            &serde_json::json!({"features": features, "probe": steps, "peering": {"ipip_path": ipip_path}}),
        );
    } else {
        let rows = features
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, f)| {
                vec![
                    k.clone(),
                    if f["available"] == true { "yes" } else { "NO" }.into(),
                    s(f, "detail"),
                ]
            })
            .collect();
        table(&["FEATURE", "AVAILABLE", "DETAIL"], rows);
        match &ipip_path {
            Some(p) => println!("\npeering: IPIP data plane: {p}"),
            None => println!("\npeering: not configured"),
        }
        if !steps.is_empty() {
            println!();
            table(
                &["PROBE", "RESULT", "DETAIL"],
                steps
                    .iter()
                    .map(|s| {
                        vec![
                            s.step.clone(),
                            if s.ok { "ok" } else { "FAILED" }.into(),
                            s.detail.clone(),
                        ]
                    })
                    .collect(),
            );
        }
    }
    if failed {
        bail!("live probe failed");
    }
    Ok(())
}

fn probe(c: &Client, net: &str) -> Vec<ProbeStep> {
    let mut steps = Vec::new();
    let mut step = |name: String, r: Result<String>| {
        let ok = r.is_ok();
        steps.push(ProbeStep {
            step: name,
            ok,
            detail: r.unwrap_or_else(|e| format!("{e:#}")),
        });
        ok
    };
    let pid = std::process::id();
    let names = [format!("snchk-{pid}-a"), format!("snchk-{pid}-b")];
    let mut spaces = Vec::new();
    for n in &names {
        match NamedNetns::create(n) {
            Ok(ns) => spaces.push(ns),
            Err(e) => {
                step(format!("create namespace {n}"), Err(e.into()));
                return steps;
            }
        }
    }
    let none: Option<&Value> = None;
    let mut attached: Vec<(String, Value)> = Vec::new();
    for ns in &spaces {
        let id = format!("shimnet-check-{}", ns.name());
        let body = EndpointAttach {
            container_id: id.clone(),
            netns: ns.path().display().to_string(),
            ..Default::default()
        };
        let r: Result<Value> = c
            .call(
                "POST",
                &format!("/v1/networks/{net}/endpoints"),
                Some(&body),
            )
            .map_err(Into::into);
        let ok = step(
            format!("attach {} to {net}", ns.name()),
            r.as_ref().map(|v| s(v, "ipv4")).map_err(|e| anyhow!("{e}")),
        );
        if let Ok(v) = r {
            attached.push((id, v));
        }
        if !ok {
            break;
        }
    }
    if attached.len() == 2 {
        let ip = |v: &Value| {
            s(v, "ipv4")
                .split('/')
                .next()
                .unwrap_or_default()
                .parse::<std::net::Ipv4Addr>()
        };
        let targets = [
            ("peer", ip(&attached[1].1)),
            ("gateway", s(&attached[0].1, "gateway").parse()),
        ];
        for (what, target) in targets {
            let r = match target {
                Ok(t) => run_in(spaces[0].path(), move || ping(t, Duration::from_secs(2)))
                    .map_err(anyhow::Error::from)
                    .and_then(|r| r.map_err(anyhow::Error::from))
                    .map(|rtt| format!("{t}: {:.3} ms", rtt.as_secs_f64() * 1e3)),
                Err(e) => Err(anyhow!("bad address: {e}")),
            };
            step(format!("ping {what} from {}", spaces[0].name()), r);
        }
    }
    for (id, _) in &attached {
        let r: Result<Value> = c
            .call(
                "DELETE",
                &format!("/v1/networks/{net}/endpoints/{id}"),
                none,
            )
            .map_err(Into::into);
        step(format!("detach {id}"), r.map(|_| "released".into()));
    }
    drop(spaces);
    steps
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_forms() {
        let p = parse_publish("8080:80").unwrap();
        assert_eq!(
            (p.host_port, p.container_port, p.host_ip, p.protocol),
            (8080, 80, None, None)
        );
        let p = parse_publish("127.0.0.1:53:5353/udp").unwrap();
        assert_eq!(p.host_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(p.protocol.as_deref(), Some("udp"));
        assert!(parse_publish("80").is_err());
        assert!(parse_publish("x:80").is_err());
    }
}
