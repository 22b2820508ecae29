//! Store tests on temporary directories: persistence, idempotence, IPAM errors, concurrency.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::sync::Arc;

use super::*;
use crate::types::{ContainerId, MacPrefix};

mod bench;
mod crash;
mod faults;
mod props;

pub(super) fn spec(name: &str, subnet: &str, gateway: &str) -> NetworkSpec {
    NetworkSpec {
        name: NetworkName::new(name).unwrap(),
        bridge: IfName::new(&format!("br-{name}")).unwrap(),
        subnet: subnet.parse().unwrap(),
        gateway: gateway.parse().unwrap(),
        range4: None,
        subnet6: None,
        gateway6: None,
        mtu: 1500,
        masquerade: true,
        icc: true,
        internal: false,
        hairpin: false,
        no_masquerade_to: vec![],
        allow_from: vec![],
        host_binding_ipv4: None,
        mac_prefix: MacPrefix::LOCAL,
        dns: false,
    }
}

pub(super) fn req(net: &str, cid: &str) -> AllocRequest {
    AllocRequest {
        kind: EndpointKind::Managed,
        key: EndpointKey {
            network: NetworkName::new(net).unwrap(),
            container_id: ContainerId::new(cid).unwrap(),
            ifname: IfName::new("eth0").unwrap(),
        },
        netns: PathBuf::from(format!("/run/netns/{cid}")),
        host_ifname: IfName::new(&format!("veth{}", &cid[..cid.len().min(8)])).unwrap(),
        ipv4: None,
        ipv6: None,
        mac: None,
        ports: vec![],
        names: vec![],
        bridges: None,
    }
}

fn name(s: &str) -> NetworkName {
    NetworkName::new(s).unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn store_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Store>();
}

#[test]
fn creates_missing_dir_and_persists_across_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("a/b/state");
    let mut s6 = spec("n6", "10.10.0.0/24", "10.10.0.1");
    s6.subnet6 = Some("fd10::/64".parse().unwrap());
    s6.gateway6 = Some("fd10::1".parse().unwrap());
    let rec = {
        let st = Store::open(&dir).unwrap();
        assert!(dir.join(DB_FILE).exists());
        st.insert_network(&spec("n1", "10.20.0.0/24", "10.20.0.1"))
            .unwrap();
        st.insert_network(&s6).unwrap();
        st.create_pool("p1", &Pool::new("10.30.0.0/24".parse().unwrap()))
            .unwrap();
        assert_eq!(
            st.allocate_address("p1", "gw", None).unwrap(),
            ip("10.30.0.1")
        );
        let (rec, fresh) = st.allocate_endpoint(&req("n6", "c1")).unwrap();
        assert!(fresh);
        rec
    };
    let st = Store::open(&dir).unwrap();
    let names: Vec<String> = st
        .networks()
        .unwrap()
        .iter()
        .map(|n| n.name.to_string())
        .collect();
    assert_eq!(names, ["n1", "n6"]);
    assert_eq!(st.network(&name("n6")).unwrap(), Some(s6));
    assert_eq!(st.endpoint(&rec.key).unwrap(), Some(rec.clone()));
    assert_eq!(rec.ipv4.to_string(), "10.10.0.2/24");
    assert_eq!(rec.ipv6.unwrap().to_string(), "fd10::2/64");
    assert_eq!(rec.gateway6, Some("fd10::1".parse().unwrap()));
    assert_eq!(rec.mac.to_string(), "0a:58:0a:0a:00:02");
    // The cursor survived: the next address continues after the last one.
    assert_eq!(
        st.allocate_endpoint(&req("n6", "c2"))
            .unwrap()
            .0
            .ipv4
            .to_string(),
        "10.10.0.3/24"
    );
    assert_eq!(
        st.pool_allocations("p1").unwrap(),
        vec![(ip("10.30.0.1"), "gw".to_string())]
    );
    assert_eq!(
        st.allocate_address("p1", "x", None).unwrap(),
        ip("10.30.0.2")
    );
}

