//! The query path, pure: a datagram (or TCP message) and a network's [`Zone`] in, what to do out
//! — send these reply bytes, forward to the upstream resolvers, or drop. Nothing here does I/O,
//! so it is unit-tested and fuzzed as is (`fuzz/fuzz_targets/dns_query.rs`).
//!
//! Semantics: local names are answered authoritatively (AA) with the zone's TTL — the names of
//! the network asked, and of the other networks the asking container is attached to; a local name
//! without records of the asked type is NODATA (NOERROR, empty answer, the SOA in the authority
//! section so the absence is cached for the TTL), an unknown name under the domain, an unknown
//! single-label name and an unknown address of the network's subnets are NXDOMAIN. Anything else
//! is forwarded, or REFUSED on an internal network. Malformed queries get FORMERR when they carry
//! a readable header, other opcodes NOTIMP, classes other than IN REFUSED, EDNS versions above 0
//! BADVERS; responses and runts are dropped (never answered: no loops, no reflection). A reply
//! that does not fit the client's UDP size is sent truncated (TC) so that the client retries over
//! TCP.

use std::sync::Arc;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, PTR};
use hickory_proto::rr::{DNSClass, RData, Record, RecordType};

use crate::name;
use crate::zone::{Addrs, Authority, Lookup, Zone};

/// Largest UDP reply to a client that sent no EDNS (RFC 1035).
pub const PLAIN_UDP: usize = 512;
/// UDP payload size this server advertises and caps UDP replies at (the 2020 DNS flag day value,
/// below common path MTUs).
pub const EDNS_PAYLOAD: u16 = 1232;
/// Size of a DNS header.
pub const HEADER: usize = 12;

/// How a query arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// UDP: replies are limited to the client's payload size.
    Udp,
    /// TCP: replies up to 65535 bytes.
    Tcp,
}

/// What became of a query (the `result` label of the query metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QueryResult {
    /// A local name answered with records.
    Answer,
    /// A local name without records of the asked type.
    NoData,
    /// A name this server is authoritative for that does not exist.
    NxDomain,
    /// Sent to an upstream resolver, whose reply was relayed.
    Forwarded,
    /// Forwarding failed (every upstream failed or timed out, or too many in flight).
    ServFail,
    /// Refused: source not allowed, non-local name on an internal network, class other than IN.
    Refused,
    /// Malformed query.
    FormErr,
    /// Opcode other than QUERY.
    NotImp,
    /// Dropped unanswered: its source sent more than its per-second budget (UDP).
    RateLimited,
}

impl QueryResult {
    /// Every value, for pre-creating metric series.
    pub const ALL: [QueryResult; 9] = [
        QueryResult::Answer,
        QueryResult::NoData,
        QueryResult::NxDomain,
        QueryResult::Forwarded,
        QueryResult::ServFail,
        QueryResult::Refused,
        QueryResult::FormErr,
        QueryResult::NotImp,
        QueryResult::RateLimited,
    ];

    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            QueryResult::Answer => "answer",
            QueryResult::NoData => "nodata",
            QueryResult::NxDomain => "nxdomain",
            QueryResult::Forwarded => "forwarded",
            QueryResult::ServFail => "servfail",
            QueryResult::Refused => "refused",
            QueryResult::FormErr => "formerr",
            QueryResult::NotImp => "notimp",
            QueryResult::RateLimited => "ratelimited",
        }
    }

    /// Position in [`QueryResult::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// A query to forward: the client's message as it came (re-sent with a fresh id), and what is
/// needed to check the upstream's reply and to answer SERVFAIL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    /// The client's query message, as received.
    pub raw: Vec<u8>,
    /// The client's id (replies carry it again).
    pub id: u16,
    /// The question.
    pub query: Query,
    /// Recursion desired bit of the client.
    pub recursion_desired: bool,
    /// The client sent EDNS.
    pub edns: bool,
    /// Largest reply the client takes over this transport.
    pub max_reply: usize,
}

/// What to do with a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Send these bytes back.
    Reply(Vec<u8>, QueryResult),
    /// Not a local name: forward it.
    Forward(Forward),
    /// Send nothing (a response, a runt).
    Drop,
}

/// The id and opcode of a message with at least a header, and whether it is a response.
fn peek_header(packet: &[u8]) -> Option<(u16, OpCode, bool)> {
    if packet.len() < HEADER {
        return None;
    }
    let id = u16::from_be_bytes([packet[0], packet[1]]);
    let response = packet[2] & 0x80 != 0;
    let op = OpCode::from_u8((packet[2] >> 3) & 0x0f);
    Some((id, op, response))
}

/// A bare error reply (no question) for a message that could not be decoded.
fn header_only(id: u16, op: OpCode, rcode: ResponseCode) -> Vec<u8> {
    let mut m = Message::response(id, op);
    m.metadata.response_code = rcode;
    m.to_vec().unwrap_or_default()
}

