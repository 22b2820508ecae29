//! ARP answered where it is asked, in a network spread over several bridges (pure).
//!
//! Every trunk end has ARP suppression on. A bridge then answers a request for an address it
//! has a proxy entry for (neighbour entry on the bridge, forwarding entry to the trunk port the
//! owner is behind), and floods the request only to its own container ports, never into a
//! trunk. Without this, one broadcast is copied into every port of every bridge in turn, and at
//! thousands of ports those copies overflow the kernel's per-CPU input backlog.
//!
//! The entries: on each extension bridge, the gateway (the main bridge's MAC) and every endpoint
//! not on it, behind its trunk to main; on the main bridge, every endpoint of an extension,
//! behind that extension's trunk. Endpoints on the main bridge need nothing there, nor those of
//! an extension on their own bridge: the request reaches them by the local flood.

use crate::kernel::ProxyEntry;
use crate::naming;
use crate::types::{EndpointRecord, MacAddr, NetworkSpec};

/// The entries that let the other bridges answer for `rec`, given the extensions that exist.
pub fn endpoint_entries(spec: &NetworkSpec, rec: &EndpointRecord, exts: &[u8]) -> Vec<ProxyEntry> {
    let home = rec.extension.unwrap_or(0);
    let mut out: Vec<ProxyEntry> = exts
        .iter()
        .filter(|&&i| i != home)
        .map(|&i| on_extension(spec, i, rec.ipv4.ip(), rec.mac))
        .collect();
    if home != 0 {
        out.push(on_main(spec, home, rec));
    }
    out
}

/// Everything extension `index` needs (the gateway and the endpoints elsewhere) and the main
/// bridge's entries for the endpoints on `index`.
pub fn extension_entries<'a>(
    spec: &NetworkSpec,
    index: u8,
    records: impl IntoIterator<Item = &'a EndpointRecord>,
    gateway_mac: MacAddr,
) -> Vec<ProxyEntry> {
    let mut out = vec![on_extension(spec, index, spec.gateway, gateway_mac)];
    for rec in records {
        if rec.extension == Some(index) {
            out.push(on_main(spec, index, rec));
        } else {
            out.push(on_extension(spec, index, rec.ipv4.ip(), rec.mac));
        }
    }
    out
}

fn on_extension(spec: &NetworkSpec, index: u8, ip: std::net::Ipv4Addr, mac: MacAddr) -> ProxyEntry {
    ProxyEntry {
        bridge: naming::extension_bridge_name(&spec.name, index),
        port: naming::trunk_names(&spec.name, index).1,
        ip,
        mac,
    }
}

fn on_main(spec: &NetworkSpec, index: u8, rec: &EndpointRecord) -> ProxyEntry {
    ProxyEntry {
        bridge: spec.bridge.clone(),
        port: naming::trunk_names(&spec.name, index).0,
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

    fn names(e: &[ProxyEntry]) -> Vec<(String, String, String)> {
        e.iter()
            .map(|e| (e.bridge.to_string(), e.port.to_string(), e.ip.to_string()))
            .collect()
    }

    #[test]
    fn an_endpoint_is_answered_for_on_every_other_bridge_behind_the_right_trunk() {
        let spec = network("big", "10.5.0.0/24");
        let x = |i| naming::extension_bridge_name(&spec.name, i).to_string();
        let t = |i| naming::trunk_names(&spec.name, i);
        let main = at(&spec, "m", "10.5.0.2", None);
        let e = endpoint_entries(&spec, &main, &[1, 2]);
        assert_eq!(
            names(&e),
            vec![
                (x(1), t(1).1.to_string(), "10.5.0.2".into()),
                (x(2), t(2).1.to_string(), "10.5.0.2".into()),
            ]
        );
        assert_eq!(e[0].mac, main.mac);
        // On extension 2: the other extension and main answer for it.
        let on2 = at(&spec, "x", "10.5.0.9", Some(2));
        assert_eq!(
            names(&endpoint_entries(&spec, &on2, &[1, 2])),
            vec![
                (x(1), t(1).1.to_string(), "10.5.0.9".into()),
                (
                    spec.bridge.to_string(),
                    t(2).0.to_string(),
                    "10.5.0.9".into()
                ),
            ]
        );
        // No extension: nothing at all.
        assert!(endpoint_entries(&spec, &main, &[]).is_empty());
    }

    #[test]
    fn a_new_extension_learns_the_gateway_and_everybody_elsewhere() {
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
        assert_eq!(
            names(&e),
            vec![
                (x2.clone(), u2.to_string(), spec.gateway.to_string()),
                (x2.clone(), u2.to_string(), "10.5.0.2".into()),
                (x2, u2.to_string(), "10.5.0.3".into()),
                (spec.bridge.to_string(), t2.to_string(), "10.5.0.4".into()),
            ]
        );
        assert_eq!(e[0].mac, gw);
    }
}
