//! The CNI commands: each turns (environment, configuration) into daemon calls and a result.

use std::collections::HashSet;

use serde::Deserialize;
use serde_json::{json, Value};
use shimnet_compat::cni::error::code;
use shimnet_compat::cni::result::merge_dns;
use shimnet_compat::cni::result::AttachReply;
use shimnet_compat::cni::translate::AttachEnv;
use shimnet_compat::cni::{
    args, attach_request, network_name, network_target, CniError, CniResult, Endpoint, NetConf,
    NetworkInfo, NetworkTarget, Version, SUPPORTED_VERSIONS,
};
use shimnet_wire::{EndpointAttach, NetworkAttach};

use crate::daemon::{network_missing, route_unknown, Daemon};
use crate::delegate;
use crate::env::{Command, Env};

/// An error with the version label its object should carry.
pub type Failure = (CniError, String);

/// The `cniVersion` the caller asked for, as the label of a reply that comes before (or instead
/// of) a decoded configuration; 1.1.0 when there is none.
fn requested_version(stdin: &[u8]) -> String {
    serde_json::from_slice::<Value>(stdin)
        .ok()
        .and_then(|v| {
            v.get("cniVersion")
                .and_then(Value::as_str)
                .map(String::from)
        })
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "1.1.0".into())
}

/// Runs one invocation; `Ok(Some(json))` is printed, `Ok(None)` prints nothing. On the way to a
/// result the configuration is decoded once; the requested version is looked up separately only
/// for a reply made without it (VERSION, errors before the version is known).
pub fn dispatch(env: Result<Env, CniError>, stdin: &[u8]) -> Result<Option<Value>, Failure> {
    let env = env.map_err(|e| (e, requested_version(stdin)))?;
    if env.command == Command::Version {
        return Ok(Some(json!({
            "cniVersion": requested_version(stdin),
            "supportedVersions": SUPPORTED_VERSIONS,
        })));
    }
    let conf = NetConf::decode(stdin).map_err(|e| (e, requested_version(stdin)))?;
    let version = shimnet_compat::cni::negotiate(conf.cni_version.as_deref(), &conf.cni_versions)
        .map_err(|e| (e, requested_version(stdin)))?;
    let label = version.as_str().to_string();
    let out = match env.command {
        Command::Add => add(&env, &conf, stdin, version),
        Command::Del => del(&env, &conf, stdin).map(|()| None),
        Command::Check => check(&env, &conf, version).map(|()| None),
        Command::Status => status(&conf, version).map(|()| None),
        Command::Gc => gc(&conf, version).map(|()| None),
        Command::Version => unreachable!("handled above"),
    };
    out.map_err(|e| (e, label))
}

/// Path-safe check of an identifier that goes into a URL path.
fn path_safe(what: &str, v: &str) -> Result<(), CniError> {
    if v.bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        Ok(())
    } else {
        Err(CniError::env(format!(
            "{what} {v:?} may only contain ASCII letters, digits, '-', '_' and '.'"
        )))
    }
}

fn endpoint_path(net: &str, env: &Env) -> Result<String, CniError> {
    path_safe("CNI_CONTAINERID", &env.container_id)?;
    path_safe("CNI_IFNAME", &env.ifname)?;
    path_safe("network name", net)?;
    Ok(format!("/v1/networks/{net}/endpoints/{}", env.container_id))
}

#[derive(Deserialize)]
struct NetworkReply {
    network: NetworkInfo,
}

