//! Operator endpoints under `/v1/admin` (scope `admin`): retraining and
//! statistics of the caller's tenant.

use axum::extract::State;
use axum::Json;
use serde::Serialize;
use triage::api::EngineStats;

use super::auth::QueryTenant;
use super::error::ApiResult;
use super::extract::TenantQuery;
use super::AppState;
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
    QueryTenant(tenant): QueryTenant,
) -> ApiResult<Json<Retrained>> {
    let engine = state.engine()?;
    Ok(Json(
        state
            .retrainer()
            .retrain(engine, tenant, Trigger::Admin)
            .await?,
    ))
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
    QueryTenant(tenant): QueryTenant,
) -> ApiResult<Json<TenantStats>> {
    let engine = state.engine()?;
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
