//! The one owner of iptables' `FORWARD` chain: which jumps shimnet keeps at its top and in what
//! order. Every insert into `FORWARD` goes through [`ensure`], whichever backend or coexistence
//! rule asks for it, so the order is right by construction and nothing has to re-sort it later.
//!
//! Two jumps may be ours:
//! - an *admin chain* ([`AdminChains`]: [`AdminChains::user`], `SHIMNET-USER`, in plain iptables
//!   mode, or another manager's layout that a compatibility mode reproduces): jumped **first**, so
//!   that rules an administrator puts there filter container traffic before anything shimnet
//!   accepts; with it may come empty placeholder chains other tools expect to find;
//! - `SHIMNET-FORWARD`, shimnet's own entry chain (iptables backend, or the nftables backend's
//!   coexistence chain): right after the admin chain when there is one, else anywhere (the
//!   nftables backend's coexistence chain only accepts; it does not fight others for position 1).
//!
//! When a rule sits ahead of the jumps, both are moved back to the top in one
//! `iptables-restore --noflush` transaction (deletes and inserts commit together), so forwarded
//! packets never see `FORWARD` without them.
//!
//! Acts on the calling thread's network namespace, through [`super::ipt`].

use super::ipt::Ipt;

/// The admin chain of plain iptables mode.
pub const USER_CHAIN: &str = "SHIMNET-USER";

/// The admin chain layout to keep (`None` in the engine config: the backend's default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminChains {
    /// The chain jumped first from `FORWARD`.
    pub first: String,
    /// Whether `first` is created ending in `RETURN` (older managers' convention); else it is
    /// created empty, so rules appended there take effect.
    pub ends_in_return: bool,
    /// Empty chains to create if missing, as (table, chain).
    pub placeholders: Vec<(String, String)>,
}

impl AdminChains {
    /// `SHIMNET-USER`, created empty: the administrator's chain in plain iptables mode.
    pub fn user() -> Self {
        AdminChains {
            first: USER_CHAIN.to_string(),
            ends_in_return: false,
            placeholders: vec![],
        }
    }
}

/// The jump into `chain`.
pub fn jump(chain: &str) -> String {
    format!("-j {chain}")
}

/// What `FORWARD` must change (pure).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Fix {
    /// Delete these jumps first, one entry per copy present (so each delete finds its rule).
    pub delete: Vec<String>,
    /// Then insert these at position 1, in this order (so the last one ends up first).
    pub insert_first: Vec<String>,
}

/// Compares `FORWARD`'s rule specs (`iptables -S FORWARD` without `-A FORWARD `) with the jumps
/// wanted: `admin` first when given, `own` present (right after `admin` when both are wanted).
pub fn plan(rules: &[String], admin: Option<&str>, own: Option<&str>) -> Fix {
    let copies = |j: &str| rules.iter().filter(|r| r.trim() == j).count();
    let has = |j: &str| copies(j) > 0;
    let Some(a) = admin else {
        return match own {
            Some(o) if !has(o) => Fix {
                delete: vec![],
                insert_first: vec![o.to_string()],
            },
            _ => Fix::default(),
        };
    };
    let in_place = rules.first().is_some_and(|r| r.trim() == a)
        && match own {
            Some(o) => rules.get(1).is_some_and(|r| r.trim() == o),
            None => true,
        };
    if in_place {
        return Fix::default();
    }
    let mut fix = Fix::default();
    for j in std::iter::once(a).chain(own) {
        fix.delete
            .extend(std::iter::repeat_n(j.to_string(), copies(j)));
    }
    fix.insert_first.extend(own.map(String::from));
    fix.insert_first.push(a.to_string());
    fix
}

/// The `iptables-restore --noflush` input applying `fix` to `FORWARD` in one transaction;
/// `None` when there is nothing to do.
pub fn restore_input(fix: &Fix) -> Option<String> {
    if fix == &Fix::default() {
        return None;
    }
    let mut s = String::from("*filter\n");
    for j in &fix.delete {
        s.push_str(&format!("-D FORWARD {j}\n"));
    }
    for j in &fix.insert_first {
        s.push_str(&format!("-I FORWARD 1 {j}\n"));
    }
    s.push_str("COMMIT\n");
    Some(s)
}

/// Creates the admin chain and placeholders if missing.
fn ensure_admin_chains(ipt: &Ipt, admin: &AdminChains) -> Result<(), String> {
    if !ipt.chain_exists("filter", &admin.first)? {
        ipt.ensure_chain("filter", &admin.first)?;
        if admin.ends_in_return {
            ipt.ensure_appended("filter", &admin.first, "-j RETURN")?;
        }
    }
    for (table, chain) in &admin.placeholders {
        ipt.ensure_chain(table, chain)?;
    }
    Ok(())
}

/// Whether `FORWARD` of this family already has the layout [`ensure`] makes (reads only).
pub fn in_place(ipt: &Ipt, admin: Option<&AdminChains>, own: Option<&str>) -> Result<bool, String> {
    let admin_jump = match admin {
        Some(a) => match ipt.chain_exists("filter", &a.first) {
            Ok(true) => Some(jump(&a.first)),
            Ok(false) => return Ok(false),
            Err(_) if ipt.v6 => None,
            Err(e) => return Err(e),
        },
        None => None,
    };
    let own = own.map(jump);
    let rules = ipt.rules("filter", "FORWARD")?;
    Ok(plan(&rules, admin_jump.as_deref(), own.as_deref()) == Fix::default())
}

