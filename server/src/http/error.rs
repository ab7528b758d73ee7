//! The HTTP layer's one error type and its single JSON shape:
//! `{"error": {"code": "...", "message": "..."}}` with a matching status.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::services::{refuses_writes, ServiceError};

/// Everything a request can fail with, each mapped to one status and code.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not valid JSON (400 `malformed_json`).
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    /// The URL's path or query string cannot be read, e.g. invalid
    /// percent-encoding or a repeated parameter (400 `bad_request`).
    #[error("{0}")]
    BadRequest(String),
    /// Valid JSON with wrong types or missing/empty fields (422 `invalid_input`).
    #[error("{0}")]
    InvalidInput(String),
    /// The body or a text field is over its limit (413 `too_large`).
    #[error("{0}")]
    TooLarge(String),
    /// No or wrong API key (401 `unauthorized`).
    #[error("{0}")]
    Unauthorized(String),
    /// The key's scope does not cover the route, or a browser request came
    /// from another origin (403 `forbidden`).
    #[error("{0}")]
    Forbidden(String),
    /// The client took too long to send its body (408 `request_timeout`).
    #[error("{0}")]
    RequestTimeout(String),
    /// A body that is not JSON (415 `unsupported_media_type`).
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// A request for a host this service does not answer to (421 `misdirected_request`).
    #[error("{0}")]
    MisdirectedRequest(String),
    /// The URI is over its limit (414 `uri_too_long`).
    #[error("{0}")]
    UriTooLong(String),
    /// The request head is over its limit (431 `headers_too_large`).
    #[error("{0}")]
    HeadersTooLarge(String),
    /// The id does not exist for this tenant (404 `not_found`).
    #[error("{0}")]
    NotFound(String),
    /// The operation is already running and only one may run at a time, e.g.
    /// a retrain (409 `conflict`); retry when it has finished.
    #[error("{0}")]
    Conflict(String),
    /// Too many requests in flight: shed (503 `overloaded`).
    #[error("server is at its concurrency limit, retry later")]
    Overloaded,
    /// The model or index is still loading (503 `not_ready`).
    #[error("{0}")]
    NotReady(String),
    /// The request took longer than the configured timeout (504 `timeout`).
    #[error("request timed out after {0} ms")]
    Timeout(u128),
    /// The data directory cannot be written (507 `storage_unavailable`).
    #[error("{0}")]
    Storage(String),
    /// A stored file the request needs is unreadable or garbled; the message
    /// names the file relative to the data directory (500 `corrupt`).
    #[error("{0}")]
    Corrupt(String),
    /// Anything else; the message is logged and returned, never a panic (500 `internal`).
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::MalformedJson(_) | ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::InvalidInput(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::MisdirectedRequest(_) => StatusCode::MISDIRECTED_REQUEST,
            ApiError::UriTooLong(_) => StatusCode::URI_TOO_LONG,
            ApiError::HeadersTooLarge(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Overloaded | ApiError::NotReady(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Storage(_) => StatusCode::INSUFFICIENT_STORAGE,
            ApiError::Corrupt(_) | ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Stable machine-readable code of this error.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::MalformedJson(_) => "malformed_json",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::InvalidInput(_) => "invalid_input",
            ApiError::TooLarge(_) => "too_large",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::RequestTimeout(_) => "request_timeout",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::MisdirectedRequest(_) => "misdirected_request",
            ApiError::UriTooLong(_) => "uri_too_long",
            ApiError::HeadersTooLarge(_) => "headers_too_large",
            ApiError::NotFound(_) => "not_found",
            ApiError::Conflict(_) => "conflict",
            ApiError::Overloaded => "overloaded",
            ApiError::NotReady(_) => "not_ready",
            ApiError::Timeout(_) => "timeout",
            ApiError::Storage(_) => "storage_unavailable",
            ApiError::Corrupt(_) => "corrupt",
            ApiError::Internal(_) => "internal",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        // Load shedding and readiness polls are routine: they are counted in
        // /metrics, not logged above debug.
        match self {
            ApiError::Internal(_) | ApiError::Corrupt(_) | ApiError::Storage(_) => {
                tracing::error!(code = self.code(), "{self}")
            }
            ApiError::Timeout(_) => tracing::warn!(code = self.code(), "{self}"),
            _ => tracing::debug!(code = self.code(), "{self}"),
        }
        let mut response = (
            status,
            Json(json!({"error": {"code": self.code(), "message": self.to_string()}})),
        )
            .into_response();
        if matches!(self, ApiError::Unauthorized(_)) {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

impl From<triage::Error> for ApiError {
    fn from(err: triage::Error) -> Self {
        match err {
            triage::Error::InvalidInput(m) => ApiError::InvalidInput(m),
            triage::Error::NotFound(m) => ApiError::NotFound(m),
            // The index refuses what the client sent (bad filter date, fusion
            // parameter, id or tenant): the client's fault, not the server's.
            triage::Error::Index(indexer::Error::InvalidRequest(m)) => ApiError::InvalidInput(m),
            triage::Error::Index(e @ indexer::Error::InvalidDocument { .. }) => {
                ApiError::InvalidInput(e.to_string())
            }
            triage::Error::Io { path, source } if refuses_writes(source.kind()) => {
                ApiError::Storage(format!("cannot write {}: {source}", path.display()))
            }
            other if other.io_kind().is_some_and(refuses_writes) => {
                ApiError::Storage(other.to_string())
            }
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<ServiceError> for ApiError {
    fn from(err: ServiceError) -> Self {
        let storage = err.refuses_writes();
        match err {
            ServiceError::NotFound(m) => ApiError::NotFound(m),
            ServiceError::Conflict(m) => ApiError::Conflict(m),
            ServiceError::NotReady(m) => ApiError::NotReady(m),
            ServiceError::Corrupt(m) => ApiError::Corrupt(m),
            ServiceError::Engine(e) => ApiError::from(e),
            e @ ServiceError::Io { .. } if storage => ApiError::Storage(e.to_string()),
            e @ (ServiceError::Io { .. } | ServiceError::Internal(_)) => {
                ApiError::Internal(e.to_string())
            }
        }
    }
}

impl From<crate::connectors::ConnectorError> for ApiError {
    fn from(err: crate::connectors::ConnectorError) -> Self {
        use crate::connectors::ConnectorError as E;
        match err {
            E::NotConfigured(m) => ApiError::NotFound(m),
            E::Unauthorized(m) => ApiError::Unauthorized(m),
            E::InvalidInput(m) => ApiError::InvalidInput(m),
            E::NotReady(m) => ApiError::NotReady(m),
            E::Service(e) => ApiError::from(e),
        }
    }
}

/// Result alias for handlers.
pub type ApiResult<T> = Result<T, ApiError>;
