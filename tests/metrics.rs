//! `/metrics` end to end: a real shimnetd in a test namespace, operations through the REST API,
//! the `shimnet` CNI plugin and the Docker plugin socket, a reconcile repair; then the scrape is
//! parse-checked and its values compared with exact expected counts, and `shimnetctl status`
//! must show the same. Run as root.

mod cni_support;
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use cni_support::*;
use common::*;
use serde_json::json;
use shimnet_api::client::Client;

/// One sample line of the exposition: `name{k="v",...} value`.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Strict parse of OpenMetrics text as prometheus-client writes it: every line is a HELP/TYPE
/// comment, a sample of a declared family, or the final `# EOF`.
fn parse_strict(text: &str) -> Vec<Sample> {
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.last(),
        Some(&"# EOF"),
        "exposition must end with # EOF"
    );
    let mut families: BTreeMap<String, String> = BTreeMap::new();
    let mut samples = Vec::new();
    for line in &lines[..lines.len() - 1] {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, ty) = rest.split_once(' ').expect("TYPE name type");
            assert!(
                ["counter", "gauge", "histogram"].contains(&ty),
                "type {ty:?} in {line:?}"
            );
            assert!(
                families.insert(name.into(), ty.into()).is_none(),
                "TYPE twice: {line}"
            );
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            assert!(rest.split_once(' ').is_some(), "HELP without text: {line}");
            continue;
        }
        assert!(!line.starts_with('#'), "unexpected comment {line:?}");
        let (series, value) = line.rsplit_once(' ').expect("sample has a value");
        let value: f64 = value.parse().unwrap_or_else(|e| panic!("{line}: {e}"));
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (n, l.strip_suffix('}').expect("closing brace")),
            None => (series, ""),
        };
        let mut map = BTreeMap::new();
        let mut rest = labels;
        while !rest.is_empty() {
            let (k, after) = rest.split_once("=\"").expect("label k=\"v\"");
            let end = after.find('"').expect("label value closed");
            assert!(
                k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "label name {k:?}"
            );
            map.insert(k.to_string(), after[..end].to_string());
            rest = after[end + 1..]
                .strip_prefix(',')
                .unwrap_or(&after[end + 1..]);
        }
        let family = families
            .iter()
            .find(|(f, ty)| {
                let suffixes: &[&str] = match ty.as_str() {
                    "counter" => &["_total", "_created"],
                    "histogram" => &["_bucket", "_count", "_sum", "_created"],
                    _ => &[""],
                };
                suffixes.iter().any(|s| name == format!("{f}{s}"))
            })
            .map(|(f, _)| f.clone());
        assert!(family.is_some(), "sample {name} of no declared family");
        samples.push(Sample {
            name: name.into(),
            labels: map,
            value,
        });
    }
    samples
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && s.labels.len() == labels.len()
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

