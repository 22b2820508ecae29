//! Forwarding a query to the upstream resolvers: each attempt sends the client's message with a
//! fresh random id from a fresh socket (random source port), over the transport the client used,
//! and waits at most the attempt timeout; a reply must come from the server asked, carry the id
//! and the question, or it is ignored. SERVFAIL/REFUSED, errors and timeouts move on to the next
//! server (failover, see [`crate::upstream`]); the whole query is bounded by a deadline, after
//! which — or when no server is left — the client gets SERVFAIL.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use crate::answer::{
    check_upstream, servfail, with_id, Forward, QueryResult, Transport, UpstreamReply,
};
use crate::metrics::{DnsMetrics, UpstreamFailure};
use crate::upstream::Source;

/// Largest UDP reply read from an upstream.
pub const UPSTREAM_UDP_BUF: usize = 4096;

/// Forwarding settings and the upstream list.
#[derive(Debug)]
pub struct Forwarder {
    source: Arc<Source>,
    attempt: Duration,
    deadline: Duration,
    metrics: DnsMetrics,
    /// This service's own listening addresses: an upstream list naming one of them (a host
    /// whose resolv.conf points at a gateway) would send queries round in a loop.
    own: ArcSwap<Vec<IpAddr>>,
}

enum Attempt {
    Reply(Vec<u8>, UpstreamReply),
    Failed(UpstreamFailure),
}

impl Forwarder {
    /// A forwarder over `source`: each attempt waits at most `attempt`, a query at most
    /// `deadline` in all.
    pub fn new(
        source: Arc<Source>,
        attempt: Duration,
        deadline: Duration,
        metrics: DnsMetrics,
    ) -> Self {
        Forwarder {
            source,
            attempt,
            deadline,
            metrics,
            own: ArcSwap::from_pointee(Vec::new()),
        }
    }

    /// Sets the service's own listening addresses, which are never used as upstreams.
    pub fn set_own(&self, addrs: Vec<IpAddr>) {
        self.own.store(Arc::new(addrs));
    }

    /// The upstream list.
    pub fn source(&self) -> &Source {
        &self.source
    }

    /// Forwards `f`; returns the reply for the client (with its id) and what it was.
    pub async fn forward(&self, f: &Forward, transport: Transport) -> (Vec<u8>, QueryResult) {
        let start = Instant::now();
        let ups = self.source.current();
        let mut relayed_failure: Option<Vec<u8>> = None;
        let own = self.own.load();
        for up in ups
            .plan(self.source.now_ms())
            .into_iter()
            .filter(|u| !own.contains(&u.addr.ip()))
        {
            let left = self.deadline.saturating_sub(start.elapsed());
            if left.is_zero() {
                break;
            }
            let id: u16 = rand::random();
            let query = with_id(&f.raw, id);
            let attempt = match tokio::time::timeout(
                self.attempt.min(left),
                exchange(up.addr, &query, f, id, transport),
            )
            .await
            {
                Ok(Ok(a)) => a,
                Ok(Err(e)) => {
                    tracing::debug!(upstream = %up.addr, "upstream error: {e}");
                    Attempt::Failed(UpstreamFailure::Error)
                }
                Err(_) => Attempt::Failed(UpstreamFailure::Timeout),
            };
            match attempt {
                Attempt::Reply(reply, UpstreamReply::Final) => {
                    up.mark_up();
                    return (with_id(&reply, f.id), QueryResult::Forwarded);
                }
                Attempt::Reply(reply, _) => {
                    // Alive but failing this name: keep its answer in case nobody does better.
                    up.mark_up();
                    self.metrics
                        .upstream_failure(up.addr, UpstreamFailure::ServFail);
                    relayed_failure = Some(reply);
                }
                Attempt::Failed(why) => {
                    up.mark_down(self.source.now_ms());
                    self.metrics.upstream_failure(up.addr, why);
                }
            }
        }
        match relayed_failure {
            Some(r) => (with_id(&r, f.id), QueryResult::ServFail),
            None => (servfail(f), QueryResult::ServFail),
        }
    }
}

async fn exchange(
    addr: SocketAddr,
    query: &[u8],
    f: &Forward,
    id: u16,
    transport: Transport,
) -> io::Result<Attempt> {
    match transport {
        Transport::Udp => udp_exchange(addr, query, f, id).await,
        Transport::Tcp => tcp_exchange(addr, query, f, id).await,
    }
}

async fn udp_exchange(addr: SocketAddr, query: &[u8], f: &Forward, id: u16) -> io::Result<Attempt> {
    let bind: SocketAddr = if addr.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = UdpSocket::bind(bind).await?;
    // Connected: replies from anyone else are never seen, and an ICMP port unreachable ends the
    // attempt at once (connection refused).
    sock.connect(addr).await?;
    sock.send(query).await?;
    let mut buf = vec![0u8; UPSTREAM_UDP_BUF];
    loop {
        let n = sock.recv(&mut buf).await?;
        match check_upstream(f, id, &buf[..n]) {
            UpstreamReply::Foreign => continue,
            verdict => return Ok(Attempt::Reply(buf[..n].to_vec(), verdict)),
        }
    }
}

async fn tcp_exchange(addr: SocketAddr, query: &[u8], f: &Forward, id: u16) -> io::Result<Attempt> {
    let mut s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let len = u16::try_from(query.len()).map_err(|_| io::Error::other("query too long for TCP"))?;
    let mut msg = Vec::with_capacity(query.len() + 2);
    msg.extend_from_slice(&len.to_be_bytes());
    msg.extend_from_slice(query);
    s.write_all(&msg).await?;
    loop {
        let n = usize::from(s.read_u16().await?);
        let mut buf = vec![0u8; n];
        s.read_exact(&mut buf).await?;
        match check_upstream(f, id, &buf) {
            UpstreamReply::Foreign => continue,
            verdict => return Ok(Attempt::Reply(buf, verdict)),
        }
    }
}

#[cfg(test)]
mod tests;
