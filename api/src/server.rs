//! Unix-socket HTTP/1.1 listener around a request handler: socket creation with a safe mode,
//! per-socket limits that protect the daemon from slow or hostile clients, graceful shutdown.
//!
//! Limits ([`Limits`]): at most `max_connections` open connections (further clients wait in the
//! kernel's accept backlog until one closes), a request head must arrive within
//! `header_read_timeout` and its body within `body_read_timeout`, a body larger than
//! `max_body_bytes` is refused with 413 without being read, a connection idle for
//! `idle_timeout` is closed, and at most `max_concurrent_requests` requests run in the handler at
//! once (further requests queue in arrival order; they are never refused, never starved).

use std::convert::Infallible;
use std::future::Future;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::UnixListener;
use tokio::sync::{watch, Semaphore};

/// A request handler shared by every connection.
pub trait Handler: Send + Sync + 'static {
    /// Answers one request (its body already read, within the limits).
    fn handle(
        &self,
        req: Request<Full<Bytes>>,
    ) -> impl Future<Output = Response<Full<Bytes>>> + Send;

    /// An error reply in this front door's shape, for failures the server itself detects
    /// (body too large 413, body too slow 408).
    fn reject(&self, status: StatusCode, message: String) -> Response<Full<Bytes>>;
}

/// Limits of one socket's server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Open connections at most; more wait to be accepted.
    pub max_connections: usize,
    /// Requests in the handler at once; more queue (FIFO).
    pub max_concurrent_requests: usize,
    /// Largest request body; larger gets 413.
    pub max_body_bytes: usize,
    /// Time for a request head (request line and headers) to arrive.
    pub header_read_timeout: Duration,
    /// Time for a request body to arrive.
    pub body_read_timeout: Duration,
    /// A connection with no request in flight for this long is closed.
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 256,
            max_concurrent_requests: 64,
            max_body_bytes: 1 << 20,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// Binding the socket failed.
#[derive(Debug, thiserror::Error)]
#[error("socket {path}: {source}")]
pub struct BindError {
    /// Socket path.
    pub path: PathBuf,
    /// Cause.
    #[source]
    pub source: std::io::Error,
}

/// Binds `path` with `mode` (world bits are always cleared) and, when given, group `gid`;
/// replaces a stale socket file and creates the parent directory.
///
/// The socket is bound inside a private (0700) folder next to `path`, given its mode and group
/// there, and renamed into place: it is never reachable with a wider mode, not even briefly.
pub fn bind(path: &Path, mode: u32, gid: Option<u32>) -> Result<UnixListener, BindError> {
    let err = |source| BindError {
        path: path.to_path_buf(),
        source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir).map_err(err)?;
    let name = path
        .file_name()
        .ok_or_else(|| err(std::io::Error::other("socket path has no file name")))?;
    let private = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&private);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&private)
        .map_err(err)?;
    let staged = private.join(name);
    let result = (|| {
        let listener = UnixListener::bind(&staged)?;
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(mode & 0o770))?;
        if let Some(g) = gid {
            std::os::unix::fs::chown(&staged, None, Some(g))?;
        }
        std::fs::rename(&staged, path)?;
        Ok(listener)
    })();
    let _ = std::fs::remove_dir_all(&private);
    result.map_err(err)
}

/// Per-connection activity: requests in flight and the time of the last one (ms since start).
struct Activity {
    start: Instant,
    in_flight: AtomicUsize,
    last_ms: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        self.last_ms
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
    fn idle_for(&self) -> Option<Duration> {
        (self.in_flight.load(Ordering::Relaxed) == 0).then(|| {
            self.start
                .elapsed()
                .saturating_sub(Duration::from_millis(self.last_ms.load(Ordering::Relaxed)))
        })
    }
}

