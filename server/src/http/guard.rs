//! Request hygiene before any work: the address a request is for, where a
//! browser sent it from, how big its head is, and how fast its body arrives.
//!
//! * [`check_request`] (every route): a `Host` the service does not answer
//!   to is refused with 421 — without keys only loopback names are accepted,
//!   so a DNS-rebinding page cannot read the API; a URI over
//!   [`MAX_URI_BYTES`] gets 414 and a head over [`MAX_HEADER_BYTES`] 431,
//!   both in the JSON error shape (hyper answers bare for even larger ones);
//!   `nosniff` goes on every answer.
//! * [`same_origin`] (`/v1`): a browser request from another origin
//!   (`Origin` not this host, or `null`) is refused with 403, so a web page
//!   an agent opens cannot post to the API on their behalf; only the
//!   widget's routes (those a `public` key may call) answer pages of the
//!   configured widget origins, with CORS headers (none by default).
//! * [`read_body`] (each `/v1` route, before its concurrency slot): a body
//!   must be JSON (`Content-Type: application/json`, else 415: `text/plain`
//!   and form posts are what cross-site pages can send without asking); a
//!   declared length over the limit is refused at once (413); the body is
//!   read under [`crate::config::Limits::body_read_timeout`] (408 when the
//!   client is too slow; 400 for a malformed chunked body), so a slow sender
//!   never holds an engine slot.

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::header::{
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN,
    ACCESS_CONTROL_MAX_AGE, CONTENT_LENGTH, CONTENT_TYPE, HOST, ORIGIN, VARY,
};
use axum::http::{HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, LengthLimitError, Limited};

use super::error::ApiError;
use super::AppState;

/// Longest request URI (path and query) answered with a JSON error instead of 414.
pub const MAX_URI_BYTES: usize = 8 * 1024;
/// Largest request head (all header names and values) before 431.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

/// Host names a service without keys answers to (any port).
const LOOPBACK_HOSTS: &[&str] = &["localhost", "127.0.0.1", "[::1]"];

/// The host part of a `Host` or origin authority (`[::1]:8080` → `[::1]`).
fn host_name(authority: &str) -> &str {
    let authority = authority.trim();
    if let Some(end) = authority.find(']') {
        return &authority[..=end];
    }
    authority.split(':').next().unwrap_or(authority)
}

/// Whether the service answers requests addressed to `host`.
fn host_allowed(state: &AppState, host: &str) -> bool {
    let allowed = state.allowed_hosts();
    let name = host_name(host);
    let listed = |h: &String| h.eq_ignore_ascii_case(host) || h.eq_ignore_ascii_case(name);
    if !allowed.is_empty() {
        return allowed.iter().any(listed)
            || (state.api_keys().is_empty()
                && LOOPBACK_HOSTS.iter().any(|l| l.eq_ignore_ascii_case(name)));
    }
    if state.api_keys().is_empty() {
        return LOOPBACK_HOSTS.iter().any(|l| l.eq_ignore_ascii_case(name));
    }
    true
}

