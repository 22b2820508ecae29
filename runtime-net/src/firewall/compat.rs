//! Coexistence with other iptables managers (container engines' iptables drivers) for the
//! nftables backend.
//!
//! A forwarded packet must be accepted by every base chain on the forward hook. Some managers set
//! the iptables `FORWARD` policy to DROP, so an accept in `inet shimnet` alone is not enough. When
//! the `iptables` binary exists and table `filter` already has a `FORWARD` chain, this module keeps
//! a chain `SHIMNET-FORWARD`, jumped from `FORWARD` (placed by [`super::forward`]), with
//! `-i BR -j ACCEPT` and `-o BR -j ACCEPT` per network (comment `shimnet:<net>`); the real
//! filtering stays in nftables. It never touches anybody else's chains. Runs on network
//! create/delete, and at every base pass when an admin chain layout is configured; [`drifted`]
//! finds the networks whose accept rules (or the jump to them) were deleted from outside, so the
//! repair re-applies them.

use std::collections::BTreeSet;
use std::fs;

use super::forward::{self, AdminChains};
use super::ipt::Ipt;
use super::nft::ffi::NftContext;
use crate::types::{IfName, NetworkName};

/// Our chain in table `filter`.
pub const CHAIN: &str = "SHIMNET-FORWARD";
/// The jump from `FORWARD`.
pub const JUMP: &str = "-j SHIMNET-FORWARD";

/// Owner comment of a network's rules.
pub fn tag(net: &NetworkName) -> String {
    format!("shimnet:{net}")
}

/// The two accept rules of one network.
pub fn accept_rules(net: &NetworkName, bridge: &IfName) -> [String; 2] {
    let t = tag(net);
    [
        format!("-i {bridge} -m comment --comment {t} -j ACCEPT"),
        format!("-o {bridge} -m comment --comment {t} -j ACCEPT"),
    ]
}

/// The iptables binaries found when the nftables backend started (looked up once: each lookup
/// is an exec).
pub struct Compat {
    fams: Vec<Ipt>,
    /// Admin chain layout to keep in `FORWARD`.
    pub admin: Option<AdminChains>,
}

impl Compat {
    /// Finds `iptables` and `ip6tables`; either may be missing.
    pub fn find() -> Self {
        Self {
            fams: [false, true]
                .into_iter()
                .filter_map(|v6| Ipt::new(v6).ok())
                .collect(),
            admin: None,
        }
    }
}

