//! The service on loopback addresses and a free high port (no root needed).

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, RecordType};

use super::*;
use crate::answer::tests::query;

/// A port free for UDP and TCP on `ip`.
fn free_port(ip: &str) -> u16 {
    loop {
        let u = UdpSocket::bind((ip, 0)).unwrap();
        let port = u.local_addr().unwrap().port();
        if std::net::TcpListener::bind((ip, port)).is_ok() {
            return port;
        }
    }
}

fn service(dir: &tempfile::TempDir, port: u16) -> Dns {
    let conf = dir.path().join("resolv.conf");
    std::fs::write(&conf, "").unwrap();
    Dns::start(
        DnsConfig {
            port,
            resolv_conf: conf,
            resolved_conf: dir.path().join("none"),
            ..DnsConfig::default()
        },
        DnsMetrics::new(),
    )
    .unwrap()
}

fn network(ip: &str) -> NetworkDns {
    NetworkDns {
        name: "n1".into(),
        subnets: vec!["10.89.0.0/24".parse().unwrap()],
        listen: vec![ip.parse().unwrap()],
        internal: false,
    }
}

fn entry(id: &str, name: &str, ip: &str) -> Entry {
    Entry {
        id: id.into(),
        container: id.into(),
        names: vec![name.into()],
        ipv4: Some(ip.parse().unwrap()),
        ipv6: None,
    }
}

fn udp_ask(ip: &str, port: u16, name: &str) -> Option<Message> {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s.send_to(&query(name, RecordType::A).to_vec().unwrap(), (ip, port))
        .unwrap();
    let mut buf = [0u8; 2048];
    let n = s.recv(&mut buf).ok()?;
    Some(Message::from_vec(&buf[..n]).unwrap())
}

fn tcp_ask(ip: &str, port: u16, name: &str) -> Message {
    let mut s = TcpStream::connect((ip, port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let q = query(name, RecordType::A).to_vec().unwrap();
    s.write_all(&(q.len() as u16).to_be_bytes()).unwrap();
    s.write_all(&q).unwrap();
    let mut len = [0u8; 2];
    s.read_exact(&mut len).unwrap();
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut buf).unwrap();
    Message::from_vec(&buf).unwrap()
}

fn addr_of(m: &Message) -> Option<String> {
    m.answers.iter().find_map(|r| match &r.data {
        RData::A(a) => Some(a.0.to_string()),
        _ => None,
    })
}

#[test]
fn names_follow_entries_over_udp_and_tcp() {
    let dir = tempfile::tempdir().unwrap();
    let ip = "127.0.0.21";
    let port = free_port(ip);
    let dns = service(&dir, port);
    assert!(dns.set_network(network(ip)).is_empty());
    assert!(
        !dns.set_entry("other", entry("x", "web", "10.89.0.2")),
        "unknown network"
    );
    let m = udp_ask(ip, port, "web.").expect("a reply");
    assert_eq!(m.response_code, ResponseCode::NXDomain);

    assert!(dns.set_entry("n1", entry("a", "web", "10.89.0.2")));
    let m = udp_ask(ip, port, "web.dns.shimnet.").unwrap();
    assert_eq!(addr_of(&m).as_deref(), Some("10.89.0.2"));
    assert_eq!(
        addr_of(&tcp_ask(ip, port, "web.")).as_deref(),
        Some("10.89.0.2")
    );

    // Replaced, then removed: never the old address again.
    dns.set_entry("n1", entry("a", "web", "10.89.0.9"));
    assert_eq!(
        addr_of(&udp_ask(ip, port, "web.").unwrap()).as_deref(),
        Some("10.89.0.9")
    );
    dns.remove_entry("n1", "a");
    assert_eq!(
        udp_ask(ip, port, "web.").unwrap().response_code,
        ResponseCode::NXDomain
    );

    dns.set_entry("n1", entry("b", "db", "10.89.0.3"));
    let v = dns.view("n1").unwrap();
    assert_eq!(v.domain, "dns.shimnet");
    assert_eq!(v.names.len(), 1);
    assert_eq!(v.names[0].name, "db");
    assert_eq!(v.listeners.len(), 2);
    assert!(v.listeners.iter().all(|l| l.serving && l.error.is_none()));
    let a = dns.announce("n1").unwrap();
    assert_eq!(a.nameservers, vec![ip.parse::<IpAddr>().unwrap()]);
    assert_eq!(a.search, vec!["dns.shimnet".to_string()]);

    // Setting the same network again changes nothing; the names stay.
    assert!(dns.set_network(network(ip)).is_empty());
    assert_eq!(
        addr_of(&udp_ask(ip, port, "db.").unwrap()).as_deref(),
        Some("10.89.0.3")
    );

    // Removed: the sockets close.
    dns.remove_network("n1");
    assert!(dns.view("n1").is_none());
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        TcpStream::connect((ip, port)).is_err(),
        "TCP listener closed"
    );
}

