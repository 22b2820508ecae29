//! Latency figures for allocate/release (including fsync) at 100 and 1,000 endpoints.
//! Run: `cargo test -p runtime-net store::tests::bench -- --ignored --nocapture` (add `--release`
//! for optimised figures). The temporary directory is on the same filesystem as `/tmp`.

use std::time::{Duration, Instant};

use super::{name, req, spec};
use crate::store::Store;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

#[test]
#[ignore = "benchmark: prints latency figures"]
fn allocate_release_latency() {
    for existing in [100usize, 1000] {
        for dual in [false, true] {
            let tmp = tempfile::tempdir().unwrap();
            let st = Store::open(tmp.path()).unwrap();
            let mut s = spec("bench", "10.200.0.0/16", "10.200.0.1");
            if dual {
                s.subnet6 = Some("fd20::/64".parse().unwrap());
                s.gateway6 = Some("fd20::1".parse().unwrap());
            }
            st.insert_network(&s).unwrap();
            for i in 0..existing {
                st.allocate_endpoint(&req("bench", &format!("pre{i}")))
                    .unwrap();
            }
            let rounds = 300;
            let (mut alloc, mut rel) = (Vec::new(), Vec::new());
            for i in 0..rounds {
                let r = req("bench", &format!("b{i}"));
                let t = Instant::now();
                st.allocate_endpoint(&r).unwrap();
                alloc.push(t.elapsed());
                let t = Instant::now();
                st.release_endpoint(&r.key).unwrap();
                rel.push(t.elapsed());
            }
            let t = Instant::now();
            let n = st.endpoints(Some(&name("bench"))).unwrap().len();
            let list = t.elapsed();
            assert_eq!(n, existing);
            alloc.sort();
            rel.sort();
            println!(
                "{existing:>5} endpoints {}: allocate median {} p90 {} | release median {} p90 {} | list {}",
                if dual { "v4+v6" } else { "v4   " },
                ms(percentile(&alloc, 0.5)),
                ms(percentile(&alloc, 0.9)),
                ms(percentile(&rel, 0.5)),
                ms(percentile(&rel, 0.9)),
                ms(list),
            );
        }
    }
}
