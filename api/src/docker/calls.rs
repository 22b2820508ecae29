//! The engine side of each plugin call: one typed call in, one engine operation, one reply out.
//!
//! A Docker endpoint goes through the engine's one endpoint pipeline as a prepared endpoint, split
//! where libnetwork splits it: CreateEndpoint attaches it (the pair is built, the container end
//! left beside the host end under a temporary name), Join records the sandbox and hands the name
//! over, ProgramExternalConnectivity publishes its ports, DeleteEndpoint detaches it. The
//! translations from the decoded calls to engine requests are the pure functions below.

use std::net::IpAddr;

use hyper::StatusCode;
use ipnetwork::{IpNetwork, Ipv4Network};
use runtime_net::engine::{AttachRequest, Engine, EngineError};
use runtime_net::ipam::Pool;
use runtime_net::plan::ports::PortRequest;
use runtime_net::{ContainerId, EndpointKey, EndpointKind, IfName, NetworkName, NetworkSpec};
use serde_json::{json, Value};
use shimnet_compat::docker::conventions::{self, DST_PREFIX};
use shimnet_compat::docker::options::{self, pick_subnet};
use shimnet_compat::docker::wire::{
    Call, CreateEndpoint, EndpointRef, RequestAddress, RequestPool, WireError,
};
use shimnet_compat::net::first_host;

use super::{reply, Docker0Adoption, PluginError};

/// What a call may read besides the engine.
#[derive(Debug, Clone)]
pub(crate) struct Context {
    pub default_pools: Vec<(Ipv4Network, u8)>,
    pub docker0: Option<Docker0Adoption>,
    pub docker0_id: Option<String>,
}

/// `Some(Some(id))`: the docker0 network was adopted by `id`; `Some(None)`: released.
pub(crate) type Adoption = Option<Option<String>>;

type R = Result<Value, PluginError>;

fn wire(e: WireError) -> PluginError {
    PluginError::invalid(format!("shimnet: {e}"))
}

impl Context {
    fn network(&self, id: &str) -> Result<NetworkName, PluginError> {
        match (&self.docker0, &self.docker0_id) {
            (Some(d), Some(adopted)) if adopted == id => Ok(d.network.clone()),
            _ => options::network_name(id).map_err(wire),
        }
    }

    fn key(&self, r: &EndpointRef) -> Result<EndpointKey, PluginError> {
        Ok(conventions::endpoint_key(
            &self.network(&r.network_id)?,
            &endpoint_id(&r.endpoint_id)?,
        ))
    }
}

/// CreateEndpoint as an engine attach: a prepared endpoint keyed by the endpoint id, with the
/// addresses Docker's IPAM chose as static requests (an IPv6 address only where the network has
/// IPv6), the MAC dockerd wants and its port map, whose host ports are reserved together with
/// the address (published at ProgramExternalConnectivity, which resends the map).
pub fn create_endpoint_request(
    spec: &NetworkSpec,
    c: &CreateEndpoint,
) -> Result<AttachRequest, PluginError> {
    let ipv4 = match c.address.map(|a| a.ip()) {
        Some(IpAddr::V4(ip)) => Some(ip),
        _ => None,
    };
    let ipv6 = match c.address6.map(|a| a.ip()) {
        Some(IpAddr::V6(ip)) => Some(ip),
        _ => None,
    };
    Ok(AttachRequest {
        network: spec.name.clone(),
        container_id: endpoint_id(&c.endpoint_id)?,
        ifname: IfName::new(DST_PREFIX).expect("valid name"),
        kind: EndpointKind::Prepared,
        netns: None,
        ipv4,
        ipv6: ipv6.filter(|_| spec.subnet6.is_some()),
        mac: c.mac,
        ports: port_requests(&c.ports)?,
    })
}

/// ProgramExternalConnectivity's port map as the engine's port requests.
pub fn port_requests(
    ports: &[shimnet_compat::docker::wire::PortBinding],
) -> Result<Vec<PortRequest>, PluginError> {
    options::port_requests(ports).map_err(wire)
}

fn endpoint_id(id: &str) -> Result<ContainerId, PluginError> {
    ContainerId::new(id).map_err(|e| wire(WireError::new("EndpointID", e.to_string())))
}

