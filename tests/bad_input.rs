//! Malformed and hostile inputs, one table per front door (REST API, Docker plugin socket, CNI
//! binary) and for the config file. Each row names the input, the expected status (HTTP status,
//! CNI error code, or a non-zero exit) and a fragment the error must contain (the field at
//! fault). After every row the state must be unchanged: networks, endpoints, links and the
//! firewall ruleset of the daemon's namespace are compared before and after. Run as root.

mod cni_support;
mod common;

use std::path::Path;

use cni_support::{conf, exec, plugin, shimnet, Call};
use common::*;
use serde_json::{json, Value};
use shimnet_api::client::{parse_reply, Client, Reply};

/// What a row sends.
enum Input {
    /// REST: method, path, raw body.
    Rest(&'static str, String, Vec<u8>),
    /// Docker plugin: call path, raw body.
    Plugin(&'static str, Vec<u8>),
    /// CNI binary: environment (merged over a valid ADD), stdin.
    Cni(Vec<(&'static str, String)>, Vec<u8>),
}

/// A row: name, input, expected status (HTTP status or CNI code), expected message fragment.
struct Row {
    name: &'static str,
    input: Input,
    status: u32,
    fragment: &'static str,
}

fn row(name: &'static str, input: Input, status: u32, fragment: &'static str) -> Row {
    Row {
        name,
        input,
        status,
        fragment,
    }
}

fn j(v: Value) -> Vec<u8> {
    v.to_string().into_bytes()
}

/// Everything a failed request must leave untouched.
fn snapshot(h: &TestHost) -> String {
    format!(
        "{}\n{}\n{:?}\n{}\n{}",
        h.call("GET", "/v1/networks", None),
        h.call("GET", "/v1/endpoints", None),
        links_in(h.ns.name()),
        h.nft_ruleset(),
        h.iptables_save()
            .lines()
            .filter(|l| !l.starts_with('#') && !l.starts_with(':'))
            .collect::<Vec<_>>()
            .join("\n"),
    )
}

/// One request whose body is written by its own thread, so a server that answers before reading
/// all of it (413) is seen like a client would (the write may fail, the reply is read).
fn raw_request(socket: &Path, method: &str, path: &str, body: &[u8]) -> Reply {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(socket).expect("connect");
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let _ = w.write_all(&req);
    });
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let _ = writer.join();
    parse_reply(&buf).expect("an HTTP reply")
}

/// Runs a row; returns (status, full error text).
fn run(h: &TestHost, input: &Input) -> (u32, String) {
    match input {
        Input::Rest(method, path, body) => {
            let r = raw_request(&h.socket, method, path, body);
            let v: Value = serde_json::from_slice(&r.body).unwrap_or_else(|_| {
                panic!("REST error not JSON: {}", String::from_utf8_lossy(&r.body))
            });
            let e = &v["error"];
            assert!(
                e["code"].as_str().is_some_and(|c| !c.is_empty()),
                "REST error shape: {v}"
            );
            (
                u32::from(r.status),
                format!("{} {}", e["field"], e["message"]),
            )
        }
        Input::Plugin(call, body) => {
            let r = raw_request(
                &h.dir.path().join("plugins/shimnet.sock"),
                "POST",
                call,
                body,
            );
            let v: Value = serde_json::from_slice(&r.body).unwrap_or_else(|_| {
                panic!(
                    "plugin error not JSON: {}",
                    String::from_utf8_lossy(&r.body)
                )
            });
            let msg = v["Err"]
                .as_str()
                .unwrap_or_else(|| panic!("plugin error shape: {v}"));
            (u32::from(r.status), msg.to_string())
        }
        Input::Cni(env, stdin) => {
            let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let o = exec(&plugin(), None, &env, stdin);
            assert_ne!(o.code, 0, "CNI run succeeded: {:?}", o.out);
            let code = o.out["code"]
                .as_u64()
                .unwrap_or_else(|| panic!("CNI error shape: {:?}", o))
                as u32;
            (code, format!("{} {}", o.out["msg"], o.out["details"]))
        }
    }
}

#[test]
fn every_front_door_refuses_bad_input_clearly_and_changes_nothing() {
    use_prefix("snr");
    let h = TestHost::new(
        "[[networks]]\nname = \"n1\"\nsubnet = \"10.10.0.0/24\"\n[[networks]]\nname = \"tiny\"\nsubnet = \"10.11.0.0/30\"\n",
    );
    // Fixtures: an exhausted network, an attached container, a CNI network, a Docker network.
    let (c0, c1, free) = (container("b"), container("b"), container("b"));
    h.attach("tiny", &c0, json!({}));
    h.attach("n1", &c1, json!({}));
    let cni_net = format!("snr{}", tag("k"));
    let cni_conf = conf("1.0.0", &cni_net, &h.socket, &cni_net, "10.12.0.0/24");
    let warm = Call::new("warm", &free.path().display().to_string());
    assert_eq!(shimnet("ADD", &warm, &cni_conf).code, 0);
    assert_eq!(shimnet("DEL", &warm, &cni_conf).code, 0);
    let docker_net = "d".repeat(64);
    let r = Client::new(h.dir.path().join("plugins/shimnet.sock"))
        .request(
            "POST",
            "/NetworkDriver.CreateNetwork",
            Some(&j(json!({"NetworkID": docker_net, "IPv6Data": [], "Options": {},
                "IPv4Data": [{"AddressSpace": "x", "Pool": "10.13.0.0/24", "Gateway": "10.13.0.1/24"}]}))),
        )
        .unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));

