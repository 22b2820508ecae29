//! Pure statistics and the result table of the benchmark suite: percentiles of latency samples,
//! ratios against shimnet, growth between the first and last hundred operations.

use std::fmt::Write as _;
use std::time::Duration;

/// Median, p90 and p99 of one set of samples, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// Number of samples.
    pub n: usize,
    /// 50th percentile.
    pub median: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
}

/// The `p`-quantile (0..=1) of `sorted` by nearest rank on the closed interval.
fn quantile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Summarises `samples`; `None` when there are none.
pub fn summarize(samples: &[Duration]) -> Option<Summary> {
    if samples.is_empty() {
        return None;
    }
    let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    Some(Summary {
        n: ms.len(),
        median: quantile(&ms, 0.5),
        p90: quantile(&ms, 0.9),
        p99: quantile(&ms, 0.99),
    })
}

/// Median of the last `k` samples over the median of the first `k` (how much one operation's
/// cost grew with the number of endpoints present); `None` with fewer than `2k` samples.
pub fn growth(samples: &[Duration], k: usize) -> Option<f64> {
    if k == 0 || samples.len() < 2 * k {
        return None;
    }
    let first = summarize(&samples[..k])?.median;
    let last = summarize(&samples[samples.len() - k..])?.median;
    Some(last / first)
}

/// One row of the result table.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Scenario (e.g. "sequential 1000").
    pub group: String,
    /// Front door or peer and operation (e.g. "shimnet REST attach").
    pub what: String,
    /// Figures.
    pub summary: Summary,
    /// Median over shimnet's median for the same operation in the same group (`None` for
    /// shimnet's own rows).
    pub ratio: Option<f64>,
}

/// Renders rows as a fixed-width text table.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<16} {:<44} {:>5} {:>9} {:>9} {:>9} {:>8}",
        "group", "operation", "n", "median", "p90", "p99", "ratio"
    );
    for r in rows {
        let ratio = r.ratio.map_or("-".to_string(), |x| format!("{x:.1}x"));
        let _ = writeln!(
            out,
            "{:<16} {:<44} {:>5} {:>6.2} ms {:>6.2} ms {:>6.2} ms {:>8}",
            r.group, r.what, r.summary.n, r.summary.median, r.summary.p90, r.summary.p99, ratio
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(dead_code)] // the suite's bench build compiles this module without running it
    fn ms(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|&m| Duration::from_millis(m)).collect()
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let s = summarize(&ms(&(1..=100).rev().collect::<Vec<_>>())).unwrap();
        assert_eq!(s.n, 100);
        assert_eq!(s.median, 51.0);
        assert_eq!(s.p90, 90.0);
        assert_eq!(s.p99, 99.0);
        let one = summarize(&ms(&[7])).unwrap();
        assert_eq!((one.median, one.p90, one.p99), (7.0, 7.0, 7.0));
        assert!(summarize(&[]).is_none());
    }

    #[test]
    fn growth_compares_first_and_last_block() {
        let flat = ms(&[2; 300]);
        assert_eq!(growth(&flat, 100), Some(1.0));
        let mut rising = ms(&[2; 100]);
        rising.extend(ms(&[3; 100]));
        rising.extend(ms(&[5; 100]));
        assert_eq!(growth(&rising, 100), Some(2.5));
        assert_eq!(growth(&rising, 200), None, "blocks would overlap");
        assert_eq!(growth(&rising, 0), None);
    }

    #[test]
    fn table_shows_ratio_only_for_peers() {
        let s = summarize(&ms(&[1, 2, 3])).unwrap();
        let rows = [
            Row {
                group: "seq 3".into(),
                what: "shimnet REST attach".into(),
                summary: s,
                ratio: None,
            },
            Row {
                group: "seq 3".into(),
                what: "netavark setup".into(),
                summary: s,
                ratio: Some(12.34),
            },
        ];
        let t = table(&rows);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[1].contains("shimnet REST attach") && lines[1].trim_end().ends_with('-'));
        assert!(lines[2].contains("12.3x") && lines[2].contains("2.00 ms"));
    }
}