#[test]
fn allocate_is_idempotent_per_key() {
    let tmp = tempfile::tempdir().unwrap();
    let st = Store::open(tmp.path()).unwrap();
    st.insert_network(&spec("n1", "10.1.0.0/24", "10.1.0.1"))
        .unwrap();
    let (a, fresh_a) = st.allocate_endpoint(&req("n1", "c1")).unwrap();
    let (b, fresh_b) = st.allocate_endpoint(&req("n1", "c1")).unwrap();
    assert!(fresh_a && !fresh_b);
    assert_eq!(a, b);
    assert_eq!(st.endpoints(None).unwrap().len(), 1);
    assert_eq!(st.network_allocations(&name("n1")).unwrap().len(), 1);
}

#[test]
fn unknown_network_and_missing_ipv6() {
    let tmp = tempfile::tempdir().unwrap();
    let st = Store::open(tmp.path()).unwrap();
    assert!(matches!(
        st.allocate_endpoint(&req("nope", "c1")),
        Err(StoreError::NoSuchNetwork(n)) if n.as_str() == "nope"
    ));
    st.insert_network(&spec("n1", "10.1.0.0/24", "10.1.0.1"))
        .unwrap();
    assert!(matches!(
        st.insert_network(&spec("n1", "10.2.0.0/24", "10.2.0.1")),
        Err(StoreError::NetworkExists(_))
    ));
    let mut r = req("n1", "c1");
    r.ipv6 = Some("fd00::5".parse().unwrap());
    assert!(matches!(
        st.allocate_endpoint(&r),
        Err(StoreError::NoIpv6(_))
    ));
    // The refused call left nothing behind.
    assert!(st.endpoints(None).unwrap().is_empty());
    assert!(st.network_allocations(&name("n1")).unwrap().is_empty());
}

#[test]
fn release_then_allocate_gives_a_different_address() {
    let tmp = tempfile::tempdir().unwrap();
    let st = Store::open(tmp.path()).unwrap();
    st.insert_network(&spec("n1", "10.1.0.0/24", "10.1.0.1"))
        .unwrap();
    let (a, _) = st.allocate_endpoint(&req("n1", "c1")).unwrap();
    let released = st.release_endpoint(&a.key).unwrap();
    assert_eq!(released, Some(a.clone()));
    assert_eq!(st.release_endpoint(&a.key).unwrap(), None);
    assert!(st.network_allocations(&name("n1")).unwrap().is_empty());
    let (b, _) = st.allocate_endpoint(&req("n1", "c1")).unwrap();
    assert_ne!(a.ipv4, b.ipv4);
    assert_eq!(b.ipv4.to_string(), "10.1.0.3/24");
}

