//! `shimnetctl status` at a glance: a summary of the daemon's `/metrics` exposition (the one
//! source of truth for counters), parsed with `prometheus-parse`.

use std::collections::BTreeMap;

use prometheus_parse::{Scrape, Value};
use serde::Serialize;

/// Usage of one network.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct NetworkLine {
    /// Endpoints recorded.
    pub endpoints: u64,
    /// IPv4 addresses handed out.
    pub ipv4_used: u64,
    /// Assignable IPv4 addresses.
    pub ipv4_capacity: u64,
    /// Bridge ports taken by endpoints.
    pub ports_used: u64,
    /// Bridge ports the network can take (0: not reported by the daemon).
    pub ports_capacity: u64,
}

/// Operation counts of one front door.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DoorLine {
    /// Successful operations.
    pub ok: u64,
    /// Failed operations.
    pub error: u64,
}

/// What `shimnetctl status` shows.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Summary {
    /// Per network (by name).
    pub networks: BTreeMap<String, NetworkLine>,
    /// Per front door (`rest`, `docker`, `cni`).
    pub operations: BTreeMap<String, DoorLine>,
    /// Reconciliation repairs by kind.
    pub repairs: BTreeMap<String, u64>,
    /// Event-driven repairs by kind (kinds with at least one).
    pub repaired: BTreeMap<String, RepairLine>,
    /// Peers up / down.
    pub peers_up: u64,
    /// Peers down.
    pub peers_down: u64,
}

/// Event-driven repairs of one kind.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RepairLine {
    /// Repairs since start.
    pub count: u64,
    /// Unix time of the last one.
    pub last_unix: f64,
    /// Its latency (first notification → repaired), in seconds.
    pub last_latency: f64,
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Counter(x) | Value::Gauge(x) | Value::Untyped(x) => Some(*x),
        _ => None,
    }
}

/// Summarises an exposition text.
pub fn summarize(text: &str) -> std::io::Result<Summary> {
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_string())))?;
    let mut s = Summary::default();
    for sample in &scrape.samples {
        let Some(x) = number(&sample.value) else {
            continue;
        };
        let n = x.max(0.0) as u64;
        let label = |k: &str| sample.labels.get(k).unwrap_or("").to_string();
        match sample.metric.as_str() {
            "shimnet_operations_total" => {
                let d = s.operations.entry(label("front_door")).or_default();
                if sample.labels.get("result") == Some("ok") {
                    d.ok += n;
                } else {
                    d.error += n;
                }
            }
            "shimnet_endpoints" => s.networks.entry(label("network")).or_default().endpoints = n,
            "shimnet_ipam_ipv4_addresses_used" => {
                s.networks.entry(label("network")).or_default().ipv4_used = n
            }
            "shimnet_ipam_ipv4_addresses_capacity" => {
                s.networks
                    .entry(label("network"))
                    .or_default()
                    .ipv4_capacity = n
            }
            "shimnet_bridge_ports_used" => {
                s.networks.entry(label("network")).or_default().ports_used = n
            }
            "shimnet_bridge_ports_capacity" => {
                s.networks
                    .entry(label("network"))
                    .or_default()
                    .ports_capacity = n
            }
            "shimnet_reconcile_repairs_total" => {
                *s.repairs.entry(label("kind")).or_default() += n;
            }
            "shimnet_repairs_total" if n > 0 => {
                s.repaired.entry(label("kind")).or_default().count = n;
            }
            "shimnet_repair_last_timestamp_seconds" => {
                s.repaired.entry(label("kind")).or_default().last_unix = x;
            }
            "shimnet_repair_last_latency_seconds" => {
                s.repaired.entry(label("kind")).or_default().last_latency = x;
            }
            "shimnet_peer_up" if n > 0 => s.peers_up += 1,
            "shimnet_peer_up" => s.peers_down += 1,
            _ => {}
        }
    }
    Ok(s)
}

