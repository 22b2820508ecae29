//! Typed Docker plugin calls decoded from their JSON bodies, with errors naming the field.
//!
//! Bodies are read as Go reads them into libnetwork's request structs ([`shape`]: keys in any
//! case, the last duplicate winning), then walked by hand so that every refusal names the field
//! the way dockerd spells it (`IPv4Data[0].Pool`, `Interface.MacAddress`, ...). Unknown fields are
//! ignored; `null` and `""` count as absent, as dockerd sends both.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use ipnetwork::IpNetwork;
use runtime_net::MacAddr;
use serde_json::{Map, Value};

/// Content type of every plugin reply.
pub const CONTENT_TYPE: &str = "application/vnd.docker.plugins.v1+json";

/// A request field that was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct WireError {
    /// Field path as dockerd spells it (e.g. `IPv4Data[0].Pool`).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl WireError {
    /// A new error for `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        WireError {
            field: field.into(),
            message: message.into(),
        }
    }
}

type R<T> = Result<T, WireError>;

/// A JSON object with the path it was found at, for error messages.
#[derive(Debug, Clone, Copy)]
pub struct Obj<'a> {
    map: &'a Map<String, Value>,
    path: &'a str,
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

impl<'a> Obj<'a> {
    /// Wraps the top-level body.
    pub fn root(v: &'a Value) -> R<Self> {
        match v {
            Value::Object(map) => Ok(Obj { map, path: "" }),
            _ => Err(WireError::new("body", "must be a JSON object")),
        }
    }

    fn raw(&self, name: &str) -> Option<&'a Value> {
        match self.map.get(name) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.is_empty() => None,
            Some(v) => Some(v),
        }
    }

    /// An optional string.
    pub fn str_opt(&self, name: &str) -> R<Option<&'a str>> {
        match self.raw(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(WireError::new(join(self.path, name), "must be a string")),
        }
    }

    /// A required, non-empty string.
    pub fn str_req(&self, name: &str) -> R<&'a str> {
        self.str_opt(name)?
            .ok_or_else(|| WireError::new(join(self.path, name), "is required"))
    }

    /// An optional boolean; accepts `true`/`false` and the strings `"true"`/`"false"`.
    pub fn bool_opt(&self, name: &str) -> R<Option<bool>> {
        match self.raw(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(Value::String(s)) => parse_bool(s).map(Some).ok_or_else(|| {
                WireError::new(join(self.path, name), format!("{s:?} is not a boolean"))
            }),
            Some(_) => Err(WireError::new(join(self.path, name), "must be a boolean")),
        }
    }

    /// An optional unsigned integer.
    pub fn u64_opt(&self, name: &str) -> R<Option<u64>> {
        match self.raw(name) {
            None => Ok(None),
            Some(Value::Number(n)) => n.as_u64().map(Some).ok_or_else(|| {
                WireError::new(join(self.path, name), "must be a non-negative integer")
            }),
            Some(_) => Err(WireError::new(join(self.path, name), "must be a number")),
        }
    }

    /// An optional nested object, returned with its owned path.
    pub fn obj_opt(&self, name: &str) -> R<Option<(&'a Map<String, Value>, String)>> {
        match self.raw(name) {
            None => Ok(None),
            Some(Value::Object(m)) => Ok(Some((m, join(self.path, name)))),
            Some(_) => Err(WireError::new(join(self.path, name), "must be an object")),
        }
    }

    /// An optional array (absent = empty).
    pub fn arr(&self, name: &str) -> R<&'a [Value]> {
        match self.raw(name) {
            None => Ok(&[]),
            Some(Value::Array(a)) => Ok(a),
            Some(_) => Err(WireError::new(join(self.path, name), "must be an array")),
        }
    }

    /// An optional value parsed from a string with `FromStr`.
    pub fn parsed_opt<T: std::str::FromStr>(&self, name: &str, what: &str) -> R<Option<T>>
    where
        T::Err: std::fmt::Display,
    {
        match self.str_opt(name)? {
            None => Ok(None),
            Some(s) => s.parse().map(Some).map_err(|e| {
                WireError::new(
                    join(self.path, name),
                    format!("{s:?} is not a valid {what}: {e}"),
                )
            }),
        }
    }
}

