//! Key layout under the prefix (`/shimnet` by default):
//!
//! | key | value | lifetime |
//! |---|---|---|
//! | `<prefix>/config` | [`crate::record::ClusterRecord`]: cluster CIDR and subnet size | written once by the first node |
//! | `<prefix>/subnets/10.244.3.0-24` | [`crate::record::Reservation`]: the node holding it | sticky: no lease |
//! | `<prefix>/nodes/<name>` | [`crate::record::NodeRecord`]: address, subnet, VTEP MAC... | attached to the node's lease |
//!
//! One watch on `<prefix>/` sees all three.

use ipnetwork::Ipv4Network;

/// The keys of one cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

/// What a key under the prefix names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    /// The cluster record.
    Config,
    /// A node's record.
    Node(String),
    /// A subnet reservation (or the key's text when it does not name a subnet).
    Subnet(Result<Ipv4Network, String>),
    /// Anything else under the prefix (ignored).
    Other,
}

impl Keys {
    /// Keys under `prefix` (validated: absolute, no trailing `/`).
    pub fn new(prefix: &str) -> Self {
        Keys {
            prefix: prefix.to_string(),
        }
    }

    /// `<prefix>/`: what the watch covers.
    pub fn root(&self) -> String {
        format!("{}/", self.prefix)
    }

    /// `<prefix>/config`.
    pub fn config(&self) -> String {
        format!("{}/config", self.prefix)
    }

    /// `<prefix>/nodes/`.
    pub fn nodes(&self) -> String {
        format!("{}/nodes/", self.prefix)
    }

    /// `<prefix>/nodes/<name>`.
    pub fn node(&self, name: &str) -> String {
        format!("{}/nodes/{name}", self.prefix)
    }

    /// `<prefix>/subnets/`.
    pub fn subnets(&self) -> String {
        format!("{}/subnets/", self.prefix)
    }

    /// `<prefix>/subnets/10.244.3.0-24`.
    pub fn subnet(&self, net: Ipv4Network) -> String {
        format!("{}/subnets/{}-{}", self.prefix, net.network(), net.prefix())
    }

    /// What `key` names.
    pub fn parse(&self, key: &[u8]) -> Key {
        let Ok(key) = std::str::from_utf8(key) else {
            return Key::Other;
        };
        let Some(rest) = key.strip_prefix(&self.root()) else {
            return Key::Other;
        };
        if rest == "config" {
            return Key::Config;
        }
        if let Some(name) = rest.strip_prefix("nodes/") {
            return if name.is_empty() || name.contains('/') {
                Key::Other
            } else {
                Key::Node(name.to_string())
            };
        }
        if let Some(s) = rest.strip_prefix("subnets/") {
            let parsed = s
                .split_once('-')
                .and_then(|(ip, len)| Some((ip.parse().ok()?, len.parse().ok()?)))
                .and_then(|(ip, len)| Ipv4Network::new(ip, len).ok())
                .filter(|n| n.ip() == n.network());
            return Key::Subnet(parsed.ok_or_else(|| s.to_string()));
        }
        Key::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_round_trips() {
        let k = Keys::new("/shimnet");
        let net: Ipv4Network = "10.244.3.0/24".parse().unwrap();
        assert_eq!(k.subnet(net), "/shimnet/subnets/10.244.3.0-24");
        assert_eq!(k.parse(k.subnet(net).as_bytes()), Key::Subnet(Ok(net)));
        assert_eq!(k.node("node-a"), "/shimnet/nodes/node-a");
        assert_eq!(
            k.parse(b"/shimnet/nodes/node-a"),
            Key::Node("node-a".into())
        );
        assert_eq!(k.parse(b"/shimnet/config"), Key::Config);
        assert_eq!(k.root(), "/shimnet/");
    }

    #[test]
    fn foreign_and_malformed_keys() {
        let k = Keys::new("/shimnet");
        assert_eq!(k.parse(b"/shimnetx/nodes/a"), Key::Other);
        assert_eq!(k.parse(b"/shimnet/nodes/"), Key::Other);
        assert_eq!(k.parse(b"/shimnet/nodes/a/b"), Key::Other);
        assert_eq!(k.parse(b"/shimnet/other"), Key::Other);
        assert_eq!(k.parse(&[0xff, 0xfe]), Key::Other);
        assert_eq!(
            k.parse(b"/shimnet/subnets/10.244.3.1-24"),
            Key::Subnet(Err("10.244.3.1-24".into()))
        );
        assert_eq!(
            k.parse(b"/shimnet/subnets/garbage"),
            Key::Subnet(Err("garbage".into()))
        );
    }
}
