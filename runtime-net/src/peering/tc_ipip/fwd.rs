//! The tc program that forwards pod traffic to and from peers, generated for one peer table.
//! Pure, like [`super::progs`]: subnets and device indexes go into the code as constants.
//!
//! It forwards what the kernel's forwarding path would forward unchanged and nothing else, one
//! routing step instead of the bridge's netfilter hooks, the routing input path and the forward
//! chain:
//!
//! - an IPv4 packet addressed to this host's MAC, with a well-formed header (no options, valid
//!   checksum, total length within the frame) and a TTL above 1,
//! - from a source in one of `from` to a destination in one of `to` (pod subnets: this node's
//!   to a peer's when sending, a peer's to this node's when receiving; the firewall accepts
//!   exactly these both ways and never translates them), but not to this host's own addresses
//!   there nor to the broadcast address, or an ICMP error from a peer node to `to`,
//! - that fits the MTU of the device it leaves by (a GSO packet: its segments),
//!
//! loses one from its TTL and leaves by `out` with the neighbour filled in from the routing
//! table. Anything else goes on to the stack untouched ([`super::progs::TCX_NEXT`]), which
//! answers TTL expiry and oversize packets with ICMP as usual.
//!
//! On the underlay it can also take VXLAN packets from peers ([`ForwardSpec::decap`]): it strips the
//! tunnel headers itself (no outer routing input, firewall hooks, UDP socket lookup and VXLAN
//! device queue) and forwards the inner packet as above; an inner packet it does not forward
//! goes to the VXLAN device's ingress, as the kernel's own decapsulation would hand it over.

use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;

use super::asm::{
    Alu, Asm, AsmError, Cond, Insn, Size, FP, R0, R1, R2, R3, R4, R5, R6, R7, R8, R9,
};
use super::progs::{
    count, header_checksum_or, header_sum_at, load_or, ne16, ne32, outer_header_or, strip_or,
    TCX_NEXT, TC_ACT_SHOT,
};

const HELPER_MAP_LOOKUP_ELEM: i32 = 1;
const HELPER_SKB_STORE_BYTES: i32 = 9;
const HELPER_L3_CSUM_REPLACE: i32 = 10;
const HELPER_GET_PRANDOM_U32: i32 = 7;
const HELPER_REDIRECT: i32 = 23;
const HELPER_GET_HASH_RECALC: i32 = 34;
const HELPER_SKB_ADJUST_ROOM: i32 = 50;
const HELPER_REDIRECT_NEIGH: i32 = 152;
const HELPER_REDIRECT_PEER: i32 = 155;
const HELPER_CHECK_MTU: i32 = 163;

/// `__sk_buff` offsets.
const SKB_LEN: i16 = 0;
const SKB_PKT_TYPE: i16 = 4;
const SKB_PROTOCOL: i16 = 16;

/// Where the IPv4 header is copied on the stack.
const AT: i16 = -32;
/// A stack word for the MTU helper.
const MTU_SLOT: i16 = -40;
/// Where the frame's destination MAC is copied.
const MAC_SLOT: i16 = -48;
/// A new Ethernet header (12 bytes).
const ETH_SLOT: i16 = -64;
/// A map key.
const KEY_SLOT: i16 = -72;
/// The tunnel headers of a VXLAN packet and the inner Ethernet header ([`VXLAN_HEADERS`]
/// bytes).
const TUNNEL_SLOT: i16 = -136;
/// Outer IPv4, UDP and VXLAN headers and the inner Ethernet header.
const VXLAN_HEADERS: i32 = 20 + 8 + 8 + 14;
const ADJ_ROOM_MAC: i32 = 1;
const ADJ_ROOM_FIXED_GSO: i32 = 1;
/// `ENCAP_L3_IPV4 | ENCAP_L4_UDP | ENCAP_L2_ETH` (with [`ADJ_ROOM_FIXED_GSO`]); the inner
/// link-layer length goes in the top byte.
const ADJ_ROOM_ENCAP_VXLAN: i32 = ADJ_ROOM_FIXED_GSO | 1 << 1 | 1 << 4 | 1 << 6;
const REDIRECT_INGRESS: i32 = 1;