/// The `Host` / URI / head-size checks of every request (see the module docs).
pub async fn check_request(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let refused = if req.uri().to_string().len() > MAX_URI_BYTES {
        Some(ApiError::UriTooLong(format!(
            "the request URI is longer than {MAX_URI_BYTES} bytes"
        )))
    } else if req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum::<usize>()
        > MAX_HEADER_BYTES
    {
        Some(ApiError::HeadersTooLarge(format!(
            "the request headers are larger than {MAX_HEADER_BYTES} bytes"
        )))
    } else {
        let host = req
            .headers()
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_string)
            .or_else(|| req.uri().authority().map(|a| a.to_string()));
        match host {
            Some(h) if host_allowed(&state, &h) => None,
            Some(h) => Some(ApiError::MisdirectedRequest(format!(
                "this service does not answer to host `{}`{}",
                h.chars().take(100).collect::<String>(),
                if state.api_keys().is_empty() {
                    " (without API keys only loopback names are served; see --allowed-host)"
                } else {
                    " (see --allowed-host)"
                }
            ))),
            // Browsers always send a Host: a request without one is not a
            // rebinding page (HTTP/1.0 clients, in-process calls).
            None => None,
        }
    };
    let mut response = match refused {
        Some(e) => e.into_response(),
        None => match widget_preflight(&state, &req) {
            Some(preflight) => preflight,
            None => next.run(req).await,
        },
    };
    response.headers_mut().insert(
        axum::http::header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// Whether `path` (`/v1/...`, or without the prefix inside `/v1`) is one of
/// the widget's routes, which configured origins may call across origins.
fn widget_route(path: &str) -> bool {
    static PATHS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let path = path.strip_prefix("/v1").unwrap_or(path);
    PATHS
        .get_or_init(super::routes::cross_origin_paths)
        .iter()
        .any(|p| p == path)
}

fn allow_origin(response: &mut Response, origin: &str) {
    let allow = HeaderValue::from_str(origin).unwrap_or(HeaderValue::from_static("null"));
    response
        .headers_mut()
        .insert(ACCESS_CONTROL_ALLOW_ORIGIN, allow);
    response
        .headers_mut()
        .insert(VARY, HeaderValue::from_static("Origin"));
}

/// The answer to a CORS preflight (`OPTIONS` with `Origin` under `/v1`):
/// allowed for a widget route and a configured widget origin, 403 for any
/// other; `None` for any other request.
fn widget_preflight(state: &AppState, req: &Request) -> Option<Response> {
    let path = req.uri().path().strip_prefix("/v1")?;
    if req.method() != Method::OPTIONS {
        return None;
    }
    let origin = req
        .headers()
        .get(ORIGIN)?
        .to_str()
        .unwrap_or("null")
        .trim()
        .to_string();
    if !widget_route(path) || !state.connectors().settings().origin_allowed(&origin) {
        return Some(
            ApiError::Forbidden(format!(
                "cross-origin request from `{}` refused: only the widget's routes answer the \
                 configured widget origins (--widget-origin)",
                origin.chars().take(100).collect::<String>()
            ))
            .into_response(),
        );
    }
    let mut r = axum::http::StatusCode::NO_CONTENT.into_response();
    let h = r.headers_mut();
    h.insert(
        ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST"),
    );
    h.insert(
        ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("authorization, content-type"),
    );
    h.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
    allow_origin(&mut r, &origin);
    Some(r)
}

/// Refuses browser requests from another origin (see the module docs),
/// except a configured widget origin's calls of the widget's routes: their
/// CORS preflight is answered here, and their answers carry
/// `Access-Control-Allow-Origin`.
pub async fn same_origin(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(origin) = req.headers().get(ORIGIN) else {
        return next.run(req).await;
    };
    let origin = origin.to_str().unwrap_or("null").trim().to_string();
    let host = req
        .headers()
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    let authority = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"));
    if authority.is_some_and(|a| a.eq_ignore_ascii_case(host)) {
        return next.run(req).await;
    }
    if widget_route(req.uri().path()) && state.connectors().settings().origin_allowed(&origin) {
        let mut response = next.run(req).await;
        allow_origin(&mut response, &origin);
        return response;
    }
    ApiError::Forbidden(format!(
        "cross-origin request from `{}` refused: the API answers pages of its own origin, and the \
         widget's routes pages of the configured widget origins (--widget-origin)",
        origin.chars().take(100).collect::<String>()
    ))
    .into_response()
}

/// Whether a `Content-Type` names JSON (`application/json`, `application/*+json`).
fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Reads a `/v1` request's body before it takes a concurrency slot (see the
/// module docs). Requests without a body pass as they are.
pub async fn read_body(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let limits = state.limits();
    let (parts, body) = req.into_parts();
    let declared = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let has_body = matches!(parts.method, Method::POST | Method::PUT | Method::PATCH)
        || declared.is_some_and(|n| n > 0);
    if !has_body {
        return next.run(Request::from_parts(parts, body)).await;
    }
    if declared.is_some_and(|n| n > limits.max_body_bytes as u64) {
        return ApiError::TooLarge(format!(
            "request body is larger than {} bytes",
            limits.max_body_bytes
        ))
        .into_response();
    }
    let content_type = parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if declared != Some(0) && !is_json(content_type) {
        return ApiError::UnsupportedMediaType(format!(
            "request bodies are JSON: send `Content-Type: application/json` (got `{}`)",
            content_type.chars().take(100).collect::<String>()
        ))
        .into_response();
    }
    let read = tokio::time::timeout(
        limits.body_read_timeout,
        Limited::new(body, limits.max_body_bytes).collect(),
    )
    .await;
    let bytes: Bytes = match read {
        Err(_) => {
            return ApiError::RequestTimeout(format!(
                "the request body did not arrive within {} ms",
                limits.body_read_timeout.as_millis()
            ))
            .into_response()
        }
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
            return ApiError::TooLarge(format!(
                "request body is larger than {} bytes",
                limits.max_body_bytes
            ))
            .into_response()
        }
        Ok(Err(e)) => {
            return ApiError::BadRequest(format!("the request body could not be read: {e}"))
                .into_response()
        }
        Ok(Ok(collected)) => collected.to_bytes(),
    };
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_and_json_types() {
        assert_eq!(host_name("[::1]:8080"), "[::1]");
        assert_eq!(host_name("localhost:8080"), "localhost");
        assert_eq!(host_name("example.com"), "example.com");
        assert!(is_json("application/json"));
        assert!(is_json("application/json; charset=utf-8"));
        assert!(is_json("Application/Problem+JSON"));
        assert!(!is_json("text/plain"));
        assert!(!is_json("application/x-www-form-urlencoded"));
        assert!(!is_json("multipart/form-data; boundary=x"));
        assert!(!is_json(""));
    }
}
