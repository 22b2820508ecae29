//! Calls to shimnetd's REST API over its unix socket, with the daemon's errors mapped to CNI
//! error codes in this one place.

use serde::de::DeserializeOwned;
use serde::Serialize;
use shimnet_api::client::{Client, ClientError};
use shimnet_compat::cni::error::code;
use shimnet_compat::cni::CniError;

/// The daemon as one invocation sees it.
pub struct Daemon {
    client: Client,
    unreachable: u32,
}

impl Daemon {
    /// A daemon at `socket`; `unreachable` is the code reported when it cannot be reached (11 for
    /// ADD/DEL/CHECK/GC, 50 for STATUS).
    pub fn new(socket: &str, unreachable: u32) -> Self {
        Daemon {
            // The daemon counts calls with this agent under `front_door="cni"` (must start with
            // `shimnet-cni/`, the server's `metrics::CNI_USER_AGENT_PREFIX`).
            client: Client::new(socket)
                .with_user_agent(concat!("shimnet-cni/", env!("CARGO_PKG_VERSION"))),
            unreachable,
        }
    }

    /// One JSON call; non-2xx replies become CNI errors.
    pub fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, CniError> {
        self.client
            .call(method, path, body)
            .map_err(|e| self.map(e, method, path))
    }

    /// Like [`Daemon::call`], but a 404 is `None`.
    pub fn call_opt<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<Option<T>, CniError> {
        match self.client.call(method, path, body) {
            Ok(v) => Ok(Some(v)),
            Err(ClientError::Api { status: 404, .. }) => Ok(None),
            Err(e) => Err(self.map(e, method, path)),
        }
    }

    fn map(&self, e: ClientError, method: &str, path: &str) -> CniError {
        let socket = self.client.socket().display().to_string();
        match e {
            ClientError::Connect { source, .. } => CniError::new(
                self.unreachable,
                format!(
                    "shimnetd is not reachable at {socket}; start it (systemctl start shimnetd) or point \"daemonSocket\" in the network configuration at its API socket"
                ),
            )
            .with_details(source.to_string()),
            ClientError::Io { source, .. } => CniError::new(
                self.unreachable,
                format!("talking to shimnetd at {socket} failed ({method} {path}); try again"),
            )
            .with_details(source.to_string()),
            ClientError::BadReply(m) => CniError::new(
                code::BAD_REPLY,
                format!("shimnetd at {socket} gave a reply the plugin does not understand ({method} {path}); are the plugin and daemon the same version?"),
            )
            .with_details(m),
            ClientError::Api { status, code: c, message, field } => {
                let (code, what, fix) = match status {
                    _ if c == "network_full" => (code::NETWORK_FULL, "shimnetd refused: the network is full", "remove a container from this network or attach to another network"),
                    400 => (code::INVALID_CONFIG, "shimnetd refused the configuration", "fix that value in the network configuration"),
                    404 => (code::NOT_FOUND, "shimnetd does not know it", "check the network name"),
                    409 => (code::CONFLICT, "shimnetd refused: it conflicts with existing state", "free the address, port or name, or choose another"),
                    _ => (code::DAEMON_FAILED, "shimnetd failed", "see shimnetd's log (journalctl -u shimnetd) and retry"),
                };
                let field = field.map(|f| format!(" (field {f})")).unwrap_or_default();
                CniError::new(code, format!("{what}: {message}{field}; {fix}"))
                    .with_details(format!("{method} {path}: HTTP {status} {c}"))
            }
        }
    }
}
