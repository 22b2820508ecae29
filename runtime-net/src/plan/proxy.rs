//! ARP kept local in a network spread over several bridges (pure).
//!
//! The main bridge is the hub. Every address of the network is known to it: a proxy entry
//! (permanent neighbour on the bridge, static forwarding entry) per endpoint, behind the
//! endpoint's own port or behind the trunk of its extension. The main ends of the trunks have
//! proxy ARP (wifi variant): the main bridge answers a request, from any port, for an address
//! behind a trunk, and floods a request it could resolve to its own container ports only, never
//! into a trunk. An anchor port with ARP suppression (see [`crate::naming::anchor_names`])
//! switches that behaviour on; it also keeps requests for the gateway out of the trunks.
//!
//! An extension knows the gateway (behind its trunk end, which has ARP suppression) and its own
//! endpoints (behind their ports): it answers for the gateway and keeps requests for its own
//! endpoints local. Any other request is flooded to its ports and its trunk, and the main bridge
//! answers it. A request for an address nobody has is flooded everywhere, as on one bridge.
//!
//! So an attach writes one entry on the endpoint's own bridge and, on an extension, one on the
//! main bridge, however many bridges the network has. (Entries on every bridge for every
//! address cost an attach one entry per bridge, and the kernel work of every port change grows
//! with the entries a bridge holds.) A network without extensions has no entries at all.

use crate::kernel::ProxyEntry;
use crate::naming;
use crate::plan::bridges::endpoint_bridge;
use crate::types::{EndpointRecord, MacAddr, NetworkSpec};

/// The entries for `rec`, given the extensions that exist: nothing while the network is one
/// bridge; otherwise its own bridge's entry and, on an extension, the main bridge's.
pub fn endpoint_entries(spec: &NetworkSpec, rec: &EndpointRecord, exts: &[u8]) -> Vec<ProxyEntry> {
    match rec.extension {
        None if exts.is_empty() => Vec::new(),
        None => vec![at_home(spec, rec)],
        Some(i) => vec![at_home(spec, rec), on_main(spec, i, rec)],
    }
}

/// Everything extension `index` needs (the gateway, its endpoints), its endpoints' entries on
/// the main bridge, and the main bridge's own endpoints (which had none while the network was
/// one bridge).
pub fn extension_entries<'a>(
    spec: &NetworkSpec,
    index: u8,
    records: impl IntoIterator<Item = &'a EndpointRecord>,
    gateway_mac: MacAddr,
) -> Vec<ProxyEntry> {
    let mut out = vec![ProxyEntry {
        bridge: naming::extension_bridge_name(&spec.name, index),
        port: naming::trunk_names(&spec.name, index).1,
        port_is_trunk: true,
        ip: spec.gateway,
        mac: gateway_mac,
    }];
    for rec in records {
        match rec.extension {
            None => out.push(at_home(spec, rec)),
            Some(i) if i == index => out.extend([at_home(spec, rec), on_main(spec, i, rec)]),
            Some(_) => {}
        }
    }
    out
}

/// On the endpoint's own bridge, behind its own port.
fn at_home(spec: &NetworkSpec, rec: &EndpointRecord) -> ProxyEntry {
    ProxyEntry {
        bridge: endpoint_bridge(spec, rec),
        port: rec.host_ifname.clone(),
        port_is_trunk: false,
        ip: rec.ipv4.ip(),
        mac: rec.mac,
    }
}

/// On the main bridge, behind the trunk of extension `index`.
fn on_main(spec: &NetworkSpec, index: u8, rec: &EndpointRecord) -> ProxyEntry {
    ProxyEntry {
        bridge: spec.bridge.clone(),
        port: naming::trunk_names(&spec.name, index).0,
        port_is_trunk: true,
        ip: rec.ipv4.ip(),
        mac: rec.mac,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::tests_support::{network, record};

    fn at(spec: &NetworkSpec, cid: &str, ip: &str, ext: Option<u8>) -> EndpointRecord {
        let mut r = record(spec, cid);
        r.ipv4 = format!("{ip}/24").parse().unwrap();
        r.mac = MacAddr([2, 0, 0, 0, 0, r.ipv4.ip().octets()[3]]);
        r.extension = ext;
        r
    }

    fn names(e: &[ProxyEntry]) -> Vec<(String, String, String, bool)> {
        e.iter()
            .map(|e| {
                let (b, p) = (e.bridge.to_string(), e.port.to_string());
                (b, p, e.ip.to_string(), e.port_is_trunk)
            })
            .collect()
    }

    #[test]
    fn an_attach_writes_at_most_two_entries_however_many_bridges() {
        let spec = network("big", "10.5.0.0/24");
        let x = |i| naming::extension_bridge_name(&spec.name, i).to_string();
        let t = |i| naming::trunk_names(&spec.name, i).0.to_string();
        let main = at(&spec, "m", "10.5.0.2", None);
        let home = main.host_ifname.to_string();
        let e = endpoint_entries(&spec, &main, &[1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(
            names(&e),
            vec![(spec.bridge.to_string(), home, "10.5.0.2".into(), false)]
        );
        assert_eq!(e[0].mac, main.mac);
        let on2 = at(&spec, "x", "10.5.0.9", Some(2));
        let home = on2.host_ifname.to_string();
        assert_eq!(
            names(&endpoint_entries(&spec, &on2, &[1, 2, 3, 4, 5, 6, 7])),
            vec![
                (x(2), home, "10.5.0.9".into(), false),
                (spec.bridge.to_string(), t(2), "10.5.0.9".into(), true),
            ]
        );
        // One bridge: nothing at all.
        assert!(endpoint_entries(&spec, &main, &[]).is_empty());
    }

    #[test]
    fn a_new_extension_learns_the_gateway_and_its_own_and_main_learns_everybody() {
        let spec = network("big", "10.5.0.0/24");
        let recs = [
            at(&spec, "a", "10.5.0.2", None),
            at(&spec, "b", "10.5.0.3", Some(1)),
            at(&spec, "c", "10.5.0.4", Some(2)),
        ];
        let gw = MacAddr([2, 1, 1, 1, 1, 1]);
        let e = extension_entries(&spec, 2, &recs, gw);
        let x2 = naming::extension_bridge_name(&spec.name, 2).to_string();
        let (t2, u2) = naming::trunk_names(&spec.name, 2);
        let main = spec.bridge.to_string();
        assert_eq!(
            names(&e),
            vec![
                (x2.clone(), u2.to_string(), spec.gateway.to_string(), true),
                (
                    main.clone(),
                    recs[0].host_ifname.to_string(),
                    "10.5.0.2".into(),
                    false
                ),
                (
                    x2,
                    recs[2].host_ifname.to_string(),
                    "10.5.0.4".into(),
                    false
                ),
                (main, t2.to_string(), "10.5.0.4".into(), true),
            ]
        );
        assert_eq!(e[0].mac, gw);
        assert_eq!(e[3].mac, recs[2].mac);
    }
}
