//! Receive side of the TUN's offloads (pure): what is written to the TUN should be as few, as
//! large packets as possible, each described by a virtio header so the kernel segments it only
//! if it must.
//!
//! Two sources of large packets: [`Coalescer`] joins consecutive in-order TCP segments of one
//! flow taken off the wire (GRO in userspace), and [`oversized`] handles an inner packet longer
//! than the wire carries, which the underlay already joined: a NIC with GRO on hands the raw
//! socket one IPIP packet carrying a TCP super-packet (checksum left partial when it was
//! delivered locally, complete when a router joined and forwarded it).

use std::ops::Range;

use super::csum::{add, fold};
use super::vnet::{self, VnetHdr, F_NEEDS_CSUM, GSO_ECN, GSO_TCPV4};

/// Largest IPv4 packet (total length is 16 bits), less room to be safe.
const MAX_TOTAL: usize = 65_000;
/// Most segments joined into one super-packet (as the kernel's GRO).
pub const MAX_PARTS: usize = 64;

/// The pseudo-header sum of an IPv4/TCP packet (`ihl` bytes of IP header), folded and not
/// complemented: what the checksum field holds while the checksum is partial.
fn partial_tcp_csum(p: &[u8], ihl: usize) -> u16 {
    let tcp_len = (p.len() - ihl) as u16;
    !fold(add(
        add(add(0, &p[12..20]), &[0, 6]),
        &tcp_len.to_be_bytes(),
    ))
}

/// An inner packet longer than `seg_max` (the largest the wire carries: the underlay MTU less
/// the outer header), which only the underlay's GRO (or reassembly) can have made. Written as it
/// is, the kernel would drop it at the first device of smaller MTU; an IPv4/TCP one is instead
/// described as a super-packet to segment at the wire's size: its checksum is made partial
/// (the kernel left it so, or it is verified here and rewritten). `None` for a packet the wire
/// carries, a non-TCP one, or one whose checksum is wrong (written as it is, the kernel drops
/// it).
pub fn oversized(p: &mut [u8], seg_max: usize) -> Option<VnetHdr> {
    if p.len() <= seg_max || p.len() < 40 || p[0] >> 4 != 4 || p[9] != 6 {
        return None;
    }
    let ihl = usize::from(p[0] & 0x0f) * 4;
    let thl = usize::from(*p.get(ihl + 12)? >> 4) * 4;
    let hl = ihl + thl;
    if ihl < 20
        || thl < 20
        || p.len() <= hl
        || hl >= seg_max
        || usize::from(u16::from_be_bytes([p[2], p[3]])) != p.len()
        || u16::from_be_bytes([p[6], p[7]]) & 0x3fff != 0
    {
        return None;
    }
    let at = ihl + 16;
    let check = u16::from_be_bytes([p[at], p[at + 1]]);
    let partial = partial_tcp_csum(p, ihl);
    if check != partial {
        // Complete checksum: verify it, then leave the partial form the virtio header promises.
        let tcp_len = (p.len() - ihl) as u16;
        let pseudo = add(add(add(0, &p[12..20]), &[0, 6]), &tcp_len.to_be_bytes());
        if fold(add(pseudo, &p[ihl..])) != 0 {
            return None;
        }
        p[at..at + 2].copy_from_slice(&partial.to_be_bytes());
    }
    let ecn = if p[ihl + 13] & 0x80 != 0 { GSO_ECN } else { 0 };
    Some(VnetHdr {
        flags: F_NEEDS_CSUM,
        gso_type: GSO_TCPV4 | ecn,
        hdr_len: hl as u16,
        gso_size: (seg_max - hl) as u16,
        csum_start: ihl as u16,
        csum_offset: 16,
    })
}

/// Header length and payload length of a TCP segment that may be coalesced: IPv4 without
/// options or fragmentation, TCP with only ACK (and PSH) set, some payload, checksum intact
/// (the super-packet's checksum is left for the kernel to trust, so each segment must be).
fn candidate(p: &[u8]) -> Option<(usize, usize)> {
    if p.len() < 40 || p[0] != 0x45 || p[9] != 6 {
        return None;
    }
    let total = usize::from(u16::from_be_bytes([p[2], p[3]]));
    if total != p.len() || u16::from_be_bytes([p[6], p[7]]) & 0x3fff != 0 {
        return None;
    }
    let thl = usize::from(p[32] >> 4) * 4;
    let hl = 20 + thl;
    if thl < 20 || p.len() <= hl || p[33] & !0x08 != 0x10 {
        return None;
    }
    let tcp_len = (p.len() - 20) as u16;
    let pseudo = add(add(add(0, &p[12..20]), &[0, 6]), &tcp_len.to_be_bytes());
    if fold(add(pseudo, &p[20..])) != 0 {
        return None;
    }
    Some((hl, p.len() - hl))
}

