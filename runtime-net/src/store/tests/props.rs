//! Property test: random allocate/release sequences (dynamic and static, retries included) on a
//! small network keep the store consistent with a model: one record per key, a retry returns
//! the same address, no address held twice, never the gateway, network or broadcast, and the
//! allocation table lists exactly the recorded addresses.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

#[derive(Debug, Clone)]
enum Op {
    /// Allocate for container `k`, optionally asking for host `.n`.
    Alloc(usize, Option<u8>),
    /// Release container `k`.
    Release(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..10usize, proptest::option::weighted(0.3, 0..8u8)).prop_map(|(k, s)| Op::Alloc(k, s)),
        2 => (0..10usize).prop_map(Op::Release),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn allocate_release_sequences_match_the_model(ops in proptest::collection::vec(op(), 1..60)) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        // /29: .0 network, .1 gateway, .7 broadcast, five hosts.
        s.insert_network(&spec("p", "10.9.0.0/29", "10.9.0.1")).unwrap();
        let mut model: BTreeMap<usize, Ipv4Addr> = BTreeMap::new();
        for op in ops {
            match op {
                Op::Alloc(k, want) => {
                    let mut r = req("p", &format!("c{k}"));
                    r.ipv4 = want.map(|n| Ipv4Addr::new(10, 9, 0, n));
                    match s.allocate_endpoint(&r) {
                        Ok((rec, created)) => {
                            let ip = rec.ipv4.ip();
                            match model.get(&k) {
                                Some(prev) => {
                                    prop_assert!(!created);
                                    prop_assert_eq!(*prev, ip, "a retry returns the first address");
                                }
                                None => {
                                    prop_assert!(created);
                                    if let Some(w) = r.ipv4 {
                                        prop_assert_eq!(w, ip);
                                    }
                                    prop_assert!(![0u8, 1, 7].contains(&ip.octets()[3]), "{} handed out", ip);
                                    prop_assert!(!model.values().any(|v| *v == ip), "{} held twice", ip);
                                    model.insert(k, ip);
                                }
                            }
                        }
                        Err(_) => {
                            // Refused: a fresh dynamic request only when the pool is full, a
                            // static one only when taken or structural.
                            prop_assert!(!model.contains_key(&k));
                            match r.ipv4 {
                                None => prop_assert_eq!(model.len(), 5),
                                Some(w) => prop_assert!(
                                    [0u8, 1, 7].contains(&w.octets()[3]) || model.values().any(|v| *v == w)
                                ),
                            }
                        }
                    }
                }
                Op::Release(k) => {
                    let key = req("p", &format!("c{k}")).key;
                    let released = s.release_endpoint(&key).unwrap().map(|r| r.ipv4.ip());
                    prop_assert_eq!(released, model.remove(&k));
                }
            }
            let mut table: Vec<IpAddr> = s
                .network_allocations(&NetworkName::new("p").unwrap())
                .unwrap()
                .into_iter()
                .map(|(ip, _)| ip)
                .collect();
            table.sort();
            let mut want: Vec<IpAddr> = model.values().map(|v| IpAddr::V4(*v)).collect();
            want.sort();
            prop_assert_eq!(table, want);
        }
    }
}
