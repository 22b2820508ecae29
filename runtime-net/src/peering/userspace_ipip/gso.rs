//! Transmit side of the TUN's offloads (pure): the kernel hands the data plane TCP and UDP
//! super-packets of up to 64 KiB (`TUN_F_TSO4`, `TUN_F_USO4`) and packets whose checksum is
//! left partial (`TUN_F_CSUM`). [`plan`] turns one of them into the ordinary, complete IPv4
//! packets the wire carries, without copying payload: each wire packet is a freshly built
//! header (in a header arena) followed by a range of the super-packet's payload, ready for one
//! scatter-gather `sendmmsg` entry.

use std::ops::Range;

use super::csum::{add, fold};
use super::vnet::{VnetHdr, F_NEEDS_CSUM, GSO_ECN, GSO_NONE, GSO_TCPV4, GSO_UDP_L4};

/// One wire packet: `hdr` bytes of the header arena, then `payload` bytes of the packet read
/// from the TUN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seg {
    /// Range in the header arena (empty: the payload range is the whole packet).
    pub hdr: Range<usize>,
    /// Range in the packet read from the TUN.
    pub payload: Range<usize>,
}

const TCP: u8 = 6;
const UDP: u8 = 17;

/// Appends the wire packets of `pkt` (one packet read from the TUN, after its virtio header
/// `h`) to `out`, their headers to `hdrs`. A partial checksum of an unsegmented packet is
/// finished in place. `None` if the packet cannot be carried (not IPv4, malformed, an unknown
/// offload): it is then dropped.
pub fn plan(h: &VnetHdr, pkt: &mut [u8], hdrs: &mut Vec<u8>, out: &mut Vec<Seg>) -> Option<()> {
    if pkt.len() < 20 || pkt[0] >> 4 != 4 {
        return None;
    }
    match h.gso_type & !GSO_ECN {
        GSO_NONE => {
            if h.flags & F_NEEDS_CSUM != 0 {
                let start = usize::from(h.csum_start);
                let at = start.checked_add(usize::from(h.csum_offset))?;
                if at + 2 > pkt.len() {
                    return None;
                }
                // The field holds the pseudo-header sum; summing over it finishes the checksum.
                let c = fold(add(0, &pkt[start..]));
                pkt[at..at + 2].copy_from_slice(&c.to_be_bytes());
            }
            out.push(Seg {
                hdr: 0..0,
                payload: 0..pkt.len(),
            });
            Some(())
        }
        GSO_TCPV4 => segment(pkt, TCP, usize::from(h.gso_size), hdrs, out),
        GSO_UDP_L4 => segment(pkt, UDP, usize::from(h.gso_size), hdrs, out),
        _ => None,
    }
}

/// IPv4 header length, transport header length of a TCP or UDP packet.
fn header_lengths(pkt: &[u8], proto: u8) -> Option<(usize, usize)> {
    if pkt[9] != proto {
        return None;
    }
    let ihl = usize::from(pkt[0] & 0x0f) * 4;
    let thl = match proto {
        TCP => usize::from(*pkt.get(ihl + 12)? >> 4) * 4,
        _ => 8,
    };
    (ihl >= 20 && thl >= 8 && pkt.len() >= ihl + thl).then_some((ihl, thl))
}

