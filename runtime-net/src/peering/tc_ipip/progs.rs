//! The two tc programs of the in-kernel IPIP data plane, generated for one peer table. Pure:
//! the peer table and device indexes go into the code as constants, so a new table is a new
//! program (swapped in atomically, see [`super::sys::link_update`]).
//!
//! - [`encap`] runs on egress of the device the IPIP routes point at: a packet whose inner
//!   destination lies in a peer's pod subnet gets an outer IPv4 header (protocol 4, DF, TTL 64,
//!   this node to the peer, as kernel IPIP and the userspace data plane write it) and goes
//!   straight out of the underlay with the neighbour filled in. Anything else gets the verdict
//!   the caller chose (left to the TUN's reader, or dropped on the veth).
//! - [`decap`] runs on ingress of the underlay: an unfragmented IPIP packet to this node whose
//!   outer header checksums correctly and whose outer source is a listed peer loses its outer
//!   header and is delivered as [`Deliver`] says, so that it arrives on the device the routes
//!   point at (reverse-path filtering and the firewall see the same device as for the packets
//!   sent). Anything else goes on untouched: packets of non-peers reach the raw socket of the
//!   userspace data plane, which counts and drops them.

use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;

use super::asm::{
    Alu, Asm, AsmError, Cond, Insn, Reg, Size, FP, R0, R1, R2, R3, R4, R5, R6, R7, R8, R9,
};

const HELPER_MAP_LOOKUP_ELEM: i32 = 1;
const HELPER_SKB_STORE_BYTES: i32 = 9;
const HELPER_REDIRECT: i32 = 23;
const HELPER_SKB_LOAD_BYTES: i32 = 26;
const HELPER_CSUM_DIFF: i32 = 28;
const HELPER_SKB_CHANGE_HEAD: i32 = 43;
const HELPER_SKB_ADJUST_ROOM: i32 = 50;
const HELPER_REDIRECT_NEIGH: i32 = 152;

const ADJ_ROOM_MAC: i32 = 1;
const ADJ_ROOM_FIXED_GSO: i32 = 1 << 0;
const ADJ_ROOM_ENCAP_L3_IPV4: i32 = 1 << 1;
const REDIRECT_INGRESS: i32 = 1;

/// tcx verdict: let the next program (or the stack) have the packet.
pub const TCX_NEXT: i32 = -1;
/// tc verdict: drop.
pub const TC_ACT_SHOT: i32 = 2;
/// tc verdict of a successful redirect.
pub const TC_ACT_REDIRECT: i32 = 7;

/// Outer header length.
const OUTER: i32 = 20;
/// TTL of the outer header (as kernel IPIP).
const TTL: u8 = 64;

/// A 16-bit network-order value as the program reads it from memory.
pub(super) fn ne16(v: u16) -> i32 {
    i32::from(u16::from_ne_bytes(v.to_be_bytes()))
}

/// Four bytes as the program reads them from memory with one 32-bit load.
pub(super) fn ne32(b: [u8; 4]) -> i32 {
    i32::from_ne_bytes(b)
}

/// Entry of the counter map that [`encap`] adds to per packet encapsulated.
pub const COUNT_ENCAPSULATED: u32 = 0;
/// Entry of the counter map that [`decap`] adds to per packet decapsulated.
pub const COUNT_DECAPSULATED: u32 = 1;

/// Adds one to entry `key` of the per-CPU array map `map` (a file descriptor), if any.
/// Clobbers r0–r5.
pub(super) fn count(a: &mut Asm, map: Option<i32>, key: u32) {
    let Some(fd) = map else { return };
    a.st(Size::W, FP, -52, key as i32)
        .ld_map_fd(R1, fd)
        .mov_reg(R2, FP)
        .alu64_imm(Alu::Add, R2, -52)
        .call(HELPER_MAP_LOOKUP_ELEM)
        .skip_imm(Cond::Eq, R0, 0, 3)
        .ldx(Size::DW, R1, R0, 0)
        .alu64_imm(Alu::Add, R1, 1)
        .stx(Size::DW, R0, 0, R1);
}

