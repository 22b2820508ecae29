//! Unix-socket HTTP/1.1 listener around a request handler, with graceful shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::UnixListener;

/// A request handler shared by every connection.
pub trait Handler: Send + Sync + 'static {
    /// Answers one request.
    fn handle(&self, req: Request<Incoming>) -> impl Future<Output = Response<Full<Bytes>>> + Send;
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

/// Binds `path` (replacing a stale socket file, creating the parent directory) with `mode`.
pub fn bind(path: &Path, mode: u32) -> Result<UnixListener, BindError> {
    let err = |source| BindError {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let listener = UnixListener::bind(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(err)?;
    Ok(listener)
}

/// Serves connections until `shutdown` resolves, then lets in-flight requests finish (at most
/// `grace`) and removes the socket file.
pub async fn serve<H: Handler>(
    listener: UnixListener,
    path: PathBuf,
    handler: Arc<H>,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) {
    run(listener, path.clone(), Some(path), handler, shutdown, grace).await;
}

/// Like [`serve`] for a socket this process did not bind (socket activation): the socket file
/// belongs to the service manager and is left in place. `path` only names it in logs.
pub async fn serve_inherited<H: Handler>(
    listener: UnixListener,
    path: PathBuf,
    handler: Arc<H>,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) {
    run(listener, path, None, handler, shutdown, grace).await;
}

async fn run<H: Handler>(
    listener: UnixListener,
    path: PathBuf,
    unlink: Option<PathBuf>,
    handler: Arc<H>,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) {
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((s, _)) => s,
                    Err(e) => {
                        tracing::warn!(socket = %path.display(), "accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let h = handler.clone();
                let svc = service_fn(move |req| {
                    let h = h.clone();
                    async move { Ok::<_, Infallible>(h.handle(req).await) }
                });
                let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), svc);
                let watched = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = watched.await {
                        tracing::debug!("connection ended with error: {e}");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    if let Some(p) = unlink {
        let _ = std::fs::remove_file(p);
    }
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(socket = %path.display(), "in-flight requests did not finish in {grace:?}");
    }
}