/// With an admin chain layout configured: creates it and puts its jump first in `FORWARD` of
/// every family (before `SHIMNET-FORWARD` when that chain is in use). Nothing otherwise.
pub fn ensure_admin(c: &Compat) -> Result<(), String> {
    let Some(admin) = &c.admin else {
        return Ok(());
    };
    for ipt in &c.fams {
        let r = ipt
            .chain_exists("filter", CHAIN)
            .and_then(|own| forward::ensure(ipt, Some(admin), own.then_some(CHAIN)));
        match r {
            Ok(()) => {}
            // IPv6 is best effort: ip6tables may lack a table here.
            Err(e) if ipt.v6 => tracing::debug!("{}: admin chain layout: {e}", ipt.cmd()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Whether the admin chain layout (when configured) is in place in every family (reads only;
/// IPv6 best effort as in [`ensure_admin`]).
pub fn admin_in_place(c: &Compat) -> Result<bool, String> {
    let Some(admin) = &c.admin else {
        return Ok(true);
    };
    for ipt in &c.fams {
        let r = ipt
            .chain_exists("filter", CHAIN)
            .and_then(|own| forward::in_place(ipt, Some(admin), own.then_some(CHAIN)));
        match r {
            Ok(true) => {}
            Ok(false) => return Ok(false),
            Err(_) if ipt.v6 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Does table `filter` of this family have a `FORWARD` chain (without creating it)?
fn forward_present(ipt: &Ipt, nft: &NftContext) -> bool {
    if ipt.nft_variant {
        let fam = if ipt.v6 { "ip6" } else { "ip" };
        nft.run(&format!("list chain {fam} filter FORWARD"), false)
            .is_ok()
    } else {
        let f = if ipt.v6 {
            "/proc/net/ip6_tables_names"
        } else {
            "/proc/net/ip_tables_names"
        };
        fs::read_to_string(f).is_ok_and(|s| s.lines().any(|l| l.trim() == "filter"))
    }
}

/// Ensures the accept rules of one network (v4, and v6 when `v6`), if an iptables FORWARD chain
/// exists. Idempotent.
pub fn ensure_network(
    c: &Compat,
    nft: &NftContext,
    net: &NetworkName,
    bridge: &IfName,
    v6: bool,
) -> Result<(), String> {
    for ipt in &c.fams {
        if ipt.v6 && !v6 {
            continue;
        }
        if !forward_present(ipt, nft) {
            continue;
        }
        ipt.ensure_chain("filter", CHAIN)?;
        forward::ensure(ipt, c.admin.as_ref(), Some(CHAIN))?;
        // Drop stale rules of this network (bridge renamed), then add.
        let want = accept_rules(net, bridge);
        let t = tag(net);
        for spec in ipt.rules("filter", CHAIN)? {
            let stale = super::ipt::comment_of(&spec) == Some(t.as_str())
                && !want.iter().any(|w| same_rule(w, &spec));
            if stale {
                ipt.delete_if_present("filter", CHAIN, &spec)?;
            }
        }
        for r in &want {
            ipt.ensure_appended("filter", CHAIN, r)?;
        }
    }
    Ok(())
}

/// The networks of `want` whose accept rules, or the jump to them from `FORWARD`, are missing
/// in a family where [`ensure_network`] would put them. Reads only.
pub fn drifted(
    c: &Compat,
    nft: &NftContext,
    want: &[super::NetworkRules],
) -> Result<BTreeSet<NetworkName>, String> {
    let mut out = BTreeSet::new();
    for ipt in &c.fams {
        let nets: Vec<_> = want
            .iter()
            .filter(|r| !ipt.v6 || r.subnet6.is_some())
            .collect();
        if nets.is_empty() || !forward_present(ipt, nft) {
            continue;
        }
        let layout = ipt.chain_exists("filter", CHAIN)?
            && forward::in_place(ipt, c.admin.as_ref(), Some(CHAIN))?;
        let have = if layout {
            ipt.rules("filter", CHAIN)?
        } else {
            Vec::new()
        };
        for r in nets {
            let all = accept_rules(&r.name, &r.bridge)
                .iter()
                .all(|w| have.iter().any(|h| same_rule(w, h)));
            if !(layout && all) {
                out.insert(r.name.clone());
            }
        }
    }
    Ok(out)
}

/// Compares an own spec with a listed one, token by token.
fn same_rule(a: &str, b: &str) -> bool {
    a.split_whitespace()
        .eq(b.split_whitespace().map(|t| t.trim_matches('"')))
}

/// Removes the accept rules of one network (both families); removes the chain when it is empty.
pub fn remove_network(c: &Compat, net: &NetworkName) -> Result<(), String> {
    let t = tag(net);
    let mut errors = Vec::new();
    for ipt in &c.fams {
        let r = ipt
            .delete_commented("filter", CHAIN, |c| c == t)
            .and_then(|_| {
                if ipt.chain_exists("filter", CHAIN)? && ipt.rules("filter", CHAIN)?.is_empty() {
                    ipt.remove_chain("filter", CHAIN, &[("FORWARD", JUMP)])?;
                }
                Ok(())
            });
        if let Err(e) = r {
            errors.push(format!("{}: {e}", ipt.cmd()));
        }
    }
    super::joined(errors)
}

/// Removes the chain and its jump (both families).
pub fn remove_all(c: &Compat) -> Result<(), String> {
    let mut errors = Vec::new();
    for ipt in &c.fams {
        match ipt.chain_exists("filter", CHAIN) {
            Ok(false) => {}
            Ok(true) => {
                if let Err(e) = ipt.remove_chain("filter", CHAIN, &[("FORWARD", JUMP)]) {
                    errors.push(format!("{}: {e}", ipt.cmd()));
                }
            }
            Err(e) => errors.push(format!("{}: {e}", ipt.cmd())),
        }
    }
    super::joined(errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_accept_rules() {
        let r = accept_rules(
            &NetworkName::new("n1").unwrap(),
            &IfName::new("br-n1").unwrap(),
        );
        assert_eq!(r[0], "-i br-n1 -m comment --comment shimnet:n1 -j ACCEPT");
        assert_eq!(r[1], "-o br-n1 -m comment --comment shimnet:n1 -j ACCEPT");
        assert!(same_rule(
            &r[1],
            "-o br-n1 -m comment --comment \"shimnet:n1\" -j ACCEPT"
        ));
        assert!(!same_rule(&r[0], &r[1]));
    }
}
