//! nftables notifications (`NETLINK_NETFILTER`, group `NFNLGRP_NFTABLES`) → the shimnet object
//! they touch (pure).
//!
//! Every message is a netlink header, a 4-byte `nfgenmsg` (family, version, resource id) and
//! attributes; for tables, chains, rules, sets, set elements, objects and flowtables attribute 1
//! is the table's name (`NFTA_TABLE_NAME`, `NFTA_CHAIN_TABLE`, `NFTA_RULE_TABLE`, …). iptables on
//! this kernel is iptables-nft, so iptables changes arrive here too, as tables `filter` / `nat`.
//! The kernel ends each committed transaction with a `NEWGEN` message naming the process that
//! made it (the committing *thread*'s id); [`Transactions`] holds a transaction's objects until
//! then, so shimnet's own changes (made in-process through libnftables, on any of its threads)
//! are dropped as a whole.

use std::collections::BTreeSet;

use rtnetlink::packet_core::{parse_string, parse_u32_be, NetlinkBuffer, NlasIterator};

use super::Dirty;

/// `NFNL_SUBSYS_NFTABLES`: the high byte of every nftables message type.
pub const NFNL_SUBSYS_NFTABLES: u8 = 10;
/// `NFNLGRP_NFTABLES`: the multicast group of nftables notifications.
pub const NFNLGRP_NFTABLES: u32 = 7;

const NFGENMSG_LEN: usize = 4;
const NFTA_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_GEN_PROC_PID: u16 = 2;
const NFTA_GEN_PROC_NAME: u16 = 3;

const NFPROTO_IPV4: u8 = 2;
const NFPROTO_IPV6: u8 = 10;

/// What an nftables message is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Object {
    /// A table.
    Table,
    /// A base or regular chain.
    Chain,
    /// A rule.
    Rule,
    /// A set, map or their elements.
    Set,
    /// A stateful object or flowtable.
    Other,
}

/// One nftables notification, decoded as far as classification needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A table, chain, rule, set, … was added or deleted.
    Change {
        /// `NFPROTO_*` family of the table.
        family: u8,
        /// Kind of object.
        object: Object,
        /// Whether it was deleted (or destroyed).
        deleted: bool,
        /// The table's name.
        table: String,
        /// The chain, for chains and rules.
        chain: Option<String>,
    },
    /// End of a committed transaction (`NFT_MSG_NEWGEN`).
    Generation {
        /// The process that committed it (0 if the kernel did not say).
        pid: u32,
        /// Its command name.
        name: String,
    },
}

/// Decodes every nftables message of one datagram; other messages are skipped, malformed ones
/// end the datagram (a truncated read is reported by the socket, not here).
pub fn parse(datagram: &[u8]) -> Vec<Message> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < datagram.len() {
        let Ok(buf) = NetlinkBuffer::new_checked(&datagram[at..]) else {
            break;
        };
        let len = buf.length() as usize;
        if let Some(m) = parse_one(buf.message_type(), buf.payload()) {
            out.push(m);
        }
        at += (len.max(16) + 3) & !3;
    }
    out
}

fn parse_one(kind: u16, payload: &[u8]) -> Option<Message> {
    if (kind >> 8) as u8 != NFNL_SUBSYS_NFTABLES || payload.len() < NFGENMSG_LEN {
        return None;
    }
    let family = payload[0];
    let attrs = &payload[NFGENMSG_LEN..];
    let text = |want: u16| -> Option<String> {
        NlasIterator::new(attrs)
            .filter_map(Result::ok)
            .find(|a| a.kind() == want)
            .and_then(|a| parse_string(a.value()).ok())
    };
    let (object, deleted) = match kind & 0xff {
        0 => (Object::Table, false),
        2 | 26 => (Object::Table, true),
        3 => (Object::Chain, false),
        5 | 27 => (Object::Chain, true),
        6 => (Object::Rule, false),
        8 | 28 => (Object::Rule, true),
        9 | 12 => (Object::Set, false),
        11 | 14 | 29 | 30 => (Object::Set, true),
        18 | 22 => (Object::Other, false),
        20 | 24 | 31 | 32 => (Object::Other, true),
        15 => {
            let pid = NlasIterator::new(attrs)
                .filter_map(Result::ok)
                .find(|a| a.kind() == NFTA_GEN_PROC_PID)
                .and_then(|a| parse_u32_be(a.value()).ok())
                .unwrap_or(0);
            let name = text(NFTA_GEN_PROC_NAME).unwrap_or_default();
            return Some(Message::Generation { pid, name });
        }
        _ => return None,
    };
    let chain = match object {
        Object::Chain => text(NFTA_CHAIN_NAME),
        Object::Rule => text(NFTA_RULE_CHAIN),
        _ => None,
    };
    Some(Message::Change {
        family,
        object,
        deleted,
        table: text(NFTA_TABLE)?,
        chain,
    })
}

