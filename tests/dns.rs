//! Name resolution end to end: shimnetd in a test "host" namespace serving DNS on the gateways of
//! networks created with `dns`, containers as namespaces asking it (hickory-proto messages over
//! UDP and TCP, glibc through `ip netns exec`'s per-namespace resolv.conf, `dig` and busybox
//! `nslookup` from the host), a real dnsmasq in the "outside" namespace as the upstream resolver.
//! Run as root.

mod cni_support;
mod common;
mod dns_support;

use std::net::IpAddr;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use dns_support::*;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use serde_json::{json, Value};
use shimnet::netns::run_in;

/// A host whose daemon reads `resolv_conf` (a file of the test) as the host's resolv.conf.
fn dns_host(dir: &tempfile::TempDir, extra: &str) -> TestHost {
    let resolv = dir.path().join("resolv.conf");
    if !resolv.exists() {
        std::fs::write(&resolv, "").unwrap();
    }
    TestHost::new(&format!(
        "[dns]\nresolv_conf = \"{}\"\nresolved_resolv_conf = \"{}\"\n{extra}",
        resolv.display(),
        dir.path().join("resolved.conf").display()
    ))
}

fn gw(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn dns_network(h: &TestHost, subnet: &str, extra: Value) -> String {
    let name = tag("dn");
    let mut body = json!({"name": name, "subnet": subnet, "dns": true});
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    h.create_network(body);
    name
}

fn metrics(h: &TestHost) -> String {
    let r = h.client().request("GET", "/metrics", None).expect("scrape");
    String::from_utf8(r.body).expect("text")
}

fn sh_out(args: &[&str]) -> String {
    let o = Command::new(args[0]).args(&args[1..]).output().unwrap();
    String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
}

#[test]
fn rest_names_resolve_and_follow_attach_detach_restart_and_reclaim() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = dns_host(&dir, "");
    let net = dns_network(&h, "10.140.0.0/24", json!({}));
    let g = gw("10.140.0.1");
    let web = container("dw");
    let cli = container("dc");
    let ep = h.attach(
        &net,
        &web,
        json!({"name": "web", "aliases": ["www", "Api.v1"]}),
    );
    assert_eq!(
        ep["dns"],
        json!({"nameservers": ["10.140.0.1"], "search": ["dns.shimnet"]}),
        "the attach reply announces the resolver"
    );
    assert_eq!(ep["names"], json!(["web", "www", "Api.v1"]));
    let cep = h.attach(&net, &cli, json!({"name": "client"}));
    let web_ip = ip_of(&ep);
    let p = cli.path();

    // Bare, under the domain, aliases, any case, the short id; AAAA is NODATA; PTR; TCP.
    assert_eq!(ask_a(p, g, "web.").addrs(), [web_ip.as_str()]);
    assert_eq!(ask_a(p, g, "WWW.dns.shimnet.").addrs(), [web_ip.as_str()]);
    assert_eq!(ask_a(p, g, "api.v1.").addrs(), [web_ip.as_str()]);
    let short: String = web.name().chars().take(12).collect();
    assert_eq!(ask_a(p, g, &format!("{short}.")).addrs(), [web_ip.as_str()]);
    assert_eq!(ask(p, g, "web.", RecordType::AAAA), Answer::NoData);
    assert_eq!(ask_a(p, g, "nope."), Answer::NxDomain);
    assert_eq!(ask_a(p, g, "nope.dns.shimnet."), Answer::NxDomain);
    let o: Vec<&str> = web_ip.split('.').collect();
    let rev = format!("{}.{}.{}.{}.in-addr.arpa.", o[3], o[2], o[1], o[0]);
    assert_eq!(
        ask(p, g, &rev, RecordType::PTR).addrs(),
        ["web.dns.shimnet."]
    );
    assert_eq!(
        ask(p, g, "250.0.140.10.in-addr.arpa.", RecordType::PTR),
        Answer::NxDomain
    );
    assert_eq!(
        ask_tcp(p, g, "www.", RecordType::A).addrs(),
        [web_ip.as_str()]
    );

    // glibc in the container, configured from the attach reply's `dns`: resolves and reaches.
    let _rc = NetnsResolvConf::from_reply(cli.name(), &cep["dns"]);
    assert_eq!(getent(cli.name(), "www").as_deref(), Some(web_ip.as_str()));
    assert!(ping_name(cli.name(), "web"), "ping web from the client");

    // The host queries the gateway directly: dig and busybox nslookup from the host namespace.
    let d = sh_out(&[
        "ip",
        "netns",
        "exec",
        h.ns.name(),
        "dig",
        "+short",
        "@10.140.0.1",
        "web",
    ]);
    assert_eq!(d.trim(), web_ip, "dig from the host: {d}");
    let n = sh_out(&[
        "ip",
        "netns",
        "exec",
        h.ns.name(),
        "busybox",
        "nslookup",
        "web.dns.shimnet",
        "10.140.0.1",
    ]);
    assert!(n.contains(&web_ip), "busybox nslookup from the host: {n}");

    // The names view.
    let v = h.call("GET", &format!("/v1/networks/{net}/names"), None);
    assert_eq!(v["dns"], true);
    assert_eq!(v["domain"], "dns.shimnet");
    let names: Vec<&str> = v["names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    for n in ["web", "www", "api.v1", "client", short.as_str()] {
        assert!(names.contains(&n), "{n} in {names:?}");
    }
    assert!(v["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .all(|l| l["serving"] == true && l["address"] == "10.140.0.1:53"));
    let out = Command::new(env!("CARGO_BIN_EXE_shimnetctl"))
        .args([
            "--socket",
            h.socket.to_str().unwrap(),
            "network",
            "names",
            &net,
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("listening on 10.140.0.1:53/udp") && text.contains(&web_ip),
        "{text}"
    );

    // kill -9 and start again: the names come back from the store.
    h.stop_with(nix::sys::signal::Signal::SIGKILL);
    h.start();
    assert_eq!(ask_a(p, g, "web.").addrs(), [web_ip.as_str()]);

    // Detached: gone at once.
    h.detach(&net, web.name());
    assert_eq!(ask_a(p, g, "web."), Answer::NxDomain);
    assert_eq!(ask_a(p, g, "www."), Answer::NxDomain);
    assert_eq!(ask(p, g, &rev, RecordType::PTR), Answer::NxDomain);

    // Reclaimed (its namespace vanished): gone after reconciliation. Asked from the host.
    let cli_name = cli.name().to_string();
    drop(cli);
    assert!(!std::path::Path::new(&format!("/run/netns/{cli_name}")).exists());
    h.call("POST", "/v1/reconcile", None);
    assert_eq!(ask_a(h.ns.path(), g, "client."), Answer::NxDomain);
}

#[test]
fn names_are_isolated_between_networks() {
    let dir = tempfile::tempdir().unwrap();
    let h = dns_host(&dir, "");
    let a = dns_network(&h, "10.141.0.0/24", json!({}));
    let b = dns_network(&h, "10.141.1.0/24", json!({}));
    let plain = tag("dp");
    h.create_network(json!({"name": plain, "subnet": "10.141.2.0/24"}));
    let (ga, gb) = (gw("10.141.0.1"), gw("10.141.1.1"));
    let ca = container("da");
    let cb = container("db");
    let both = container("dab");
    let cp = container("dp");
    let ea = h.attach(&a, &ca, json!({"name": "alpha"}));
    let eb = h.attach(&b, &cb, json!({"name": "beta"}));
    let both_a = h.attach(&a, &both, json!({"name": "both"}));
    let both_b = h.attach(&b, &both, json!({"name": "both", "ifname": "eth1"}));
    let ep = h.attach(&plain, &cp, json!({"name": "plain"}));
    assert!(
        ep.get("dns").is_none(),
        "no resolver announced without dns: {ep}"
    );

    assert_eq!(ask_a(ca.path(), ga, "alpha.").addrs(), [ip_of(&ea)]);
    assert_eq!(
        ask_a(ca.path(), ga, "beta."),
        Answer::NxDomain,
        "B's name on A"
    );
    assert_eq!(
        ask_a(cb.path(), gb, "alpha."),
        Answer::NxDomain,
        "A's name on B"
    );
    assert_eq!(ask_a(cb.path(), gb, "beta.").addrs(), [ip_of(&eb)]);
    // A container on both networks gets each network's address from each server.
    assert_eq!(ask_a(ca.path(), ga, "both.").addrs(), [ip_of(&both_a)]);
    assert_eq!(ask_a(cb.path(), gb, "both.").addrs(), [ip_of(&both_b)]);
    assert_eq!(ask_a(both.path(), gb, "beta.").addrs(), [ip_of(&eb)]);
    // ...and the names of every network it is attached to from either server (a runtime lists
    // both gateways; the first answers), while a container on A alone never sees B's names.
    assert_eq!(ask_a(both.path(), ga, "beta.").addrs(), [ip_of(&eb)]);
    assert_eq!(
        ask_a(both.path(), gb, "alpha.dns.shimnet.").addrs(),
        [ip_of(&ea)]
    );
    assert_eq!(ask_a(ca.path(), ga, "beta."), Answer::NxDomain);
    // Asking the other network's server directly: refused (source outside its subnet).
    assert_eq!(
        ask_a(ca.path(), gb, "beta."),
        Answer::Code(ResponseCode::Refused)
    );
    assert_eq!(
        ask_tcp(ca.path(), gb, "beta.", RecordType::A),
        Answer::Code(ResponseCode::Refused)
    );
    // A network without dns has no server at all, and says so.
    assert_eq!(
        ask_a(cp.path(), gw("10.141.2.1"), "plain."),
        Answer::Timeout
    );
    let v = h.call("GET", &format!("/v1/networks/{plain}/names"), None);
    assert_eq!(
        (v["dns"].clone(), v["names"].clone()),
        (json!(false), json!([]))
    );
    // Only the dns networks' gateways are bound, and never a wildcard.
    let ss = sh_out(&["ip", "netns", "exec", h.ns.name(), "ss", "-Hlnu"]);
    let port53: Vec<&str> = ss.lines().filter(|l| l.contains(":53 ")).collect();
    assert_eq!(port53.len(), 2, "{ss}");
    assert!(port53
        .iter()
        .all(|l| l.contains("10.141.0.1:53") || l.contains("10.141.1.1:53")));
    let ss = sh_out(&["ip", "netns", "exec", h.ns.name(), "ss", "-Hlnt"]);
    assert!(
        !ss.contains("0.0.0.0:53") && !ss.contains("*:53") && !ss.contains("[::]:53"),
        "{ss}"
    );
}

#[test]
fn internal_network_resolves_its_names_and_forwards_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let h = dns_host(&dir, "");
    let Some(up) = Dnsmasq::start(
        h.outside.name(),
        h.outside_ip,
        &[("up.example", "192.0.2.10")],
    ) else {
        return;
    };
    std::fs::write(
        dir.path().join("resolv.conf"),
        format!("nameserver {}\n", h.outside_ip),
    )
    .unwrap();
    let internal = dns_network(&h, "10.142.0.0/24", json!({"internal": true}));
    let open = dns_network(&h, "10.142.1.0/24", json!({}));
    let ci = container("di");
    let cn = container("dn");
    let ei = h.attach(&internal, &ci, json!({"name": "inner"}));
    h.attach(&open, &cn, json!({"name": "outer"}));
    let (gi, gn) = (gw("10.142.0.1"), gw("10.142.1.1"));

    assert_eq!(ask_a(ci.path(), gi, "inner.").addrs(), [ip_of(&ei)]);
    assert_eq!(ask_a(ci.path(), gi, "nothere."), Answer::NxDomain);
    assert_eq!(
        ask_a(ci.path(), gi, "up.example."),
        Answer::Code(ResponseCode::Refused),
        "internal: not forwarded"
    );
    assert_eq!(
        ask_a(ci.path(), gi, "outer."),
        Answer::NxDomain,
        "another network's name"
    );
    // The same daemon forwards for the other network.
    assert_eq!(ask_a(cn.path(), gn, "up.example.").addrs(), ["192.0.2.10"]);
    let v = h.call("GET", &format!("/v1/networks/{internal}/names"), None);
    assert_eq!(
        (v["internal"].clone(), v["upstreams"].clone()),
        (json!(true), json!([]))
    );
    let v = h.call("GET", &format!("/v1/networks/{open}/names"), None);
    assert_eq!(v["upstreams"], json!([format!("{}:53", h.outside_ip)]));
    drop(up);
}

#[test]
fn forwarding_failover_resolv_conf_changes_and_servfail_when_upstreams_fail() {
    let dir = tempfile::tempdir().unwrap();
    let h = dns_host(
        &dir,
        "upstream_timeout_ms = 400\nforward_timeout_ms = 1000\n",
    );
    // Three upstream addresses inside the outside namespace (reached through the host's default
    // route); each dnsmasq serves one record with its own answer.
    for a in ["10.143.9.53", "10.143.9.54", "10.143.9.55"] {
        sh(&[
            "ip",
            "-n",
            h.outside.name(),
            "addr",
            "add",
            &format!("{a}/32"),
            "dev",
            "lo",
        ]);
    }
    let start = |ip: &str, answer: &str| {
        Dnsmasq::start(
            h.outside.name(),
            ip.parse().unwrap(),
            &[("up.example", answer)],
        )
    };
    let Some(mut d1) = start("10.143.9.53", "192.0.2.10") else {
        return;
    };
    let d2 = start("10.143.9.54", "192.0.2.20").unwrap();
    let d3 = start("10.143.9.55", "192.0.2.30").unwrap();
    let resolv = dir.path().join("resolv.conf");
    let set_resolv = |text: &str| {
        // Replaced, not rewritten in place: a new inode, as resolvconf tools do.
        let tmp = dir.path().join("resolv.new");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &resolv).unwrap();
    };
    set_resolv("nameserver 10.143.9.53\nnameserver 10.143.9.54\n");
    let net = dns_network(&h, "10.143.0.0/24", json!({}));
    let c = container("df");
    h.attach(&net, &c, json!({"name": "local"}));
    let g = gw("10.143.0.1");
    let p = c.path();
    let eventually_answer = |want: &str| {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let a = ask_a(p, g, "up.example.");
            if a == Answer::Records(vec![want.to_string()]) {
                return;
            }
            assert!(Instant::now() < deadline, "never {want}, last {a:?}");
            std::thread::sleep(Duration::from_millis(200));
        }
    };

    assert_eq!(ask_a(p, g, "up.example.").addrs(), ["192.0.2.10"]);
    assert_eq!(
        ask_tcp(p, g, "up.example.", RecordType::A).addrs(),
        ["192.0.2.10"]
    );
    assert_eq!(
        ask_a(p, g, "local.").addrs().len(),
        1,
        "local names never forwarded"
    );

    // The first upstream goes silent: the second answers after one attempt timeout, and the
    // next query does not wait at all (the silent one is tried last).
    d1.signal(nix::sys::signal::Signal::SIGSTOP);
    let t = Instant::now();
    assert_eq!(ask_a(p, g, "up.example.").addrs(), ["192.0.2.20"]);
    let first = t.elapsed();
    let t = Instant::now();
    assert_eq!(ask_a(p, g, "up.example.").addrs(), ["192.0.2.20"]);
    let second = t.elapsed();
    println!("failover: first query {first:?}, next {second:?}");
    assert!(first >= Duration::from_millis(400), "{first:?}");
    assert!(second < first, "{second:?} vs {first:?}");
    d1.signal(nix::sys::signal::Signal::SIGCONT);

    // resolv.conf replaced: followed within about a second, no restart.
    set_resolv("nameserver 10.143.9.55\n");
    eventually_answer("192.0.2.30");
    // Only systemd-resolved's stub listed: resolved's own upstream list is used.
    std::fs::write(dir.path().join("resolved.conf"), "nameserver 10.143.9.54\n").unwrap();
    set_resolv("nameserver 127.0.0.53\noptions edns0 trust-ad\n");
    eventually_answer("192.0.2.20");

    // Upstream down (its port closed): SERVFAIL at once.
    set_resolv("nameserver 10.143.9.53\n");
    eventually_answer("192.0.2.10");
    d1.stop();
    let t = Instant::now();
    assert_eq!(
        ask_a(p, g, "up.example."),
        Answer::Code(ResponseCode::ServFail)
    );
    let refused = t.elapsed();
    // Upstream silent: SERVFAIL within the forward deadline, then at once while it is down.
    set_resolv("nameserver 10.143.9.54\n");
    eventually_answer("192.0.2.20");
    d2.signal(nix::sys::signal::Signal::SIGSTOP);
    let t = Instant::now();
    assert_eq!(
        ask_a(p, g, "up.example."),
        Answer::Code(ResponseCode::ServFail)
    );
    let silent = t.elapsed();
    let t = Instant::now();
    assert_eq!(
        ask_a(p, g, "up.example."),
        Answer::Code(ResponseCode::ServFail)
    );
    let silent_again = t.elapsed();
    println!("servfail: port closed {refused:?}, silent {silent:?}, silent again {silent_again:?}");
    assert!(refused < Duration::from_secs(1), "{refused:?}");
    assert!(
        silent < Duration::from_millis(1900),
        "bounded by the deadline: {silent:?}"
    );
    assert!(
        silent_again < Duration::from_millis(400),
        "{silent_again:?}"
    );
    // Local names are unaffected.
    assert_eq!(ask_a(p, g, "local.").addrs().len(), 1);
    d2.signal(nix::sys::signal::Signal::SIGCONT);

    let m = metrics(&h);
    for needle in [
        "shimnet_dns_upstream_failures_total{upstream=\"10.143.9.53:53\",reason=\"timeout\"}",
        "shimnet_dns_upstream_failures_total{upstream=\"10.143.9.53:53\",reason=\"error\"}",
        &format!("shimnet_dns_forwarded_total{{network=\"{net}\"}}"),
        &format!("shimnet_dns_queries_total{{network=\"{net}\",result=\"servfail\"}}"),
    ] {
        assert!(m.contains(needle), "{needle} missing:\n{m}");
    }
    drop(d3);
}