/// Cuts a TCP or UDP super-packet into segments of at most `mss` payload bytes, each with its own
/// IP length, id and header checksum, and (TCP) sequence number and flags or (UDP) length, and
/// its transport checksum.
fn segment(
    pkt: &[u8],
    proto: u8,
    mss: usize,
    hdrs: &mut Vec<u8>,
    out: &mut Vec<Seg>,
) -> Option<()> {
    let (ihl, thl) = header_lengths(pkt, proto)?;
    if mss == 0 {
        return None;
    }
    let hl = ihl + thl;
    let payload = hl..pkt.len();
    let id = u16::from_be_bytes([pkt[4], pkt[5]]);
    let seq = u32::from_be_bytes([pkt[ihl + 4], pkt[ihl + 5], pkt[ihl + 6], pkt[ihl + 7]]);
    let flags = pkt[ihl + 13];
    let n = payload.len().div_ceil(mss).max(1);
    let pseudo = add(add(0, &pkt[12..20]), &[0, proto]);
    for i in 0..n {
        let chunk = (hl + i * mss).min(pkt.len())..(hl + (i + 1) * mss).min(pkt.len());
        let start = hdrs.len();
        hdrs.extend_from_slice(&pkt[..hl]);
        let s = &mut hdrs[start..];
        let total = hl + chunk.len();
        s[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        s[4..6].copy_from_slice(&id.wrapping_add(i as u16).to_be_bytes());
        s[10..12].copy_from_slice(&[0, 0]);
        let c = fold(add(0, &s[..ihl]));
        s[10..12].copy_from_slice(&c.to_be_bytes());
        let t = &mut s[ihl..];
        let check_at = if proto == TCP {
            t[4..8].copy_from_slice(&seq.wrapping_add((i * mss) as u32).to_be_bytes());
            let mut f = flags;
            if i + 1 < n {
                f &= !(0x01 | 0x08); // FIN, PSH only on the last segment
            }
            if i > 0 {
                f &= !0x80; // CWR only on the first
            }
            t[13] = f;
            16
        } else {
            t[4..6].copy_from_slice(&((thl + chunk.len()) as u16).to_be_bytes());
            6
        };
        t[check_at..check_at + 2].copy_from_slice(&[0, 0]);
        let l4_len = (total - ihl) as u16;
        let sum = add(
            add(add(pseudo, &l4_len.to_be_bytes()), t),
            &pkt[chunk.clone()],
        );
        let mut c = fold(sum);
        if proto == UDP && c == 0 {
            c = 0xffff; // zero means "no checksum" in UDP
        }
        t[check_at..check_at + 2].copy_from_slice(&c.to_be_bytes());
        out.push(Seg {
            hdr: start..start + hl,
            payload: chunk,
        });
    }
    Some(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A valid IPv4 packet of `proto` (TCP with a 20-byte header, UDP) carrying `payload`,
    /// checksums complete.
    pub(crate) fn packet(proto: u8, payload: &[u8], flags: u8) -> Vec<u8> {
        let thl = if proto == TCP { 20 } else { 8 };
        let mut p = vec![0u8; 20 + thl];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&((20 + thl + payload.len()) as u16).to_be_bytes());
        p[4..6].copy_from_slice(&100u16.to_be_bytes());
        p[6] = 0x40; // DF
        p[8] = 64;
        p[9] = proto;
        p[12..16].copy_from_slice(&[10, 244, 1, 2]);
        p[16..20].copy_from_slice(&[10, 244, 2, 2]);
        p[20..22].copy_from_slice(&5000u16.to_be_bytes());
        p[22..24].copy_from_slice(&80u16.to_be_bytes());
        if proto == TCP {
            p[24..28].copy_from_slice(&1000u32.to_be_bytes());
            p[32] = 0x50;
            p[33] = flags;
        } else {
            p[24..26].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        }
        p.extend_from_slice(payload);
        let c = fold(add(0, &p[..20]));
        p[10..12].copy_from_slice(&c.to_be_bytes());
        let at = check_at(&p);
        let c = l4_csum(&p);
        p[at..at + 2].copy_from_slice(&c.to_be_bytes());
        p
    }

    fn check_at(p: &[u8]) -> usize {
        if p[9] == TCP {
            36
        } else {
            26
        }
    }

    /// Transport checksum computed the plain way (field zeroed).
    pub(crate) fn l4_csum(p: &[u8]) -> u16 {
        let mut t = p[20..].to_vec();
        let at = check_at(p) - 20;
        t[at] = 0;
        t[at + 1] = 0;
        let mut pseudo = p[12..20].to_vec();
        pseudo.extend_from_slice(&[0, p[9]]);
        pseudo.extend_from_slice(&(t.len() as u16).to_be_bytes());
        fold(add(add(0, &pseudo), &t))
    }

    /// The wire packets of a plan, each as one byte vector.
    fn assemble(pkt: &[u8], hdrs: &[u8], segs: &[Seg]) -> Vec<Vec<u8>> {
        segs.iter()
            .map(|s| {
                let mut v = hdrs[s.hdr.clone()].to_vec();
                v.extend_from_slice(&pkt[s.payload.clone()]);
                v
            })
            .collect()
    }

    fn check_segments(wire: &[Vec<u8>], payload: &[u8], sizes: &[usize]) {
        let mut data = Vec::new();
        for (i, s) in wire.iter().enumerate() {
            assert_eq!(s.len(), sizes[i], "length of segment {i}");
            assert_eq!(u16::from_be_bytes([s[2], s[3]]) as usize, s.len());
            assert_eq!(u16::from_be_bytes([s[4], s[5]]), 100 + i as u16);
            assert_eq!(fold(add(0, &s[..20])), 0, "IP header checksum of {i}");
            let at = check_at(s);
            assert_eq!(
                u16::from_be_bytes([s[at], s[at + 1]]),
                l4_csum(s),
                "transport checksum of segment {i}"
            );
            let hl = if s[9] == TCP { 40 } else { 28 };
            data.extend_from_slice(&s[hl..]);
        }
        assert_eq!(data, payload);
    }

    #[test]
    fn tcp_super_packet_becomes_valid_segments() {
        let payload: Vec<u8> = (0..3001u32).map(|i| (i * 7) as u8).collect();
        let mut big = packet(TCP, &payload, 0x18 | 0x80); // CWR|PSH|ACK
        let (mut hdrs, mut segs) = (Vec::new(), Vec::new());
        let h = VnetHdr {
            gso_type: GSO_TCPV4 | GSO_ECN,
            gso_size: 1400,
            ..VnetHdr::default()
        };
        plan(&h, &mut big, &mut hdrs, &mut segs).unwrap();
        let wire = assemble(&big, &hdrs, &segs);
        check_segments(&wire, &payload, &[1440, 1440, 241]);
        for (i, s) in wire.iter().enumerate() {
            let seq = u32::from_be_bytes([s[24], s[25], s[26], s[27]]);
            assert_eq!(seq, 1000 + 1400 * i as u32);
            assert_eq!(s[33] & 0x08 != 0, i == 2, "PSH only on the last");
            assert_eq!(s[33] & 0x80 != 0, i == 0, "CWR only on the first");
        }
    }

    #[test]
    fn udp_super_packet_becomes_datagrams() {
        let payload: Vec<u8> = (0..2500u32).map(|i| (i * 13) as u8).collect();
        let mut big = packet(UDP, &payload, 0);
        let (mut hdrs, mut segs) = (Vec::new(), Vec::new());
        let h = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_UDP_L4,
            gso_size: 1000,
            ..VnetHdr::default()
        };
        plan(&h, &mut big, &mut hdrs, &mut segs).unwrap();
        let wire = assemble(&big, &hdrs, &segs);
        check_segments(&wire, &payload, &[1028, 1028, 528]);
        for s in &wire {
            assert_eq!(u16::from_be_bytes([s[24], s[25]]) as usize, s.len() - 20);
        }
    }

    #[test]
    fn partial_checksum_is_finished_in_place() {
        let full = packet(TCP, b"hello", 0x10);
        let mut partial = full.clone();
        // What the kernel hands over: the pseudo-header sum, not complemented, in the field.
        let mut pseudo = partial[12..20].to_vec();
        pseudo.extend_from_slice(&[0, 6]);
        pseudo.extend_from_slice(&((partial.len() - 20) as u16).to_be_bytes());
        let ps = !fold(add(0, &pseudo));
        partial[36..38].copy_from_slice(&ps.to_be_bytes());
        let h = VnetHdr {
            flags: F_NEEDS_CSUM,
            csum_start: 20,
            csum_offset: 16,
            ..VnetHdr::default()
        };
        let (mut hdrs, mut segs) = (Vec::new(), Vec::new());
        plan(&h, &mut partial, &mut hdrs, &mut segs).unwrap();
        assert_eq!(partial, full);
        assert_eq!(
            segs,
            vec![Seg {
                hdr: 0..0,
                payload: 0..full.len()
            }]
        );
        assert!(hdrs.is_empty());
    }

    #[test]
    fn refuses_what_it_cannot_carry() {
        let (mut hdrs, mut segs) = (Vec::new(), Vec::new());
        let mut p = packet(TCP, b"x", 0x10);
        // Unknown GSO type (TCPv6 = 4), zero segment size, a checksum offset past the end.
        for h in [
            VnetHdr {
                gso_type: 4,
                ..VnetHdr::default()
            },
            VnetHdr {
                gso_type: GSO_TCPV4,
                ..VnetHdr::default()
            },
            VnetHdr {
                flags: F_NEEDS_CSUM,
                csum_start: 40,
                csum_offset: 16,
                ..VnetHdr::default()
            },
        ] {
            assert!(plan(&h, &mut p, &mut hdrs, &mut segs).is_none(), "{h:?}");
        }
        // IPv6 cannot ride in IPIP; a UDP offload on a TCP packet is refused.
        let mut v6 = vec![0x60; 60];
        assert!(plan(&VnetHdr::default(), &mut v6, &mut hdrs, &mut segs).is_none());
        let h = VnetHdr {
            gso_type: GSO_UDP_L4,
            gso_size: 100,
            ..VnetHdr::default()
        };
        assert!(plan(&h, &mut p, &mut hdrs, &mut segs).is_none());
        assert!(segs.is_empty());
    }
}
