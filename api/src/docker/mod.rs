//! The Docker plugin front door (`<plugin_dir>/shimnet.sock`): libnetwork's remote network driver
//! and remote IPAM protocols over one engine.
//!
//! Each request is decoded into a typed call by `shimnet_compat::docker::wire` (400 naming the
//! field, 404 for unknown calls), answered at once if it needs no engine, else run as a task on
//! the engine and awaited for at most the configured time ([`crate::http::time_boxed`], as for the
//! REST door) — a slow engine answers an error, it never holds dockerd's socket. Errors are
//! `{"Err": "..."}` with a non-200 status, which both drivers of dockerd understand; the status
//! comes from the one engine-error classification ([`crate::error::classify`]). [`reply`] builds
//! the JSON bodies.

pub mod calls;
pub mod reply;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::error::classify;
use crate::http::{read_body, time_boxed, TimedOut};
use crate::metrics::{FrontDoor, Metrics};
use http_body_util::Full;
use hyper::body::Body;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use ipnetwork::Ipv4Network;
use runtime_net::engine::{Engine, EngineError};
use runtime_net::NetworkName;
use serde_json::{json, Value};
use shimnet_compat::docker::wire::{decode, is_known_call, Call, DecodeError};
use shimnet_compat::docker::CONTENT_TYPE;

/// Name of the plugin socket inside the plugin directory (`docker network create -d shimnet`).
pub const SOCKET_NAME: &str = "shimnet.sock";

/// Settings of the plugin front door.
#[derive(Debug, Clone)]
pub struct PluginConfig {
    /// Longest time one call may wait for the engine before answering an error.
    pub call_timeout: Duration,
    /// Pools the IPAM driver carves a subnet from when `docker network create` names none.
    pub default_pools: Vec<(Ipv4Network, u8)>,
    /// docker0-compatible mode: the shimnet network a Docker network asking for bridge
    /// `docker0` is mapped onto, and the file remembering which Docker network that is.
    pub docker0: Option<Docker0Adoption>,
}

/// The docker0 network shimnet manages, adopted by one Docker network.
#[derive(Debug, Clone)]
pub struct Docker0Adoption {
    /// The shimnet network (`docker0`).
    pub network: NetworkName,
    /// Bridge name that selects it.
    pub bridge: String,
    /// File holding the adopting Docker network id.
    pub id_file: PathBuf,
}

/// A failed call: status and message for `{"Err": ...}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginError {
    /// HTTP status.
    pub status: StatusCode,
    /// Message.
    pub message: String,
}

impl PluginError {
    /// 400 with a message naming the field.
    pub fn invalid(message: impl Into<String>) -> Self {
        PluginError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }
}

impl From<EngineError> for PluginError {
    fn from(e: EngineError) -> Self {
        PluginError {
            status: classify(&e).0,
            message: format!("shimnet: {e}"),
        }
    }
}

impl From<TimedOut> for PluginError {
    fn from(e: TimedOut) -> Self {
        PluginError {
            status: e.status(),
            message: format!("shimnet: {e}"),
        }
    }
}

/// Metrics label of a call: the call (`NetworkDriver.Join`) when known, else `other`, so label
/// values stay a fixed set whatever is sent.
pub fn operation_of(path: &str) -> &str {
    if is_known_call(path) {
        path.trim_start_matches('/')
    } else {
        "other"
    }
}

/// A plugin reply with the plugin content type.
pub fn plugin_response(status: StatusCode, value: &Value) -> Response<Full<Bytes>> {
    crate::http::json_reply(status, CONTENT_TYPE, value)
}

/// The error reply.
pub fn error_response(e: &PluginError) -> Response<Full<Bytes>> {
    plugin_response(e.status, &json!({ "Err": e.message }))
}

/// What a decoded call needs next.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Answered without the engine.
    Reply(Value),
    /// Must run on the engine.
    Engine(Call),
}

