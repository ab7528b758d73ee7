//! Request middleware: metrics for every request, and for /v1 load shedding,
//! a timeout and bearer-token authentication that pins the caller's tenant.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::OwnedSemaphorePermit;

use super::error::ApiError;
use super::AppState;

/// Who is calling: with API keys configured, the tenant their key belongs to.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    /// The tenant forced by the caller's key; `None` when no keys are configured.
    pub forced_tenant: Option<String>,
}

impl Caller {
    /// The tenant a request acts for: the key's tenant, else the one it asked for.
    pub fn tenant(&self, requested: &str) -> String {
        match &self.forced_tenant {
            Some(t) => t.clone(),
            None => requested.to_string(),
        }
    }

    /// The tenant to restrict listings to (`None` = all, only without keys).
    pub fn scope(&self) -> Option<&str> {
        self.forced_tenant.as_deref()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<Caller>()
            .cloned()
            .unwrap_or_default())
    }
}

/// Counts every request by route, method and status and times it.
pub async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let method = req.method().to_string();
    let started = Instant::now();
    let response = next.run(req).await;
    state.metrics().observe_request(
        &route,
        &method,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

tokio::task_local! {
    /// The concurrency slot of the request being handled, set by [`shed`].
    static SLOT: Arc<OwnedSemaphorePermit>;
}

/// The current request's concurrency slot, for work that must keep holding
/// it after the request itself is gone (see `AppState::blocking`).
pub(super) fn current_slot() -> Option<Arc<OwnedSemaphorePermit>> {
    SLOT.try_with(Arc::clone).ok()
}

/// Refuses requests beyond the concurrency limit with 503 instead of queueing them.
///
/// A slot is free again only when the request is answered *and* the blocking
/// work it started has finished: a request that timed out keeps its slot
/// until its engine call really ends, so timed-out work cannot pile up.
pub async fn shed(State(state): State<AppState>, req: Request, next: Next) -> Response {
    match state.permits().try_acquire_owned() {
        Ok(permit) => SLOT.scope(Arc::new(permit), next.run(req)).await,
        Err(_) => {
            state.metrics().observe_shed();
            ApiError::Overloaded.into_response()
        }
    }
}

/// Answers 504 when a request takes longer than the configured timeout.
///
/// The answer does not wait for the work: engine calls cannot be cancelled,
/// so a timed-out write may still be applied (and keeps its concurrency slot
/// until it ends).
pub async fn timeout(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let limit = state.limits().request_timeout;
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => ApiError::Timeout(limit.as_millis()).into_response(),
    }
}

/// With API keys configured, requires `Authorization: Bearer <key>` and pins
/// the key's tenant on the request ([`Caller`]); without keys, lets all through.
pub async fn auth(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let caller = if state.api_keys().is_empty() {
        Caller::default()
    } else {
        let token = req
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, token) = v.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            });
        let Some(token) = token else {
            return ApiError::Unauthorized(
                "missing API key: send `Authorization: Bearer <key>`".into(),
            )
            .into_response();
        };
        match lookup(state.api_keys(), token) {
            Some(tenant) => Caller {
                forced_tenant: Some(tenant),
            },
            None => return ApiError::Unauthorized("invalid API key".into()).into_response(),
        }
    };
    req.extensions_mut().insert(caller);
    next.run(req).await
}

/// Finds a key's tenant, comparing every key in constant time per byte so the
/// response time does not reveal how much of a key was right.
fn lookup(keys: &std::collections::BTreeMap<String, String>, token: &str) -> Option<String> {
    let mut found = None;
    for (key, tenant) in keys {
        if constant_time_eq(key.as_bytes(), token.as_bytes()) {
            found = Some(tenant.clone());
        }
    }
    found
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_match_exactly() {
        let keys = [("secret-a".to_string(), "acme".to_string())]
            .into_iter()
            .collect();
        assert_eq!(lookup(&keys, "secret-a").as_deref(), Some("acme"));
        assert_eq!(lookup(&keys, "secret-b"), None);
        assert_eq!(lookup(&keys, "secret-"), None);
        assert_eq!(lookup(&keys, ""), None);
    }

    #[test]
    fn forced_tenant_wins_over_the_requested_one() {
        let open = Caller::default();
        assert_eq!(open.tenant("globex"), "globex");
        let keyed = Caller {
            forced_tenant: Some("acme".into()),
        };
        assert_eq!(keyed.tenant("globex"), "acme");
        assert_eq!(keyed.scope(), Some("acme"));
    }
}