/// Parses `"true"`/`"false"` (and `1`/`0`) as dockerd's option strings spell them.
pub fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "1" => Some(true),
        "false" | "0" => Some(false),
        _ => None,
    }
}

fn sub<'a>(map: &'a Map<String, Value>, path: &'a str) -> Obj<'a> {
    Obj { map, path }
}

/// Parses a CIDR string (`10.0.0.1/24`) keeping the host part.
fn cidr(s: &str, field: &str) -> R<IpNetwork> {
    s.parse::<IpNetwork>()
        .map_err(|e| WireError::new(field, format!("{s:?} is not a CIDR address: {e}")))
}

/// One entry of `IPv4Data`/`IPv6Data`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpamData {
    /// Address space.
    pub address_space: Option<String>,
    /// The pool (network address and prefix).
    pub pool: IpNetwork,
    /// Gateway with the pool's prefix.
    pub gateway: Option<IpNetwork>,
    /// Auxiliary addresses by name.
    pub aux: BTreeMap<String, IpNetwork>,
}

fn ipam_data(list: &[Value], field: &str) -> R<Vec<IpamData>> {
    let mut out = Vec::new();
    for (i, v) in list.iter().enumerate() {
        let path = format!("{field}[{i}]");
        let Value::Object(m) = v else {
            return Err(WireError::new(path, "must be an object"));
        };
        let o = sub(m, &path);
        let pool = cidr(o.str_req("Pool")?, &join(&path, "Pool"))?;
        let gateway = match o.str_opt("Gateway")? {
            Some(g) => Some(cidr(g, &join(&path, "Gateway"))?),
            None => None,
        };
        let mut aux = BTreeMap::new();
        if let Some((m, apath)) = o.obj_opt("AuxAddresses")? {
            for (k, v) in m {
                let f = join(&apath, k);
                let s = v
                    .as_str()
                    .ok_or_else(|| WireError::new(f.clone(), "must be a string"))?;
                aux.insert(k.clone(), cidr(s, &f)?);
            }
        }
        out.push(IpamData {
            address_space: o.str_opt("AddressSpace")?.map(str::to_string),
            pool,
            gateway,
            aux,
        });
    }
    Ok(out)
}

/// A published port as dockerd sends it in `com.docker.network.portmap`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortBinding {
    /// IP protocol number (6 tcp, 17 udp, 132 sctp).
    pub proto: u8,
    /// Container port.
    pub port: u16,
    /// Host address; `None` = all.
    pub host_ip: Option<IpAddr>,
    /// First host port (0 = any).
    pub host_port: u16,
    /// Last host port of the range (0 = same as `host_port`).
    pub host_port_end: u16,
}

fn port_u16(o: &Obj<'_>, name: &str) -> R<u16> {
    let v = o.u64_opt(name)?.unwrap_or(0);
    port_in_range(o, name, v)
}

fn port_in_range(o: &Obj<'_>, name: &str, v: u64) -> R<u16> {
    u16::try_from(v).map_err(|_| WireError::new(join(o.path, name), format!("{v} is not a port")))
}

/// Decodes `Options["com.docker.network.portmap"]` of an endpoint call.
pub fn port_bindings(options: Option<&Map<String, Value>>) -> R<Vec<PortBinding>> {
    const KEY: &str = "com.docker.network.portmap";
    let Some(list) = options.and_then(|m| m.get(KEY)) else {
        return Ok(Vec::new());
    };
    let list = match list {
        Value::Null => return Ok(Vec::new()),
        Value::Array(a) => a,
        _ => return Err(WireError::new(format!("Options.{KEY}"), "must be an array")),
    };
    let mut out = Vec::new();
    for (i, v) in list.iter().enumerate() {
        let path = format!("Options.{KEY}[{i}]");
        let Value::Object(m) = v else {
            return Err(WireError::new(path, "must be an object"));
        };
        let o = sub(m, &path);
        let proto = o.u64_opt("Proto")?.unwrap_or(6);
        let proto = u8::try_from(proto).map_err(|_| {
            WireError::new(join(&path, "Proto"), format!("{proto} is not a protocol"))
        })?;
        let host_ip = o
            .parsed_opt::<IpAddr>("HostIP", "IP address")?
            .filter(|ip| !ip.is_unspecified());
        out.push(PortBinding {
            proto,
            port: port_in_range(
                &o,
                "Port",
                o.u64_opt("Port")?
                    .ok_or_else(|| WireError::new(join(&path, "Port"), "is required"))?,
            )?,
            host_ip,
            host_port: port_u16(&o, "HostPort")?,
            host_port_end: port_u16(&o, "HostPortEnd")?,
        });
    }
    Ok(out)
}

