//! `shimnetctl peers` and `shimnetctl cluster` as text (pure: a reply and the current time in,
//! lines out).

use shimnet_wire::{ClusterReply, PeersReply, SourceInfo};

/// `12s ago (unix 1795745860)`, or `-`.
pub fn ago(t: Option<u64>, now: u64) -> String {
    match t {
        Some(t) => format!("{}s ago (unix {t})", now.saturating_sub(t)),
        None => "-".into(),
    }
}

/// `in 41s`, `expired 3s ago`, or `-`.
pub fn until(t: Option<u64>, now: u64) -> String {
    match t {
        Some(t) if t >= now => format!("in {}s", t - now),
        Some(t) => format!("expired {}s ago", now - t),
        None => "-".into(),
    }
}

/// The membership line: where the peers come from and whether it answers, since when.
pub fn source_line(s: &SourceInfo, now: u64) -> String {
    let state = if s.reachable {
        "reachable"
    } else {
        "NOT reachable"
    };
    let since = match s.since {
        Some(t) => format!(" since {}", ago(Some(t), now)),
        None => String::new(),
    };
    let via = match (&s.endpoint, s.reachable) {
        (Some(e), true) => format!(" via {e}"),
        _ => String::new(),
    };
    let mut line = format!("membership: {} {} — {state}{via}{since}", s.kind, s.detail);
    if s.kind == "etcd" {
        line.push_str(&format!(
            "; {} session(s), {} watch event(s), revision {}",
            s.sessions,
            s.watch_events,
            s.revision.map_or("-".into(), |r| r.to_string())
        ));
        if let Some(id) = s.lease_id {
            let state = match s.lease_expires {
                Some(t) if t >= now => format!("expires in {}s", t - now),
                Some(t) => format!("not renewed for {}s past its expiry", now - t),
                None => "not renewed yet".into(),
            };
            line.push_str(&format!(
                "; own lease {id:x} (TTL {}s) {state}",
                s.lease_ttl.unwrap_or(0)
            ));
        }
    }
    if let Some(e) = &s.error {
        line.push_str(&format!("\n  error: {e}"));
    }
    for k in &s.skipped {
        line.push_str(&format!("\n  skipped: {k}"));
    }
    line
}

/// Fixed-width columns.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> Vec<String> {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let s: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        s.join("  ").trim_end().to_string()
    };
    let mut out = vec![line(headers.iter().map(|h| h.to_string()).collect())];
    out.extend(rows.iter().map(|r| line(r.clone())));
    out
}

/// `shimnetctl peers`.
pub fn render_peers(v: &PeersReply, now: u64) -> Vec<String> {
    let last = match v.last_reconcile {
        Some(t) => ago(Some(t), now),
        None => "never".into(),
    };
    let or_dash = |o: &Option<String>| o.clone().unwrap_or_else(|| "-".into());
    let mut out = vec![format!(
        "node {} ({}, pods {}), IPIP path: {}, last reconcile: {last}",
        v.node,
        or_dash(&v.address),
        or_dash(&v.pod_cidr),
        or_dash(&v.ipip)
    )];
    if let Some(s) = &v.source {
        out.extend(source_line(s, now).lines().map(str::to_string));
    }
    let etcd = v.source.as_ref().is_some_and(|s| s.kind == "etcd");
    let rows: Vec<Vec<String>> = v
        .peers
        .iter()
        .map(|p| {
            let mut r = vec![
                p.name.clone(),
                p.address.clone(),
                p.pod_cidr.clone(),
                p.mode.clone(),
                if p.reachable { "yes" } else { "NO" }.into(),
                match p.probed_at {
                    Some(t) => format!("{}s ago", now.saturating_sub(t)),
                    None => "never".into(),
                },
            ];
            if etcd {
                r.push(until(p.lease_expires, now));
            }
            r.push(last.clone());
            r
        })
        .collect();
    let mut headers = vec!["PEER", "ADDRESS", "POD-CIDR", "MODE", "REACHABLE", "PROBED"];
    if etcd {
        headers.push("LEASE-EXPIRES");
    }
    headers.push("LAST-RECONCILE");
    out.extend(table(&headers, &rows));
    if let Some(u) = &v.userspace_ipip {
        out.push(format!(
            "userspace IPIP: {} packets sent ({} TUN reads), {} received ({} joined by the underlay, {} TUN writes), {} dropped ({} from non-peers)",
            u.tx_packets, u.tun_reads, u.rx_packets, u.rx_joined, u.tun_writes, u.dropped, u.non_peer
        ));
    }
    if let Some(t) = &v.tc_ipip {
        out.push(format!(
            "IPIP in tc programs: {} packets encapsulated, {} decapsulated",
            t.encapsulated, t.decapsulated
        ));
    }
    if let Some(t) = &v.tc_forwarding {
        out.push(format!(
            "pod traffic in tc programs: {} packets sent to peers' pods, {} received",
            t.sent, t.received
        ));
    }
    let judge = |j: &Option<String>| match j {
        Some(j) => format!(" ({j})"),
        None => " (not in use)".into(),
    };
    out.push(format!(
        "encapsulated packets from non-peers dropped: vxlan {}{}, ipip {}{}",
        v.encap_dropped.vxlan,
        judge(&v.encap_filter.vxlan),
        v.encap_dropped.ipip,
        judge(&v.encap_filter.ipip)
    ));
    for e in &v.errors {
        out.push(format!("error: {e}"));
    }
    out
}