/// What [`forward`] is built for.
#[derive(Debug, Clone)]
pub struct ForwardSpec<'a> {
    /// Sources it forwards from.
    pub from: &'a [Ipv4Network],
    /// Destinations it forwards to, each with the device it leaves by (at most
    /// [`MAX_ROUTES`]).
    pub to: &'a [Route<'a>],
    /// Destinations in `to` it leaves to the stack: this host's own addresses there (the
    /// gateway) and the subnet's broadcast address.
    pub except: &'a [Ipv4Addr],
    /// Sources of ICMP errors (destination unreachable, time exceeded, parameter problem) it
    /// forwards as well: the peers' underlay addresses, which answer for packets this node's
    /// pods sent through the programs (the firewall would have let them in as related had it
    /// seen those packets).
    pub icmp_errors_from: &'a [Ipv4Addr],
    /// The link-layer destination a packet must carry: the gateway's MAC on a bridge port;
    /// `None`: addressed to the receiving device itself.
    pub gateway: Option<[u8; 6]>,
    /// The pods of `to`, if the packets go straight into their namespaces.
    pub pods: Option<Pods>,
    /// Per-CPU array map and its entry counting packets forwarded, if any.
    pub counter: Option<(i32, u32)>,
    /// The VXLAN tunnel whose packets it decapsulates first (on the underlay), if any: it
    /// takes exactly what the VXLAN device would accept from one of the peers — unfragmented
    /// IPv4 without options, with a valid header checksum, from a peer to this node, UDP to the
    /// port with a zero UDP checksum (what shimnet's VXLAN devices send; a non-zero one is left
    /// to the stack, which verifies it), the VXLAN header with only the VNI flag and the VNI,
    /// carrying an IPv4 frame addressed to the device's MAC — less what the device would have
    /// to verify. Inner packets it does not forward go to the device's ingress.
    pub decap: Option<Vxlan<'a>>,
    /// The VXLAN tunnel whose packets it encapsulates itself, if any, instead of handing them to
    /// the device (the route through the device then matches the peers): the frame the device
    /// would send, from this node to the peer, UDP from a port chosen by the inner flow's hash
    /// to the port with a zero checksum, the VNI flag and the VNI, the inner frame from this
    /// node's VXLAN MAC to the peer's ([`super::super::plan::vxlan_mac`]); outer TTL 64, DF
    /// clear (a smaller path MTU fragments as with the device), a random IP ID. It leaves by
    /// the underlay with the neighbour filled in.
    pub encap: Option<Vxlan<'a>>,
}

/// This node's VXLAN tunnel, as the programs that take over its work need it.
#[derive(Debug, Clone, Copy)]
pub struct Vxlan<'a> {
    /// The VXLAN device's index.
    pub dev: u32,
    /// Index of the underlay.
    pub underlay: u32,
    /// This node's underlay address.
    pub local: Ipv4Addr,
    /// The peers: pod subnet and underlay address.
    pub peers: &'a [(Ipv4Network, Ipv4Addr)],
    /// UDP port.
    pub port: u16,
    /// VNI.
    pub vni: u32,
    /// The device's MAC (this node's VXLAN MAC).
    pub mac: [u8; 6],
}

/// Destinations reached through one device.
#[derive(Debug, Clone, Copy)]
pub struct Route<'a> {
    /// The destination subnets.
    pub nets: &'a [Ipv4Network],
    /// Index of the device they are sent out of (the neighbour is filled in from the routing
    /// table: a gateway on the underlay, a VXLAN peer's entry on the VXLAN device, a pod on the
    /// bridge).
    pub out: u32,
}

/// Routes one program takes at most.
pub const MAX_ROUTES: usize = 4;
const ROUTE_LABELS: [&str; MAX_ROUTES] = ["route0", "route1", "route2", "route3"];

/// More routes than one program takes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("pod forwarding program: {0} routes, at most {MAX_ROUTES}")]
pub struct TooManyRoutes(pub usize);

/// A hash map of pods (see [`pod_entry`]): a packet to a listed pod goes into its namespace
/// through its veth (`bpf_redirect_peer`: no bridge, no second pass through a backlog queue),
/// addressed from the gateway's MAC to the pod's; one to a pod not listed leaves by its route.
#[derive(Debug, Clone, Copy)]
pub struct Pods {
    /// The map's file descriptor.
    pub map: i32,
    /// The gateway's MAC (the source the pod sees).
    pub gateway: [u8; 6],
}