/// One background query: when it was sent and answered, and what it got.
struct Seen {
    sent: Instant,
    got: Instant,
    answer: Answer,
}

#[test]
fn churn_loses_no_query_and_never_answers_stale() {
    let dir = tempfile::tempdir().unwrap();
    let h = dns_host(&dir, "");
    let net = dns_network(&h, "10.144.0.0/24", json!({}));
    let g = gw("10.144.0.1");
    let anchor = container("dk");
    let client = container("dq");
    let ea = h.attach(&net, &anchor, json!({"name": "anchor"}));
    h.attach(&net, &client, json!({"name": "client"}));
    let anchor_ip = ip_of(&ea);

    // A client asks continuously for the stable name and for the churning one.
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Vec::<(String, Seen)>::new()));
    let bg = {
        let (stop, seen, path) = (stop.clone(), seen.clone(), client.path().to_path_buf());
        std::thread::spawn(move || {
            run_in(&path, move || {
                let mut id = 0u16;
                while !stop.load(Ordering::Relaxed) {
                    for name in ["anchor.", "churn."] {
                        id = id.wrapping_add(1);
                        let q = query_bytes(name, RecordType::A, id);
                        let sent = Instant::now();
                        let reply = udp_exchange(g, &q, Duration::from_secs(2));
                        let answer = match reply {
                            Some(b) => {
                                let m = Message::from_vec(&b).unwrap();
                                assert_eq!(m.id, id);
                                answer_of(&m)
                            }
                            None => Answer::Timeout,
                        };
                        seen.lock().unwrap().push((
                            name.to_string(),
                            Seen {
                                sent,
                                got: Instant::now(),
                                answer,
                            },
                        ));
                    }
                }
            })
            .unwrap()
        })
    };

    // 100 attach/detach cycles of a container named "churn"; right after each call the name
    // must say exactly what the records say.
    struct Cycle {
        ip: String,
        attach_started: Instant,
        detach_done: Instant,
    }
    let mut cycles = Vec::new();
    let c = container("dx");
    for i in 0..100 {
        let attach_started = Instant::now();
        let ep = h.attach(&net, &c, json!({"name": "churn"}));
        let ip = ip_of(&ep);
        assert_eq!(
            ask_a(client.path(), g, "churn.").addrs(),
            [ip.as_str()],
            "cycle {i}: after attach"
        );
        h.detach(&net, c.name());
        let detach_done = Instant::now();
        assert_eq!(
            ask_a(client.path(), g, "churn."),
            Answer::NxDomain,
            "cycle {i}: after detach"
        );
        cycles.push(Cycle {
            ip,
            attach_started,
            detach_done,
        });
    }
    stop.store(true, Ordering::Relaxed);
    bg.join().unwrap();

    let seen = seen.lock().unwrap();
    let (mut anchors, mut churns, mut lost, mut churn_hits) = (0, 0, 0, 0);
    for (name, s) in seen.iter() {
        match (name.as_str(), &s.answer) {
            (_, Answer::Timeout) => lost += 1,
            ("anchor.", a) => {
                anchors += 1;
                assert_eq!(a, &Answer::Records(vec![anchor_ip.clone()]), "anchor");
            }
            (_, Answer::NxDomain) => churns += 1,
            (_, Answer::Records(r)) => {
                churns += 1;
                churn_hits += 1;
                assert_eq!(r.len(), 1, "one churn container at a time: {r:?}");
                // Stale = the address of a cycle whose detach had finished before the query
                // was sent (and no later cycle with that address overlaps the query).
                let live = cycles
                    .iter()
                    .any(|c| c.ip == r[0] && c.attach_started <= s.got && s.sent <= c.detach_done);
                assert!(live, "stale answer {r:?}");
            }
            (_, other) => panic!("unexpected answer {other:?}"),
        }
    }
    println!(
        "churn: 100 cycles; background queries: {anchors} anchor, {churns} churn ({churn_hits} positive), {lost} lost"
    );
    assert_eq!(lost, 0, "queries lost during churn");
    assert!(anchors > 100, "the client kept asking ({anchors})");
}

