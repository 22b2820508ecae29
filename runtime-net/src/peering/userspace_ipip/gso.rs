//! Pure handling of the TUN's offloads (`IFF_VNET_HDR`, `TUN_F_CSUM | TUN_F_TSO4`): the kernel
//! hands the data plane TCP super-packets of up to 64 KiB and packets whose checksum is left
//! partial; these functions cut super-packets into MSS-sized IPv4/TCP segments and finish
//! partial checksums, so every packet on the wire is an ordinary, complete one.

/// Length of `struct virtio_net_hdr` in front of every packet on the TUN.
pub const VNET_HDR_LEN: usize = 10;
/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`.
const F_NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_GSO_NONE` / `_TCPV4`; `_ECN` is a flag bit on top.
const GSO_NONE: u8 = 0;
const GSO_TCPV4: u8 = 1;
const GSO_ECN: u8 = 0x80;

/// The fields of `struct virtio_net_hdr` the data plane uses (native endianness, as a legacy
/// TUN writes them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VnetHdr {
    /// Flags (`NEEDS_CSUM`).
    pub flags: u8,
    /// GSO type.
    pub gso_type: u8,
    /// Payload bytes per segment.
    pub gso_size: u16,
    /// Where checksumming starts.
    pub csum_start: u16,
    /// Where the checksum goes, from `csum_start`.
    pub csum_offset: u16,
}

impl VnetHdr {
    /// Reads the header at the start of `b` (at least [`VNET_HDR_LEN`] bytes).
    pub fn parse(b: &[u8]) -> Option<Self> {
        let u = |i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
        (b.len() >= VNET_HDR_LEN).then(|| VnetHdr {
            flags: b[0],
            gso_type: b[1],
            gso_size: u(4),
            csum_start: u(6),
            csum_offset: u(8),
        })
    }
}

