//! The customer chat's endpoints (scope `chat`): deflect a message, say
//! whether a shown article helped, review and submit a handoff ticket. What
//! they return is what the chat shows: the customer's own words and the
//! articles' questions and answers (see the rules in `triage/src/engine/chat.rs`).

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use triage::api::{
    ChatDraft, ChatFeedback, ChatFeedbackOutcome, ChatMessage, ChatReply, ChatTicket,
    ChatTicketRequest, DeflectAction,
};

use super::error::{ApiError, ApiResult};
use super::extract::{check_id, check_short, check_tenant, check_text, is_blank, ApiJson};
use super::{AppState, Caller};
use crate::connectors::events;

/// `POST /v1/deflect`: answer, clarify or hand off (with a prefilled ticket draft).
#[utoipa::path(post, path = "/deflect", request_body = ChatMessage,
    responses((status = 200, description = "The decision (a handoff carries a ticket draft)", body = ChatReply)))]
pub async fn deflect(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(mut msg): ApiJson<ChatMessage>,
) -> ApiResult<Json<ChatReply>> {
    let limits = state.limits();
    check_text("text", &msg.text, true, limits)?;
    check_short("customer_id", &msg.customer_id)?;
    check_tenant(&msg.tenant)?;
    msg.tenant = caller.tenant(&msg.tenant);
    msg.session_id = msg.session_id.filter(|s| !is_blank(s));
    if let Some(s) = &msg.session_id {
        check_id("session_id", s)?;
    }
    let reply = state.run(move |e| Ok(e.deflect(&msg)?)).await?;
    let outcome = match reply.action {
        DeflectAction::Answer => "answer",
        DeflectAction::Clarify => "clarify",
        DeflectAction::Handoff => "handoff",
    };
    state.metrics().observe_decision("deflect", outcome);
    Ok(Json(reply))
}

/// `POST /v1/chat/feedback`: "did this help?" on an article the conversation
/// was shown in that turn. The message becomes a candidate phrasing of the
/// article; it answers others only after several conversations agree or an
/// agent approves it.
#[utoipa::path(post, path = "/chat/feedback", operation_id = "chat_feedback", request_body = ChatFeedback,
    responses(
        (status = 200, description = "What became of it", body = ChatFeedbackOutcome),
        (status = 404, description = "Unknown conversation, turn or article"),
        (status = 507, description = "The data directory cannot be written"),
    ))]
pub async fn feedback(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(mut fb): ApiJson<ChatFeedback>,
) -> ApiResult<Json<ChatFeedbackOutcome>> {
    check_id("session_id", &fb.session_id)?;
    check_id("article_id", &fb.article_id)?;
    check_tenant(&fb.tenant)?;
    fb.tenant = caller.tenant(&fb.tenant);
    let (tenant, article) = (fb.tenant.clone(), fb.article_id.clone());
    let outcome = state.run(move |e| Ok(e.chat_feedback(&fb)?)).await?;
    if outcome.learning == "active" {
        let learned = events::PhrasingLearned {
            id: None,
            article_id: article,
            text: None,
            status: "active".into(),
            source: "customer".into(),
        };
        state
            .emit(&tenant, events::PHRASING_LEARNED, learned)
            .await?;
    }
    state
        .metrics()
        .observe_decision("chat_feedback", &outcome.learning);
    Ok(Json(outcome))
}

/// Body of `POST /v1/chat/draft`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct DraftRequest {
    /// The conversation.
    session_id: String,
    /// Tenant (empty = default tenant; a key's tenant wins).
    tenant: String,
}

/// `POST /v1/chat/draft`: the ticket draft of the conversation so far, for
/// the customer to review before handing off.
#[utoipa::path(post, path = "/chat/draft", operation_id = "chat_draft", request_body = DraftRequest,
    responses(
        (status = 200, description = "The draft", body = ChatDraft),
        (status = 404, description = "Unknown conversation"),
    ))]
pub async fn draft(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<DraftRequest>,
) -> ApiResult<Json<ChatDraft>> {
    check_id("session_id", &req.session_id)?;
    check_tenant(&req.tenant)?;
    let tenant = caller.tenant(&req.tenant);
    Ok(Json(
        state
            .run(move |e| Ok(e.chat_draft(&tenant, &req.session_id)?))
            .await?,
    ))
}

/// `POST /v1/chat/tickets`: hands the conversation to a person as an open,
/// unlabelled ticket with an id the service chooses.
#[utoipa::path(post, path = "/chat/tickets", operation_id = "chat_ticket", request_body = ChatTicketRequest,
    responses(
        (status = 200, description = "The created ticket", body = ChatTicket),
        (status = 404, description = "Unknown conversation"),
        (status = 507, description = "The data directory cannot be written"),
    ))]
pub async fn ticket(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(mut req): ApiJson<ChatTicketRequest>,
) -> ApiResult<Json<ChatTicket>> {
    let limits = state.limits();
    check_id("session_id", &req.session_id)?;
    check_text("title", &req.title, false, limits)?;
    check_text("body", &req.body, false, limits)?;
    check_short("contact", &req.contact)?;
    check_tenant(&req.tenant)?;
    if req.contact.chars().any(char::is_control) {
        return Err(ApiError::InvalidInput(
            "`contact` must not contain control characters".into(),
        ));
    }
    req.tenant = caller.tenant(&req.tenant);
    let tenant = req.tenant.clone();
    let created = state.run(move |e| Ok(e.chat_ticket(&req)?)).await?;
    let handoff = events::ChatHandoff {
        source: "chat".into(),
        ticket_id: Some(created.ticket_id.clone()),
        conversation: None,
        draft: created.draft.clone(),
    };
    state.emit(&tenant, events::CHAT_HANDOFF, handoff).await?;
    state.metrics().observe_decision("chat_ticket", "created");
    Ok(Json(created))
}
