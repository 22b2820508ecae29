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

    /// One JSON call, the daemon's error as it came (for callers that look at it first).
    pub fn try_call<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, ClientError> {
        self.client.call(method, path, body)
    }

    /// The CNI error of a failed call.
    pub fn map(&self, e: ClientError, method: &str, path: &str) -> CniError {
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
                // The one-request ADD names fields inside its parts; the configuration key is
                // the field's own name.
                let field = field
                    .map(|f| {
                        let f = ["ensure.", "endpoint."]
                            .iter()
                            .find_map(|p| f.strip_prefix(p))
                            .unwrap_or(&f);
                        format!(" (field {f})")
                    })
                    .unwrap_or_default();
                CniError::new(code, format!("{what}: {message}{field}; {fix}"))
                    .with_details(format!("{method} {path}: HTTP {status} {c}"))
            }
        }
    }
}

/// Whether the daemon does not know the route at all (older than it): its 404 says "no such API
/// path", or it refuses the method (405). A 404 about a missing network or endpoint is not this.
pub fn route_unknown(e: &ClientError) -> bool {
    match e {
        ClientError::Api { status: 405, .. } => true,
        ClientError::Api {
            status: 404,
            message,
            ..
        } => message.starts_with("no such API path"),
        _ => false,
    }
}

/// Whether the one-request ADD failed because the network it names does not exist (404 naming
/// the field `network`).
pub fn network_missing(e: &ClientError) -> bool {
    matches!(e, ClientError::Api { status: 404, field: Some(f), .. } if f == "network")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16, code: &str, message: &str, field: Option<&str>) -> ClientError {
        ClientError::Api {
            status,
            code: code.into(),
            message: message.into(),
            field: field.map(String::from),
        }
    }

    #[test]
    fn an_unknown_route_is_told_from_a_missing_network() {
        let old = api(
            404,
            "not_found",
            "no such API path: /v1/networks/n/attach",
            None,
        );
        assert!(route_unknown(&old) && !network_missing(&old));
        assert!(route_unknown(&api(
            405,
            "method_not_allowed",
            "POST is not allowed",
            None
        )));
        let gone = api(404, "not_found", "network n not found", Some("network"));
        assert!(!route_unknown(&gone) && network_missing(&gone));
        let other = api(404, "not_found", "endpoint n/c/eth0 not found", None);
        assert!(!route_unknown(&other) && !network_missing(&other));
        assert!(!route_unknown(&ClientError::BadReply("x".into())));
    }

    #[test]
    fn errors_map_to_cni_codes_naming_the_configuration_key() {
        let d = Daemon::new("/nonexistent.sock", code::TRY_AGAIN_LATER);
        let m = |e| d.map(e, "POST", "/v1/networks/n/attach");
        let e = m(api(
            400,
            "invalid_argument",
            "ensure.bridge: too long",
            Some("ensure.bridge"),
        ));
        assert_eq!(e.code, code::INVALID_CONFIG);
        assert!(
            e.msg
                .ends_with("(field bridge); fix that value in the network configuration"),
            "{e}"
        );
        let e = m(api(409, "network_full", "network n is full", None));
        assert_eq!(e.code, code::NETWORK_FULL);
        assert_eq!(
            m(api(409, "conflict", "address in use", None)).code,
            code::CONFLICT
        );
        assert_eq!(
            m(api(500, "internal", "boom", None)).code,
            code::DAEMON_FAILED
        );
        let e = m(ClientError::BadReply("x".into()));
        assert_eq!(e.code, code::BAD_REPLY);
    }
}
