//! One network's name table, immutable once built: names → IPv4/IPv6 addresses and addresses →
//! names, plus what the network's server is authoritative for. Every change makes a new [`Zone`]
//! from the old one and the changed [`Entry`] and swaps it in whole (see `service`), so a query
//! sees either the table before a change or the one after it, never a mix.

use std::collections::{BTreeMap, HashSet};
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

/// What a change touched: the name keys and addresses to recompute.
#[derive(Default)]
struct Touched {
    keys: HashSet<String>,
    ips: HashSet<IpAddr>,
}

/// Ids of entries, sorted (the order a name lists its addresses in). Almost always one: a plain
/// vector is far smaller than a persistent set, and only a changed key's vector is copied.
type Holders = Vec<Arc<str>>;

/// One network's table (immutable: a change makes a new table, see [`Zone::update`]). Its maps
/// are persistent: a new table shares everything its change did not touch with the old one.
#[derive(Debug, Clone)]
pub struct Zone {
    net: Arc<NetworkDns>,
    settings: Arc<ZoneSettings>,
    serial: u32,
    names: imbl::HashMap<String, Addrs>,
    /// Name → the entries that registered it.
    holders: imbl::HashMap<String, Holders>,
    ptr: imbl::HashMap<IpAddr, Name>,
    /// Address → container.
    owners: imbl::HashMap<IpAddr, Arc<str>>,
    /// Address → the entries that hold it.
    at: imbl::HashMap<IpAddr, Holders>,
    /// Containers attached, with their number of entries.
    containers: imbl::HashMap<Arc<str>, usize>,
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

impl Entry {
    fn ips(&self) -> impl Iterator<Item = IpAddr> {
        self.ipv4
            .map(IpAddr::V4)
            .into_iter()
            .chain(self.ipv6.map(IpAddr::V6))
    }

    /// The table keys of its valid names, each once, in its order. A name under the domain is
    /// registered without it.
    fn keys(&self, settings: &ZoneSettings) -> Vec<String> {
        let suffix = format!(".{}", settings.domain);
        let mut keys: Vec<String> = Vec::with_capacity(self.names.len());
        for n in &self.names {
            let Some(mut k) = name::key(n) else { continue };
            if let Some(rel) = k.strip_suffix(&suffix) {
                k = rel.to_string();
            }
            if k == settings.domain || name::is_reverse(&k) || keys.contains(&k) {
                continue;
            }
            keys.push(k);
        }
        keys
    }

    /// The name its addresses resolve back to: its first valid name, under the domain.
    fn target(&self, settings: &ZoneSettings) -> Option<Name> {
        let first = self.keys(settings).into_iter().next()?;
        Name::from_ascii(name::fqdn(&first, &settings.domain)).ok()
    }
}

/// Adds `id` to (or removes it from) the holders of `key`, dropping sets that become empty.
fn hold<K: std::hash::Hash + Eq + Clone>(
    map: &mut imbl::HashMap<K, Holders>,
    key: K,
    id: &Arc<str>,
    add: bool,
) {
    if add {
        let ids = map.entry(key).or_default();
        if let Err(at) = ids.binary_search(id) {
            ids.insert(at, id.clone());
        }
    } else if let Some(ids) = map.get_mut(&key) {
        if let Ok(at) = ids.binary_search(id) {
            ids.remove(at);
        }
        if ids.is_empty() {
            map.remove(&key);
        }
    }
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
        let by_id: BTreeMap<&str, &Entry> =
            entries.into_iter().map(|e| (e.id.as_str(), e)).collect();
        let domain =
            Name::from_ascii(format!("{}.", settings.domain)).unwrap_or_else(|_| Name::root());
        let soa_domain = soa(&domain, &domain, serial, settings.ttl);
        let mut z = Zone {
            net,
            settings,
            serial,
            names: Default::default(),
            holders: Default::default(),
            ptr: Default::default(),
            owners: Default::default(),
            at: Default::default(),
            containers: Default::default(),
            domain,
            soa_domain,
            soa_reverse: Vec::new(),
        };
        z.set_serial(serial);
        let mut touched = Touched::default();
        for e in by_id.values() {
            z.index(e, true, &mut touched);
        }
        z.refresh(&touched, |id| by_id.get(id).copied());
        z
    }

