//! How a network's endpoints are spread over its bridges (pure).
//!
//! A Linux bridge takes [`crate::netlink::BRIDGE_MAX_PORTS`] ports. A network whose subnet has
//! more addresses than that gets **extension bridges**: bridges without an address, each joined
//! to the network's main bridge (the one with the gateway) by a veth trunk. The main bridge keeps
//! one port per possible extension for its trunk end and one for the anchor; an extension keeps
//! one port for its own trunk end and gives the rest to containers. How many extensions a network may have follows
//! from its subnet (enough for a port per address), capped by the daemon's
//! `max_bridge_extensions` (at most [`naming::MAX_EXTENSIONS`]). An endpoint goes to the first
//! bridge with a free port (main first), chosen in the store transaction that gives it its
//! address.

use crate::naming;
use crate::types::{EndpointRecord, IfName, NetworkSpec};

/// Ports per bridge and the number of extensions one network may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BridgeLayout {
    /// Ports one bridge takes.
    pub ports: usize,
    /// Extension bridges the network may have (0: the main bridge alone).
    pub extensions: u8,
}

/// IPv4 addresses of `spec` an endpoint can get: the subnet less network, broadcast and gateway.
pub fn usable_addresses(spec: &NetworkSpec) -> usize {
    let size = 1usize << (32 - u32::from(spec.subnet.prefix()));
    size.saturating_sub(3)
}

impl BridgeLayout {
    /// The layout of `spec` with bridges of `ports` ports and at most `max_extensions`
    /// extensions: as few extensions as give every usable address a port.
    pub fn of(spec: &NetworkSpec, ports: usize, max_extensions: u8) -> Self {
        let cap = max_extensions
            .min(naming::MAX_EXTENSIONS)
            .min(u8::try_from(ports.saturating_sub(2)).unwrap_or(u8::MAX));
        let want = usable_addresses(spec);
        let mut layout = BridgeLayout {
            ports,
            extensions: 0,
        };
        while layout.total() < want && layout.extensions < cap {
            layout.extensions += 1;
        }
        layout
    }

    /// Ports bridge `bridge` gives to containers (0: main, `i`: extension `i`).
    pub fn capacity(&self, bridge: u8) -> usize {
        match bridge {
            0 if self.extensions == 0 => self.ports,
            // A trunk end per extension and the anchor port (see `naming::anchor_names`).
            0 => self.ports.saturating_sub(usize::from(self.extensions) + 1),
            i if i <= self.extensions => self.ports.saturating_sub(1),
            _ => 0,
        }
    }

    /// Endpoints the network takes at most (over all its possible bridges).
    pub fn total(&self) -> usize {
        (0..=self.extensions).map(|b| self.capacity(b)).sum()
    }

    /// Whether `spec` can ever need more than its main bridge (only then are ports counted).
    pub fn may_overflow_main(&self, spec: &NetworkSpec) -> bool {
        1usize << (32 - u32::from(spec.subnet.prefix())) > self.capacity(0)
    }

    /// The first bridge with a free port given how many endpoints each holds (`used[b]`,
    /// missing entries count as empty); `None` when all are full.
    pub fn choose(&self, used: &[u64]) -> Option<u8> {
        (0..=self.extensions).find(|&b| {
            let n = used.get(usize::from(b)).copied().unwrap_or(0);
            n < self.capacity(b) as u64
        })
    }
}

/// The bridge an endpoint's host end is a port of.
pub fn endpoint_bridge(spec: &NetworkSpec, rec: &EndpointRecord) -> IfName {
    match rec.extension {
        None => spec.bridge.clone(),
        Some(i) => naming::extension_bridge_name(&spec.name, i),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::BRIDGE_MAX_PORTS;
    use crate::plan::tests_support::{network, record};

    #[test]
    fn a_slash_20_needs_four_extensions() {
        let spec = network("big", "10.16.0.0/20");
        assert_eq!(usable_addresses(&spec), 4093);
        let l = BridgeLayout::of(&spec, BRIDGE_MAX_PORTS, 15);
        assert_eq!(l.extensions, 4);
        // Main: a port per possible trunk end and the anchor's.
        assert_eq!(l.capacity(0), 1018);
        assert_eq!(l.capacity(1), 1022);
        assert_eq!(l.capacity(5), 0);
        assert_eq!(l.total(), 1018 + 4 * 1022);
        assert!(l.total() >= 4093);
        assert!(l.may_overflow_main(&spec));
    }

    #[test]
    fn small_subnets_stay_on_one_bridge_and_the_cap_holds() {
        let small = network("s", "10.1.0.0/22");
        let l = BridgeLayout::of(&small, BRIDGE_MAX_PORTS, 15);
        assert_eq!((l.extensions, l.total()), (0, 1023));
        assert!(!BridgeLayout::of(&network("t", "10.1.0.0/24"), 1023, 15)
            .may_overflow_main(&network("t", "10.1.0.0/24")));
        // A /22 has 1,021 usable addresses but 1,024 in all: still counted.
        assert!(l.may_overflow_main(&small));
        let huge = network("h", "10.0.0.0/12");
        assert_eq!(BridgeLayout::of(&huge, 1023, 15).extensions, 15);
        assert_eq!(BridgeLayout::of(&huge, 1023, 40).extensions, 15);
        let off = BridgeLayout::of(&huge, 1023, 0);
        assert_eq!((off.extensions, off.total()), (0, 1023));
        // Tiny bridges (the fakes): the main bridge keeps a port for an endpoint besides its
        // trunk ends and the anchor.
        let tiny = BridgeLayout::of(&huge, 4, 15);
        assert_eq!((tiny.extensions, tiny.capacity(0), tiny.total()), (2, 1, 7));
    }

    #[test]
    fn the_first_bridge_with_a_free_port_is_chosen() {
        let l = BridgeLayout {
            ports: 5,
            extensions: 2,
        };
        assert_eq!(l.choose(&[]), Some(0));
        assert_eq!(l.choose(&[1]), Some(0));
        assert_eq!(l.choose(&[2]), Some(1));
        assert_eq!(l.choose(&[2, 4, 1]), Some(2));
        assert_eq!(l.choose(&[1, 4, 4]), Some(0), "a freed main port first");
        assert_eq!(l.choose(&[2, 4, 4]), None);
    }

    #[test]
    fn endpoints_name_their_bridge() {
        let spec = network("a", "10.1.0.0/16");
        let mut rec = record(&spec, "c");
        assert_eq!(endpoint_bridge(&spec, &rec), spec.bridge);
        rec.extension = Some(2);
        assert_eq!(
            endpoint_bridge(&spec, &rec),
            naming::extension_bridge_name(&spec.name, 2)
        );
    }
}
