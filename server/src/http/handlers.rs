//! Decision endpoints: triage, deflect (with chat context), suggest, search,
//! feedback, and the pack's taxonomy for the pages.

use axum::extract::State;
use axum::Json;
use indexer::SearchRequest;
use serde::Serialize;
use triage::api::{ChatMessage, DeflectAction, DeflectResult, Feedback, TicketRequest};

use super::error::{ApiError, ApiResult};
use super::extract::{
    check_fields, check_id, check_short, check_tenant, check_text, is_blank, ApiJson,
};
use super::{AppState, Caller};

/// Most hits a search may ask for.
const MAX_K: usize = 100;
/// Hits a search returns when it does not say.
const DEFAULT_K: usize = 10;

/// `POST /v1/triage`: category, priority, queue, fields, duplicates, evidence.
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

/// What `POST /v1/deflect` returns: the decision plus the session it belongs to.
#[derive(Serialize)]
pub struct DeflectResponse {
    /// The decision.
    #[serde(flatten)]
    pub result: DeflectResult,
    /// The session id, echoed back (the engine keeps the session's last turns
    /// as context for short follow-ups, per tenant).
    pub session_id: Option<String>,
}

/// `POST /v1/deflect`: answer, clarify or hand off (with a prefilled ticket draft).
pub async fn deflect(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(mut msg): ApiJson<ChatMessage>,
) -> ApiResult<Json<DeflectResponse>> {
    let limits = state.limits();
    check_text("text", &msg.text, true, limits)?;
    check_short("customer_id", &msg.customer_id)?;
    check_tenant(&msg.tenant)?;
    msg.tenant = caller.tenant(&msg.tenant);
    msg.session_id = msg.session_id.filter(|s| !s.trim().is_empty());
    if let Some(s) = &msg.session_id {
        check_id("session_id", s)?;
    }
    let session_id = msg.session_id.clone();
    let result = state.run(move |e| Ok(e.deflect(&msg)?)).await?;
    let outcome = match result.action {
        DeflectAction::Answer => "answer",
        DeflectAction::Clarify => "clarify",
        DeflectAction::Handoff => "handoff",
    };
    state.metrics().observe_decision("deflect", outcome);
    Ok(Json(DeflectResponse { result, session_id }))
}

/// `POST /v1/suggest`: similar resolved tickets, articles, predicted resolution.
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
    if let Some(forced) = caller.scope() {
        req.filters.tenant = Some(forced.to_string());
    }
    Ok(Json(state.run(move |e| Ok(e.search(&req)?)).await?))
}

/// `POST /v1/feedback`: an agent's correction or confirmation, learned at once
/// by the neighbour vote (and counted for the next retrain of the classifiers).
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
    fb.tenant = caller.tenant(&fb.tenant);
    let relabels = fb.category.is_some() || fb.priority.is_some();
    let outcome = state.run(move |e| Ok(e.feedback(fb)?)).await?;
    if relabels {
        state.note_labelled_change();
    }
    state.metrics().observe_decision("feedback", "accepted");
    Ok(Json(outcome))
}

/// The parts of the pack the pages need (taxonomy, priorities, queues).
#[derive(Serialize)]
pub struct PackSummary {
    name: String,
    description: String,
    default_language: String,
    thresholds: triage::pack::Thresholds,
    queues: Vec<triage::pack::Queue>,
    categories: Vec<triage::pack::Category>,
    priorities: Vec<triage::pack::Priority>,
}

/// `GET /v1/pack`: the taxonomy, priorities, queues and thresholds in use.
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
