//! One network past one bridge: `SHIMNET_BENCH_BIGNET_N` (default 4,000; 1,100 with
//! `SHIMNET_BENCH_SHORT=1`) sequential REST attaches to one /20 network, then as many sequential
//! detaches, on one shimnetd. Prints the median of the first and last 100 of each and their ratio
//! beside the target (growth ≤ 1.25), and how the endpoints were spread over the main bridge and
//! its extension bridges. Writes `target/bench/bignet.txt`.
//!
//! `cargo bench --bench bignet` as root (see `scripts/bench.sh`).

#[path = "../common/mod.rs"]
mod common;
#[allow(dead_code)]
mod stats;

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use common::{container, tag, use_prefix, TestHost};
use runtime_net::naming::extension_bridge_name;
use runtime_net::types::NetworkName;
use serde_json::{json, Value};
use shimnet_api::client::Client;
use stats::{growth, summarize};

const TARGET: f64 = 1.25;

fn line(out: &mut String, what: &str, samples: &[Duration]) {
    let k = 100.min(samples.len() / 2);
    let first = summarize(&samples[..k]).map_or(f64::NAN, |s| s.median);
    let last = summarize(&samples[samples.len() - k..]).map_or(f64::NAN, |s| s.median);
    let g = growth(samples, k).unwrap_or(f64::NAN);
    let all = summarize(samples).expect("samples");
    writeln!(
        out,
        "  REST {what:<7} first {k} median {first:.2} ms, last {k} median {last:.2} ms, growth {g:.2} (target ≤ {TARGET}) {}; all: median {:.2} p90 {:.2} p99 {:.2} ms",
        if g <= TARGET { "met" } else { "MISSED" },
        all.median,
        all.p90,
        all.p99
    )
    .unwrap();
    // Where it grows: the median of each block of 500 (a step at a bridge boundary would show).
    let blocks: Vec<String> = samples
        .chunks(500)
        .filter_map(|c| summarize(c).map(|s| format!("{:.2}", s.median)))
        .collect();
    writeln!(out, "    medians per 500: {} ms", blocks.join(" ")).unwrap();
}

fn main() {
    let short = std::env::var("SHIMNET_BENCH_SHORT").is_ok_and(|v| v == "1");
    let n: usize = std::env::var("SHIMNET_BENCH_BIGNET_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if short { 1100 } else { 4000 });
    use_prefix("sbg");
    let h = TestHost::new("");
    let net = tag("big");
    let name = NetworkName::new(&net).unwrap();
    let spec = h.create_network(json!({"name": net, "subnet": "10.86.0.0/20"}));
    let bridge = spec["bridge"]
        .as_str()
        .or_else(|| spec["network"]["bridge"].as_str())
        .expect("bridge")
        .to_string();
    let client = Client::new(&h.socket);
    let containers: Vec<_> = (0..n).map(|_| container("b")).collect();
    let mut attach = Vec::with_capacity(n);
    for c in &containers {
        let body = json!({"container_id": c.name(), "netns": c.path()});
        let t = Instant::now();
        let _: Value = client
            .call(
                "POST",
                &format!("/v1/networks/{net}/endpoints"),
                Some(&body),
            )
            .expect("attach");
        attach.push(t.elapsed());
    }
    let mut spread = vec![(bridge.clone(), ports(&h, &bridge))];
    for i in 1..=runtime_net::naming::MAX_EXTENSIONS {
        let x = extension_bridge_name(&name, i).to_string();
        let p = ports(&h, &x);
        if p == 0 {
            break;
        }
        spread.push((x, p));
    }
    let mut detach = Vec::with_capacity(n);
    for c in &containers {
        let t = Instant::now();
        let _: Value = client
            .call(
                "DELETE",
                &format!("/v1/networks/{net}/endpoints/{}", c.name()),
                None::<&()>,
            )
            .expect("detach");
        detach.push(t.elapsed());
    }
    let mut out = String::new();
    writeln!(
        out,
        "{n} sequential REST attaches, then detaches, on one /20 network (one shimnetd):"
    )
    .unwrap();
    line(&mut out, "attach", &attach);
    line(&mut out, "detach", &detach);
    let bridges: Vec<String> = spread.iter().map(|(b, p)| format!("{b} {p}")).collect();
    writeln!(
        out,
        "  ports per bridge at {n} endpoints (trunk ends included): {}",
        bridges.join(", ")
    )
    .unwrap();
    print!("{out}");
    let _ = std::fs::create_dir_all("target/bench");
    let _ = std::fs::write("target/bench/bignet.txt", &out);
    h.call("DELETE", &format!("/v1/networks/{net}"), None);
}

/// Links enslaved to `br` in the daemon's namespace.
fn ports(h: &TestHost, br: &str) -> usize {
    std::process::Command::new("ip")
        .args(["-n", h.ns.name(), "-o", "link", "show", "master", br])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().count())
        .unwrap_or(0)
}
