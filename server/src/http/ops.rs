//! Operational endpoints: liveness, readiness, Prometheus metrics, the OpenAPI
//! document, and the JSON answers for unknown routes, wrong methods and panics.

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::error::{ApiError, ApiResult};
use super::metrics::stats_gauges;
use super::{auth, AppState};

/// `GET /healthz`: the process is up.
#[utoipa::path(get, path = "/healthz", security(()),
    responses((status = 200, description = "Up", body = serde_json::Value)))]
pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /readyz`: 200 once the model and index are loaded, else 503 with why.
/// An operator (an admin key of the default tenant, or anyone without keys)
/// also gets the engine's statistics and the retrain status; others only the
/// status: the service's totals are nobody else's business.
#[utoipa::path(get, path = "/readyz", security(()),
    responses(
        (status = 200, description = "Ready; for an operator (an admin key of the default tenant, or no keys configured) with index statistics and the retrain status", body = serde_json::Value),
        (status = 503, description = "Still loading, or the engine could not be loaded"),
    ))]
pub async fn readyz(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> ApiResult<Json<serde_json::Value>> {
    let engine = state.engine()?;
    let operator = matches!(auth::identify(&state, &headers), Ok(Some(c)) if c.is_operator());
    if !operator {
        return Ok(Json(json!({"status": "ready"})));
    }
    let retrainer = state.retrainer();
    let (stats, retrain) = tokio::task::spawn_blocking(move || {
        (
            serde_json::to_value(engine.stats(None)),
            serde_json::to_value(retrainer.status(Some(&engine), None)),
        )
    })
    .await
    .map_err(|_| ApiError::Internal("reading engine statistics failed".into()))?;
    let stats = stats.map_err(|e| ApiError::Internal(format!("engine statistics: {e}")))?;
    let retrain = retrain.map_err(|e| ApiError::Internal(format!("retrain status: {e}")))?;
    Ok(Json(
        json!({"status": "ready", "stats": stats, "retrain": retrain}),
    ))
}

/// `GET /metrics`: Prometheus text format; with API keys configured, for an
/// admin key of the default tenant only (Prometheus sends it as
/// `authorization: {credentials: ...}` in the scrape config).
#[utoipa::path(get, path = "/metrics",
    responses(
        (status = 200, description = "Prometheus text exposition format", content_type = "text/plain", body = String),
        (status = 401, description = "Missing or wrong API key (with keys configured)"),
        (status = 403, description = "Not an admin key of the default tenant"),
    ))]
pub async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(e) = auth::operator(&state, &headers) {
        return e.into_response();
    }
    let mut gauges = Vec::new();
    let engine = state.engine().ok();
    if let Some(engine) = engine.clone() {
        let stats =
            tokio::task::spawn_blocking(move || serde_json::to_value(engine.stats(None))).await;
        if let Ok(Ok(stats)) = stats {
            gauges.extend(stats_gauges(&stats));
        }
    }
    let dir = state.data_dir().to_path_buf();
    if let Ok(bytes) = tokio::task::spawn_blocking(move || dir_bytes(&dir)).await {
        gauges.push((
            "triage_data_dir_bytes".to_string(),
            "Bytes on disk under the data directory (index, vectors, jobs).".to_string(),
            bytes as f64,
        ));
    }
    let retrainer = state.retrainer();
    let status = match engine {
        Some(engine) => tokio::task::spawn_blocking(move || retrainer.status(Some(&engine), None))
            .await
            .ok(),
        None => Some(retrainer.status(None, None)),
    };
    if let Some(status) = status {
        gauges.extend(retrain_gauges(&status));
    }
    let c = state.connections().snapshot();
    for (name, help, value) in [
        ("triage_connections_open", "Client connections open now.", c.open as f64),
        ("triage_connections_accepted_total", "Client connections accepted since start.", c.accepted as f64),
        ("triage_connections_refused_total", "Connections closed at once: over the global or per-IP cap.", c.refused as f64),
        ("triage_connections_header_timeouts_total", "Connections closed because the request head did not arrive in time (also idle keep-alive).", c.header_timeouts as f64),
        ("triage_connections_idle_timeouts_total", "Connections closed because a read or write made no progress in time.", c.idle_timeouts as f64),
    ] {
        gauges.push((name.to_string(), help.to_string(), value));
    }
    gauges.push((
        "triage_ready".to_string(),
        "1 when the model and index are loaded.".to_string(),
        f64::from(u8::from(state.engine().is_ok())),
    ));
    gauges.push((
        "triage_http_in_flight".to_string(),
        "Requests being handled on /v1, counting a timed-out request until its work ends."
            .to_string(),
        state
            .limits()
            .max_concurrency
            .saturating_sub(state.permits().available_permits()) as f64,
    ));
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics().render(&gauges)
            + &super::metrics::labelled_counter(
                "triage_insights_alerts_total",
                "Emerging-problem alerts raised since start, by tenant.",
                "tenant",
                &state.insights().alerts_raised(),
            ),
    )
        .into_response()
}

/// The retrain status as gauges (the timestamps only once known).
fn retrain_gauges(s: &crate::services::retrain::RetrainStatus) -> Vec<(String, String, f64)> {
    let mut out = vec![
        (
            "triage_retrain_pending_changes",
            "Labelled changes (ticket writes, corrections) of all tenants not yet learned by the classifiers.",
            s.pending_changes as f64,
        ),
        (
            "triage_retrain_running",
            "1 while the classifiers are being retrained.",
            f64::from(u8::from(s.running)),
        ),
        (
            "triage_retrain_completed",
            "Successful retrains since the server started.",
            s.completed as f64,
        ),
        (
            "triage_retrain_failed",
            "Failed retrains since the server started (the previous classifiers stay in use).",
            s.failed as f64,
        ),
    ];
    if let Some(t) = s.last_trained_unix {
        out.push((
            "triage_retrain_last_trained_timestamp_seconds",
            "When the classifiers were last trained (Unix time; engine load counts).",
            t as f64,
        ));
    }
    if let Some(d) = s.last_duration_seconds {
        out.push((
            "triage_retrain_last_duration_seconds",
            "How long the last successful retrain took.",
            d,
        ));
    }
    out.into_iter()
        .map(|(name, help, v)| (name.to_string(), help.to_string(), v))
        .collect()
}

/// Total size of the files under `dir` (unreadable entries count as 0).
fn dir_bytes(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map(|m| m.len()).unwrap_or(0),
            _ => 0,
        })
        .sum()
}

/// `GET /v1/openapi.json`.
#[utoipa::path(get, path = "/v1/openapi.json", security(()),
    responses((status = 200, description = "This document (OpenAPI 3.1)", body = serde_json::Value)))]
pub async fn openapi(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(super::openapi::document_for(&state))
}

/// Unknown route: 404 in the error shape.
pub async fn not_found() -> ApiError {
    ApiError::NotFound("no such route; see /v1/openapi.json".into())
}

/// Known route, wrong method: 405 in the error shape.
pub async fn method_not_allowed() -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        Json(json!({"error": {"code": "method_not_allowed", "message": "this route does not take that method; see /v1/openapi.json"}})),
    )
        .into_response()
}

/// A panic in a handler becomes a 500 in the error shape; the process stays up.
pub fn panic_response(_panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    ApiError::Internal("internal error while handling this request".into()).into_response()
}