    let plain_file = h.dir.path().join("plain");
    std::fs::write(&plain_file, b"").unwrap();
    // Opening a FIFO blocks until a writer comes: the daemon must refuse it without opening it.
    let fifo = h.dir.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let free_ns = free.path().display().to_string();
    let att = |extra: Value| {
        let mut b = json!({"container_id": "fresh", "netns": free_ns});
        b.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        j(b)
    };
    let eps = "/v1/networks/n1/endpoints".to_string();
    let nets = "/v1/networks".to_string();
    let big = vec![b' '; 2 << 20];

    let mut rows = vec![
        // ---- REST ----
        row(
            "broken JSON",
            Input::Rest("POST", nets.clone(), b"{\"name\":".to_vec()),
            400,
            "body",
        ),
        row(
            "wrong type",
            Input::Rest(
                "POST",
                nets.clone(),
                j(json!({"name": 5, "subnet": "10.20.0.0/24"})),
            ),
            400,
            "name",
        ),
        row(
            "not a CIDR",
            Input::Rest(
                "POST",
                nets.clone(),
                j(json!({"name": "x", "subnet": "banana"})),
            ),
            400,
            "subnet",
        ),
        row(
            "prefix /33",
            Input::Rest(
                "POST",
                nets.clone(),
                j(json!({"name": "x", "subnet": "10.20.0.0/33"})),
            ),
            400,
            "subnet",
        ),
        row(
            "overlapping subnet",
            Input::Rest(
                "POST",
                nets.clone(),
                j(json!({"name": "x", "subnet": "10.10.0.128/25"})),
            ),
            409,
            "10.10.0.0/24",
        ),
        row(
            "gateway outside subnet",
            Input::Rest(
                "POST",
                nets.clone(),
                j(json!({"name": "x", "subnet": "10.20.0.0/24", "gateway": "10.21.0.1"})),
            ),
            400,
            "gateway",
        ),
        row(
            "range outside subnet",
            Input::Rest(
                "POST",
                nets.clone(),
                j(json!({"name": "x", "subnet": "10.20.0.0/24", "range_start": "10.30.0.5"})),
            ),
            400,
            "range_start",
        ),
        row(
            "bridge name too long",
            Input::Rest(
                "POST",
                nets.clone(),
                j(json!({"name": "x", "subnet": "10.20.0.0/24", "bridge": "b123456789abcdef"})),
            ),
            400,
            "bridge",
        ),
        row(
            "oversized body",
            Input::Rest("POST", nets.clone(), big.clone()),
            413,
            "body",
        ),
        row(
            "ensure with other subnet",
            Input::Rest(
                "PUT",
                "/v1/networks/n1".into(),
                j(json!({"name": "n1", "subnet": "10.40.0.0/24"})),
            ),
            409,
            "n1",
        ),
        row(
            "unknown network",
            Input::Rest("POST", "/v1/networks/nope/endpoints".into(), att(json!({}))),
            404,
            "nope",
        ),
        // The one-request ensure + attach (the CNI plugin's ADD): both parts checked before
        // anything changes, fields named by their path in the body.
        row(
            "attach: ensure with a bridge name too long",
            Input::Rest(
                "POST",
                "/v1/networks/x/attach".into(),
                j(
                    json!({"ensure": {"name": "x", "subnet": "10.20.0.0/24", "bridge": "b123456789abcdef"},
                         "endpoint": {"container_id": "fresh", "netns": free_ns}}),
                ),
            ),
            400,
            "\"ensure.bridge\"",
        ),
        row(
            "attach: ensure naming another network",
            Input::Rest(
                "POST",
                "/v1/networks/x/attach".into(),
                j(json!({"ensure": {"name": "y", "subnet": "10.20.0.0/24"},
                         "endpoint": {"container_id": "fresh", "netns": free_ns}})),
            ),
            400,
            "\"ensure.name\"",
        ),
        row(
            "attach: a good network, a bad port (the network is not created)",
            Input::Rest(
                "POST",
                "/v1/networks/x/attach".into(),
                j(json!({"ensure": {"name": "x", "subnet": "10.20.0.0/24"},
                         "endpoint": {"container_id": "fresh", "netns": free_ns,
                                      "ports": [{"host_port": 0, "container_port": 80}]}})),
            ),
            400,
            "\"endpoint.ports.host_port\"",
        ),
        row(
            "attach: relative netns",
            Input::Rest(
                "POST",
                "/v1/networks/n1/attach".into(),
                j(json!({"endpoint": {"container_id": "fresh", "netns": "netns"}})),
            ),
            400,
            "\"endpoint.netns\"",
        ),
        row(
            "attach: unknown network without ensure",
            Input::Rest(
                "POST",
                "/v1/networks/nope/attach".into(),
                j(json!({"endpoint": {"container_id": "fresh", "netns": free_ns}})),
            ),
            404,
            "\"network\"",
        ),
        row(
            "attach: no endpoint",
            Input::Rest(
                "POST",
                "/v1/networks/n1/attach".into(),
                j(json!({"ensure": {"name": "n1", "subnet": "10.10.0.0/24"}})),
            ),
            400,
            "\"endpoint\"",
        ),
        row(
            "attach: exhausted pool",
            Input::Rest(
                "POST",
                "/v1/networks/tiny/attach".into(),
                j(json!({"endpoint": {"container_id": "fresh", "netns": free_ns}})),
            ),
            409,
            "tiny",
        ),
        row(
            "delete unknown network",
            Input::Rest("DELETE", "/v1/networks/nope".into(), vec![]),
            404,
            "nope",
        ),
        row(
            "exhausted pool",
            Input::Rest("POST", "/v1/networks/tiny/endpoints".into(), att(json!({}))),
            409,
            "tiny",
        ),
        row(
            "duplicate container id",
            Input::Rest(
                "POST",
                eps.clone(),
                j(json!({"container_id": c1.name(), "netns": free_ns})),
            ),
            409,
            c1_fragment(),
        ),
        row(
            "netns is a regular file",
            Input::Rest("POST", eps.clone(), att(json!({"netns": plain_file}))),
            400,
            "netns",
        ),
        row(
            "netns is a FIFO",
            Input::Rest("POST", eps.clone(), att(json!({"netns": fifo}))),
            400,
            "not a namespace file",
        ),
        row(
            "netns is a mount namespace",
            Input::Rest(
                "POST",
                eps.clone(),
                att(json!({"netns": "/proc/self/ns/mnt"})),
            ),
            400,
            "not a network namespace",
        ),
        row(
            "netns does not exist",
            Input::Rest(
                "POST",
                eps.clone(),
                att(json!({"netns": "/run/netns/snr-none"})),
            ),
            400,
            "netns",
        ),
        row(
            "netns relative",
            Input::Rest("POST", eps.clone(), att(json!({"netns": "run/netns/x"}))),
            400,
            "netns",
        ),
        row(
            "ifname too long",
            Input::Rest(
                "POST",
                eps.clone(),
                att(json!({"ifname": "eth0123456789012"})),
            ),
            400,
            "ifname",
        ),
        row(
            "ifname with space",
            Input::Rest("POST", eps.clone(), att(json!({"ifname": "a b"}))),
            400,
            "ifname",
        ),
        row(
            "ifname with slash",
            Input::Rest("POST", eps.clone(), att(json!({"ifname": "../x"}))),
            400,
            "ifname",
        ),
        row(
            "container id with slash",
            Input::Rest("POST", eps.clone(), att(json!({"container_id": "a/b"}))),
            400,
            "container_id",
        ),
        row(
            "static ip outside subnet",
            Input::Rest("POST", eps.clone(), att(json!({"ip": "10.99.0.5"}))),
            400,
            "ip",
        ),
        row(
            "static ip is the gateway",
            Input::Rest("POST", eps.clone(), att(json!({"ip": "10.10.0.1"}))),
            400,
            "ip",
        ),
        row(
            "bad mac",
            Input::Rest("POST", eps.clone(), att(json!({"mac": "zz:00"}))),
            400,
            "mac",
        ),
        row(
            "host port out of range",
            Input::Rest(
                "POST",
                eps.clone(),
                att(json!({"ports": [{"host_port": 70000, "container_port": 80}]})),
            ),
            400,
            "host_port",
        ),
        row(
            "container port zero",
            Input::Rest(
                "POST",
                eps.clone(),
                att(json!({"ports": [{"host_port": 8080, "container_port": 0}]})),
            ),
            400,
            "port",
        ),
        row(
            "unknown protocol",
            Input::Rest(
                "POST",
                eps.clone(),
                att(
                    json!({"ports": [{"host_port": 8080, "container_port": 80, "protocol": "icmp"}]}),
                ),
            ),
            400,
            "protocol",
        ),
        row(
            "method not allowed",
            Input::Rest("PATCH", nets.clone(), vec![]),
            405,
            "PATCH",
        ),
        row(
            "unknown path",
            Input::Rest("GET", "/v2/x".into(), vec![]),
            404,
            "/v2/x",
        ),
        // ---- Docker plugin ----
        row(
            "plugin broken JSON",
            Input::Plugin("/NetworkDriver.CreateNetwork", b"{".to_vec()),
            400,
            "CreateNetwork",
        ),
        row(
            "plugin wrong type",
            Input::Plugin("/NetworkDriver.CreateNetwork", j(json!({"NetworkID": 7}))),
            400,
            "NetworkID",
        ),
        row(
            "plugin bad pool",
            Input::Plugin(
                "/NetworkDriver.CreateNetwork",
                j(
                    json!({"NetworkID": "e".repeat(64), "IPv4Data": [{"Pool": "10.50.0.0/33", "Gateway": "10.50.0.1/24"}]}),
                ),
            ),
            400,
            "IPv4Data[0].Pool",
        ),
        row(
            "plugin gateway outside pool",
            Input::Plugin(
                "/NetworkDriver.CreateNetwork",
                j(
                    json!({"NetworkID": "e".repeat(64), "IPv4Data": [{"Pool": "10.50.0.0/24", "Gateway": "10.51.0.1/24"}]}),
                ),
            ),
            400,
            "Gateway",
        ),
        row(
            "plugin overlapping pool",
            Input::Plugin(
                "/NetworkDriver.CreateNetwork",
                j(
                    json!({"NetworkID": "e".repeat(64), "IPv4Data": [{"Pool": "10.10.0.0/25", "Gateway": "10.10.0.1/25"}]}),
                ),
            ),
            409,
            "10.10.0.0/24",
        ),
        row(
            "plugin bad mtu",
            Input::Plugin(
                "/NetworkDriver.CreateNetwork",
                j(
                    json!({"NetworkID": "e".repeat(64), "IPv4Data": [{"Pool": "10.50.0.0/24", "Gateway": "10.50.0.1/24"}], "Options": {"com.docker.network.generic": {"com.docker.network.driver.mtu": "lots"}}}),
                ),
            ),
            400,
            "mtu",
        ),
        row(
            "plugin unknown network",
            Input::Plugin(
                "/NetworkDriver.CreateEndpoint",
                j(
                    json!({"NetworkID": "f".repeat(64), "EndpointID": "a".repeat(64), "Interface": {"Address": "10.13.0.5/24"}}),
                ),
            ),
            404,
            "fff",
        ),
        row(
            "plugin address outside pool",
            Input::Plugin(
                "/NetworkDriver.CreateEndpoint",
                j(
                    json!({"NetworkID": docker_net, "EndpointID": "a".repeat(64), "Interface": {"Address": "10.99.0.5/24"}}),
                ),
            ),
            400,
            "Interface.Address",
        ),
        row(
            "plugin host port out of range",
            Input::Plugin(
                "/NetworkDriver.CreateEndpoint",
                j(
                    json!({"NetworkID": docker_net, "EndpointID": "a".repeat(64), "Interface": {"Address": "10.13.0.5/24"}, "Options": {"com.docker.network.portmap": [{"Proto": 6, "Port": 80, "HostPort": 70000, "HostPortEnd": 70000}]}}),
                ),
            ),
            400,
            "HostPort",
        ),
        row(
            "plugin join unknown endpoint",
            Input::Plugin(
                "/NetworkDriver.Join",
                j(
                    json!({"NetworkID": docker_net, "EndpointID": "b".repeat(64), "SandboxKey": "/proc/self/ns/net"}),
                ),
            ),
            404,
            "bbb",
        ),
        row(
            "plugin unknown call",
            Input::Plugin("/NetworkDriver.Explode", b"{}".to_vec()),
            404,
            "Explode",
        ),
        row(
            "plugin oversized body",
            Input::Plugin("/NetworkDriver.CreateNetwork", big.clone()),
            413,
            "limit",
        ),
        row(
            "ipam bad pool",
            Input::Plugin(
                "/IpamDriver.RequestPool",
                j(json!({"AddressSpace": "x", "Pool": "300.0.0.0/8"})),
            ),
            400,
            "Pool",
        ),
        row(
            "ipam unknown pool",
            Input::Plugin(
                "/IpamDriver.RequestAddress",
                j(json!({"PoolID": "nope", "Address": ""})),
            ),
            404,
            "nope",
        ),
    ];
    // ---- CNI binary ----
    let ok_env = |over: &[(&'static str, &str)]| {
        let mut env: Vec<(&'static str, String)> = vec![
            ("CNI_COMMAND", "ADD".into()),
            ("CNI_CONTAINERID", "fresh".into()),
            ("CNI_NETNS", free_ns.clone()),
            ("CNI_IFNAME", "eth0".into()),
            ("CNI_PATH", "/usr/lib/cni".into()),
        ];
        for (k, v) in over {
            env.retain(|(kk, _)| kk != k);
            env.push((k, v.to_string()));
        }
        env
    };
    let stdin = j(cni_conf.clone());
    let with = |patch: Value| {
        let mut c = cni_conf.clone();
        c.as_object_mut()
            .unwrap()
            .extend(patch.as_object().unwrap().clone());
        j(c)
    };
    let plain = plain_file.display().to_string();
    rows.extend([
        row("CNI unknown command", Input::Cni(ok_env(&[("CNI_COMMAND", "EXPLODE")]), stdin.clone()), 4, "CNI_COMMAND"),
        row("CNI netns regular file", Input::Cni(ok_env(&[("CNI_NETNS", &plain)]), stdin.clone()), 7, "netns"),
        row("CNI netns mount namespace", Input::Cni(ok_env(&[("CNI_NETNS", "/proc/self/ns/mnt")]), stdin.clone()), 7, "not a network namespace"),
        row("CNI netns missing", Input::Cni(ok_env(&[("CNI_NETNS", "/run/netns/snr-none")]), stdin.clone()), 7, "netns"),
        row("CNI netns relative", Input::Cni(ok_env(&[("CNI_NETNS", "netns/x")]), stdin.clone()), 4, "CNI_NETNS"),
        row("CNI ifname too long", Input::Cni(ok_env(&[("CNI_IFNAME", "eth0123456789012")]), stdin.clone()), 4, "CNI_IFNAME"),
        row("CNI ifname with slash", Input::Cni(ok_env(&[("CNI_IFNAME", "x/y")]), stdin.clone()), 4, "CNI_IFNAME"),
        row("CNI ifname with space", Input::Cni(ok_env(&[("CNI_IFNAME", "a b")]), stdin.clone()), 4, "CNI_IFNAME"),
        row("CNI container id bad", Input::Cni(ok_env(&[("CNI_CONTAINERID", "a/../b")]), stdin.clone()), 4, "CNI_CONTAINERID"),
        row("CNI container id missing", Input::Cni(ok_env(&[("CNI_CONTAINERID", "")]), stdin.clone()), 4, "CNI_CONTAINERID"),
        row("CNI broken JSON", Input::Cni(ok_env(&[]), b"{\"cniVersion\":".to_vec()), 6, ""),
        row("CNI wrong type", Input::Cni(ok_env(&[]), with(json!({"mtu": "big"}))), 7, "mtu"),
        row("CNI bad subnet", Input::Cni(ok_env(&[]), with(json!({"ipam": {"type": "host-local", "ranges": [[{"subnet": "10.12.0.0/40"}]]}}))), 7, "subnet"),
        row("CNI gateway outside subnet", Input::Cni(ok_env(&[]), with(json!({"ipam": {"type": "host-local", "ranges": [[{"subnet": "10.12.0.0/24", "gateway": "10.77.0.1"}]]}}))), 7, "gateway"),
        row("CNI overlapping subnet", Input::Cni(ok_env(&[]), with(json!({"name": "snrother", "bridge": "snrother", "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.10.0.0/25"}]]}}))), 101, "10.10.0.0/24"),
        row("CNI host port out of range", Input::Cni(ok_env(&[]), with(json!({"capabilities": {"portMappings": true}, "runtimeConfig": {"portMappings": [{"hostPort": 70000, "containerPort": 80, "protocol": "tcp"}]}}))), 7, "runtimeConfig.portMappings[0].hostPort"),
        row("CNI unsupported version", Input::Cni(ok_env(&[]), with(json!({"cniVersion": "9.9.9"}))), 1, "9.9.9"),
    ]);

    let mut failures = Vec::new();
    for r in &rows {
        let before = snapshot(&h);
        let (status, text) = run(&h, &r.input);
        let after = snapshot(&h);
        let verdict = if status != r.status {
            Some(format!("status {status}, expected {}", r.status))
        } else if !text.contains(r.fragment) {
            Some(format!("message lacks {:?}", r.fragment))
        } else if before != after {
            Some("state changed".to_string())
        } else {
            None
        };
        println!(
            "bad input | {:<32} | {status:>3} | {}",
            r.name,
            text.chars().take(110).collect::<String>()
        );
        if let Some(v) = verdict {
            failures.push(format!("{}: {v}: {text}", r.name));
        }
    }
    println!("bad input: {} rows, {} failed", rows.len(), failures.len());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // The fixtures are intact and still work.
    assert_eq!(links_in(free.name()), ["lo"]);
    assert!(ping(&c1, "10.10.0.1"));
}

