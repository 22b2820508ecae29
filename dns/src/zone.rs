//! One network's name table, immutable once built: names → IPv4/IPv6 addresses and addresses →
//! names, plus what the network's server is authoritative for. Every change builds a new
//! [`Zone`] from the registered [`Entry`]s and swaps it in whole (see `service`), so a query sees
//! either the table before a change or the one after it, never a mix.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use hickory_proto::rr::rdata::SOA;
use hickory_proto::rr::{Name, RData, Record};
use ipnetwork::IpNetwork;

use crate::name;

/// One endpoint's names and addresses on a network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Identity of the endpoint, unique on its network (e.g. `net/container/eth0`).
    pub id: String,
    /// The container it belongs to (the same on every network it is attached to): a container
    /// on several networks resolves the names of all of them, from any of their servers.
    pub container: String,
    /// Names it answers to; the first is the one reverse lookups return. Names that are not
    /// valid DNS names are ignored.
    pub names: Vec<String>,
    /// IPv4 address.
    pub ipv4: Option<Ipv4Addr>,
    /// IPv6 address.
    pub ipv6: Option<Ipv6Addr>,
}

/// What a network's server needs to know about the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkDns {
    /// Network name (metrics label, logs).
    pub name: String,
    /// Subnets: clients must come from one of them (or the host), and reverse lookups inside
    /// them are answered here.
    pub subnets: Vec<IpNetwork>,
    /// Addresses the server listens on (the network's gateways).
    pub listen: Vec<IpAddr>,
    /// Internal network: answers its own names and forwards nothing.
    pub internal: bool,
}

/// Settings every zone shares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneSettings {
    /// The search domain names are also answered under (a key: lower case, no final dot).
    pub domain: String,
    /// TTL of every local answer, and of negative answers (the SOA minimum).
    pub ttl: u32,
}

/// Addresses of one name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Addrs {
    /// IPv4 addresses, in endpoint order.
    pub v4: Vec<Ipv4Addr>,
    /// IPv6 addresses, in endpoint order.
    pub v6: Vec<Ipv6Addr>,
}

/// Which authority a negative answer speaks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Authority {
    /// The network's domain (its SOA goes into the authority section).
    Domain,
    /// The reverse zone of subnet number `n`.
    Reverse(usize),
    /// A bare single-label name: no zone above it but the root, so no SOA.
    Bare,
}