#[test]
fn static_requests_and_their_conflicts() {
    let tmp = tempfile::tempdir().unwrap();
    let st = Store::open(tmp.path()).unwrap();
    let mut s = spec("n1", "10.1.0.0/24", "10.1.0.1");
    s.subnet6 = Some("fd01::/64".parse().unwrap());
    s.gateway6 = Some("fd01::1".parse().unwrap());
    s.mac_prefix = MacPrefix([2, 0x42]);
    st.insert_network(&s).unwrap();

    let mut r = req("n1", "c1");
    r.ipv4 = Some(Ipv4Addr::new(10, 1, 0, 50));
    r.ipv6 = Some("fd01::50".parse().unwrap());
    let (a, _) = st.allocate_endpoint(&r).unwrap();
    assert_eq!(a.ipv4.to_string(), "10.1.0.50/24");
    assert_eq!(a.ipv6.unwrap().to_string(), "fd01::50/64");
    assert_eq!(a.mac.to_string(), "02:42:0a:01:00:32");

    let ipam_err = |r: &AllocRequest| match st.allocate_endpoint(r) {
        Err(StoreError::Ipam { network, source }) => {
            assert_eq!(network.as_str(), "n1");
            source
        }
        other => panic!("expected IPAM error, got {other:?}"),
    };
    let mut r2 = req("n1", "c2");
    r2.ipv4 = Some(Ipv4Addr::new(10, 1, 0, 50));
    assert_eq!(ipam_err(&r2), IpamError::InUse(ip("10.1.0.50")));
    r2.ipv4 = Some(Ipv4Addr::new(10, 1, 0, 1));
    assert_eq!(ipam_err(&r2), IpamError::Reserved(ip("10.1.0.1")));
    r2.ipv4 = Some(Ipv4Addr::new(10, 1, 0, 255));
    assert_eq!(ipam_err(&r2), IpamError::Reserved(ip("10.1.0.255")));
    r2.ipv4 = Some(Ipv4Addr::new(10, 9, 0, 5));
    assert!(matches!(ipam_err(&r2), IpamError::OutOfPool { .. }));
    // IPv4 fine but IPv6 taken: the whole call fails and the IPv4 row is rolled back.
    r2.ipv4 = Some(Ipv4Addr::new(10, 1, 0, 60));
    r2.ipv6 = Some("fd01::50".parse().unwrap());
    assert_eq!(ipam_err(&r2), IpamError::InUse(ip("fd01::50")));
    r2.ipv6 = Some("fd01::1".parse().unwrap());
    assert_eq!(ipam_err(&r2), IpamError::Reserved(ip("fd01::1")));
    assert_eq!(st.network_allocations(&name("n1")).unwrap().len(), 2);
    assert_eq!(st.endpoints(None).unwrap().len(), 1);

    // A requested MAC is kept; dynamic addresses avoid the static ones.
    let mut r3 = req("n1", "c3");
    r3.mac = Some("02:00:00:00:00:07".parse().unwrap());
    let (c, _) = st.allocate_endpoint(&r3).unwrap();
    assert_eq!(c.mac.to_string(), "02:00:00:00:00:07");
    assert_eq!(c.ipv4.to_string(), "10.1.0.2/24");
    assert_eq!(c.ipv6.unwrap().to_string(), "fd01::2/64");
}

#[test]
fn exhaustion_is_reported_and_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let st = Store::open(tmp.path()).unwrap();
    st.insert_network(&spec("tiny", "10.7.0.0/29", "10.7.0.1"))
        .unwrap();
    let mut got = BTreeSet::new();
    for i in 0..5 {
        let (r, _) = st
            .allocate_endpoint(&req("tiny", &format!("c{i}")))
            .unwrap();
        assert!(got.insert(r.ipv4.ip()));
    }
    match st.allocate_endpoint(&req("tiny", "c9")) {
        Err(StoreError::Ipam {
            source: IpamError::Exhausted(_),
            ..
        }) => {}
        other => panic!("expected exhaustion, got {other:?}"),
    }
    assert_eq!(st.endpoints(Some(&name("tiny"))).unwrap().len(), 5);
}

