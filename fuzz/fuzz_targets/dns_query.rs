//! The name service's query path: any datagram or TCP message a client can send, answered from a
//! network's name table (or refused, or marked for forwarding), and any reply an upstream can
//! send back. The first byte picks the transport and whether the network is internal; with its
//! top bit set the rest is a list of names to register instead (`name ip` per line), which must
//! then all resolve.
#![no_main]

use std::net::Ipv4Addr;
use std::sync::{Arc, OnceLock};

use hickory_proto::op::{Message, MessageType};
use libfuzzer_sys::fuzz_target;
use shimnet_dns::answer::{check_upstream, refuse, respond, servfail, Outcome, Transport};
use shimnet_dns::name;
use shimnet_dns::zone::{Entry, Lookup, NetworkDns, Zone, ZoneSettings};

fn network(internal: bool) -> Arc<NetworkDns> {
    Arc::new(NetworkDns {
        name: "fz".into(),
        subnets: vec!["10.89.0.0/24".parse().unwrap(), "fd00:89::/64".parse().unwrap()],
        listen: vec!["10.89.0.1".parse().unwrap()],
        internal,
    })
}

fn settings() -> Arc<ZoneSettings> {
    Arc::new(ZoneSettings {
        domain: "dns.shimnet".into(),
        ttl: 5,
    })
}

fn zones() -> &'static [Zone; 2] {
    static Z: OnceLock<[Zone; 2]> = OnceLock::new();
    Z.get_or_init(|| {
        let entries: Vec<Entry> = (2..40u8)
            .map(|i| Entry {
                id: format!("e{i}"),
                container: format!("c{i}"),
                names: vec![format!("c{i}"), "shared".into(), format!("a.b{i}")],
                ipv4: Some(Ipv4Addr::new(10, 89, 0, i)),
                ipv6: Some(format!("fd00:89::{i}").parse().unwrap()),
            })
            .collect();
        [false, true].map(|internal| Zone::build(network(internal), settings(), 1, entries.iter()))
    })
}

fn check_reply(input: &[u8], reply: &[u8], transport: Transport) {
    let m = Message::from_vec(reply).expect("every reply decodes");
    assert_eq!(m.message_type, MessageType::Response);
    assert_eq!(m.id, u16::from_be_bytes([input[0], input[1]]), "the client's id");
    if transport == Transport::Udp {
        assert!(reply.len() <= 1232, "UDP reply of {} bytes", reply.len());
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    if sel & 0x80 != 0 {
        let text = String::from_utf8_lossy(rest);
        let entries: Vec<Entry> = text
            .lines()
            .enumerate()
            .filter_map(|(i, l)| {
                let (n, ip) = l.split_once(' ')?;
                Some(Entry {
                    id: format!("{i}"),
                    container: format!("{i}"),
                    names: vec![n.to_string()],
                    ipv4: ip.parse().ok(),
                    ipv6: None,
                })
            })
            .collect();
        let z = Zone::build(network(false), settings(), 1, entries.iter());
        for e in &entries {
            let Some(key) = name::key(&e.names[0]) else { continue };
            // Registered without the domain, if it carries it: that form must not be the
            // domain itself or a reverse name (those are never registered).
            let rel = key.strip_suffix(".dns.shimnet").unwrap_or(&key);
            if rel == "dns.shimnet" || name::is_reverse(rel) || name::is_reverse(&key) {
                continue;
            }
            match z.lookup(&key) {
                Lookup::Host(a, _) => {
                    if let Some(ip) = e.ipv4 {
                        assert!(a.v4.contains(&ip), "{key} lost {ip}");
                    }
                }
                other => panic!("registered {key:?} looked up as {other:?}"),
            }
        }
        return;
    }
    let transport = if sel & 1 == 0 { Transport::Udp } else { Transport::Tcp };
    let internal = sel & 2 != 0;
    let z = &zones()[usize::from(internal)];
    match respond(z, rest, transport) {
        Outcome::Reply(reply, _) => check_reply(rest, &reply, transport),
        Outcome::Forward(f) => {
            assert!(!internal, "an internal network never forwards");
            assert_eq!(f.raw, rest);
            check_reply(rest, &servfail(&f), transport);
            // Whatever an upstream sends back is judged without panicking.
            let _ = check_upstream(&f, f.id, rest);
        }
        Outcome::Drop => assert!(rest.len() < 12 || rest[2] & 0x80 != 0, "dropped a query"),
    }
    if let Some(r) = refuse(rest, transport) {
        check_reply(rest, &r, transport);
    }
});
