//! Insight endpoints (scope `agent`): emerging problems, knowledge gaps and
//! publishing one, and the dashboard's overview. The computations are the
//! engine's (`triage::Engine::emerging`, `gaps`, `publish_gap`, `overview`);
//! emerging problems come from the periodic job's last report when it is
//! fresh ([`crate::services::insights`]).

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use triage::api::{EmergingReport, GapReport, Overview, PublishGap, PublishedGap};

use super::error::{ApiError, ApiResult};
use super::extract::{
    check_id, check_short, check_tenant, check_text, is_blank, ApiJson, ApiPath, ApiQuery,
};
use super::{AppState, Caller};

/// `?window=&tenant=` of the insight reports.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WindowQuery {
    /// Tenant (ignored when an API key pins one).
    #[serde(default)]
    tenant: String,
    /// The days looked back, ending now: `7d`, `2w` or `14` (1 to 90 days,
    /// or 1 to 12 weeks). Default: 7 days for emerging problems, 30 for gaps
    /// and the overview.
    window: Option<String>,
}

/// `?window=&field=&tenant=` of the overview.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OverviewQuery {
    /// Tenant (ignored when an API key pins one).
    #[serde(default)]
    tenant: String,
    /// The days looked back, ending now (as for emerging problems; default 30 days).
    window: Option<String>,
    /// The heat map's field (one of the pack's fields; default the pack's
    /// `[insights] heatmap`).
    #[serde(default)]
    field: String,
}

/// The window's days, or `default`.
fn window(w: &Option<String>, default: u32) -> ApiResult<u32> {
    match w {
        None => Ok(default),
        Some(w) => Ok(triage::parse_window(w)?),
    }
}

/// `GET /v1/insights/emerging`: the tenant's tickets of the window clustered
/// by meaning, each cluster against its own baseline of the four weeks
/// before: new, growing or steady, with its spike if the last day or two
/// are one (which raises an alert), its words, daily sizes, shares and
/// examples.
#[utoipa::path(get, path = "/insights/emerging", params(WindowQuery),
    responses((status = 200, description = "Emerging problems, spikes first", body = EmergingReport)))]
pub async fn emerging(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<WindowQuery>,
) -> ApiResult<Json<EmergingReport>> {
    check_tenant(&q.tenant)?;
    let days = window(&q.window, triage::EMERGING_WINDOW_DAYS)?;
    let tenant = caller.tenant(&q.tenant);
    let insights = state.insights();
    let report = state
        .run(move |e| Ok(insights.emerging(e, &tenant, days)?))
        .await?;
    Ok(Json(report.as_ref().clone()))
}

/// `GET /v1/insights/gaps`: the questions the knowledge base does not
/// answer (handed-off chat messages, tickets resolved without an article)
/// grouped by meaning, largest first, each with a draft article.
#[utoipa::path(get, path = "/insights/gaps", params(WindowQuery),
    responses((status = 200, description = "Knowledge gaps, highest score first", body = GapReport)))]
pub async fn gaps(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<WindowQuery>,
) -> ApiResult<Json<GapReport>> {
    check_tenant(&q.tenant)?;
    let days = window(&q.window, triage::GAP_WINDOW_DAYS)?;
    let tenant = caller.tenant(&q.tenant);
    Ok(Json(
        state
            .run(move |e| Ok(e.gaps(&tenant, days, triage::report_end())?))
            .await?,
    ))
}

/// `POST /v1/insights/gaps/{id}/publish`: an agent's edit of a gap's draft
/// becomes a normal article (`kb-` and the gap id), answering in the chat
/// when this returns; the gap is not listed again.
#[utoipa::path(post, path = "/insights/gaps/{id}/publish", request_body = PublishGap,
    params(("id" = String, Path, description = "Gap id (from `GET /v1/insights/gaps`)")),
    responses(
        (status = 200, description = "Published: the new article", body = PublishedGap),
        (status = 404, description = "No such gap (unknown, or already published)"),
        (status = 507, description = "The data directory cannot be written"),
    ))]
pub async fn publish(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(mut req): ApiJson<PublishGap>,
) -> ApiResult<Json<PublishedGap>> {
    check_id("id", &id)?;
    let limits = state.limits();
    check_text("question", &req.question, true, limits)?;
    check_text("answer", &req.answer, true, limits)?;
    for q in &req.alt_questions {
        check_text("alt_questions", q, false, limits)?;
    }
    req.alt_questions.retain(|q| !is_blank(q));
    check_short("category", &req.category)?;
    check_tenant(&req.tenant)?;
    req.tenant = caller.tenant(&req.tenant);
    Ok(Json(
        state.run(move |e| Ok(e.publish_gap(&id, &req)?)).await?,
    ))
}

/// `GET /v1/insights/overview`: the dashboard's figures for the window:
/// tickets per day by category, the chat's answer / clarify / handoff rates
/// and the triage's abstention rate (from the activity log), open tickets
/// flagged for escalation risk, and a field × category heat map.
#[utoipa::path(get, path = "/insights/overview", params(OverviewQuery),
    responses((status = 200, description = "The overview", body = Overview)))]
pub async fn overview(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<OverviewQuery>,
) -> ApiResult<Json<Overview>> {
    check_tenant(&q.tenant)?;
    check_short("field", &q.field)?;
    let days = window(&q.window, triage::GAP_WINDOW_DAYS)?;
    let tenant = caller.tenant(&q.tenant);
    let field = (!q.field.is_empty()).then_some(q.field);
    Ok(Json(
        state
            .run(move |e| {
                e.overview(&tenant, days, triage::report_end(), field.as_deref())
                    .map_err(ApiError::from)
            })
            .await?,
    ))
}
