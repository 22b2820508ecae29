//! Userspace IPIP data plane for kernels without `CONFIG_NET_IPIP`: a multi-queue TUN device
//! and a raw IP-protocol-4 socket, wire-compatible with kernel IPIP (plain outer IPv4 header,
//! protocol 4, DF set).
//!
//! Send, one thread per TUN queue: the kernel hands over TCP/UDP super-packets of up to 64 KiB
//! (TUN offloads, see [`gso`]); each is looked up by inner destination in the peer table, cut
//! into wire-sized packets without copying its payload, and a batch of them goes to the peers'
//! underlay addresses in one scatter-gather `sendmmsg` (the kernel adds the outer header).
//!
//! Receive, one thread: `recvmmsg` takes every queued outer packet; packets whose outer source
//! is not a listed peer are dropped and counted ([`Counters::non_peer`]); consecutive TCP segments of one flow are joined (see
//! [`gro`]) and every inner packet is written to the TUN with a virtio header, so the kernel
//! handles one super-packet where the wire carried many. A packet the underlay's own GRO
//! already joined is passed on as the super-packet it is. A batch is judged under one read lock
//! of the peer table, so once [`UserspaceIpip::set_peers`] returns, no packet is judged by the
//! previous table.

mod batch;
mod csum;
mod gro;
mod gso;
mod packet;
mod tun;
mod vnet;

use std::io::{IoSlice, Read, Write};
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
    /// Packets received already joined into a super-packet by the underlay's GRO.
    pub rx_joined: AtomicU64,
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
    /// Packets received already joined by the underlay's GRO.
    pub rx_joined: u64,
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
            rx_joined: g(&self.rx_joined),
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

/// TUN queues (and sending threads): one per CPU, at most this many.
const MAX_QUEUES: usize = 4;

/// Super-packets read from the TUN before their wire packets are sent in one batch.
const READS: usize = 8;

/// A receive batch at least this large means a stream is flowing (see [`HOLD`]).
const HOLD_AFTER: usize = 4;
/// How long the receiving thread lets packets gather after a batch of [`HOLD_AFTER`] or more
/// (less than a full one): about 20 wire packets at 5 Gbit/s.
const HOLD: std::time::Duration = std::time::Duration::from_micros(50);

/// Outer IPv4 header the kernel puts in front of each packet sent (no options).
const OUTER_HDR: usize = 20;

