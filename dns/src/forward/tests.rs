//! The forwarder against small responders on loopback addresses (the end-to-end tests use a real
//! dnsmasq in its own namespace).

use std::net::IpAddr;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::{rdata::A, RData, Record, RecordType};

use super::*;
use crate::answer::tests::query;
use crate::answer::{respond, Outcome};
use crate::zone::tests::sample;

/// What a fake upstream does with each query.
#[derive(Clone, Copy)]
enum Behaviour {
    /// Answers with 192.0.2.99, after first sending a reply with a wrong id.
    Answer,
    /// Answers SERVFAIL.
    ServFail,
    /// Reads and never answers.
    Silent,
}

async fn fake_udp(ip: &str, port: u16) -> (UdpSocket, u16) {
    let s = UdpSocket::bind((ip.parse::<IpAddr>().unwrap(), port))
        .await
        .unwrap();
    let port = s.local_addr().unwrap().port();
    (s, port)
}

fn serve(s: UdpSocket, b: Behaviour) {
    tokio::spawn(async move {
        let mut buf = [0u8; 4096];
        while let Ok((n, from)) = s.recv_from(&mut buf).await {
            let req = Message::from_vec(&buf[..n]).unwrap();
            let mut m = Message::response(req.id, req.op_code);
            m.queries = req.queries.clone();
            match b {
                Behaviour::Silent => continue,
                Behaviour::ServFail => m.metadata.response_code = ResponseCode::ServFail,
                Behaviour::Answer => {
                    let mut wrong = m.clone();
                    wrong.metadata.id = req.id.wrapping_add(1);
                    s.send_to(&wrong.to_vec().unwrap(), from).await.unwrap();
                    m.answers.push(Record::from_rdata(
                        req.queries[0].name().clone(),
                        60,
                        RData::A(A("192.0.2.99".parse().unwrap())),
                    ));
                }
            }
            s.send_to(&m.to_vec().unwrap(), from).await.unwrap();
        }
    });
}

/// A forwarder whose attempts time out after `attempt` ms and queries after `deadline` ms.
fn forwarder(
    dir: &tempfile::TempDir,
    servers: &[&str],
    port: u16,
    attempt: u64,
    deadline: u64,
) -> Forwarder {
    let conf = dir.path().join("resolv.conf");
    let text: String = servers
        .iter()
        .map(|s| format!("nameserver {s}\n"))
        .collect();
    std::fs::write(&conf, text).unwrap();
    let src = Source::new(conf, dir.path().join("none"), port);
    Forwarder::new(
        Arc::new(src),
        Duration::from_millis(attempt),
        Duration::from_millis(deadline),
        DnsMetrics::new(),
    )
}

fn forward_of(name: &str) -> Forward {
    let z = sample();
    match respond(
        &z,
        &query(name, RecordType::A).to_vec().unwrap(),
        Transport::Udp,
    ) {
        Outcome::Forward(f) => f,
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn answer_is_relayed_with_the_client_id_and_foreign_replies_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let (s, port) = fake_udp("127.0.0.2", 0).await;
    serve(s, Behaviour::Answer);
    let fw = forwarder(&dir, &["127.0.0.2"], port, 2000, 4000);
    let f = forward_of("example.com.");
    let (b, r) = fw.forward(&f, Transport::Udp).await;
    assert_eq!(r, QueryResult::Forwarded);
    let m = Message::from_vec(&b).unwrap();
    assert_eq!((m.id, m.message_type), (0x1234, MessageType::Response));
    assert!(
        matches!(m.answers[0].data, RData::A(a) if a.0 == "192.0.2.99".parse::<std::net::Ipv4Addr>().unwrap())
    );
}

#[tokio::test]
async fn failover_past_a_silent_and_a_failing_server() {
    let dir = tempfile::tempdir().unwrap();
    let (silent, port) = fake_udp("127.0.0.3", 0).await;
    serve(silent, Behaviour::Silent);
    let (failing, _) = fake_udp("127.0.0.4", port).await;
    serve(failing, Behaviour::ServFail);
    let (good, _) = fake_udp("127.0.0.5", port).await;
    serve(good, Behaviour::Answer);
    let fw = forwarder(
        &dir,
        &["127.0.0.3", "127.0.0.4", "127.0.0.5"],
        port,
        2000,
        4000,
    );
    let f = forward_of("example.org.");
    let t = Instant::now();
    let (_, r) = fw.forward(&f, Transport::Udp).await;
    assert_eq!(r, QueryResult::Forwarded);
    assert!(
        t.elapsed() >= Duration::from_secs(2),
        "waited for the silent one"
    );
    // The silent server is now tried last: the next query needs no timeout.
    let t = Instant::now();
    let (_, r) = fw.forward(&f, Transport::Udp).await;
    assert_eq!(r, QueryResult::Forwarded);
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
}

#[tokio::test]
async fn servfail_fast_when_every_server_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens there: connection refused at once.
    let probe = std::net::UdpSocket::bind("127.0.0.6:0").unwrap();
    let port = probe.local_addr().unwrap().port();
    drop(probe);
    let fw = forwarder(&dir, &["127.0.0.6"], port, 2000, 4000);
    let f = forward_of("example.net.");
    let t = Instant::now();
    let (b, r) = fw.forward(&f, Transport::Udp).await;
    assert_eq!(r, QueryResult::ServFail);
    assert_eq!(
        Message::from_vec(&b).unwrap().response_code,
        ResponseCode::ServFail
    );
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "no timeout waited: {:?}",
        t.elapsed()
    );
    // Marked down: the next query within the probe interval is answered without trying.
    let (_, r) = fw.forward(&f, Transport::Udp).await;
    assert_eq!(r, QueryResult::ServFail);
    // No upstream at all.
    let none = forwarder(&dir, &[], 53, 2000, 4000);
    assert_eq!(
        none.forward(&f, Transport::Udp).await.1,
        QueryResult::ServFail
    );
}