/// Runs one call that needs the engine.
pub(crate) async fn run(e: &Engine, ctx: &Context, call: Call) -> (R, Adoption) {
    match call {
        Call::CreateNetwork(c) => create_network(e, ctx, &c).await,
        Call::DeleteNetwork { network_id } => delete_network(e, ctx, &network_id).await,
        other => (run_plain(e, ctx, other).await, None),
    }
}

async fn create_network(
    e: &Engine,
    ctx: &Context,
    c: &shimnet_compat::docker::wire::CreateNetwork,
) -> (R, Adoption) {
    let req = match options::network_request(c) {
        Ok(r) => r,
        Err(w) => return (Err(wire(w)), None),
    };
    if let Some(d) = &ctx.docker0 {
        if req.bridge.as_ref().is_some_and(|b| b.as_str() == d.bridge) {
            return match e.network(&d.network).await {
                Ok(spec) if spec.subnet == req.subnet => {
                    (Ok(json!({})), Some(Some(c.network_id.clone())))
                }
                Ok(spec) => (
                    Err(PluginError {
                        status: StatusCode::CONFLICT,
                        message: format!(
                            "shimnet: bridge {} is shimnet's docker0 network on {}, not {}",
                            d.bridge, spec.subnet, req.subnet
                        ),
                    }),
                    None,
                ),
                Err(err) => (Err(err.into()), None),
            };
        }
    }
    match e.ensure_network(req).await {
        Ok(_) => (Ok(json!({})), None),
        Err(err) => (Err(err.into()), None),
    }
}

async fn delete_network(e: &Engine, ctx: &Context, id: &str) -> (R, Adoption) {
    if ctx.docker0.is_some() && ctx.docker0_id.as_deref() == Some(id) {
        // shimnet's docker0 outlives the Docker network that used it.
        return (Ok(json!({})), Some(None));
    }
    let name = match ctx.network(id) {
        Ok(n) => n,
        Err(err) => return (Err(err), None),
    };
    match e.delete_network(&name, true).await {
        Ok(_) | Err(EngineError::NotFound { .. }) => (Ok(json!({})), None),
        Err(err) => (Err(err.into()), None),
    }
}

async fn run_plain(e: &Engine, ctx: &Context, call: Call) -> R {
    match call {
        Call::CreateEndpoint(c) => {
            let spec = e.network(&ctx.network(&c.network_id)?).await?;
            let req = create_endpoint_request(&spec, &c)?;
            let a = e.attach(req).await.map_err(interface_fields)?;
            tracing::debug!(endpoint = %a.record.key, plan = %a.plan, "docker endpoint created");
            Ok(reply::create_endpoint(
                &a.record,
                c.address.is_some(),
                c.address6.is_some(),
                c.mac.is_some(),
            ))
        }
        Call::Join(j) => {
            let key = ctx.key(&EndpointRef {
                network_id: j.network_id.clone(),
                endpoint_id: j.endpoint_id.clone(),
            })?;
            let (rec, name, _) = e.join(&key, &j.sandbox_key).await?;
            let spec = e.network(&key.network).await?;
            Ok(reply::join(&spec, &rec, name.as_str(), DST_PREFIX))
        }
        Call::Leave(r) => {
            // libnetwork moves the interface back out of the sandbox itself.
            ctx.key(&r)?;
            Ok(json!({}))
        }
        Call::DeleteEndpoint(r) => {
            e.detach(&ctx.key(&r)?).await?;
            Ok(json!({}))
        }
        Call::EndpointOperInfo(r) => {
            let rec = e.endpoint(&ctx.key(&r)?).await.ok();
            Ok(reply::oper_info(rec.as_ref()))
        }
        Call::ProgramExternal(p) => {
            let key = ctx.key(&EndpointRef {
                network_id: p.network_id.clone(),
                endpoint_id: p.endpoint_id.clone(),
            })?;
            let (chosen, _) = e.publish(&key, port_requests(&p.ports)?).await?;
            tracing::debug!(endpoint = %key, ports = chosen.len(), "ports published");
            Ok(json!({}))
        }
        Call::RevokeExternal(r) => {
            e.unpublish(&ctx.key(&r)?).await?;
            Ok(json!({}))
        }
        Call::RequestPool(r) => request_pool(e, ctx, &r).await,
        Call::ReleasePool { pool_id } => {
            e.remove_pool(&pool_id).await?;
            Ok(json!({}))
        }
        Call::RequestAddress(r) => request_address(e, &r).await,
        Call::ReleaseAddress { pool_id, address } => {
            e.release_pool_address(&pool_id, address).await?;
            Ok(json!({}))
        }
        other => Err(PluginError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: format!("shimnet: call {other:?} has no engine side"),
        }),
    }
}