    /// The table after one entry changed — `old` is what it was (`None`: it is new), `new` what
    /// it is (`None`: it is gone), `entries` every entry after the change — equal to a
    /// [`Zone::build`] from `entries`. Only the changed entry's names and addresses are
    /// recomputed, so the cost does not grow with the size of the table.
    pub fn update(
        &self,
        serial: u32,
        old: Option<&Entry>,
        new: Option<&Entry>,
        entries: &BTreeMap<String, Entry>,
    ) -> Zone {
        let mut z = self.clone();
        z.set_serial(serial);
        let mut touched = Touched::default();
        for (e, add) in [(old, false), (new, true)] {
            if let Some(e) = e {
                z.index(e, add, &mut touched);
            }
        }
        z.refresh(&touched, |id| entries.get(id));
        z
    }

    fn set_serial(&mut self, serial: u32) {
        let ttl = self.settings.ttl;
        self.serial = serial;
        self.soa_domain = soa(&self.domain, &self.domain, serial, ttl);
        self.soa_reverse = self
            .net
            .subnets
            .iter()
            .map(|s| {
                let apex =
                    Name::from_ascii(name::reverse_apex(*s)).unwrap_or_else(|_| Name::root());
                soa(&apex, &self.domain, serial, ttl)
            })
            .collect();
    }

    /// Records (or forgets) which names and addresses `e` holds; notes what to recompute.
    fn index(&mut self, e: &Entry, add: bool, touched: &mut Touched) {
        let id: Arc<str> = Arc::from(e.id.as_str());
        for k in e.keys(&self.settings) {
            hold(&mut self.holders, k.clone(), &id, add);
            touched.keys.insert(k);
        }
        for ip in e.ips() {
            hold(&mut self.at, ip, &id, add);
            touched.ips.insert(ip);
        }
        let c: Arc<str> = Arc::from(e.container.as_str());
        if add {
            *self.containers.entry(c).or_insert(0) += 1;
        } else if let Some(n) = self.containers.get_mut(&c) {
            *n -= 1;
            if *n == 0 {
                self.containers.remove(&c);
            }
        }
    }

