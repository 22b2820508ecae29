//! Reachability probe across the data plane: an ICMP echo from this node's gateway address to
//! the peer's gateway address (the first host of each pod subnet), over a raw ICMP socket.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

/// The gateway address of a pod subnet (its first host).
pub fn gateway(pod_cidr: ipnetwork::Ipv4Network) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(pod_cidr.network()) + 1)
}

/// An ICMP echo request with identifier `id` and sequence `seq`.
pub fn echo_request(id: u16, seq: u16) -> Vec<u8> {
    let mut p = vec![8, 0, 0, 0];
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(b"shimnet-peering-probe");
    let c = checksum(&p);
    p[2..4].copy_from_slice(&c.to_be_bytes());
    p
}

/// Internet checksum (RFC 1071).
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The source address and sequence number of `pkt` (IPv4 header included, as a raw socket
/// returns it) if it is an echo reply with identifier `id`.
pub fn reply_of(pkt: &[u8], id: u16) -> Option<(Ipv4Addr, u16)> {
    if pkt.len() < 20 || pkt[0] >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(pkt[0] & 0x0f) * 4;
    let src = Ipv4Addr::new(pkt[12], pkt[13], pkt[14], pkt[15]);
    let icmp = &pkt[ihl.min(pkt.len())..];
    (icmp.len() >= 8 && icmp[0] == 0 && icmp[4..6] == id.to_be_bytes())
        .then(|| (src, u16::from_be_bytes([icmp[6], icmp[7]])))
}

/// Whether `pkt` is the echo reply to (`id`, `seq`) from `from`.
pub fn is_reply(pkt: &[u8], from: Ipv4Addr, id: u16, seq: u16) -> bool {
    reply_of(pkt, id) == Some((from, seq))
}

/// Sends echo requests from `src` to `dst` until a reply arrives or `timeout` passes.
pub fn ping(src: Ipv4Addr, dst: Ipv4Addr, timeout: Duration) -> std::io::Result<bool> {
    Ok(ping_all(src, &[dst], timeout)?[0])
}

/// Pings every address of `dsts` from `src` at once, over one socket on the calling thread:
/// a round of echo requests to each address still silent every 300 ms, until all answered or
/// `timeout` passes. Element `i` of the answer says whether `dsts[i]` answered. A send that
/// fails (e.g. no route) leaves that address silent for the round.
pub fn ping_all(src: Ipv4Addr, dsts: &[Ipv4Addr], timeout: Duration) -> std::io::Result<Vec<bool>> {
    static CALLS: AtomicU16 = AtomicU16::new(0);
    let mut up = vec![false; dsts.len()];
    if dsts.is_empty() {
        return Ok(up);
    }
    let sock = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4))?;
    sock.bind(&SocketAddr::V4(SocketAddrV4::new(src, 0)).into())?;
    // Distinct per call, so concurrent probes (and other pingers) do not take each other's
    // replies for their own.
    let id = (std::process::id() as u16) ^ CALLS.fetch_add(0x9e37, Ordering::Relaxed);
    let deadline = Instant::now() + timeout;
    let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 1500];
    for seq in 1u16.. {
        for (dst, _) in dsts.iter().zip(&up).filter(|(_, up)| !**up) {
            let to = SocketAddr::V4(SocketAddrV4::new(*dst, 0)).into();
            let _ = sock.send_to(&echo_request(id, seq), &to);
        }
        let round_end = (Instant::now() + Duration::from_millis(300)).min(deadline);
        while let Some(left) = round_end.checked_duration_since(Instant::now()) {
            if left.is_zero() {
                break;
            }
            sock.set_read_timeout(Some(left))?;
            match sock.recv(&mut buf) {
                Ok(n) => {
                    // SAFETY: recv initialised the first n bytes.
                    let got: &[u8] = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast(), n) };
                    let this_probe = |(_, s): &(Ipv4Addr, u16)| (1..=seq).contains(s);
                    if let Some((from, _)) = reply_of(got, id).filter(this_probe) {
                        for (d, u) in dsts.iter().zip(up.iter_mut()) {
                            *u |= *d == from;
                        }
                        if up.iter().all(|u| *u) {
                            return Ok(up);
                        }
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    break
                }
                Err(e) => return Err(e),
            }
        }
        if Instant::now() >= deadline {
            break;
        }
    }
    Ok(up)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_request_checksums_to_zero_and_replies_match() {
        let p = echo_request(0x1234, 7);
        assert_eq!(checksum(&p), 0);
        let mut reply = vec![0x45u8; 20];
        reply[12..16].copy_from_slice(&[10, 2, 0, 1]);
        let mut icmp = p.clone();
        icmp[0] = 0;
        reply.extend_from_slice(&icmp);
        let from = Ipv4Addr::new(10, 2, 0, 1);
        assert!(is_reply(&reply, from, 0x1234, 7));
        assert!(!is_reply(&reply, from, 0x1234, 8));
        assert!(!is_reply(&reply, Ipv4Addr::new(10, 2, 0, 2), 0x1234, 7));
        assert_eq!(gateway("10.2.0.0/24".parse().unwrap()), from);
        assert_eq!(reply_of(&reply, 0x1234), Some((from, 7)));
        assert_eq!(reply_of(&reply, 0x1235), None);
        reply[20] = 8; // a request, not a reply
        assert_eq!(reply_of(&reply, 0x1234), None);
        assert_eq!(reply_of(&reply[..27], 0x1234), None);
    }

    /// Real kernel, in a namespace of its own (loopback up, no other link): both loopback
    /// addresses answer, an address without a route stays silent, and one call answers for
    /// all on the calling thread.
    #[test]
    fn ping_all_answers_for_each_address_in_one_call() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIPPED: ping_all kernel test needs root (a network namespace)");
            return;
        }
        let got = std::thread::spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare");
            // A child forked from this thread starts in its namespace.
            let st = std::process::Command::new("ip")
                .args(["link", "set", "lo", "up"])
                .status()
                .expect("ip");
            assert!(st.success());
            let lo = Ipv4Addr::LOCALHOST;
            let dsts = [lo, Ipv4Addr::new(127, 0, 0, 2), Ipv4Addr::new(192, 0, 2, 1)];
            let t0 = Instant::now();
            let up = ping_all(lo, &dsts, Duration::from_millis(700)).expect("ping_all");
            (
                up,
                t0.elapsed(),
                ping(lo, lo, Duration::from_millis(700)).expect("ping"),
            )
        })
        .join()
        .expect("probe thread");
        assert_eq!(got.0, vec![true, true, false]);
        assert!(got.1 >= Duration::from_millis(650), "waited {:?}", got.1);
        assert!(got.2);
        assert_eq!(
            ping_all(Ipv4Addr::LOCALHOST, &[], Duration::ZERO).unwrap(),
            Vec::<bool>::new()
        );
    }
}