#[test]
fn a_full_network_refuses_the_next_endpoint_and_records_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let st = Store::open(tmp.path()).unwrap();
    st.insert_network(&spec("full", "10.7.0.0/24", "10.7.0.1"))
        .unwrap();
    // A neighbour whose name sorts right after: its endpoints never count against "full".
    st.insert_network(&spec("full0", "10.8.0.0/24", "10.8.0.1"))
        .unwrap();
    // Bridges of 3 ports, no extensions: 3 endpoints at most.
    let layout = BridgeLayout {
        ports: 3,
        extensions: 0,
    };
    let capped = |net: &str, cid: &str| AllocRequest {
        bridges: Some(layout),
        ..req(net, cid)
    };
    for i in 0..3 {
        st.allocate_endpoint(&capped("full", &format!("c{i}")))
            .unwrap();
        st.allocate_endpoint(&capped("full0", &format!("c{i}")))
            .unwrap();
    }
    match st.allocate_endpoint(&capped("full", "c9")) {
        Err(StoreError::NetworkFull { network, capacity }) => {
            assert_eq!((network.as_str(), capacity), ("full", 3));
        }
        other => panic!("expected a full network, got {other:?}"),
    }
    assert_eq!(st.endpoints(Some(&name("full"))).unwrap().len(), 3);
    // A retry of a recorded key still gets its record; a freed place is taken again.
    let (_, created) = st.allocate_endpoint(&capped("full", "c1")).unwrap();
    assert!(!created);
    st.release_endpoint(&capped("full", "c1").key).unwrap();
    let (r, created) = st.allocate_endpoint(&capped("full", "c9")).unwrap();
    assert!(created);
    assert_eq!(r.key.network.as_str(), "full");
    // A count left too high refuses nothing: "full" is checked against the records.
    st.release_endpoint(&capped("full", "c9").key).unwrap();
    st.write(|txn| {
        txn.open_table(BRIDGE_PORTS)?.insert(("full", 0), 99)?;
        Ok(())
    })
    .unwrap();
    st.allocate_endpoint(&capped("full", "c9")).unwrap();
    assert!(matches!(
        st.allocate_endpoint(&capped("full", "c10")),
        Err(StoreError::NetworkFull { .. })
    ));
    // The count follows releases and goes with the network.
    let count = |st: &Store| {
        st.write(|txn| {
            Ok(txn
                .open_table(BRIDGE_PORTS)?
                .get(("full", 0))?
                .map(|g| g.value()))
        })
        .unwrap()
    };
    assert_eq!(count(&st), Some(3));
    for i in [0, 2, 9] {
        st.release_endpoint(&capped("full", &format!("c{i}")).key)
            .unwrap();
    }
    assert_eq!(count(&st), Some(0));
    st.remove_network(&name("full")).unwrap();
    assert_eq!(count(&st), None);
    // A subnet with no more addresses than the main bridge's ports is never counted.
    st.insert_network(&spec("small", "10.9.0.0/30", "10.9.0.1"))
        .unwrap();
    let small = AllocRequest {
        bridges: Some(BridgeLayout {
            ports: 4,
            extensions: 0,
        }),
        ..req("small", "s0")
    };
    st.allocate_endpoint(&small).unwrap();
}

