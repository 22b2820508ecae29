//! The session state machine (pure): what the driver does next after each outcome. A session is
//! a lease kept alive plus one watch on the prefix.
//!
//! ```text
//!   Register ──ok──▶ Sync ──ok──▶ Live ──compacted──▶ Sync (full re-list)
//!      ▲              │             │──own record or reservation gone──▶ Register
//!      │            failed        failed (etcd unreachable, no leader, stream closed)
//!      └── Wait(backoff) ◀──────────┘
//! ```
//!
//! `Register` checks the lease (a new one if it expired), re-creates this node's reservation if
//! it vanished and puts the node record. `Sync` resumes the watch just after the last revision
//! applied — so a short outage costs no re-listing — or lists the prefix first when there is no
//! such revision (start, or the history was compacted past it). Outages only ever lead to
//! `Wait`: nothing here withdraws a peer; the peer set changes only through records seen.

use std::time::Duration;

/// What the driver does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Make sure the lease is alive, the reservation ours and the node record in place.
    Register,
    /// Start the watch: from `resume_after + 1`, or after a fresh listing when `None`.
    Sync {
        /// Last revision applied.
        resume_after: Option<i64>,
    },
    /// Keep the lease alive and apply watch events until something ends the session.
    Live,
    /// Sleep, then `Register` again.
    Wait(Duration),
}

/// The outcome of a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// `Register` succeeded.
    Registered,
    /// `Sync` succeeded; the view is at `revision`.
    Synced {
        /// Revision applied.
        revision: i64,
    },
    /// Events up to `revision` applied while live.
    Progress {
        /// Revision applied.
        revision: i64,
    },
    /// The watch was cancelled because its start revision was compacted.
    Compacted,
    /// This node's own record or reservation is gone (lease expired during a partition, or
    /// removed by hand): register again at once.
    OwnLost,
    /// etcd did not answer, had no leader, or a stream ended.
    Failed(String),
    /// The wait is over.
    Waited,
}

/// Exponential backoff with jitter: `base`, doubling, capped at `max`, each delay ±20 %.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
    seed: u64,
}

impl Backoff {
    /// A backoff; `seed` varies the jitter between nodes.
    pub fn new(base: Duration, max: Duration, seed: u64) -> Self {
        Backoff {
            base,
            max,
            attempt: 0,
            seed,
        }
    }

    /// The next delay.
    pub fn next_delay(&mut self) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32 << self.attempt.min(16))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        // xorshift over seed and attempt: deterministic per node, different across nodes.
        let mut x = self.seed ^ (u64::from(self.attempt) << 32) ^ 0x9e37_79b9_7f4a_7c15;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let permille = 800 + (x % 401); // 0.8 ..= 1.2
        exp * permille as u32 / 1000
    }

    /// Back to `base` (after a session was established).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// The session machine.
#[derive(Debug, Clone)]
pub struct Session {
    next: Step,
    revision: Option<i64>,
    backoff: Backoff,
    live: bool,
    established: u64,
}

impl Session {
    /// A session that starts by registering. `revision`: the revision of a listing already
    /// applied (start-up), so the first watch resumes after it.
    pub fn new(backoff: Backoff, revision: Option<i64>) -> Self {
        Session {
            next: Step::Register,
            revision,
            backoff,
            live: false,
            established: 0,
        }
    }

    /// What to do now.
    pub fn step(&self) -> Step {
        self.next
    }

    /// Whether the session is established (lease kept alive, watch running).
    pub fn live(&self) -> bool {
        self.live
    }

    /// Sessions established so far.
    pub fn established(&self) -> u64 {
        self.established
    }

    /// Last revision applied.
    pub fn revision(&self) -> Option<i64> {
        self.revision
    }

