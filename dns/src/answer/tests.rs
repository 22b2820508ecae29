use std::net::Ipv4Addr;
use std::sync::Arc;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};

use super::*;
use crate::zone::tests::{net, sample, settings};
use crate::zone::Zone;

pub(crate) fn query(name: &str, t: RecordType) -> Message {
    let mut m = Message::new(0x1234, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.queries
        .push(Query::query(Name::from_ascii(name).unwrap(), t));
    m
}

fn ask(z: &Zone, m: &Message) -> (Message, QueryResult) {
    match respond(z, &m.to_vec().unwrap(), Transport::Udp) {
        Outcome::Reply(b, r) => (Message::from_vec(&b).unwrap(), r),
        other => panic!("expected a reply, got {other:?}"),
    }
}

fn a_records(m: &Message) -> Vec<Ipv4Addr> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect()
}

#[test]
fn local_name_is_answered_authoritatively_with_the_query_case() {
    let z = sample();
    let (m, r) = ask(&z, &query("WEB.dns.shimnet.", RecordType::A));
    assert_eq!(r, QueryResult::Answer);
    assert_eq!(m.id, 0x1234);
    assert_eq!(m.message_type, MessageType::Response);
    assert!(m.authoritative && m.recursion_desired && m.recursion_available);
    assert_eq!(m.response_code, ResponseCode::NoError);
    assert_eq!(a_records(&m), vec![Ipv4Addr::new(10, 89, 0, 2)]);
    assert_eq!(m.answers[0].name.to_ascii(), "WEB.dns.shimnet.");
    assert_eq!(m.answers[0].ttl, 5);
    assert_eq!(m.queries, query("WEB.dns.shimnet.", RecordType::A).queries);
    let (m, _) = ask(&z, &query("web.", RecordType::AAAA));
    assert!(matches!(m.answers[0].data, RData::AAAA(_)));
    let (m, _) = ask(&z, &query("shared.", RecordType::A));
    assert_eq!(a_records(&m).len(), 2);
}

#[test]
fn nodata_and_nxdomain() {
    let z = sample();
    let (m, r) = ask(&z, &query("db.dns.shimnet.", RecordType::AAAA));
    assert_eq!(
        (r, m.response_code),
        (QueryResult::NoData, ResponseCode::NoError)
    );
    assert!(m.answers.is_empty());
    assert_eq!(m.authorities.len(), 1, "SOA for negative caching");
    assert!(matches!(&m.authorities[0].data, RData::SOA(s) if s.minimum == 5));
    let (m, r) = ask(&z, &query("db.dns.shimnet.", RecordType::MX));
    assert_eq!(r, QueryResult::NoData);
    assert!(m.answers.is_empty());
    let (m, r) = ask(&z, &query("gone.dns.shimnet.", RecordType::A));
    assert_eq!(
        (r, m.response_code),
        (QueryResult::NxDomain, ResponseCode::NXDomain)
    );
    assert!(m.authoritative);
    assert_eq!(m.authorities[0].name.to_ascii(), "dns.shimnet.");
    let (m, r) = ask(&z, &query("gone.", RecordType::A));
    assert_eq!(
        (r, m.response_code),
        (QueryResult::NxDomain, ResponseCode::NXDomain)
    );
    assert!(m.authorities.is_empty(), "no zone above a bare name");
    let (m, r) = ask(&z, &query("dns.shimnet.", RecordType::SOA));
    assert_eq!(r, QueryResult::Answer);
    assert!(matches!(m.answers[0].data, RData::SOA(_)));
    let (_, r) = ask(&z, &query("dns.shimnet.", RecordType::A));
    assert_eq!(r, QueryResult::NoData);
}

#[test]
fn reverse_lookups() {
    let z = sample();
    let (m, r) = ask(&z, &query("2.0.89.10.in-addr.arpa.", RecordType::PTR));
    assert_eq!(r, QueryResult::Answer);
    assert!(matches!(&m.answers[0].data, RData::PTR(p) if p.0.to_ascii() == "web.dns.shimnet."));
    let (m, r) = ask(&z, &query("99.0.89.10.in-addr.arpa.", RecordType::PTR));
    assert_eq!(
        (r, m.response_code),
        (QueryResult::NxDomain, ResponseCode::NXDomain)
    );
    assert_eq!(m.authorities[0].name.to_ascii(), "0.89.10.in-addr.arpa.");
    assert!(matches!(
        respond(
            &z,
            &query("4.3.2.1.in-addr.arpa.", RecordType::PTR)
                .to_vec()
                .unwrap(),
            Transport::Udp
        ),
        Outcome::Forward(_)
    ));
}