fn op(door: &str, operation: &str, result: &str) -> [(&'static str, String); 3] {
    [
        ("front_door", door.to_string()),
        ("operation", operation.to_string()),
        ("result", result.to_string()),
    ]
}

fn assert_value(samples: &[Sample], name: &str, labels: &[(&str, String)], want: f64) {
    let l: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(value(samples, name, &l), Some(want), "{name}{labels:?}");
}

#[test]
fn scrape_counts_every_front_door_exactly() {
    use_prefix("snk");
    let h = TestHost::new("");
    let net = tag("mk");
    h.create_network(json!({"name": net, "subnet": "10.71.0.0/24"}));
    let bad = h.try_call(
        "POST",
        "/v1/networks",
        Some(json!({"name": tag("mk"), "subnet": "10.72.0.0/33"})),
    );
    assert!(bad.is_err(), "invalid subnet accepted");
    let (c1, c2, c3) = (container("m"), container("m"), container("m"));
    for c in [&c1, &c2, &c3] {
        h.attach(&net, c, json!({}));
    }
    h.detach(&net, c1.name());
    // c2's namespace disappears: the next reconciliation reclaims its endpoint.
    let c2_name = c2.name().to_string();
    drop(c2);
    let r = h.call("POST", "/v1/reconcile", None);
    assert_eq!(r["reclaimed"], 1, "{r}");

    // CNI: two ADDs, one DEL on a network of their own.
    let cni_net = tag("mk");
    let conf = conf("1.0.0", &cni_net, &h.socket, &cni_net, "10.73.0.0/24");
    let (k1, k2) = (container("k"), container("k"));
    let calls: Vec<Call> = [&k1, &k2]
        .iter()
        .map(|k| Call::new(k.name(), &k.path().display().to_string()))
        .collect();
    for c in &calls {
        let o = shimnet("ADD", c, &conf);
        assert_eq!(o.code, 0, "ADD: {o:?}");
    }
    let o = shimnet("DEL", &calls[0], &conf);
    assert_eq!(o.code, 0, "DEL: {o:?}");

    // Docker plugin socket: one good call, one unknown call.
    let plugin = Client::new(h.dir.path().join("plugins/shimnet.sock"));
    assert_eq!(
        plugin
            .request("POST", "/Plugin.Activate", Some(b"{}"))
            .unwrap()
            .status,
        200
    );
    assert_eq!(
        plugin
            .request("POST", "/NetworkDriver.Nope", Some(b"{}"))
            .unwrap()
            .status,
        404
    );

    let reply = h.client().request("GET", "/metrics", None).unwrap();
    assert_eq!(reply.status, 200);
    let text = String::from_utf8(reply.body).unwrap();
    // The content type is checked with a raw request (the client does not expose headers).
    let raw = sh(&[
        "curl",
        "-sS",
        "-D",
        "-",
        "-o",
        "/dev/null",
        "--unix-socket",
        h.socket.to_str().unwrap(),
        "http://shimnetd/metrics",
    ]);
    assert!(
        raw.to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text; version=1.0.0; charset=utf-8"),
        "{raw}"
    );
    println!("---- scrape ----\n{text}");
    let s = parse_strict(&text);
    // prometheus-parse (an independent parser, the one shimnetctl uses) reads the same counters.
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
    let counters = |name: &str| scrape.samples.iter().filter(|x| x.metric == name).count();
    assert_eq!(
        counters("shimnet_operations_total"),
        s.iter()
            .filter(|x| x.name == "shimnet_operations_total")
            .count()
    );

    let ops = "shimnet_operations_total";
    assert_value(&s, ops, &op("rest", "network_create", "ok"), 1.0);
    assert_value(&s, ops, &op("rest", "network_create", "error"), 1.0);
    assert_value(&s, ops, &op("rest", "endpoint_attach", "ok"), 3.0);
    assert_value(&s, ops, &op("rest", "endpoint_detach", "ok"), 1.0);
    assert_value(&s, ops, &op("rest", "reconcile", "ok"), 1.0);
    // One request per ADD (the network ensured and the endpoint attached together).
    assert_value(&s, ops, &op("cni", "network_attach", "ok"), 2.0);
    assert_value(&s, ops, &op("cni", "endpoint_detach", "ok"), 1.0);
    assert_value(&s, ops, &op("docker", "Plugin.Activate", "ok"), 1.0);
    assert_value(&s, ops, &op("docker", "other", "error"), 1.0);
    assert!(
        !s.iter().any(|x| x.name == ops
            && x.labels["front_door"] == "cni"
            && x.labels["result"] == "error"),
        "no CNI call failed"
    );
    let doors: BTreeSet<&str> = s
        .iter()
        .filter(|x| x.name == ops)
        .map(|x| x.labels["front_door"].as_str())
        .collect();
    assert_eq!(doors, BTreeSet::from(["cni", "docker", "rest"]));
    let kind = |f: &str, o: &str| [("front_door", f.to_string()), ("operation", o.to_string())];
    let hist = "shimnet_operation_duration_seconds";
    assert_value(
        &s,
        &format!("{hist}_count"),
        &kind("rest", "endpoint_attach"),
        3.0,
    );
    assert_value(
        &s,
        &format!("{hist}_count"),
        &kind("cni", "network_attach"),
        2.0,
    );
    let inf: Vec<(&str, String)> = kind("rest", "endpoint_attach")
        .into_iter()
        .chain([("le", "+Inf".to_string())])
        .collect();
    assert_value(&s, &format!("{hist}_bucket"), &inf, 3.0);

    let n = |name: &str| [("network", name.to_string())];
    assert_value(&s, "shimnet_endpoints", &n(&net), 1.0);
    assert_value(&s, "shimnet_endpoints", &n(&cni_net), 1.0);
    assert_value(&s, "shimnet_ipam_ipv4_addresses_used", &n(&net), 1.0);
    assert_value(&s, "shimnet_ipam_ipv4_addresses_capacity", &n(&net), 253.0);
    assert_value(
        &s,
        "shimnet_ipam_ipv4_addresses_capacity",
        &n(&cni_net),
        253.0,
    );
    assert_value(&s, "shimnet_bridge_ports_used", &n(&net), 1.0);
    assert_value(&s, "shimnet_bridge_ports_capacity", &n(&net), 512.0);
    let repair = |k: &str| [("kind", k.to_string())];
    assert_value(
        &s,
        "shimnet_reconcile_repairs_total",
        &repair("endpoint_reclaimed"),
        1.0,
    );
    // Whether the host veth was still there to remove depends on how fast the kernel tore down
    // the namespace: the counter must match what the pass reported.
    let links = r["links_removed"].as_f64().unwrap();
    assert_value(
        &s,
        "shimnet_reconcile_repairs_total",
        &repair("link_removed"),
        links,
    );
    // The start-up pass and the requested one.
    assert_value(
        &s,
        "shimnet_reconcile_runs_total",
        &[("result", "ok".into())],
        2.0,
    );
    // No peering configured: the family has no samples (an empty family is not written).
    assert!(!s.iter().any(|x| x.name == "shimnet_peer_up"));
    assert!(
        !text.contains(&c2_name),
        "container names never become labels"
    );

    // POST /metrics is refused.
    assert_eq!(
        h.client().request("POST", "/metrics", None).unwrap().status,
        405
    );

    // shimnetctl status shows the same numbers.
    let out = Command::new(env!("CARGO_BIN_EXE_shimnetctl"))
        .arg("--socket")
        .arg(&h.socket)
        .arg("status")
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{status}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!("---- shimnetctl status ----\n{status}");
    for line in [
        format!("network {net}: 1 endpoint(s), IPv4 1/253 used (0.4%), bridge ports 1/512 used (0.2%)"),
        format!("network {cni_net}: 1 endpoint(s), IPv4 1/253 used (0.4%), bridge ports 1/512 used (0.2%)"),
        format!(
            "reconcile repairs: endpoint_reclaimed 1, firewall_removed 0, link_removed {links}, \
             port_reattached 0"
        ),
        "peers: 0 up, 0 down".into(),
    ] {
        assert!(
            status.lines().any(|l| l == line),
            "missing {line:?} in\n{status}"
        );
    }
    let ops_line = status
        .lines()
        .find(|l| l.starts_with("operations: "))
        .expect("operations line");
    assert!(ops_line.contains("docker 1 ok / 1 error"), "{ops_line}");
    assert!(
        ops_line.contains("cni ") && ops_line.contains("rest "),
        "{ops_line}"
    );
    drop((k1, k2, c1, c3));
}