fn seq_of(p: &[u8]) -> u32 {
    u32::from_be_bytes([p[24], p[25], p[26], p[27]])
}

/// Joins consecutive in-order TCP segments of one flow into one super-packet without copying
/// their payload: it keeps the first segment's headers (behind room for the virtio header) and
/// the payload range of every segment, each named by the caller's packet index.
pub struct Coalescer {
    /// Largest packet the wire carries: the super-packet is never cut into larger ones.
    seg_max: usize,
    /// Virtio header room, then the first segment's IP and TCP headers.
    head: Vec<u8>,
    /// (packet index, payload range within that packet) of every segment held.
    parts: Vec<(usize, Range<usize>)>,
    /// Payload bytes of the first segment (every segment but the last has exactly this many).
    mss: usize,
    /// Payload bytes of the last segment taken.
    last: usize,
    /// Payload bytes held.
    bytes: usize,
    /// Sequence number the next segment must carry.
    next_seq: u32,
}

impl Coalescer {
    /// A coalescer for segments of at most `seg_max` bytes (the largest inner packet the wire
    /// carries).
    pub fn new(seg_max: usize) -> Self {
        Coalescer {
            seg_max,
            head: Vec::new(),
            parts: Vec::new(),
            mss: 0,
            last: 0,
            bytes: 0,
            next_seq: 0,
        }
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// Takes segment `p` (the caller's packet `idx`) if it continues the held super-packet or
    /// starts one; `false` if it does not (then call [`Coalescer::take`] and offer it again,
    /// or write it as it is).
    pub fn add(&mut self, idx: usize, p: &[u8]) -> bool {
        let Some((hl, len)) = candidate(p).filter(|_| p.len() <= self.seg_max) else {
            return false;
        };
        if self.parts.is_empty() {
            self.head.clear();
            self.head.resize(vnet::LEN, 0);
            self.head.extend_from_slice(&p[..hl]);
            self.parts.push((idx, hl..p.len()));
            self.mss = len;
            self.last = len;
            self.bytes = len;
            self.next_seq = seq_of(p).wrapping_add(len as u32);
            return true;
        }
        let held = &self.head[vnet::LEN..];
        let same = held.len() == hl
            && held[1] == p[1] // TOS
            && held[6] == p[6] // DF
            && held[8] == p[8] // TTL
            && held[12..20] == p[12..20] // addresses
            && held[20..24] == p[20..24] // ports
            && held[28..32] == p[28..32] // ack
            && held[34..36] == p[34..36] // window
            && held[40..hl] == p[40..hl] // options
            && held[33] & 0x08 == 0; // nothing after a PSH
        if !same
            || self.last != self.mss
            || len > self.mss
            || seq_of(p) != self.next_seq
            || hl + self.bytes + len > MAX_TOTAL
            || self.parts.len() == MAX_PARTS
        {
            return false;
        }
        self.parts.push((idx, hl..p.len()));
        self.head[vnet::LEN + 33] |= p[33] & 0x08;
        self.last = len;
        self.bytes += len;
        self.next_seq = self.next_seq.wrapping_add(len as u32);
        true
    }

    /// The held packet, ready for the TUN: the virtio header and the headers to write first,
    /// then the payload ranges (packet index, range) to write after them, in order. Empties
    /// the coalescer (the next [`Coalescer::add`] starts anew).
    pub fn take(&mut self) -> (&[u8], Vec<(usize, Range<usize>)>) {
        let parts = std::mem::take(&mut self.parts);
        if parts.len() <= 1 {
            // A lone segment goes as it came: virtio header all zero, checksums complete.
            return (&self.head, parts);
        }
        let hl = self.head.len() - vnet::LEN;
        let total = hl + self.bytes;
        let (h, p) = self.head.split_at_mut(vnet::LEN);
        h.copy_from_slice(
            &VnetHdr {
                flags: F_NEEDS_CSUM,
                gso_type: GSO_TCPV4,
                hdr_len: hl as u16,
                gso_size: self.mss.min(self.seg_max - hl) as u16,
                csum_start: 20,
                csum_offset: 16,
            }
            .to_bytes(),
        );
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p[10..12].copy_from_slice(&[0, 0]);
        let c = fold(add(0, &p[..20]));
        p[10..12].copy_from_slice(&c.to_be_bytes());
        // Partial checksum: the pseudo-header sum, not complemented; the kernel finishes it.
        let tcp_len = (total - 20) as u16;
        let ps = !fold(add(
            add(add(0, &p[12..20]), &[0, 6]),
            &tcp_len.to_be_bytes(),
        ));
        p[36..38].copy_from_slice(&ps.to_be_bytes());
        (&self.head, parts)
    }
}

#[cfg(test)]
mod tests {
    use super::super::gso::tests::{l4_csum, packet};
    use super::super::gso::{plan, Seg};
    use super::*;