/// The state store line of `shimnetctl status`, from `/v1/health`'s `store` object.
pub fn store_line(store: &serde_json::Value) -> String {
    let n = |k: &str| store[k].as_u64().unwrap_or(0);
    let counts = format!(
        "{} I/O error(s), {} reopen(s) since start",
        n("io_errors"),
        n("reopens")
    );
    let last = store["last_error"].as_str().unwrap_or("none");
    if let Some(fatal) = store["fatal"].as_str() {
        format!("state store: FAILED, shimnetd is exiting to be restarted: {fatal} ({counts})")
    } else if store["healthy"] == true && store["open"] == true {
        format!("state store: ok ({counts})")
    } else {
        format!("state store: FAILING, writes are refused: {last} ({counts}); it recovers by itself once the cause is gone (e.g. disk space freed)")
    }
}

/// Human lines of a summary.
pub fn render(s: &Summary) -> Vec<String> {
    let mut out = Vec::new();
    for (name, n) in &s.networks {
        let pct = |used: u64, cap: u64| {
            if cap > 0 {
                100.0 * used as f64 / cap as f64
            } else {
                0.0
            }
        };
        let mut line = format!(
            "network {name}: {} endpoint(s), IPv4 {}/{} used ({:.1}%)",
            n.endpoints,
            n.ipv4_used,
            n.ipv4_capacity,
            pct(n.ipv4_used, n.ipv4_capacity)
        );
        if n.ports_capacity > 0 {
            let full = if n.ports_used >= n.ports_capacity {
                ", FULL"
            } else {
                ""
            };
            line.push_str(&format!(
                ", bridge ports {}/{} used ({:.1}%{full})",
                n.ports_used,
                n.ports_capacity,
                pct(n.ports_used, n.ports_capacity)
            ));
        }
        out.push(line);
    }
    let ops: Vec<String> = s
        .operations
        .iter()
        .map(|(door, d)| format!("{door} {} ok / {} error", d.ok, d.error))
        .collect();
    out.push(format!(
        "operations: {}",
        if ops.is_empty() {
            "none yet".into()
        } else {
            ops.join(", ")
        }
    ));
    let repairs: Vec<String> = s.repairs.iter().map(|(k, n)| format!("{k} {n}")).collect();
    out.push(format!(
        "reconcile repairs: {}",
        if repairs.is_empty() {
            "none".into()
        } else {
            repairs.join(", ")
        }
    ));
    let repaired: Vec<String> = s
        .repaired
        .iter()
        .filter(|(_, r)| r.count > 0)
        .map(|(k, r)| {
            let t = r.last_unix.max(0.0) as u64 % 86_400;
            format!(
                "{k} {} (last {:02}:{:02}:{:02} UTC, {:.0} ms after the change)",
                r.count,
                t / 3600,
                t / 60 % 60,
                t % 60,
                r.last_latency * 1000.0
            )
        })
        .collect();
    out.push(format!(
        "repairs on events: {}",
        if repaired.is_empty() {
            "none".into()
        } else {
            repaired.join(", ")
        }
    ));
    out.push(format!("peers: {} up, {} down", s.peers_up, s.peers_down));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP shimnet_operations Operations served.
# TYPE shimnet_operations counter
shimnet_operations_total{front_door="cni",operation="endpoint_attach",result="ok"} 2
shimnet_operations_total{front_door="cni",operation="endpoint_detach",result="ok"} 1
shimnet_operations_total{front_door="rest",operation="network_create",result="error"} 1
# HELP shimnet_endpoints Endpoints recorded per network.
# TYPE shimnet_endpoints gauge
shimnet_endpoints{network="web"} 2
# TYPE shimnet_ipam_ipv4_addresses_used gauge
shimnet_ipam_ipv4_addresses_used{network="web"} 2
# TYPE shimnet_ipam_ipv4_addresses_capacity gauge
shimnet_ipam_ipv4_addresses_capacity{network="web"} 253
# TYPE shimnet_bridge_ports_used gauge
shimnet_bridge_ports_used{network="web"} 2
# TYPE shimnet_bridge_ports_capacity gauge
shimnet_bridge_ports_capacity{network="web"} 1023
# TYPE shimnet_reconcile_repairs counter
shimnet_reconcile_repairs_total{kind="endpoint_reclaimed"} 3
# TYPE shimnet_repairs counter
shimnet_repairs_total{kind="bridge"} 0
shimnet_repairs_total{kind="nft_table"} 2
# TYPE shimnet_repair_last_timestamp_seconds gauge
shimnet_repair_last_timestamp_seconds{kind="nft_table"} 1764668523.5
# TYPE shimnet_repair_last_latency_seconds gauge
shimnet_repair_last_latency_seconds{kind="nft_table"} 0.035
# TYPE shimnet_peer_up gauge
shimnet_peer_up{peer="a"} 1
shimnet_peer_up{peer="b"} 0
# EOF
"#;

    #[test]
    fn a_full_network_says_so() {
        let mut s = Summary::default();
        s.networks.insert(
            "big".into(),
            NetworkLine {
                endpoints: 1023,
                ipv4_used: 1023,
                ipv4_capacity: 4093,
                ports_used: 1023,
                ports_capacity: 1023,
            },
        );
        assert_eq!(
            render(&s)[0],
            "network big: 1023 endpoint(s), IPv4 1023/4093 used (25.0%), bridge ports 1023/1023 used (100.0%, FULL)"
        );
    }

    #[test]
    fn summary_of_an_exposition() {
        let s = summarize(TEXT).unwrap();
        assert_eq!(
            s.networks["web"],
            NetworkLine {
                endpoints: 2,
                ipv4_used: 2,
                ipv4_capacity: 253,
                ports_used: 2,
                ports_capacity: 1023,
            }
        );
        assert_eq!(s.operations["cni"], DoorLine { ok: 3, error: 0 });
        assert_eq!(s.operations["rest"], DoorLine { ok: 0, error: 1 });
        assert_eq!(s.repairs["endpoint_reclaimed"], 3);
        assert_eq!((s.peers_up, s.peers_down), (1, 1));
        let lines = render(&s);
        assert_eq!(
            lines[0],
            "network web: 2 endpoint(s), IPv4 2/253 used (0.8%), bridge ports 2/1023 used (0.2%)"
        );
        assert_eq!(
            lines[1],
            "operations: cni 3 ok / 0 error, rest 0 ok / 1 error"
        );
        assert_eq!(lines[2], "reconcile repairs: endpoint_reclaimed 3");
        assert_eq!(
            lines[3],
            "repairs on events: nft_table 2 (last 09:42:03 UTC, 35 ms after the change)"
        );
        assert_eq!(lines[4], "peers: 1 up, 1 down");
    }

    #[test]
    fn store_line_says_what_is_wrong() {
        let ok = serde_json::json!({"healthy": true, "open": true, "io_errors": 0, "reopens": 0});
        assert_eq!(
            store_line(&ok),
            "state store: ok (0 I/O error(s), 0 reopen(s) since start)"
        );
        let full = serde_json::json!({"healthy": false, "open": true, "io_errors": 3, "reopens": 2,
            "last_error": "I/O error: No space left on device (os error 28)"});
        let line = store_line(&full);
        assert!(
            line.starts_with(
                "state store: FAILING, writes are refused: I/O error: No space left on device"
            ),
            "{line}"
        );
        assert!(line.contains("3 I/O error(s), 2 reopen(s)"), "{line}");
        let fatal = serde_json::json!({"healthy": false, "open": false, "io_errors": 1, "reopens": 0,
            "fatal": "reopening failed: DB corrupted"});
        assert!(store_line(&fatal).starts_with("state store: FAILED"));
    }
}