impl UserspaceIpip {
    /// Opens the TUN device `tun` (one queue per CPU, up to four) and a raw IPIP socket bound
    /// to `local` on an underlay of MTU `underlay_mtu`, and starts one sending thread per queue
    /// and one receiving thread. The TUN still needs its address, MTU and up state.
    pub fn start(tun: &str, local: Ipv4Addr, underlay_mtu: u32) -> Result<Self, StartError> {
        let io = |what| move |source| StartError { what, source };
        let queues = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(MAX_QUEUES);
        let devs = tun::open(tun, queues).map_err(io("open TUN"))?;
        let sock = Socket::new(
            Domain::IPV4,
            Type::RAW,
            Some(Protocol::from(libc::IPPROTO_IPIP)),
        )
        .map_err(io("raw socket (IP protocol 4)"))?;
        sock.bind(&SocketAddr::V4(SocketAddrV4::new(local, 0)).into())
            .map_err(io("bind raw socket"))?;
        set_pmtudisc_do(&sock).map_err(io("set DF on raw socket"))?;
        let _ = sock.set_recv_buffer_size(8 << 20);
        let _ = sock.set_send_buffer_size(4 << 20);
        let me = UserspaceIpip {
            tun: tun.to_string(),
            peers: Arc::default(),
            counters: Arc::default(),
        };
        let rx_dev = devs[0].try_clone().map_err(io("clone TUN fd"))?;
        let rx_sock = sock.try_clone().map_err(io("clone raw socket"))?;
        for (i, dev) in devs.into_iter().enumerate() {
            let sock = sock.try_clone().map_err(io("clone raw socket"))?;
            let (peers, counters) = (me.peers.clone(), me.counters.clone());
            std::thread::Builder::new()
                .name(format!("ipip-tx{i}"))
                .spawn(move || send_loop(dev, sock, peers, counters))
                .map_err(io("spawn thread"))?;
        }
        let seg_max = (underlay_mtu as usize).saturating_sub(OUTER_HDR);
        let (peers, counters) = (me.peers.clone(), me.counters.clone());
        std::thread::Builder::new()
            .name("ipip-rx".into())
            .spawn(move || recv_loop(rx_dev, rx_sock, peers, counters, seg_max))
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

/// One TUN queue → peers: reads up to [`READS`] super-packets while the queue holds any, plans
/// their wire packets (see [`gso::plan`]) and sends them all with one scatter-gather
/// `sendmmsg` batch.
fn send_loop(mut tun: std::fs::File, sock: Socket, peers: PeerTable, c: Arc<Counters>) {
    let (tfd, sfd) = (tun.as_raw_fd(), sock.as_raw_fd());
    if let Err(e) = set_nonblocking(tfd) {
        tracing::error!("userspace IPIP: TUN non-blocking: {e}; sending stops");
        return;
    }
    let mut bufs: Vec<Vec<u8>> = (0..READS)
        .map(|_| vec![0u8; vnet::LEN + batch::SLOT])
        .collect();
    let mut hdrs: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut segs: Vec<(usize, Ipv4Addr, gso::Seg)> = Vec::with_capacity(READS * 64);
    let mut planned: Vec<gso::Seg> = Vec::with_capacity(64);
    let mut sender = batch::Sender::default();
    loop {
        if let Err(e) = wait_readable(tfd) {
            tracing::warn!("userspace IPIP: polling the TUN failed, sending stops: {e}");
            return;
        }
        loop {
            hdrs.clear();
            segs.clear();
            let (mut used, mut drained, mut stop) = (0, false, false);
            while used < READS {
                let n = match tun.read(&mut bufs[used]) {
                    Ok(n) => {
                        c.tun_reads.fetch_add(1, Ordering::Relaxed);
                        n
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        drained = true;
                        break;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        tracing::warn!(
                            "userspace IPIP: reading the TUN failed, sending stops: {e}"
                        );
                        stop = true;
                        break;
                    }
                };
                let buf = &mut bufs[used];
                let (Some(h), Some(pkt)) = (vnet::VnetHdr::parse(buf), buf.get_mut(vnet::LEN..n))
                else {
                    c.dropped.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                let Some(peer) = packet::addrs(pkt).and_then(|(_, dst)| lookup(&peers, dst)) else {
                    c.dropped.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                planned.clear();
                if gso::plan(&h, pkt, &mut hdrs, &mut planned).is_none() {
                    c.dropped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                segs.extend(planned.drain(..).map(|s| (used, peer, s)));
                used += 1;
            }
            if !segs.is_empty() {
                let (sent, refused) = sender.send(
                    sfd,
                    segs.iter().map(|(b, dst, s)| {
                        let pkt = &bufs[*b][vnet::LEN..];
                        (*dst, &hdrs[s.hdr.clone()], &pkt[s.payload.clone()])
                    }),
                );
                c.tx.fetch_add(sent as u64, Ordering::Relaxed);
                c.dropped.fetch_add(refused as u64, Ordering::Relaxed);
            }
            if stop {
                return;
            }
            if drained {
                break;
            }
        }
    }
}

/// Writes one packet to the TUN from its parts; `false` when the device is gone (receiving
/// stops), other failures count as drops.
fn write_tun(tun: &std::fs::File, parts: &[IoSlice<'_>], c: &Counters) -> bool {
    match (&*tun).write_vectored(parts) {
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
}

/// Peers → TUN: takes every queued packet with one `recvmmsg`, drops what does not come from
/// a listed peer, joins consecutive TCP segments (see [`gro::Coalescer`]) and writes the inner
/// packets to the TUN. `seg_max` is the largest inner packet the underlay carries: anything
/// longer was joined by the underlay's GRO (see [`gro::oversized`]).
fn recv_loop(tun: std::fs::File, sock: Socket, peers: PeerTable, c: Arc<Counters>, seg_max: usize) {
    let sfd = sock.as_raw_fd();
    let mut batch = batch::RecvBatch::default();
    let mut gro = gro::Coalescer::new(seg_max);
    let mut inner_at = [0usize; batch::BATCH];
    let plain = [0u8; vnet::LEN];
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
        // Writes what the coalescer holds; false when the TUN is gone.
        let flush = |gro: &mut gro::Coalescer, batch: &batch::RecvBatch, inner_at: &[usize]| {
            if gro.is_empty() {
                return true;
            }
            let (head, parts) = gro.take();
            let mut v = Vec::with_capacity(parts.len() + 1);
            v.push(IoSlice::new(head));
            for (i, r) in &parts {
                let inner = &batch.packet(*i)[inner_at[*i]..];
                v.push(IoSlice::new(&inner[r.clone()]));
            }
            write_tun(&tun, &v, &c)
        };
        for i in 0..n {
            let pkt = batch.packet(i);
            let Some((src, inner)) = packet::decapsulate(pkt) else {
                c.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            if !t.iter().any(|(_, a)| *a == src) {
                c.non_peer.fetch_add(1, Ordering::Relaxed);
                c.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let at = pkt.len() - inner.len();
            inner_at[i] = at;
            c.rx.fetch_add(1, Ordering::Relaxed);
            if let Some(h) = gro::oversized(&mut batch.packet_mut(i)[at..], seg_max) {
                c.rx_joined.fetch_add(1, Ordering::Relaxed);
                if !flush(&mut gro, &batch, &inner_at) {
                    return;
                }
                let h = h.to_bytes();
                let inner = &batch.packet(i)[at..];
                if !write_tun(&tun, &[IoSlice::new(&h), IoSlice::new(inner)], &c) {
                    return;
                }
                continue;
            }
            let inner = &batch.packet(i)[at..];
            if gro.add(i, inner) {
                continue;
            }
            if !flush(&mut gro, &batch, &inner_at) {
                return;
            }
            if gro.add(i, inner) {
                continue;
            }
            // Not coalescable: as it is, with an all-zero virtio header (no offload).
            if !write_tun(&tun, &[IoSlice::new(&plain), IoSlice::new(inner)], &c) {
                return;
            }
        }
        if !flush(&mut gro, &batch, &inner_at) {
            return;
        }
        drop(t);
        if (HOLD_AFTER..batch::BATCH).contains(&n) {
            // A stream is flowing: let its next packets gather instead of being woken for each
            // (software interrupt moderation; more of them join in one super-packet).
            std::thread::sleep(HOLD);
        }
    }
}
