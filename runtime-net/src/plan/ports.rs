//! Published ports: what an endpoint asks for and the one decision of which host ports it gets
//! (pure). The store runs it inside the transaction that records the endpoint, so two endpoints can
//! never be given the same host port, whichever front door they came through.

use std::net::IpAddr;
use std::ops::RangeInclusive;

use crate::types::{EndpointKey, PortMapping, Protocol};

/// A published port whose host port may be any one of a range (one port: a range of one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortRequest {
    /// Protocol.
    pub protocol: Protocol,
    /// Host address (`None` = all).
    pub host_ip: Option<IpAddr>,
    /// Acceptable host ports; the first free one is taken.
    pub host_ports: RangeInclusive<u16>,
    /// Container port.
    pub container_port: u16,
}

impl From<PortMapping> for PortRequest {
    fn from(p: PortMapping) -> Self {
        PortRequest {
            protocol: p.protocol,
            host_ip: p.host_ip,
            host_ports: p.host_port..=p.host_port,
            container_port: p.container_port,
        }
    }
}

/// Why the ports of a request cannot be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ports: {0}")]
pub struct PortsTaken(pub String);

/// Whether two mappings want the same host port (an unspecified host address clashes with all).
pub fn clash(a: &PortMapping, b: &PortMapping) -> bool {
    a.protocol == b.protocol
        && a.host_port == b.host_port
        && match (a.host_ip, b.host_ip) {
            (Some(x), Some(y)) => x == y,
            _ => true,
        }
}

fn shown(ip: Option<IpAddr>) -> String {
    ip.map_or("all addresses".to_string(), |i| i.to_string())
}

/// Chooses a host port for every request: the first of its range that clashes neither with
/// `taken` (other endpoints' ports, with their keys) nor with a port chosen earlier in the same
/// request.
pub fn choose(
    requests: &[PortRequest],
    taken: &[(EndpointKey, PortMapping)],
) -> Result<Vec<PortMapping>, PortsTaken> {
    let mut chosen: Vec<PortMapping> = Vec::with_capacity(requests.len());
    for r in requests {
        let candidate = |port: u16| PortMapping {
            protocol: r.protocol,
            host_ip: r.host_ip,
            host_port: port,
            container_port: r.container_port,
        };
        let pick = r.host_ports.clone().map(candidate).find(|m| {
            !taken.iter().any(|(_, t)| clash(m, t)) && !chosen.iter().any(|c| clash(m, c))
        });
        match pick {
            Some(m) => chosen.push(m),
            None if r.host_ports.start() == r.host_ports.end() => {
                let m = candidate(*r.host_ports.start());
                let by = match taken.iter().find(|(_, t)| clash(&m, t)) {
                    Some((k, t)) => format!("endpoint {k} ({})", shown(t.host_ip)),
                    None => "another mapping of this request".to_string(),
                };
                return Err(PortsTaken(format!(
                    "host port {}/{} is already published by {by}",
                    m.host_port, m.protocol
                )));
            }
            None => {
                return Err(PortsTaken(format!(
                    "no free host port in {}-{}/{} for container port {}",
                    r.host_ports.start(),
                    r.host_ports.end(),
                    r.protocol,
                    r.container_port
                )))
            }
        }
    }
    Ok(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{ContainerId, IfName, NetworkName};

    fn pm(ip: Option<&str>, port: u16, proto: Protocol) -> PortMapping {
        PortMapping {
            protocol: proto,
            host_ip: ip.map(|s| s.parse().unwrap()),
            host_port: port,
            container_port: 80,
        }
    }

    fn key(c: &str) -> EndpointKey {
        EndpointKey {
            network: NetworkName::new("n").unwrap(),
            container_id: ContainerId::new(c).unwrap(),
            ifname: IfName::new("eth0").unwrap(),
        }
    }

    fn wish(port: RangeInclusive<u16>) -> PortRequest {
        PortRequest {
            protocol: Protocol::Tcp,
            host_ip: None,
            host_ports: port,
            container_port: 80,
        }
    }

    #[test]
    fn clash_rules() {
        let tcp = Protocol::Tcp;
        assert!(clash(&pm(None, 80, tcp), &pm(None, 80, tcp)));
        assert!(clash(&pm(None, 80, tcp), &pm(Some("127.0.0.1"), 80, tcp)));
        assert!(!clash(
            &pm(Some("127.0.0.2"), 80, tcp),
            &pm(Some("127.0.0.1"), 80, tcp)
        ));
        assert!(!clash(&pm(None, 80, tcp), &pm(None, 80, Protocol::Udp)));
        assert!(!clash(&pm(None, 80, tcp), &pm(None, 81, tcp)));
    }

    #[test]
    fn ranges_take_the_first_free_port() {
        let taken = vec![(key("a"), pm(None, 8000, Protocol::Tcp))];
        let got = choose(&[wish(8000..=8002), wish(8000..=8002)], &taken).unwrap();
        assert_eq!((got[0].host_port, got[1].host_port), (8001, 8002));
        let e = choose(&[wish(8000..=8000)], &taken).unwrap_err();
        assert_eq!(
            e.to_string(),
            "ports: host port 8000/tcp is already published by endpoint n/a/eth0 (all addresses)"
        );
        let e = choose(
            &[wish(8000..=8001), wish(8001..=8001), wish(8000..=8001)],
            &taken,
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("already published by another mapping of this request"),
            "{e}"
        );
        let e = choose(
            &[wish(8000..=8001), wish(8000..=8001), wish(8000..=8001)],
            &taken,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "ports: no free host port in 8000-8001/tcp for container port 80"
        );
        assert_eq!(choose(&[], &taken).unwrap(), vec![]);
    }
}