#[tokio::test]
async fn deadline_bounds_a_query_over_silent_servers() {
    let dir = tempfile::tempdir().unwrap();
    let (a, port) = fake_udp("127.0.0.7", 0).await;
    serve(a, Behaviour::Silent);
    let mut socks = Vec::new();
    for ip in ["127.0.0.8", "127.0.0.9", "127.0.0.10"] {
        let (s, _) = fake_udp(ip, port).await;
        socks.push(s);
    }
    for s in socks {
        serve(s, Behaviour::Silent);
    }
    let fw = forwarder(
        &dir,
        &["127.0.0.7", "127.0.0.8", "127.0.0.9", "127.0.0.10"],
        port,
        300,
        800,
    );
    let t = Instant::now();
    let (_, r) = fw
        .forward(&forward_of("slow.example."), Transport::Udp)
        .await;
    assert_eq!(r, QueryResult::ServFail);
    let took = t.elapsed();
    // Four 300 ms attempts would take 1.2 s: the 800 ms deadline ends the query first.
    assert!(
        took >= Duration::from_millis(790) && took < Duration::from_millis(1150),
        "{took:?}"
    );
}

#[tokio::test]
async fn tcp_queries_are_forwarded_over_tcp() {
    let dir = tempfile::tempdir().unwrap();
    let l = tokio::net::TcpListener::bind("127.0.0.11:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (mut c, _) = l.accept().await.unwrap();
        let n = usize::from(c.read_u16().await.unwrap());
        let mut buf = vec![0u8; n];
        c.read_exact(&mut buf).await.unwrap();
        let req = Message::from_vec(&buf).unwrap();
        let mut m = Message::response(req.id, req.op_code);
        m.queries = req.queries.clone();
        let out = m.to_vec().unwrap();
        c.write_all(&(out.len() as u16).to_be_bytes())
            .await
            .unwrap();
        c.write_all(&out).await.unwrap();
    });
    let fw = forwarder(&dir, &["127.0.0.11"], port, 2000, 4000);
    let (b, r) = fw
        .forward(&forward_of("tcp.example."), Transport::Tcp)
        .await;
    assert_eq!(r, QueryResult::Forwarded);
    assert_eq!(Message::from_vec(&b).unwrap().id, 0x1234);
}

#[tokio::test]
async fn own_addresses_are_never_upstreams() {
    let dir = tempfile::tempdir().unwrap();
    let (s, port) = fake_udp("127.0.0.12", 0).await;
    serve(s, Behaviour::Answer);
    let fw = forwarder(&dir, &["127.0.0.12"], port, 2000, 4000);
    fw.set_own(vec!["127.0.0.12".parse().unwrap()]);
    let (_, r) = fw
        .forward(&forward_of("loop.example."), Transport::Udp)
        .await;
    assert_eq!(
        r,
        QueryResult::ServFail,
        "the only upstream is this service itself"
    );
    fw.set_own(vec![]);
    let (_, r) = fw
        .forward(&forward_of("loop.example."), Transport::Udp)
        .await;
    assert_eq!(r, QueryResult::Forwarded);
}