/// The outcome of looking a name up in a zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup<'z> {
    /// A local name with these addresses (records of the asked type may be absent: NODATA).
    Host(&'z Addrs, Authority),
    /// An address of one of the network's subnets with this name.
    Ptr(&'z Name, Authority),
    /// The domain's apex itself (exists; only SOA is answered).
    Apex,
    /// A name this server is authoritative for that does not exist.
    NxDomain(Authority),
    /// Not a local name.
    Outside,
}

/// One network's table (immutable; replaced whole on every change).
#[derive(Debug)]
pub struct Zone {
    net: Arc<NetworkDns>,
    settings: Arc<ZoneSettings>,
    serial: u32,
    names: HashMap<String, Addrs>,
    ptr: HashMap<IpAddr, Name>,
    /// Address → container.
    owners: HashMap<IpAddr, Arc<str>>,
    /// Containers attached.
    containers: HashSet<Arc<str>>,
    domain: Name,
    soa_domain: Record,
    soa_reverse: Vec<Record>,
}

fn soa(apex: &Name, domain: &Name, serial: u32, ttl: u32) -> Record {
    let mname = Name::from_ascii("ns")
        .and_then(|n| n.append_domain(domain))
        .unwrap_or_else(|_| domain.clone());
    let rname = Name::from_ascii("hostmaster")
        .and_then(|n| n.append_domain(domain))
        .unwrap_or_else(|_| domain.clone());
    // Refresh, retry and expire do not matter (there are no secondaries); minimum = negative TTL.
    let data = SOA::new(mname, rname, serial, 3600, 600, 86_400, ttl);
    Record::from_rdata(apex.clone(), ttl, RData::SOA(data))
}

impl Zone {
    /// Builds a network's table from its entries (in id order: names with several addresses list
    /// them in that order). Invalid names are skipped; a name under the domain is registered
    /// without it (`web.dns.shimnet` answers as `web` does).
    pub fn build<'a>(
        net: Arc<NetworkDns>,
        settings: Arc<ZoneSettings>,
        serial: u32,
        entries: impl IntoIterator<Item = &'a Entry>,
    ) -> Zone {
        let domain =
            Name::from_ascii(format!("{}.", settings.domain)).unwrap_or_else(|_| Name::root());
        let suffix = format!(".{}", settings.domain);
        let mut names: HashMap<String, Addrs> = HashMap::new();
        let mut ptr = HashMap::new();
        let mut owners = HashMap::new();
        let mut containers = HashSet::new();
        for e in entries {
            let c: Arc<str> = Arc::from(e.container.as_str());
            containers.insert(c.clone());
            for ip in e
                .ipv4
                .map(IpAddr::V4)
                .into_iter()
                .chain(e.ipv6.map(IpAddr::V6))
            {
                owners.insert(ip, c.clone());
            }
            let mut first: Option<String> = None;
            let mut seen: Vec<String> = Vec::with_capacity(e.names.len());
            for n in &e.names {
                let Some(mut k) = name::key(n) else { continue };
                if let Some(rel) = k.strip_suffix(&suffix) {
                    k = rel.to_string();
                }
                if k == settings.domain || name::is_reverse(&k) || seen.contains(&k) {
                    continue;
                }
                let a = names.entry(k.clone()).or_default();
                a.v4.extend(e.ipv4);
                a.v6.extend(e.ipv6);
                first.get_or_insert_with(|| k.clone());
                seen.push(k);
            }
            if let Some(f) = first {
                if let Ok(target) = Name::from_ascii(name::fqdn(&f, &settings.domain)) {
                    for ip in e
                        .ipv4
                        .map(IpAddr::V4)
                        .into_iter()
                        .chain(e.ipv6.map(IpAddr::V6))
                    {
                        ptr.insert(ip, target.clone());
                    }
                }
            }
        }
        let soa_domain = soa(&domain, &domain, serial, settings.ttl);
        let soa_reverse = net
            .subnets
            .iter()
            .map(|s| {
                let apex =
                    Name::from_ascii(name::reverse_apex(*s)).unwrap_or_else(|_| Name::root());
                soa(&apex, &domain, serial, settings.ttl)
            })
            .collect();
        Zone {
            net,
            settings,
            serial,
            names,
            ptr,
            owners,
            containers,
            domain,
            soa_domain,
            soa_reverse,
        }
    }

    /// An empty table for a network.
    pub fn empty(net: Arc<NetworkDns>, settings: Arc<ZoneSettings>) -> Zone {
        Self::build(net, settings, 0, [])
    }

    /// The network this table belongs to.
    pub fn network(&self) -> &NetworkDns {
        &self.net
    }

    /// TTL of local answers.
    pub fn ttl(&self) -> u32 {
        self.settings.ttl
    }

    /// Version of the table (grows with every change).
    pub fn serial(&self) -> u32 {
        self.serial
    }

    /// The domain, fully qualified.
    pub fn domain(&self) -> &Name {
        &self.domain
    }

    /// Number of names in the table.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// True if no name is registered.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Every name with its addresses, sorted by name (for the names view).
    pub fn names(&self) -> BTreeMap<&str, &Addrs> {
        self.names.iter().map(|(k, v)| (k.as_str(), v)).collect()
    }

    /// The container that has address `ip` on this network.
    pub fn container_at(&self, ip: IpAddr) -> Option<&str> {
        self.owners.get(&ip).map(|c| &**c)
    }

    /// True if container `c` is attached to this network.
    pub fn has_container(&self, c: &str) -> bool {
        self.containers.contains(c)
    }

    /// True if `ip` is inside one of the network's subnets.
    pub fn in_subnets(&self, ip: IpAddr) -> bool {
        self.net.subnets.iter().any(|s| s.contains(ip))
    }

    /// The SOA record of an authority, if it has one.
    pub fn soa(&self, a: Authority) -> Option<&Record> {
        match a {
            Authority::Domain => Some(&self.soa_domain),
            Authority::Reverse(i) => self.soa_reverse.get(i),
            Authority::Bare => None,
        }
    }

    /// Looks a query key up (see [`name::query_key`]): a reverse name of an address in the
    /// network's subnets, a registered name (bare or under the domain), the domain's apex, a
    /// missing name under the domain or a missing single-label name (both NXDOMAIN), or outside.
    pub fn lookup(&self, key: &str) -> Lookup<'_> {
        if name::is_reverse(key) {
            if let Some(ip) = name::reverse_addr(key) {
                if let Some(i) = self.net.subnets.iter().position(|s| s.contains(ip)) {
                    return match self.ptr.get(&ip) {
                        Some(n) => Lookup::Ptr(n, Authority::Reverse(i)),
                        None => Lookup::NxDomain(Authority::Reverse(i)),
                    };
                }
            }
            return Lookup::Outside;
        }
        let domain = self.settings.domain.as_str();
        if key == domain {
            return Lookup::Apex;
        }
        if let Some(rel) = key.strip_suffix(domain).and_then(|r| r.strip_suffix('.')) {
            return match self.names.get(rel) {
                Some(a) => Lookup::Host(a, Authority::Domain),
                None => Lookup::NxDomain(Authority::Domain),
            };
        }
        match self.names.get(key) {
            Some(a) => Lookup::Host(a, Authority::Bare),
            None if !key.contains('.') => Lookup::NxDomain(Authority::Bare),
            None => Lookup::Outside,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn net() -> Arc<NetworkDns> {
        Arc::new(NetworkDns {
            name: "n1".into(),
            subnets: vec![
                "10.89.0.0/24".parse().unwrap(),
                "fd00:89::/64".parse().unwrap(),
            ],
            listen: vec!["10.89.0.1".parse().unwrap()],
            internal: false,
        })
    }

    pub(crate) fn settings() -> Arc<ZoneSettings> {
        Arc::new(ZoneSettings {
            domain: "dns.shimnet".into(),
            ttl: 5,
        })
    }

    fn entry(id: &str, names: &[&str], v4: &str, v6: Option<&str>) -> Entry {
        Entry {
            id: id.into(),
            container: id.into(),
            names: names.iter().map(|s| s.to_string()).collect(),
            ipv4: Some(v4.parse().unwrap()),
            ipv6: v6.map(|s| s.parse().unwrap()),
        }
    }

    pub(crate) fn sample() -> Zone {
        let es = [
            entry("a", &["web", "www", "Web"], "10.89.0.2", Some("fd00:89::2")),
            entry(
                "b",
                &["db", "shared", "bad name", "db.dns.shimnet"],
                "10.89.0.3",
                None,
            ),
            entry("c", &["shared"], "10.89.0.4", None),
            entry("d", &["my.app"], "10.89.0.5", None),
        ];
        Zone::build(net(), settings(), 7, es.iter())
    }

    #[test]
    fn names_bare_and_under_the_domain() {
        let z = sample();
        let Lookup::Host(a, Authority::Bare) = z.lookup("web") else {
            panic!("web: {:?}", z.lookup("web"))
        };
        assert_eq!(a.v4, vec!["10.89.0.2".parse::<Ipv4Addr>().unwrap()]);
        assert_eq!(a.v6, vec!["fd00:89::2".parse::<Ipv6Addr>().unwrap()]);
        assert!(matches!(
            z.lookup("www.dns.shimnet"),
            Lookup::Host(_, Authority::Domain)
        ));
        assert!(matches!(
            z.lookup("my.app"),
            Lookup::Host(_, Authority::Bare)
        ));
        assert!(matches!(z.lookup("my.app.dns.shimnet"), Lookup::Host(..)));
        let Lookup::Host(s, _) = z.lookup("shared") else {
            panic!()
        };
        assert_eq!(
            s.v4.len(),
            2,
            "both endpoints answer to an alias they share"
        );
        assert_eq!(z.lookup("dns.shimnet"), Lookup::Apex);
        assert_eq!(z.lookup("nope"), Lookup::NxDomain(Authority::Bare));
        assert_eq!(
            z.lookup("nope.dns.shimnet"),
            Lookup::NxDomain(Authority::Domain)
        );
        assert_eq!(z.lookup("example.com"), Lookup::Outside);
        assert_eq!(
            z.lookup("xdns.shimnet"),
            Lookup::Outside,
            "not under the domain"
        );
        assert!(
            matches!(z.lookup("db"), Lookup::Host(..)),
            "registered under the domain"
        );
        assert_eq!(
            z.len(),
            5,
            "web www db shared my.app; the invalid name skipped"
        );
    }

    #[test]
    fn reverse_lookups_inside_the_subnets_only() {
        let z = sample();
        let Lookup::Ptr(n, Authority::Reverse(0)) = z.lookup("2.0.89.10.in-addr.arpa") else {
            panic!()
        };
        assert_eq!(n.to_ascii(), "web.dns.shimnet.", "the first name");
        let v6 = name::reverse_name("fd00:89::2".parse().unwrap());
        assert!(matches!(
            z.lookup(v6.trim_end_matches('.')),
            Lookup::Ptr(_, Authority::Reverse(1))
        ));
        assert_eq!(
            z.lookup("9.0.89.10.in-addr.arpa"),
            Lookup::NxDomain(Authority::Reverse(0))
        );
        assert_eq!(z.lookup("1.1.1.1.in-addr.arpa"), Lookup::Outside);
        assert_eq!(z.lookup("0.89.10.in-addr.arpa"), Lookup::Outside);
        assert_eq!(
            z.soa(Authority::Reverse(0)).unwrap().name.to_ascii(),
            "0.89.10.in-addr.arpa."
        );
        assert!(z.soa(Authority::Bare).is_none());
    }
}