fn add(
    env: &Env,
    conf: &NetConf,
    stdin: &[u8],
    version: Version,
) -> Result<Option<Value>, CniError> {
    let cni_args = args::parse(&env.args)?;
    let daemon = Daemon::new(conf.socket(), code::TRY_AGAIN_LATER);
    let delegated_kind = conf.delegated_ipam();
    let delegated = match delegated_kind {
        Some(kind) => Some(delegate::addresses(&delegate::run(
            kind, "ADD", env, stdin,
        )?)?),
        None => None,
    };
    let attached = (|| {
        let target = network_target(conf, delegated.as_deref())?;
        let ips: Vec<_> = delegated.iter().flatten().map(|(a, _)| a.ip()).collect();
        let attach = attach_request(
            conf,
            AttachEnv {
                container_id: &env.container_id,
                netns: &env.netns,
                ifname: &env.ifname,
            },
            &cni_args,
            &ips,
        )?;
        path_safe("CNI_CONTAINERID", &env.container_id)?;
        attach_to(&daemon, target, attach)
    })();
    let (net, ep) = match attached {
        Ok(x) => x,
        Err(e) => {
            if let Some(kind) = delegated_kind {
                let _ = delegate::run(kind, "DEL", env, stdin);
            }
            return Err(e);
        }
    };
    let routes = if conf.network.is_some() {
        Vec::new()
    } else {
        conf.ipam
            .as_ref()
            .map(|i| i.routes.clone())
            .unwrap_or_default()
    };
    let dns = merge_dns(conf.dns.as_ref(), ep.dns.as_ref());
    let ours = CniResult::from_endpoint(&net, &ep, &env.ifname, &routes, dns.as_ref());
    let result = match &conf.prev_result {
        Some(prev) if !prev.is_null() => CniResult::chain(CniResult::parse(prev)?, ours),
        _ => ours,
    };
    Ok(Some(result.to_json(version)))
}

/// The CNI error of a `network` key that names no daemon network.
fn no_such_network(name: &str) -> CniError {
    CniError::new(
        code::NOT_FOUND,
        format!("shimnet network {name:?} (the \"network\" key) does not exist; create it with `shimnetctl network create` or fix the name"),
    )
}

/// Ensures (or looks up) the network and attaches in one request,
/// `POST /v1/networks/{name}/attach`; a daemon older than that route gets the two calls it
/// knows.
fn attach_to(
    daemon: &Daemon,
    target: NetworkTarget,
    endpoint: EndpointAttach,
) -> Result<(NetworkInfo, Endpoint), CniError> {
    let (name, ensure) = match target {
        NetworkTarget::Ensure(body) => (body.name.clone(), Some(*body)),
        NetworkTarget::Existing(name) => (name, None),
    };
    path_safe("network name", &name)?;
    let existing = ensure.is_none();
    let path = format!("/v1/networks/{name}/attach");
    let body = NetworkAttach { ensure, endpoint };
    match daemon.try_call::<AttachReply>("POST", &path, Some(&body)) {
        Ok(r) => Ok((r.network, r.endpoint)),
        Err(e) if route_unknown(&e) => two_calls(daemon, &name, body),
        Err(e) if existing && network_missing(&e) => Err(no_such_network(&name)),
        Err(e) => Err(daemon.map(e, "POST", &path)),
    }
}

/// ADD as a daemon without the one-request route takes it: ensure or look up, then attach.
fn two_calls(
    daemon: &Daemon,
    name: &str,
    body: NetworkAttach,
) -> Result<(NetworkInfo, Endpoint), CniError> {
    let net: NetworkInfo = match &body.ensure {
        Some(n) => daemon.call("PUT", &format!("/v1/networks/{name}"), Some(n))?,
        None => {
            daemon
                .call_opt::<NetworkReply>("GET", &format!("/v1/networks/{name}"), None::<&()>)?
                .ok_or_else(|| no_such_network(name))?
                .network
        }
    };
    let ep: Endpoint = daemon.call(
        "POST",
        &format!("/v1/networks/{}/endpoints", net.name),
        Some(&body.endpoint),
    )?;
    Ok((net, ep))
}

fn del(env: &Env, conf: &NetConf, stdin: &[u8]) -> Result<(), CniError> {
    let name = network_name(conf)?;
    let daemon = Daemon::new(conf.socket(), code::TRY_AGAIN_LATER);
    let path = format!("{}?ifname={}", endpoint_path(&name, env)?, env.ifname);
    daemon.call::<Value>("DELETE", &path, None::<&()>)?;
    if let Some(kind) = conf.delegated_ipam() {
        delegate::run(kind, "DEL", env, stdin)?;
    }
    Ok(())
}

#[derive(Deserialize)]
struct CheckReply {
    ok: bool,
    problems: Vec<String>,
    /// The attachment itself (absent from daemons older than this field: then one more call).
    #[serde(default)]
    endpoint: Option<Endpoint>,
}