/// Built-in iptables chains shimnet jumps from.
const JUMP_CHAINS: [&str; 5] = ["FORWARD", "INPUT", "OUTPUT", "PREROUTING", "POSTROUTING"];
/// Prefix of shimnet's iptables chains.
pub const IPTABLES_CHAIN_PREFIX: &str = "SHIMNET-";
/// Prefix of shimnet's nftables tables.
pub const TABLE_PREFIX: &str = "shimnet";

/// The shimnet object a change touches: its nft table, or an iptables table where its chains
/// or the built-in chains jumping to them changed.
pub fn classify(m: &Message) -> Option<Dirty> {
    let Message::Change {
        family,
        object,
        deleted,
        table,
        chain,
    } = m
    else {
        return None;
    };
    if table.starts_with(TABLE_PREFIX) {
        return Some(Dirty::NftTable(table.clone()));
    }
    if !matches!(*family, NFPROTO_IPV4 | NFPROTO_IPV6)
        || !matches!(table.as_str(), "filter" | "nat")
    {
        return None;
    }
    // A table or chain appearing is not drift (iptables creates its tables and built-in chains
    // on first use), except a built-in chain changing (its policy); rules count either way.
    let c = chain.as_deref();
    let ours = |c: &str| c.starts_with(IPTABLES_CHAIN_PREFIX) || JUMP_CHAINS.contains(&c);
    match object {
        Object::Table => deleted.then(|| Dirty::Iptables(table.clone())),
        Object::Chain => {
            let c = c?;
            let relevant = if *deleted {
                ours(c)
            } else {
                JUMP_CHAINS.contains(&c)
            };
            relevant.then(|| Dirty::Iptables(table.clone()))
        }
        Object::Rule => ours(c?).then(|| Dirty::Iptables(table.clone())),
        Object::Set | Object::Other => None,
    }
}

/// Whether a thread id is one of the daemon's own threads.
pub type IsOwn = Box<dyn Fn(u32) -> bool + Send + Sync>;

/// Groups changes by transaction and drops the ones the daemon made.
pub struct Transactions {
    is_own: IsOwn,
    pending: BTreeSet<Dirty>,
}

impl std::fmt::Debug for Transactions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transactions")
            .field("pending", &self.pending)
            .finish_non_exhaustive()
    }
}

impl Transactions {
    /// Changes committed by a thread `is_own` accepts (the daemon's) are not drift.
    pub fn new(is_own: IsOwn) -> Self {
        Transactions {
            is_own,
            pending: BTreeSet::new(),
        }
    }

    /// Feeds one message; returns the owned objects an outside transaction changed, once that
    /// transaction has ended.
    pub fn feed(&mut self, m: &Message) -> Vec<Dirty> {
        match m {
            Message::Generation { pid, .. } => {
                let done = std::mem::take(&mut self.pending);
                if *pid != 0 && (self.is_own)(*pid) {
                    Vec::new()
                } else {
                    done.into_iter().collect()
                }
            }
            change => {
                if let Some(d) = classify(change) {
                    self.pending.insert(d);
                }
                Vec::new()
            }
        }
    }

    /// Whether a transaction's changes are waiting for its end.
    pub fn pending(&self) -> bool {
        !self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
        v.extend_from_slice(&kind.to_ne_bytes());
        v.extend_from_slice(value);
        while v.len() % 4 != 0 {
            v.push(0);
        }
        v
    }

    fn cstr(s: &str) -> Vec<u8> {
        let mut v = s.as_bytes().to_vec();
        v.push(0);
        v
    }

    /// One netlink message as the kernel sends it.
    fn msg(nft_type: u16, family: u8, attrs: &[Vec<u8>]) -> Vec<u8> {
        let mut body = vec![family, 0, 0, 0];
        for a in attrs {
            body.extend_from_slice(a);
        }
        let mut v = Vec::new();
        v.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
        v.extend_from_slice(&(((NFNL_SUBSYS_NFTABLES as u16) << 8) | nft_type).to_ne_bytes());
        v.extend_from_slice(&0u16.to_ne_bytes());
        v.extend_from_slice(&0u32.to_ne_bytes());
        v.extend_from_slice(&0u32.to_ne_bytes());
        v.extend_from_slice(&body);
        v
    }

    fn gen(pid: u32, name: &str) -> Vec<u8> {
        msg(
            15,
            0,
            &[
                attr(1, &7u32.to_be_bytes()),
                attr(NFTA_GEN_PROC_PID, &pid.to_be_bytes()),
                attr(NFTA_GEN_PROC_NAME, &cstr(name)),
            ],
        )
    }

