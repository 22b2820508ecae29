//! ICMP echo over a raw socket, in the calling thread's network namespace.

use std::io::{self, Read};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// The Internet checksum (RFC 1071) of `data`.
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An ICMP echo request with identifier `id` and sequence `seq`.
pub fn echo_request(id: u16, seq: u16) -> Vec<u8> {
    let mut p = vec![8, 0, 0, 0];
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(b"shimnet-probe-payload");
    let c = checksum(&p);
    p[2..4].copy_from_slice(&c.to_be_bytes());
    p
}

/// True if `packet` (IPv4 header + ICMP) is the echo reply from `from` for `id`/`seq`.
pub fn is_reply(packet: &[u8], from: Ipv4Addr, id: u16, seq: u16) -> bool {
    if packet.len() < 20 {
        return false;
    }
    let ihl = usize::from(packet[0] & 0x0f) * 4;
    let src = Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]);
    let icmp = &packet[ihl.min(packet.len())..];
    icmp.len() >= 8
        && src == from
        && icmp[0] == 0
        && u16::from_be_bytes([icmp[4], icmp[5]]) == id
        && u16::from_be_bytes([icmp[6], icmp[7]]) == seq
}

/// Sends one echo request to `target` and waits up to `timeout` for the reply; returns the
/// round-trip time.
pub fn ping(target: Ipv4Addr, timeout: Duration) -> io::Result<Duration> {
    let sock = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4))?;
    let id = (std::process::id() & 0xffff) as u16;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let seq = (nanos.subsec_nanos() >> 10) as u16;
    let start = Instant::now();
    sock.send_to(
        &echo_request(id, seq),
        &SockAddr::from(SocketAddrV4::new(target, 0)),
    )?;
    let mut buf = [0u8; 1500];
    loop {
        let left = timeout
            .checked_sub(start.elapsed())
            .filter(|d| !d.is_zero());
        let Some(left) = left else {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no echo reply from {target}"),
            ));
        };
        sock.set_read_timeout(Some(left))?;
        let n = match (&sock).read(&mut buf) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(e) => return Err(e),
        };
        if is_reply(&buf[..n], target, id, seq) {
            return Ok(start.elapsed());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_checksum_verifies() {
        let p = echo_request(0x1234, 7);
        assert_eq!(checksum(&p), 0, "a packet with its checksum sums to zero");
    }

    #[test]
    fn reply_matching() {
        let mut pkt = vec![
            0x45, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0, 10, 0, 0, 2, 10, 0, 0, 1,
        ];
        pkt.extend_from_slice(&[0, 0, 0, 0, 0x12, 0x34, 0, 7]);
        let from = Ipv4Addr::new(10, 0, 0, 2);
        assert!(is_reply(&pkt, from, 0x1234, 7));
        assert!(!is_reply(&pkt, from, 0x1234, 8));
        assert!(!is_reply(&pkt, Ipv4Addr::new(10, 0, 0, 3), 0x1234, 7));
        pkt[20] = 8;
        assert!(!is_reply(&pkt, from, 0x1234, 7));
    }
}
