//! nftables backend: everything in table `inet shimnet`, driven in-process through libnftables.
//!
//! Every trait call that changes state is one `nft_run_cmd_from_buffer` batch, i.e. one atomic
//! transaction. Calls that must find existing objects (network replace/removal, purge) first
//! read the table as JSON. Per-endpoint state is map elements only, so publishing ports costs
//! the same whatever the number of containers.

pub mod ffi;
pub mod rules;
pub mod state;

use std::collections::BTreeSet;

use self::ffi::NftContext;
use self::state::Listing;
use super::{compat, AdminChains, BackendKind, Firewall, FirewallError, NetworkRules, PortRules};
use crate::types::{IfName, NetworkName};

/// The nftables backend.
pub struct NftBackend {
    ctx: NftContext,
    compat: compat::Compat,
    /// Serialises the read-then-write operations (listing, then one batch).
    op: std::sync::Mutex<()>,
}

fn fail(op: &str, msg: impl Into<String>) -> FirewallError {
    FirewallError::Backend {
        backend: BackendKind::Nftables,
        op: op.to_string(),
        msg: msg.into(),
    }
}

impl NftBackend {
    /// Opens a libnftables context in the calling thread's network namespace and checks that it
    /// can talk to the kernel (`list tables`).
    pub fn new() -> Result<Self, FirewallError> {
        let ctx = NftContext::new().map_err(|e| fail("open", e))?;
        ctx.run("list tables", false)
            .map_err(|e| fail("probe", e))?;
        Ok(Self {
            ctx,
            compat: compat::Compat::find(),
            op: std::sync::Mutex::new(()),
        })
    }

    /// Keeps an admin chain jumped first from iptables' `FORWARD` (see [`super::forward`]).
    pub fn with_admin(mut self, admin: Option<AdminChains>) -> Self {
        self.compat.admin = admin;
        self
    }

    fn run(&self, op: &str, cmds: &str) -> Result<String, FirewallError> {
        if cmds.is_empty() {
            return Ok(String::new());
        }
        self.ctx.run(cmds, false).map_err(|e| fail(op, e))
    }

    /// The table's chains and elements; `None` when the table does not exist.
    fn listing(&self, op: &str) -> Result<Option<Listing>, FirewallError> {
        let tables = self
            .ctx
            .run("list tables", false)
            .map_err(|e| fail(op, e))?;
        if !tables.lines().any(|l| l.trim() == "table inet shimnet") {
            return Ok(None);
        }
        let json = self
            .ctx
            .run(&format!("list table {}", rules::TABLE), true)
            .map_err(|e| fail(op, e))?;
        state::parse(&json).map(Some).map_err(|e| fail(op, e))
    }

    /// Listing, creating the base objects first when the table is missing (kept a separate
    /// transaction: nftables 1.0.6 refuses jump elements into an interval map created in the
    /// same batch).
    fn listing_with_base(&self, op: &str) -> Result<Listing, FirewallError> {
        match self.listing(op)? {
            Some(l) => Ok(l),
            None => {
                self.run(op, &rules::base())?;
                Ok(Listing::default())
            }
        }
    }

    /// Commands deleting the elements and chains of network `name` found in `l`, except the
    /// chains in `keep` (which are flushed instead).
    fn teardown_cmds(l: &Listing, name: &NetworkName, keep: &[String]) -> String {
        let mut s = String::new();
        for e in &l.elems {
            if rules::NETWORK_SETS.contains(&e.set.as_str())
                && e.comment.as_deref() == Some(name.as_str())
            {
                s.push_str(&rules::delete_element(&e.set, &e.key));
            }
        }
        for c in &l.chains {
            if rules::chain_owner(c).as_ref() == Some(name) {
                if keep.contains(c) {
                    s.push_str(&rules::reset_chain(c));
                } else {
                    s.push_str(&rules::delete_chain(c));
                }
            }
        }
        s
    }
}