    #[test]
    fn parses_a_datagram_of_several_messages() {
        let mut d = msg(2, 1, &[attr(1, &cstr("shimnet"))]);
        d.extend(msg(
            8,
            2,
            &[attr(1, &cstr("filter")), attr(2, &cstr("FORWARD"))],
        ));
        d.extend(msg(
            5,
            2,
            &[attr(1, &cstr("filter")), attr(3, &cstr("SHIMNET-FORWARD"))],
        ));
        d.extend(gen(4242, "nft"));
        let got = parse(&d);
        assert_eq!(got.len(), 4);
        assert_eq!(
            got[0],
            Message::Change {
                family: 1,
                object: Object::Table,
                deleted: true,
                table: "shimnet".into(),
                chain: None
            }
        );
        assert_eq!(
            got[1],
            Message::Change {
                family: 2,
                object: Object::Rule,
                deleted: true,
                table: "filter".into(),
                chain: Some("FORWARD".into())
            }
        );
        assert_eq!(
            got[3],
            Message::Generation {
                pid: 4242,
                name: "nft".into()
            }
        );
    }

    #[test]
    fn garbage_and_other_subsystems_are_skipped() {
        assert!(parse(&[1, 2, 3]).is_empty());
        let mut other = msg(2, 1, &[attr(1, &cstr("shimnet"))]);
        other[5] = 3; // subsystem 3 (ctnetlink)
        assert!(parse(&other).is_empty());
        // A truncated attribute: no table name, so nothing.
        let mut short = msg(2, 1, &[]);
        short.extend_from_slice(&[9, 0]);
        assert!(parse(&short).iter().all(|m| classify(m).is_none()));
    }

    fn change(family: u8, object: Object, table: &str, chain: Option<&str>) -> Message {
        Message::Change {
            family,
            object,
            deleted: false,
            table: table.into(),
            chain: chain.map(str::to_string),
        }
    }

    #[test]
    fn what_is_owned() {
        let t = |m| classify(&m);
        assert_eq!(
            t(change(1, Object::Set, "shimnet", None)),
            Some(Dirty::NftTable("shimnet".into()))
        );
        assert_eq!(
            t(change(2, Object::Rule, "shimnet-encap", Some("input"))),
            Some(Dirty::NftTable("shimnet-encap".into()))
        );
        let filter = Some(Dirty::Iptables("filter".into()));
        assert_eq!(
            t(change(2, Object::Rule, "filter", Some("FORWARD"))),
            filter
        );
        assert_eq!(
            t(change(
                10,
                Object::Rule,
                "filter",
                Some("SHIMNET-ISOLATION")
            )),
            filter
        );
        let del = |mut m: Message| {
            if let Message::Change { deleted, .. } = &mut m {
                *deleted = true;
            }
            m
        };
        assert_eq!(t(del(change(2, Object::Table, "filter", None))), filter);
        assert_eq!(
            t(change(2, Object::Table, "filter", None)),
            None,
            "created on first use"
        );
        assert_eq!(
            t(change(2, Object::Chain, "filter", Some("FORWARD"))),
            filter,
            "policy"
        );
        assert_eq!(
            t(change(2, Object::Chain, "filter", Some("SHIMNET-X"))),
            None
        );
        assert_eq!(
            t(del(change(2, Object::Chain, "filter", Some("SHIMNET-X")))),
            filter
        );
        assert_eq!(
            t(change(2, Object::Rule, "nat", Some("POSTROUTING"))),
            Some(Dirty::Iptables("nat".into()))
        );
        // Another manager's own chains, tables and families: not ours.
        assert_eq!(
            t(change(2, Object::Rule, "filter", Some("OTHER-MANAGER"))),
            None
        );
        assert_eq!(
            t(change(1, Object::Rule, "firewalld", Some("filter_FORWARD"))),
            None
        );
        assert_eq!(t(change(7, Object::Rule, "filter", Some("FORWARD"))), None);
        assert_eq!(t(change(2, Object::Set, "filter", None)), None);
    }

    #[test]
    fn own_transactions_are_dropped_whole() {
        let mut tx = Transactions::new(Box::new(|pid| pid == 100 || pid == 101));
        let del_table = parse(&msg(2, 1, &[attr(1, &cstr("shimnet"))])).remove(0);
        let fwd = change(2, Object::Rule, "filter", Some("FORWARD"));
        assert!(tx.feed(&del_table).is_empty());
        assert!(tx.feed(&fwd).is_empty());
        assert!(tx.pending());
        let own = Message::Generation {
            pid: 100,
            name: "shimnetd".into(),
        };
        assert!(tx.feed(&own).is_empty());
        assert!(!tx.pending());
        tx.feed(&fwd);
        let own_thread = Message::Generation {
            pid: 101,
            name: "tokio-runtime-w".into(),
        };
        assert!(
            tx.feed(&own_thread).is_empty(),
            "another thread of the daemon"
        );
        // The same from someone else: both objects, once each.
        tx.feed(&del_table);
        tx.feed(&fwd);
        tx.feed(&fwd);
        let outside = Message::Generation {
            pid: 7,
            name: "nft".into(),
        };
        assert_eq!(
            tx.feed(&outside),
            vec![
                Dirty::NftTable("shimnet".into()),
                Dirty::Iptables("filter".into())
            ]
        );
        // Unrelated transactions yield nothing.
        tx.feed(&change(1, Object::Rule, "firewalld", Some("x")));
        assert!(tx.feed(&outside).is_empty());
    }
}
