//! Userspace IPIP data plane for kernels without `CONFIG_NET_IPIP`: a TUN device and a raw
//! IP-protocol-4 socket, wire-compatible with kernel IPIP (plain outer IPv4 header, protocol 4,
//! DF set). One thread per direction, each moving batches of packets per system call
//! (`recvmmsg`/`sendmmsg` on the raw socket).
//!
//! Send: a packet read from the TUN is looked up by inner destination in the peer table and
//! sent to that peer's underlay address (the kernel adds the outer header). Receive: the raw
//! socket returns the whole outer packet; packets whose outer source is not a listed peer are
//! dropped and counted ([`Counters::non_peer`]), the others are written to the TUN without their
//! outer header. A batch is judged under one read lock of the peer table, so once
//! [`UserspaceIpip::set_peers`] returns, no packet is judged by the previous table.

mod batch;
mod gso;
mod packet;
mod tun;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use ipnetwork::Ipv4Network;
use socket2::{Domain, Protocol, Socket, Type};

/// Packet counters of the userspace data plane.
#[derive(Debug, Default)]
pub struct Counters {
    /// Packets sent to peers.
    pub tx: AtomicU64,
    /// Packets received from peers and written to the TUN.
    pub rx: AtomicU64,
    /// Packets dropped (unknown peer, no route, send errors; `non_peer` included).
    pub dropped: AtomicU64,
    /// Received packets dropped because their outer source is not a listed peer.
    pub non_peer: AtomicU64,
    /// Reads from the TUN (one per super-packet when segmentation offload is at work).
    pub tun_reads: AtomicU64,
    /// Writes to the TUN (one per coalesced super-packet).
    pub tun_writes: AtomicU64,
}

/// A snapshot of [`Counters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct CounterSnapshot {
    /// Packets sent to peers.
    pub tx_packets: u64,
    /// Packets received from peers.
    pub rx_packets: u64,
    /// Packets dropped.
    pub dropped: u64,
    /// Received packets dropped because their outer source is not a listed peer.
    pub non_peer: u64,
    /// Reads from the TUN.
    pub tun_reads: u64,
    /// Writes to the TUN.
    pub tun_writes: u64,
}

impl Counters {
    /// Current values.
    pub fn snapshot(&self) -> CounterSnapshot {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CounterSnapshot {
            tx_packets: g(&self.tx),
            rx_packets: g(&self.rx),
            dropped: g(&self.dropped),
            non_peer: g(&self.non_peer),
            tun_reads: g(&self.tun_reads),
            tun_writes: g(&self.tun_writes),
        }
    }
}

/// The peer table: pod subnet → underlay address.
pub type PeerTable = Arc<RwLock<Vec<(Ipv4Network, Ipv4Addr)>>>;

/// A running userspace IPIP data plane.
#[derive(Debug, Clone)]
pub struct UserspaceIpip {
    /// TUN device name.
    pub tun: String,
    /// Peers reached through it; replace the contents to change them.
    pub peers: PeerTable,
    /// Counters.
    pub counters: Arc<Counters>,
}

/// Starting the data plane failed.
#[derive(Debug, thiserror::Error)]
#[error("userspace IPIP {what}: {source}")]
pub struct StartError {
    what: &'static str,
    #[source]
    source: std::io::Error,
}

impl UserspaceIpip {
    /// Opens the TUN device `tun` and a raw IPIP socket bound to `local`, and starts the two
    /// forwarding threads. The TUN still needs its address, MTU and up state.
    pub fn start(tun: &str, local: Ipv4Addr) -> Result<Self, StartError> {
        let dev = tun::open(tun).map_err(|source| StartError {
            what: "open TUN",
            source,
        })?;
        let sock = Socket::new(
            Domain::IPV4,
            Type::RAW,
            Some(Protocol::from(libc::IPPROTO_IPIP)),
        )
        .map_err(|source| StartError {
            what: "raw socket (IP protocol 4)",
            source,
        })?;
        let io = |what| move |source| StartError { what, source };
        sock.bind(&SocketAddr::V4(SocketAddrV4::new(local, 0)).into())
            .map_err(io("bind raw socket"))?;
        set_pmtudisc_do(&sock).map_err(io("set DF on raw socket"))?;
        let _ = sock.set_recv_buffer_size(4 << 20);
        let _ = sock.set_send_buffer_size(4 << 20);
        let me = UserspaceIpip {
            tun: tun.to_string(),
            peers: Arc::default(),
            counters: Arc::default(),
        };
        let (rx_dev, tx_dev) = (dev.try_clone().map_err(io("clone TUN fd"))?, dev);
        let rx_sock = sock.try_clone().map_err(io("clone raw socket"))?;
        let (peers, counters) = (me.peers.clone(), me.counters.clone());
        std::thread::Builder::new()
            .name("ipip-tx".into())
            .spawn(move || send_loop(tx_dev, sock, peers, counters))
            .map_err(io("spawn thread"))?;
        let (peers, counters) = (me.peers.clone(), me.counters.clone());
        std::thread::Builder::new()
            .name("ipip-rx".into())
            .spawn(move || recv_loop(rx_dev, rx_sock, peers, counters))
            .map_err(io("spawn thread"))?;
        Ok(me)
    }

    /// Replaces the peer table (pod subnet → underlay address). Waits for the batch being
    /// judged, so packets received from now on are judged by `table` only.
    pub fn set_peers(&self, table: Vec<(Ipv4Network, Ipv4Addr)>) {
        *self.peers.write().unwrap_or_else(|e| e.into_inner()) = table;
    }
}