fn c1_fragment() -> &'static str {
    "already"
}

/// `shimnetd --config FILE` with a bad file exits non-zero, names the key and binds nothing.
#[test]
fn bad_config_files_stop_the_daemon_naming_the_key() {
    use_prefix("snr");
    let ns = container("cfg");
    let dir = tempfile::tempdir().unwrap();
    let base = format!(
        "state_dir = \"{0}/s\"\napi_socket = \"{0}/a.sock\"\nplugin_dir = \"{0}/p\"\n",
        dir.path().display()
    );
    let net = |body: &str| format!("{base}[[networks]]\n{body}\n");
    let cases: Vec<(&str, String, &str)> = vec![
        ("broken TOML", format!("{base}[[networks]\n"), "line"),
        ("unknown key", format!("{base}colour = 1\n"), "colour"),
        (
            "wrong type",
            format!("{base}reconcile_interval_secs = \"often\"\n"),
            "reconcile_interval_secs",
        ),
        (
            "bad firewall",
            format!("{base}firewall = \"pf\"\n"),
            "firewall",
        ),
        (
            "bad subnet",
            net("name = \"a\"\nsubnet = \"10.0.0.0/33\""),
            "networks[0].subnet",
        ),
        (
            "gateway outside",
            net("name = \"a\"\nsubnet = \"10.0.0.0/24\"\ngateway = \"10.9.0.1\""),
            "networks[0].gateway",
        ),
        (
            "bad network name",
            net("name = \"a/b\"\nsubnet = \"10.0.0.0/24\""),
            "networks[0].name",
        ),
        (
            "overlapping networks",
            format!(
                "{}[[networks]]\nname = \"b\"\nsubnet = \"10.0.0.128/25\"\n",
                net("name = \"a\"\nsubnet = \"10.0.0.0/24\"")
            ),
            "networks[1]",
        ),
        (
            "negative limit",
            format!("{base}[api]\nmax_body_bytes = -1\n"),
            "max_body_bytes",
        ),
        (
            "unknown api key",
            format!("{base}[api]\nport = 8080\n"),
            "port",
        ),
        (
            "unknown docker key",
            format!("{base}[docker]\nswarm = true\n"),
            "swarm",
        ),
    ];
    let mut failures = Vec::new();
    for (name, text, key) in &cases {
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, text).unwrap();
        let o = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                ns.name(),
                env!("CARGO_BIN_EXE_shimnetd"),
                "--config",
            ])
            .arg(&file)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        let first = err
            .lines()
            .find(|l| l.contains("Error"))
            .unwrap_or_default()
            .to_string();
        println!("bad config | {name:<22} | {first}");
        if o.status.success() || !err.contains(key) {
            failures.push(format!(
                "{name}: exit {:?}, stderr lacks {key:?}: {err}",
                o.status
            ));
        }
        if Path::new(&format!("{}/a.sock", dir.path().display())).exists() {
            failures.push(format!("{name}: the API socket was created"));
        }
    }
    let missing = std::process::Command::new(env!("CARGO_BIN_EXE_shimnetd"))
        .args(["--config", "/nonexistent/snr.toml"])
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/snr.toml"));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
