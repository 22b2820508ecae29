//! The REST API (`/v1/...`): routing, body limits and one engine call per request, run under the
//! call time limit ([`crate::http::time_boxed`]) like every engine call of the Docker door.

pub mod convert;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Body;
use hyper::http::request::Parts;
use hyper::{Method, Request, Response, StatusCode};
use runtime_net::engine::Engine;
use runtime_net::NetworkName;
use serde::Serialize;

use crate::error::ApiError;
pub use crate::http::json_response;
use crate::http::{read_body, time_boxed};
use crate::metrics::{self, FrontDoor, Metrics};
use shimnet_wire::{
    DnsInfo, DnsListener, EndpointAttach, NameEntry, NamesReply, NetworkAttach, NetworkAttachReply,
    NetworkCreate,
};

/// Default time one request may wait for the engine before it is answered 503.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(20);

/// Version string reported by `/v1/status`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The REST API over one engine. Cheap to clone (shared parts only).
#[derive(Clone)]
pub struct RestApi {
    engine: Arc<Engine>,
    metrics: Arc<Metrics>,
    peers: Option<runtime_net::peering::source::MembershipView>,
    call_timeout: Duration,
    dns: Option<Arc<shimnet_dns::Dns>>,
}

impl RestApi {
    /// A REST API serving `engine`, with its own metrics registry.
    pub fn new(engine: Arc<Engine>) -> Self {
        Self::with_metrics(engine, Arc::new(Metrics::new()))
    }

    /// A REST API serving `engine` that counts into (and serves `/metrics` from) `metrics`.
    pub fn with_metrics(engine: Arc<Engine>, metrics: Arc<Metrics>) -> Self {
        RestApi {
            engine,
            metrics,
            peers: None,
            call_timeout: DEFAULT_CALL_TIMEOUT,
            dns: None,
        }
    }

    /// Serves `GET /v1/networks/{name}/names` from this name service and announces it in attach
    /// replies (`dns`).
    pub fn with_dns(mut self, dns: Arc<shimnet_dns::Dns>) -> Self {
        self.dns = Some(dns);
        self
    }

    /// `rec` as JSON, with `dns` (what to put in resolv.conf) when its network serves names.
    fn endpoint_reply(&self, rec: &runtime_net::EndpointRecord) -> serde_json::Value {
        let mut v = serde_json::to_value(rec).expect("serialisable record");
        let announce = self
            .dns
            .as_ref()
            .and_then(|d| d.announce(rec.key.network.as_str()));
        if let (Some(a), Some(obj)) = (announce, v.as_object_mut()) {
            let info = DnsInfo {
                nameservers: a.nameservers.iter().map(|ip| ip.to_string()).collect(),
                search: a.search,
            };
            obj.insert(
                "dns".into(),
                serde_json::to_value(info).expect("serialisable"),
            );
        }
        v
    }

    /// The names view of a network.
    fn names(&self, spec: &runtime_net::NetworkSpec) -> NamesReply {
        let view = self.dns.as_ref().and_then(|d| d.view(spec.name.as_str()));
        let Some(v) = view else {
            return NamesReply {
                network: spec.name.to_string(),
                dns: false,
                internal: spec.internal,
                ..NamesReply::default()
            };
        };
        NamesReply {
            network: v.network,
            dns: true,
            domain: Some(v.domain),
            internal: v.internal,
            listeners: v
                .listeners
                .into_iter()
                .map(|l| DnsListener {
                    address: l.address.to_string(),
                    protocol: l.protocol.to_string(),
                    serving: l.serving,
                    error: l.error,
                })
                .collect(),
            upstreams: v.upstreams.iter().map(|u| u.to_string()).collect(),
            serial: v.serial,
            names: v
                .names
                .into_iter()
                .map(|n| NameEntry {
                    name: n.name,
                    ipv4: n.ipv4.iter().map(|ip| ip.to_string()).collect(),
                    ipv6: n.ipv6.iter().map(|ip| ip.to_string()).collect(),
                })
                .collect(),
        }
    }

    /// Answers 503 when the engine has not answered a request within `limit` (the work still
    /// finishes in the background).
    pub fn with_call_timeout(mut self, limit: Duration) -> Self {
        self.call_timeout = limit;
        self
    }

