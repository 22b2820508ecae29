//! One network's sockets: UDP and TCP on each of its gateway addresses (port 53 in the daemon),
//! bound to that address only — never a wildcard — with `IP_FREEBIND`, so a gateway address that
//! is still being added (IPv6 duplicate address detection) or is re-added after its bridge was
//! re-created does not stop the bind. UDP sockets are served by a thread each ([`crate::udp`]),
//! TCP listeners by the service's runtime (here).
//!
//! Protection: a source outside the network's subnets that is not the host gets REFUSED (and a
//! TCP connection from it is closed after that reply); forwarded queries run as tasks, at most
//! `max_forwards` at once across every network (beyond that: SERVFAIL at once); TCP connections
//! are limited across every network (further clients wait in the kernel's backlog), each closed
//! after `tcp_idle` without a complete query. A datagram longer than [`MAX_QUERY`] or a TCP
//! message outside 12..=[`MAX_QUERY`] bytes is not decoded (FORMERR, or the connection closed).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::access::{canonical, LocalAddrs};
use crate::answer::{self, refuse, respond_in, servfail, Outcome, QueryResult, Transport};
use crate::forward::Forwarder;
use crate::metrics::NetCounters;
use crate::zone::Zone;

/// Largest query decoded (UDP datagram or TCP message).
pub const MAX_QUERY: usize = 4096;
/// Longest a UDP reply waits for room in the socket's send buffer.
pub const SEND_TIMEOUT: Duration = Duration::from_millis(100);

/// What every socket of one network shares.
#[derive(Debug)]
pub struct Shared {
    /// The network's current table (swapped whole on every change).
    pub zone: Arc<ArcSwap<Zone>>,
    /// Every served network's table (this one included), for containers on several networks.
    pub all: Arc<ArcSwap<Vec<Arc<ArcSwap<Zone>>>>>,
    /// Upstream forwarding.
    pub forwarder: Arc<Forwarder>,
    /// The host's addresses (allowed sources).
    pub local: Arc<LocalAddrs>,
    /// The network's counters.
    pub counters: NetCounters,
    /// Forwarded queries in flight, across every network.
    pub forwards: Arc<Semaphore>,
    /// Open TCP connections, across every network.
    pub tcp: Arc<Semaphore>,
    /// Longest wait for a TCP query.
    pub tcp_idle: Duration,
    /// UDP queries per source and second at most (0: no limit).
    pub per_source_qps: u32,
}

impl Shared {
    pub(crate) fn allowed(&self, zone: &Zone, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        zone.in_subnets(ip) || self.local.contains(ip)
    }

    /// The tables of the other networks the container at `ip` (on this network) is attached to.
    pub(crate) fn others(&self, zone: &Zone, ip: IpAddr) -> Vec<Arc<Zone>> {
        let Some(c) = zone.container_at(canonical(ip)) else {
            return Vec::new();
        };
        self.all
            .load()
            .iter()
            .filter(|cell| !Arc::ptr_eq(cell, &self.zone))
            .map(|cell| cell.load_full())
            .filter(|z| z.has_container(c))
            .collect()
    }
}

fn socket(addr: SocketAddr, ty: Type, proto: Protocol) -> io::Result<Socket> {
    let s = Socket::new(Domain::for_address(addr), ty, Some(proto))?;
    match addr {
        SocketAddr::V4(_) => s.set_freebind_v4(true)?,
        SocketAddr::V6(_) => {
            s.set_only_v6(true)?;
            s.set_freebind_v6(true)?;
        }
    }
    Ok(s)
}

/// A UDP socket bound to exactly `addr` (blocking: served by a thread of its own, see
/// [`crate::udp`]); a send blocks at most [`SEND_TIMEOUT`].
pub fn bind_udp(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let s = socket(addr, Type::DGRAM, Protocol::UDP)?;
    // Room for a burst of queries while the loop is busy (capped by net.core.rmem_max).
    let _ = s.set_recv_buffer_size(1 << 20);
    s.set_write_timeout(Some(SEND_TIMEOUT))?;
    s.bind(&addr.into())?;
    Ok(s.into())
}