/// Decodes a call (400 naming the field, 404 for unknown calls) and answers it if it needs no
/// engine.
pub fn prepare(path: &str, body: &[u8]) -> Result<Step, PluginError> {
    let call = decode(path, body).map_err(|e| match e {
        DecodeError::UnknownCall(p) => PluginError {
            status: StatusCode::NOT_FOUND,
            message: format!("shimnet: unknown plugin call {p}"),
        },
        DecodeError::Invalid(w) => PluginError::invalid(format!("shimnet: {path}: {w}")),
    })?;
    Ok(match reply::without_engine(&call) {
        Some(v) => Step::Reply(v),
        None => Step::Engine(call),
    })
}

/// The plugin handler over one engine.
pub struct PluginApi {
    engine: Arc<Engine>,
    metrics: Arc<Metrics>,
    cfg: PluginConfig,
    /// Docker network id adopting the docker0 network (docker0-compatible mode).
    docker0_id: Mutex<Option<String>>,
}

impl PluginApi {
    /// A handler serving `engine`.
    pub fn new(engine: Arc<Engine>, cfg: PluginConfig) -> Self {
        let adopted = cfg
            .docker0
            .as_ref()
            .and_then(|d| std::fs::read_to_string(&d.id_file).ok())
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty());
        PluginApi {
            engine,
            metrics: Arc::new(Metrics::new()),
            cfg,
            docker0_id: Mutex::new(adopted),
        }
    }

    /// Counts calls into `metrics` (`front_door="docker"`) instead of a private registry.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Answers one request; never fails (errors become `{"Err": ...}` replies).
    pub async fn respond<B>(&self, req: Request<B>) -> Response<Full<Bytes>>
    where
        B: Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let path = req.uri().path().to_string();
        let start = std::time::Instant::now();
        let reply = match read_body(req.into_body()).await {
            Err(e) => error_response(&PluginError {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                message: format!("shimnet: {}", e.0),
            }),
            Ok(body) => match self.answer(&path, &body).await {
                Ok(v) => plugin_response(StatusCode::OK, &v),
                Err(e) => {
                    tracing::warn!(call = %path, status = e.status.as_u16(), "docker call failed: {}", e.message);
                    error_response(&e)
                }
            },
        };
        let elapsed = start.elapsed();
        self.metrics.record(
            FrontDoor::Docker,
            operation_of(&path),
            reply.status().is_success(),
            elapsed,
        );
        tracing::debug!(call = %path, status = reply.status().as_u16(), elapsed_us = elapsed.as_micros() as u64, "docker");
        reply
    }

    /// The reply body of one call.
    pub async fn answer(&self, path: &str, body: &[u8]) -> Result<Value, PluginError> {
        match prepare(path, body)? {
            Step::Reply(v) => Ok(v),
            Step::Engine(call) => self.with_engine(path, call).await,
        }
    }

    /// Runs the engine part of `call` as a task and waits at most the configured time. The task
    /// finishes on its own even when the wait ends first, so state never stays half-built.
    async fn with_engine(&self, path: &str, call: Call) -> Result<Value, PluginError> {
        let engine = self.engine.clone();
        let ctx = calls::Context {
            default_pools: self.cfg.default_pools.clone(),
            docker0: self.cfg.docker0.clone(),
            docker0_id: self.docker0_id.lock().expect("docker0 id lock").clone(),
        };
        let work = async move { calls::run(&engine, &ctx, call).await };
        let (result, adopted) = time_boxed(path, self.cfg.call_timeout, work).await?;
        if let Some(change) = adopted {
            self.remember_docker0(change);
        }
        result
    }

    fn remember_docker0(&self, change: Option<String>) {
        let Some(d) = &self.cfg.docker0 else { return };
        let res = match &change {
            Some(id) => std::fs::write(&d.id_file, id),
            None => std::fs::remove_file(&d.id_file).or_else(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    Ok(())
                } else {
                    Err(e)
                }
            }),
        };
        if let Err(e) = res {
            tracing::error!(file = %d.id_file.display(), "cannot record the docker0 adoption: {e}");
        }
        *self.docker0_id.lock().expect("docker0 id lock") = change;
    }
}

impl crate::server::Handler for PluginApi {
    async fn handle(&self, req: Request<Full<Bytes>>) -> Response<Full<Bytes>> {
        self.respond(req).await
    }

    fn reject(&self, status: StatusCode, message: String) -> Response<Full<Bytes>> {
        error_response(&PluginError {
            status,
            message: format!("shimnet: {message}"),
        })
    }
}