/// `shimnetctl cluster`.
pub fn render_cluster(c: &ClusterReply, now: u64) -> Vec<String> {
    let state = if c.reachable {
        "reachable"
    } else {
        "NOT reachable"
    };
    let mut out = vec![format!(
        "cluster {} in /{} subnets, etcd {} (prefix {}) — {state} since {}; {} reservation(s), {} live",
        c.cluster_cidr,
        c.subnet_len,
        c.endpoints,
        c.prefix,
        ago(c.since, now),
        c.reservations.len(),
        c.reservations.iter().filter(|r| r.live).count()
    )];
    let rows: Vec<Vec<String>> = c
        .reservations
        .iter()
        .map(|r| {
            vec![
                r.subnet.clone(),
                r.node.clone(),
                if r.live { "live" } else { "gone" }.into(),
                r.address.clone().unwrap_or_else(|| "-".into()),
                until(r.lease_expires, now),
            ]
        })
        .collect();
    out.extend(table(
        &["SUBNET", "NODE", "STATE", "ADDRESS", "LEASE-EXPIRES"],
        &rows,
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use shimnet_wire::{PeerInfo, ReservationInfo};

    fn source() -> SourceInfo {
        SourceInfo {
            kind: "etcd".into(),
            detail: "http://198.19.9.1:2379".into(),
            endpoint: Some("http://198.19.9.1:2379".into()),
            reachable: false,
            since: Some(990),
            last_update: Some(980),
            error: Some("no leader".into()),
            skipped: vec!["/shimnet/nodes/x: not a node record".into()],
            watch_events: 12,
            sessions: 2,
            revision: Some(40),
            lease_id: Some(0x694d_8a1b),
            lease_ttl: Some(60),
            lease_expires: Some(1030),
        }
    }

    #[test]
    fn peers_show_source_state_and_lease_expiry() {
        let v = PeersReply {
            node: "node-a".into(),
            address: Some("172.30.0.10".into()),
            pod_cidr: Some("10.244.1.0/24".into()),
            ipip: Some("userspace".into()),
            last_reconcile: Some(999),
            errors: vec![],
            peers: vec![PeerInfo {
                name: "node-b".into(),
                address: "172.30.0.11".into(),
                pod_cidr: "10.244.2.0/24".into(),
                mode: "host-gw".into(),
                reachable: true,
                probed_at: Some(997),
                lease_expires: Some(1041),
            }],
            userspace_ipip: None,
            tc_ipip: None,
            tc_forwarding: None,
            encap_filter: Default::default(),
            encap_dropped: Default::default(),
            source: Some(source()),
        };
        let text = render_peers(&v, 1000).join("\n");
        assert!(
            text.contains(
                "membership: etcd http://198.19.9.1:2379 — NOT reachable since 10s ago (unix 990)"
            ),
            "{text}"
        );
        assert!(
            text.contains("own lease 694d8a1b (TTL 60s) expires in 30s"),
            "{text}"
        );
        assert!(text.contains("  error: no leader"), "{text}");
        assert!(
            text.contains("  skipped: /shimnet/nodes/x: not a node record"),
            "{text}"
        );
        assert!(text.contains("LEASE-EXPIRES"), "{text}");
        assert!(
            text.lines()
                .any(|l| l.starts_with("node-b") && l.contains("yes") && l.contains("3s ago")),
            "the table shows when the peer was last probed: {text}"
        );
        let row = text.lines().find(|l| l.starts_with("node-b")).unwrap();
        assert!(
            row.contains("10.244.2.0/24") && row.contains("host-gw") && row.contains("in 41s"),
            "{row}"
        );
    }

    #[test]
    fn file_source_has_no_lease_column() {
        let v = PeersReply {
            node: "a".into(),
            address: None,
            pod_cidr: None,
            ipip: None,
            last_reconcile: None,
            errors: vec![],
            peers: vec![],
            userspace_ipip: None,
            tc_ipip: None,
            tc_forwarding: None,
            encap_filter: Default::default(),
            encap_dropped: Default::default(),
            source: Some(SourceInfo {
                kind: "file".into(),
                detail: "/etc/shimnet/peers.toml".into(),
                reachable: true,
                ..source()
            }),
        };
        let text = render_peers(&v, 1000).join("\n");
        assert!(
            text.contains("membership: file /etc/shimnet/peers.toml — reachable"),
            "{text}"
        );
        assert!(
            !text.contains("LEASE-EXPIRES") && !text.contains("own lease"),
            "{text}"
        );
    }

    #[test]
    fn cluster_lists_reservations() {
        let c = ClusterReply {
            source: "etcd".into(),
            endpoints: "http://e:2379".into(),
            reachable: true,
            since: Some(900),
            prefix: "/shimnet".into(),
            cluster_cidr: "10.244.0.0/16".into(),
            subnet_len: 24,
            revision: Some(7),
            reservations: vec![
                ReservationInfo {
                    subnet: "10.244.0.0/24".into(),
                    node: "node-a".into(),
                    live: true,
                    address: Some("172.30.0.10".into()),
                    lease_expires: Some(1050),
                },
                ReservationInfo {
                    subnet: "10.244.1.0/24".into(),
                    node: "node-b".into(),
                    live: false,
                    address: None,
                    lease_expires: None,
                },
            ],
        };
        let lines = render_cluster(&c, 1000);
        assert!(
            lines[0].contains("2 reservation(s), 1 live"),
            "{}",
            lines[0]
        );
        assert!(
            lines[2].starts_with("10.244.0.0/24  node-a  live   172.30.0.10  in 50s"),
            "{}",
            lines[2]
        );
        assert!(lines[3].contains("node-b  gone"), "{}", lines[3]);
    }
}