impl Firewall for NftBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Nftables
    }

    fn ensure_base(&self) -> Result<(), FirewallError> {
        self.run("ensure base", &rules::base())?;
        compat::ensure_admin(&self.compat)
            .map_err(|e| fail("ensure base: iptables admin chain layout", e))
    }

    fn base_in_place(&self) -> Result<bool, FirewallError> {
        let Some(l) = self.listing("check base")? else {
            return Ok(false);
        };
        if !rules::base_chains().iter().all(|c| l.chains.contains(c)) {
            return Ok(false);
        }
        compat::admin_in_place(&self.compat)
            .map_err(|e| fail("check base: iptables admin chain layout", e))
    }

    fn apply_network(&self, r: &NetworkRules) -> Result<(), FirewallError> {
        let op = format!("apply network {}", r.name);
        let _op = self.op.lock().unwrap_or_else(|p| p.into_inner());
        let l = self.listing_with_base(&op)?;
        let chains = rules::network_chains(r);
        let mut cmds = Self::teardown_cmds(&l, &r.name, &chains);
        for c in &chains {
            if !l.chains.contains(c) {
                cmds.push_str(&rules::reset_chain(c));
            }
        }
        cmds.push_str(&rules::network_body(r));
        self.run(&op, &cmds)?;
        compat::ensure_network(
            &self.compat,
            &self.ctx,
            &r.name,
            &r.bridge,
            r.subnet6.is_some(),
        )
        .map_err(|e| fail(&format!("{op}: iptables FORWARD coexistence"), e))
    }

    fn remove_network(&self, name: &NetworkName) -> Result<(), FirewallError> {
        let op = format!("remove network {name}");
        let _op = self.op.lock().unwrap_or_else(|p| p.into_inner());
        let mut errors = Vec::new();
        match self.listing(&op) {
            Ok(Some(l)) => {
                if let Err(e) = self.run(&op, &Self::teardown_cmds(&l, name, &[])) {
                    errors.push(e.to_string());
                }
            }
            Ok(None) => {}
            Err(e) => errors.push(e.to_string()),
        }
        if let Err(e) = compat::remove_network(&self.compat, name) {
            errors.push(format!("iptables FORWARD coexistence: {e}"));
        }
        super::joined(errors).map_err(|m| fail(&op, m))
    }

    fn owned_networks(&self) -> Result<Vec<NetworkName>, FirewallError> {
        let Some(l) = self.listing("list networks")? else {
            return Ok(Vec::new());
        };
        let set: BTreeSet<NetworkName> = l
            .chains
            .iter()
            .filter_map(|c| rules::chain_owner(c))
            .collect();
        Ok(set.into_iter().collect())
    }

    /// Networks without their chains, or whose iptables `FORWARD` accept rules
    /// ([`compat`]) were deleted from outside.
    fn drifted_networks(&self, want: &[NetworkRules]) -> Result<Vec<NetworkName>, FirewallError> {
        let owned: BTreeSet<NetworkName> = self.owned_networks()?.into_iter().collect();
        let compat = compat::drifted(&self.compat, &self.ctx, want)
            .map_err(|e| fail("check networks: iptables FORWARD coexistence", e))?;
        Ok(want
            .iter()
            .filter(|r| !owned.contains(&r.name) || compat.contains(&r.name))
            .map(|r| r.name.clone())
            .collect())
    }

    fn add_ports(&self, r: &PortRules) -> Result<(), FirewallError> {
        self.run(&format!("add ports of {}", r.id), &rules::add_ports(r))?;
        Ok(())
    }

    fn remove_ports(&self, r: &PortRules) -> Result<(), FirewallError> {
        self.run(
            &format!("remove ports of {}", r.id),
            &rules::remove_ports(r),
        )?;
        Ok(())
    }

    fn purge_ports(&self, id: &IfName) -> Result<(), FirewallError> {
        let op = format!("purge ports of {id}");
        let _op = self.op.lock().unwrap_or_else(|p| p.into_inner());
        let Some(l) = self.listing(&op)? else {
            return Ok(());
        };
        let cmds: String = l
            .elems
            .iter()
            .filter(|e| {
                rules::PORT_MAPS.contains(&e.set.as_str())
                    && e.comment.as_deref() == Some(id.as_str())
            })
            .map(|e| rules::delete_element(&e.set, &e.key))
            .collect();
        self.run(&op, &cmds)?;
        Ok(())
    }

    fn owned_ports(&self) -> Result<Vec<IfName>, FirewallError> {
        let Some(l) = self.listing("list ports")? else {
            return Ok(Vec::new());
        };
        let set: BTreeSet<IfName> = l
            .elems
            .iter()
            .filter(|e| rules::PORT_MAPS.contains(&e.set.as_str()))
            .filter_map(|e| e.comment.as_deref().and_then(rules::port_owner))
            .collect();
        Ok(set.into_iter().collect())
    }

    fn remove_all(&self) -> Result<(), FirewallError> {
        let mut errors = Vec::new();
        if let Err(e) = self.run("remove all", &rules::delete_table()) {
            errors.push(e.to_string());
        }
        if let Err(e) = compat::remove_all(&self.compat) {
            errors.push(format!("iptables FORWARD coexistence: {e}"));
        }
        super::joined(errors).map_err(|m| fail("remove all", m))
    }
}