/// Reads a request's body within the limits, then runs the handler under the request permit.
async fn answer<H: Handler>(
    h: &H,
    req: Request<Incoming>,
    limits: &Limits,
    permits: &Semaphore,
) -> Response<Full<Bytes>> {
    let declared = req.body().size_hint().upper();
    if declared.is_some_and(|n| n > limits.max_body_bytes as u64) {
        let mut r = h.reject(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "request body: {} bytes is more than the limit of {} bytes",
                declared.unwrap_or_default(),
                limits.max_body_bytes
            ),
        );
        // The unread body cannot be skipped cheaply: close the connection after the reply.
        r.headers_mut()
            .insert(hyper::header::CONNECTION, "close".parse().expect("header"));
        return r;
    }
    let (parts, body) = req.into_parts();
    let collected = tokio::time::timeout(
        limits.body_read_timeout,
        Limited::new(body, limits.max_body_bytes).collect(),
    )
    .await;
    let bytes = match collected {
        Ok(Ok(c)) => c.to_bytes(),
        Ok(Err(e)) => {
            let too_large = e
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some();
            let (status, message) = if too_large {
                (
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!(
                        "request body: more than the limit of {} bytes",
                        limits.max_body_bytes
                    ),
                )
            } else {
                (StatusCode::BAD_REQUEST, format!("request body: {e}"))
            };
            let mut r = h.reject(status, message);
            r.headers_mut()
                .insert(hyper::header::CONNECTION, "close".parse().expect("header"));
            return r;
        }
        Err(_) => {
            let mut r = h.reject(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "request body: not received within {:?}",
                    limits.body_read_timeout
                ),
            );
            r.headers_mut()
                .insert(hyper::header::CONNECTION, "close".parse().expect("header"));
            return r;
        }
    };
    let _permit = permits
        .acquire()
        .await
        .expect("request semaphore is never closed");
    h.handle(Request::from_parts(parts, Full::new(bytes))).await
}

/// Serves connections within `limits` until `shutdown` resolves, then lets in-flight requests
/// finish (at most `grace`) and removes the socket file.
pub async fn serve<H: Handler>(
    listener: UnixListener,
    path: PathBuf,
    handler: Arc<H>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) {
    run(
        listener,
        path.clone(),
        Some(path),
        handler,
        limits,
        shutdown,
        grace,
    )
    .await;
}

/// Like [`serve`] for a socket this process did not bind (socket activation): the socket file
/// belongs to the service manager and is left in place. `path` only names it in logs.
pub async fn serve_inherited<H: Handler>(
    listener: UnixListener,
    path: PathBuf,
    handler: Arc<H>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) {
    run(listener, path, None, handler, limits, shutdown, grace).await;
}

async fn run<H: Handler>(
    listener: UnixListener,
    path: PathBuf,
    unlink: Option<PathBuf>,
    handler: Arc<H>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) {
    let conns = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let requests = Arc::new(Semaphore::new(limits.max_concurrent_requests.max(1)));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = conns.clone().acquire_owned() => p.expect("connection semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(socket = %path.display(), "accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        while tasks.try_join_next().is_some() {}
        let (h, requests, mut stop) = (handler.clone(), requests.clone(), stop_rx.clone());
        tasks.spawn(async move {
            let _permit = permit;
            let activity = Arc::new(Activity {
                start: Instant::now(),
                in_flight: AtomicUsize::new(0),
                last_ms: AtomicU64::new(0),
            });
            let act = activity.clone();
            let svc = service_fn(move |req| {
                let (h, requests, act) = (h.clone(), requests.clone(), act.clone());
                async move {
                    act.in_flight.fetch_add(1, Ordering::Relaxed);
                    let r = answer(&*h, req, &limits, &requests).await;
                    act.touch();
                    act.in_flight.fetch_sub(1, Ordering::Relaxed);
                    Ok::<_, Infallible>(r)
                }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .serve_connection(TokioIo::new(stream), svc);
            tokio::pin!(conn);
            let mut tick = tokio::time::interval(limits.idle_timeout.min(Duration::from_secs(1)));
            let mut closing = false;
            loop {
                tokio::select! {
                    r = conn.as_mut() => {
                        if let Err(e) = r {
                            tracing::debug!("connection ended with error: {e}");
                        }
                        break;
                    }
                    _ = tick.tick(), if !closing => {
                        if activity.idle_for().is_some_and(|d| d >= limits.idle_timeout) {
                            closing = true;
                            conn.as_mut().graceful_shutdown();
                        }
                    }
                    _ = stop.wait_for(|s| *s), if !closing => {
                        closing = true;
                        conn.as_mut().graceful_shutdown();
                    }
                }
            }
        });
    }
    drop(listener);
    if let Some(p) = unlink {
        let _ = std::fs::remove_file(p);
    }
    let _ = stop_tx.send(true);
    let drained = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(grace, drained).await.is_err() {
        tracing::warn!(socket = %path.display(), "in-flight requests did not finish in {grace:?}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn socket_is_created_without_world_bits_and_replaces_a_stale_file() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("run/api.sock");
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, b"stale").unwrap();
            let gid = nix_gid();
            let _l = bind(&path, 0o666, Some(gid)).unwrap();
            let md = std::fs::metadata(&path).unwrap();
            assert_eq!(md.mode() & 0o777, 0o660, "world bits cleared");
            assert_eq!(md.gid(), gid);
            let left: Vec<_> = std::fs::read_dir(path.parent().unwrap())
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(left, vec![std::ffi::OsString::from("api.sock")]);
        });
    }

    fn nix_gid() -> u32 {
        std::fs::metadata("/proc/self").unwrap().gid()
    }
}
