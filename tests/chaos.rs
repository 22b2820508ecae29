//! Crash safety under load: client threads drive attach/detach operations through all three
//! front doors (REST API, the `shimnet` CNI binary, the Docker plugin socket spoken directly)
//! while a killer thread SIGKILLs shimnetd at random points and restarts it. An operation counts
//! once it is acknowledged; an interrupted one is retried (every operation is idempotent) until
//! it is. Afterwards every acknowledged endpoint must have its address and connectivity, no
//! address may be held twice, and once everything is detached nothing of shimnet's may be left.
//!
//! Size: `SHIMNET_CHAOS_OPS` (default 300; `scripts/chaos.sh` runs 1,000+), seed
//! `SHIMNET_CHAOS_SEED`. Run as root.

mod cni_support;
mod common;

use std::collections::{BTreeSet, HashMap};
use std::process::Child;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cni_support::{conf, shimnet, Call};
use common::*;
use nix::sys::signal::Signal;
use serde_json::{json, Value};
use shimnet::netns::NamedNetns;
use shimnet_api::client::Client;

const REST_SUBNET: &str = "10.77.0.0/24";
const REST_GW: &str = "10.77.0.1";
const DOCKER_POOL: &str = "10.78.0.0/24";
const DOCKER_GW: &str = "10.78.0.1";
const WORKERS: usize = 3;
const SLOTS_PER_WORKER: usize = 6;
/// Longest time one operation may take to be acknowledged, retries included.
const OP_DEADLINE: Duration = Duration::from_secs(90);

/// Small deterministic generator (xorshift64*), so a failing run can be replayed by seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Door {
    Rest,
    Cni,
    Docker,
}

/// The acknowledged state of a slot (one container namespace, one front door).
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Detached,
    Attached(String),
}

struct Slot {
    door: Door,
    ns: NamedNetns,
    /// Container id (REST, CNI) or Docker endpoint id.
    id: String,
    /// Docker: the address docker's IPAM would have given.
    docker_ip: String,
    /// Docker: the container end's name before it moved into the sandbox (Join's `SrcName`).
    src: String,
    state: State,
}

/// Everything the clients share.
struct World<'a> {
    h: &'a TestHost,
    net: String,
    cni_conf: Value,
    docker_net: String,
    plugin_socket: std::path::PathBuf,
    retries: AtomicUsize,
    ops: AtomicUsize,
}