fn check(env: &Env, conf: &NetConf, version: Version) -> Result<(), CniError> {
    if !version.has_check() {
        return Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!("CHECK is not defined for cniVersion {version}; use 0.4.0 or later"),
        ));
    }
    let name = network_name(conf)?;
    let daemon = Daemon::new(conf.socket(), code::TRY_AGAIN_LATER);
    let base = endpoint_path(&name, env)?;
    let q = format!("?ifname={}", env.ifname);
    let missing = || {
        CniError::new(
            code::UNKNOWN_CONTAINER,
            format!(
                "shimnetd has no attachment of container {} ({}) to network {name}; run ADD again",
                env.container_id, env.ifname
            ),
        )
    };
    let reply: CheckReply = daemon
        .call_opt("GET", &format!("{base}/check{q}"), None::<&()>)?
        .ok_or_else(missing)?;
    let ep: Endpoint = match reply.endpoint {
        Some(ep) => ep,
        None => daemon
            .call_opt("GET", &format!("{base}{q}"), None::<&()>)?
            .ok_or_else(missing)?,
    };
    let mut problems = reply.problems;
    if ep.netns != env.netns {
        problems.push(format!(
            "the attachment is in namespace {}, not CNI_NETNS {}",
            ep.netns, env.netns
        ));
    }
    if let Some(prev) = conf.prev_result.as_ref().filter(|p| !p.is_null()) {
        let prev = CniResult::parse(prev)?;
        if !prev.has_address(&ep.ipv4) {
            problems.push(format!(
                "prevResult does not list the attachment's address {}",
                ep.ipv4
            ));
        }
    }
    if reply.ok && problems.is_empty() {
        return Ok(());
    }
    Err(CniError::new(
        code::CHECK_FAILED,
        format!(
            "attachment of {} ({}) to {name} has drifted: {}; run DEL and ADD to rebuild it",
            env.container_id,
            env.ifname,
            problems.join("; ")
        ),
    ))
}

fn status(conf: &NetConf, version: Version) -> Result<(), CniError> {
    if !version.has_status_and_gc() {
        return Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!("STATUS is not defined for cniVersion {version}; use 1.1.0"),
        ));
    }
    let daemon = Daemon::new(conf.socket(), code::NOT_AVAILABLE);
    daemon
        .call::<Value>("GET", "/v1/health", None::<&()>)
        .map_err(|e| {
            if e.code == code::NOT_AVAILABLE {
                e
            } else {
                CniError::new(code::NOT_AVAILABLE, e.msg).with_details(e.details)
            }
        })?;
    Ok(())
}

#[derive(Deserialize)]
struct EpKey {
    container_id: String,
    ifname: String,
}

#[derive(Deserialize)]
struct EpListItem {
    key: EpKey,
}

fn gc(conf: &NetConf, version: Version) -> Result<(), CniError> {
    if !version.has_status_and_gc() {
        return Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!("GC is not defined for cniVersion {version}; use 1.1.0"),
        ));
    }
    let name = network_name(conf)?;
    path_safe("network name", &name)?;
    let daemon = Daemon::new(conf.socket(), code::TRY_AGAIN_LATER);
    let Some(eps) = daemon.call_opt::<Vec<EpListItem>>(
        "GET",
        &format!("/v1/networks/{name}/endpoints"),
        None::<&()>,
    )?
    else {
        return Ok(());
    };
    let valid: HashSet<(&str, &str)> = conf
        .valid_attachments
        .iter()
        .map(|a| (a.container_id.as_str(), a.ifname.as_str()))
        .collect();
    let mut errors = Vec::new();
    for ep in eps
        .iter()
        .filter(|e| !valid.contains(&(e.key.container_id.as_str(), e.key.ifname.as_str())))
    {
        let path = format!(
            "/v1/networks/{name}/endpoints/{}?ifname={}",
            ep.key.container_id, ep.key.ifname
        );
        if let Err(e) = daemon.call::<Value>("DELETE", &path, None::<&()>) {
            errors.push(e);
        }
    }
    match errors.len() {
        0 => Ok(()),
        1 => Err(errors.remove(0)),
        n => Err(CniError::new(
            errors[0].code,
            format!(
                "GC: {n} attachments could not be removed: {}",
                errors
                    .iter()
                    .map(|e| e.msg.as_str())
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        )),
    }
}