/// Folds the one's-complement sum in `acc` (at most 32 bits) to 16 bits; `tmp` is clobbered.
pub(super) fn fold16(a: &mut Asm, acc: Reg, tmp: Reg) {
    for _ in 0..2 {
        a.mov_reg(tmp, acc)
            .alu64_imm(Alu::Rsh, tmp, 16)
            .alu64_imm(Alu::And, acc, 0xffff)
            .alu64_reg(Alu::Add, acc, tmp);
    }
}

/// Copies `len` bytes of the packet (r6) from offset `off` to the stack at `slot`; goes to
/// `short` when the packet has fewer. Clobbers r0–r5.
pub(super) fn load_or(a: &mut Asm, off: i32, slot: i16, len: i32, short: &'static str) {
    a.mov_reg(R1, R6)
        .mov_imm(R2, off)
        .mov_reg(R3, FP)
        .alu64_imm(Alu::Add, R3, i32::from(slot))
        .mov_imm(R4, len)
        .call(HELPER_SKB_LOAD_BYTES)
        .jmp_imm(Cond::Ne, R0, 0, short);
}

/// Leaves in r0 the one's-complement sum, folded to 16 bits, of the 20-byte IPv4 header copied
/// to the stack at `at`. Clobbers r1–r5.
pub(super) fn header_sum_at(a: &mut Asm, at: i16) {
    a.mov_imm(R1, 0)
        .mov_imm(R2, 0)
        .mov_reg(R3, FP)
        .alu64_imm(Alu::Add, R3, i32::from(at))
        .mov_imm(R4, 20)
        .mov_imm(R5, 0)
        .call(HELPER_CSUM_DIFF)
        .alu32_reg(Alu::Mov, R0, R0);
    fold16(a, R0, R2);
}

/// Goes to `bad` unless the 20-byte IPv4 header copied to the stack at `at` checksums
/// correctly. Clobbers r0–r5.
pub(super) fn header_checksum_or(a: &mut Asm, at: i16, bad: &'static str) {
    header_sum_at(a, at);
    a.jmp32_imm(Cond::Ne, R0, 0xffff, bad);
}

/// Removes `len` bytes after the link-layer header, keeping the segment size of a GSO packet
/// (the tunnel's sender kept the inner one); goes to `failed` if that fails. Clobbers r0–r5.
pub(super) fn strip_or(a: &mut Asm, len: i32, failed: &'static str) {
    a.mov_reg(R1, R6)
        .mov_imm(R2, -len)
        .mov_imm(R3, ADJ_ROOM_MAC)
        .mov_imm(R4, ADJ_ROOM_FIXED_GSO)
        .call(HELPER_SKB_ADJUST_ROOM)
        .jmp_imm(Cond::Ne, R0, 0, failed);
}

/// Goes to `other` unless the IPv4 header copied to the stack at `at` has no options, carries
/// `protocol`, is not a fragment and is addressed to `local`. Clobbers r2.
pub(super) fn outer_header_or(
    a: &mut Asm,
    at: i16,
    protocol: i32,
    local: Ipv4Addr,
    other: &'static str,
) {
    a.ldx(Size::B, R2, FP, at)
        .jmp32_imm(Cond::Ne, R2, 0x45, other) // IPv4, no options
        .ldx(Size::B, R2, FP, at + 9)
        .jmp32_imm(Cond::Ne, R2, protocol, other)
        .ldx(Size::H, R2, FP, at + 6)
        .alu32_imm(Alu::And, R2, ne16(0x3fff))
        .jmp32_imm(Cond::Ne, R2, 0, other) // a fragment: the stack reassembles it
        .ldx(Size::W, R2, FP, at + 16)
        .jmp32_imm(Cond::Ne, R2, ne32(local.octets()), other);
}

/// The one's-complement sum (not folded) of the outer header from `local` to `peer` with a
/// zero total length and checksum; the program adds the total length and folds.
pub fn header_sum(local: Ipv4Addr, peer: Ipv4Addr) -> u32 {
    let words = |a: Ipv4Addr| {
        let o = a.octets();
        u32::from(u16::from_be_bytes([o[0], o[1]])) + u32::from(u16::from_be_bytes([o[2], o[3]]))
    };
    0x4500 + 0x4000 + u32::from(u16::from_be_bytes([TTL, 4])) + words(local) + words(peer)
}