fn set_pmtudisc_do(sock: &Socket) -> std::io::Result<()> {
    let v: libc::c_int = libc::IP_PMTUDISC_DO;
    // SAFETY: valid socket fd, pointer to a c_int of the size passed.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn lookup(peers: &PeerTable, dst: Ipv4Addr) -> Option<Ipv4Addr> {
    let t = peers.read().unwrap_or_else(|e| e.into_inner());
    t.iter().find(|(net, _)| net.contains(dst)).map(|(_, a)| *a)
}

/// Waits until `fd` is readable.
fn wait_readable(fd: RawFd) -> std::io::Result<()> {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    if unsafe { libc::poll(&mut p, 1, -1) } < 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    Ok(())
}

fn set_nonblocking(fd: RawFd) -> std::io::Result<()> {
    // SAFETY: fcntl on a valid fd with integer arguments.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// TUN → peers: drains what the TUN holds, cuts super-packets into segments (see [`gso`]),
/// sends them in batches of one `sendmmsg` each.
fn send_loop(mut tun: std::fs::File, sock: Socket, peers: PeerTable, c: Arc<Counters>) {
    let (tfd, sfd) = (tun.as_raw_fd(), sock.as_raw_fd());
    if let Err(e) = set_nonblocking(tfd) {
        tracing::error!("userspace IPIP: TUN non-blocking: {e}; sending stops");
        return;
    }
    let mut batch = batch::SendBatch::default();
    let mut buf = vec![0u8; gso::VNET_HDR_LEN + batch::SLOT];
    let (mut segs, mut lens) = (Vec::with_capacity(batch::SLOT * 2), Vec::with_capacity(64));
    let flush = |batch: &mut batch::SendBatch| {
        let queued = batch.len();
        let sent = batch.flush(sfd);
        c.tx.fetch_add(sent as u64, Ordering::Relaxed);
        c.dropped
            .fetch_add((queued - sent) as u64, Ordering::Relaxed);
    };
    loop {
        if let Err(e) = wait_readable(tfd) {
            tracing::warn!("userspace IPIP: polling the TUN failed, sending stops: {e}");
            return;
        }
        let mut stop = false;
        // Up to a few batches per wake-up, then send what is queued.
        for _ in 0..batch::BATCH {
            let n = match tun.read(&mut buf) {
                Ok(n) => {
                    c.tun_reads.fetch_add(1, Ordering::Relaxed);
                    n
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!("userspace IPIP: reading the TUN failed, sending stops: {e}");
                    stop = true;
                    break;
                }
            };
            let (Some(h), Some(pkt)) = (
                gso::VnetHdr::parse(&buf[..n]),
                buf.get_mut(gso::VNET_HDR_LEN..n),
            ) else {
                c.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let Some(peer) = packet::addrs(pkt).and_then(|(_, dst)| lookup(&peers, dst)) else {
                c.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            segs.clear();
            lens.clear();
            if gso::complete(&h, pkt, &mut segs, &mut lens).is_none() {
                c.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let mut off = 0;
            for l in &lens {
                if batch.is_full() {
                    flush(&mut batch);
                }
                batch.push(&segs[off..off + l], peer);
                off += l;
            }
        }
        if !batch.is_empty() {
            flush(&mut batch);
        }
        if stop {
            return;
        }
    }
}

/// Peers → TUN: takes every queued packet with one `recvmmsg`, coalesces consecutive TCP
/// segments (see [`gso::Coalescer`]) and writes the inner packets of listed peers to the TUN.
fn recv_loop(mut tun: std::fs::File, sock: Socket, peers: PeerTable, c: Arc<Counters>) {
    let sfd = sock.as_raw_fd();
    let mut batch = batch::RecvBatch::default();
    let mut gro = gso::Coalescer::default();
    loop {
        let n = match batch.recv(sfd) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::error!("userspace IPIP: raw socket failed, receiving stops: {e}");
                return;
            }
        };
        // Held for the whole batch: a table change waits for it (see `set_peers`).
        let t = peers.read().unwrap_or_else(|e| e.into_inner());
        let write = |tun: &mut std::fs::File, framed: &[u8]| -> bool {
            match tun.write(framed) {
                Ok(_) => {
                    c.tun_writes.fetch_add(1, Ordering::Relaxed);
                    true
                }
                Err(e) if e.raw_os_error() == Some(libc::EBADFD) => {
                    tracing::warn!("userspace IPIP: TUN device gone, receiving stops");
                    false
                }
                Err(_) => {
                    c.dropped.fetch_add(1, Ordering::Relaxed);
                    true
                }
            }
        };
        for i in 0..n {
            let Some((src, inner)) = packet::decapsulate(batch.packet(i)) else {
                c.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            if !t.iter().any(|(_, a)| *a == src) {
                c.non_peer.fetch_add(1, Ordering::Relaxed);
                c.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            c.rx.fetch_add(1, Ordering::Relaxed);
            if gro.add(inner) {
                continue;
            }
            if !gro.is_empty() && !write(&mut tun, gro.take()) {
                return;
            }
            if gro.add(inner) {
                continue;
            }
            // Not coalescable: an all-zero virtio header (no offload) written over the tail of
            // the outer header, which is done with.
            let at = batch.packet(i).len() - inner.len() - gso::VNET_HDR_LEN;
            let framed = &mut batch.packet_mut(i)[at..];
            framed[..gso::VNET_HDR_LEN].fill(0);
            if !write(&mut tun, framed) {
                return;
            }
        }
        if !gro.is_empty() && !write(&mut tun, gro.take()) {
            return;
        }
    }
}