    /// Also serves `GET /v1/peers` and `GET /v1/cluster` from this peering and membership
    /// status.
    pub fn with_peers(mut self, view: runtime_net::peering::source::MembershipView) -> Self {
        self.peers = Some(view);
        self
    }

    fn peering(&self) -> Result<&runtime_net::peering::source::MembershipView, ApiError> {
        self.peers.as_ref().ok_or_else(|| {
            ApiError::not_found("peering is not configured ([node] and [peering] in shimnetd.toml)")
        })
    }

    /// Answers one request; never fails (errors become JSON error replies).
    pub async fn respond<B>(&self, req: Request<B>) -> Response<Full<Bytes>>
    where
        B: Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        if path == "/metrics" {
            return self.scrape(&method).await;
        }
        let door = FrontDoor::of_user_agent(
            req.headers()
                .get(hyper::header::USER_AGENT)
                .and_then(|v| v.to_str().ok()),
        );
        let start = std::time::Instant::now();
        let (parts, body) = req.into_parts();
        let reply = match read_body(body).await {
            Err(e) => ApiError::from(e).into_response(),
            Ok(body) => {
                let me = self.clone();
                let work = async move { me.route(parts, body).await };
                match time_boxed(&path, self.call_timeout, work).await {
                    Ok(Ok(r)) => r,
                    Ok(Err(e)) => e.into_response(),
                    Err(late) => ApiError::from(late).into_response(),
                }
            }
        };
        let elapsed = start.elapsed();
        let operation = metrics::rest_operation(method.as_str(), &path);
        let ok = reply.status().is_success();
        self.metrics.record(door, operation, ok, elapsed);
        tracing::debug!(%method, %path, status = reply.status().as_u16(), elapsed_us = elapsed.as_micros() as u64, "api");
        reply
    }

    /// `GET /metrics`: the exposition text.
    async fn scrape(&self, method: &Method) -> Response<Full<Bytes>> {
        if let Err(e) = only(method, &[Method::GET], "/metrics") {
            return e.into_response();
        }
        if let Some(view) = &self.peers {
            // shimnet_peer_up: probed now if the last probe is stale (no probe timer).
            view.freshen().await;
        }
        match self.metrics.scrape(&self.engine).await {
            Ok(text) => Response::builder()
                .status(StatusCode::OK)
                .header("content-type", metrics::CONTENT_TYPE)
                .body(Full::new(Bytes::from(text)))
                .expect("valid response"),
            Err(e) => ApiError::from(e).into_response(),
        }
    }

    async fn route(&self, parts: Parts, body: Bytes) -> Result<Response<Full<Bytes>>, ApiError> {
        let path = parts.uri.path().to_string();
        let query = parts.uri.query().unwrap_or("").to_string();
        let q = |name: &str| query_param(&query, name);
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        let m = &parts.method;
        let e = &self.engine;
        match segs.as_slice() {
            ["v1", "health"] => {
                only(m, &[Method::GET], &path)?;
                let store = e.check_store().await;
                let (code, status) = match (&store.fatal, store.healthy && store.open) {
                    (Some(_), _) => (StatusCode::SERVICE_UNAVAILABLE, "failed"),
                    (None, true) => (StatusCode::OK, "ok"),
                    (None, false) => (StatusCode::OK, "degraded"),
                };
                Ok(json_response(
                    code,
                    &serde_json::json!({"status": status, "store": store}),
                ))
            }
            ["v1", "status"] => {
                only(m, &[Method::GET], &path)?;
                let s = e.status().await?;
                ok(&serde_json::json!({"version": VERSION, "status": s}))
            }
            ["v1", "features"] => {
                only(m, &[Method::GET], &path)?;
                let f = tokio::task::spawn_blocking(runtime_net::features::probe)
                    .await
                    .map_err(|e| ApiError::internal(format!("feature probe: {e}")))?;
                ok(&f)
            }
            ["v1", "peers"] => {
                only(m, &[Method::GET], &path)?;
                let view = self.peering()?;
                // Lease expiries cost one etcd request per peer: only when asked for.
                if flag(q("leases"), "leases")? {
                    view.refresh().await;
                }
                // Reachability: probed now if the last probe is stale (no probe timer).
                view.freshen().await;
                ok(&view.snapshot())
            }
            ["v1", "cluster"] => {
                only(m, &[Method::GET], &path)?;
                let view = self.peering()?;
                let src = view.source();
                let Some(cluster) = src.cluster.clone() else {
                    return Err(ApiError::not_found(format!(
                        "subnet reservations exist only with [peering] source = \"etcd\" (this node's source: {})",
                        src.kind.as_str()
                    )));
                };
                view.refresh().await;
                let src = view.source();
                ok(&serde_json::json!({
                    "source": src.kind,
                    "endpoints": src.detail,
                    "reachable": src.reachable,
                    "since": src.since,
                    "prefix": cluster.prefix,
                    "cluster_cidr": cluster.cluster_cidr,
                    "subnet_len": cluster.subnet_len,
                    "revision": src.revision,
                    "reservations": src.reservations,
                }))
            }
            ["v1", "reconcile"] => {
                only(m, &[Method::POST], &path)?;
                let report = e.reconcile().await;
                self.metrics.record_reconcile(report.as_ref().ok());
                ok(&report?)
            }
            ["v1", "networks"] => match *m {
                Method::GET => {
                    let nets = e.networks().await?;
                    ok(&nets.iter().map(convert::network_reply).collect::<Vec<_>>())
                }
                Method::POST => {
                    let b: NetworkCreate = convert::decode(&body)?;
                    let spec = e.create_network(convert::network_request(&b)?).await?;
                    Ok(json_response(
                        StatusCode::CREATED,
                        &convert::network_reply(&spec),
                    ))
                }
                _ => Err(ApiError::method_not_allowed(m, &path)),
            },
            ["v1", "networks", name] => {
                let name: NetworkName = convert::field("network", name)?;
                match *m {
                    Method::GET => {
                        let spec = e.network(&name).await?;
                        let eps = e.endpoints(Some(&name)).await?;
                        ok(&serde_json::json!({
                            "network": convert::network_reply(&spec),
                            "endpoints": eps.len()
                        }))
                    }
                    Method::PUT => {
                        let b: NetworkCreate = convert::decode(&body)?;
                        if b.name != name.as_str() {
                            return Err(ApiError::invalid(
                                "name",
                                format!("{:?} differs from the path's {name:?}", b.name),
                            ));
                        }
                        let spec = e.ensure_network(convert::network_request(&b)?).await?;
                        ok(&convert::network_reply(&spec))
                    }
                    Method::DELETE => {
                        let force = matches!(q("force").as_deref(), Some("true" | "1"));
                        let spec = e.delete_network(&name, force).await?;
                        ok(&serde_json::json!({"deleted": convert::network_reply(&spec)}))
                    }
                    _ => Err(ApiError::method_not_allowed(m, &path)),
                }
            }
            ["v1", "networks", name, "endpoints"] => {
                let name: NetworkName = convert::field("network", name)?;
                match *m {
                    Method::GET => ok(&e.endpoints(Some(&name)).await?),
                    Method::POST => {
                        let b: EndpointAttach = convert::decode(&body)?;
                        let a = e.attach(convert::attach_request(name, &b)?).await?;
                        let status = if a.created {
                            StatusCode::CREATED
                        } else {
                            StatusCode::OK
                        };
                        Ok(json_response(status, &self.endpoint_reply(&a.record)))
                    }
                    _ => Err(ApiError::method_not_allowed(m, &path)),
                }
            }
            ["v1", "networks", name, "attach"] => {
                only(m, &[Method::POST], &path)?;
                let name: NetworkName = convert::field("network", name)?;
                let b: NetworkAttach = convert::decode(&body)?;
                let (ensure, attach) = convert::network_attach(name.clone(), &b)?;
                let spec = match ensure {
                    Some(req) => e
                        .ensure_network(req)
                        .await
                        .map_err(|x| ApiError::from(x).within("ensure"))?,
                    None => e.network(&name).await.map_err(|x| {
                        let mut x = ApiError::from(x);
                        if x.status == StatusCode::NOT_FOUND {
                            x.field = Some("network".into());
                        }
                        x
                    })?,
                };
                let a = e
                    .attach(attach)
                    .await
                    .map_err(|x| ApiError::from(x).within("endpoint"))?;
                let status = if a.created {
                    StatusCode::CREATED
                } else {
                    StatusCode::OK
                };
                let reply = NetworkAttachReply {
                    network: convert::network_reply(&spec),
                    endpoint: self.endpoint_reply(&a.record),
                };
                Ok(json_response(status, &reply))
            }
            ["v1", "networks", name, "endpoints", id] => {
                let key = convert::endpoint_key(name, id, q("ifname").as_deref())?;
                match *m {
                    Method::GET => ok(&self.endpoint_reply(&e.endpoint(&key).await?)),
                    Method::DELETE => ok(&serde_json::json!({"released": e.detach(&key).await?})),
                    _ => Err(ApiError::method_not_allowed(m, &path)),
                }
            }
            ["v1", "networks", name, "names"] => {
                only(m, &[Method::GET], &path)?;
                let name: NetworkName = convert::field("network", name)?;
                let spec = e.network(&name).await?;
                ok(&self.names(&spec))
            }
            ["v1", "networks", name, "endpoints", id, "check"] => {
                only(m, &[Method::GET], &path)?;
                let key = convert::endpoint_key(name, id, q("ifname").as_deref())?;
                let problems = e.check_endpoint(&key).await?;
                // The record too, so that a caller (CNI CHECK) needs one request.
                let rec = e.endpoint(&key).await?;
                ok(&serde_json::json!({
                    "ok": problems.is_empty(),
                    "problems": problems,
                    "endpoint": self.endpoint_reply(&rec),
                }))
            }
            ["v1", "endpoints"] => {
                only(m, &[Method::GET], &path)?;
                let net = q("network")
                    .map(|n| convert::field::<NetworkName>("network", &n))
                    .transpose()?;
                ok(&e.endpoints(net.as_ref()).await?)
            }
            _ => Err(ApiError::not_found(format!("no such API path: {path}"))),
        }
    }
}

