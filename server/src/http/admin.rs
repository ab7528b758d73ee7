//! Operator endpoints under `/v1/admin` (scope `admin`): retraining, encoder
//! adaptation and statistics of the caller's tenant.

use axum::extract::State;
use axum::Json;
use serde::Serialize;
use triage::api::EngineStats;

use super::documents::TenantQuery;
use super::error::ApiResult;
use super::extract::{check_tenant, ApiQuery};
use super::{AppState, Caller};
use crate::services::adapt::{AdaptDropped, AdaptStatus};
use crate::services::retrain::{RetrainStatus, Retrained, Trigger};

/// `POST /v1/admin/retrain`: retrains the caller's tenant's classifiers from
/// its labelled tickets (and the shared pack) now and answers when done, with
/// the labelled example count and the seconds taken; 409 while another
/// retrain runs. No other tenant's heads change. (`?tenant=` names the
/// tenant when no keys are configured; a key's tenant always wins.)
#[utoipa::path(post, path = "/admin/retrain", params(TenantQuery),
    responses(
        (status = 200, description = "Retrained", body = Retrained),
        (status = 409, description = "A retrain is already running"),
    ))]
pub async fn retrain(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<TenantQuery>,
) -> ApiResult<Json<Retrained>> {
    check_tenant(&q.tenant)?;
    let engine = state.engine()?;
    let tenant = caller.tenant(&q.tenant);
    Ok(Json(
        state
            .retrainer()
            .retrain(engine, tenant, Trigger::Admin)
            .await?,
    ))
}

/// `POST /v1/admin/adapt`: starts adapting the encoder to the caller's
/// tenant's labelled tickets in the background (minutes of CPU on one core)
/// and answers at once with the status (202); 409 while an adaptation runs.
/// The adapted encoder is used for the tenant's labels only if a held-out
/// fold of its tickets says it decides more of them right; `GET` tells.
#[utoipa::path(post, path = "/admin/adapt", params(TenantQuery),
    responses(
        (status = 202, description = "Adaptation started", body = AdaptStatus),
        (status = 409, description = "An adaptation is already running"),
    ))]
pub async fn start_adapt(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<TenantQuery>,
) -> ApiResult<(axum::http::StatusCode, Json<AdaptStatus>)> {
    check_tenant(&q.tenant)?;
    let engine = state.engine()?;
    let tenant = caller.tenant(&q.tenant);
    let adaptations = state.adaptations();
    adaptations.start(std::sync::Arc::clone(&engine), &tenant)?;
    let status = state
        .blocking(move || adaptations.status(&engine, &tenant))
        .await?;
    Ok((axum::http::StatusCode::ACCEPTED, Json(status)))
}

/// `GET /v1/admin/adapt`: the caller's tenant's adaptation: running or not,
/// the adapter in use, the last held-out verdict and error.
#[utoipa::path(get, path = "/admin/adapt", params(TenantQuery),
    responses((status = 200, description = "Adaptation status", body = AdaptStatus)))]
pub async fn adapt_status(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<TenantQuery>,
) -> ApiResult<Json<AdaptStatus>> {
    check_tenant(&q.tenant)?;
    let engine = state.engine()?;
    let tenant = caller.tenant(&q.tenant);
    let adaptations = state.adaptations();
    Ok(Json(
        state
            .blocking(move || adaptations.status(&engine, &tenant))
            .await?,
    ))
}

/// `DELETE /v1/admin/adapt`: drops the caller's tenant's adapter; its labels
/// go back to the shipped encoder at once. 409 while it is being adapted.
#[utoipa::path(delete, path = "/admin/adapt", params(TenantQuery),
    responses(
        (status = 200, description = "Dropped (or there was nothing to drop)", body = AdaptDropped),
        (status = 409, description = "The tenant is being adapted"),
    ))]
pub async fn drop_adapt(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<TenantQuery>,
) -> ApiResult<Json<AdaptDropped>> {
    check_tenant(&q.tenant)?;
    let tenant = caller.tenant(&q.tenant);
    let adaptations = state.adaptations();
    state
        .run(move |engine| Ok(adaptations.drop_adapter(engine, &tenant)?))
        .await
        .map(Json)
}

/// What `GET /v1/admin/stats` returns.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TenantStats {
    /// The tenant.
    pub tenant: String,
    /// Its documents, labels, corrections and learned phrasings.
    pub stats: EngineStats,
    /// Retraining: its pending changes and the service's history.
    pub retrain: RetrainStatus,
}

/// `GET /v1/admin/stats`: the caller's tenant's counts and retrain status.
#[utoipa::path(get, path = "/admin/stats", params(TenantQuery),
    responses((status = 200, description = "Statistics", body = TenantStats)))]
pub async fn stats(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<TenantQuery>,
) -> ApiResult<Json<TenantStats>> {
    check_tenant(&q.tenant)?;
    let engine = state.engine()?;
    let tenant = caller.tenant(&q.tenant);
    let t = tenant.clone();
    let (stats, retrain) = state
        .blocking({
            let retrainer = state.retrainer();
            move || {
                (
                    engine.stats(Some(&t)),
                    retrainer.status(Some(&engine), Some(&t)),
                )
            }
        })
        .await?;
    Ok(Json(TenantStats {
        tenant,
        stats,
        retrain,
    }))
}