impl World<'_> {
    /// Repeats `op` until it returns Some (an acknowledgement) or the deadline passes.
    fn until_acked<T>(&self, what: &str, mut op: impl FnMut() -> Result<T, String>) -> T {
        let deadline = Instant::now() + OP_DEADLINE;
        loop {
            match op() {
                Ok(v) => return v,
                Err(e) => {
                    assert!(
                        Instant::now() < deadline,
                        "{what} not acknowledged within {OP_DEADLINE:?}: {e}"
                    );
                    self.retries.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }

    fn plugin(&self, call: &str, body: Value) -> Result<Value, String> {
        let r = Client::new(&self.plugin_socket)
            .request(
                "POST",
                &format!("/NetworkDriver.{call}"),
                Some(body.to_string().as_bytes()),
            )
            .map_err(|e| e.to_string())?;
        let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        if r.status == 200 {
            Ok(v)
        } else {
            Err(format!("{call}: {} {v}", r.status))
        }
    }

    fn cni_call(&self, s: &Slot) -> Call {
        Call::new(&s.id, &s.ns.path().display().to_string())
    }

    /// Attaches; returns the address and, for Docker, Join's `SrcName`.
    fn attach(&self, s: &Slot) -> (String, String) {
        match s.door {
            Door::Rest => self.until_acked("REST attach", || {
                let body = json!({"container_id": s.id, "netns": s.ns.path()});
                self.h
                    .try_call(
                        "POST",
                        &format!("/v1/networks/{}/endpoints", self.net),
                        Some(body),
                    )
                    .map(|e| (ip_of(&e), String::new()))
                    .map_err(|e| e.to_string())
            }),
            Door::Cni => self.until_acked("CNI ADD", || {
                let o = shimnet("ADD", &self.cni_call(s), &self.cni_conf);
                if o.code == 0 {
                    let a = o.out["ips"][0]["address"].as_str().unwrap_or_default();
                    Ok((a.split('/').next().unwrap().to_string(), String::new()))
                } else {
                    Err(format!("{:?}", o))
                }
            }),
            Door::Docker => {
                let (net, ep) = (&self.docker_net, &s.id);
                let src = self.until_acked("docker CreateEndpoint+Join", || {
                    self.plugin(
                        "CreateEndpoint",
                        json!({"NetworkID": net, "EndpointID": ep, "Options": {},
                               "Interface": {"Address": format!("{}/24", s.docker_ip), "AddressIPv6": "", "MacAddress": ""}}),
                    )?;
                    let j = self.plugin(
                        "Join",
                        json!({"NetworkID": net, "EndpointID": ep, "SandboxKey": s.ns.path(), "Options": {}}),
                    )?;
                    Ok(j["InterfaceName"]["SrcName"].as_str().unwrap().to_string())
                });
                // What libnetwork does after Join: move the container end into the sandbox,
                // name it, address it, route through the gateway.
                let c = s.ns.name();
                sh(&[
                    "ip",
                    "-n",
                    self.h.ns.name(),
                    "link",
                    "set",
                    &src,
                    "netns",
                    c,
                ]);
                sh(&["ip", "-n", c, "link", "set", &src, "name", "eth0"]);
                sh(&[
                    "ip",
                    "-n",
                    c,
                    "addr",
                    "add",
                    &format!("{}/24", s.docker_ip),
                    "dev",
                    "eth0",
                ]);
                sh(&["ip", "-n", c, "link", "set", "eth0", "up"]);
                sh(&["ip", "-n", c, "route", "add", "default", "via", DOCKER_GW]);
                (s.docker_ip.clone(), src)
            }
        }
    }

    fn detach(&self, s: &Slot) {
        match s.door {
            Door::Rest => self.until_acked("REST detach", || {
                self.h
                    .try_call(
                        "DELETE",
                        &format!("/v1/networks/{}/endpoints/{}", self.net, s.id),
                        None,
                    )
                    .map(drop)
                    .map_err(|e| e.to_string())
            }),
            Door::Cni => self.until_acked("CNI DEL", || {
                let o = shimnet("DEL", &self.cni_call(s), &self.cni_conf);
                (o.code == 0).then_some(()).ok_or(format!("{o:?}"))
            }),
            Door::Docker => {
                // What libnetwork does on leave: the interface goes back to the host under its
                // original name, then Leave and DeleteEndpoint.
                let c = s.ns.name();
                let src = &s.src;
                sh(&["ip", "-n", c, "link", "set", "eth0", "down"]);
                sh(&["ip", "-n", c, "link", "set", "eth0", "name", src]);
                sh(&["ip", "-n", c, "link", "set", src, "netns", self.h.ns.name()]);
                let (net, ep) = (&self.docker_net, &s.id);
                let body = json!({"NetworkID": net, "EndpointID": ep});
                self.until_acked("docker Leave", || self.plugin("Leave", body.clone()));
                self.until_acked("docker DeleteEndpoint", || {
                    self.plugin("DeleteEndpoint", body.clone())
                });
            }
        }
    }
}

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn signal(c: &mut Child, sig: Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), sig);
    let _ = c.wait();
}

fn kill9(c: &mut Child) {
    signal(c, Signal::SIGKILL);
}

/// The daemon process while the killer thread restarts it; killed on drop.
struct Daemon(Mutex<Option<Child>>);