impl crate::server::Handler for RestApi {
    async fn handle(&self, req: Request<Full<Bytes>>) -> Response<Full<Bytes>> {
        self.respond(req).await
    }

    fn reject(&self, status: StatusCode, message: String) -> Response<Full<Bytes>> {
        let code = match status {
            StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
            StatusCode::REQUEST_TIMEOUT => "request_timeout",
            StatusCode::BAD_REQUEST => "invalid_argument",
            _ => "unavailable",
        };
        ApiError {
            status,
            code,
            message,
            field: Some("body".into()),
        }
        .into_response()
    }
}

fn ok<T: Serialize>(value: &T) -> Result<Response<Full<Bytes>>, ApiError> {
    Ok(json_response(StatusCode::OK, value))
}

fn only(m: &Method, allowed: &[Method], path: &str) -> Result<(), ApiError> {
    if allowed.contains(m) {
        Ok(())
    } else {
        Err(ApiError::method_not_allowed(m, path))
    }
}

/// A boolean query parameter: absent or `false`/`0` → false, `true`/`1`/empty → true.
fn flag(v: Option<String>, name: &str) -> Result<bool, ApiError> {
    match v.as_deref() {
        None | Some("false" | "0") => Ok(false),
        Some("true" | "1" | "") => Ok(true),
        Some(other) => Err(ApiError::invalid(
            name,
            format!("{other:?}: expected true or false"),
        )),
    }
}

