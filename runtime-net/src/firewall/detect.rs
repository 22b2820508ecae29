//! Backend selection: nftables when libnftables can talk to the kernel, else iptables when its
//! binary works, else none.

use super::iptables::IptablesBackend;
use super::nft::NftBackend;
use super::{AdminChains, BackendKind, Firewall, FirewallError};

/// Picks a backend: `preferred` if given (error naming it if unusable), else nftables where it
/// works, else iptables. `admin`: an admin chain layout to keep in iptables' FORWARD (see
/// [`super::forward`]). The backend is bound to the calling thread's network namespace.
pub fn detect(
    preferred: Option<BackendKind>,
    admin: Option<AdminChains>,
) -> Result<Box<dyn Firewall>, FirewallError> {
    let nft =
        || NftBackend::new().map(|b| Box::new(b.with_admin(admin.clone())) as Box<dyn Firewall>);
    let ipt = || {
        IptablesBackend::new().map(|b| Box::new(b.with_admin(admin.clone())) as Box<dyn Firewall>)
    };
    match preferred {
        Some(BackendKind::Nftables) => nft()
            .map_err(|e| FirewallError::Unavailable(format!("preferred backend nftables: {e}"))),
        Some(BackendKind::Iptables) => ipt()
            .map_err(|e| FirewallError::Unavailable(format!("preferred backend iptables: {e}"))),
        None => match nft() {
            Ok(b) => Ok(b),
            Err(n) => match ipt() {
                Ok(b) => Ok(b),
                Err(i) => Err(FirewallError::Unavailable(format!(
                    "nftables: {n}; iptables: {i}"
                ))),
            },
        },
    }
}