/// Key and value of a pod in a [`Pods`] map: its address → the index of its veth's host end
/// and its MAC.
pub fn pod_entry(addr: Ipv4Addr, host_end: u32, mac: [u8; 6]) -> ([u8; 4], [u8; 12]) {
    let mut v = [0u8; 12];
    v[..4].copy_from_slice(&host_end.to_ne_bytes());
    v[4..10].copy_from_slice(&mac);
    (addr.octets(), v)
}

/// Generating a forwarding program failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FwdError {
    /// More routes than one program takes.
    #[error(transparent)]
    Routes(#[from] TooManyRoutes),
    /// The assembler refused it.
    #[error(transparent)]
    Asm(#[from] AsmError),
}

/// Jumps to `hit` when the address in `r2` lies in one of `nets`, else falls through.
/// Clobbers r3.
fn match_any(a: &mut Asm, nets: &[Ipv4Network], hit: &'static str) {
    for net in nets {
        a.mov_reg(R3, R2)
            .alu32_imm(Alu::And, R3, ne32(net.mask().octets()))
            .jmp32_imm(Cond::Eq, R3, ne32(net.network().octets()), hit);
    }
}

/// The ingress program of an Ethernet device (see the module docs).
pub fn forward(spec: &ForwardSpec<'_>) -> Result<Vec<Insn>, FwdError> {
    const L3: i32 = 14;
    if spec.to.len() > MAX_ROUTES {
        return Err(TooManyRoutes(spec.to.len()).into());
    }
    let mut a = Asm::default();
    a.mov_reg(R6, R1)
        .ldx(Size::W, R2, R6, SKB_PROTOCOL)
        .jmp32_imm(Cond::Ne, R2, ne16(0x0800), "pass");
    // Where a packet the program does not forward goes.
    let stack = match &spec.decap {
        Some(d) => {
            vxlan_decap(&mut a, d);
            "inner"
        }
        None => "pass",
    };
    match spec.gateway {
        None => {
            a.ldx(Size::W, R2, R6, SKB_PKT_TYPE)
                .jmp32_imm(Cond::Ne, R2, 0, stack); // PACKET_HOST
        }
        Some(mac) => {
            // The frame's destination (the ingress hook sees the MAC header).
            load_or(&mut a, 0, MAC_SLOT, 6, stack);
            a.ldx(Size::W, R2, FP, MAC_SLOT)
                .jmp32_imm(Cond::Ne, R2, ne32([mac[0], mac[1], mac[2], mac[3]]), stack)
                .ldx(Size::H, R2, FP, MAC_SLOT + 4)
                .jmp32_imm(
                    Cond::Ne,
                    R2,
                    ne16(u16::from_be_bytes([mac[4], mac[5]])),
                    stack,
                );
        }
    }
    load_or(&mut a, L3, AT, 20, stack);
    a.ldx(Size::B, R2, FP, AT)
        .jmp32_imm(Cond::Ne, R2, 0x45, stack) // IPv4, no options
        .ldx(Size::B, R2, FP, AT + 8)
        .skip32_imm(Cond::Gt, R2, 1, 1)
        .ja(stack); // TTL expires here: the stack answers
    a.ldx(Size::W, R2, FP, AT + 12);
    match_any(&mut a, spec.from, "from");
    if !spec.icmp_errors_from.is_empty() {
        a.ldx(Size::B, R3, FP, AT + 9)
            .jmp32_imm(Cond::Ne, R3, 1, stack); // ICMP
        for addr in spec.icmp_errors_from {
            a.jmp32_imm(Cond::Eq, R2, ne32(addr.octets()), "icmp");
        }
        a.ja(stack).label("icmp");
        load_or(&mut a, L3 + 20, MAC_SLOT, 1, stack);
        a.ldx(Size::B, R2, FP, MAC_SLOT);
        for error in [3, 11, 12] {
            a.jmp32_imm(Cond::Eq, R2, error, "from");
        }
    }
    a.ja(stack).label("from").ldx(Size::W, R2, FP, AT + 16);
    for addr in spec.except {
        a.jmp32_imm(Cond::Eq, R2, ne32(addr.octets()), stack);
    }
    // r9: the device the packet leaves by; r8: the VXLAN peer it is encapsulated for, or 0.
    a.mov_imm(R8, 0);
    for (route, label) in spec.to.iter().zip(ROUTE_LABELS) {
        match spec.encap.as_ref().filter(|e| e.dev == route.out) {
            Some(e) => {
                for (net, addr) in e.peers {
                    a.mov_reg(R3, R2)
                        .alu32_imm(Alu::And, R3, ne32(net.mask().octets()))
                        .skip32_imm(Cond::Ne, R3, ne32(net.network().octets()), 2)
                        .mov_imm(R8, ne32(addr.octets()))
                        .ja(label);
                }
            }
            None => match_any(&mut a, route.nets, label),
        }
    }
    a.ja(stack);
    for (route, label) in spec.to.iter().zip(ROUTE_LABELS) {
        a.label(label).mov_imm(R9, route.out as i32).ja("to");
    }
    a.label("to");
    if spec.encap.is_some() {
        // Room for the tunnel headers within an IPv4 total length.
        a.jmp_imm(Cond::Eq, R8, 0, "sized")
            .ldx(Size::W, R3, R6, SKB_LEN)
            .jmp_imm(Cond::Gt, R3, 0xffff + L3 - VXLAN_HEADERS, stack)
            .label("sized");
    }
    // Total length within the frame.
    a.ldx(Size::H, R2, FP, AT + 2)
        .be16(R2)
        .ldx(Size::W, R3, R6, SKB_LEN)
        .alu64_imm(Alu::Add, R3, -L3)
        .jmp_reg(Cond::Gt, R2, R3, stack);
    header_checksum_or(&mut a, AT, stack);
    // Fits the way out (segments of a GSO packet).
    a.st(Size::W, FP, MTU_SLOT, 0)
        .mov_reg(R1, R6)
        .mov_reg(R2, R9)
        .mov_reg(R3, FP)
        .alu64_imm(Alu::Add, R3, i32::from(MTU_SLOT))
        .mov_imm(R4, 0)
        .mov_imm(R5, 0)
        .call(HELPER_CHECK_MTU)
        .jmp_imm(Cond::Ne, R0, 0, stack);
    // TTL - 1: the TTL/protocol word, then the checksum.
    a.ldx(Size::H, R7, FP, AT + 8)
        .mov_reg(R2, R7)
        .alu32_imm(Alu::Add, R2, -ne16(0x0100))
        .alu32_imm(Alu::And, R2, 0xffff)
        .stx(Size::H, FP, AT + 8, R2)
        .mov_reg(R1, R6)
        .mov_imm(R2, L3 + 8)
        .mov_reg(R3, FP)
        .alu64_imm(Alu::Add, R3, i32::from(AT + 8))
        .mov_imm(R4, 2)
        .mov_imm(R5, 0)
        .call(HELPER_SKB_STORE_BYTES)
        .jmp_imm(Cond::Ne, R0, 0, stack)
        // The TTL is written: from here a failure would leave a bad checksum.
        .mov_reg(R1, R6)
        .mov_imm(R2, L3 + 10)
        .mov_reg(R3, R7)
        .ldx(Size::H, R4, FP, AT + 8)
        .mov_imm(R5, 2)
        .call(HELPER_L3_CSUM_REPLACE)
        .jmp_imm(Cond::Ne, R0, 0, "drop");
    if let Some((map, key)) = spec.counter {
        count(&mut a, Some(map), key);
    }
    if let Some(p) = spec.pods {
        let g = p.gateway;
        a.ldx(Size::W, R2, FP, AT + 16)
            .stx(Size::W, FP, KEY_SLOT, R2)
            .ld_map_fd(R1, p.map)
            .mov_reg(R2, FP)
            .alu64_imm(Alu::Add, R2, i32::from(KEY_SLOT))
            .call(HELPER_MAP_LOOKUP_ELEM)
            .jmp_imm(Cond::Eq, R0, 0, "neigh")
            .mov_reg(R7, R0)
            // Pod's MAC, then the gateway's.
            .ldx(Size::W, R2, R7, 4)
            .stx(Size::W, FP, ETH_SLOT, R2)
            .ldx(Size::H, R2, R7, 8)
            .stx(Size::H, FP, ETH_SLOT + 4, R2)
            .st(
                Size::H,
                FP,
                ETH_SLOT + 6,
                i32::from(u16::from_ne_bytes([g[0], g[1]])),
            )
            .st(Size::W, FP, ETH_SLOT + 8, ne32([g[2], g[3], g[4], g[5]]))
            .mov_reg(R1, R6)
            .mov_imm(R2, 0)
            .mov_reg(R3, FP)
            .alu64_imm(Alu::Add, R3, i32::from(ETH_SLOT))
            .mov_imm(R4, 12)
            .mov_imm(R5, 0)
            .call(HELPER_SKB_STORE_BYTES)
            .jmp_imm(Cond::Ne, R0, 0, "drop")
            .ldx(Size::W, R1, R7, 0)
            .mov_imm(R2, 0)
            .call(HELPER_REDIRECT_PEER)
            .exit()
            .label("neigh");
    }
    if let Some(e) = &spec.encap {
        a.jmp_imm(Cond::Eq, R8, 0, "plain");
        vxlan_encap(&mut a, e);
        a.label("plain");
    }
    a.mov_reg(R1, R9)
        .mov_imm(R2, 0)
        .mov_imm(R3, 0)
        .mov_imm(R4, 0)
        .call(HELPER_REDIRECT_NEIGH)
        .exit();
    a.label("drop").mov_imm(R0, TC_ACT_SHOT).exit();
    if let Some(d) = &spec.decap {
        // Decapsulated but not forwarded: to the VXLAN device with the inner Ethernet header,
        // as its own decapsulation would deliver it.
        a.label("inner")
            .mov_reg(R1, R6)
            .mov_imm(R2, 0)
            .mov_reg(R3, FP)
            .alu64_imm(Alu::Add, R3, i32::from(TUNNEL_SLOT + 36))
            .mov_imm(R4, 12)
            .mov_imm(R5, 0)
            .call(HELPER_SKB_STORE_BYTES)
            .jmp_imm(Cond::Ne, R0, 0, "drop")
            .mov_imm(R1, d.dev as i32)
            .mov_imm(R2, REDIRECT_INGRESS)
            .call(HELPER_REDIRECT)
            .exit();
    }
    a.label("pass").mov_imm(R0, TCX_NEXT).exit();
    Ok(a.finish()?)
}

/// Puts the tunnel headers of [`ForwardSpec::encap`] in front of the packet for the peer in r8 and
/// sends it out of the underlay (the packet is forwarded: a failure from here drops it).
fn vxlan_encap(a: &mut Asm, e: &Vxlan<'_>) {
    const L3: i32 = 14;
    const T: i16 = TUNNEL_SLOT;
    let vni = (e.vni << 8).to_be_bytes();
    let m = e.mac;
    // IP ID and UDP source port first (the hash is the inner flow's).
    a.call(HELPER_GET_PRANDOM_U32)
        .stx(Size::H, FP, T + 4, R0)
        .mov_reg(R1, R6)
        .call(HELPER_GET_HASH_RECALC)
        .alu32_imm(Alu::And, R0, 0x3fff)
        .alu32_imm(Alu::Or, R0, 0xc000)
        .be16(R0)
        .stx(Size::H, FP, T + 20, R0)
        .mov_reg(R1, R6)
        .mov_imm(R2, VXLAN_HEADERS)
        .mov_imm(R3, ADJ_ROOM_MAC)
        .mov_imm(R4, 14)
        .alu64_imm(Alu::Lsh, R4, 56)
        .alu64_imm(Alu::Or, R4, ADJ_ROOM_ENCAP_VXLAN)
        .call(HELPER_SKB_ADJUST_ROOM)
        .jmp_imm(Cond::Ne, R0, 0, "drop");
    // r7: the outer total length.
    a.ldx(Size::W, R7, R6, SKB_LEN)
        .alu64_imm(Alu::Add, R7, -L3)
        .st(Size::H, FP, T, ne16(0x4500))
        .mov_reg(R3, R7)
        .be16(R3)
        .stx(Size::H, FP, T + 2, R3)
        .st(Size::H, FP, T + 6, 0)
        .st(Size::W, FP, T + 8, ne32([64, 17, 0, 0]))
        .st(Size::W, FP, T + 12, ne32(e.local.octets()))
        .stx(Size::W, FP, T + 16, R8)
        .st(Size::H, FP, T + 22, ne16(e.port))
        .mov_reg(R3, R7)
        .alu64_imm(Alu::Add, R3, -20)
        .be16(R3)
        .stx(Size::H, FP, T + 24, R3)
        .st(Size::H, FP, T + 26, 0)
        .st(Size::W, FP, T + 28, ne32([0x08, 0, 0, 0]))
        .st(Size::W, FP, T + 32, ne32(vni))
        // The peer's VXLAN MAC: 02:5e and its address.
        .st(Size::H, FP, T + 36, ne16(0x025e))
        .mov_reg(R3, R8)
        .alu32_imm(Alu::And, R3, 0xffff)
        .stx(Size::H, FP, T + 38, R3)
        .mov_reg(R3, R8)
        .alu32_imm(Alu::Rsh, R3, 16)
        .stx(Size::H, FP, T + 40, R3)
        .st(
            Size::H,
            FP,
            T + 42,
            i32::from(u16::from_ne_bytes([m[0], m[1]])),
        )
        .st(Size::W, FP, T + 44, ne32([m[2], m[3], m[4], m[5]]))
        .st(Size::H, FP, T + 48, ne16(0x0800));
    // The header checksum.
    header_sum_at(a, T);
    a.alu32_imm(Alu::Xor, R0, 0xffff)
        .stx(Size::H, FP, T + 10, R0)
        .mov_reg(R1, R6)
        .mov_imm(R2, L3)
        .mov_reg(R3, FP)
        .alu64_imm(Alu::Add, R3, i32::from(T))
        .mov_imm(R4, VXLAN_HEADERS)
        .mov_imm(R5, 0)
        .call(HELPER_SKB_STORE_BYTES)
        .jmp_imm(Cond::Ne, R0, 0, "drop")
        .mov_imm(R1, e.underlay as i32)
        .mov_imm(R2, 0)
        .mov_imm(R3, 0)
        .mov_imm(R4, 0)
        .call(HELPER_REDIRECT_NEIGH)
        .exit();
}

/// Strips the tunnel headers of a VXLAN packet [`ForwardSpec::decap`] describes (leaving the outer
/// Ethernet header in front of the inner IPv4 packet, the inner Ethernet header on the stack at
/// [`TUNNEL_SLOT`] + 36); anything else goes to `pass` untouched.
fn vxlan_decap(a: &mut Asm, d: &Vxlan<'_>) {
    const L3: i32 = 14;
    const T: i16 = TUNNEL_SLOT;
    let vni = (d.vni << 8).to_be_bytes();
    let m = d.mac;
    a.ldx(Size::W, R2, R6, SKB_PKT_TYPE)
        .jmp32_imm(Cond::Ne, R2, 0, "pass"); // PACKET_HOST
    load_or(a, L3, T, VXLAN_HEADERS, "pass");
    outer_header_or(a, T, 17, d.local, "pass");
    a.ldx(Size::H, R2, FP, T + 22)
        .jmp32_imm(Cond::Ne, R2, ne16(d.port), "pass")
        .ldx(Size::H, R2, FP, T + 26)
        .jmp32_imm(Cond::Ne, R2, 0, "pass") // a UDP checksum: the stack verifies it
        .ldx(Size::W, R2, FP, T + 28)
        .jmp32_imm(Cond::Ne, R2, ne32([0x08, 0, 0, 0]), "pass")
        .ldx(Size::W, R2, FP, T + 32)
        .jmp32_imm(Cond::Ne, R2, ne32(vni), "pass")
        .ldx(Size::W, R2, FP, T + 36)
        .jmp32_imm(Cond::Ne, R2, ne32([m[0], m[1], m[2], m[3]]), "pass")
        .ldx(Size::H, R2, FP, T + 40)
        .jmp32_imm(Cond::Ne, R2, ne16(u16::from_be_bytes([m[4], m[5]])), "pass")
        .ldx(Size::H, R2, FP, T + 48)
        .jmp32_imm(Cond::Ne, R2, ne16(0x0800), "pass")
        // The outer total length is the frame's (no padding, no truncation).
        .ldx(Size::H, R2, FP, T + 2)
        .be16(R2)
        .ldx(Size::W, R3, R6, SKB_LEN)
        .alu64_imm(Alu::Add, R3, -L3)
        .jmp_reg(Cond::Ne, R2, R3, "pass")
        .ldx(Size::W, R2, FP, T + 12);
    for (_, p) in d.peers {
        a.jmp32_imm(Cond::Eq, R2, ne32(p.octets()), "vxlan_peer");
    }
    a.ja("pass").label("vxlan_peer");
    header_checksum_or(a, T, "pass");
    strip_or(a, VXLAN_HEADERS, "pass");
}
