//! Backend selection: nftables when libnftables can talk to the kernel, else iptables when its
//! binary works, else none.

use super::iptables::IptablesBackend;
use super::nft::NftBackend;
use super::{BackendKind, Firewall, FirewallError};

/// Picks a backend: `preferred` if given (error naming it if unusable), else nftables where it
/// works, else iptables. The backend is bound to the calling thread's network namespace.
pub fn detect(preferred: Option<BackendKind>) -> Result<Box<dyn Firewall>, FirewallError> {
    match preferred {
        Some(BackendKind::Nftables) => NftBackend::new()
            .map(|b| Box::new(b) as Box<dyn Firewall>)
            .map_err(|e| FirewallError::Unavailable(format!("preferred backend nftables: {e}"))),
        Some(BackendKind::Iptables) => IptablesBackend::new()
            .map(|b| Box::new(b) as Box<dyn Firewall>)
            .map_err(|e| FirewallError::Unavailable(format!("preferred backend iptables: {e}"))),
        None => match NftBackend::new() {
            Ok(b) => Ok(Box::new(b)),
            Err(nft) => match IptablesBackend::new() {
                Ok(b) => Ok(Box::new(b)),
                Err(ipt) => Err(FirewallError::Unavailable(format!(
                    "nftables: {nft}; iptables: {ipt}"
                ))),
            },
        },
    }
}