#[test]
fn endpoints_fill_the_main_bridge_then_each_extension_in_turn() {
    let tmp = tempfile::tempdir().unwrap();
    let st = Store::open(tmp.path()).unwrap();
    st.insert_network(&spec("x", "10.7.0.0/24", "10.7.0.1"))
        .unwrap();
    // Main: 4 ports less 2 trunk ends and the anchor = 1; each extension: 3.
    let layout = BridgeLayout {
        ports: 4,
        extensions: 2,
    };
    let at = |cid: &str| AllocRequest {
        bridges: Some(layout),
        ..req("x", cid)
    };
    let placed: Vec<Option<u8>> = (0..7)
        .map(|i| {
            st.allocate_endpoint(&at(&format!("c{i}")))
                .unwrap()
                .0
                .extension
        })
        .collect();
    let want = [None, Some(1), Some(1), Some(1), Some(2), Some(2), Some(2)];
    assert_eq!(placed, want);
    match st.allocate_endpoint(&at("c8")) {
        Err(StoreError::NetworkFull { capacity, .. }) => assert_eq!(capacity, 7),
        other => panic!("expected a full network, got {other:?}"),
    }
    // A freed place on extension 1 is taken by the next endpoint; the record says so.
    st.release_endpoint(&at("c3").key).unwrap();
    let (r, _) = st.allocate_endpoint(&at("c9")).unwrap();
    assert_eq!(r.extension, Some(1));
    assert_eq!(st.endpoint(&r.key).unwrap().unwrap().extension, Some(1));
    // Counts lost (a store written before extension bridges): counted from the records.
    st.write(|txn| {
        drop_bridge_ports(txn, &name("x"))?;
        Ok(())
    })
    .unwrap();
    st.release_endpoint(&at("c6").key).unwrap();
    let (r, _) = st.allocate_endpoint(&at("c10")).unwrap();
    assert_eq!(r.extension, Some(2));
    // Each attach rewrites only its bridge's row; the rows still say what the records say.
    st.release_endpoint(&at("c0").key).unwrap();
    st.allocate_endpoint(&at("c11")).unwrap();
    let rows = st
        .write(|txn| bridge_ports(txn, &name("x"), layout))
        .unwrap()
        .expect("counted network");
    let eps = st.endpoints(Some(&name("x"))).unwrap();
    let mut from_records = vec![0u64; 3];
    for e in &eps {
        from_records[usize::from(e.extension.unwrap_or(0))] += 1;
    }
    assert_eq!((rows, eps.len()), (from_records, 7));
    // Concurrent attaches never overfill a bridge.
    let st = Arc::new(st);
    st.insert_network(&spec("y", "10.9.0.0/24", "10.9.0.1"))
        .unwrap();
    let threads: Vec<_> = (0..12)
        .map(|i| {
            let st = st.clone();
            std::thread::spawn(move || {
                st.allocate_endpoint(&AllocRequest {
                    bridges: Some(layout),
                    ..req("y", &format!("t{i}"))
                })
                .map(|(r, _)| r.extension)
            })
        })
        .collect();
    let mut per = [0; 3];
    let mut full = 0;
    for t in threads {
        match t.join().unwrap() {
            Ok(e) => per[usize::from(e.unwrap_or(0))] += 1,
            Err(StoreError::NetworkFull { .. }) => full += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!((per, full), ([1, 3, 3], 5));
}

#[test]
fn the_old_endpoint_count_table_is_dropped_when_the_store_opens() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let st = Store::open(tmp.path()).unwrap();
        st.write(|txn| {
            txn.open_table(ENDPOINT_COUNTS)?.insert("n", 7)?;
            Ok(())
        })
        .unwrap();
    }
    let db = redb::Database::open(tmp.path().join(DB_FILE)).unwrap();
    assert!(db.begin_read().unwrap().open_table(ENDPOINT_COUNTS).is_ok());
    drop(db);
    let st = Store::open(tmp.path()).unwrap();
    drop(st);
    let db = redb::Database::open(tmp.path().join(DB_FILE)).unwrap();
    assert!(matches!(
        db.begin_read().unwrap().open_table(ENDPOINT_COUNTS),
        Err(redb::TableError::TableDoesNotExist(_))
    ));
}

#[test]
fn records_without_an_extension_load_and_are_written_without_one() {
    let net = spec("n", "10.1.0.0/24", "10.1.0.1");
    let tmp = tempfile::tempdir().unwrap();
    let st = Store::open(tmp.path()).unwrap();
    st.insert_network(&net).unwrap();
    let (rec, _) = st.allocate_endpoint(&req("n", "c")).unwrap();
    let json = serde_json::to_string(&rec).unwrap();
    assert!(!json.contains("extension"), "{json}");
    let mut on_ext = rec.clone();
    on_ext.extension = Some(3);
    let json = serde_json::to_string(&on_ext).unwrap();
    let back: EndpointRecord = serde_json::from_str(&json).unwrap();
    assert_eq!(back.extension, Some(3));
}

