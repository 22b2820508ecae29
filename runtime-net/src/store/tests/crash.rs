//! Crash test: a child process allocates and releases endpoints, printing each acknowledged
//! call; the parent `kill -9`s it at varying moments and checks that nothing acknowledged was
//! lost and no address is owned twice.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{name, req, spec};
use crate::store::Store;

/// Set (to the state directory) in the re-executed child.
const CHILD_ENV: &str = "SHIMNET_STORE_CRASH_CHILD";
/// Round number passed to the child, so its container ids are unique.
const ROUND_ENV: &str = "SHIMNET_STORE_CRASH_ROUND";
const NET: &str = "crashnet";

fn test_name() -> String {
    let module = module_path!();
    let module = module.split_once("::").map_or(module, |(_, rest)| rest);
    format!("{module}::kill_9_loses_no_acknowledged_allocation")
}

#[test]
fn kill_9_loses_no_acknowledged_allocation() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        let round = std::env::var(ROUND_ENV).unwrap_or_default();
        child(Path::new(&dir), &round);
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    {
        let st = Store::open(dir).unwrap();
        let mut s = spec(NET, "10.99.0.0/16", "10.99.0.1");
        s.subnet6 = Some("fd99::/64".parse().unwrap());
        s.gateway6 = Some("fd99::1".parse().unwrap());
        st.insert_network(&s).unwrap();
    }
    // key -> IPv4 of every endpoint known to exist.
    let mut alive: BTreeMap<String, String> = BTreeMap::new();
    let delays_us = [0u64, 150, 700, 1300, 2100, 3400, 90, 5000];
    for (round, delay) in delays_us.iter().enumerate() {
        let read_before_kill = 8 + round * 13;
        let log = run_child_and_kill(dir, round, read_before_kill, Duration::from_micros(*delay));
        eprintln!(
            "crash round {round}: {} acknowledged lines, killed after {delay}us",
            log.len()
        );
        assert!(log.len() >= read_before_kill, "child died early: {log:?}");

        let mut released: BTreeSet<String> = BTreeSet::new();
        let mut pending: BTreeSet<String> = BTreeSet::new();
        for line in &log {
            let mut f = line.split(' ');
            match (f.next(), f.next(), f.next()) {
                (Some("ACK"), Some(key), Some(ip)) => {
                    alive.insert(key.to_string(), ip.to_string());
                }
                (Some("TRYREL"), Some(key), None) => {
                    pending.insert(key.to_string());
                }
                (Some("REL"), Some(key), None) => {
                    pending.remove(key);
                    alive.remove(key);
                    released.insert(key.to_string());
                }
                _ => panic!("unexpected child line {line:?}"),
            }
        }

        let st = Store::open(dir).unwrap();
        let records = st.endpoints(Some(&name(NET))).unwrap();
        let stored: BTreeMap<String, String> = records
            .iter()
            .map(|r| (r.key.to_string(), r.ipv4.ip().to_string()))
            .collect();
        for (key, ip) in &alive {
            if pending.contains(key) {
                continue;
            }
            assert_eq!(
                stored.get(key),
                Some(ip),
                "round {round}: acknowledged {key} lost"
            );
        }
        for key in &released {
            assert!(
                !stored.contains_key(key),
                "round {round}: released {key} is back"
            );
        }
        check_consistent(&st, round);

        // The store is the truth from here on (an unacknowledged allocation may have landed).
        alive = stored;
        // The survivor keeps allocating without duplicates.
        for j in 0..5 {
            let (r, fresh) = st
                .allocate_endpoint(&req(NET, &format!("p{round}-{j}")))
                .unwrap();
            assert!(fresh);
            alive.insert(r.key.to_string(), r.ipv4.ip().to_string());
        }
        check_consistent(&st, round);
    }
}

/// Every record owns exactly its own allocation rows; no address appears twice.
fn check_consistent(st: &Store, round: usize) {
    let records = st.endpoints(Some(&name(NET))).unwrap();
    let rows = st.network_allocations(&name(NET)).unwrap();
    let mut expected: BTreeSet<(String, String)> = BTreeSet::new();
    for r in &records {
        assert!(
            expected.insert((r.ipv4.ip().to_string(), r.key.to_string())),
            "dup"
        );
        let v6 = r.ipv6.expect("dual-stack network");
        expected.insert((v6.ip().to_string(), r.key.to_string()));
    }
    let v4s: BTreeSet<_> = records.iter().map(|r| r.ipv4.ip()).collect();
    let v6s: BTreeSet<_> = records
        .iter()
        .filter_map(|r| r.ipv6)
        .map(|n| n.ip())
        .collect();
    assert_eq!(v4s.len(), records.len(), "round {round}: IPv4 owned twice");
    assert_eq!(v6s.len(), records.len(), "round {round}: IPv6 owned twice");
    let actual: BTreeSet<(String, String)> = rows
        .iter()
        .map(|(ip, o)| (ip.to_string(), o.clone()))
        .collect();
    assert_eq!(actual.len(), rows.len());
    assert_eq!(
        actual, expected,
        "round {round}: allocation rows disagree with records"
    );
}

/// Runs the child, reads `n` lines, waits `delay`, kills it with SIGKILL, and returns every line
/// it managed to print (the pipe keeps what was written before the kill).
fn run_child_and_kill(dir: &Path, round: usize, n: usize, delay: Duration) -> Vec<String> {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args(["--exact", &test_name(), "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir)
        .env(ROUND_ENV, round.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut log = Vec::new();
    while log.len() < n {
        let Some(line) = lines.next() else { break };
        if let Some(at) = line.as_ref().unwrap().find("@@") {
            log.push(line.unwrap()[at + 2..].to_string());
        }
    }
    std::thread::sleep(delay);
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert!(!status.success(), "child finished before the kill");
    for line in lines {
        let line = line.unwrap();
        if let Some(at) = line.find("@@") {
            log.push(line[at + 2..].to_string());
        }
    }
    log
}

/// Child side: allocate endpoints, releasing the oldest one every fourth step; print a line
/// only after each call has returned.
fn child(dir: &Path, round: &str) {
    let st = Store::open(dir).unwrap();
    let mut alive: std::collections::VecDeque<_> = st
        .endpoints(None)
        .unwrap()
        .into_iter()
        .map(|r| r.key)
        .collect();
    let out = std::io::stdout();
    let say = |s: String| {
        let mut o = out.lock();
        writeln!(o, "@@{s}").unwrap();
        o.flush().unwrap();
    };
    for i in 0..100_000 {
        if i % 4 == 3 {
            if let Some(key) = alive.pop_front() {
                say(format!("TRYREL {key}"));
                st.release_endpoint(&key).unwrap();
                say(format!("REL {key}"));
                continue;
            }
        }
        let (r, _) = st
            .allocate_endpoint(&req(NET, &format!("r{round}-c{i}")))
            .unwrap();
        say(format!("ACK {} {}", r.key, r.ipv4.ip()));
        alive.push_back(r.key);
    }
}
