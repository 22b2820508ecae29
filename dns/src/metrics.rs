//! Prometheus metrics of the name service, registered into the daemon's registry (the api
//! crate's `Metrics`) so they are served on `/metrics` with the rest:
//!
//! - `shimnet_dns_queries_total{network,result}`: queries by network and what became of them
//!   (answer, nodata, nxdomain, forwarded, servfail, refused, formerr, notimp, ratelimited);
//! - `shimnet_dns_forwarded_total{network}`: queries sent to an upstream resolver;
//! - `shimnet_dns_upstream_failures_total{upstream,reason}`: upstream attempts that failed
//!   (timeout, error, servfail);
//! - `shimnet_dns_query_duration_seconds{path}`: time from receiving a query to sending its
//!   reply, `path` = local or forwarded.
//!
//! The query path never builds a label set: each listener holds its network's counters
//! ([`NetCounters`]), so counting a query is one atomic add.

use std::net::SocketAddr;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::answer::QueryResult;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueryLabels {
    network: String,
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NetLabels {
    network: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    upstream: String,
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PathLabels {
    path: &'static str,
}

type LatencyFamily = Family<PathLabels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 25 µs .. ~3.3 s.
    Histogram::new(exponential_buckets(0.000_025, 2.0, 18))
}

/// Why an upstream attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamFailure {
    /// No reply in time.
    Timeout,
    /// A socket error (e.g. port unreachable: connection refused).
    Error,
    /// It answered SERVFAIL or REFUSED.
    ServFail,
}

impl UpstreamFailure {
    fn as_str(self) -> &'static str {
        match self {
            UpstreamFailure::Timeout => "timeout",
            UpstreamFailure::Error => "error",
            UpstreamFailure::ServFail => "servfail",
        }
    }
}

/// The name service's metric families (cheap to clone: handles to shared values).
#[derive(Debug, Clone)]
pub struct DnsMetrics {
    queries: Family<QueryLabels, Counter>,
    forwarded: Family<NetLabels, Counter>,
    upstream_failures: Family<UpstreamLabels, Counter>,
    latency: LatencyFamily,
}

impl Default for DnsMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// One network's counters, held by its listeners.
#[derive(Debug, Clone)]
pub struct NetCounters {
    results: Vec<Counter>,
    forwarded: Counter,
    local: Histogram,
    remote: Histogram,
}

impl NetCounters {
    /// Counts a query's result.
    pub fn count(&self, r: QueryResult) {
        self.results[r.index()].inc();
    }

    /// Counts a query sent upstream.
    pub fn forwarded(&self) {
        self.forwarded.inc();
    }

    /// Observes the time a local answer took.
    pub fn local_latency(&self, secs: f64) {
        self.local.observe(secs);
    }

    /// Observes the time a forwarded answer took.
    pub fn forwarded_latency(&self, secs: f64) {
        self.remote.observe(secs);
    }
}

impl DnsMetrics {
    /// Empty families (register them with [`DnsMetrics::register`]).
    pub fn new() -> Self {
        DnsMetrics {
            queries: Family::default(),
            forwarded: Family::default(),
            upstream_failures: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
        }
    }

    /// Registers every family in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "shimnet_dns_queries",
            "DNS queries on the networks' gateways, by network and result (answer, nodata, nxdomain, forwarded, servfail, refused, formerr, notimp, ratelimited)",
            self.queries.clone(),
        );
        registry.register(
            "shimnet_dns_forwarded",
            "DNS queries sent to an upstream resolver, by network",
            self.forwarded.clone(),
        );
        registry.register(
            "shimnet_dns_upstream_failures",
            "Failed attempts at an upstream resolver, by upstream and reason (timeout, error, servfail)",
            self.upstream_failures.clone(),
        );
        registry.register(
            "shimnet_dns_query_duration_seconds",
            "Time from a DNS query to its reply, by path (local, forwarded)",
            self.latency.clone(),
        );
    }

    /// The counters of one network (every result series exists from now on, at zero).
    pub fn network(&self, network: &str) -> NetCounters {
        let results = QueryResult::ALL
            .iter()
            .map(|r| {
                self.queries.get_or_create_owned(&QueryLabels {
                    network: network.to_string(),
                    result: r.as_str(),
                })
            })
            .collect();
        NetCounters {
            results,
            forwarded: self.forwarded.get_or_create_owned(&NetLabels {
                network: network.to_string(),
            }),
            local: self
                .latency
                .get_or_create_owned(&PathLabels { path: "local" }),
            remote: self
                .latency
                .get_or_create_owned(&PathLabels { path: "forwarded" }),
        }
    }

    /// Drops a removed network's series.
    pub fn remove_network(&self, network: &str) {
        for r in QueryResult::ALL {
            self.queries.remove(&QueryLabels {
                network: network.to_string(),
                result: r.as_str(),
            });
        }
        self.forwarded.remove(&NetLabels {
            network: network.to_string(),
        });
    }

    /// Counts a failed upstream attempt.
    pub fn upstream_failure(&self, upstream: SocketAddr, why: UpstreamFailure) {
        self.upstream_failures
            .get_or_create(&UpstreamLabels {
                upstream: upstream.to_string(),
                reason: why.as_str(),
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_network_result_and_upstream() {
        let m = DnsMetrics::new();
        let mut reg = Registry::default();
        m.register(&mut reg);
        let n = m.network("web");
        n.count(QueryResult::Answer);
        n.count(QueryResult::Answer);
        n.count(QueryResult::NxDomain);
        n.forwarded();
        n.local_latency(0.0001);
        m.upstream_failure("192.0.2.1:53".parse().unwrap(), UpstreamFailure::Timeout);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &reg).unwrap();
        for line in [
            "shimnet_dns_queries_total{network=\"web\",result=\"answer\"} 2",
            "shimnet_dns_queries_total{network=\"web\",result=\"nxdomain\"} 1",
            "shimnet_dns_queries_total{network=\"web\",result=\"servfail\"} 0",
            "shimnet_dns_forwarded_total{network=\"web\"} 1",
            "shimnet_dns_upstream_failures_total{upstream=\"192.0.2.1:53\",reason=\"timeout\"} 1",
            "shimnet_dns_query_duration_seconds_count{path=\"local\"} 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        m.remove_network("web");
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &reg).unwrap();
        assert!(!text.contains("network=\"web\""));
    }
}