/// What [`encap`] is built for.
#[derive(Debug, Clone)]
pub struct EncapSpec<'a> {
    /// Offset of the IPv4 header in the packet as the program sees it (0 on the TUN).
    pub l3: u8,
    /// This node's underlay address (outer source).
    pub local: Ipv4Addr,
    /// Index of the underlay interface the packets leave by.
    pub underlay: u32,
    /// Pod subnet → underlay address of each peer.
    pub peers: &'a [(Ipv4Network, Ipv4Addr)],
    /// Verdict for a packet it does not encapsulate ([`TCX_NEXT`]: the device takes it).
    pub miss: i32,
    /// Per-CPU array map counting packets ([`COUNT_ENCAPSULATED`]), if any.
    pub counters: Option<i32>,
}

/// The egress program of the TUN device (see the module docs).
pub fn encap(spec: &EncapSpec<'_>) -> Result<Vec<Insn>, AsmError> {
    let l3 = i32::from(spec.l3);
    let mut a = Asm::default();
    a.mov_reg(R6, R1)
        .ldx(Size::W, R2, R6, 16) // skb->protocol
        .jmp32_imm(Cond::Ne, R2, ne16(0x0800), "pass");
    // The inner header to fp-48.
    load_or(&mut a, l3, -48, 20, "pass");
    a.ldx(Size::B, R2, FP, -48)
        .alu32_imm(Alu::Rsh, R2, 4)
        .jmp32_imm(Cond::Ne, R2, 4, "pass")
        .ldx(Size::W, R2, FP, -48 + 16); // inner destination
    for (net, addr) in spec.peers {
        // Not this peer's subnet: skip its three instructions.
        a.mov_reg(R3, R2)
            .alu32_imm(Alu::And, R3, ne32(net.mask().octets()))
            .skip32_imm(Cond::Ne, R3, ne32(net.network().octets()), 3)
            .mov_imm(R7, ne32(addr.octets()))
            .mov_imm(R8, header_sum(spec.local, *addr) as i32)
            .ja("encap");
    }
    a.ja("pass");
    // r7: peer (memory order), r8: its header sum; r9: outer total length.
    a.label("encap")
        .ldx(Size::W, R9, R6, 0) // skb->len
        .alu64_imm(Alu::Add, R9, OUTER - l3)
        .jmp_imm(Cond::Gt, R9, 0xffff, "big")
        .label("sized");
    // Checksum: r8 + r9 folded, complemented.
    a.mov_reg(R2, R8).alu64_reg(Alu::Add, R2, R9);
    fold16(&mut a, R2, R3);
    a.alu64_imm(Alu::Xor, R2, 0xffff).be16(R2);
    // The outer header at fp-24: 45 00 len | 00 00 40 00 | ttl 04 csum | local | peer.
    a.st(Size::W, FP, -24, ne32([0x45, 0, 0, 0]))
        .mov_reg(R3, R9)
        .be16(R3)
        .stx(Size::H, FP, -22, R3)
        .st(Size::W, FP, -20, ne32([0, 0, 0x40, 0]))
        .st(Size::W, FP, -16, ne32([TTL, 4, 0, 0]))
        .stx(Size::H, FP, -14, R2)
        .st(Size::W, FP, -12, ne32(spec.local.octets()))
        .stx(Size::W, FP, -8, R7);
    a.mov_reg(R1, R6)
        .mov_imm(R2, OUTER)
        .mov_imm(R3, ADJ_ROOM_MAC)
        .mov_imm(R4, ADJ_ROOM_FIXED_GSO | ADJ_ROOM_ENCAP_L3_IPV4)
        .call(HELPER_SKB_ADJUST_ROOM)
        .jmp_imm(Cond::Ne, R0, 0, "pass");
    a.mov_reg(R1, R6)
        .mov_imm(R2, l3)
        .mov_reg(R3, FP)
        .alu64_imm(Alu::Add, R3, -24)
        .mov_imm(R4, OUTER)
        .mov_imm(R5, 0)
        .call(HELPER_SKB_STORE_BYTES)
        // The room is made: the packet can no longer go on as it was.
        .jmp_imm(Cond::Ne, R0, 0, "drop");
    if spec.l3 == 0 {
        // Sending on with the neighbour's address needs room for a link-layer header in front
        // (the helper fills it in).
        a.mov_reg(R1, R6)
            .mov_imm(R2, 14)
            .mov_imm(R3, 0)
            .call(HELPER_SKB_CHANGE_HEAD)
            .jmp_imm(Cond::Ne, R0, 0, "drop");
    }
    count(&mut a, spec.counters, COUNT_ENCAPSULATED);
    a.mov_imm(R1, spec.underlay as i32)
        .mov_imm(R2, 0)
        .mov_imm(R3, 0)
        .mov_imm(R4, 0)
        .call(HELPER_REDIRECT_NEIGH)
        .exit();
    a.label("big").mov_imm(R9, 0).ja("sized");
    a.label("drop").mov_imm(R0, TC_ACT_SHOT).exit();
    a.label("pass").mov_imm(R0, spec.miss).exit();
    a.finish()
}

