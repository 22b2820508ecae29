//! iptables backend (fallback where nftables is unusable): chains `SHIMNET-*` driven through the
//! `iptables` crate, which execs `iptables`/`ip6tables` per rule. Every rule carries an owner
//! comment; removal and ownership queries list our chains and match comments.
//!
//! `FORWARD` starts with the jump to the admin chain (`SHIMNET-USER` unless a compatibility mode
//! configures another, see [`super::forward`]) and then the jump to `SHIMNET-FORWARD`; a rule
//! inserted ahead of them is moved below at the next base check.

pub mod rules;

use std::collections::{BTreeMap, BTreeSet};

use self::rules::{Place, Rule, CHAINS, DNAT, FORWARD};
use super::ipt::{comment_of, Ipt};
use super::{forward, AdminChains, BackendKind, Firewall, FirewallError, NetworkRules, PortRules};
use crate::types::{IfName, NetworkName};

/// The iptables backend.
pub struct IptablesBackend {
    v4: Ipt,
    v6: Option<Ipt>,
    admin: AdminChains,
}

fn fail(op: &str, msg: impl Into<String>) -> FirewallError {
    FirewallError::Backend {
        backend: BackendKind::Iptables,
        op: op.to_string(),
        msg: msg.into(),
    }
}

impl IptablesBackend {
    /// Finds `iptables` (required) and `ip6tables` (optional) and checks that `iptables` can
    /// list table `filter` in the calling thread's namespace.
    pub fn new() -> Result<Self, FirewallError> {
        let v4 = Ipt::new(false).map_err(|e| fail("probe iptables", e))?;
        v4.chain_exists("filter", "FORWARD")
            .map_err(|e| fail("probe iptables", e))
            .and_then(|ok| {
                ok.then_some(())
                    .ok_or_else(|| fail("probe iptables", "cannot list filter FORWARD"))
            })?;
        let v6 = Ipt::new(true).ok();
        Ok(Self {
            v4,
            v6,
            admin: AdminChains::user(),
        })
    }

    /// Keeps `admin` jumped first from `FORWARD` instead of `SHIMNET-USER` (see [`forward`]).
    pub fn with_admin(mut self, admin: Option<AdminChains>) -> Self {
        self.admin = admin.unwrap_or_else(AdminChains::user);
        self
    }

    fn fams(&self) -> impl Iterator<Item = &Ipt> {
        std::iter::once(&self.v4).chain(self.v6.as_ref())
    }

    fn ipt(&self, v6: bool) -> Option<&Ipt> {
        if v6 {
            self.v6.as_ref()
        } else {
            Some(&self.v4)
        }
    }

    fn ensure_base_in(&self, ipt: &Ipt) -> Result<(), String> {
        for c in CHAINS {
            ipt.ensure_chain(c.table, c.name)?;
        }
        if let Some(input) = rules::forward_chain_fix(&ipt.rules("filter", FORWARD)?) {
            ipt.restore_noflush(&input)?;
        }
        for c in CHAINS {
            for (from, rule) in c.jumps {
                // `FORWARD` has one owner, which also places the admin chain.
                if (c.table, *from) != ("filter", "FORWARD") {
                    ipt.ensure_first(c.table, from, rule)?;
                }
            }
        }
        forward::ensure(ipt, Some(&self.admin), Some(FORWARD))
    }

    /// Whether [`Self::ensure_base_in`] would change nothing in this family.
    fn base_in_place_in(&self, ipt: &Ipt) -> Result<bool, String> {
        for c in CHAINS {
            if !ipt.chain_exists(c.table, c.name)? {
                return Ok(false);
            }
        }
        if rules::forward_chain_fix(&ipt.rules("filter", FORWARD)?).is_some() {
            return Ok(false);
        }
        for c in CHAINS {
            for (from, rule) in c.jumps {
                if (c.table, *from) != ("filter", "FORWARD") && !ipt.exists(c.table, from, rule)? {
                    return Ok(false);
                }
            }
        }
        forward::in_place(ipt, Some(&self.admin), Some(FORWARD))
    }

    /// How many rules of each owner comment each of our chains holds, per family.
    fn placed(&self, op: &str) -> Result<BTreeMap<(String, Place), usize>, FirewallError> {
        let mut out = BTreeMap::new();
        for ipt in self.fams() {
            for c in CHAINS {
                for spec in ipt.rules(c.table, c.name).map_err(|e| fail(op, e))? {
                    if let Some(t) = comment_of(&spec) {
                        let place = (ipt.v6, c.table, c.name);
                        *out.entry((t.to_string(), place)).or_insert(0) += 1;
                    }
                }
            }
        }
        Ok(out)
    }

    /// Deletes the rules whose comment satisfies `owned` from every chain of every family;
    /// keeps going on errors and reports them all.
    fn delete_owned(&self, owned: &dyn Fn(&str) -> bool) -> Vec<String> {
        let mut errors = Vec::new();
        for ipt in self.fams() {
            for c in CHAINS {
                if let Err(e) = ipt.delete_commented(c.table, c.name, owned) {
                    errors.push(format!("{} -t {} {}: {e}", ipt.cmd(), c.table, c.name));
                }
            }
        }
        errors
    }

    fn add_rule(&self, op: &str, r: &Rule) -> Result<(), FirewallError> {
        let ipt = self
            .ipt(r.v6)
            .ok_or_else(|| fail(op, "ip6tables is not available for an IPv6 rule"))?;
        let res = if r.first {
            ipt.ensure_first(r.table, r.chain, &r.spec)
        } else {
            ipt.ensure_appended(r.table, r.chain, &r.spec)
        };
        res.map_err(|e| {
            fail(
                op,
                format!(
                    "{} -t {} -A {} {}: {e}",
                    ipt.cmd(),
                    r.table,
                    r.chain,
                    r.spec
                ),
            )
        })
    }