    fn segment(seq: u32, payload: &[u8], flags: u8) -> Vec<u8> {
        let mut p = packet(6, payload, flags);
        p[24..28].copy_from_slice(&seq.to_be_bytes());
        let c = l4_csum(&p);
        p[36..38].copy_from_slice(&c.to_be_bytes());
        p
    }

    /// What a writev of `take`'s result puts on the TUN.
    fn written(head: &[u8], parts: &[(usize, Range<usize>)], pkts: &[&[u8]]) -> Vec<u8> {
        let mut out = head.to_vec();
        for (i, r) in parts {
            out.extend_from_slice(&pkts[*i][r.clone()]);
        }
        out
    }

    /// The kernel's side: a super-packet with a partial checksum, segmented at `mss`.
    fn kernel_segments(super_packet: &[u8], mss: u16) -> Vec<Vec<u8>> {
        let mut full = super_packet.to_vec();
        let h = VnetHdr {
            gso_type: GSO_TCPV4,
            gso_size: mss,
            ..VnetHdr::default()
        };
        let (mut hdrs, mut segs) = (Vec::new(), Vec::new());
        plan(&h, &mut full, &mut hdrs, &mut segs).unwrap();
        segs.iter()
            .map(|Seg { hdr, payload }| {
                let mut v = hdrs[hdr.clone()].to_vec();
                v.extend_from_slice(&full[payload.clone()]);
                v
            })
            .collect()
    }

    #[test]
    fn in_order_segments_coalesce_and_split_back_to_the_same_bytes() {
        let mut g = Coalescer::new(1480);
        let a = segment(1000, &[1; 1000], 0x10);
        let b = segment(2000, &[2; 1000], 0x10);
        let c = segment(3000, &[3; 500], 0x18);
        let pkts: [&[u8]; 3] = [&a, &b, &c];
        assert!(g.add(0, &a) && g.add(1, &b) && g.add(2, &c));
        // Nothing continues a PSH, a short segment, or a gap.
        assert!(!g.add(3, &segment(3500, &[4; 10], 0x10)));
        let (head, parts) = g.take();
        let out = written(head, &parts, &pkts);
        assert!(g.is_empty());
        let h = VnetHdr::parse(&out).unwrap();
        assert_eq!(
            (h.flags, h.gso_type, h.gso_size, h.hdr_len),
            (F_NEEDS_CSUM, GSO_TCPV4, 1000, 40)
        );
        assert_eq!((h.csum_start, h.csum_offset), (20, 16));
        let p = &out[vnet::LEN..];
        assert_eq!(p.len(), 40 + 2500);
        assert_eq!(u16::from_be_bytes([p[2], p[3]]), 2540);
        assert_eq!(fold(add(0, &p[..20])), 0);
        assert_eq!(p[33], 0x18, "PSH of the last segment kept");
        assert_eq!(
            u16::from_be_bytes([p[36], p[37]]),
            partial_tcp_csum(p, 20),
            "partial checksum"
        );
        // What the kernel would do with it: segmenting gives back the three segments.
        let segs = kernel_segments(p, 1000);
        assert_eq!(segs.len(), 3);
        assert_eq!(&segs[1][40..], &b[40..]);
        assert_eq!(&segs[2][40..], &c[40..]);
        assert_eq!(
            l4_csum(&segs[2]),
            u16::from_be_bytes([segs[2][36], segs[2][37]])
        );
    }

