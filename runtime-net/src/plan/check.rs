//! Comparing an endpoint's veth pair in the kernel with its config: gather what is there, then
//! list the differences as human-readable problems (pure).

use std::net::IpAddr;

use rtnetlink::Handle;

use super::{netns, query, NetlinkError, VethConfig};

/// The host end as seen in the daemon's namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HostEnd {
    /// Index of its master, if any.
    pub master: Option<u32>,
    /// Admin up.
    pub up: bool,
}

/// The container end as seen inside its namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ContainerEnd {
    /// The namespace could not be opened or entered.
    NetnsMissing(String),
    /// No link of that name in the namespace.
    LinkMissing,
    /// The link is there.
    Present {
        /// Hardware address.
        mac: Option<Vec<u8>>,
        /// Admin up.
        up: bool,
        /// Addresses with prefix length.
        addrs: Vec<(IpAddr, u8)>,
        /// Default-route gateways (main table).
        gateways: Vec<IpAddr>,
    },
}

/// Everything wrong with the endpoint (pure). `bridge_index` is `None` if the bridge is missing.
pub(crate) fn problems(
    cfg: &VethConfig,
    bridge_index: Option<u32>,
    host: Option<&HostEnd>,
    container: &ContainerEnd,
) -> Vec<String> {
    let mut out = Vec::new();
    let h = &cfg.host_ifname;
    match host {
        None => out.push(format!("host end {h} missing")),
        Some(end) => {
            match bridge_index {
                None => out.push(format!("bridge {} missing", cfg.bridge)),
                Some(b) if end.master != Some(b) => {
                    out.push(format!("host end {h} not on bridge {}", cfg.bridge))
                }
                Some(_) => {}
            }
            if !end.up {
                out.push(format!("host end {h} down"));
            }
        }
    }
    let c = &cfg.container_ifname;
    let ns = cfg.netns.display();
    match container {
        ContainerEnd::NetnsMissing(why) => out.push(format!("netns {ns} missing: {why}")),
        ContainerEnd::LinkMissing => out.push(format!("container end {c} missing in netns {ns}")),
        ContainerEnd::Present {
            mac,
            up,
            addrs,
            gateways,
        } => {
            if mac.as_deref() != Some(&cfg.mac.0[..]) {
                out.push(format!(
                    "container end {c} has wrong MAC (want {})",
                    cfg.mac
                ));
            }
            if !up {
                out.push(format!("container end {c} down"));
            }
            let mut want = vec![(IpAddr::V4(cfg.ipv4.ip()), cfg.ipv4.prefix())];
            if let Some(n) = cfg.ipv6 {
                want.push((IpAddr::V6(n.ip()), n.prefix()));
            }
            for (ip, p) in want {
                if !addrs.contains(&(ip, p)) {
                    out.push(format!("container end {c} address {ip}/{p} missing"));
                }
            }
            let gws = cfg
                .gateway
                .map(IpAddr::V4)
                .into_iter()
                .chain(cfg.gateway6.map(IpAddr::V6));
            for gw in gws {
                if !gateways.contains(&gw) {
                    out.push(format!("default route via {gw} missing in netns {ns}"));
                }
            }
        }
    }
    out
}

/// Gathers the endpoint's state and lists its problems.
pub(crate) async fn check(h: &Handle, cfg: &VethConfig) -> Result<Vec<String>, NetlinkError> {
    let bridge = query::link_by_name(h, cfg.bridge.as_str()).await?;
    let host = query::link_by_name(h, cfg.host_ifname.as_str())
        .await?
        .map(|l| HostEnd {
            master: query::master(&l),
            up: query::is_up(&l),
        });
    let container = container_end(cfg).await?;
    Ok(problems(
        cfg,
        bridge.map(|b| b.header.index),
        host.as_ref(),
        &container,
    ))
}

