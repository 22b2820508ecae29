//! Comparing an endpoint in the kernel with its record: what was seen ([`Seen`]), then the
//! differences as human-readable problems (pure). An endpoint with no problems is intact; the
//! attach pipeline rebuilds one that is not.

use std::net::IpAddr;

use crate::kernel::ContainerEnd;
use crate::netlink::LinkInfo;
use crate::types::{EndpointKind, EndpointRecord, NetworkSpec};

/// What the kernel shows of one endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// Index of the endpoint's bridge (main or extension); `None` if it is missing.
    pub bridge: Option<u32>,
    /// The host end; `None` if it is missing.
    pub host: Option<LinkInfo>,
    /// The container end; `None` when it is not the engine's to look at (a prepared endpoint's
    /// container end belongs to the caller once handed over).
    pub container: Option<ContainerEnd>,
}

/// Everything wrong with the endpoint (pure).
pub fn problems(spec: &NetworkSpec, rec: &EndpointRecord, seen: &Seen) -> Vec<String> {
    let mut out = Vec::new();
    let h = &rec.host_ifname;
    match &seen.host {
        None => out.push(format!("host end {h} missing")),
        Some(end) => {
            let bridge = crate::plan::bridges::endpoint_bridge(spec, rec);
            match seen.bridge {
                None => out.push(format!("bridge {bridge} missing")),
                Some(b) if end.master != Some(b) => {
                    out.push(format!("host end {h} not on bridge {bridge}"))
                }
                Some(_) => {}
            }
            if !end.up {
                out.push(format!("host end {h} down"));
            }
            if end.mtu.is_some_and(|m| m != rec.mtu) {
                out.push(format!("host end {h} MTU is not {}", rec.mtu));
            }
        }
    }
    let Some(container) = &seen.container else {
        return out;
    };
    let c = &rec.key.ifname;
    let ns = rec.netns.display();
    match container {
        ContainerEnd::NetnsMissing(why) => out.push(format!("netns {ns} missing: {why}")),
        ContainerEnd::LinkMissing => out.push(format!("container end {c} missing in netns {ns}")),
        ContainerEnd::Present {
            mac,
            up,
            addrs,
            gateways,
        } => {
            if mac.as_deref() != Some(&rec.mac.0[..]) {
                out.push(format!(
                    "container end {c} has wrong MAC (want {})",
                    rec.mac
                ));
            }
            if !up {
                out.push(format!("container end {c} down"));
            }
            let mut want = vec![(IpAddr::V4(rec.ipv4.ip()), rec.ipv4.prefix())];
            if let Some(n) = rec.ipv6 {
                want.push((IpAddr::V6(n.ip()), n.prefix()));
            }
            for (ip, p) in want {
                if !addrs.contains(&(ip, p)) {
                    out.push(format!("container end {c} address {ip}/{p} missing"));
                }
            }
            for gw in gateways_of(rec) {
                if !gateways.contains(&gw) {
                    out.push(format!("default route via {gw} missing in netns {ns}"));
                }
            }
        }
    }
    out
}

/// The default-route gateways a managed endpoint's container end gets.
pub fn gateways_of(rec: &EndpointRecord) -> Vec<IpAddr> {
    std::iter::once(IpAddr::V4(rec.gateway))
        .chain(rec.gateway6.map(IpAddr::V6))
        .collect()
}

/// Whether the engine looks at the container end of this kind of endpoint.
pub fn checks_container(kind: EndpointKind) -> bool {
    kind == EndpointKind::Managed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::LinkKind;
    use crate::plan::tests_support::{network, record};

    fn good() -> ContainerEnd {
        ContainerEnd::Present {
            mac: Some(vec![0x0a, 0x58, 10, 1, 0, 2]),
            up: true,
            addrs: vec![
                ("10.1.0.2".parse().unwrap(), 24),
                ("fd00::2".parse().unwrap(), 64),
            ],
            gateways: vec!["10.1.0.1".parse().unwrap(), "fd00::1".parse().unwrap()],
        }
    }

    fn host(master: Option<u32>, up: bool) -> LinkInfo {
        LinkInfo {
            name: "snvaaaa".into(),
            index: 9,
            alias: None,
            kind: LinkKind::Veth,
            master,
            up,
            mtu: Some(1500),
            group: 0,
        }
    }

    fn rec6() -> (NetworkSpec, EndpointRecord) {
        let spec = network("a", "10.1.0.0/24");
        let mut r = record(&spec, "c");
        r.ipv6 = Some("fd00::2/64".parse().unwrap());
        r.gateway6 = Some("fd00::1".parse().unwrap());
        (spec, r)
    }

    #[test]
    fn no_problems_when_all_in_place() {
        let (spec, r) = rec6();
        let seen = Seen {
            bridge: Some(5),
            host: Some(host(Some(5), true)),
            container: Some(good()),
        };
        assert_eq!(problems(&spec, &r, &seen), Vec::<String>::new());
    }

    #[test]
    fn reports_each_difference() {
        let (spec, r) = rec6();
        let seen = Seen {
            bridge: Some(5),
            host: Some(host(None, false)),
            container: Some(ContainerEnd::Present {
                mac: Some(vec![2, 0, 0, 0, 0, 1]),
                up: false,
                addrs: vec![("10.1.0.2".parse().unwrap(), 16)],
                gateways: vec![],
            }),
        };
        let p = problems(&spec, &r, &seen);
        let all = p.join("\n");
        for want in [
            format!("host end {} not on bridge a", r.host_ifname),
            format!("host end {} down", r.host_ifname),
            "container end eth0 has wrong MAC".into(),
            "container end eth0 down".into(),
            "address 10.1.0.2/24 missing".into(),
            "address fd00::2/64 missing".into(),
            "default route via 10.1.0.1 missing".into(),
            "default route via fd00::1 missing".into(),
        ] {
            assert!(all.contains(&want), "{want} not in {all}");
        }
        assert_eq!(p.len(), 8);
    }

    #[test]
    fn reports_missing_objects_and_skips_a_handed_over_container_end() {
        let (spec, r) = rec6();
        let seen = Seen {
            bridge: None,
            host: None,
            container: Some(ContainerEnd::LinkMissing),
        };
        assert_eq!(
            problems(&spec, &r, &seen),
            vec![
                format!("host end {} missing", r.host_ifname),
                format!("container end eth0 missing in netns {}", r.netns.display()),
            ]
        );
        let seen = Seen {
            bridge: None,
            host: Some(host(Some(5), true)),
            container: Some(ContainerEnd::NetnsMissing("gone".into())),
        };
        assert_eq!(
            problems(&spec, &r, &seen),
            vec![
                "bridge a missing".to_string(),
                format!("netns {} missing: gone", r.netns.display()),
            ]
        );
        let mut wrong_mtu = host(Some(5), true);
        wrong_mtu.mtu = Some(9000);
        let seen = Seen {
            bridge: Some(5),
            host: Some(wrong_mtu),
            container: None,
        };
        assert_eq!(
            problems(&spec, &r, &seen),
            vec![format!("host end {} MTU is not 1500", r.host_ifname)]
        );
    }
}
