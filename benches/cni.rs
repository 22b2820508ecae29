//! ADD and DEL latency of the `shimnet` CNI plugin against the reference `bridge` plugin (with
//! `host-local`), 100 containers each, measured in the same run: `cargo bench --bench cni`
//! (as root). Both plugins are exec'd the same way, from a thread inside a test "host"
//! namespace; each ADD/DEL is one plugin process start to exit.

#[path = "../tests/cni_support/mod.rs"]
mod cni_support;
#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use cni_support::{exec, plugin, REF_DIR};
use common::{container, tag, TestHost};
use serde_json::{json, Value};
use shimnet::netns::{run_in, NamedNetns};

const N: usize = 100;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Runs ADD then DEL for every container with plugin `bin` and config `conf`, from inside `host`;
/// returns (ADD times, DEL times).
fn measure(
    bin: &Path,
    host: &Path,
    conf: &Value,
    nss: &[NamedNetns],
) -> (Vec<Duration>, Vec<Duration>) {
    let path = format!("{}:{REF_DIR}", plugin().parent().unwrap().display());
    let stdin = conf.to_string().into_bytes();
    let jobs: Vec<(String, String)> = nss
        .iter()
        .map(|n| (n.name().to_string(), n.path().display().to_string()))
        .collect();
    let bin = bin.to_path_buf();
    run_in(host, move || {
        let mut times = (Vec::new(), Vec::new());
        for command in ["ADD", "DEL"] {
            for (id, ns) in &jobs {
                let env = [
                    ("CNI_COMMAND", command),
                    ("CNI_CONTAINERID", id.as_str()),
                    ("CNI_NETNS", ns.as_str()),
                    ("CNI_IFNAME", "eth0"),
                    ("CNI_ARGS", ""),
                    ("CNI_PATH", path.as_str()),
                ];
                let t = Instant::now();
                let o = exec(&bin, None, &env, &stdin);
                let dt = t.elapsed();
                assert_eq!(o.code, 0, "{} {command} failed: {o:?}", bin.display());
                if command == "ADD" {
                    times.0.push(dt)
                } else {
                    times.1.push(dt)
                }
            }
        }
        times
    })
    .expect("run in host namespace")
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("SKIPPED: the CNI benchmark needs root");
        return;
    }
    if !Path::new(REF_DIR).join("bridge").is_file() {
        eprintln!("SKIPPED: reference bridge plugin not installed in {REF_DIR}");
        return;
    }
    let h = TestHost::new("");
    let name = tag("bn");
    let shim_conf = json!({
        "cniVersion": "1.0.0", "name": name, "type": "shimnet", "daemonSocket": h.socket, "bridge": name,
        "isGateway": true, "ipMasq": true,
        "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.73.0.0/24"}]], "routes": [{"dst": "0.0.0.0/0"}]}
    });
    let data = tempfile::tempdir().unwrap();
    let ref_conf = json!({
        "cniVersion": "1.0.0", "name": format!("{name}r"), "type": "bridge", "bridge": format!("{name}r"),
        "isGateway": true, "ipMasq": true,
        "ipam": {"type": "host-local", "dataDir": data.path(), "ranges": [[{"subnet": "10.74.0.0/24"}]], "routes": [{"dst": "0.0.0.0/0"}]}
    });
    let nss_a: Vec<_> = (0..N).map(|_| container("ba")).collect();
    let nss_b: Vec<_> = (0..N).map(|_| container("bb")).collect();
    // Warm-up: one ADD/DEL of each (network creation, page cache).
    let warm = [container("bw")];
    measure(&plugin(), h.ns.path(), &shim_conf, &warm);
    measure(
        &Path::new(REF_DIR).join("bridge"),
        h.ns.path(),
        &ref_conf,
        &warm,
    );

    let (sa, sd) = measure(&plugin(), h.ns.path(), &shim_conf, &nss_a);
    let (ra, rd) = measure(
        &Path::new(REF_DIR).join("bridge"),
        h.ns.path(),
        &ref_conf,
        &nss_b,
    );
    let (sa, sd, ra, rd) = (median(sa), median(sd), median(ra), median(rd));
    println!("CNI plugin latency, {N} containers, medians (one process per operation):");
    println!("  ADD  shimnet {:7.2} ms   reference bridge+host-local {:7.2} ms   ratio shimnet/bridge {:.2}", ms(sa), ms(ra), ms(sa) / ms(ra));
    println!("  DEL  shimnet {:7.2} ms   reference bridge+host-local {:7.2} ms   ratio shimnet/bridge {:.2}", ms(sd), ms(rd), ms(sd) / ms(rd));
}