/// One's-complement sum of `data` (as 16-bit big-endian words) added to `acc`.
fn sum(mut acc: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc = acc.wrapping_add(u32::from(u16::from_be_bytes([c[0], c[1]])));
        if acc > 0xffff_0000 {
            acc = (acc & 0xffff) + (acc >> 16);
        }
    }
    if let [last] = chunks.remainder() {
        acc = acc.wrapping_add(u32::from(*last) << 8);
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// Turns one packet read from the TUN (after the virtio header `h`) into complete IPv4 packets,
/// appended to `out` with their lengths in `lens`. `None` if the packet cannot be handled (it
/// is then dropped).
pub fn complete(
    h: &VnetHdr,
    pkt: &mut [u8],
    out: &mut Vec<u8>,
    lens: &mut Vec<usize>,
) -> Option<()> {
    match h.gso_type & !GSO_ECN {
        GSO_NONE => {
            if h.flags & F_NEEDS_CSUM != 0 {
                let start = usize::from(h.csum_start);
                let at = start + usize::from(h.csum_offset);
                if at + 2 > pkt.len() {
                    return None;
                }
                // The field holds the pseudo-header sum; summing over it finishes the checksum.
                let c = fold(sum(0, &pkt[start..]));
                pkt[at..at + 2].copy_from_slice(&c.to_be_bytes());
            }
            out.extend_from_slice(pkt);
            lens.push(pkt.len());
            Some(())
        }
        GSO_TCPV4 => segment_tcp4(pkt, usize::from(h.gso_size), out, lens),
        _ => None,
    }
}

/// Cuts an IPv4/TCP super-packet into segments of at most `mss` payload bytes, each with its own
/// IP length, id and header checksum, TCP sequence number, flags and checksum.
pub fn segment_tcp4(
    pkt: &[u8],
    mss: usize,
    out: &mut Vec<u8>,
    lens: &mut Vec<usize>,
) -> Option<()> {
    if pkt.len() < 20 || pkt[0] >> 4 != 4 || pkt[9] != 6 || mss == 0 {
        return None;
    }
    let ihl = usize::from(pkt[0] & 0x0f) * 4;
    let thl = usize::from(*pkt.get(ihl + 12)? >> 4) * 4;
    let hl = ihl + thl;
    if thl < 20 || pkt.len() < hl {
        return None;
    }
    let payload = &pkt[hl..];
    let id = u16::from_be_bytes([pkt[4], pkt[5]]);
    let seq = u32::from_be_bytes([pkt[ihl + 4], pkt[ihl + 5], pkt[ihl + 6], pkt[ihl + 7]]);
    let flags = pkt[ihl + 13];
    let n = payload.len().div_ceil(mss).max(1);
    let pseudo = sum(sum(0, &pkt[12..20]), &[0, 6]);
    for i in 0..n {
        let chunk = &payload[(i * mss).min(payload.len())..((i + 1) * mss).min(payload.len())];
        let start = out.len();
        out.extend_from_slice(&pkt[..hl]);
        out.extend_from_slice(chunk);
        let s = &mut out[start..];
        let total = hl + chunk.len();
        s[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        s[4..6].copy_from_slice(&id.wrapping_add(i as u16).to_be_bytes());
        s[10..12].copy_from_slice(&[0, 0]);
        let c = fold(sum(0, &s[..ihl]));
        s[10..12].copy_from_slice(&c.to_be_bytes());
        let seg_seq = seq.wrapping_add((i * mss) as u32);
        s[ihl + 4..ihl + 8].copy_from_slice(&seg_seq.to_be_bytes());
        let mut f = flags;
        if i + 1 < n {
            f &= !(0x01 | 0x08); // FIN, PSH only on the last segment
        }
        if i > 0 {
            f &= !0x80; // CWR only on the first
        }
        s[ihl + 13] = f;
        s[ihl + 16..ihl + 18].copy_from_slice(&[0, 0]);
        let tcp_len = (total - ihl) as u16;
        let c = fold(sum(sum(pseudo, &tcp_len.to_be_bytes()), &s[ihl..total]));
        s[ihl + 16..ihl + 18].copy_from_slice(&c.to_be_bytes());
        lens.push(total);
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A valid IPv4/TCP packet with `payload`, checksums complete.
    fn tcp_packet(payload: &[u8], flags: u8) -> Vec<u8> {
        let mut p = vec![0u8; 40];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&((40 + payload.len()) as u16).to_be_bytes());
        p[4..6].copy_from_slice(&100u16.to_be_bytes());
        p[6] = 0x40; // DF
        p[8] = 64;
        p[9] = 6;
        p[12..16].copy_from_slice(&[10, 244, 1, 2]);
        p[16..20].copy_from_slice(&[10, 244, 2, 2]);
        p[20..22].copy_from_slice(&5000u16.to_be_bytes());
        p[22..24].copy_from_slice(&80u16.to_be_bytes());
        p[24..28].copy_from_slice(&1000u32.to_be_bytes());
        p[32] = 0x50;
        p[33] = flags;
        p.extend_from_slice(payload);
        let c = fold(sum(0, &p[..20]));
        p[10..12].copy_from_slice(&c.to_be_bytes());
        let c = tcp_csum(&p);
        p[36..38].copy_from_slice(&c.to_be_bytes());
        p
    }

    /// TCP checksum computed the plain way (field zeroed).
    fn tcp_csum(p: &[u8]) -> u16 {
        let mut t = p[20..].to_vec();
        t[16] = 0;
        t[17] = 0;
        let mut pseudo = p[12..20].to_vec();
        pseudo.extend_from_slice(&[0, 6]);
        pseudo.extend_from_slice(&(t.len() as u16).to_be_bytes());
        fold(sum(sum(0, &pseudo), &t))
    }

    #[test]
    fn super_packet_becomes_valid_segments() {
        let payload: Vec<u8> = (0..3000u32).map(|i| (i * 7) as u8).collect();
        let big = tcp_packet(&payload, 0x18); // PSH|ACK
        let (mut out, mut lens) = (Vec::new(), Vec::new());
        let h = VnetHdr {
            gso_type: GSO_TCPV4,
            gso_size: 1400,
            ..VnetHdr::default()
        };
        complete(&h, &mut big.clone(), &mut out, &mut lens).unwrap();
        assert_eq!(lens, vec![1440, 1440, 240]);
        let mut off = 0;
        let mut data = Vec::new();
        for (i, l) in lens.iter().enumerate() {
            let s = &out[off..off + l];
            off += l;
            assert_eq!(u16::from_be_bytes([s[2], s[3]]) as usize, *l);
            assert_eq!(u16::from_be_bytes([s[4], s[5]]), 100 + i as u16);
            assert_eq!(
                fold(sum(0, &s[..20])),
                0,
                "IP header checksum of segment {i}"
            );
            assert_eq!(
                u16::from_be_bytes([s[36], s[37]]),
                tcp_csum(s),
                "TCP checksum of segment {i}"
            );
            let seq = u32::from_be_bytes([s[24], s[25], s[26], s[27]]);
            assert_eq!(seq, 1000 + 1400 * i as u32);
            assert_eq!(s[33] & 0x08 != 0, i == 2, "PSH only on the last");
            data.extend_from_slice(&s[40..]);
        }
        assert_eq!(data, payload);
    }

    #[test]
    fn partial_checksum_is_finished() {
        let full = tcp_packet(b"hello", 0x10);
        let mut partial = full.clone();
        // What the kernel hands over: the pseudo-header sum, not complemented, in the field.
        let mut pseudo = partial[12..20].to_vec();
        pseudo.extend_from_slice(&[0, 6]);
        pseudo.extend_from_slice(&((partial.len() - 20) as u16).to_be_bytes());
        let ps = !fold(sum(0, &pseudo));
        partial[36..38].copy_from_slice(&ps.to_be_bytes());
        let h = VnetHdr {
            flags: F_NEEDS_CSUM,
            csum_start: 20,
            csum_offset: 16,
            ..VnetHdr::default()
        };
        let (mut out, mut lens) = (Vec::new(), Vec::new());
        complete(&h, &mut partial, &mut out, &mut lens).unwrap();
        assert_eq!(out, full);
        assert_eq!(lens, vec![full.len()]);
        // Unknown GSO types are refused.
        let h = VnetHdr {
            gso_type: 3,
            ..VnetHdr::default()
        };
        assert!(complete(&h, &mut full.clone(), &mut out, &mut lens).is_none());
    }
}