/// `NetworkDriver.CreateNetwork`.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateNetwork {
    /// Docker's network id.
    pub network_id: String,
    /// `Options` (generic options are under `com.docker.network.generic`).
    pub options: Map<String, Value>,
    /// IPv4 pools.
    pub ipv4: Vec<IpamData>,
    /// IPv6 pools.
    pub ipv6: Vec<IpamData>,
}

/// `NetworkDriver.CreateEndpoint`.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateEndpoint {
    /// Network id.
    pub network_id: String,
    /// Endpoint id.
    pub endpoint_id: String,
    /// IPv4 address with prefix, if dockerd's IPAM gave one.
    pub address: Option<IpNetwork>,
    /// IPv6 address with prefix.
    pub address6: Option<IpNetwork>,
    /// MAC dockerd wants.
    pub mac: Option<MacAddr>,
    /// Port map (also resent in Join and ProgramExternalConnectivity).
    pub ports: Vec<PortBinding>,
}

/// `NetworkDriver.Join`.
#[derive(Debug, Clone, PartialEq)]
pub struct Join {
    /// Network id.
    pub network_id: String,
    /// Endpoint id.
    pub endpoint_id: String,
    /// Path of the container's network namespace.
    pub sandbox_key: PathBuf,
}

/// `NetworkDriver.ProgramExternalConnectivity`.
#[derive(Debug, Clone, PartialEq)]
pub struct ProgramExternal {
    /// Network id.
    pub network_id: String,
    /// Endpoint id.
    pub endpoint_id: String,
    /// Published ports.
    pub ports: Vec<PortBinding>,
}

/// `IpamDriver.RequestPool`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestPool {
    /// Address space.
    pub address_space: Option<String>,
    /// Requested pool; the driver picks one when `None`.
    pub pool: Option<IpNetwork>,
    /// Allocation range inside the pool.
    pub sub_pool: Option<IpNetwork>,
    /// IPv6 requested.
    pub v6: bool,
}

/// `IpamDriver.RequestAddress`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestAddress {
    /// Pool id.
    pub pool_id: String,
    /// Requested address.
    pub address: Option<IpAddr>,
    /// True when dockerd asks for the gateway (`RequestAddressType`).
    pub gateway: bool,
    /// MAC passed by dockerd (not needed).
    pub mac: Option<String>,
}

/// Every call of the two protocols, decoded.
#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    /// `/Plugin.Activate`.
    Activate,
    /// `/NetworkDriver.GetCapabilities`.
    NetCapabilities,
    /// `/NetworkDriver.CreateNetwork`.
    CreateNetwork(CreateNetwork),
    /// `/NetworkDriver.AllocateNetwork` (swarm only; acknowledged).
    AllocateNetwork {
        /// Network id.
        network_id: String,
    },
    /// `/NetworkDriver.DeleteNetwork`.
    DeleteNetwork {
        /// Network id.
        network_id: String,
    },
    /// `/NetworkDriver.FreeNetwork` (swarm only; acknowledged).
    FreeNetwork {
        /// Network id.
        network_id: String,
    },
    /// `/NetworkDriver.CreateEndpoint`.
    CreateEndpoint(CreateEndpoint),
    /// `/NetworkDriver.EndpointOperInfo`.
    EndpointOperInfo(EndpointRef),
    /// `/NetworkDriver.DeleteEndpoint`.
    DeleteEndpoint(EndpointRef),
    /// `/NetworkDriver.Join`.
    Join(Join),
    /// `/NetworkDriver.Leave`.
    Leave(EndpointRef),
    /// `/NetworkDriver.DiscoverNew`.
    DiscoverNew,
    /// `/NetworkDriver.DiscoverDelete`.
    DiscoverDelete,
    /// `/NetworkDriver.ProgramExternalConnectivity`.
    ProgramExternal(ProgramExternal),
    /// `/NetworkDriver.RevokeExternalConnectivity`.
    RevokeExternal(EndpointRef),
    /// `/IpamDriver.GetCapabilities`.
    IpamCapabilities,
    /// `/IpamDriver.GetDefaultAddressSpaces`.
    DefaultAddressSpaces,
    /// `/IpamDriver.RequestPool`.
    RequestPool(RequestPool),
    /// `/IpamDriver.ReleasePool`.
    ReleasePool {
        /// Pool id.
        pool_id: String,
    },
    /// `/IpamDriver.RequestAddress`.
    RequestAddress(RequestAddress),
    /// `/IpamDriver.ReleaseAddress`.
    ReleaseAddress {
        /// Pool id.
        pool_id: String,
        /// Address.
        address: IpAddr,
    },
}

