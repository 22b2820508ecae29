//! rtnetlink notifications → the shimnet object they touch (pure).
//!
//! Links are recognised by their owner alias (`shimnet:net=…` bridges, `shimnet:ep=…` veths,
//! `shimnet:peering=…` tunnels) or by a name the caller says it owns (a bridge adopted without an
//! alias); addresses, routes and neighbours carry only an interface index, resolved through the
//! links seen so far (seed with a dump, then keep feeding every link notification). Routes with
//! protocol 201 are peer routes wherever they point.

use std::collections::HashMap;

use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use rtnetlink::packet_route::neighbour::{NeighbourAttribute, NeighbourMessage, NeighbourState};
use rtnetlink::packet_route::route::{RouteAttribute, RouteMessage};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};

use super::Dirty;
use crate::naming::{parse_alias, Owner, ALIAS_PREFIX};
use crate::netlink::query::master;
use crate::peering::plan::RTPROT_SHIMNET;

/// Names the caller owns beyond what owner aliases say (bridges from the records).
pub trait Owned {
    /// Whether `name` is one of shimnet's bridges.
    fn bridge(&self, name: &str) -> bool;
}

impl Owned for std::collections::HashSet<String> {
    fn bridge(&self, name: &str) -> bool {
        self.contains(name)
    }
}

/// What an owned link is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkRole {
    /// A network's bridge.
    Bridge(String),
    /// An endpoint's host veth.
    Port(String),
    /// A peering device.
    Tunnel(String),
}

/// Classifies rtnetlink notifications, remembering which interface index is which owned link.
#[derive(Debug, Default)]
pub struct LinkClassifier {
    by_index: HashMap<u32, LinkRole>,
    /// Each endpoint port's bridge as first seen (a pair is created on its bridge): a port up on
    /// it is in place.
    home: HashMap<u32, u32>,
}

fn link_name(m: &LinkMessage) -> Option<&str> {
    m.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.as_str()),
        _ => None,
    })
}

fn link_alias(m: &LinkMessage) -> Option<&str> {
    m.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfAlias(n) => Some(n.as_str()),
        _ => None,
    })
}

/// The role a link's own attributes give it, if it is shimnet's.
fn role_of(m: &LinkMessage, owned: &dyn Owned) -> Option<LinkRole> {
    let name = link_name(m)?.to_string();
    if let Some(alias) = link_alias(m) {
        match parse_alias(alias) {
            Some(Owner::Bridge(_) | Owner::Extension(..)) => return Some(LinkRole::Bridge(name)),
            // A trunk is part of its extension bridge: its repair rebuilds both.
            // The anchor pair (index 0) is put back with the next extension check.
            Some(Owner::Trunk(_, 0)) => return None,
            Some(Owner::Trunk(net, i)) => {
                let net = crate::types::NetworkName::new(&net).ok()?;
                let ext = crate::naming::extension_bridge_name(&net, i);
                return Some(LinkRole::Bridge(ext.to_string()));
            }
            Some(Owner::Endpoint(_)) => return Some(LinkRole::Port(name)),
            None if alias.starts_with(&format!("{ALIAS_PREFIX}peering=")) => {
                return Some(LinkRole::Tunnel(name))
            }
            None => {}
        }
    }
    owned.bridge(&name).then_some(LinkRole::Bridge(name))
}

/// Whether the link is detached and waiting for deletion ([`crate::netlink::REAP_GROUP`]).
fn in_reap_group(m: &LinkMessage) -> bool {
    m.attributes
        .iter()
        .any(|a| matches!(a, LinkAttribute::Group(g) if *g == crate::netlink::REAP_GROUP))
}

fn link_dirty(role: &LinkRole) -> Dirty {
    match role {
        LinkRole::Bridge(n) => Dirty::Bridge(n.clone()),
        LinkRole::Port(n) => Dirty::Port(n.clone()),
        LinkRole::Tunnel(n) => Dirty::Tunnel(n.clone()),
    }
}