/// Where [`decap`] hands a decapsulated packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deliver {
    /// To the ingress of this device, as if received there (a device without link-layer
    /// header: the TUN).
    Ingress(u32),
    /// Out of this veth end, addressed to the other end's MAC `mac`: the other end receives it
    /// (and joins consecutive segments with its GRO).
    Veth {
        /// Index of the sending end.
        ifindex: u32,
        /// MAC of the receiving end.
        mac: [u8; 6],
    },
}

/// What [`decap`] is built for.
#[derive(Debug, Clone)]
pub struct DecapSpec<'a> {
    /// Offset of the outer IPv4 header in the packet as the program sees it (14 on Ethernet).
    pub l3: u8,
    /// This node's underlay address (outer destination).
    pub local: Ipv4Addr,
    /// Where the inner packets go.
    pub deliver: Deliver,
    /// Per-CPU array map counting packets ([`COUNT_DECAPSULATED`]), if any.
    pub counters: Option<i32>,
    /// Underlay addresses of the peers.
    pub peers: &'a [Ipv4Addr],
}

/// The ingress program of the underlay (see the module docs).
pub fn decap(spec: &DecapSpec<'_>) -> Result<Vec<Insn>, AsmError> {
    // The outer header and the first inner byte at fp-32.
    const AT: i16 = -32;
    let mut a = Asm::default();
    a.mov_reg(R6, R1)
        .ldx(Size::W, R2, R6, 16) // skb->protocol
        .jmp32_imm(Cond::Ne, R2, ne16(0x0800), "pass");
    load_or(&mut a, i32::from(spec.l3), AT, 21, "pass");
    outer_header_or(&mut a, AT, 4, spec.local, "pass");
    a.ldx(Size::B, R2, FP, AT + 20)
        .alu32_imm(Alu::Rsh, R2, 4)
        .jmp32_imm(Cond::Ne, R2, 4, "pass") // inner IPv4
        .ldx(Size::W, R2, FP, AT + 12);
    for p in spec.peers {
        a.jmp32_imm(Cond::Eq, R2, ne32(p.octets()), "peer");
    }
    a.ja("pass");
    a.label("peer");
    header_checksum_or(&mut a, AT, "pass");
    strip_or(&mut a, OUTER, "pass");
    count(&mut a, spec.counters, COUNT_DECAPSULATED);
    match spec.deliver {
        Deliver::Ingress(ifindex) => {
            a.mov_imm(R1, ifindex as i32)
                .mov_imm(R2, REDIRECT_INGRESS)
                .call(HELPER_REDIRECT)
                .exit();
        }
        Deliver::Veth { ifindex, mac } => {
            a.st(Size::W, FP, -40, ne32([mac[0], mac[1], mac[2], mac[3]]))
                .st(
                    Size::H,
                    FP,
                    -36,
                    i32::from(u16::from_ne_bytes([mac[4], mac[5]])),
                )
                .mov_reg(R1, R6)
                .mov_imm(R2, 0)
                .mov_reg(R3, FP)
                .alu64_imm(Alu::Add, R3, -40)
                .mov_imm(R4, 6)
                .mov_imm(R5, 0)
                .call(HELPER_SKB_STORE_BYTES)
                .jmp_imm(Cond::Ne, R0, 0, "drop")
                .mov_imm(R1, ifindex as i32)
                .mov_imm(R2, 0)
                .call(HELPER_REDIRECT)
                .exit()
                .label("drop")
                .mov_imm(R0, TC_ACT_SHOT)
                .exit();
        }
    }
    a.label("pass").mov_imm(R0, TCX_NEXT).exit();
    a.finish()
}
