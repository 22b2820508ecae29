//! The one owner of iptables' `FORWARD` chain: which jumps shimnet keeps at its top and in what
//! order. Every insert into `FORWARD` goes through [`ensure`], whichever backend or coexistence
//! rule asks for it, so the order is right by construction and nothing has to re-sort it later.
//!
//! Two jumps may be ours:
//! - an *admin chain* ([`AdminChains`], given by the caller, e.g. another manager's layout that a
//!   compatibility mode reproduces): jumped **first**, ending in `RETURN`, so that rules an
//!   administrator puts there filter container traffic before anything shimnet accepts; with it
//!   come empty placeholder chains other tools expect to find;
//! - `SHIMNET-FORWARD`, shimnet's own entry chain (iptables backend, or the nftables backend's
//!   coexistence chain): right after the admin chain when there is one, else anywhere (other
//!   managers insert at the top too; shimnet does not fight them for position 1).
//!
//! Acts on the calling thread's network namespace, through [`super::ipt`].

use super::ipt::Ipt;

/// The admin chain layout to keep (`None` in the engine config: no admin chain).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminChains {
    /// The chain jumped first from `FORWARD` (created ending in `RETURN`).
    pub first: String,
    /// Empty chains to create if missing, as (table, chain).
    pub placeholders: Vec<(String, String)>,
}

/// The jump into `chain`.
pub fn jump(chain: &str) -> String {
    format!("-j {chain}")
}

/// What `FORWARD` must change (pure).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Fix {
    /// Delete every copy of these jumps first.
    pub delete: Vec<String>,
    /// Then insert these at position 1, in this order (so the last one ends up first).
    pub insert_first: Vec<String>,
}

/// Compares `FORWARD`'s rule specs (`iptables -S FORWARD` without `-A FORWARD `) with the jumps
/// wanted: `admin` first when given, `own` present (right after `admin` when both are wanted).
pub fn plan(rules: &[String], admin: Option<&str>, own: Option<&str>) -> Fix {
    let has = |j: &str| rules.iter().any(|r| r.trim() == j);
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
    let mut fix = Fix {
        delete: vec![a.to_string()],
        insert_first: vec![],
    };
    if let Some(o) = own {
        fix.delete.push(o.to_string());
        fix.insert_first.push(o.to_string());
    }
    fix.insert_first.push(a.to_string());
    fix
}

/// Creates the admin chain and placeholders if missing.
fn ensure_admin_chains(ipt: &Ipt, admin: &AdminChains) -> Result<(), String> {
    if !ipt.chain_exists("filter", &admin.first)? {
        ipt.ensure_chain("filter", &admin.first)?;
        ipt.ensure_appended("filter", &admin.first, "-j RETURN")?;
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
/// layout is in place. On ip6tables the admin chains are best effort (its `nat` table may be
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
    for j in &fix.delete {
        ipt.delete_all("filter", "FORWARD", j)?;
    }
    for j in &fix.insert_first {
        ipt.insert_first("filter", "FORWARD", j)?;
    }
    Ok(())
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

    #[test]
    fn admin_goes_first_and_own_right_after_whoever_inserted_last() {
        for rules in [
            l(&[OWN, ADMIN]),
            l(&["-j OTHER", ADMIN, OWN]),
            l(&[ADMIN, "-j OTHER", OWN]),
            l(&[]),
        ] {
            let fix = plan(&rules, Some(ADMIN), Some(OWN));
            assert_eq!(
                fix.delete,
                vec![ADMIN.to_string(), OWN.to_string()],
                "{rules:?}"
            );
            // Inserting OWN then ADMIN at position 1 leaves ADMIN, OWN on top.
            assert_eq!(fix.insert_first, vec![OWN.to_string(), ADMIN.to_string()]);
            let mut after: Vec<String> = rules
                .iter()
                .filter(|r| !fix.delete.contains(r))
                .cloned()
                .collect();
            for j in &fix.insert_first {
                after.insert(0, j.clone());
            }
            assert_eq!(
                plan(&after, Some(ADMIN), Some(OWN)),
                Fix::default(),
                "{after:?}"
            );
        }
    }
}
