//! A small blocking HTTP/1.1 client over a unix socket, for `shimnetctl` and the CNI plugin:
//! one request per connection (`Connection: close`), no async runtime, fast to start.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use shimnet_wire::ErrorBody;

/// Client failures.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket could not be reached (daemon not running?).
    #[error("cannot connect to shimnetd at {path}: {source}")]
    Connect {
        /// Socket path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Reading or writing failed after connecting.
    #[error("talking to shimnetd at {path}: {source}")]
    Io {
        /// Socket path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The reply was not valid HTTP or JSON.
    #[error("bad reply from shimnetd: {0}")]
    BadReply(String),
    /// The daemon answered with an error.
    #[error("{message} (HTTP {status}, {code})")]
    Api {
        /// HTTP status.
        status: u16,
        /// Stable error code.
        code: String,
        /// Message.
        message: String,
        /// Field at fault.
        field: Option<String>,
    },
}

/// A raw reply.
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Body bytes.
    pub body: Vec<u8>,
}

/// Blocking client of one unix socket.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
    timeout: Duration,
    user_agent: String,
}

impl Client {
    /// A client of `socket` with a 60 s I/O timeout.
    pub fn new(socket: impl AsRef<Path>) -> Self {
        Client {
            socket: socket.as_ref().to_path_buf(),
            timeout: Duration::from_secs(60),
            user_agent: format!("shimnet-client/{}", env!("CARGO_PKG_VERSION")),
        }
    }

    /// Changes the `User-Agent` header (the CNI plugin sends `shimnet-cni/<version>` so the
    /// daemon counts its calls under `front_door="cni"`).
    pub fn with_user_agent(mut self, user_agent: impl Into<String>) -> Self {
        self.user_agent = user_agent.into();
        self
    }

    /// Changes the I/O timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Sends one request and returns the raw reply.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<Reply, ClientError> {
        let mut stream =
            UnixStream::connect(&self.socket).map_err(|source| ClientError::Connect {
                path: self.socket.clone(),
                source,
            })?;
        let io = |source| ClientError::Io {
            path: self.socket.clone(),
            source,
        };
        stream.set_read_timeout(Some(self.timeout)).map_err(io)?;
        stream.set_write_timeout(Some(self.timeout)).map_err(io)?;
        let body = body.unwrap_or_default();
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: shimnetd\r\nUser-Agent: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
            self.user_agent,
            body.len()
        );
        if !body.is_empty() {
            req.push_str("Content-Type: application/json\r\n");
        }
        req.push_str("\r\n");
        let mut out = req.into_bytes();
        out.extend_from_slice(body);
        stream.write_all(&out).map_err(io)?;
        let mut buf = Vec::with_capacity(4096);
        stream.read_to_end(&mut buf).map_err(io)?;
        parse_reply(&buf)
    }

    /// Sends a request with an optional JSON body and decodes a JSON reply; non-2xx replies become
    /// [`ClientError::Api`].
    pub fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, ClientError> {
        let bytes = match body {
            Some(b) => {
                Some(serde_json::to_vec(b).map_err(|e| ClientError::BadReply(e.to_string()))?)
            }
            None => None,
        };
        let reply = self.request(method, path, bytes.as_deref())?;
        if !(200..300).contains(&reply.status) {
            return Err(api_error(&reply));
        }
        let body = if reply.body.is_empty() {
            b"null".as_slice()
        } else {
            &reply.body
        };
        serde_json::from_slice(body).map_err(|e| ClientError::BadReply(format!("{e}")))
    }
}

fn api_error(reply: &Reply) -> ClientError {
    match serde_json::from_slice::<ErrorBody>(&reply.body) {
        Ok(e) => ClientError::Api {
            status: reply.status,
            code: e.error.code,
            message: e.error.message,
            field: e.error.field,
        },
        Err(_) => ClientError::Api {
            status: reply.status,
            code: "unknown".into(),
            message: String::from_utf8_lossy(&reply.body).into_owned(),
            field: None,
        },
    }
}

/// Parses a complete HTTP/1.1 reply (status line, headers, Content-Length body).
pub fn parse_reply(buf: &[u8]) -> Result<Reply, ClientError> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return Err(ClientError::BadReply("truncated reply".into()))
        }
        Err(e) => return Err(ClientError::BadReply(e.to_string())),
    };
    let status = resp
        .code
        .ok_or_else(|| ClientError::BadReply("no status".into()))?;
    let mut body = &buf[head_len..];
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(ClientError::BadReply(
                "chunked replies are not supported".into(),
            ));
        }
        if h.name.eq_ignore_ascii_case("content-length") {
            let n: usize = std::str::from_utf8(h.value)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .ok_or_else(|| ClientError::BadReply("bad Content-Length".into()))?;
            if body.len() < n {
                return Err(ClientError::BadReply("truncated body".into()));
            }
            body = &body[..n];
        }
    }
    Ok(Reply {
        status,
        body: body.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_reply_with_length() {
        let r =
            parse_reply(b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\n{}trailing").unwrap();
        assert_eq!(r.status, 201);
        assert_eq!(r.body, b"{}");
    }

    #[test]
    fn rejects_truncated() {
        assert!(parse_reply(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n{}").is_err());
        assert!(parse_reply(b"HTTP/1.1 200").is_err());
    }

    #[test]
    fn api_error_decodes_body() {
        let r = Reply {
            status: 400,
            body:
                br#"{"error":{"code":"invalid_argument","message":"subnet: bad","field":"subnet"}}"#
                    .to_vec(),
        };
        match api_error(&r) {
            ClientError::Api {
                status,
                code,
                field,
                ..
            } => {
                assert_eq!(
                    (status, code.as_str(), field.as_deref()),
                    (400, "invalid_argument", Some("subnet"))
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn connect_error_names_socket() {
        let e = Client::new("/nonexistent/shimnet.sock")
            .request("GET", "/v1/health", None)
            .unwrap_err();
        assert!(e.to_string().contains("/nonexistent/shimnet.sock"), "{e}");
    }
}