impl LinkClassifier {
    /// An empty classifier (feed it a link dump with [`LinkClassifier::learn`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a link seen in a dump.
    pub fn learn(&mut self, m: &LinkMessage, owned: &dyn Owned) {
        match role_of(m, owned) {
            Some(r) => {
                self.note_home(m, &r);
                self.by_index.insert(m.header.index, r);
            }
            None => {
                self.by_index.remove(&m.header.index);
            }
        }
    }

    /// A port's bridge, the first time the port is seen on one.
    fn note_home(&mut self, m: &LinkMessage, role: &LinkRole) {
        if let (LinkRole::Port(_), Some(master)) = (role, master(m)) {
            self.home.entry(m.header.index).or_insert(master);
        }
    }

    /// Whether `msg`, which [`LinkClassifier::classify`] made into `dirty`, shows that endpoint
    /// port as an attach (or a repair) leaves it: up, on the bridge it was first seen on. A later
    /// notification that says so answers every earlier one about the port (what
    /// [`crate::engine::Engine::repair_port`] checks, without reading the link back).
    pub fn port_in_place(&self, msg: &RouteNetlinkMessage, dirty: &Dirty) -> bool {
        let RouteNetlinkMessage::NewLink(m) = msg else {
            return false;
        };
        let Some(role @ LinkRole::Port(_)) = self.by_index.get(&m.header.index) else {
            return false;
        };
        link_dirty(role) == *dirty
            && m.header.flags.contains(LinkFlags::Up)
            && master(m).is_some_and(|b| self.home.get(&m.header.index) == Some(&b))
    }

    /// The owned link with this index, if any.
    pub fn role(&self, index: u32) -> Option<&LinkRole> {
        self.by_index.get(&index)
    }

    /// The owned object a notification touches; `None` for everything else.
    pub fn classify(&mut self, msg: &RouteNetlinkMessage, owned: &dyn Owned) -> Option<Dirty> {
        match msg {
            RouteNetlinkMessage::NewLink(m) if in_reap_group(m) => {
                // Detached on purpose (shimnet's own detach, or a sweep): no work until its
                // deletion, which still names the endpoint through its alias.
                self.by_index.remove(&m.header.index);
                self.home.remove(&m.header.index);
                None
            }
            RouteNetlinkMessage::NewLink(m) | RouteNetlinkMessage::DelLink(m)
                if m.header.interface_family != AddressFamily::Unspec =>
            {
                // A bridge's message about one of its ports (a port leaving it is a deletion of
                // that kind) or IPv6's about a link: no alias, so the link keeps the role its own
                // messages gave it.
                self.by_index.get(&m.header.index).map(link_dirty)
            }
            RouteNetlinkMessage::NewLink(m) => {
                // A link that was ours and lost its alias or name is still ours to check.
                let before = self.by_index.get(&m.header.index).cloned();
                let now = role_of(m, owned);
                match &now {
                    Some(r) => {
                        self.note_home(m, r);
                        self.by_index.insert(m.header.index, r.clone());
                    }
                    None => {
                        self.by_index.remove(&m.header.index);
                    }
                }
                match (before, now) {
                    (Some(b), Some(n)) if b != n => Some(link_dirty(&b)),
                    (_, Some(n)) => Some(link_dirty(&n)),
                    (Some(b), None) => Some(link_dirty(&b)),
                    (None, None) => None,
                }
            }
            RouteNetlinkMessage::DelLink(m) => {
                self.home.remove(&m.header.index);
                let before = self.by_index.remove(&m.header.index);
                let role = role_of(m, owned).or(before)?;
                // A deleted host veth took its container end along: the endpoint is to rebuild.
                if let (LinkRole::Port(_), Some(Owner::Endpoint(key))) =
                    (&role, link_alias(m).and_then(parse_alias))
                {
                    return Some(Dirty::Endpoint(key));
                }
                Some(link_dirty(&role))
            }
            RouteNetlinkMessage::NewAddress(m) | RouteNetlinkMessage::DelAddress(m) => {
                match self.by_index.get(&m.header.index)? {
                    LinkRole::Bridge(n) => Some(Dirty::Gateway(n.clone())),
                    LinkRole::Tunnel(n) => Some(Dirty::Tunnel(n.clone())),
                    LinkRole::Port(_) => None,
                }
            }
            RouteNetlinkMessage::NewRoute(m) | RouteNetlinkMessage::DelRoute(m) => self.route(m),
            RouteNetlinkMessage::NewNeighbour(m) => self.neighbour(m, false),
            RouteNetlinkMessage::DelNeighbour(m) => self.neighbour(m, true),
            _ => None,
        }
    }

