//! The Internet checksum (RFC 1071) over byte slices, eight bytes per step.
//!
//! The one's-complement sum does not depend on byte order (RFC 1071 §2(B)): the data is summed
//! as native 64-bit words with end-around carry, folded to 16 bits and swapped to network order
//! once at the end. Callers combine partial sums with [`add`] and finish with [`fold`].

/// One's-complement sum of `data` as big-endian 16-bit words, added to `acc` (a value from
/// earlier calls, not folded). `data` is taken as starting at an even offset of the checksummed
/// whole (headers of even length, payload after them).
pub fn add(acc: u32, data: &[u8]) -> u32 {
    let s = u32::from(native_sum(data));
    let s = if cfg!(target_endian = "little") {
        u32::from((s as u16).swap_bytes())
    } else {
        s
    };
    let (v, carry) = acc.overflowing_add(s);
    // A carry out of 32 bits is worth 1 in the one's-complement sum.
    v + u32::from(carry)
}

/// Folds a sum to 16 bits and complements it: the value for a checksum field.
pub fn fold(acc: u32) -> u16 {
    let mut a = acc;
    while a >> 16 != 0 {
        a = (a & 0xffff) + (a >> 16);
    }
    !(a as u16)
}

/// The 16-bit one's-complement sum of `data` in native byte order (not complemented).
fn native_sum(data: &[u8]) -> u16 {
    let mut acc: u64 = 0;
    let mut carries: u64 = 0;
    let mut chunks = data.chunks_exact(32);
    for c in &mut chunks {
        for w in c.chunks_exact(8) {
            let v = u64::from_ne_bytes(w.try_into().expect("8 bytes"));
            let (s, o) = acc.overflowing_add(v);
            acc = s;
            carries += u64::from(o);
        }
    }
    let mut words = chunks.remainder().chunks_exact(8);
    for w in &mut words {
        let v = u64::from_ne_bytes(w.try_into().expect("8 bytes"));
        let (s, o) = acc.overflowing_add(v);
        acc = s;
        carries += u64::from(o);
    }
    let rest = words.remainder();
    if !rest.is_empty() {
        // Zero padding keeps every byte in its 16-bit word position: an odd last byte is the
        // high byte of a word padded with zero, as the RFC asks.
        let mut tail = [0u8; 8];
        tail[..rest.len()].copy_from_slice(rest);
        let (s, o) = acc.overflowing_add(u64::from_ne_bytes(tail));
        acc = s;
        carries += u64::from(o);
    }
    // Fold 64 → 16 bits with end-around carry.
    let mut s = u128::from(acc) + u128::from(carries);
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The plain RFC 1071 loop, for comparison.
    fn reference(acc: u32, data: &[u8]) -> u32 {
        let mut acc = u64::from(acc);
        let mut it = data.chunks_exact(2);
        for c in &mut it {
            acc += u64::from(u16::from_be_bytes([c[0], c[1]]));
        }
        if let [last] = it.remainder() {
            acc += u64::from(*last) << 8;
        }
        while acc >> 32 != 0 {
            acc = (acc & 0xffff_ffff) + (acc >> 32);
        }
        acc as u32
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2.
        let d = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(add(0, &d)), !0xddf2);
        assert_eq!(fold(add(0, &[])), 0xffff);
        assert_eq!(fold(add(0, &[0xff; 64 * 1024])), 0);
    }

    proptest! {
        #[test]
        fn agrees_with_the_plain_loop(
            data in proptest::collection::vec(any::<u8>(), 0..300),
            skip in 0usize..8,
            acc in any::<u32>(),
        ) {
            // Every alignment of the slice in memory, every length.
            let d = &data[skip.min(data.len())..];
            prop_assert_eq!(fold(add(acc, d)), fold(reference(acc, d)));
        }
    }
}