/// Makes `FORWARD` of this family match the layout: the admin chain (and its placeholders)
/// first when given, then `own` (a chain name) when given. Idempotent; changes nothing when the
/// layout is in place; moves the jumps in one transaction ([`restore_input`]). On ip6tables the admin chains are best effort (its `nat` table may be
/// missing here): a failure there only drops the admin jump from this family's layout.
pub fn ensure(ipt: &Ipt, admin: Option<&AdminChains>, own: Option<&str>) -> Result<(), String> {
    let admin = match admin {
        Some(a) => match ensure_admin_chains(ipt, a) {
            Ok(()) => Some(jump(&a.first)),
            Err(e) if ipt.v6 => {
                tracing::debug!("{}: admin chain layout: {e}", ipt.cmd());
                None
            }
            Err(e) => return Err(e),
        },
        None => None,
    };
    let own = own.map(jump);
    let rules = ipt.rules("filter", "FORWARD")?;
    let fix = plan(&rules, admin.as_deref(), own.as_deref());
    match restore_input(&fix) {
        Some(input) => ipt.restore_noflush(&input),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    const ADMIN: &str = "-j ADMIN";
    const OWN: &str = "-j SHIMNET-FORWARD";

    #[test]
    fn nothing_to_do_when_in_place() {
        assert_eq!(
            plan(&l(&[ADMIN, OWN, "-j OTHER"]), Some(ADMIN), Some(OWN)),
            Fix::default()
        );
        assert_eq!(plan(&l(&[ADMIN]), Some(ADMIN), None), Fix::default());
        assert_eq!(
            plan(&l(&["-j OTHER", OWN]), None, Some(OWN)),
            Fix::default()
        );
    }

    #[test]
    fn own_jump_alone_is_added_once_anywhere() {
        let fix = plan(&l(&["-j OTHER"]), None, Some(OWN));
        assert_eq!(fix.insert_first, vec![OWN.to_string()]);
        assert!(fix.delete.is_empty());
    }

    /// Applies `fix` the way `iptables-restore` runs [`restore_input`]: each `-D` removes the
    /// first copy (and must find one), each `-I FORWARD 1` goes on top.
    fn apply(rules: &[String], fix: &Fix) -> Vec<String> {
        let mut after = rules.to_vec();
        for j in &fix.delete {
            let at = after
                .iter()
                .position(|r| r == j)
                .expect("-D finds its rule");
            after.remove(at);
        }
        for j in &fix.insert_first {
            after.insert(0, j.clone());
        }
        after
    }

    #[test]
    fn admin_goes_first_and_own_right_after_whoever_inserted_last() {
        for rules in [
            l(&[OWN, ADMIN]),
            l(&["-j OTHER", ADMIN, OWN]),
            l(&["-j DROP", ADMIN, OWN, "-j OTHER"]),
            l(&[ADMIN, "-j OTHER", OWN]),
            l(&["-j DROP", ADMIN, "-j OTHER", OWN, OWN]),
            l(&[]),
        ] {
            let fix = plan(&rules, Some(ADMIN), Some(OWN));
            // Inserting OWN then ADMIN at position 1 leaves ADMIN, OWN on top.
            assert_eq!(fix.insert_first, vec![OWN.to_string(), ADMIN.to_string()]);
            let after = apply(&rules, &fix);
            assert_eq!(
                plan(&after, Some(ADMIN), Some(OWN)),
                Fix::default(),
                "{after:?}"
            );
            // Every other rule stays, in its order; no copy of ours is left behind.
            let others = |v: &[String]| -> Vec<String> {
                v.iter()
                    .filter(|r| *r != ADMIN && *r != OWN)
                    .cloned()
                    .collect()
            };
            assert_eq!(others(&after), others(&rules));
            assert_eq!(after.len(), others(&rules).len() + 2, "{after:?}");
        }
    }

    #[test]
    fn every_copy_is_deleted_and_only_present_ones() {
        let fix = plan(&l(&["-j DROP", OWN, ADMIN, OWN]), Some(ADMIN), Some(OWN));
        assert_eq!(fix.delete, l(&[ADMIN, OWN, OWN]));
        let fix = plan(&l(&["-j DROP"]), Some(ADMIN), Some(OWN));
        assert!(fix.delete.is_empty());
    }

    #[test]
    fn one_transaction_moves_the_jumps() {
        assert_eq!(restore_input(&Fix::default()), None);
        let fix = plan(&l(&["-j DROP", ADMIN, OWN]), Some(ADMIN), Some(OWN));
        assert_eq!(
            restore_input(&fix).unwrap(),
            "*filter\n-D FORWARD -j ADMIN\n-D FORWARD -j SHIMNET-FORWARD\n\
             -I FORWARD 1 -j SHIMNET-FORWARD\n-I FORWARD 1 -j ADMIN\nCOMMIT\n"
        );
    }

    #[test]
    fn the_user_chain_is_created_empty() {
        let u = AdminChains::user();
        assert_eq!(u.first, "SHIMNET-USER");
        assert!(!u.ends_in_return && u.placeholders.is_empty());
    }
}
