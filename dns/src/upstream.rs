//! The upstream resolvers queries are forwarded to: the `nameserver` lines of the host's
//! resolv.conf, where a list of only systemd-resolved stub addresses (127.0.0.53, 127.0.0.54) is
//! replaced by the servers resolved itself uses (`/run/systemd/resolve/resolv.conf`). The files
//! are looked at again when a query is forwarded and the last look is more than
//! [`RECHECK`] old: a changed file (inode, size or modification time) is re-read, so an edited or
//! replaced resolv.conf takes effect within a second without polling while nothing is forwarded.
//!
//! Each server has a health mark for failover: one that timed out or refused is tried after the
//! healthy ones for [`DOWN_FOR`]; when every server is marked down, one query per second per
//! server probes it and the rest get SERVFAIL at once instead of waiting for timeouts.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, UNIX_EPOCH};

use arc_swap::ArcSwap;

/// How often the files are looked at (at most; only while forwarding).
pub const RECHECK: Duration = Duration::from_secs(1);
/// How long a failed server is tried last.
pub const DOWN_FOR: Duration = Duration::from_secs(5);
/// Interval between probes of a server while every server is down.
pub const PROBE_EVERY: Duration = Duration::from_secs(1);
/// systemd-resolved's stub listener addresses.
pub const RESOLVED_STUBS: [Ipv4Addr; 2] =
    [Ipv4Addr::new(127, 0, 0, 53), Ipv4Addr::new(127, 0, 0, 54)];
/// Port upstream resolvers listen on.
pub const DNS_PORT: u16 = 53;

/// The `nameserver` addresses of a resolv.conf text, in order; unparsable entries and scoped
/// IPv6 addresses (`fe80::1%eth0`) are skipped, duplicates dropped.
pub fn parse_resolv_conf(text: &str) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split(['#', ';']).next().unwrap_or_default();
        let mut words = line.split_whitespace();
        if words.next() != Some("nameserver") {
            continue;
        }
        if let Some(ip) = words.next().and_then(|w| w.parse::<IpAddr>().ok()) {
            if !out.contains(&ip) {
                out.push(ip);
            }
        }
    }
    out
}

/// True if every address is a systemd-resolved stub (and there is at least one).
pub fn only_resolved_stubs(servers: &[IpAddr]) -> bool {
    !servers.is_empty()
        && servers
            .iter()
            .all(|ip| matches!(ip, IpAddr::V4(v4) if RESOLVED_STUBS.contains(v4)))
}

/// The servers to forward to: `main`'s, unless they are only systemd-resolved stubs and
/// `resolved` (resolved's own upstream list) names servers.
pub fn effective(main: Vec<IpAddr>, resolved: Option<Vec<IpAddr>>) -> Vec<IpAddr> {
    match resolved {
        Some(r) if only_resolved_stubs(&main) && !r.is_empty() => r,
        _ => main,
    }
}

/// One upstream server and its health.
#[derive(Debug)]
pub struct Upstream {
    /// Address and port.
    pub addr: SocketAddr,
    /// Milliseconds (since the source's epoch) until which it counts as down.
    down_until: AtomicU64,
    /// Milliseconds before which no probe is sent while it is down.
    next_probe: AtomicU64,
}

impl Upstream {
    fn new(addr: SocketAddr) -> Self {
        Upstream {
            addr,
            down_until: AtomicU64::new(0),
            next_probe: AtomicU64::new(0),
        }
    }

    /// True if it is not marked down at `now_ms`.
    pub fn is_up(&self, now_ms: u64) -> bool {
        self.down_until.load(Ordering::Relaxed) <= now_ms
    }

    /// Marks it down (a timeout or an error).
    pub fn mark_down(&self, now_ms: u64) {
        self.down_until
            .store(now_ms + DOWN_FOR.as_millis() as u64, Ordering::Relaxed);
        self.next_probe
            .store(now_ms + PROBE_EVERY.as_millis() as u64, Ordering::Relaxed);
    }

    /// Marks it up (it answered).
    pub fn mark_up(&self) {
        self.down_until.store(0, Ordering::Relaxed);
    }