#[test]
fn hostile_input_and_floods_leave_every_door_serving() {
    let dir = tempfile::tempdir().unwrap();
    let h = dns_host(&dir, "");
    let net = dns_network(&h, "10.145.0.0/24", json!({}));
    let g = gw("10.145.0.1");
    let web = container("dw");
    let cl = container("dh");
    let ew = h.attach(&net, &web, json!({"name": "web"}));
    h.attach(&net, &cl, json!({"name": "cl"}));
    let web_ip = ip_of(&ew);
    let ok = |p: &std::path::Path| assert_eq!(ask_a(p, g, "web.").addrs(), [web_ip.as_str()]);

    // Malformed and oversized datagrams: FORMERR where a header can be read, never a crash.
    let replies = run_in(cl.path(), move || {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut out = Vec::new();
        let mut send = |p: Vec<u8>| out.push(udp_exchange(g, &p, Duration::from_millis(300)));
        send(vec![]);
        send(vec![0xab; 11]);
        let mut q = query_bytes("web.", RecordType::A, 0x4242);
        q[2] |= 0x80; // a response: never answered
        send(q);
        let mut big = query_bytes("web.", RecordType::A, 0x4343);
        big.resize(5000, 0);
        send(big);
        let mut counts = query_bytes("web.", RecordType::A, 0x4444);
        counts[5] = 50; // 50 questions claimed, one present
        send(counts);
        // A compression pointer to itself.
        let mut looped = vec![0x45, 0x45, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        looped.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        send(looped);
        // Random junk, sent in one go; whatever comes back must decode.
        let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        for _ in 0..500 {
            let n = (rnd() % 600) as usize;
            let junk: Vec<u8> = (0..n).map(|_| rnd() as u8).collect();
            let _ = s.send_to(&junk, (g, 53));
        }
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut buf = [0u8; 4096];
        while let Ok(n) = s.recv(&mut buf) {
            out.push(Some(buf[..n].to_vec()));
        }
        out
    })
    .unwrap();
    let decoded: Vec<Option<Message>> = replies
        .iter()
        .map(|r| {
            r.as_ref()
                .map(|b| Message::from_vec(b).expect("every reply decodes"))
        })
        .collect();
    assert!(
        decoded[0].is_none() && decoded[1].is_none(),
        "runts dropped"
    );
    assert!(decoded[2].is_none(), "a response is never answered");
    for (i, id) in [(3, 0x4343), (4, 0x4444), (5, 0x4545)] {
        let m = decoded[i].as_ref().unwrap_or_else(|| panic!("reply {i}"));
        assert_eq!(
            (m.id, m.response_code),
            (id, ResponseCode::FormErr),
            "reply {i}"
        );
    }
    ok(cl.path());

    // TCP: absurd lengths close the connection; idle connections do not block UDP.
    let closed = run_in(cl.path(), move || {
        let mut results = Vec::new();
        for len in [0u16, 2, 0xffff] {
            let mut s = std::net::TcpStream::connect((g, 53)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            use std::io::{Read, Write};
            s.write_all(&len.to_be_bytes()).unwrap();
            let mut b = [0u8; 1];
            results.push(matches!(s.read(&mut b), Ok(0) | Err(_)));
        }
        results
    })
    .unwrap();
    assert_eq!(closed, [true, true, true]);
    let idle = run_in(cl.path(), move || {
        (0..100)
            .filter_map(|_| std::net::TcpStream::connect((g, 53)).ok())
            .collect::<Vec<_>>()
    })
    .unwrap();
    ok(cl.path());
    drop(idle);

    // From outside the network's subnet (the outside namespace, routed through the host):
    // refused over UDP and TCP.
    sh(&[
        "ip",
        "-n",
        h.outside.name(),
        "route",
        "add",
        "10.145.0.0/24",
        "via",
        &h.host_ip.to_string(),
    ]);
    assert_eq!(
        ask_a(h.outside.path(), g, "web."),
        Answer::Code(ResponseCode::Refused)
    );
    assert_eq!(
        ask_tcp(h.outside.path(), g, "web.", RecordType::A),
        Answer::Code(ResponseCode::Refused)
    );

    // A flood from inside and from outside for 3 s while the REST API is used and another
    // container keeps asking (as a resolver does: 300 ms per try).
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let received = Arc::new(AtomicUsize::new(0));
    let mut flooders = Vec::new();
    for (i, path) in [cl.path(), h.outside.path()].into_iter().enumerate() {
        let (stop, sent, received, path) = (
            stop.clone(),
            sent.clone(),
            received.clone(),
            path.to_path_buf(),
        );
        flooders.push(std::thread::spawn(move || {
            run_in(&path, move || {
                let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
                s.set_nonblocking(true).unwrap();
                let names = ["web.", "nothere.", "example.invalid."];
                let mut buf = [0u8; 2048];
                let (mut n, mut got) = (0usize, 0usize);
                while !stop.load(Ordering::Relaxed) {
                    // Bursts of 20 per millisecond: about 20,000 queries per second per flooder,
                    // ten times a source's budget, without starving this 2-core machine.
                    for _ in 0..20 {
                        let q = query_bytes(names[n % names.len()], RecordType::A, (n + i) as u16);
                        if s.send_to(&q, (g, 53)).is_ok() {
                            n += 1;
                        }
                    }
                    while s.recv(&mut buf).is_ok() {
                        got += 1;
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                sent.fetch_add(n, Ordering::Relaxed);
                received.fetch_add(got, Ordering::Relaxed);
            })
            .unwrap()
        }));
    }
    let probe = container("dr");
    h.attach(&net, &probe, json!({"name": "probe"}));
    let prober = {
        let (stop, path) = (stop.clone(), probe.path().to_path_buf());
        std::thread::spawn(move || {
            run_in(&path, move || {
                let (mut asked, mut answered) = (0, 0);
                while !stop.load(Ordering::Relaxed) {
                    asked += 1;
                    let q = query_bytes("web.", RecordType::A, asked);
                    if udp_exchange(g, &q, Duration::from_millis(300)).is_some() {
                        answered += 1;
                    }
                }
                (asked, answered)
            })
            .unwrap()
        })
    };
    let extra = container("de");
    let mut rest = Vec::new();
    let flood_end = Instant::now() + Duration::from_secs(3);
    while Instant::now() < flood_end {
        let t = Instant::now();
        h.call("GET", "/v1/networks", None);
        rest.push(t.elapsed());
        let t = Instant::now();
        h.attach(&net, &extra, json!({"name": "extra"}));
        h.detach(&net, extra.name());
        rest.push(t.elapsed());
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    for f in flooders {
        f.join().unwrap();
    }
    let (asked, answered) = prober.join().unwrap();
    rest.sort();
    println!(
        "flood: {} queries sent in 3 s, {} replies; REST calls {} (median {:?}, max {:?}); probe container: {answered}/{asked} queries answered",
        sent.load(Ordering::Relaxed),
        received.load(Ordering::Relaxed),
        rest.len(),
        rest[rest.len() / 2],
        rest[rest.len() - 1],
    );
    assert!(
        rest[rest.len() - 1] < Duration::from_secs(5),
        "REST stalled: {:?}",
        rest.last()
    );
    assert!(answered > 0, "DNS still answered others during the flood");
    let limited = count(&metrics(&h), &net, "ratelimited");
    println!("flood: {limited} queries over their source's budget dropped unread");
    let (sent, received) = (
        sent.load(Ordering::Relaxed),
        received.load(Ordering::Relaxed),
    );
    assert!(
        limited > 0.0 || received * 10 >= sent * 9,
        "the server either kept up or held the flooders to their budget"
    );
    // The flooding container's budget is back in the next one-second window.
    std::thread::sleep(Duration::from_millis(1100));
    ok(cl.path());
    h.call("GET", "/v1/health", None);
    let m = metrics(&h);
    for r in ["formerr", "refused", "answer"] {
        assert!(count(&m, &net, r) > 0.0, "{r} counted");
    }
}

/// `shimnet_dns_queries_total{network=net,result=r}` in a scrape.
fn count(m: &str, net: &str, r: &str) -> f64 {
    let line = format!("shimnet_dns_queries_total{{network=\"{net}\",result=\"{r}\"}}");
    m.lines()
        .find(|l| l.starts_with(&line))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn cni_plugin_dns_enabled_names_aliases_and_result_dns() {
    let dir = tempfile::tempdir().unwrap();
    let h = dns_host(&dir, "");
    let name = tag("dc");
    let mut conf = cni_support::conf("1.0.0", &name, &h.socket, &name, "10.146.0.0/24");
    conf["dnsEnabled"] = json!(true);
    conf["capabilities"] = json!({"aliases": true});
    conf["dns"] = json!({"options": ["ndots:1"]});
    let web = container("cw");
    let cli = container("cc");
    let mut with_aliases = conf.clone();
    with_aliases["runtimeConfig"] = json!({"aliases": {name.clone(): ["webalias"]}});
    let mut call = cni_support::Call::new(web.name(), &web.path().display().to_string());
    call.args = "IgnoreUnknown=1;K8S_POD_NAME=web".into();
    let o = cni_support::shimnet("ADD", &call, &with_aliases);
    assert_eq!(o.code, 0, "{o:?}");
    assert_eq!(
        o.out["dns"],
        json!({"nameservers": ["10.146.0.1"], "search": ["dns.shimnet"], "options": ["ndots:1"]})
    );
    let web_ip = o.out["ips"][0]["address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let mut ccall = cni_support::Call::new(cli.name(), &cli.path().display().to_string());
    ccall.args = "K8S_POD_NAME=client".into();
    let co = cni_support::shimnet("ADD", &ccall, &conf);
    assert_eq!(co.code, 0, "{co:?}");
    let _rc = NetnsResolvConf::from_reply(cli.name(), &co.out["dns"]);
    assert_eq!(getent(cli.name(), "web").as_deref(), Some(web_ip.as_str()));
    assert_eq!(
        getent(cli.name(), "webalias").as_deref(),
        Some(web_ip.as_str())
    );
    assert!(ping_name(cli.name(), "web"));
    let g = gw("10.146.0.1");
    let short: String = web.name().chars().take(12).collect();
    assert_eq!(
        ask_a(cli.path(), g, &format!("{short}.")).addrs(),
        [web_ip.as_str()]
    );
    // DEL: the names go with the attachment.
    let d = cni_support::shimnet("DEL", &call, &conf);
    assert_eq!(d.code, 0, "{d:?}");
    assert_eq!(ask_a(cli.path(), g, "web."), Answer::NxDomain);
    assert_eq!(ask_a(cli.path(), g, "webalias."), Answer::NxDomain);
    assert_eq!(getent(cli.name(), "web"), None);
    // The same network without dnsEnabled is a different network: refused, naming dns.
    let mut off = conf.clone();
    off.as_object_mut().unwrap().remove("dnsEnabled");
    let other = container("co");
    let o = cni_support::shimnet(
        "ADD",
        &cni_support::Call::new(other.name(), &other.path().display().to_string()),
        &off,
    );
    assert_ne!(o.code, 0);
    assert!(
        o.out["msg"].as_str().unwrap_or_default().contains("dns"),
        "{o:?}"
    );
}

#[test]
fn ipv6_gateway_serves_aaaa() {
    let dir = tempfile::tempdir().unwrap();
    let h = dns_host(&dir, "");
    let net = dns_network(&h, "10.147.0.0/24", json!({"subnet6": "fd00:147::/64"}));
    let a = container("d6");
    let b = container("d7");
    let ea = h.attach(&net, &a, json!({"name": "six"}));
    h.attach(&net, &b, json!({"name": "seven"}));
    let ip6 = ea["ipv6"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let v = h.call("GET", &format!("/v1/networks/{net}/names"), None);
    assert_eq!(
        v["listeners"].as_array().unwrap().len(),
        4,
        "UDP and TCP on both gateways"
    );
    // IPv6 duplicate address detection may hold the addresses for a moment.
    let g6: IpAddr = "fd00:147::1".parse().unwrap();
    eventually_for("AAAA over IPv6", Duration::from_secs(10), || {
        ask(b.path(), g6, "six.", RecordType::AAAA) == Answer::Records(vec![ip6.clone()])
    });
    assert_eq!(
        ask(b.path(), gw("10.147.0.1"), "six.", RecordType::AAAA).addrs(),
        [ip6.as_str()]
    );
}
