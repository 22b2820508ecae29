//! Front doors and peers under test, behind one trait: each sets up and tears down one
//! container's networking and returns how long that took, timed from the caller's side
//! (request sent to reply read, or process start to exit).

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use shimnet::netns::{run_in, NamedNetns};
use shimnet_api::client::Client;

use crate::cni_support::{plugin, REF_DIR};
use crate::common::{sh, tag};

/// One way to give a container networking.
pub trait Door: Sync {
    /// Row label prefix, e.g. "shimnet REST".
    fn name(&self) -> String;
    /// Names of the two operations, e.g. ("attach", "detach").
    fn ops(&self) -> (&'static str, &'static str);
    /// Sets up container `i` (namespace `c`).
    fn setup(&self, i: usize, c: &NamedNetns) -> Duration;
    /// Tears down container `i`.
    fn teardown(&self, i: usize, c: &NamedNetns) -> Duration;
    /// Whether several operations may run at once; when not, the parallel run queues them
    /// behind one lock, as the runtime would (Podman holds a lock around netavark).
    fn concurrent(&self) -> bool {
        true
    }
    /// Returns once every kernel object of torn-down containers is gone (default: at once,
    /// teardown is synchronous).
    fn drained(&self) {}
}

/// Waits until namespace `host` holds no shimnet endpoint veth (`snv...`): shimnetd acknowledges
/// a detach once the veth is off the bridge and down, and deletes it in the background.
pub fn wait_no_veths(host: &str) {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let out = sh(&["ip", "-n", host, "-o", "link", "show"]);
        if !out.lines().any(|l| l.contains(": snv")) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "detached veths not deleted in {host}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until shimnetd's background deletions in namespace `host` are done (no link left in its
/// reap group).
pub fn wait_reaped(host: &Path) {
    let group = runtime_net::netlink::REAP_GROUP.to_string();
    let ns = ns_name(host);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !sh(&["ip", "-n", &ns, "-o", "link", "show", "group", &group])
        .trim()
        .is_empty()
    {
        assert!(
            Instant::now() < deadline,
            "detached veths not deleted in {ns}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn ns_name(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

/// Runs `cmd` with `stdin` from a thread inside namespace `ns` (the child inherits it) and
/// returns how long it took from spawn to exit; panics with its output on failure.
pub fn exec_in(ns: &Path, cmd: &mut Command, stdin: &[u8]) -> Duration {
    run_in(ns, || {
        let start = Instant::now();
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        let out = child.wait_with_output().unwrap();
        let took = start.elapsed();
        assert!(
            out.status.success(),
            "{cmd:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        took
    })
    .expect("enter namespace")
}

/// A fresh "host" namespace for a peer, `lo` up.
pub fn peer_host(what: &str) -> NamedNetns {
    let ns = NamedNetns::create(&format!("snb-{}", tag(what))).expect("peer host netns");
    sh(&["ip", "-n", ns.name(), "link", "set", "lo", "up"]);
    ns
}

/// shimnetd's REST API: `POST /v1/networks/NET/endpoints`, `DELETE .../endpoints/ID`.
pub struct Rest {
    pub socket: PathBuf,
    pub network: String,
    /// shimnetd's namespace.
    pub host: PathBuf,
}

impl Door for Rest {
    fn name(&self) -> String {
        "shimnet REST".into()
    }
    fn ops(&self) -> (&'static str, &'static str) {
        ("attach", "detach")
    }
    fn setup(&self, _: usize, c: &NamedNetns) -> Duration {
        let body = json!({"container_id": c.name(), "netns": c.path()});
        let start = Instant::now();
        let _: Value = Client::new(&self.socket)
            .call(
                "POST",
                &format!("/v1/networks/{}/endpoints", self.network),
                Some(&body),
            )
            .expect("attach");
        start.elapsed()
    }
    fn teardown(&self, _: usize, c: &NamedNetns) -> Duration {
        let start = Instant::now();
        let _: Value = Client::new(&self.socket)
            .call(
                "DELETE",
                &format!("/v1/networks/{}/endpoints/{}", self.network, c.name()),
                None::<&()>,
            )
            .expect("detach");
        start.elapsed()
    }
    fn drained(&self) {
        wait_no_veths(&ns_name(&self.host));
    }
}

/// A CNI plugin binary exec'd per operation from inside `host`: shimnet's own or the reference
/// `bridge` (+ `host-local`, `ipMasq`).
pub struct Cni {
    pub label: String,
    pub bin: PathBuf,
    pub host: PathBuf,
    pub conf: Value,
}

impl Cni {
    /// shimnet's CNI plugin talking to the daemon at `socket`, bridge `bridge`.
    pub fn shimnet(host: &Path, socket: &Path, bridge: &str, subnet: &str) -> Self {
        Cni {
            label: "shimnet CNI".into(),
            bin: plugin(),
            host: host.to_path_buf(),
            conf: json!({
                "cniVersion": "1.0.0", "name": bridge, "type": "shimnet", "daemonSocket": socket,
                "bridge": bridge, "isGateway": true, "ipMasq": true,
                "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet}]],
                         "routes": [{"dst": "0.0.0.0/0"}]}
            }),
        }
    }

    /// The reference `bridge` plugin with `host-local` state in `data`.
    pub fn reference(host: &Path, data: &Path, subnet: &str) -> Self {
        Cni {
            label: "reference CNI bridge".into(),
            bin: Path::new(REF_DIR).join("bridge"),
            host: host.to_path_buf(),
            conf: json!({
                "cniVersion": "1.0.0", "name": "snbref", "type": "bridge", "bridge": "snbref0",
                "isGateway": true, "ipMasq": true,
                "ipam": {"type": "host-local", "dataDir": data, "ranges": [[{"subnet": subnet}]],
                         "routes": [{"dst": "0.0.0.0/0"}]}
            }),
        }
    }

    fn run(&self, command: &str, c: &NamedNetns) -> Duration {
        let path = format!("{}:{REF_DIR}", plugin().parent().unwrap().display());
        let mut cmd = Command::new(&self.bin);
        cmd.env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", c.name())
            .env("CNI_NETNS", c.path())
            .env("CNI_IFNAME", "eth0")
            .env("CNI_ARGS", "")
            .env("CNI_PATH", path);
        exec_in(&self.host, &mut cmd, self.conf.to_string().as_bytes())
    }
}

impl Door for Cni {
    fn name(&self) -> String {
        self.label.clone()
    }
    fn ops(&self) -> (&'static str, &'static str) {
        ("ADD", "DEL")
    }
    fn setup(&self, _: usize, c: &NamedNetns) -> Duration {
        self.run("ADD", c)
    }
    fn teardown(&self, _: usize, c: &NamedNetns) -> Duration {
        self.run("DEL", c)
    }
    fn drained(&self) {
        wait_no_veths(&ns_name(&self.host));
    }
}

/// netavark (Podman's network backend) exec'd per operation from inside `host`, static IPs.
pub struct Netavark {
    pub bin: PathBuf,
    pub host: PathBuf,
    pub config: tempfile::TempDir,
}

impl Netavark {
    fn opts(i: usize, c: &NamedNetns) -> String {
        let ip = format!("10.202.{}.{}", (i + 2) / 256, (i + 2) % 256);
        json!({
            "container_id": c.name(), "container_name": c.name(),
            "networks": {"nvnet": {"interface_name": "eth0", "static_ips": [ip]}},
            "network_info": {"nvnet": {"name": "nvnet", "id": "f".repeat(64), "driver": "bridge",
                "network_interface": "snbnv0", "internal": false, "ipv6_enabled": false,
                "dns_enabled": false,
                "subnets": [{"subnet": "10.202.0.0/16", "gateway": "10.202.0.1"}]}}
        })
        .to_string()
    }

    fn run(&self, cmd: &str, i: usize, c: &NamedNetns) -> Duration {
        let mut command = Command::new(&self.bin);
        command
            .arg("--config")
            .arg(self.config.path())
            .arg(cmd)
            .arg(c.path());
        exec_in(&self.host, &mut command, Self::opts(i, c).as_bytes())
    }
}

impl Door for Netavark {
    fn name(&self) -> String {
        "netavark".into()
    }
    fn ops(&self) -> (&'static str, &'static str) {
        ("setup", "teardown")
    }
    fn setup(&self, i: usize, c: &NamedNetns) -> Duration {
        self.run("setup", i, c)
    }
    fn teardown(&self, i: usize, c: &NamedNetns) -> Duration {
        self.run("teardown", i, c)
    }
    fn concurrent(&self) -> bool {
        // netavark races itself creating its iptables chains ("Chain already exists").
        false
    }
}

/// shimnetd's Docker remote network and IPAM driver, spoken to directly the way dockerd does for
/// one container on a `--driver shimnet --ipam-driver shimnet` network: RequestAddress,
/// CreateEndpoint, Join, ProgramExternalConnectivity; then RevokeExternalConnectivity, Leave,
/// DeleteEndpoint, ReleaseAddress. (Without dockerd nobody moves the container end into the
/// sandbox; that move is dockerd's work, not the driver's.)
pub struct DockerPlugin {
    pub socket: PathBuf,
    /// shimnetd's namespace.
    pub host: PathBuf,
    pub network_id: String,
    pub pool_id: String,
    addrs: Mutex<HashMap<usize, String>>,
}

fn plugin_call(client: &Client, path: &str, body: Value) -> Value {
    let reply: Value = client
        .call("POST", path, Some(&body))
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    assert!(
        reply.get("Err").is_none_or(|e| e.as_str() == Some("")),
        "{path}: {reply}"
    );
    reply
}

fn endpoint_id(i: usize) -> String {
    format!("{:064x}", 0xbe00_0000usize + i)
}

impl DockerPlugin {
    /// Creates pool and network through the driver (what `docker network create` does).
    pub fn create(socket: &Path, host: &Path, subnet: &str) -> Self {
        let c = Client::new(socket);
        for p in [
            "/Plugin.Activate",
            "/NetworkDriver.GetCapabilities",
            "/IpamDriver.GetCapabilities",
        ] {
            plugin_call(&c, p, json!({}));
        }
        let pool = plugin_call(
            &c,
            "/IpamDriver.RequestPool",
            json!({"AddressSpace": "local", "Pool": subnet, "SubPool": "", "Options": {}, "V6": false}),
        );
        let pool_id = pool["PoolID"].as_str().expect("PoolID").to_string();
        let gw = plugin_call(
            &c,
            "/IpamDriver.RequestAddress",
            json!({"PoolID": pool_id, "Address": "",
                   "Options": {"RequestAddressType": "com.docker.network.gateway"}}),
        );
        let network_id = format!("{:064x}", 0x5b_dead_beefusize);
        plugin_call(
            &c,
            "/NetworkDriver.CreateNetwork",
            json!({"NetworkID": network_id,
                   "Options": {"com.docker.network.enable_ipv6": false,
                               "com.docker.network.generic": {}},
                   "IPv4Data": [{"AddressSpace": "local", "Gateway": gw["Address"], "Pool": subnet}],
                   "IPv6Data": []}),
        );
        DockerPlugin {
            socket: socket.to_path_buf(),
            host: host.to_path_buf(),
            network_id,
            pool_id,
            addrs: Mutex::new(HashMap::new()),
        }
    }
}

impl Door for DockerPlugin {
    fn name(&self) -> String {
        "shimnet Docker plugin".into()
    }
    fn ops(&self) -> (&'static str, &'static str) {
        ("create+join", "leave+delete")
    }
    fn setup(&self, i: usize, c: &NamedNetns) -> Duration {
        let cl = Client::new(&self.socket);
        let (n, e) = (&self.network_id, endpoint_id(i));
        let start = Instant::now();
        let a = plugin_call(
            &cl,
            "/IpamDriver.RequestAddress",
            json!({"PoolID": self.pool_id, "Address": "", "Options": null}),
        );
        let addr = a["Address"].as_str().expect("Address").to_string();
        plugin_call(
            &cl,
            "/NetworkDriver.CreateEndpoint",
            json!({"NetworkID": n, "EndpointID": e,
                   "Interface": {"Address": addr, "AddressIPv6": "", "MacAddress": ""},
                   "Options": {}}),
        );
        plugin_call(
            &cl,
            "/NetworkDriver.Join",
            json!({"NetworkID": n, "EndpointID": e, "SandboxKey": c.path(), "Options": {}}),
        );
        plugin_call(
            &cl,
            "/NetworkDriver.ProgramExternalConnectivity",
            json!({"NetworkID": n, "EndpointID": e, "Options": {}}),
        );
        let took = start.elapsed();
        self.addrs.lock().unwrap().insert(i, addr);
        took
    }
    fn teardown(&self, i: usize, _: &NamedNetns) -> Duration {
        let cl = Client::new(&self.socket);
        let (n, e) = (&self.network_id, endpoint_id(i));
        let addr = self.addrs.lock().unwrap().remove(&i).expect("set up first");
        let ip = addr.split('/').next().unwrap().to_string();
        let start = Instant::now();
        for p in [
            "/NetworkDriver.RevokeExternalConnectivity",
            "/NetworkDriver.Leave",
            "/NetworkDriver.DeleteEndpoint",
        ] {
            plugin_call(&cl, p, json!({"NetworkID": n, "EndpointID": e}));
        }
        plugin_call(
            &cl,
            "/IpamDriver.ReleaseAddress",
            json!({"PoolID": self.pool_id, "Address": ip}),
        );
        start.elapsed()
    }
    fn drained(&self) {
        wait_no_veths(&ns_name(&self.host));
    }
}

/// A door whose operations also record the CPU time shimnetd (`pid`) had used when each one
/// finished: CPU per operation does not depend on how busy the machine's other processes keep
/// the CPUs, unlike latency. The `/proc` reads happen outside the timed window.
pub struct Metered<'a> {
    pub inner: &'a dyn Door,
    pub pid: u32,
    /// (setup, index, cumulative CPU) after each operation.
    pub marks: Mutex<Vec<(bool, usize, Duration)>>,
}

impl<'a> Metered<'a> {
    pub fn new(inner: &'a dyn Door, pid: u32) -> Self {
        Metered {
            inner,
            pid,
            marks: Mutex::new(Vec::new()),
        }
    }

    fn mark(&self, setup: bool, i: usize) {
        let cpu = crate::footprint::cpu_time(self.pid);
        self.marks.lock().unwrap().push((setup, i, cpu));
    }

    /// shimnetd CPU per operation, in ms, over the setups (or teardowns) `range` of the marks
    /// recorded since [`Metered::reset`] (the sequential run comes first); `None` if too few.
    pub fn cpu_per_op(&self, setup: bool, range: std::ops::Range<usize>) -> Option<f64> {
        let m = self.marks.lock().unwrap();
        let seq: Vec<Duration> = m.iter().filter(|x| x.0 == setup).map(|x| x.2).collect();
        let (first, last) = (seq.get(range.start)?, seq.get(range.end.checked_sub(1)?)?);
        let ops = range.len().checked_sub(1).filter(|&n| n > 0)?;
        Some((*last - *first).as_secs_f64() * 1e3 / ops as f64)
    }

    /// Forgets the marks so far (warm-up).
    pub fn reset(&self) {
        self.marks.lock().unwrap().clear();
    }
}

impl Door for Metered<'_> {
    fn name(&self) -> String {
        self.inner.name()
    }
    fn ops(&self) -> (&'static str, &'static str) {
        self.inner.ops()
    }
    fn setup(&self, i: usize, c: &NamedNetns) -> Duration {
        let d = self.inner.setup(i, c);
        self.mark(true, i);
        d
    }
    fn teardown(&self, i: usize, c: &NamedNetns) -> Duration {
        let d = self.inner.teardown(i, c);
        self.mark(false, i);
        d
    }
    fn concurrent(&self) -> bool {
        self.inner.concurrent()
    }
    fn drained(&self) {
        self.inner.drained()
    }
}