    /// Takes the outcome of the current step; returns the next one.
    pub fn on(&mut self, o: Outcome) -> Step {
        self.next = match (self.next, o) {
            (_, Outcome::Failed(_)) => {
                self.live = false;
                Step::Wait(self.backoff.next_delay())
            }
            (Step::Wait(_), Outcome::Waited) => Step::Register,
            (Step::Register, Outcome::Registered) => Step::Sync {
                resume_after: self.revision,
            },
            (Step::Sync { .. }, Outcome::Synced { revision }) => {
                self.revision = Some(revision);
                self.live = true;
                self.established += 1;
                self.backoff.reset();
                Step::Live
            }
            (_, Outcome::Progress { revision }) => {
                self.revision = Some(self.revision.unwrap_or(0).max(revision));
                self.next
            }
            (Step::Sync { .. } | Step::Live, Outcome::Compacted) => {
                self.live = false;
                self.revision = None;
                Step::Sync { resume_after: None }
            }
            (Step::Live | Step::Sync { .. }, Outcome::OwnLost) => {
                self.live = false;
                Step::Register
            }
            // An outcome that does not belong to the current step: start over cleanly.
            (_, _) => {
                self.live = false;
                Step::Register
            }
        };
        self.next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> Session {
        Session::new(
            Backoff::new(Duration::from_millis(200), Duration::from_secs(2), 7),
            None,
        )
    }

    #[test]
    fn start_lists_then_goes_live() {
        let mut s = session();
        assert_eq!(s.step(), Step::Register);
        assert_eq!(s.on(Outcome::Registered), Step::Sync { resume_after: None });
        assert!(!s.live());
        assert_eq!(s.on(Outcome::Synced { revision: 10 }), Step::Live);
        assert!(s.live());
        assert_eq!(s.on(Outcome::Progress { revision: 12 }), Step::Live);
        assert_eq!(s.revision(), Some(12));
        assert_eq!(s.established(), 1);
    }

    #[test]
    fn an_outage_backs_off_then_resumes_after_the_last_revision() {
        let mut s = session();
        s.on(Outcome::Registered);
        s.on(Outcome::Synced { revision: 10 });
        s.on(Outcome::Progress { revision: 15 });
        let mut delays = Vec::new();
        for _ in 0..6 {
            match s.on(Outcome::Failed("no leader".into())) {
                Step::Wait(d) => delays.push(d),
                other => panic!("{other:?}"),
            }
            assert!(!s.live());
            assert_eq!(s.on(Outcome::Waited), Step::Register);
        }
        // Doubling from 200 ms (±20 %), capped at 2 s (±20 %).
        assert!(delays[0] >= Duration::from_millis(160) && delays[0] <= Duration::from_millis(240));
        assert!(delays[1] > delays[0]);
        assert!(
            delays.iter().all(|d| *d <= Duration::from_millis(2400)),
            "{delays:?}"
        );
        assert!(delays[5] >= Duration::from_millis(1600), "{delays:?}");
        assert_eq!(
            s.on(Outcome::Registered),
            Step::Sync {
                resume_after: Some(15)
            }
        );
        assert_eq!(s.on(Outcome::Synced { revision: 20 }), Step::Live);
        assert_eq!(s.established(), 2);
        // Established again: the backoff starts over.
        match s.on(Outcome::Failed("closed".into())) {
            Step::Wait(d) => assert!(d <= Duration::from_millis(240), "{d:?}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn compaction_forces_a_full_listing() {
        let mut s = session();
        s.on(Outcome::Registered);
        s.on(Outcome::Synced { revision: 10 });
        assert_eq!(s.on(Outcome::Compacted), Step::Sync { resume_after: None });
        assert_eq!(s.revision(), None);
        assert_eq!(s.on(Outcome::Synced { revision: 40 }), Step::Live);
        // A resume that finds its revision compacted also re-lists.
        s.on(Outcome::Failed("x".into()));
        s.on(Outcome::Waited);
        assert_eq!(
            s.on(Outcome::Registered),
            Step::Sync {
                resume_after: Some(40)
            }
        );
        assert_eq!(s.on(Outcome::Compacted), Step::Sync { resume_after: None });
    }

    #[test]
    fn losing_own_record_registers_again_without_waiting() {
        let mut s = Session::new(
            Backoff::new(Duration::from_millis(200), Duration::from_secs(2), 1),
            Some(5),
        );
        assert_eq!(
            s.on(Outcome::Registered),
            Step::Sync {
                resume_after: Some(5)
            }
        );
        s.on(Outcome::Synced { revision: 6 });
        assert_eq!(s.on(Outcome::OwnLost), Step::Register);
        assert_eq!(
            s.on(Outcome::Registered),
            Step::Sync {
                resume_after: Some(6)
            }
        );
    }

    #[test]
    fn jitter_differs_between_nodes() {
        let a: Vec<_> = (0..4)
            .map({
                let mut b = Backoff::new(Duration::from_millis(200), Duration::from_secs(2), 1);
                move |_| b.next_delay()
            })
            .collect();
        let b: Vec<_> = (0..4)
            .map({
                let mut b = Backoff::new(Duration::from_millis(200), Duration::from_secs(2), 2);
                move |_| b.next_delay()
            })
            .collect();
        assert_ne!(a, b);
    }
}