    /// Recomputes the touched names and addresses from their holders (looked up by id).
    fn refresh<'e>(&mut self, touched: &Touched, entry: impl Fn(&str) -> Option<&'e Entry>) {
        for k in &touched.keys {
            let Some(ids) = self.holders.get(k) else {
                self.names.remove(k);
                continue;
            };
            let mut a = Addrs::default();
            for e in ids.iter().filter_map(|id| entry(id)) {
                a.v4.extend(e.ipv4);
                a.v6.extend(e.ipv6);
            }
            self.names.insert(k.clone(), a);
        }
        for ip in &touched.ips {
            let holders: Vec<&Entry> = self
                .at
                .get(ip)
                .map(|ids| ids.iter().filter_map(|id| entry(id)).collect())
                .unwrap_or_default();
            // The last holder in id order owns the address; the last with a name names it.
            match holders.last() {
                Some(e) => self.owners.insert(*ip, Arc::from(e.container.as_str())),
                None => self.owners.remove(ip),
            };
            match holders.iter().rev().find_map(|e| e.target(&self.settings)) {
                Some(t) => self.ptr.insert(*ip, t),
                None => self.ptr.remove(ip),
            };
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
        self.containers.contains_key(c)
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

    type Tables = (
        BTreeMap<String, Addrs>,
        BTreeMap<IpAddr, String>,
        BTreeMap<IpAddr, String>,
        std::collections::BTreeSet<String>,
    );

    /// The name, reverse, owner and container tables, in a comparable form.
    fn tables(z: &Zone) -> Tables {
        (
            z.names
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            z.ptr.iter().map(|(k, v)| (*k, v.to_ascii())).collect(),
            z.owners.iter().map(|(k, v)| (*k, v.to_string())).collect(),
            z.containers.keys().map(|c| c.to_string()).collect(),
        )
    }

    /// Everything a table answers: its tables, serial and SOA records.
    fn answers(z: &Zone) -> impl PartialEq + std::fmt::Debug {
        let soa = (z.soa_domain.clone(), z.soa_reverse.clone());
        (z.serial, tables(z), soa)
    }

    /// The tables written out the plain way, one entry after another in id order (later
    /// entries win an address): the oracle for the indexed tables.
    fn reference(entries: &BTreeMap<String, Entry>) -> Tables {
        let s = settings();
        let mut t = Tables::default();
        for e in entries.values() {
            let keys = e.keys(&s);
            for k in &keys {
                let a = t.0.entry(k.clone()).or_default();
                a.v4.extend(e.ipv4);
                a.v6.extend(e.ipv6);
            }
            for ip in e.ips() {
                t.2.insert(ip, e.container.clone());
                if let Some(first) = keys.first() {
                    t.1.insert(ip, format!("{}.{}.", first, s.domain));
                }
            }
            t.3.insert(e.container.clone());
        }
        t
    }

    /// A small universe, so that names, addresses and containers collide.
    fn arb_entry() -> impl proptest::strategy::Strategy<Value = Entry> {
        use proptest::prelude::*;
        let name = prop::sample::select(vec![
            "web",
            "WEB",
            "db",
            "shared",
            "bad name",
            "db.dns.shimnet",
            "dns.shimnet",
            "my.app",
        ]);
        (
            0..6u8,
            0..3u8,
            prop::collection::vec(name, 0..4),
            prop::option::of(2..6u8),
            prop::option::of(2..4u8),
        )
            .prop_map(|(id, c, names, v4, v6)| Entry {
                id: format!("e{id}"),
                container: format!("c{c}"),
                names: names.into_iter().map(String::from).collect(),
                ipv4: v4.map(|d| Ipv4Addr::new(10, 89, 0, d)),
                ipv6: v6.map(|d| Ipv6Addr::new(0xfd00, 0x89, 0, 0, 0, 0, 0, d.into())),
            })
    }

    proptest::proptest! {
        /// Any sequence of registrations (new or replacing) and removals, applied one by one
        /// with [`Zone::update`], answers exactly as a table built from the final entries.
        #[test]
        fn updates_one_by_one_equal_a_full_build(
            ops in proptest::collection::vec((arb_entry(), proptest::bool::ANY), 1..40)
        ) {
            let mut entries = BTreeMap::new();
            let mut z = Zone::empty(net(), settings());
            for (i, (e, remove)) in ops.into_iter().enumerate() {
                let serial = i as u32 + 1;
                let (old, new) = if remove {
                    (entries.remove(&e.id), None)
                } else {
                    (entries.insert(e.id.clone(), e.clone()), Some(e))
                };
                z = z.update(serial, old.as_ref(), new.as_ref(), &entries);
                let full = Zone::build(net(), settings(), serial, entries.values());
                proptest::prop_assert_eq!(answers(&z), answers(&full));
                proptest::prop_assert_eq!(tables(&z), reference(&entries));
            }
        }
    }

    #[test]
    fn an_update_on_a_large_table_touches_only_its_entry() {
        let entries: BTreeMap<String, Entry> = (0..2000u32)
            .map(|i| {
                let e = Entry {
                    id: format!("e{i:05}"),
                    container: format!("c{i}"),
                    names: vec![format!("web{i}"), "shared".into()],
                    ipv4: Some(Ipv4Addr::from(0x0a59_0000 + i + 2)),
                    ipv6: None,
                };
                (e.id.clone(), e)
            })
            .collect();
        let z = Zone::build(net(), settings(), 1, entries.values());
        let mut after = entries.clone();
        let gone = after.remove("e00007").unwrap();
        let z2 = z.update(2, Some(&gone), None, &after);
        assert_eq!(z2.len(), z.len() - 1, "web7 gone, shared stays");
        assert!(matches!(z2.lookup("web7"), Lookup::NxDomain(_)));
        let Lookup::Host(s, _) = z2.lookup("shared") else {
            panic!()
        };
        assert_eq!(s.v4.len(), 1999);
        assert!(
            matches!(z.lookup("web7"), Lookup::Host(..)),
            "the old table is untouched"
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