/// A (network, endpoint) pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointRef {
    /// Network id.
    pub network_id: String,
    /// Endpoint id.
    pub endpoint_id: String,
}

/// Why a request could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// No such call (HTTP 404).
    UnknownCall(String),
    /// The body is not acceptable (HTTP 400).
    Invalid(WireError),
}

impl From<WireError> for DecodeError {
    fn from(e: WireError) -> Self {
        DecodeError::Invalid(e)
    }
}

fn endpoint_ref(o: &Obj<'_>) -> R<EndpointRef> {
    Ok(EndpointRef {
        network_id: o.str_req("NetworkID")?.to_string(),
        endpoint_id: o.str_req("EndpointID")?.to_string(),
    })
}

/// Whether `path` names a call of the protocols (decides 404 before the body is read).
pub fn is_known_call(path: &str) -> bool {
    matches!(
        path,
        "/Plugin.Activate"
            | "/NetworkDriver.GetCapabilities"
            | "/NetworkDriver.CreateNetwork"
            | "/NetworkDriver.AllocateNetwork"
            | "/NetworkDriver.DeleteNetwork"
            | "/NetworkDriver.FreeNetwork"
            | "/NetworkDriver.CreateEndpoint"
            | "/NetworkDriver.EndpointOperInfo"
            | "/NetworkDriver.DeleteEndpoint"
            | "/NetworkDriver.Join"
            | "/NetworkDriver.Leave"
            | "/NetworkDriver.DiscoverNew"
            | "/NetworkDriver.DiscoverDelete"
            | "/NetworkDriver.ProgramExternalConnectivity"
            | "/NetworkDriver.RevokeExternalConnectivity"
            | "/IpamDriver.GetCapabilities"
            | "/IpamDriver.GetDefaultAddressSpaces"
            | "/IpamDriver.RequestPool"
            | "/IpamDriver.ReleasePool"
            | "/IpamDriver.RequestAddress"
            | "/IpamDriver.ReleaseAddress"
    )
}