#[test]
fn other_names_are_forwarded_or_refused_on_internal_networks() {
    let z = sample();
    let q = query("Example.COM.", RecordType::A);
    let bytes = q.to_vec().unwrap();
    let Outcome::Forward(f) = respond(&z, &bytes, Transport::Udp) else {
        panic!()
    };
    assert_eq!(f.raw, bytes);
    assert_eq!((f.id, f.max_reply, f.edns), (0x1234, 512, false));
    let sf = Message::from_vec(&servfail(&f)).unwrap();
    assert_eq!((sf.id, sf.response_code), (0x1234, ResponseCode::ServFail));
    assert_eq!(sf.queries, q.queries);

    let mut n = (*net()).clone();
    n.internal = true;
    let internal = Zone::empty(Arc::new(n), settings());
    let (m, r) = ask(&internal, &q);
    assert_eq!(
        (r, m.response_code),
        (QueryResult::Refused, ResponseCode::Refused)
    );
    assert!(!m.recursion_available);
    // Its own missing names are still NXDOMAIN.
    let (_, r) = ask(&internal, &query("web.", RecordType::A));
    assert_eq!(r, QueryResult::NxDomain);
}

#[test]
fn malformed_and_unusual_messages() {
    let z = sample();
    assert_eq!(respond(&z, &[], Transport::Udp), Outcome::Drop);
    assert_eq!(respond(&z, &[0u8; 11], Transport::Udp), Outcome::Drop);
    // A response is never answered.
    let mut resp = query("web.", RecordType::A);
    resp.metadata.message_type = MessageType::Response;
    assert_eq!(
        respond(&z, &resp.to_vec().unwrap(), Transport::Udp),
        Outcome::Drop
    );
    // Header claiming a question that is not there: FORMERR with the id.
    let mut junk = vec![0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    junk.extend_from_slice(&[0xff; 40]);
    let Outcome::Reply(b, QueryResult::FormErr) = respond(&z, &junk, Transport::Udp) else {
        panic!()
    };
    let m = Message::from_vec(&b).unwrap();
    assert_eq!((m.id, m.response_code), (0xabcd, ResponseCode::FormErr));
    // Two questions.
    let mut two = query("web.", RecordType::A);
    two.queries.push(Query::query(
        Name::from_ascii("db.").unwrap(),
        RecordType::A,
    ));
    assert_eq!(ask(&z, &two).1, QueryResult::FormErr);
    // No question.
    let mut none = query("web.", RecordType::A);
    none.queries.clear();
    assert_eq!(ask(&z, &none).1, QueryResult::FormErr);
    // Other opcodes.
    let mut st = query("web.", RecordType::A);
    st.metadata.op_code = OpCode::Status;
    assert_eq!(ask(&z, &st).1, QueryResult::NotImp);
    // Chaos class, zone transfers.
    let mut ch = query("version.bind.", RecordType::TXT);
    ch.queries[0].set_query_class(DNSClass::CH);
    assert_eq!(ask(&z, &ch).1, QueryResult::Refused);
    assert_eq!(
        ask(&z, &query("dns.shimnet.", RecordType::AXFR)).1,
        QueryResult::Refused
    );
    // EDNS version 1: BADVERS.
    let mut v1 = query("web.", RecordType::A);
    let mut e = Edns::new();
    e.set_version(1);
    v1.edns = Some(e);
    let (m, _) = ask(&z, &v1);
    // BADVERS shares code 16 with BADSIG, which is how it decodes.
    assert_eq!(u16::from(m.response_code), 16);
    // An odd label byte never matches a local name: forwarded, not answered.
    let mut odd = Message::new(1, MessageType::Query, OpCode::Query);
    odd.queries.push(Query::query(
        Name::from_labels(vec![b"we b".to_vec()]).unwrap(),
        RecordType::A,
    ));
    assert!(matches!(
        respond(&z, &odd.to_vec().unwrap(), Transport::Udp),
        Outcome::Forward(_)
    ));
}

#[test]
fn large_answers_are_truncated_over_udp_only() {
    let zone_of = |n: u8| {
        let entries: Vec<_> = (0..n)
            .map(|i| crate::zone::Entry {
                id: format!("e{i:03}"),
                container: format!("e{i:03}"),
                names: vec!["many".into()],
                ipv4: Some(Ipv4Addr::new(10, 89, 0, i + 2)),
                ipv6: None,
            })
            .collect::<Vec<_>>();
        Zone::build(net(), settings(), 1, entries.iter())
    };
    let z = zone_of(100);
    let q = query("many.", RecordType::A);
    let (m, r) = ask(&z, &q);
    assert!(m.truncation && m.answers.is_empty());
    assert_eq!(m.queries, q.queries);
    assert_eq!(r, QueryResult::Answer);
    let Outcome::Reply(b, _) = respond(&z, &q.to_vec().unwrap(), Transport::Tcp) else {
        panic!()
    };
    let m = Message::from_vec(&b).unwrap();
    assert!(!m.truncation);
    assert_eq!(a_records(&m).len(), 100);
    // With EDNS the client's (capped) payload size applies.
    let mut big = q.clone();
    let mut e = Edns::new();
    e.set_max_payload(4096);
    big.edns = Some(e);
    let (m, _) = ask(&z, &big);
    assert!(
        m.truncation,
        "100 A records (about 1.6 kB) do not fit in 1232 bytes"
    );
    assert!(m.edns.is_some());
    let (m, _) = ask(&zone_of(60), &big);
    assert!(!m.truncation, "60 A records fit in 1232 bytes");
    assert_eq!(a_records(&m).len(), 60);
}

#[test]
fn refusal_and_upstream_checks() {
    let q = query("web.", RecordType::A);
    let b = refuse(&q.to_vec().unwrap(), Transport::Udp).unwrap();
    let m = Message::from_vec(&b).unwrap();
    assert_eq!((m.id, m.response_code), (0x1234, ResponseCode::Refused));
    assert!(refuse(&[1, 2, 3], Transport::Udp).is_none());

    let z = sample();
    let Outcome::Forward(f) = respond(
        &z,
        &query("example.com.", RecordType::A).to_vec().unwrap(),
        Transport::Udp,
    ) else {
        panic!()
    };
    let mut up = query("EXAMPLE.com.", RecordType::A);
    up.metadata.id = 77;
    up.metadata.message_type = MessageType::Response;
    let bytes = up.to_vec().unwrap();
    assert_eq!(check_upstream(&f, 77, &bytes), UpstreamReply::Final);
    assert_eq!(check_upstream(&f, 78, &bytes), UpstreamReply::Foreign);
    up.metadata.response_code = ResponseCode::ServFail;
    assert_eq!(
        check_upstream(&f, 77, &up.to_vec().unwrap()),
        UpstreamReply::Failed
    );
    let mut other = query("example.org.", RecordType::A);
    other.metadata.id = 77;
    other.metadata.message_type = MessageType::Response;
    assert_eq!(
        check_upstream(&f, 77, &other.to_vec().unwrap()),
        UpstreamReply::Foreign
    );
    assert_eq!(check_upstream(&f, 77, &[0; 5]), UpstreamReply::Foreign);
    assert_eq!(&with_id(&bytes, 0x1234)[..2], &[0x12, 0x34]);
}

#[test]
fn names_of_the_other_networks_of_the_asking_container() {
    use std::cell::Cell;
    let z = sample();
    let mut n2 = (*net()).clone();
    n2.name = "n2".into();
    n2.subnets = vec!["10.90.0.0/24".parse().unwrap()];
    let other = Zone::build(
        Arc::new(n2),
        settings(),
        3,
        [crate::zone::Entry {
            id: "x".into(),
            container: "x".into(),
            names: vec!["beta".into()],
            ipv4: Some("10.90.0.5".parse().unwrap()),
            ipv6: None,
        }]
        .iter(),
    );
    let other = Arc::new(other);
    let calls = Cell::new(0);
    let also = || {
        calls.set(calls.get() + 1);
        vec![other.clone()]
    };
    let ask_in = |name: &str, t| match respond_in(
        &z,
        &also,
        &query(name, t).to_vec().unwrap(),
        Transport::Udp,
    ) {
        Outcome::Reply(b, r) => (Message::from_vec(&b).unwrap(), r),
        o => panic!("{o:?}"),
    };
    let (m, r) = ask_in("beta.dns.shimnet.", RecordType::A);
    assert_eq!(r, QueryResult::Answer);
    assert_eq!(a_records(&m), vec![Ipv4Addr::new(10, 90, 0, 5)]);
    let (m, _) = ask_in("5.0.90.10.in-addr.arpa.", RecordType::PTR);
    assert!(matches!(&m.answers[0].data, RData::PTR(p) if p.0.to_ascii() == "beta.dns.shimnet."));
    assert_eq!(ask_in("gamma.", RecordType::A).1, QueryResult::NxDomain);
    let before = calls.get();
    assert_eq!(ask_in("web.", RecordType::A).1, QueryResult::Answer);
    assert_eq!(calls.get(), before, "own names need no other table");
    // Without the other table: not known.
    assert_eq!(
        ask(&z, &query("beta.", RecordType::A)).1,
        QueryResult::NxDomain
    );
}
