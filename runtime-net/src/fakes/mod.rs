//! In-memory kernel and firewall for tests (compiled for `cfg(test)` and the `fakes` feature only;
//! no release build enables either). They keep the state the real executors would leave in the
//! kernel, enforce the same rules the kernel does where the engine relies on them (a link name is
//! unique, a pair needs its bridge and its namespace, deleting one end of a pair deletes the other,
//! a namespace that goes away takes its pair with it), record every change they are asked for in a
//! journal, and fail on demand — so the engine's attach, detach, rollback, reconcile and repair
//! decisions run as an unprivileged user with no kernel access.

mod firewall;
mod kernel;

pub use firewall::FakeFirewall;
pub use kernel::{FakeKernel, FakeLink, FakeNsLink};