    /// Claims the probe slot at `now_ms` (one caller per [`PROBE_EVERY`] wins).
    fn claim_probe(&self, now_ms: u64) -> bool {
        let at = self.next_probe.load(Ordering::Relaxed);
        at <= now_ms
            && self
                .next_probe
                .compare_exchange(
                    at,
                    now_ms + PROBE_EVERY.as_millis() as u64,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
    }
}

/// One list of upstream servers.
#[derive(Debug, Default)]
pub struct Upstreams {
    /// Servers in resolv.conf order.
    pub servers: Vec<Upstream>,
}

impl Upstreams {
    /// Servers at these addresses, port `port`.
    pub fn new(addrs: &[IpAddr], port: u16) -> Self {
        Upstreams {
            servers: addrs
                .iter()
                .map(|ip| Upstream::new(SocketAddr::new(*ip, port)))
                .collect(),
        }
    }

    /// The servers to try for one query, in order: those up (file order), then those down. When
    /// none is up, only the servers whose probe slot this query wins (possibly none: answer
    /// SERVFAIL at once).
    pub fn plan(&self, now_ms: u64) -> Vec<&Upstream> {
        let (up, down): (Vec<&Upstream>, Vec<&Upstream>) =
            self.servers.iter().partition(|u| u.is_up(now_ms));
        if up.is_empty() {
            return down.into_iter().filter(|u| u.claim_probe(now_ms)).collect();
        }
        up.into_iter().chain(down).collect()
    }
}

/// What identifies a version of a file: device, inode, size, modification time (or absent).
type Stamp = Option<(u64, u64, u64, u128)>;

fn stamp(path: &Path) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::metadata(path).ok()?;
    let mtime = md
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    Some((md.dev(), md.ino(), md.len(), mtime))
}

/// Where the upstream list comes from, re-read when the files change.
#[derive(Debug)]
pub struct Source {
    resolv_conf: PathBuf,
    resolved_conf: PathBuf,
    port: u16,
    epoch: Instant,
    current: ArcSwap<Upstreams>,
    stamps: Mutex<(Stamp, Stamp)>,
    next_check: AtomicU64,
}

impl Source {
    /// Reads the files now. `port` is the upstreams' port (53; tests may use another).
    pub fn new(resolv_conf: PathBuf, resolved_conf: PathBuf, port: u16) -> Self {
        let s = Source {
            resolv_conf,
            resolved_conf,
            port,
            epoch: Instant::now(),
            current: ArcSwap::from_pointee(Upstreams::default()),
            stamps: Mutex::new((None, None)),
            next_check: AtomicU64::new(0),
        };
        s.reload_if_changed(true);
        s
    }

    /// Milliseconds since this source was made (the clock of the health marks).
    pub fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn reload_if_changed(&self, force: bool) {
        let now = (stamp(&self.resolv_conf), stamp(&self.resolved_conf));
        let mut last = self.stamps.lock().unwrap_or_else(|e| e.into_inner());
        if !force && *last == now {
            return;
        }
        *last = now;
        let read = |p: &Path| {
            std::fs::read_to_string(p)
                .ok()
                .map(|t| parse_resolv_conf(&t))
        };
        let main = read(&self.resolv_conf).unwrap_or_default();
        let resolved = only_resolved_stubs(&main)
            .then(|| read(&self.resolved_conf))
            .flatten();
        let servers = effective(main, resolved);
        if servers.is_empty() {
            tracing::warn!(resolv_conf = %self.resolv_conf.display(), "no upstream resolvers: names that are not local get SERVFAIL");
        } else {
            tracing::info!(resolv_conf = %self.resolv_conf.display(), upstreams = ?servers, "upstream resolvers loaded");
        }
        self.current
            .store(Arc::new(Upstreams::new(&servers, self.port)));
    }

