//! The one mapping of engine failures to HTTP ([`classify`]), used by both front doors, and the
//! REST API's error shape built on it. The Docker door turns the same classification into its
//! `{"Err": ...}` shape (`crate::docker::PluginError`).

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode};
use runtime_net::engine::EngineError;
use runtime_net::plan::FieldError;
use shimnet_wire::{ErrorBody, ErrorDetail};

use crate::http::{json_response, BodyTooLarge, TimedOut};

/// HTTP status and stable code of an engine failure, for every front door: a refused field is
/// 400, something missing 404, a clash with existing state 409, a namespace path that cannot be
/// used 400 (it came from the request), a network that takes no more endpoints 409
/// `network_full`, everything else 500.
pub fn classify(e: &EngineError) -> (StatusCode, &'static str) {
    match e {
        EngineError::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid_argument"),
        EngineError::NotFound { .. } => (StatusCode::NOT_FOUND, "not_found"),
        EngineError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
        EngineError::NetworkFull { .. } => (StatusCode::CONFLICT, "network_full"),
        EngineError::Netlink(runtime_net::netlink::NetlinkError::Netns { .. }) => {
            (StatusCode::BAD_REQUEST, "invalid_argument")
        }
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    }
}

/// An error ready to be sent: status, stable code, message, optional field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable code.
    pub code: &'static str,
    /// Message.
    pub message: String,
    /// Field at fault.
    pub field: Option<String>,
}

impl ApiError {
    /// 400 naming a field.
    pub fn invalid(field: &str, message: impl std::fmt::Display) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "invalid_argument",
            message: format!("{field}: {message}"),
            field: Some(field.to_string()),
        }
    }
    /// 404.
    /// The same error with its field named inside `part` of the body (`bridge` →
    /// `ensure.bridge`), message included; errors without a field are unchanged.
    pub fn within(mut self, part: &str) -> Self {
        if let Some(f) = self.field.take() {
            let inner = format!("{part}.{f}");
            if let Some(rest) = self.message.strip_prefix(&format!("{f}: ")) {
                self.message = format!("{inner}: {rest}");
            }
            self.field = Some(inner);
        }
        self
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::NOT_FOUND,
            code: "not_found",
            message: message.into(),
            field: None,
        }
    }
    /// 500.
    pub fn internal(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "internal",
            message: message.into(),
            field: None,
        }
    }
    /// 405.
    pub fn method_not_allowed(method: &hyper::Method, path: &str) -> Self {
        ApiError {
            status: StatusCode::METHOD_NOT_ALLOWED,
            code: "method_not_allowed",
            message: format!("{method} is not allowed on {path}"),
            field: None,
        }
    }

    /// The JSON reply.
    pub fn into_response(self) -> Response<Full<Bytes>> {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message,
                field: self.field,
            },
        };
        json_response(self.status, &body)
    }
}

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> Self {
        ApiError::invalid(e.field, e.message)
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        let (status, code) = classify(&e);
        match &e {
            EngineError::Invalid(f) => f.clone().into(),
            EngineError::Netlink(runtime_net::netlink::NetlinkError::Netns { .. }) => {
                ApiError::invalid("netns", e.to_string())
            }
            _ => ApiError {
                status,
                code,
                message: e.to_string(),
                field: None,
            },
        }
    }
}

impl From<BodyTooLarge> for ApiError {
    fn from(e: BodyTooLarge) -> Self {
        ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            code: "payload_too_large",
            message: e.0,
            field: Some("body".into()),
        }
    }
}

impl From<TimedOut> for ApiError {
    fn from(e: TimedOut) -> Self {
        ApiError {
            status: e.status(),
            code: match e {
                TimedOut::Late { .. } => "unavailable",
                TimedOut::Failed { .. } => "internal",
            },
            message: e.to_string(),
            field: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn within_names_the_field_by_its_path() {
        let e = ApiError::invalid("ports[0].host_port", "must be 1..=65535").within("endpoint");
        assert_eq!(e.field.as_deref(), Some("endpoint.ports[0].host_port"));
        assert_eq!(e.message, "endpoint.ports[0].host_port: must be 1..=65535");
        let e = ApiError::not_found("network x not found").within("ensure");
        assert_eq!((e.field, e.message.as_str()), (None, "network x not found"));
    }

    #[test]
    fn engine_errors_map_to_status() {
        let e: ApiError = EngineError::Conflict("x".into()).into();
        assert_eq!((e.status, e.code), (StatusCode::CONFLICT, "conflict"));
        let e: ApiError = EngineError::NotFound {
            what: "network",
            name: "n".into(),
        }
        .into();
        assert_eq!(e.status, StatusCode::NOT_FOUND);
        let e: ApiError = EngineError::Invalid(FieldError::new("subnet", "bad")).into();
        assert_eq!(
            (e.status, e.field.as_deref()),
            (StatusCode::BAD_REQUEST, Some("subnet"))
        );
        let full = || EngineError::NetworkFull {
            network: runtime_net::NetworkName::new("web").unwrap(),
            capacity: 1023,
        };
        let e: ApiError = full().into();
        assert_eq!((e.status, e.code), (StatusCode::CONFLICT, "network_full"));
        assert!(
            e.message.starts_with("network web is full"),
            "{}",
            e.message
        );
        let d = crate::docker::PluginError::from(full());
        assert_eq!(d.status, StatusCode::CONFLICT);
        assert!(d.message.contains("network web is full"), "{}", d.message);
    }

    #[test]
    fn both_doors_share_one_classification() {
        let conflict = EngineError::Conflict("x".into());
        let rest = ApiError::from(EngineError::Conflict("x".into()));
        let docker = crate::docker::PluginError::from(conflict);
        assert_eq!(rest.status, docker.status);
        let late = TimedOut::Late {
            call: "/v1/networks/n/endpoints".into(),
            limit: std::time::Duration::from_secs(20),
        };
        let e = ApiError::from(late.clone());
        assert_eq!(
            (e.status, e.code),
            (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
        );
        assert_eq!(crate::docker::PluginError::from(late).status, e.status);
    }
}
