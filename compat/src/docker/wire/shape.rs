//! The Go request structs of libnetwork's remote network driver and remote IPAM APIs
//! (`drivers/remote/api`, `ipams/remote/api`) as one shape, so that a body is read with Go's key
//! matching (`gojson`: exact, else case-insensitive, the last duplicate winning) and handed on
//! with every known key spelled as dockerd spells it. The field names of the calls never fold into
//! each other, so one union shape decides each key as the call's own struct would. Maps
//! (`Options`, `AuxAddresses`) keep their keys exactly, as Go maps do; unknown keys are dropped, as
//! Go drops them. Leaves stay `Value`s: `wire` checks them and names the field at fault.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Every top-level field of every call's request.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default)]
struct Body {
    #[serde(rename = "NetworkID", skip_serializing_if = "Option::is_none")]
    network_id: Option<Value>,
    #[serde(rename = "EndpointID", skip_serializing_if = "Option::is_none")]
    endpoint_id: Option<Value>,
    #[serde(rename = "SandboxKey", skip_serializing_if = "Option::is_none")]
    sandbox_key: Option<Value>,
    #[serde(rename = "Options", skip_serializing_if = "Option::is_none")]
    options: Option<Value>,
    #[serde(rename = "IPv4Data", skip_serializing_if = "Option::is_none")]
    ipv4_data: Option<Vec<IpamData>>,
    #[serde(rename = "IPv6Data", skip_serializing_if = "Option::is_none")]
    ipv6_data: Option<Vec<IpamData>>,
    #[serde(rename = "Interface", skip_serializing_if = "Option::is_none")]
    interface: Option<Interface>,
    #[serde(rename = "AddressSpace", skip_serializing_if = "Option::is_none")]
    address_space: Option<Value>,
    #[serde(rename = "Pool", skip_serializing_if = "Option::is_none")]
    pool: Option<Value>,
    #[serde(rename = "SubPool", skip_serializing_if = "Option::is_none")]
    sub_pool: Option<Value>,
    #[serde(rename = "V6", skip_serializing_if = "Option::is_none")]
    v6: Option<Value>,
    #[serde(rename = "PoolID", skip_serializing_if = "Option::is_none")]
    pool_id: Option<Value>,
    #[serde(rename = "Address", skip_serializing_if = "Option::is_none")]
    address: Option<Value>,
}

/// `driverapi.IPAMData` as the remote API writes it.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default, rename_all = "PascalCase")]
struct IpamData {
    #[serde(skip_serializing_if = "Option::is_none")]
    address_space: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pool: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gateway: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aux_addresses: Option<Value>,
}

/// `api.EndpointInterface`.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default)]
struct Interface {
    #[serde(rename = "Address", skip_serializing_if = "Option::is_none")]
    address: Option<Value>,
    #[serde(rename = "AddressIPv6", skip_serializing_if = "Option::is_none")]
    address_ipv6: Option<Value>,
    #[serde(rename = "MacAddress", skip_serializing_if = "Option::is_none")]
    mac_address: Option<Value>,
}

/// A request body read as Go reads it, written back with dockerd's key spelling; the error names
/// the field by its path (`body` for the document itself).
pub fn canonical(body: &[u8]) -> Result<Value, super::WireError> {
    let shaped: Body = gojson::from_slice(body).map_err(|e| {
        if e.is_syntax() {
            super::WireError::new("body", format!("is not valid JSON: {}", e.message()))
        } else if e.path().is_empty() {
            super::WireError::new("body", "must be a JSON object")
        } else {
            super::WireError::new(e.path(), e.message())
        }
    })?;
    Ok(serde_json::to_value(shaped).unwrap_or_default())
}
