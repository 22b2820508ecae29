//! HTTP plumbing shared by both front doors: JSON replies, reading a body within the limit, and
//! the call time limit every engine call runs under.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Body;
use hyper::{Response, StatusCode};
use serde::Serialize;

/// Largest accepted request body.
pub const MAX_BODY: usize = 1 << 20;

/// A reply of `content_type` carrying `value` as JSON.
pub fn json_reply(
    status: StatusCode,
    content_type: &'static str,
    value: &impl Serialize,
) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec(value).expect("serialisable reply");
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("valid response")
}

/// An `application/json` reply.
pub fn json_response(status: StatusCode, value: &impl Serialize) -> Response<Full<Bytes>> {
    json_reply(status, "application/json", value)
}

/// Why a body could not be read: it is larger than [`MAX_BODY`] (or broken off).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyTooLarge(pub String);

/// Reads a body up to [`MAX_BODY`].
pub async fn read_body<B>(body: B) -> Result<Bytes, BodyTooLarge>
where
    B: Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    match Limited::new(body, MAX_BODY).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) => Err(BodyTooLarge(format!(
            "request body: {e} (limit {MAX_BODY} bytes)"
        ))),
    }
}

/// A call that did not give its answer within its time limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimedOut {
    /// Still running after the limit; it finishes in the background.
    Late {
        /// What ran (a path).
        call: String,
        /// The limit.
        limit: Duration,
    },
    /// The task itself failed (panicked).
    Failed {
        /// What ran (a path).
        call: String,
        /// The task's failure.
        message: String,
    },
}

impl TimedOut {
    /// 503 for a late call, 500 for a failed one.
    pub fn status(&self) -> StatusCode {
        match self {
            TimedOut::Late { .. } => StatusCode::SERVICE_UNAVAILABLE,
            TimedOut::Failed { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl std::fmt::Display for TimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TimedOut::Late { call, limit } => write!(
                f,
                "{call} did not finish within {limit:?}; it keeps running in the background, retry later"
            ),
            TimedOut::Failed { call, message } => write!(f, "{call} failed: {message}"),
        }
    }
}

/// Runs `work` as its own task and waits for it at most `limit`: on time-out the caller gets
/// [`TimedOut::Late`] while the task still finishes (so engine state is never left half-built).
/// Every engine call of every front door runs through here.
pub async fn time_boxed<T: Send + 'static>(
    call: &str,
    limit: Duration,
    work: impl std::future::Future<Output = T> + Send + 'static,
) -> Result<T, TimedOut> {
    match tokio::time::timeout(limit, tokio::spawn(work)).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(join)) => Err(TimedOut::Failed {
            call: call.to_string(),
            message: join.to_string(),
        }),
        Err(_) => Err(TimedOut::Late {
            call: call.to_string(),
            limit,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    #[tokio::test(flavor = "current_thread")]
    async fn slow_work_is_answered_in_time_and_still_finishes() {
        let done = Arc::new(AtomicBool::new(false));
        let d = done.clone();
        let start = std::time::Instant::now();
        let r = time_boxed("/x/y", Duration::from_millis(50), async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            d.store(true, Ordering::SeqCst);
        })
        .await;
        let e = r.unwrap_err();
        assert!(
            start.elapsed() < Duration::from_millis(250),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(e.to_string().contains("/x/y did not finish"), "{e}");
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(done.load(Ordering::SeqCst), "the work was cancelled");
        assert_eq!(
            time_boxed("/x", Duration::from_secs(1), async { 7 }).await,
            Ok(7)
        );
    }
}