    /// The current servers, after re-reading the files if they changed (checked at most once
    /// per [`RECHECK`]).
    pub fn current(&self) -> Arc<Upstreams> {
        let now = self.now_ms();
        let due = self.next_check.load(Ordering::Relaxed);
        if now >= due
            && self
                .next_check
                .compare_exchange(
                    due,
                    now + RECHECK.as_millis() as u64,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            self.reload_if_changed(false);
        }
        self.current.load_full()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ips(v: &[&str]) -> Vec<IpAddr> {
        v.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn resolv_conf_lines() {
        let text = "# generated\nsearch example.com\nnameserver 192.0.2.1 # first\nnameserver  2001:db8::1\n\
                    nameserver fe80::1%eth0\nnameserver bogus\nnameserver 192.0.2.1\n;nameserver 192.0.2.9\noptions ndots:2\n";
        assert_eq!(parse_resolv_conf(text), ips(&["192.0.2.1", "2001:db8::1"]));
        assert!(parse_resolv_conf("").is_empty());
    }

    #[test]
    fn resolved_stub_is_replaced_by_its_upstreams() {
        let stub = ips(&["127.0.0.53"]);
        let real = ips(&["192.0.2.7", "192.0.2.8"]);
        assert_eq!(effective(stub.clone(), Some(real.clone())), real);
        assert_eq!(
            effective(stub.clone(), Some(vec![])),
            stub,
            "nothing better known"
        );
        assert_eq!(effective(stub.clone(), None), stub);
        // A loopback resolver that is not resolved's stub is used as it is (shimnetd runs on the
        // host and reaches it).
        let local = ips(&["127.0.0.1"]);
        assert_eq!(effective(local.clone(), Some(real.clone())), local);
        let mixed = ips(&["127.0.0.53", "192.0.2.1"]);
        assert_eq!(effective(mixed.clone(), Some(real)), mixed);
    }

    #[test]
    fn failover_order_and_probes() {
        let u = Upstreams::new(&ips(&["192.0.2.1", "192.0.2.2"]), 53);
        let addrs = |p: Vec<&Upstream>| p.iter().map(|u| u.addr.ip()).collect::<Vec<_>>();
        assert_eq!(addrs(u.plan(0)), ips(&["192.0.2.1", "192.0.2.2"]));
        u.servers[0].mark_down(100);
        assert_eq!(
            addrs(u.plan(200)),
            ips(&["192.0.2.2", "192.0.2.1"]),
            "down ones last"
        );
        u.servers[1].mark_down(200);
        // Both down: nothing until a probe is due, then one query gets each probe slot.
        assert!(u.plan(300).is_empty());
        assert_eq!(addrs(u.plan(1100)), ips(&["192.0.2.1"]));
        assert!(u.plan(1100).is_empty(), "the probe slot is taken");
        assert_eq!(addrs(u.plan(1200)), ips(&["192.0.2.2"]));
        u.servers[1].mark_up();
        assert_eq!(addrs(u.plan(1300)), ips(&["192.0.2.2", "192.0.2.1"]));
        // Down marks expire.
        assert_eq!(addrs(u.plan(100 + DOWN_FOR.as_millis() as u64)).len(), 2);
    }

    #[test]
    fn source_rereads_a_changed_file() {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("resolv.conf");
        let resolved = dir.path().join("resolved.conf");
        std::fs::write(&main, "nameserver 192.0.2.1\n").unwrap();
        let s = Source::new(main.clone(), resolved.clone(), 53);
        assert_eq!(s.current().servers[0].addr, "192.0.2.1:53".parse().unwrap());
        // Replaced by a new file (rename: another inode), pointing at resolved's stub.
        let tmp = dir.path().join("new");
        std::fs::write(&tmp, "nameserver 127.0.0.53\n").unwrap();
        std::fs::write(&resolved, "nameserver 192.0.2.9\n").unwrap();
        std::fs::rename(&tmp, &main).unwrap();
        s.next_check.store(0, Ordering::Relaxed);
        let now: Vec<_> = s.current().servers.iter().map(|u| u.addr).collect();
        assert_eq!(now, vec!["192.0.2.9:53".parse().unwrap()]);
        // Within RECHECK nothing is looked at.
        std::fs::remove_file(&main).unwrap();
        assert_eq!(s.current().servers.len(), 1);
        s.next_check.store(0, Ordering::Relaxed);
        assert!(s.current().servers.is_empty(), "no file, no upstreams");
    }
}