    /// Comments found in our chains.
    fn comments(&self, op: &str) -> Result<BTreeSet<String>, FirewallError> {
        let mut out = BTreeSet::new();
        for ipt in self.fams() {
            for c in CHAINS {
                for spec in ipt.rules(c.table, c.name).map_err(|e| fail(op, e))? {
                    if let Some(t) = comment_of(&spec) {
                        out.insert(t.to_string());
                    }
                }
            }
        }
        Ok(out)
    }
}

impl Firewall for IptablesBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Iptables
    }

    fn ensure_base(&self) -> Result<(), FirewallError> {
        for ipt in self.fams() {
            self.ensure_base_in(ipt)
                .map_err(|e| fail(&format!("ensure base ({})", ipt.cmd()), e))?;
        }
        Ok(())
    }

    fn base_in_place(&self) -> Result<bool, FirewallError> {
        for ipt in self.fams() {
            let ok = self
                .base_in_place_in(ipt)
                .map_err(|e| fail(&format!("check base ({})", ipt.cmd()), e))?;
            if !ok {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn apply_network(&self, r: &NetworkRules) -> Result<(), FirewallError> {
        let op = format!("apply network {}", r.name);
        self.ensure_base()?;
        let tag = rules::net_tag(&r.name);
        let errors = self.delete_owned(&|c| c == tag);
        super::joined(errors).map_err(|m| fail(&op, m))?;
        for rule in rules::network_rules(r) {
            self.add_rule(&op, &rule)?;
        }
        Ok(())
    }

    fn remove_network(&self, name: &NetworkName) -> Result<(), FirewallError> {
        let tag = rules::net_tag(name);
        let errors = self.delete_owned(&|c| c == tag);
        super::joined(errors).map_err(|m| fail(&format!("remove network {name}"), m))
    }

    fn owned_networks(&self) -> Result<Vec<NetworkName>, FirewallError> {
        Ok(self
            .comments("list networks")?
            .iter()
            .filter_map(|c| c.strip_prefix("shimnet:"))
            .filter_map(|n| NetworkName::new(n).ok())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect())
    }

    fn add_ports(&self, r: &PortRules) -> Result<(), FirewallError> {
        let op = format!("add ports of {}", r.id);
        for rule in rules::port_rules(r) {
            self.add_rule(&op, &rule)?;
        }
        Ok(())
    }

    fn remove_ports(&self, r: &PortRules) -> Result<(), FirewallError> {
        let op = format!("remove ports of {}", r.id);
        let mut errors = Vec::new();
        for rule in rules::port_rules(r) {
            let Some(ipt) = self.ipt(rule.v6) else {
                continue;
            };
            if let Err(e) = ipt.delete_if_present(rule.table, rule.chain, &rule.spec) {
                errors.push(e);
            }
        }
        super::joined(errors).map_err(|m| fail(&op, m))
    }

    fn purge_ports(&self, id: &IfName) -> Result<(), FirewallError> {
        let tag = rules::port_tag(id.as_str());
        let mut errors = Vec::new();
        for ipt in self.fams() {
            if let Err(e) = ipt.delete_commented("nat", DNAT, |c| c == tag) {
                errors.push(format!("{}: {e}", ipt.cmd()));
            }
        }
        super::joined(errors).map_err(|m| fail(&format!("purge ports of {id}"), m))
    }

    fn drifted_networks(&self, want: &[NetworkRules]) -> Result<Vec<NetworkName>, FirewallError> {
        let have = self.placed("check networks")?;
        Ok(want
            .iter()
            .filter(|r| {
                let tag = rules::net_tag(&r.name);
                let expected = rules::network_rules(r)
                    .into_iter()
                    .filter(|rule| !rule.v6 || self.v6.is_some());
                let have = have
                    .iter()
                    .filter(|((t, _), _)| *t == tag)
                    .map(|((_, place), n)| (*place, *n));
                !rules::same_counts(expected, have)
            })
            .map(|r| r.name.clone())
            .collect())
    }

    fn owned_ports(&self) -> Result<Vec<IfName>, FirewallError> {
        Ok(self
            .comments("list ports")?
            .iter()
            .filter_map(|c| c.strip_prefix("shimnet-port:"))
            .filter_map(|n| IfName::new(n).ok())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect())
    }

    fn remove_all(&self) -> Result<(), FirewallError> {
        let mut errors = Vec::new();
        for ipt in self.fams() {
            // `SHIMNET-USER` goes unless an administrator's rules are in it.
            let user = &self.admin.first;
            if user == forward::USER_CHAIN && ipt.rules("filter", user).is_ok_and(|r| r.is_empty())
            {
                let jump = forward::jump(user);
                if let Err(e) = ipt.remove_chain("filter", user, &[("FORWARD", &jump)]) {
                    errors.push(format!("{} {user}: {e}", ipt.cmd()));
                }
            }
            // Entry chains first (drops the jumps into sub-chains), then the sub-chains.
            for c in CHAINS.iter().rev() {
                if let Err(e) = ipt.remove_chain(c.table, c.name, c.jumps) {
                    errors.push(format!("{} -t {} {}: {e}", ipt.cmd(), c.table, c.name));
                }
            }
        }
        super::joined(errors).map_err(|m| fail("remove all", m))
    }
}