/// Value of `name` in a query string (no percent-decoding: values are plain names).
pub fn query_param(query: &str, name: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peering_status_decodes_as_the_wire_type() {
        use runtime_net::firewall::encap::EncapDrops;
        use runtime_net::peering::{
            mode::Plane, EncapJudge, EncapJudges, IpipPath, PeerStatus, PeeringStatus,
        };
        let st = PeeringStatus {
            node: "node-a".into(),
            address: Some("192.168.1.10".parse().unwrap()),
            pod_cidr: Some("10.244.1.0/24".parse().unwrap()),
            ipip: Some(IpipPath::Userspace),
            last_reconcile: Some(1_700_000_000),
            errors: vec![],
            peers: vec![PeerStatus {
                name: "node-b".into(),
                address: "192.168.1.11".parse().unwrap(),
                pod_cidr: "10.244.2.0/24".parse().unwrap(),
                mode: Plane::HostGw,
                reachable: true,
                probed_at: Some(1_699_999_990),
                lease_expires: Some(1_700_000_060),
            }],
            userspace_ipip: Some(Default::default()),
            tc_forwarding: Some(runtime_net::peering::tc_ipip::forwarding::Forwarded {
                sent: 11,
                received: 12,
            }),
            encap_filter: EncapJudges {
                vxlan: Some(EncapJudge::Nftables),
                ipip: Some(EncapJudge::Userspace),
            },
            encap_dropped: EncapDrops { vxlan: 7, ipip: 2 },
            source: Some(runtime_net::peering::source::SourceStatus::new(
                runtime_net::peering::peers::SourceKind::Etcd,
                "http://198.19.9.1:2379",
            )),
            ..PeeringStatus::default()
        };
        let text = serde_json::to_string(&st).unwrap();
        let w: shimnet_wire::PeersReply = serde_json::from_str(&text).unwrap();
        assert_eq!(w.ipip.as_deref(), Some("userspace"));
        assert_eq!(w.peers[0].mode, "host-gw");
        assert_eq!(w.peers[0].pod_cidr, "10.244.2.0/24");
        assert_eq!(w.address.as_deref(), Some("192.168.1.10"));
        assert_eq!(w.userspace_ipip.unwrap().tun_reads, 0);
        let f = w.tc_forwarding.unwrap();
        assert_eq!((f.sent, f.received), (11, 12));
        assert_eq!(w.encap_filter.vxlan.as_deref(), Some("nftables"));
        assert_eq!(w.encap_filter.ipip.as_deref(), Some("userspace"));
        assert_eq!((w.encap_dropped.vxlan, w.encap_dropped.ipip), (7, 2));
        assert_eq!(w.peers[0].lease_expires, Some(1_700_000_060));
        let src = w.source.unwrap();
        assert_eq!((src.kind.as_str(), src.reachable), ("etcd", false));
        assert_eq!(src.detail, "http://198.19.9.1:2379");
    }

    #[test]
    fn attach_reply_decodes_as_the_plugin_reads_it() {
        use runtime_net::plan::{build_spec, NetworkRequest};
        use runtime_net::{ContainerId, EndpointKey, EndpointKind, IfName};
        let spec = build_spec(NetworkRequest::new(
            NetworkName::new("n1").unwrap(),
            "10.9.0.0/24".parse().unwrap(),
        ))
        .unwrap();
        let rec = runtime_net::EndpointRecord {
            key: EndpointKey {
                network: spec.name.clone(),
                container_id: ContainerId::new("c1").unwrap(),
                ifname: IfName::new("eth0").unwrap(),
            },
            kind: EndpointKind::Managed,
            netns: "/run/netns/c1".into(),
            host_ifname: IfName::new("snv1").unwrap(),
            ipv4: "10.9.0.2/24".parse().unwrap(),
            ipv6: None,
            mac: "0a:58:0a:09:00:02".parse().unwrap(),
            gateway: "10.9.0.1".parse().unwrap(),
            gateway6: None,
            mtu: 1500,
            ports: vec![],
            names: vec![],
            extension: None,
        };
        let reply = NetworkAttachReply {
            network: convert::network_reply(&spec),
            endpoint: serde_json::to_value(&rec).unwrap(),
        };
        let text = serde_json::to_vec(&reply).unwrap();
        let r: shimnet_compat::cni::result::AttachReply = serde_json::from_slice(&text).unwrap();
        assert_eq!((r.network.name.as_str(), r.network.mtu), ("n1", 1500));
        assert_eq!(r.network.bridge, spec.bridge.to_string());
        assert_eq!(
            (r.endpoint.ipv4.as_str(), r.endpoint.gateway.as_str()),
            ("10.9.0.2/24", "10.9.0.1")
        );
        assert_eq!(r.endpoint.host_ifname, "snv1");
    }

    #[test]
    fn boolean_query_flags() {
        assert!(!flag(None, "leases").unwrap());
        assert!(flag(Some("true".into()), "leases").unwrap());
        assert!(flag(Some(String::new()), "leases").unwrap());
        let e = flag(Some("yes".into()), "leases").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("leases"));
    }

    #[test]
    fn query_params() {
        assert_eq!(
            query_param("ifname=eth1&force=true", "force").as_deref(),
            Some("true")
        );
        assert_eq!(query_param("ifname=eth1", "force"), None);
        assert_eq!(query_param("force", "force").as_deref(), Some(""));
    }
}
