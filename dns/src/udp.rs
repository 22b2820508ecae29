//! The UDP socket of one gateway address, served by a thread of its own: a blocking `recvfrom`,
//! the answer computed inline, a `sendto` — two system calls per local answer and a direct
//! wake-up from the socket's wait queue, no event loop in between (the lowest-latency shape for a
//! server that mostly answers from memory). Forwarded queries are handed to the service's
//! runtime and answered from there on the same socket.
//!
//! Under a flood the thread takes at most one core and only for its own network. While the
//! socket's queue builds up — `recvfrom` returns at once, the datagram was already waiting — a
//! source over its per-second budget is dropped unread ([`crate::limit`]), so the others' queries
//! still get through the queue. Stopping shuts the socket down for reading, which wakes the
//! blocked `recvfrom`; the thread then ends and the socket closes.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::answer::{refuse, respond_in, servfail, Outcome, QueryResult, Transport};
use crate::limit::Limiter;
use crate::listen::{oversized, Shared, MAX_QUERY};

/// Datagrams found waiting back to back after which per-source budgets apply.
pub const PRESSURE: usize = 32;
/// A `recvfrom` that returns faster than this found its datagram already queued (a wake-up from
/// sleep takes longer).
pub const QUEUED: Duration = Duration::from_micros(4);
/// Stack of a listener thread (the query path needs little).
const STACK: usize = 256 * 1024;

/// A UDP socket and the thread serving it; stopped on drop.
#[derive(Debug)]
pub struct UdpServer {
    sock: Arc<UdpSocket>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl UdpServer {
    /// Starts serving `sock` (blocking) for `sh`; forwards run on `rt`.
    pub fn start(sock: UdpSocket, sh: Arc<Shared>, rt: tokio::runtime::Handle) -> io::Result<Self> {
        let sock = Arc::new(sock);
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (sock, stop) = (sock.clone(), stop.clone());
            std::thread::Builder::new()
                .name("shimnet-dns-udp".into())
                .stack_size(STACK)
                .spawn(move || serve(&sock, &sh, &rt, &stop))?
        };
        Ok(UdpServer {
            sock,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for UdpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = socket2::SockRef::from(&*self.sock).shutdown(std::net::Shutdown::Read);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn send(sock: &UdpSocket, bytes: &[u8], to: SocketAddr) {
    if let Err(e) = sock.send_to(bytes, to) {
        tracing::debug!(client = %to, "DNS reply not sent: {e}");
    }
}

fn serve(sock: &Arc<UdpSocket>, sh: &Arc<Shared>, rt: &tokio::runtime::Handle, stop: &AtomicBool) {
    // One byte more than the largest query: a full buffer means the datagram was longer.
    let mut buf = vec![0u8; MAX_QUERY + 1];
    let mut budget = Limiter::new(sh.per_source_qps);
    // Datagrams found already queued back to back.
    let mut backlog = 0usize;
    loop {
        let asked = Instant::now();
        let got = sock.recv_from(&mut buf);
        if stop.load(Ordering::Acquire) {
            return;
        }
        let (n, src) = match got {
            Ok(x) => x,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::debug!("DNS UDP receive: {e}");
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
        };
        let t0 = Instant::now();
        if t0.duration_since(asked) < QUEUED {
            backlog += 1;
        } else {
            backlog = 0;
        }
        // Budgets count the queries that were found waiting and are enforced only while they
        // keep coming: a client asking as fast as it gets answers is never cut (nor counted),
        // a flood is.
        if backlog > 0 && !budget.allow(src.ip(), t0) && backlog > PRESSURE {
            sh.counters.count(QueryResult::RateLimited);
            continue;
        }
        let zone = sh.zone.load();
        if !sh.allowed(&zone, src.ip()) {
            if let Some(r) = refuse(&buf[..n.min(MAX_QUERY)], Transport::Udp) {
                send(sock, &r, src);
                sh.counters.count(QueryResult::Refused);
            }
            continue;
        }
        let outcome = if n > MAX_QUERY {
            oversized(&buf[..n])
        } else {
            respond_in(
                &zone,
                &|| sh.others(&zone, src.ip()),
                &buf[..n],
                Transport::Udp,
            )
        };
        match outcome {
            Outcome::Reply(reply, result) => {
                send(sock, &reply, src);
                sh.counters.count(result);
                sh.counters.local_latency(t0.elapsed().as_secs_f64());
            }
            Outcome::Forward(f) => match sh.forwards.clone().try_acquire_owned() {
                Ok(permit) => {
                    sh.counters.forwarded();
                    let (sh, sock) = (sh.clone(), sock.clone());
                    rt.spawn(async move {
                        let (reply, result) = sh.forwarder.forward(&f, Transport::Udp).await;
                        drop(permit);
                        send(&sock, &reply, src);
                        sh.counters.count(result);
                        sh.counters.forwarded_latency(t0.elapsed().as_secs_f64());
                    });
                }
                Err(_) => {
                    send(sock, &servfail(&f), src);
                    sh.counters.count(QueryResult::ServFail);
                }
            },
            Outcome::Drop => {}
        }
    }
}
