//! Drives a [`Door`] over a set of container namespaces: one after the other (set up all, then
//! tear down all, in the same order) or all at once from one thread per container.

use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

use shimnet::netns::NamedNetns;

use crate::doors::Door;

/// Latencies of one run, indexed by container.
pub struct Run {
    /// Setup latency of container i (i endpoints were present before it, sequentially).
    pub setup: Vec<Duration>,
    /// Teardown latency of container i (n - i endpoints were present before it).
    pub teardown: Vec<Duration>,
    /// Wall time of all setups and of all teardowns.
    pub wall: (Duration, Duration),
    /// Time after the last teardown returned until the door's kernel objects were gone
    /// (shimnetd deletes detached veths in the background).
    pub drain: Duration,
}

/// Sets up every container in turn, then tears them down in the same order.
pub fn sequential(door: &dyn Door, cs: &[NamedNetns]) -> Run {
    sequential_with(door, cs, || {})
}

/// Like [`sequential`], calling `full` once while every container is set up (not timed).
pub fn sequential_with(door: &dyn Door, cs: &[NamedNetns], full: impl FnOnce()) -> Run {
    let t = Instant::now();
    let setup = cs
        .iter()
        .enumerate()
        .map(|(i, c)| door.setup(i, c))
        .collect();
    let ws = t.elapsed();
    full();
    let t = Instant::now();
    let teardown = cs
        .iter()
        .enumerate()
        .map(|(i, c)| door.teardown(i, c))
        .collect();
    let wt = t.elapsed();
    let t = Instant::now();
    door.drained();
    Run {
        setup,
        teardown,
        wall: (ws, wt),
        drain: t.elapsed(),
    }
}

/// Sets up all containers at once (one thread each, released together), then tears them all
/// down at once. Each latency runs from the common start to that container's completion, so it
/// includes any queueing (doors that cannot run concurrently are serialised by one lock).
pub fn parallel(door: &dyn Door, cs: &[NamedNetns]) -> Run {
    let n = cs.len();
    let lock = Mutex::new(());
    let serial = !door.concurrent();
    let phase = |f: &(dyn Fn(usize, &NamedNetns) -> Duration + Sync)| {
        let barrier = Barrier::new(n + 1);
        let mut out = vec![Duration::ZERO; n];
        let wall = std::thread::scope(|s| {
            let hs: Vec<_> = cs
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let b = &barrier;
                    let lock = &lock;
                    s.spawn(move || {
                        b.wait();
                        let t = Instant::now();
                        let _g = serial.then(|| lock.lock().unwrap_or_else(|p| p.into_inner()));
                        f(i, c);
                        t.elapsed()
                    })
                })
                .collect();
            barrier.wait();
            let t = Instant::now();
            for (i, h) in hs.into_iter().enumerate() {
                out[i] = h.join().expect("worker panicked");
            }
            t.elapsed()
        });
        (out, wall)
    };
    let (setup, ws) = phase(&|i, c| door.setup(i, c));
    let (teardown, wt) = phase(&|i, c| door.teardown(i, c));
    let t = Instant::now();
    door.drained();
    Run {
        setup,
        teardown,
        wall: (ws, wt),
        drain: t.elapsed(),
    }
}