/// A TCP listener bound to exactly `addr` (non-blocking, for the runtime).
pub fn bind_tcp(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let s = socket(addr, Type::STREAM, Protocol::TCP)?;
    s.set_nonblocking(true)?;
    s.set_reuse_address(true)?;
    s.bind(&addr.into())?;
    s.listen(128)?;
    Ok(s.into())
}

/// FORMERR for a datagram longer than [`MAX_QUERY`] (only its header is looked at).
pub(crate) fn oversized(packet: &[u8]) -> Outcome {
    let mut head = packet[..answer::HEADER].to_vec();
    // Claim no records, so that only the header is decoded.
    head[4..].fill(0);
    match respond_header(&head) {
        Some(b) => Outcome::Reply(b, QueryResult::FormErr),
        None => Outcome::Drop,
    }
}

fn respond_header(head: &[u8]) -> Option<Vec<u8>> {
    use hickory_proto::op::{Message, MessageType, ResponseCode};
    let m = Message::from_vec(head).ok()?;
    if m.message_type != MessageType::Query {
        return None;
    }
    let mut r = Message::response(m.id, m.op_code);
    r.metadata.response_code = ResponseCode::FormErr;
    r.to_vec().ok()
}

/// Serves a TCP listener until the task is aborted (its connections end with it).
pub async fn serve_tcp(l: std::net::TcpListener, sh: Arc<Shared>) {
    let l = match TcpListener::from_std(l) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("DNS TCP socket: {e}");
            return;
        }
    };
    let mut conns = JoinSet::new();
    loop {
        let Ok(permit) = sh.tcp.clone().acquire_owned().await else {
            return;
        };
        let (s, peer) = match l.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!("DNS TCP accept: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        while conns.try_join_next().is_some() {}
        let sh = sh.clone();
        conns.spawn(async move {
            tcp_conn(s, peer, &sh).await;
            drop(permit);
        });
    }
}

async fn tcp_conn(mut s: TcpStream, peer: SocketAddr, sh: &Shared) {
    let _ = s.set_nodelay(true);
    loop {
        let Ok(Ok(len)) = tokio::time::timeout(sh.tcp_idle, s.read_u16()).await else {
            return;
        };
        let len = usize::from(len);
        if !(answer::HEADER..=MAX_QUERY).contains(&len) {
            return;
        }
        let mut buf = vec![0u8; len];
        if !matches!(
            tokio::time::timeout(sh.tcp_idle, s.read_exact(&mut buf)).await,
            Ok(Ok(_))
        ) {
            return;
        }
        let t0 = Instant::now();
        let zone = sh.zone.load_full();
        if !sh.allowed(&zone, peer.ip()) {
            if let Some(r) = refuse(&buf, Transport::Tcp) {
                let _ = write_msg(&mut s, &r, sh.tcp_idle).await;
                sh.counters.count(QueryResult::Refused);
            }
            return;
        }
        let also = || sh.others(&zone, peer.ip());
        let (reply, result, local) = match respond_in(&zone, &also, &buf, Transport::Tcp) {
            Outcome::Reply(b, r) => (b, r, true),
            Outcome::Drop => return,
            Outcome::Forward(f) => match sh.forwards.try_acquire() {
                Ok(_permit) => {
                    sh.counters.forwarded();
                    let (b, r) = sh.forwarder.forward(&f, Transport::Tcp).await;
                    (b, r, false)
                }
                Err(_) => (servfail(&f), QueryResult::ServFail, true),
            },
        };
        if write_msg(&mut s, &reply, sh.tcp_idle).await.is_err() {
            return;
        }
        sh.counters.count(result);
        let secs = t0.elapsed().as_secs_f64();
        if local {
            sh.counters.local_latency(secs);
        } else {
            sh.counters.forwarded_latency(secs);
        }
    }
}

async fn write_msg(s: &mut TcpStream, msg: &[u8], limit: Duration) -> io::Result<()> {
    let len = u16::try_from(msg.len()).map_err(|_| io::Error::other("reply too long"))?;
    let mut out = Vec::with_capacity(msg.len() + 2);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(msg);
    tokio::time::timeout(limit, s.write_all(&out))
        .await
        .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))?
}