impl Daemon {
    fn stop(&self, sig: Signal) {
        if let Some(mut c) = self.0.lock().unwrap().take() {
            signal(&mut c, sig);
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop(Signal::SIGKILL);
    }
}

#[test]
fn attach_detach_through_every_front_door_while_shimnetd_is_killed() {
    use_prefix("snr");
    let total_ops = env_num("SHIMNET_CHAOS_OPS", 300) as usize;
    let seed = env_num(
        "SHIMNET_CHAOS_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            | 1,
    );
    eprintln!("chaos: {total_ops} operations, seed {seed}");
    let mut h = TestHost::new("");
    // The killer thread owns the daemon from here on; the guard kills it if the test panics.
    let daemon = Daemon(Mutex::new(h.daemon.take()));
    let net = format!("snr{}", tag("c"));
    let cni_conf = conf("1.0.0", &net, &h.socket, &net, REST_SUBNET);
    let docker_net = format!("{:064x}", seed as u128 * 7 + 1);
    let docker_bridge = format!("snr{}", tag("d"));
    let plugin_socket = h.dir.path().join("plugins/shimnet.sock");

    // The CNI network exists once the first ADD ensured it; the REST clients share it.
    let warm = container("warm");
    let wc = Call::new("warm", &warm.path().display().to_string());
    assert_eq!(shimnet("ADD", &wc, &cni_conf).code, 0);
    assert_eq!(shimnet("DEL", &wc, &cni_conf).code, 0);
    let world = World {
        h: &h,
        net: net.clone(),
        cni_conf,
        docker_net: docker_net.clone(),
        plugin_socket,
        retries: AtomicUsize::new(0),
        ops: AtomicUsize::new(0),
    };
    world.plugin(
        "CreateNetwork",
        json!({"NetworkID": docker_net, "IPv6Data": [],
               "IPv4Data": [{"AddressSpace": "LocalDefault", "Pool": DOCKER_POOL, "Gateway": format!("{DOCKER_GW}/24")}],
               "Options": {"com.docker.network.enable_ipv6": false,
                           "com.docker.network.generic": {"com.docker.network.bridge.name": docker_bridge}}}),
    )
    .expect("docker CreateNetwork");

    let mut slots: Vec<Vec<Slot>> = (0..WORKERS)
        .map(|w| {
            (0..SLOTS_PER_WORKER)
                .map(|i| {
                    let n = w * SLOTS_PER_WORKER + i;
                    let door = [Door::Rest, Door::Cni, Door::Docker][n % 3];
                    let ns = container("s");
                    let id = match door {
                        Door::Docker => format!("{:064x}", (seed as u128) << 8 | n as u128),
                        _ => ns.name().to_string(),
                    };
                    Slot {
                        door,
                        ns,
                        id,
                        docker_ip: format!("10.78.0.{}", 10 + n),
                        src: String::new(),
                        state: State::Detached,
                    }
                })
                .collect()
        })
        .collect();
    let ever: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

    let done = AtomicBool::new(false);
    let kills = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let mut rng = Rng(seed ^ 0x9e37_79b9_7f4a_7c15);
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100 + rng.below(500)));
                if done.load(Ordering::Relaxed) {
                    break;
                }
                let mut d = daemon.0.lock().unwrap();
                if let Some(c) = d.as_mut() {
                    kill9(c);
                }
                kills.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(rng.below(300)));
                *d = Some(world.h.daemon_command().spawn().expect("restart shimnetd"));
            }
        });
        let workers: Vec<_> = slots
            .iter_mut()
            .enumerate()
            .map(|(w, mine)| {
                let (world, ever) = (&world, &ever);
                let n_ops = total_ops / WORKERS + usize::from(w < total_ops % WORKERS);
                scope.spawn(move || {
                    let mut rng = Rng(seed.wrapping_add(w as u64 + 1) | 1);
                    for _ in 0..n_ops {
                        let s = &mut mine[rng.below(SLOTS_PER_WORKER as u64) as usize];
                        s.state = match s.state {
                            State::Detached => {
                                let (ip, src) = world.attach(s);
                                s.src = src;
                                ever.lock().unwrap().insert(ip.clone());
                                State::Attached(ip)
                            }
                            State::Attached(_) => {
                                world.detach(s);
                                State::Detached
                            }
                        };
                        world.ops.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for w in workers {
            if let Err(p) = w.join() {
                done.store(true, Ordering::Relaxed);
                std::panic::resume_unwind(p);
            }
        }
        done.store(true, Ordering::Relaxed);
    });
    wait_ready(&h);
    let slots: Vec<Slot> = slots.into_iter().flatten().collect();
    let ops = world.ops.load(Ordering::Relaxed);
    let kills = kills.load(Ordering::Relaxed);

    // 1. Every acknowledged endpoint has its address and connectivity; detached ones nothing.
    let mut problems = Vec::new();
    let records = h.call("GET", "/v1/endpoints", None);
    let records = records.as_array().unwrap();
    let by_id: HashMap<&str, &Value> = records
        .iter()
        .map(|r| (r["key"]["container_id"].as_str().unwrap(), r))
        .collect();
    for s in &slots {
        match &s.state {
            State::Attached(ip) => {
                match by_id.get(s.id.as_str()) {
                    Some(r) if &ip_of(r) == ip => {}
                    other => problems.push(format!(
                        "{:?} {}: record {other:?}, acked {ip}",
                        s.door, s.id
                    )),
                }
                let addrs = sh(&["ip", "-n", s.ns.name(), "-o", "-4", "addr", "show"]);
                if !addrs.contains(&format!("{ip}/24")) {
                    problems.push(format!(
                        "{:?} {}: {ip} not in the namespace: {addrs}",
                        s.door, s.id
                    ));
                }
                let gw = if s.door == Door::Docker {
                    DOCKER_GW
                } else {
                    REST_GW
                };
                if !ping(&s.ns, gw) {
                    problems.push(format!("{:?} {}: no ping to {gw}", s.door, s.id));
                }
            }
            State::Detached => {
                if by_id.contains_key(s.id.as_str()) {
                    problems.push(format!("{:?} {}: detached but recorded", s.door, s.id));
                }
                if links_in(s.ns.name()) != ["lo"] {
                    problems.push(format!(
                        "{:?} {}: detached but has {:?}",
                        s.door,
                        s.id,
                        links_in(s.ns.name())
                    ));
                }
            }
        }
    }
    // 2. No address held twice, neither in the records nor in the kernel.
    let mut duplicates = 0;
    let mut seen = BTreeSet::new();
    for r in records {
        if !seen.insert((r["key"]["network"].to_string(), ip_of(r))) {
            duplicates += 1;
            problems.push(format!("address recorded twice: {r}"));
        }
    }
    let mut kernel = BTreeSet::new();
    for s in slots.iter().filter(|s| s.state != State::Detached) {
        for line in sh(&[
            "ip",
            "-n",
            s.ns.name(),
            "-o",
            "-4",
            "addr",
            "show",
            "dev",
            "eth0",
        ])
        .lines()
        {
            let a = line
                .split_whitespace()
                .nth(3)
                .unwrap_or_default()
                .to_string();
            if !kernel.insert(a.clone()) {
                duplicates += 1;
                problems.push(format!("address configured twice in the kernel: {a}"));
            }
        }
    }
    let attached = slots.iter().filter(|s| s.state != State::Detached).count();
    assert_eq!(
        records.len(),
        attached,
        "records vs acknowledged: {records:?}"
    );

    // 3. Detach everything; nothing of shimnet's may remain.
    for s in slots.iter().filter(|s| s.state != State::Detached) {
        world.detach(s);
    }
    assert_eq!(h.call("GET", "/v1/endpoints", None), json!([]));
    eventually_for("host veths removed", Duration::from_secs(30), || {
        !links_in(h.ns.name())
            .iter()
            .any(|l| l.starts_with("snv") || l.starts_with("snp"))
    });
    let ever = ever.into_inner().unwrap();
    let routes = h.ip(&["route", "show", "table", "all"]);
    let rules = format!("{}\n{}", h.nft_ruleset(), h.iptables_save());
    for ip in &ever {
        let needle = format!("{ip} ");
        let needle2 = format!("{ip}/");
        if routes.contains(&needle) || routes.contains(&needle2) {
            problems.push(format!("route for {ip} left: {routes}"));
        }
        if rules.contains(&needle) || rules.contains(&needle2) || rules.contains(&format!("{ip}:"))
        {
            problems.push(format!("firewall rule for {ip} left"));
        }
    }
    for s in &slots {
        if links_in(s.ns.name()) != ["lo"] {
            problems.push(format!("{} keeps {:?}", s.ns.name(), links_in(s.ns.name())));
        }
    }
    daemon.stop(Signal::SIGTERM);
    let store = runtime_net::store::Store::open(&h.dir.path().join("state")).expect("open store");
    for n in [&net, &docker_net] {
        let name = runtime_net::NetworkName::new(n).unwrap();
        let left = store.network_allocations(&name).expect("allocations");
        if !left.is_empty() {
            problems.push(format!("allocations left in {n}: {left:?}"));
        }
    }
    let leaks = problems.len() - duplicates;
    println!(
        "chaos: operations={ops} kills={kills} retries={} addresses={} leaks={leaks} duplicates={duplicates}",
        world.retries.load(Ordering::Relaxed),
        ever.len()
    );
    assert!(
        problems.is_empty(),
        "chaos found problems:\n{}",
        problems.join("\n")
    );
    assert_eq!(ops, total_ops);
    assert!(kills > 0 || total_ops < 20, "the daemon was never killed");
}

/// Waits until the (restarted) daemon answers.
fn wait_ready(h: &TestHost) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !h
        .client()
        .request("GET", "/v1/health", None)
        .is_ok_and(|r| r.status == 200)
    {
        assert!(Instant::now() < deadline, "shimnetd not ready: {}", h.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}
