//! When a peering pass that ended with errors is tried again. Peering has no timer while it is
//! healthy (passes follow events); a pass that could not finish (the filter refused, a device
//! that could not be made) is tried again after 1 s, then 2, 4, … up to 60 s, until one ends
//! clean.

use std::time::Duration;

/// The first wait after a failed pass.
pub const FIRST: Duration = Duration::from_secs(1);
/// The longest wait.
pub const MAX: Duration = Duration::from_secs(60);

/// Backoff between passes that end with errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    next: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Retry { next: FIRST }
    }
}

impl Retry {
    /// After a pass: `Some(wait)` before the next try when it ended with errors (doubling each
    /// time), `None` (and the backoff reset) when it ended clean.
    pub fn after(&mut self, errors: bool) -> Option<Duration> {
        if !errors {
            *self = Retry::default();
            return None;
        }
        let wait = self.next;
        self.next = (self.next * 2).min(MAX);
        Some(wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_cap_and_resets_on_a_clean_pass() {
        let mut r = Retry::default();
        let waits: Vec<u64> = (0..8).map(|_| r.after(true).unwrap().as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(r.after(false), None);
        assert_eq!(r.after(true), Some(FIRST));
    }
}