/// Largest reply for a client: 65535 over TCP; over UDP its EDNS payload size (at least 512, at
/// most [`EDNS_PAYLOAD`]) or 512 without EDNS.
fn max_reply(req: &Message, transport: Transport) -> usize {
    match (transport, &req.edns) {
        (Transport::Tcp, _) => usize::from(u16::MAX),
        (Transport::Udp, Some(e)) => usize::from(e.max_payload().clamp(512, EDNS_PAYLOAD)),
        (Transport::Udp, None) => PLAIN_UDP,
    }
}

/// A reply to `req` with its question, RD/CD copied and our EDNS when the client used EDNS.
fn reply_to(req: &Message, rcode: ResponseCode, recursion: bool) -> Message {
    let mut m = Message::response(req.id, req.op_code);
    m.metadata.recursion_desired = req.recursion_desired;
    m.metadata.checking_disabled = req.checking_disabled;
    m.metadata.recursion_available = recursion;
    m.metadata.response_code = rcode;
    m.queries = req.queries.clone();
    if req.edns.is_some() {
        let mut e = Edns::new();
        e.set_max_payload(EDNS_PAYLOAD).set_version(0);
        m.edns = Some(e);
    }
    m
}

/// Encodes `m`; if it is larger than `max`, the truncated form (header, question, EDNS, TC set).
fn encode(m: &Message, max: usize) -> Vec<u8> {
    match m.to_vec() {
        Ok(b) if b.len() <= max => b,
        _ => {
            let mut t = m.truncate();
            t.metadata.truncation = true;
            t.to_vec().unwrap_or_default()
        }
    }
}

/// Answers a query message from `zone`, or says to forward or drop it.
pub fn respond(zone: &Zone, packet: &[u8], transport: Transport) -> Outcome {
    respond_in(zone, &Vec::new, packet, transport)
}

/// Like [`respond`], for a client that is also attached to other networks: a name `zone` does
/// not know is looked up in `also()` — the tables of the other networks the asking container is
/// attached to (called only then) — before NXDOMAIN or forwarding.
pub fn respond_in(
    zone: &Zone,
    also: &dyn Fn() -> Vec<Arc<Zone>>,
    packet: &[u8],
    transport: Transport,
) -> Outcome {
    let Some((id, op, response)) = peek_header(packet) else {
        return Outcome::Drop;
    };
    if response {
        return Outcome::Drop;
    }
    let req = match Message::from_vec(packet) {
        Ok(m) => m,
        Err(_) => {
            return Outcome::Reply(
                header_only(id, op, ResponseCode::FormErr),
                QueryResult::FormErr,
            )
        }
    };
    let recursion = !zone.network().internal;
    let max = max_reply(&req, transport);
    let simple =
        |rcode, result| Outcome::Reply(encode(&reply_to(&req, rcode, recursion), max), result);
    if req.op_code != OpCode::Query {
        return simple(ResponseCode::NotImp, QueryResult::NotImp);
    }
    if req.message_type != MessageType::Query || req.queries.len() != 1 {
        return simple(ResponseCode::FormErr, QueryResult::FormErr);
    }
    if req.edns.as_ref().is_some_and(|e| e.version() > 0) {
        // BADVERS is an extended code: it travels in the EDNS record of the reply.
        return simple(ResponseCode::BADVERS, QueryResult::FormErr);
    }
    let q = &req.queries[0];
    if q.query_class() != DNSClass::IN {
        return simple(ResponseCode::Refused, QueryResult::Refused);
    }
    if matches!(q.query_type(), RecordType::AXFR | RecordType::IXFR) {
        return simple(ResponseCode::Refused, QueryResult::Refused);
    }
    let key = name::query_key(q.name());
    let mut lookup = match &key {
        Some(k) => zone.lookup(k),
        None => Lookup::Outside,
    };
    let others;
    if let (Some(k), Lookup::NxDomain(_) | Lookup::Outside) = (&key, lookup) {
        others = also();
        if let Some(found) = others.iter().find_map(|z| match z.lookup(k) {
            l @ (Lookup::Host(..) | Lookup::Ptr(..)) => Some(l),
            _ => None,
        }) {
            lookup = match found {
                // Negative parts of the answer speak for this server's own zones.
                Lookup::Ptr(n, _) => Lookup::Ptr(n, Authority::Bare),
                other => other,
            };
        }
    }
    let ttl = zone.ttl();
    let mut m = reply_to(&req, ResponseCode::NoError, recursion);
    m.metadata.authoritative = true;
    let negative = |m: &mut Message, a: Authority| {
        if let Some(soa) = zone.soa(a) {
            m.authorities.push(soa.clone());
        }
    };
    let result = match lookup {
        Lookup::Outside if zone.network().internal => {
            return simple(ResponseCode::Refused, QueryResult::Refused);
        }
        Lookup::Outside => {
            return Outcome::Forward(Forward {
                raw: packet.to_vec(),
                id: req.id,
                query: q.clone(),
                recursion_desired: req.recursion_desired,
                edns: req.edns.is_some(),
                max_reply: max,
            });
        }
        Lookup::Host(addrs, auth) => {
            host_records(&mut m, q, addrs, ttl);
            if m.answers.is_empty() {
                negative(&mut m, auth);
                QueryResult::NoData
            } else {
                QueryResult::Answer
            }
        }
        Lookup::Ptr(target, auth) => {
            if matches!(q.query_type(), RecordType::PTR | RecordType::ANY) {
                m.answers.push(Record::from_rdata(
                    q.name().clone(),
                    ttl,
                    RData::PTR(PTR(target.clone())),
                ));
                QueryResult::Answer
            } else {
                negative(&mut m, auth);
                QueryResult::NoData
            }
        }
        Lookup::Apex => {
            if matches!(q.query_type(), RecordType::SOA | RecordType::ANY) {
                let mut soa = zone
                    .soa(Authority::Domain)
                    .cloned()
                    .expect("the domain has a SOA");
                soa.name = q.name().clone();
                m.answers.push(soa);
                QueryResult::Answer
            } else {
                negative(&mut m, Authority::Domain);
                QueryResult::NoData
            }
        }
        Lookup::NxDomain(auth) => {
            m.metadata.response_code = ResponseCode::NXDomain;
            negative(&mut m, auth);
            QueryResult::NxDomain
        }
    };
    Outcome::Reply(encode(&m, max), result)
}

