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

/// Receive-side coalescing (GRO): consecutive in-order TCP segments of one flow become one
/// super-packet, written to the TUN with a virtio header asking for segmentation, so the kernel
/// handles one packet where the wire carried many.
pub struct Coalescer {
    /// Virtio header room + the super-packet so far.
    buf: Vec<u8>,
    /// Segments in `buf`.
    count: usize,
    /// Payload bytes of the first segment (every segment but the last has exactly this many).
    mss: usize,
    /// Payload bytes of the last segment appended.
    last: usize,
    /// Sequence number the next segment must carry.
    next_seq: u32,
}

const HDR: usize = VNET_HDR_LEN;
/// Largest super-packet (IPv4 total length is 16 bits).
const MAX_TOTAL: usize = 65_000;

impl Default for Coalescer {
    fn default() -> Self {
        Coalescer {
            buf: Vec::with_capacity(HDR + 65_536),
            count: 0,
            mss: 0,
            last: 0,
            next_seq: 0,
        }
    }
}

/// Header length and payload length of a TCP segment that may be coalesced: IPv4 without
/// options or fragmentation, TCP with only ACK (and PSH) set, some payload.
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
    // The super-packet's checksum is left for the kernel to trust: each segment must be
    // intact. A bad one is written alone, for the kernel to drop.
    let tcp_len = (p.len() - 20) as u16;
    let pseudo = sum(sum(sum(0, &p[12..20]), &[0, 6]), &tcp_len.to_be_bytes());
    if fold(sum(pseudo, &p[20..])) != 0 {
        return None;
    }
    Some((hl, p.len() - hl))
}

fn seq_of(p: &[u8]) -> u32 {
    u32::from_be_bytes([p[24], p[25], p[26], p[27]])
}