#[test]
fn remove_network_refuses_while_in_use_and_drops_cursor() {
    let tmp = tempfile::tempdir().unwrap();
    let st = Store::open(tmp.path()).unwrap();
    st.insert_network(&spec("n1", "10.1.0.0/24", "10.1.0.1"))
        .unwrap();
    // A network whose name extends n1's must not count as n1's endpoints.
    st.insert_network(&spec("n1x", "10.2.0.0/24", "10.2.0.1"))
        .unwrap();
    st.allocate_endpoint(&req("n1x", "c1")).unwrap();
    let (a, _) = st.allocate_endpoint(&req("n1", "c1")).unwrap();
    st.allocate_endpoint(&req("n1", "c2")).unwrap();
    assert_eq!(st.endpoints(Some(&name("n1"))).unwrap().len(), 2);
    assert_eq!(st.endpoints(Some(&name("n1x"))).unwrap().len(), 1);
    assert_eq!(st.endpoints(None).unwrap().len(), 3);
    assert!(matches!(
        st.remove_network(&name("n1")),
        Err(StoreError::NetworkInUse(_, 2))
    ));
    st.release_endpoint(&a.key).unwrap();
    st.release_endpoint(&req("n1", "c2").key).unwrap();
    assert!(st.remove_network(&name("n1")).unwrap().is_some());
    assert_eq!(st.remove_network(&name("n1")).unwrap(), None);
    assert!(st.network(&name("n1")).unwrap().is_none());
    // Re-created, the network starts from the beginning again (cursor dropped).
    st.insert_network(&spec("n1", "10.1.0.0/24", "10.1.0.1"))
        .unwrap();
    let (b, _) = st.allocate_endpoint(&req("n1", "c3")).unwrap();
    assert_eq!(b.ipv4.to_string(), "10.1.0.2/24");
    assert_eq!(st.endpoints(Some(&name("n1x"))).unwrap().len(), 1);
}

#[test]
fn update_endpoint_rules() {
    let tmp = tempfile::tempdir().unwrap();
    let st = Store::open(tmp.path()).unwrap();
    st.insert_network(&spec("n1", "10.1.0.0/24", "10.1.0.1"))
        .unwrap();
    let (mut a, _) = st.allocate_endpoint(&req("n1", "c1")).unwrap();
    a.ports = vec![crate::types::PortMapping {
        protocol: crate::types::Protocol::Tcp,
        host_ip: None,
        host_port: 8080,
        container_port: 80,
    }];
    st.update_endpoint(&a).unwrap();
    assert_eq!(st.endpoint(&a.key).unwrap(), Some(a.clone()));
    let mut moved = a.clone();
    moved.ipv4 = "10.1.0.99/24".parse().unwrap();
    assert!(matches!(
        st.update_endpoint(&moved),
        Err(StoreError::EndpointAddressChanged(_))
    ));
    let mut ghost = a.clone();
    ghost.key = req("n1", "ghost").key;
    assert!(matches!(
        st.update_endpoint(&ghost),
        Err(StoreError::NoSuchEndpoint(_))
    ));
}