    #[test]
    fn only_what_continues_the_flow_is_taken() {
        let mut g = Coalescer::new(1480);
        let a = segment(1000, &[1; 1000], 0x10);
        let b = segment(2000, &[2; 1000], 0x10);
        // Gaps, other flows and non-TCP are not taken.
        assert!(g.add(0, &a));
        assert!(!g.add(1, &segment(2500, &[2; 1000], 0x10)));
        let mut other = b.clone();
        other[20] ^= 1;
        assert!(!g.add(1, &other));
        let (head, parts) = g.take();
        let lone = written(head, &parts, &[&a]);
        assert_eq!(&lone[..vnet::LEN], &[0; vnet::LEN]);
        assert_eq!(&lone[vnet::LEN..], &a[..]);
        let mut syn = a.clone();
        syn[33] = 0x02;
        assert!(!g.add(0, &syn));
        // A segment damaged on the wire is never merged (its checksum would be trusted).
        let mut bad = a.clone();
        bad[100] ^= 0xff;
        assert!(!g.add(0, &bad));
        assert!(g.add(0, &a));
        assert!(!g.is_empty());
    }

    #[test]
    fn a_packet_joined_by_the_underlay_becomes_a_super_packet_of_wire_sized_segments() {
        // Segments of 1000 joined by the kernel: lengths summed, partial checksum.
        let payload: Vec<u8> = (0..2500u32).map(|i| (i * 3) as u8).collect();
        let complete = packet(6, &payload, 0x10);
        let mut joined = complete.clone();
        let ps = partial_tcp_csum(&joined, 20);
        joined[36..38].copy_from_slice(&ps.to_be_bytes());
        let seg_max = 1480; // underlay MTU 1500 less the outer header
        let want = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_TCPV4,
            hdr_len: 40,
            gso_size: 1440,
            csum_start: 20,
            csum_offset: 16,
        };
        let mut p = joined.clone();
        assert_eq!(oversized(&mut p, seg_max), Some(want));
        assert_eq!(p, joined, "a partial checksum stays as it is");
        let segs = kernel_segments(&p, want.gso_size);
        assert_eq!(segs.iter().map(Vec::len).collect::<Vec<_>>(), [1480, 1100]);
        // Joined and forwarded by a router: the checksum is complete; it is verified and made
        // partial.
        let mut p = complete.clone();
        assert_eq!(oversized(&mut p, seg_max), Some(want));
        assert_eq!(p, joined);
        // A damaged one is left for the kernel to drop.
        let mut bad = complete.clone();
        bad[500] ^= 1;
        assert_eq!(oversized(&mut bad.clone(), seg_max), None);
        // A packet the wire carries, non-TCP, a fragment: not for this path.
        assert_eq!(oversized(&mut joined.clone(), 2540), None);
        let mut udp = packet(17, &payload, 0);
        assert_eq!(oversized(&mut udp, seg_max), None);
        let mut frag = joined.clone();
        frag[6] |= 0x20; // more fragments
        assert_eq!(oversized(&mut frag, seg_max), None);
        // CWR on the joined packet asks for ECN segmentation.
        let mut cwr = joined.clone();
        cwr[33] |= 0x80;
        assert_eq!(
            oversized(&mut cwr, seg_max).unwrap().gso_type,
            GSO_TCPV4 | GSO_ECN
        );
    }

    #[test]
    fn coalesced_segments_are_never_cut_larger_than_the_wire_carries() {
        // Segments of 1400 on a wire that carries 1200-byte packets (a path MTU change).
        let mut g = Coalescer::new(1200);
        let a = segment(1000, &[1; 1400], 0x10);
        assert!(
            !g.add(0, &a),
            "a segment longer than the wire carries is not taken"
        );
        let mut g = Coalescer::new(1480);
        let b = segment(2400, &[2; 1400], 0x10);
        assert!(g.add(0, &a) && g.add(1, &b));
        g.seg_max = 1200;
        let (head, _) = g.take();
        assert_eq!(VnetHdr::parse(head).unwrap().gso_size, 1160);
    }
}
