//! Request middleware: metrics for every request, and for each /v1 route
//! load shedding and a timeout (authentication is in `auth.rs`, request
//! hygiene in `guard.rs`).

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::OwnedSemaphorePermit;

use super::error::ApiError;
use super::AppState;

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