#[test]
fn generic_pools() {
    let tmp = tempfile::tempdir().unwrap();
    let st = Store::open(tmp.path()).unwrap();
    let p = Pool::new("10.40.0.0/24".parse().unwrap())
        .with_range(ip("10.40.0.10"), ip("10.40.0.11"))
        .with_reserved(ip("10.40.0.1"));
    st.create_pool("local/10.40.0.0/24", &p).unwrap();
    assert!(matches!(
        st.create_pool("local/10.40.0.0/24", &p),
        Err(StoreError::PoolExists(_))
    ));
    assert!(matches!(
        st.create_pool("bad\0id", &p),
        Err(StoreError::InvalidPoolId(_))
    ));
    let id = "local/10.40.0.0/24";
    assert_eq!(st.pool(id).unwrap(), Some(p.clone()));
    // Gateway requested statically (reserved addresses are refused, so a gateway is not put in
    // `reserved` by callers that want to allocate it).
    assert!(matches!(
        st.allocate_address(id, "gw", Some(ip("10.40.0.1"))),
        Err(StoreError::PoolIpam {
            source: IpamError::Reserved(_),
            ..
        })
    ));
    assert_eq!(
        st.allocate_address(id, "a", Some(ip("10.40.0.2"))).unwrap(),
        ip("10.40.0.2")
    );
    assert_eq!(
        st.allocate_address(id, "b", None).unwrap(),
        ip("10.40.0.10")
    );
    assert_eq!(
        st.allocate_address(id, "c", None).unwrap(),
        ip("10.40.0.11")
    );
    assert!(matches!(
        st.allocate_address(id, "d", None),
        Err(StoreError::PoolIpam {
            source: IpamError::Exhausted(_),
            ..
        })
    ));
    assert!(st.release_address(id, ip("10.40.0.10")).unwrap());
    assert!(!st.release_address(id, ip("10.40.0.10")).unwrap());
    assert_eq!(
        st.allocate_address(id, "d", None).unwrap(),
        ip("10.40.0.10")
    );
    assert_eq!(
        st.pool_allocations(id).unwrap(),
        vec![
            (ip("10.40.0.2"), "a".to_string()),
            (ip("10.40.0.10"), "d".to_string()),
            (ip("10.40.0.11"), "c".to_string()),
        ]
    );
    // A second pool, IPv6, is independent.
    let p6 = Pool::new("fd40::/64".parse().unwrap());
    st.create_pool("v6", &p6).unwrap();
    assert_eq!(st.allocate_address("v6", "x", None).unwrap(), ip("fd40::1"));
    assert_eq!(st.pools().unwrap().len(), 2);
    // Removing drops the allocations; re-creating starts empty.
    assert_eq!(st.remove_pool(id).unwrap(), Some(p.clone()));
    assert_eq!(st.remove_pool(id).unwrap(), None);
    assert!(matches!(
        st.allocate_address(id, "x", None),
        Err(StoreError::NoSuchPool(_))
    ));
    assert!(matches!(
        st.release_address(id, ip("10.40.0.2")),
        Err(StoreError::NoSuchPool(_))
    ));
    st.create_pool(id, &p).unwrap();
    assert!(st.pool_allocations(id).unwrap().is_empty());
    assert_eq!(
        st.allocate_address(id, "e", None).unwrap(),
        ip("10.40.0.10")
    );
    assert_eq!(st.pool_allocations("v6").unwrap().len(), 1);
}

#[test]
fn hundred_threads_get_distinct_addresses() {
    let tmp = tempfile::tempdir().unwrap();
    let st = Arc::new(Store::open(tmp.path()).unwrap());
    let mut s = spec("n1", "10.60.0.0/16", "10.60.0.1");
    s.subnet6 = Some("fd60::/64".parse().unwrap());
    st.insert_network(&s).unwrap();
    st.create_pool("gp", &Pool::new("10.61.0.0/24".parse().unwrap()))
        .unwrap();
    let handles: Vec<_> = (0..100)
        .map(|i| {
            let st = Arc::clone(&st);
            std::thread::spawn(move || {
                let (r, fresh) = st.allocate_endpoint(&req("n1", &format!("c{i}"))).unwrap();
                assert!(fresh);
                let g = st.allocate_address("gp", &format!("o{i}"), None).unwrap();
                (r.ipv4.ip(), r.ipv6.unwrap().ip(), g)
            })
        })
        .collect();
    let got: Vec<(Ipv4Addr, Ipv6Addr, IpAddr)> =
        handles.into_iter().map(|h| h.join().unwrap()).collect();
    let v4: BTreeSet<_> = got.iter().map(|g| g.0).collect();
    let v6: BTreeSet<_> = got.iter().map(|g| g.1).collect();
    let gp: BTreeSet<_> = got.iter().map(|g| g.2).collect();
    assert_eq!((v4.len(), v6.len(), gp.len()), (100, 100, 100));
    assert_eq!(st.network_allocations(&name("n1")).unwrap().len(), 200);
    assert_eq!(st.endpoints(Some(&name("n1"))).unwrap().len(), 100);
}

#[test]
fn database_already_open_is_an_error_not_a_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let _st = Store::open(tmp.path()).unwrap();
    let e = Store::open(tmp.path()).unwrap_err();
    assert!(matches!(e, StoreError::Db { .. }), "{e}");
    assert!(e.to_string().contains(DB_FILE), "{e}");
}