async fn container_end(cfg: &VethConfig) -> Result<ContainerEnd, NetlinkError> {
    let file = match netns::open(&cfg.netns) {
        Ok(f) => f,
        Err(e) => return Ok(ContainerEnd::NetnsMissing(e.to_string())),
    };
    let ns = match netns::connect_in(&file, &cfg.netns).await {
        Ok(h) => h,
        Err(e) => return Ok(ContainerEnd::NetnsMissing(e.to_string())),
    };
    let name = cfg.container_ifname.as_str();
    let object = format!("{name} in {}", cfg.netns.display());
    let Some(link) = query::link_by_name(&ns, name).await? else {
        return Ok(ContainerEnd::LinkMissing);
    };
    Ok(ContainerEnd::Present {
        mac: query::mac(&link),
        up: query::is_up(&link),
        addrs: query::addresses(&ns, link.header.index, &object).await?,
        gateways: query::default_gateways(&ns, &object).await?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{IfName, MacAddr};

    fn cfg() -> VethConfig {
        VethConfig {
            bridge: IfName::new("snbr0").unwrap(),
            host_ifname: IfName::new("snvaaaa").unwrap(),
            host_alias: "shimnet:ep=n/c/eth0".into(),
            netns: "/run/netns/c".into(),
            container_ifname: IfName::new("eth0").unwrap(),
            mac: MacAddr([2, 0x42, 10, 88, 0, 2]),
            ipv4: "10.88.0.2/24".parse().unwrap(),
            ipv6: Some("fd00::2/64".parse().unwrap()),
            gateway: Some("10.88.0.1".parse().unwrap()),
            gateway6: Some("fd00::1".parse().unwrap()),
            mtu: 1500,
            hairpin: false,
            isolated: false,
        }
    }

    fn good() -> ContainerEnd {
        ContainerEnd::Present {
            mac: Some(vec![2, 0x42, 10, 88, 0, 2]),
            up: true,
            addrs: vec![
                ("10.88.0.2".parse().unwrap(), 24),
                ("fd00::2".parse().unwrap(), 64),
            ],
            gateways: vec!["10.88.0.1".parse().unwrap(), "fd00::1".parse().unwrap()],
        }
    }

    const HOST_OK: HostEnd = HostEnd {
        master: Some(5),
        up: true,
    };

    #[test]
    fn no_problems_when_all_in_place() {
        assert!(problems(&cfg(), Some(5), Some(&HOST_OK), &good()).is_empty());
    }

    #[test]
    fn reports_each_difference() {
        let host = HostEnd {
            master: None,
            up: false,
        };
        let c = ContainerEnd::Present {
            mac: Some(vec![2, 0, 0, 0, 0, 1]),
            up: false,
            addrs: vec![("10.88.0.2".parse().unwrap(), 16)],
            gateways: vec![],
        };
        let p = problems(&cfg(), Some(5), Some(&host), &c);
        let all = p.join("\n");
        for want in [
            "host end snvaaaa not on bridge snbr0",
            "host end snvaaaa down",
            "container end eth0 has wrong MAC",
            "container end eth0 down",
            "address 10.88.0.2/24 missing",
            "address fd00::2/64 missing",
            "default route via 10.88.0.1 missing",
            "default route via fd00::1 missing",
        ] {
            assert!(all.contains(want), "{want} not in {all}");
        }
        assert_eq!(p.len(), 8);
    }

    #[test]
    fn reports_missing_objects() {
        let p = problems(&cfg(), None, None, &ContainerEnd::LinkMissing);
        assert_eq!(
            p,
            vec![
                "host end snvaaaa missing".to_string(),
                "container end eth0 missing in netns /run/netns/c".to_string()
            ]
        );
        let p = problems(
            &cfg(),
            None,
            Some(&HOST_OK),
            &ContainerEnd::NetnsMissing("gone".into()),
        );
        assert_eq!(
            p,
            vec![
                "bridge snbr0 missing".to_string(),
                "netns /run/netns/c missing: gone".to_string()
            ]
        );
    }
}
