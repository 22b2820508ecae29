//! Mapping of engine and decoding failures to the REST API's error shape — the one place where
//! that happens for this front door.

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode};
use runtime_net::engine::EngineError;
use runtime_net::plan::FieldError;

use shimnet_wire::{ErrorBody, ErrorDetail};

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
        crate::rest::json_response(self.status, &body)
    }
}

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> Self {
        ApiError::invalid(e.field, e.message)
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        let (status, code) = match &e {
            EngineError::Invalid(f) => return f.clone().into(),
            EngineError::NotFound { .. } => (StatusCode::NOT_FOUND, "not_found"),
            EngineError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            EngineError::Netlink(runtime_net::netlink::NetlinkError::Netns { .. }) => {
                return ApiError::invalid("netns", e.to_string())
            }
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        ApiError {
            status,
            code,
            message: e.to_string(),
            field: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