fn normalise(n: IpNetwork) -> IpNetwork {
    IpNetwork::new(n.network(), n.prefix()).expect("prefix of a valid network")
}

async fn request_pool(e: &Engine, ctx: &Context, r: &RequestPool) -> R {
    let pool =
        match r.pool {
            Some(p) => normalise(p),
            None if r.v6 => return Err(PluginError::invalid(
                "shimnet: Pool: give an IPv6 subnet (--subnet); shimnet does not pick IPv6 pools",
            )),
            None => {
                let taken = e.taken_subnets().await?;
                let got = pick_subnet(&ctx.default_pools, &taken).ok_or_else(|| PluginError {
                    status: StatusCode::CONFLICT,
                    message: "shimnet: Pool: every default address pool is in use; give --subnet"
                        .into(),
                })?;
                IpNetwork::V4(got)
            }
        };
    if pool.is_ipv6() != r.v6 {
        return Err(PluginError::invalid(format!(
            "shimnet: Pool: {pool} does not match V6={}",
            r.v6
        )));
    }
    let mut want = Pool::new(pool);
    let mut id = pool.to_string();
    if let Some(sub) = r.sub_pool {
        let sub = normalise(sub);
        if sub.is_ipv6() != pool.is_ipv6()
            || !pool.contains(sub.network())
            || sub.prefix() < pool.prefix()
        {
            return Err(PluginError::invalid(format!(
                "shimnet: SubPool: {sub} is not inside pool {pool}"
            )));
        }
        let last = match sub {
            IpNetwork::V4(s) => IpAddr::V4(s.broadcast()),
            IpNetwork::V6(s) => IpAddr::V6(s.broadcast()),
        };
        want = want.with_range(sub.network(), last);
        id = format!("{pool}@{sub}");
    }
    match e.pool(&id).await {
        Ok(have) if have == want => return Ok(reply::request_pool(&id, pool)),
        Ok(_) => {
            return Err(PluginError {
                status: StatusCode::CONFLICT,
                message: format!("shimnet: Pool: {id} is already in use"),
            })
        }
        Err(EngineError::NotFound { .. }) => {}
        Err(err) => return Err(err.into()),
    }
    e.create_pool(&id, want).await?;
    Ok(reply::request_pool(&id, pool))
}

async fn request_address(e: &Engine, r: &RequestAddress) -> R {
    let pool = e.pool(&r.pool_id).await?;
    let requested = match r.address {
        Some(a) => Some(a),
        None if r.gateway => Some(first_host(pool.subnet).ok_or_else(|| {
            PluginError::invalid(format!(
                "shimnet: PoolID: {} has no room for a gateway",
                pool.subnet
            ))
        })?),
        None => None,
    };
    let owner = if r.gateway { "gateway" } else { "docker" };
    let ip = e
        .allocate_pool_address(&r.pool_id, owner, requested)
        .await
        .map_err(address_field)?;
    Ok(reply::request_address(ip, pool.subnet.prefix()))
}

/// Names an engine field error by the CreateEndpoint field docker sent (`Interface.Address`
/// rather than the engine's `ip`).
fn interface_fields(e: EngineError) -> EngineError {
    match e {
        EngineError::Invalid(mut f) => {
            f.field = match f.field {
                "ip" => "Interface.Address",
                "ip6" => "Interface.AddressIPv6",
                "mac" => "Interface.MacAddress",
                other => other,
            };
            EngineError::Invalid(f)
        }
        other => other,
    }
}

/// Names a pool-address field error by RequestAddress's field (`Address`).
fn address_field(e: EngineError) -> EngineError {
    match e {
        EngineError::Invalid(mut f) if f.field == "address" => {
            f.field = "Address";
            EngineError::Invalid(f)
        }
        other => other,
    }
}
