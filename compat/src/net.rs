//! Address arithmetic shared by the Docker and CNI translations.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::IpNetwork;

/// The conventional gateway of `subnet`: its first host address (`None` for an IPv4 /31–/32 or an
/// IPv6 /127–/128, which have no room for one).
pub fn first_host(subnet: IpNetwork) -> Option<IpAddr> {
    match subnet {
        IpNetwork::V4(n) if n.prefix() < 31 => {
            Some(IpAddr::V4(Ipv4Addr::from(u32::from(n.network()) + 1)))
        }
        IpNetwork::V6(n) if n.prefix() < 127 => {
            Some(IpAddr::V6(Ipv6Addr::from(u128::from(n.network()) + 1)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_host_or_none() {
        let f = |s: &str| first_host(s.parse().unwrap()).map(|i| i.to_string());
        assert_eq!(f("10.1.2.0/24").as_deref(), Some("10.1.2.1"));
        assert_eq!(f("10.1.2.77/24").as_deref(), Some("10.1.2.1"));
        assert_eq!(f("fd00::/64").as_deref(), Some("fd00::1"));
        assert_eq!(f("10.1.2.0/31"), None);
        assert_eq!(f("fd00::/127"), None);
    }
}