    fn route(&self, m: &RouteMessage) -> Option<Dirty> {
        if u8::from(m.header.protocol) == RTPROT_SHIMNET {
            return Some(Dirty::PeerRoutes);
        }
        let oif = m.attributes.iter().find_map(|a| match a {
            RouteAttribute::Oif(i) => Some(*i),
            _ => None,
        })?;
        match self.by_index.get(&oif)? {
            LinkRole::Bridge(n) => Some(Dirty::Gateway(n.clone())),
            LinkRole::Tunnel(_) | LinkRole::Port(_) => None,
        }
    }

    fn neighbour(&self, m: &NeighbourMessage, deleted: bool) -> Option<Dirty> {
        let ours = m.attributes.iter().any(
            |a| matches!(a, NeighbourAttribute::Protocol(p) if u8::from(*p) == RTPROT_SHIMNET),
        );
        match self.by_index.get(&m.header.ifindex) {
            Some(LinkRole::Tunnel(n)) => {
                // The kernel learning or ageing entries on its own is not drift; a deletion, a
                // marked entry or a permanent one changing is.
                let permanent = matches!(
                    m.header.state,
                    NeighbourState::Permanent | NeighbourState::Noarp
                );
                (deleted || ours || permanent).then(|| Dirty::Fdb(n.clone()))
            }
            _ if ours => Some(Dirty::Fdb(format!("#{}", m.header.ifindex))),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtnetlink::packet_route::address::AddressMessage;
    use rtnetlink::packet_route::route::RouteProtocol;
    use std::collections::HashSet;

    fn link(index: u32, name: &str, alias: Option<&str>) -> LinkMessage {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.attributes.push(LinkAttribute::IfName(name.into()));
        if let Some(a) = alias {
            m.attributes.push(LinkAttribute::IfAlias(a.into()));
        }
        m
    }

    fn route(proto: u8, oif: Option<u32>) -> RouteMessage {
        let mut m = RouteMessage::default();
        m.header.protocol = RouteProtocol::from(proto);
        if let Some(i) = oif {
            m.attributes.push(RouteAttribute::Oif(i));
        }
        m
    }

    fn addr(index: u32) -> AddressMessage {
        let mut m = AddressMessage::default();
        m.header.index = index;
        m
    }

    fn neigh(index: u32, state: NeighbourState, proto: Option<u8>) -> NeighbourMessage {
        let mut m = NeighbourMessage::default();
        m.header.ifindex = index;
        m.header.state = state;
        if let Some(p) = proto {
            m.attributes
                .push(NeighbourAttribute::Protocol(RouteProtocol::from(p)));
        }
        m
    }

    fn seeded() -> (LinkClassifier, HashSet<String>) {
        let owned: HashSet<String> = ["adopted0".to_string()].into();
        let mut c = LinkClassifier::new();
        c.learn(&link(1, "lo", None), &owned);
        c.learn(&link(5, "snbr1", Some("shimnet:net=n1")), &owned);
        c.learn(
            &link(6, "snv0123456789ab", Some("shimnet:ep=n1/c/eth0")),
            &owned,
        );
        c.learn(&link(7, "snvx0", Some("shimnet:peering=vxlan")), &owned);
        c.learn(&link(8, "adopted0", None), &owned);
        c.learn(&link(9, "eth0", Some("uplink")), &owned);
        (c, owned)
    }

    #[test]
    fn a_detached_port_waiting_for_deletion_is_no_work_until_deleted() {
        let (mut c, o) = seeded();
        let mut detached = link(6, "snv0123456789ab", Some("shimnet:ep=n1/c/eth0"));
        detached
            .attributes
            .push(LinkAttribute::Group(crate::netlink::REAP_GROUP));
        assert_eq!(
            c.classify(&RouteNetlinkMessage::NewLink(detached.clone()), &o),
            None
        );
        assert_eq!(c.role(6), None, "forgotten");
        // Its addresses are nobody's work either; its deletion still names the endpoint.
        assert_eq!(
            c.classify(&RouteNetlinkMessage::NewAddress(addr(6)), &o),
            None
        );
        assert_eq!(
            c.classify(&RouteNetlinkMessage::DelLink(detached), &o),
            Some(Dirty::Endpoint("n1/c/eth0".into()))
        );
        // The same port outside the group is checked as before.
        let (mut c, o) = seeded();
        assert_eq!(
            c.classify(
                &RouteNetlinkMessage::NewLink(link(
                    6,
                    "snv0123456789ab",
                    Some("shimnet:ep=n1/c/eth0")
                )),
                &o
            ),
            Some(Dirty::Port("snv0123456789ab".into()))
        );
    }

    #[test]
    fn owned_links_by_alias_or_name() {
        let (mut c, o) = seeded();
        let del = |m| RouteNetlinkMessage::DelLink(m);
        assert_eq!(
            c.classify(&del(link(5, "snbr1", Some("shimnet:net=n1"))), &o),
            Some(Dirty::Bridge("snbr1".into()))
        );
        assert_eq!(
            c.classify(
                &del(link(6, "snv0123456789ab", Some("shimnet:ep=n1/c/eth0"))),
                &o
            ),
            Some(Dirty::Endpoint("n1/c/eth0".into())),
            "a deleted host end names its endpoint"
        );
        c.learn(
            &link(10, "snv0123456789ff", Some("shimnet:ep=n1/d/eth0")),
            &o,
        );
        assert_eq!(
            c.classify(&del(link(10, "snv0123456789ff", None)), &o),
            Some(Dirty::Port("snv0123456789ff".into())),
            "one that had lost its alias is checked by name"
        );
        assert_eq!(
            c.classify(&del(link(7, "snvx0", Some("shimnet:peering=vxlan"))), &o),
            Some(Dirty::Tunnel("snvx0".into()))
        );
        assert_eq!(
            c.classify(&RouteNetlinkMessage::NewLink(link(8, "adopted0", None)), &o),
            Some(Dirty::Bridge("adopted0".into()))
        );
        assert_eq!(c.classify(&del(link(9, "eth0", Some("uplink"))), &o), None);
        assert_eq!(c.classify(&del(link(99, "dummyx", None)), &o), None);
        assert_eq!(c.role(5), None, "a deleted link is forgotten");
    }

    #[test]
    fn extension_bridges_and_trunks_are_their_extensions_bridge() {
        let (mut c, o) = seeded();
        let n1 = crate::types::NetworkName::new("n1").unwrap();
        let ext = crate::naming::extension_bridge_name(&n1, 2).to_string();
        let (to_main, to_ext) = crate::naming::trunk_names(&n1, 2);
        let xalias = crate::naming::extension_alias(&n1, 2);
        let talias = crate::naming::trunk_alias(&n1, 2);
        c.learn(&link(20, &ext, Some(&xalias)), &o);
        c.learn(&link(21, to_main.as_str(), Some(&talias)), &o);
        c.learn(&link(22, to_ext.as_str(), Some(&talias)), &o);
        let del = |m| RouteNetlinkMessage::DelLink(m);
        assert_eq!(
            c.classify(&del(link(21, to_main.as_str(), Some(&talias))), &o),
            Some(Dirty::Bridge(ext.clone())),
            "a deleted trunk is its extension's repair"
        );
        assert_eq!(
            c.classify(&del(link(20, &ext, Some(&xalias))), &o),
            Some(Dirty::Bridge(ext.clone()))
        );
        let unplugged = RouteNetlinkMessage::NewLink(link(22, to_ext.as_str(), Some(&talias)));
        assert_eq!(c.classify(&unplugged, &o), Some(Dirty::Bridge(ext)));
    }

    #[test]
    fn a_link_that_loses_its_alias_is_still_checked() {
        let (mut c, o) = seeded();
        let stripped = RouteNetlinkMessage::NewLink(link(5, "snbr1", None));
        assert_eq!(
            c.classify(&stripped, &o),
            Some(Dirty::Bridge("snbr1".into()))
        );
        // Renamed: the old name is the one to repair.
        let renamed = RouteNetlinkMessage::NewLink(link(6, "other", None));
        assert_eq!(
            c.classify(&renamed, &o),
            Some(Dirty::Port("snv0123456789ab".into()))
        );
    }

    #[test]
    fn deletion_of_an_unseen_link_is_judged_by_its_alias() {
        let mut c = LinkClassifier::new();
        let o = HashSet::new();
        let m = RouteNetlinkMessage::DelLink(link(42, "snbr9", Some("shimnet:net=n9")));
        assert_eq!(c.classify(&m, &o), Some(Dirty::Bridge("snbr9".into())));
    }

    #[test]
    fn addresses_on_bridges_are_the_gateway() {
        let (mut c, o) = seeded();
        assert_eq!(
            c.classify(&RouteNetlinkMessage::DelAddress(addr(5)), &o),
            Some(Dirty::Gateway("snbr1".into()))
        );
        assert_eq!(
            c.classify(&RouteNetlinkMessage::NewAddress(addr(8)), &o),
            Some(Dirty::Gateway("adopted0".into()))
        );
        assert_eq!(
            c.classify(&RouteNetlinkMessage::DelAddress(addr(9)), &o),
            None
        );
        assert_eq!(
            c.classify(&RouteNetlinkMessage::DelAddress(addr(1)), &o),
            None
        );
        assert_eq!(
            c.classify(&RouteNetlinkMessage::DelAddress(addr(6)), &o),
            None
        );
    }

    #[test]
    fn routes_by_protocol_or_bridge() {
        let (mut c, o) = seeded();
        let del = |m| RouteNetlinkMessage::DelRoute(m);
        assert_eq!(
            c.classify(&del(route(201, Some(9))), &o),
            Some(Dirty::PeerRoutes)
        );
        assert_eq!(
            c.classify(&del(route(201, None)), &o),
            Some(Dirty::PeerRoutes)
        );
        assert_eq!(
            c.classify(&del(route(2, Some(5))), &o),
            Some(Dirty::Gateway("snbr1".into()))
        );
        assert_eq!(c.classify(&del(route(4, Some(9))), &o), None);
        assert_eq!(c.classify(&del(route(3, None)), &o), None);
        assert_eq!(
            c.classify(&RouteNetlinkMessage::NewRoute(route(4, Some(1))), &o),
            None
        );
    }

    #[test]
    fn neighbours_only_on_tunnels_or_marked() {
        let (mut c, o) = seeded();
        let new = |m| RouteNetlinkMessage::NewNeighbour(m);
        let del = |m| RouteNetlinkMessage::DelNeighbour(m);
        let fdb = Some(Dirty::Fdb("snvx0".into()));
        assert_eq!(
            c.classify(&del(neigh(7, NeighbourState::Reachable, None)), &o),
            fdb
        );
        assert_eq!(
            c.classify(&new(neigh(7, NeighbourState::Permanent, None)), &o),
            fdb
        );
        assert_eq!(
            c.classify(&new(neigh(7, NeighbourState::Stale, Some(201))), &o),
            fdb
        );
        // The kernel learning on the tunnel, or ARP churn on a bridge: not drift.
        assert_eq!(
            c.classify(&new(neigh(7, NeighbourState::Reachable, None)), &o),
            None
        );
        assert_eq!(
            c.classify(&new(neigh(5, NeighbourState::Stale, None)), &o),
            None
        );
        assert_eq!(
            c.classify(&del(neigh(5, NeighbourState::Stale, None)), &o),
            None
        );
        assert_eq!(
            c.classify(&del(neigh(33, NeighbourState::Permanent, Some(201))), &o),
            Some(Dirty::Fdb("#33".into()))
        );
    }
}
