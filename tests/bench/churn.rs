//! Growth check that load from other processes cannot fake: two networks on one daemon, one with
//! few endpoints and one with many, and attach/detach operations alternating between them one by
//! one, so that whatever else the machine does hits both sides alike. Each round attaches a fresh
//! container and detaches an old one, so the endpoint counts stay put; after each detach the
//! suite waits (untimed) for shimnetd's background deletion, so that deletion does not land in
//! the next operation's time.

use std::time::Duration;

use serde_json::json;
use shimnet::netns::NamedNetns;

use crate::common::{container, TestHost};
use crate::doors::{wait_reaped, Door, Rest};

/// Latencies on the small and the large network.
pub struct Churn {
    /// Attach latencies: (small, large).
    pub attach: (Vec<Duration>, Vec<Duration>),
    /// Detach latencies: (small, large).
    pub detach: (Vec<Duration>, Vec<Duration>),
}

fn batch(n: usize) -> Vec<NamedNetns> {
    (0..n).map(|_| container("bk")).collect()
}

/// Runs `rounds` alternating rounds with `small` and `large` endpoints present.
pub fn interleaved(h: &TestHost, small: usize, large: usize, rounds: usize) -> Churn {
    h.create_network(json!({"name": "churnsmall", "subnet": "10.206.0.0/16"}));
    h.create_network(json!({"name": "churnlarge", "subnet": "10.207.0.0/16"}));
    let door = |network: &str| Rest {
        socket: h.socket.clone(),
        network: network.into(),
        host: h.ns.path().to_path_buf(),
    };
    let (s, l) = (door("churnsmall"), door("churnlarge"));
    let (s_old, l_old) = (batch(small), batch(large));
    let (s_new, l_new) = (batch(rounds), batch(rounds));
    for (i, c) in s_old.iter().enumerate() {
        s.setup(i, c);
    }
    for (i, c) in l_old.iter().enumerate() {
        l.setup(i, c);
    }
    let mut out = Churn {
        attach: (Vec::new(), Vec::new()),
        detach: (Vec::new(), Vec::new()),
    };
    for r in 0..rounds {
        out.attach.1.push(l.setup(r, &l_new[r]));
        out.detach.1.push(l.teardown(r, &l_old[r % large]));
        wait_reaped(h.ns.path());
        out.attach.0.push(s.setup(r, &s_new[r]));
        out.detach.0.push(s.teardown(r, &s_old[r % small]));
        wait_reaped(h.ns.path());
    }
    let (s_left, l_left) = (rounds.min(small), rounds.min(large));
    for (i, c) in s_old
        .iter()
        .enumerate()
        .skip(s_left)
        .chain(s_new.iter().enumerate())
    {
        s.teardown(i, c);
    }
    for (i, c) in l_old
        .iter()
        .enumerate()
        .skip(l_left)
        .chain(l_new.iter().enumerate())
    {
        l.teardown(i, c);
    }
    s.drained();
    for n in ["churnsmall", "churnlarge"] {
        h.call("DELETE", &format!("/v1/networks/{n}"), None);
    }
    out
}
