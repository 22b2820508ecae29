//! shimnet engine: everything that decides and changes container networking on one host.
//!
//! Front doors (REST API, Docker plugin, CNI) call into [`engine::Engine`]; nothing here knows
//! HTTP, Docker or CNI. Kernel side effects live in [`netlink`], [`firewall`] and [`sysctl`];
//! state lives in [`store`]; the rest is pure logic.

pub mod engine;
pub mod features;
pub mod firewall;
pub mod ipam;
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
