//! Metrics of event-driven repair, registered into the daemon's [`crate::metrics::Metrics`]:
//! `shimnet_repairs_total{kind}` (objects put back after a change from outside),
//! `shimnet_repair_checks_total{kind}` (objects checked, repaired or not),
//! `shimnet_repair_errors_total{kind}`, `shimnet_repair_latency_seconds{kind}` (first
//! notification → repaired) and, for `shimnetctl status`, the time and latency of the last
//! repair of each kind.

use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

type LatencyFamily = Family<KindLabels, Histogram, fn() -> Histogram>;
type F64Gauge = Gauge<f64, AtomicU64>;

fn latency_histogram() -> Histogram {
    // 1 ms .. ~16 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// The repair metric families.
#[derive(Debug)]
pub struct RepairMetrics {
    repairs: Family<KindLabels, Counter>,
    checks: Family<KindLabels, Counter>,
    errors: Family<KindLabels, Counter>,
    latency: LatencyFamily,
    last_time: Family<KindLabels, F64Gauge>,
    last_latency: Family<KindLabels, F64Gauge>,
}

impl RepairMetrics {
    /// Registers the families (zero for every kind in `kinds`, so they show before the first
    /// repair).
    pub fn register(registry: &mut Registry, kinds: &[&'static str]) -> Self {
        let repairs = Family::<KindLabels, Counter>::default();
        registry.register(
            "shimnet_repairs",
            "Owned objects put back after a change from outside (event-driven repair), by kind",
            repairs.clone(),
        );
        let checks = Family::<KindLabels, Counter>::default();
        registry.register(
            "shimnet_repair_checks",
            "Owned objects checked after a notification (repaired or found in place), by kind",
            checks.clone(),
        );
        let errors = Family::<KindLabels, Counter>::default();
        registry.register(
            "shimnet_repair_errors",
            "Event-driven repairs that failed, by kind",
            errors.clone(),
        );
        let latency: LatencyFamily = Family::new_with_constructor(latency_histogram);
        registry.register(
            "shimnet_repair_latency_seconds",
            "Time from the first notification of a change to the object being repaired, by kind",
            latency.clone(),
        );
        let last_time = Family::<KindLabels, F64Gauge>::default();
        registry.register(
            "shimnet_repair_last_timestamp_seconds",
            "Unix time of the last repair of each kind",
            last_time.clone(),
        );
        let last_latency = Family::<KindLabels, F64Gauge>::default();
        registry.register(
            "shimnet_repair_last_latency_seconds",
            "Latency of the last repair of each kind",
            last_latency.clone(),
        );
        for kind in kinds {
            repairs.get_or_create(&KindLabels { kind }).inc_by(0);
            checks.get_or_create(&KindLabels { kind }).inc_by(0);
        }
        RepairMetrics {
            repairs,
            checks,
            errors,
            latency,
            last_time,
            last_latency,
        }
    }

    /// Records one check of an object of `kind`: `Ok(true)` repaired, `Ok(false)` found in
    /// place (not counted), `Err` failed.
    pub fn record(&self, kind: &'static str, outcome: Result<bool, &str>, latency: Duration) {
        let l = KindLabels { kind };
        self.checks.get_or_create(&l).inc();
        match outcome {
            Ok(false) => {}
            Ok(true) => {
                self.repairs.get_or_create(&l).inc();
                self.latency
                    .get_or_create(&l)
                    .observe(latency.as_secs_f64());
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs_f64();
                self.last_time.get_or_create(&l).set(now);
                self.last_latency
                    .get_or_create(&l)
                    .set(latency.as_secs_f64());
            }
            Err(_) => {
                self.errors.get_or_create(&l).inc();
            }
        }
    }
}