/// Decodes one call from its URL path and body (an empty body counts as `{}`).
pub fn decode(path: &str, body: &[u8]) -> Result<Call, DecodeError> {
    if !is_known_call(path) {
        return Err(DecodeError::UnknownCall(path.to_string()));
    }
    let value: Value = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Object(Map::new())
    } else {
        shape::canonical(body)?
    };
    let o = Obj::root(&value)?;
    let net_id = |o: &Obj<'_>| o.str_req("NetworkID").map(str::to_string);
    let call = match path {
        "/Plugin.Activate" => Call::Activate,
        "/NetworkDriver.GetCapabilities" => Call::NetCapabilities,
        "/NetworkDriver.CreateNetwork" => Call::CreateNetwork(CreateNetwork {
            network_id: net_id(&o)?,
            options: o
                .obj_opt("Options")?
                .map(|(m, _)| m.clone())
                .unwrap_or_default(),
            ipv4: ipam_data(o.arr("IPv4Data")?, "IPv4Data")?,
            ipv6: ipam_data(o.arr("IPv6Data")?, "IPv6Data")?,
        }),
        "/NetworkDriver.AllocateNetwork" => Call::AllocateNetwork {
            network_id: net_id(&o)?,
        },
        "/NetworkDriver.DeleteNetwork" => Call::DeleteNetwork {
            network_id: net_id(&o)?,
        },
        "/NetworkDriver.FreeNetwork" => Call::FreeNetwork {
            network_id: net_id(&o)?,
        },
        "/NetworkDriver.CreateEndpoint" => {
            let r = endpoint_ref(&o)?;
            let (mut address, mut address6, mut mac) = (None, None, None);
            if let Some((m, p)) = o.obj_opt("Interface")? {
                let i = sub(m, &p);
                if let Some(a) = i.str_opt("Address")? {
                    address = Some(cidr(a, "Interface.Address")?);
                }
                if let Some(a) = i.str_opt("AddressIPv6")? {
                    address6 = Some(cidr(a, "Interface.AddressIPv6")?);
                }
                mac = i.parsed_opt::<MacAddr>("MacAddress", "MAC address")?;
            }
            if address.is_some_and(|a| !a.is_ipv4()) {
                return Err(WireError::new("Interface.Address", "must be an IPv4 address").into());
            }
            if address6.is_some_and(|a| !a.is_ipv6()) {
                return Err(
                    WireError::new("Interface.AddressIPv6", "must be an IPv6 address").into(),
                );
            }
            let options = o.obj_opt("Options")?.map(|(m, _)| m);
            Call::CreateEndpoint(CreateEndpoint {
                network_id: r.network_id,
                endpoint_id: r.endpoint_id,
                address,
                address6,
                mac,
                ports: port_bindings(options)?,
            })
        }
        "/NetworkDriver.EndpointOperInfo" => Call::EndpointOperInfo(endpoint_ref(&o)?),
        "/NetworkDriver.DeleteEndpoint" => Call::DeleteEndpoint(endpoint_ref(&o)?),
        "/NetworkDriver.Join" => {
            let r = endpoint_ref(&o)?;
            Call::Join(Join {
                network_id: r.network_id,
                endpoint_id: r.endpoint_id,
                sandbox_key: PathBuf::from(o.str_req("SandboxKey")?),
            })
        }
        "/NetworkDriver.Leave" => Call::Leave(endpoint_ref(&o)?),
        "/NetworkDriver.DiscoverNew" => Call::DiscoverNew,
        "/NetworkDriver.DiscoverDelete" => Call::DiscoverDelete,
        "/NetworkDriver.ProgramExternalConnectivity" => {
            let r = endpoint_ref(&o)?;
            let options = o.obj_opt("Options")?.map(|(m, _)| m);
            Call::ProgramExternal(ProgramExternal {
                network_id: r.network_id,
                endpoint_id: r.endpoint_id,
                ports: port_bindings(options)?,
            })
        }
        "/NetworkDriver.RevokeExternalConnectivity" => Call::RevokeExternal(endpoint_ref(&o)?),
        "/IpamDriver.GetCapabilities" => Call::IpamCapabilities,
        "/IpamDriver.GetDefaultAddressSpaces" => Call::DefaultAddressSpaces,
        "/IpamDriver.RequestPool" => {
            let pool = match o.str_opt("Pool")? {
                Some(p) => Some(cidr(p, "Pool")?),
                None => None,
            };
            let sub_pool = match o.str_opt("SubPool")? {
                Some(p) => Some(cidr(p, "SubPool")?),
                None => None,
            };
            Call::RequestPool(RequestPool {
                address_space: o.str_opt("AddressSpace")?.map(str::to_string),
                pool,
                sub_pool,
                v6: o.bool_opt("V6")?.unwrap_or(false),
            })
        }
        "/IpamDriver.ReleasePool" => Call::ReleasePool {
            pool_id: o.str_req("PoolID")?.to_string(),
        },
        "/IpamDriver.RequestAddress" => {
            let (mut gateway, mut mac) = (false, None);
            if let Some((m, p)) = o.obj_opt("Options")? {
                let opts = sub(m, &p);
                gateway = opts.str_opt("RequestAddressType")? == Some("com.docker.network.gateway");
                mac = opts
                    .str_opt("com.docker.network.endpoint.macaddress")?
                    .map(str::to_string);
            }
            Call::RequestAddress(RequestAddress {
                pool_id: o.str_req("PoolID")?.to_string(),
                address: o.parsed_opt::<IpAddr>("Address", "IP address")?,
                gateway,
                mac,
            })
        }
        "/IpamDriver.ReleaseAddress" => Call::ReleaseAddress {
            pool_id: o.str_req("PoolID")?.to_string(),
            address: o
                .parsed_opt::<IpAddr>("Address", "IP address")?
                .ok_or_else(|| WireError::new("Address", "is required"))?,
        },
        other => return Err(DecodeError::UnknownCall(other.to_string())),
    };
    Ok(call)
}

mod shape;
#[cfg(test)]
mod tests;