fn host_records(m: &mut Message, q: &Query, addrs: &Addrs, ttl: u32) {
    let (v4, v6) = match q.query_type() {
        RecordType::A => (true, false),
        RecordType::AAAA => (false, true),
        RecordType::ANY => (true, true),
        _ => (false, false),
    };
    if v4 {
        for ip in &addrs.v4 {
            m.answers
                .push(Record::from_rdata(q.name().clone(), ttl, RData::A(A(*ip))));
        }
    }
    if v6 {
        for ip in &addrs.v6 {
            m.answers.push(Record::from_rdata(
                q.name().clone(),
                ttl,
                RData::AAAA(AAAA(*ip)),
            ));
        }
    }
}

/// REFUSED for a query from a source that may not use this server; `None` (drop) when the
/// message is not a query with a readable header.
pub fn refuse(packet: &[u8], transport: Transport) -> Option<Vec<u8>> {
    let (id, op, response) = peek_header(packet)?;
    if response {
        return None;
    }
    Some(match Message::from_vec(packet) {
        Ok(req) => {
            let max = max_reply(&req, transport);
            encode(&reply_to(&req, ResponseCode::Refused, false), max)
        }
        Err(_) => header_only(id, op, ResponseCode::Refused),
    })
}

/// SERVFAIL for a query that could not be forwarded.
pub fn servfail(f: &Forward) -> Vec<u8> {
    let mut m = Message::response(f.id, OpCode::Query);
    m.metadata.recursion_desired = f.recursion_desired;
    m.metadata.recursion_available = true;
    m.metadata.response_code = ResponseCode::ServFail;
    m.queries.push(f.query.clone());
    if f.edns {
        let mut e = Edns::new();
        e.set_max_payload(EDNS_PAYLOAD).set_version(0);
        m.edns = Some(e);
    }
    encode(&m, f.max_reply)
}

/// What an upstream reply says about a forwarded query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamReply {
    /// A final answer (any rcode but SERVFAIL/REFUSED): relay it.
    Final,
    /// SERVFAIL or REFUSED: try the next upstream.
    Failed,
    /// Not a reply to this query (wrong id or question, not a response, undecodable): ignore.
    Foreign,
}

/// Checks an upstream's reply to our copy of `f` sent with id `sent_id`.
pub fn check_upstream(f: &Forward, sent_id: u16, reply: &[u8]) -> UpstreamReply {
    let Some((id, _, response)) = peek_header(reply) else {
        return UpstreamReply::Foreign;
    };
    if id != sent_id || !response {
        return UpstreamReply::Foreign;
    }
    let Ok(m) = Message::from_vec(reply) else {
        return UpstreamReply::Foreign;
    };
    // A truncated reply may carry no question; otherwise it must be ours.
    match m.queries.first() {
        Some(q) if q != &f.query => return UpstreamReply::Foreign,
        None if !m.truncation => return UpstreamReply::Foreign,
        _ => {}
    }
    match m.response_code {
        ResponseCode::ServFail | ResponseCode::Refused => UpstreamReply::Failed,
        _ => UpstreamReply::Final,
    }
}

/// `raw` with its id replaced.
pub fn with_id(raw: &[u8], id: u16) -> Vec<u8> {
    let mut out = raw.to_vec();
    if out.len() >= 2 {
        out[..2].copy_from_slice(&id.to_be_bytes());
    }
    out
}

#[cfg(test)]
pub(crate) mod tests;
