//! Pure IPv4 header handling of the IPIP data plane: strip the outer header of a received
//! packet, find the inner destination of a packet to send.

use std::net::Ipv4Addr;

/// Outer source and inner packet of an IPIP packet as a raw socket returns it (outer header
/// included); `None` if it is not IPv4 carrying IPv4.
pub fn decapsulate(pkt: &[u8]) -> Option<(Ipv4Addr, &[u8])> {
    if pkt.len() < 20 || pkt[0] >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(pkt[0] & 0x0f) * 4;
    if ihl < 20 || pkt.len() < ihl + 20 || pkt[9] != 4 {
        return None;
    }
    let src = Ipv4Addr::new(pkt[12], pkt[13], pkt[14], pkt[15]);
    let inner = &pkt[ihl..];
    (inner[0] >> 4 == 4).then_some((src, inner))
}

/// Source and destination of an IPv4 packet; `None` if it is not one.
pub fn addrs(pkt: &[u8]) -> Option<(Ipv4Addr, Ipv4Addr)> {
    if pkt.len() < 20 || pkt[0] >> 4 != 4 {
        return None;
    }
    Some((
        Ipv4Addr::new(pkt[12], pkt[13], pkt[14], pkt[15]),
        Ipv4Addr::new(pkt[16], pkt[17], pkt[18], pkt[19]),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(proto: u8, src: [u8; 4], dst: [u8; 4], ihl_words: u8) -> Vec<u8> {
        let mut h = vec![0u8; usize::from(ihl_words) * 4];
        h[0] = 0x40 | ihl_words;
        h[8] = 64;
        h[9] = proto;
        h[12..16].copy_from_slice(&src);
        h[16..20].copy_from_slice(&dst);
        h
    }

    #[test]
    fn strips_the_outer_header_including_options() {
        let inner = header(1, [10, 2, 0, 5], [10, 1, 0, 7], 5);
        for ihl in [5, 6] {
            let mut pkt = header(4, [192, 168, 2, 12], [192, 168, 1, 10], ihl);
            pkt.extend_from_slice(&inner);
            let (src, got) = decapsulate(&pkt).unwrap();
            assert_eq!(src, Ipv4Addr::new(192, 168, 2, 12));
            assert_eq!(got, &inner[..]);
            assert_eq!(
                addrs(got),
                Some((Ipv4Addr::new(10, 2, 0, 5), Ipv4Addr::new(10, 1, 0, 7)))
            );
        }
    }

    #[test]
    fn refuses_what_is_not_ipip() {
        let inner = header(1, [10, 2, 0, 5], [10, 1, 0, 7], 5);
        let mut gre = header(47, [1, 1, 1, 1], [2, 2, 2, 2], 5);
        gre.extend_from_slice(&inner);
        assert_eq!(decapsulate(&gre), None);
        let mut v6inner = header(4, [1, 1, 1, 1], [2, 2, 2, 2], 5);
        v6inner.extend_from_slice(&[0x60; 40]);
        assert_eq!(decapsulate(&v6inner), None);
        assert_eq!(decapsulate(&header(4, [1, 1, 1, 1], [2, 2, 2, 2], 5)), None);
        assert_eq!(addrs(&[0x60; 40]), None);
    }
}
