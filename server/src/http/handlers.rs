//! Agents' decision endpoints: triage, suggest, search, feedback, and the
//! pack's taxonomy for the pages (the chat's are in `chat.rs`).

use axum::extract::State;
use axum::Json;
use indexer::SearchRequest;
use serde::Serialize;
use triage::api::{Feedback, TicketRequest};

use super::error::{ApiError, ApiResult};
use super::extract::{
    check_fields, check_id, check_short, check_tenant, check_text, is_blank, ApiJson,
};
use super::{AppState, Caller};

/// Most hits a search may ask for.
pub(super) const MAX_K: usize = 100;
/// Hits a search returns when it does not say.
const DEFAULT_K: usize = 10;

/// `POST /v1/triage`: category, priority, queue, fields, duplicates, evidence.
#[utoipa::path(post, path = "/triage", request_body = TicketRequest,
    responses((status = 200, description = "The triage", body = triage::api::TriageResult)))]
pub async fn triage(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(mut req): ApiJson<TicketRequest>,
) -> ApiResult<Json<triage::api::TriageResult>> {
    check_request(&state, &req)?;
    req.tenant = caller.tenant(&req.tenant);
    let result = state.run(move |e| Ok(e.triage(&req)?)).await?;
    let m = state.metrics();
    m.observe_decision(
        "category",
        if result.category.abstain {
            "abstain"
        } else {
            "decided"
        },
    );
    m.observe_decision(
        "priority",
        result.priority.label.as_deref().unwrap_or("none"),
    );
    Ok(Json(result))
}

/// `POST /v1/suggest`: similar resolved tickets, articles, predicted resolution.
#[utoipa::path(post, path = "/suggest", request_body = TicketRequest,
    responses((status = 200, description = "Suggestions", body = triage::api::Suggestions)))]
pub async fn suggest(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(mut req): ApiJson<TicketRequest>,
) -> ApiResult<Json<triage::api::Suggestions>> {
    check_request(&state, &req)?;
    req.tenant = caller.tenant(&req.tenant);
    Ok(Json(state.run(move |e| Ok(e.suggest(&req)?)).await?))
}

/// `POST /v1/search`: hybrid (or bm25/vector) search with filters and explanations.
#[utoipa::path(post, path = "/search", request_body = SearchRequest,
    responses((status = 200, description = "Hits, best first", body = Vec<indexer::Hit>)))]
pub async fn search(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(mut req): ApiJson<SearchRequest>,
) -> ApiResult<Json<Vec<indexer::Hit>>> {
    check_text("text", &req.text, true, state.limits())?;
    let f = &req.filters;
    check_tenant(f.tenant.as_deref().unwrap_or_default())?;
    for c in &f.categories {
        check_short("filters.categories", c)?;
    }
    for s in &f.statuses {
        check_short("filters.statuses", s)?;
    }
    check_short(
        "filters.created_after",
        f.created_after.as_deref().unwrap_or_default(),
    )?;
    check_short(
        "filters.created_before",
        f.created_before.as_deref().unwrap_or_default(),
    )?;
    if req.k == 0 {
        req.k = DEFAULT_K;
    }
    if req.k > MAX_K {
        return Err(ApiError::InvalidInput(format!(
            "`k` must be at most {MAX_K}"
        )));
    }
    if let Some(forced) = caller.listing_tenant() {
        req.filters.tenant = Some(forced.to_string());
    }
    Ok(Json(state.run(move |e| Ok(e.search(&req)?)).await?))
}

/// `POST /v1/feedback`: an agent's correction or confirmation, learned at once
/// by the neighbour vote (and counted by the engine for the tenant's next
/// retrain); "this article solved it" teaches the message as an
/// agent-approved phrasing.
#[utoipa::path(post, path = "/feedback", request_body = Feedback,
    responses(
        (status = 200, description = "What was learned", body = triage::api::FeedbackOutcome),
        (status = 404, description = "Unknown ticket (without title or body to create it) or article"),
        (status = 507, description = "The data directory cannot be written"),
    ))]
pub async fn feedback(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(mut fb): ApiJson<Feedback>,
) -> ApiResult<Json<triage::api::FeedbackOutcome>> {
    let limits = state.limits();
    check_text("title", &fb.title, false, limits)?;
    check_text("body", &fb.body, false, limits)?;
    if let Some(m) = &fb.message {
        check_text("message", m, false, limits)?;
    }
    check_fields(&fb.fields, limits)?;
    for (name, value) in [
        ("category", &fb.category),
        ("priority", &fb.priority),
        ("queue", &fb.queue),
    ] {
        check_short(name, value.as_deref().unwrap_or_default())?;
    }
    check_tenant(&fb.tenant)?;
    if fb.ticket_id.is_empty() && fb.solved_by_article.is_none() {
        return Err(ApiError::InvalidInput(
            "feedback needs a `ticket_id` or a `solved_by_article`".into(),
        ));
    }
    // The same ids the document routes accept, so the ticket it creates can
    // be read and deleted there.
    if !fb.ticket_id.is_empty() {
        check_id("ticket_id", &fb.ticket_id)?;
    }
    if let Some(article) = &fb.solved_by_article {
        check_id("solved_by_article", article)?;
    }
    // Text with no visible character counts as none, as everywhere.
    if fb.message.as_deref().is_some_and(is_blank) {
        fb.message = None;
    }
    for text in [&mut fb.title, &mut fb.body] {
        if is_blank(text) {
            text.clear();
        }
    }
    fb.tenant = caller.tenant(&fb.tenant);
    let outcome = state.run(move |e| Ok(e.feedback(fb)?)).await?;
    state.metrics().observe_decision("feedback", "accepted");
    Ok(Json(outcome))
}

/// The parts of the pack the pages need (taxonomy, priorities, queues).
#[derive(Serialize, utoipa::ToSchema)]
pub struct PackSummary {
    name: String,
    description: String,
    default_language: String,
    thresholds: triage::Thresholds,
    queues: Vec<triage::Queue>,
    categories: Vec<triage::Category>,
    priorities: Vec<triage::Priority>,
    /// The names of the fields the pack extracts or infers (e.g. for the
    /// dashboard's heat map).
    fields: Vec<String>,
}

/// `GET /v1/pack`: the taxonomy, priorities, queues and thresholds in use.
#[utoipa::path(get, path = "/pack",
    responses((status = 200, description = "Pack summary", body = PackSummary)))]
pub async fn pack(State(state): State<AppState>) -> ApiResult<Json<PackSummary>> {
    let engine = state.engine()?;
    let p = engine.pack();
    Ok(Json(PackSummary {
        name: p.name.clone(),
        description: p.description.clone(),
        default_language: p.default_language.clone(),
        thresholds: p.thresholds,
        queues: p.queues.clone(),
        categories: p.categories.clone(),
        priorities: p.priorities.clone(),
        fields: p.fields.iter().map(|f| f.name.clone()).collect(),
    }))
}

/// A ticket request needs some visible text, and no field may be over its limit.
fn check_request(state: &AppState, req: &TicketRequest) -> ApiResult<()> {
    let limits = state.limits();
    check_text("title", &req.title, false, limits)?;
    check_text("body", &req.body, false, limits)?;
    check_short("channel", &req.channel)?;
    check_short("customer_id", &req.customer_id)?;
    check_tenant(&req.tenant)?;
    if is_blank(&req.title) && is_blank(&req.body) {
        return Err(ApiError::InvalidInput(
            "`title` or `body` must hold the request text".into(),
        ));
    }
    Ok(())
}