#[test]
fn a_changed_address_list_moves_the_listeners_and_keeps_the_names() {
    let dir = tempfile::tempdir().unwrap();
    let (ip1, ip2) = ("127.0.0.23", "127.0.0.24");
    let port = free_port(ip1);
    let dns = service(&dir, port);
    dns.set_network(network(ip1));
    dns.set_entry("n1", entry("a", "web", "10.89.0.2"));
    assert!(dns.set_network(network(ip2)).is_empty());
    std::thread::sleep(Duration::from_millis(100));
    assert!(TcpStream::connect((ip1, port)).is_err());
    assert_eq!(
        addr_of(&udp_ask(ip2, port, "web.").unwrap()).as_deref(),
        Some("10.89.0.2")
    );
}

#[test]
fn a_taken_address_is_reported_and_bound_once_free() {
    let dir = tempfile::tempdir().unwrap();
    let ip = "127.0.0.25";
    let port = free_port(ip);
    let first = service(&dir, port);
    assert!(first.set_network(network(ip)).is_empty());
    let second = service(&dir, port);
    let errors = second.set_network(network(ip));
    assert_eq!(errors.len(), 2, "{errors:?}");
    let v = second.view("n1").unwrap();
    assert!(v.listeners.iter().all(|l| !l.serving && l.error.is_some()));
    drop(first);
    assert!(
        second.set_network(network(ip)).is_empty(),
        "bound on the next try"
    );
    second.set_entry("n1", entry("a", "web", "10.89.0.2"));
    assert_eq!(
        addr_of(&udp_ask(ip, port, "web.").unwrap()).as_deref(),
        Some("10.89.0.2")
    );
}

#[test]
fn a_bad_domain_is_refused() {
    let e = Dns::start(
        DnsConfig {
            domain: "bad domain".into(),
            ..DnsConfig::default()
        },
        DnsMetrics::new(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("bad domain"), "{e}");
}

#[test]
fn a_container_on_two_networks_resolves_both_from_either() {
    let dir = tempfile::tempdir().unwrap();
    let (ip1, ip2) = ("127.0.0.26", "127.0.0.27");
    let port = free_port(ip1);
    let dns = service(&dir, port);
    let net = |name: &str, ip: &str| NetworkDns {
        name: name.into(),
        subnets: vec!["127.0.0.0/8".parse().unwrap()],
        listen: vec![ip.parse().unwrap()],
        internal: true,
    };
    assert!(dns.set_network(net("a", ip1)).is_empty());
    assert!(dns.set_network(net("b", ip2)).is_empty());
    // The asking "container" has 127.0.0.1 on network a (the test's source address).
    let member = |net: &str, ip: &str| Entry {
        id: format!("{net}/client"),
        container: "client".into(),
        names: vec!["client".into()],
        ipv4: Some(ip.parse().unwrap()),
        ipv6: None,
    };
    dns.set_entry("a", member("a", "127.0.0.1"));
    dns.set_entry("b", entry("b/beta", "beta", "127.0.5.5"));
    assert_eq!(
        udp_ask(ip1, port, "beta.").unwrap().response_code,
        ResponseCode::NXDomain,
        "not attached to b: b's names stay hidden"
    );
    dns.set_entry("b", member("b", "127.0.5.1"));
    assert_eq!(
        addr_of(&udp_ask(ip1, port, "beta.").unwrap()).as_deref(),
        Some("127.0.5.5")
    );
    dns.remove_entry("b", "b/client");
    assert_eq!(
        udp_ask(ip1, port, "beta.").unwrap().response_code,
        ResponseCode::NXDomain
    );
}
