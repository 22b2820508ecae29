//! Hand-built encapsulated packets for the attacker tests, sent from a namespace with plain
//! sockets (a UDP socket for VXLAN, a raw IP-protocol-4 socket for IPIP: the kernel adds the
//! outer IPv4 header with the sender's real underlay address), and a UDP listener in a
//! container that counts what arrives, told apart by payload prefix.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use shimnet::ping::checksum;
use socket2::{Domain, Protocol, Socket, Type};

/// Payload prefix of forged datagrams.
pub const FORGED: &str = "forged";
/// Payload prefix of legitimate datagrams.
pub const LEGIT: &str = "legit";

/// An IPv4 + UDP packet (valid header checksum, UDP checksum 0 = none, DF, TTL 64).
pub fn ipv4_udp(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let total = 20 + 8 + payload.len();
    let mut p = vec![0u8; 20];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[4..6].copy_from_slice(&0x5eedu16.to_be_bytes());
    p[6] = 0x40;
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    let c = checksum(&p);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p.extend_from_slice(&sport.to_be_bytes());
    p.extend_from_slice(&dport.to_be_bytes());
    p.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    p
}

/// A VXLAN payload (RFC 7348: flags with the I bit, VNI) carrying an Ethernet frame
/// `src_mac → dst_mac` with the IPv4 packet `inner`.
pub fn vxlan(vni: u32, dst_mac: [u8; 6], src_mac: [u8; 6], inner: &[u8]) -> Vec<u8> {
    let v = vni.to_be_bytes();
    let mut f = vec![0x08, 0, 0, 0, v[1], v[2], v[3], 0];
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(inner);
    f
}

/// The VXLAN device MAC of the node with underlay address `addr` (`02:5e` + the address).
pub fn vxlan_mac(addr: Ipv4Addr) -> [u8; 6] {
    let o = addr.octets();
    [0x02, 0x5e, o[0], o[1], o[2], o[3]]
}

/// Sends each of `frames` from namespace `ns` (source `from`, any port) to UDP `to:port`,
/// `gap` apart, without UDP checksum (as VXLAN devices send: a receiving node's decapsulating
/// program judges such datagrams itself instead of leaving them to its stack).
pub fn send_udp(
    ns: &Path,
    from: Ipv4Addr,
    to: Ipv4Addr,
    port: u16,
    frames: &[Vec<u8>],
    gap: Duration,
) {
    let frames = frames.to_vec();
    shimnet::netns::run_in(ns, move || {
        let s = UdpSocket::bind((from, 0)).expect("bind UDP");
        let on: libc::c_int = 1;
        // SAFETY: a valid socket and an int option of the right size.
        let r = unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&s),
                libc::SOL_SOCKET,
                libc::SO_NO_CHECK,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(r, 0, "SO_NO_CHECK: {}", std::io::Error::last_os_error());
        for f in &frames {
            s.send_to(f, (to, port)).expect("send UDP");
            std::thread::sleep(gap);
        }
    })
    .unwrap();
}

/// Sends each of `inner` (IPv4 packets) from namespace `ns` as IPIP to `to`: a raw socket of
/// IP protocol 4 bound to `from`, so the outer header is `from → to`, protocol 4.
pub fn send_ipip(ns: &Path, from: Ipv4Addr, to: Ipv4Addr, inner: &[Vec<u8>], gap: Duration) {
    let inner = inner.to_vec();
    shimnet::netns::run_in(ns, move || {
        let s = Socket::new(
            Domain::IPV4,
            Type::RAW,
            Some(Protocol::from(libc::IPPROTO_IPIP)),
        )
        .expect("raw IPIP socket");
        s.bind(&SocketAddr::V4(SocketAddrV4::new(from, 0)).into())
            .expect("bind raw socket");
        let dst = SocketAddr::V4(SocketAddrV4::new(to, 0)).into();
        for p in &inner {
            s.send_to(p, &dst).expect("send IPIP");
            std::thread::sleep(gap);
        }
    })
    .unwrap();
}

/// Datagrams counted by a [`Counter`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Payloads starting with [`FORGED`].
    pub forged: usize,
    /// Payloads starting with [`LEGIT`].
    pub legit: usize,
}

/// A UDP listener in a container namespace counting forged and legitimate datagrams.
pub struct Counter {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Counts>>,
}

impl Counter {
    /// Listens on `ip:port` in the namespace at `ns` until [`Counter::finish`].
    pub fn start(ns: &Path, ip: Ipv4Addr, port: u16) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (path, flag): (PathBuf, _) = (ns.to_path_buf(), stop.clone());
        let thread = std::thread::spawn(move || {
            shimnet::netns::run_in(&path, move || {
                let s = UdpSocket::bind((ip, port)).expect("bind counter");
                s.set_read_timeout(Some(Duration::from_millis(100)))
                    .unwrap();
                ready_tx.send(()).unwrap();
                let mut c = Counts::default();
                let mut buf = [0u8; 2048];
                while !flag.load(Ordering::Relaxed) {
                    if let Ok(n) = s.recv(&mut buf) {
                        if buf[..n].starts_with(FORGED.as_bytes()) {
                            c.forged += 1;
                        } else if buf[..n].starts_with(LEGIT.as_bytes()) {
                            c.legit += 1;
                        }
                    }
                }
                c
            })
            .unwrap()
        });
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("counter listening");
        Counter {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops listening and returns the counts.
    pub fn finish(mut self) -> Counts {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for Counter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
