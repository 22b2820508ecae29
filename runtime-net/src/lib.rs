//! shimnet engine: everything that decides and changes container networking on one host.
//!
//! Front doors call into [`engine::Engine`] with requests already translated into the engine's
//! types; nothing here knows a front door's protocol (a shape test holds the crate to that).
//! Decisions are pure ([`plan`]); kernel side effects go through narrow traits ([`kernel`],
//! [`firewall::Firewall`]) implemented by [`netlink`], [`sysctl`] and the firewall backends;
//! state lives in [`store`].

pub mod engine;
#[cfg(any(test, feature = "fakes"))]
pub mod fakes;
pub mod features;
pub mod firewall;
pub mod ipam;
pub mod kernel;
pub mod naming;
pub mod netlink;
pub mod nspath;
pub mod peering;
pub mod plan;
pub mod repair;
pub mod store;
pub mod sysctl;
pub mod types;

pub use types::*;