impl Coalescer {
    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Takes `p` into the held super-packet if it continues it; `false` if it does not (then
    /// call [`Coalescer::take`] and offer it again, or write it as it is).
    pub fn add(&mut self, p: &[u8]) -> bool {
        let Some((hl, len)) = candidate(p) else {
            return false;
        };
        if self.count == 0 {
            self.buf.clear();
            self.buf.resize(HDR, 0);
            self.buf.extend_from_slice(p);
            self.count = 1;
            self.mss = len;
            self.last = len;
            self.next_seq = seq_of(p).wrapping_add(len as u32);
            return true;
        }
        let held = &self.buf[HDR..];
        let same = held.len() >= hl
            && held[1] == p[1] // TOS
            && held[6] == p[6] // DF
            && held[8] == p[8] // TTL
            && held[12..20] == p[12..20] // addresses
            && held[20..24] == p[20..24] // ports
            && held[28..32] == p[28..32] // ack
            && held[32] == p[32] // header length
            && held[34..36] == p[34..36] // window
            && held[40..hl] == p[40..hl] // options
            && held[33] & 0x08 == 0; // nothing after a PSH
        if !same
            || self.last != self.mss
            || len > self.mss
            || seq_of(p) != self.next_seq
            || held.len() + len > MAX_TOTAL
        {
            return false;
        }
        self.buf.extend_from_slice(&p[hl..]);
        self.buf[HDR + 33] |= p[33] & 0x08;
        self.count += 1;
        self.last = len;
        self.next_seq = self.next_seq.wrapping_add(len as u32);
        true
    }

    /// The held packet, virtio header in front, ready for the TUN; empties the coalescer.
    pub fn take(&mut self) -> &[u8] {
        let count = std::mem::take(&mut self.count);
        if count <= 1 {
            // A lone segment goes as it came: header all zero, checksums complete.
            return &self.buf[..];
        }
        let total = self.buf.len() - HDR;
        let hl = 20 + usize::from(self.buf[HDR + 32] >> 4) * 4;
        let (h, p) = self.buf.split_at_mut(HDR);
        h[0] = F_NEEDS_CSUM;
        h[1] = GSO_TCPV4;
        h[2..4].copy_from_slice(&(hl as u16).to_ne_bytes());
        h[4..6].copy_from_slice(&(self.mss as u16).to_ne_bytes());
        h[6..8].copy_from_slice(&20u16.to_ne_bytes());
        h[8..10].copy_from_slice(&16u16.to_ne_bytes());
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p[10..12].copy_from_slice(&[0, 0]);
        let c = fold(sum(0, &p[..20]));
        p[10..12].copy_from_slice(&c.to_be_bytes());
        // Partial checksum: the pseudo-header sum, not complemented; the kernel finishes it.
        let tcp_len = (total - 20) as u16;
        let ps = !fold(sum(
            sum(sum(0, &p[12..20]), &[0, 6]),
            &tcp_len.to_be_bytes(),
        ));
        p[36..38].copy_from_slice(&ps.to_be_bytes());
        &self.buf[..]
    }
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

    fn segment(seq: u32, payload: &[u8], flags: u8) -> Vec<u8> {
        let mut p = tcp_packet(payload, flags);
        p[24..28].copy_from_slice(&seq.to_be_bytes());
        let c = tcp_csum(&p);
        p[36..38].copy_from_slice(&c.to_be_bytes());
        p
    }

    #[test]
    fn in_order_segments_coalesce_and_split_back_to_the_same_bytes() {
        let mut g = Coalescer::default();
        let a = segment(1000, &[1; 1000], 0x10);
        let b = segment(2000, &[2; 1000], 0x10);
        let c = segment(3000, &[3; 500], 0x18);
        assert!(g.add(&a) && g.add(&b) && g.add(&c));
        // Nothing continues a PSH, a short segment, or a gap.
        assert!(!g.add(&segment(3500, &[4; 10], 0x10)));
        let out = g.take().to_vec();
        assert!(g.is_empty());
        let h = VnetHdr::parse(&out).unwrap();
        assert_eq!(
            (h.flags, h.gso_type, h.gso_size),
            (F_NEEDS_CSUM, GSO_TCPV4, 1000)
        );
        assert_eq!((h.csum_start, h.csum_offset), (20, 16));
        let p = &out[VNET_HDR_LEN..];
        assert_eq!(p.len(), 40 + 2500);
        assert_eq!(u16::from_be_bytes([p[2], p[3]]), 2540);
        assert_eq!(fold(sum(0, &p[..20])), 0);
        assert_eq!(p[33], 0x18, "PSH of the last segment kept");
        // What the kernel would do with it: segmenting gives back the three segments.
        let mut full = p.to_vec();
        let fc = tcp_csum(&full);
        full[36..38].copy_from_slice(&fc.to_be_bytes());
        let (mut segs, mut lens) = (Vec::new(), Vec::new());
        segment_tcp4(&full, 1000, &mut segs, &mut lens).unwrap();
        assert_eq!(lens, vec![1040, 1040, 540]);
        assert_eq!(&segs[1040..2080][40..], &b[40..]);
        assert_eq!(
            tcp_csum(&segs[2080..]),
            u16::from_be_bytes([segs[2080 + 36], segs[2080 + 37]])
        );
        // Gaps, other flows and non-TCP are not taken.
        assert!(g.add(&a));
        assert!(!g.add(&segment(2500, &[2; 1000], 0x10)));
        let mut other = b.clone();
        other[20] ^= 1;
        assert!(!g.add(&other));
        let lone = g.take().to_vec();
        assert_eq!(&lone[..VNET_HDR_LEN], &[0; VNET_HDR_LEN]);
        assert_eq!(&lone[VNET_HDR_LEN..], &a[..]);
        let mut syn = a.clone();
        syn[33] = 0x02;
        assert!(!g.add(&syn));
        // A segment damaged on the wire is never merged (its checksum would be trusted).
        let mut bad = a.clone();
        bad[100] ^= 0xff;
        assert!(!g.add(&bad));
        assert!(g.add(&a));
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
