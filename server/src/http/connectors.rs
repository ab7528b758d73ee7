//! The platforms' webhooks (Zammad's trigger, Chatwoot's agent bot),
//! authenticated by their signatures (not API keys), and the outbox listing
//! for a tenant's administrators. Thin: the work is `crate::connectors`'.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use serde::Deserialize;

use super::error::ApiResult;
use super::extract::{check_tenant, ApiQuery};
use super::{AppState, Caller};
use crate::connectors::{ChatwootDelivery, ItemSummary, WebhookAnswer, ZammadDelivery};

/// The query of a webhook URL.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(default, deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WebhookQuery {
    /// The tenant whose connector this is (empty = the default tenant).
    tenant: String,
    /// Chatwoot only, for versions that do not sign: the `url_token` of the
    /// tenant's `[[chatwoot]]` settings.
    token: String,
}

fn header(headers: &HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// `POST /v1/connectors/zammad/webhook`: a Zammad trigger's webhook. The
/// signature (`X-Hub-Signature: sha1=` HMAC-SHA1 of the raw body with the
/// webhook's secret) is checked in constant time; a delivery id
/// (`X-Zammad-Delivery`) seen before is answered `duplicate` and not acted
/// on again. The customer's article is triaged and the write-backs (group
/// and priority, tags, an internal note) are queued in the outbox before the
/// answer.
#[utoipa::path(post, path = "/connectors/zammad/webhook", operation_id = "zammad_webhook",
    params(WebhookQuery,
        ("X-Hub-Signature" = String, Header, description = "`sha1=<hex HMAC-SHA1 of the raw body>` with the webhook's signature token"),
        ("X-Zammad-Delivery" = String, Header, description = "The delivery's id; a repeated id is acted on once"),
        ("X-Zammad-Trigger" = Option<String>, Header, description = "The trigger's name (informational)")),
    request_body(content = Object, description = "Zammad's default webhook payload: `ticket` and `article`"),
    security(()),
    responses(
        (status = 200, description = "Queued, a duplicate delivery, or ignored (not a customer's article)", body = WebhookAnswer),
        (status = 401, description = "Missing or wrong signature"),
        (status = 404, description = "No Zammad is configured for this tenant"),
        (status = 422, description = "No delivery id, or not a Zammad payload"),
        (status = 507, description = "The data directory cannot be written"),
    ))]
pub async fn zammad_webhook(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<WebhookQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<WebhookAnswer>> {
    check_tenant(&q.tenant)?;
    let delivery = ZammadDelivery {
        signature: header(&headers, "x-hub-signature"),
        delivery: header(&headers, "x-zammad-delivery"),
    };
    let connectors = state.connectors();
    let max = state.limits().max_text_chars;
    let answer = state
        .run(move |e| Ok(connectors.zammad_webhook(e, &q.tenant, &delivery, &body, max)?))
        .await?;
    state
        .metrics()
        .observe_decision("zammad_webhook", &answer.status);
    Ok(Json(answer))
}

/// `POST /v1/connectors/chatwoot/webhook`: a Chatwoot agent bot's events.
/// Authenticated by the bot's signature (`X-Chatwoot-Signature: sha256=` HMAC-SHA256 of
/// `{timestamp}.{body}`, `X-Chatwoot-Timestamp` within 5 minutes; Chatwoot 4.13 and later) or,
/// for versions that do not sign, the `token` of the webhook URL. Only the customer's
/// messages of conversations no person has are answered, each once; the reply, or the
/// handoff (a private note with the ticket draft, the status set to `open`), goes
/// through the outbox.
#[utoipa::path(post, path = "/connectors/chatwoot/webhook", operation_id = "chatwoot_webhook",
    params(WebhookQuery,
        ("X-Chatwoot-Signature" = Option<String>, Header, description = "`sha256=<hex HMAC-SHA256 of \"{timestamp}.{body}\">` with the agent bot's secret"),
        ("X-Chatwoot-Timestamp" = Option<String>, Header, description = "Unix seconds; at most 5 minutes from the service's clock")),
    request_body(content = Object, description = "A Chatwoot webhook event (`message_created`, ...)"),
    security(()),
    responses(
        (status = 200, description = "Queued, a duplicate, or ignored (not the customer's message, or a person has the conversation)", body = WebhookAnswer),
        (status = 401, description = "Missing, wrong or stale signature (or URL token)"),
        (status = 404, description = "No Chatwoot is configured for this tenant"),
        (status = 422, description = "Not a Chatwoot event"),
        (status = 507, description = "The data directory cannot be written"),
    ))]
pub async fn chatwoot_webhook(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<WebhookQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<WebhookAnswer>> {
    check_tenant(&q.tenant)?;
    let auth = ChatwootDelivery {
        signature: header(&headers, "x-chatwoot-signature"),
        timestamp: header(&headers, "x-chatwoot-timestamp"),
        token: q.token.clone(),
    };
    let connectors = state.connectors();
    let max = state.limits().max_text_chars;
    let answer = state
        .run(move |e| Ok(connectors.chatwoot_webhook(e, &q.tenant, &auth, &body, max)?))
        .await?;
    let outcome = answer
        .decision
        .as_deref()
        .unwrap_or(&answer.status)
        .to_string();
    state
        .metrics()
        .observe_decision("chatwoot_webhook", &outcome);
    Ok(Json(answer))
}

/// `GET /v1/admin/outbox`: the tenant's deliveries to other systems that
/// are still pending (with their last error) or were given up.
#[utoipa::path(get, path = "/admin/outbox", operation_id = "admin_outbox",
    responses((status = 200, description = "Pending and failed deliveries, oldest first", body = Vec<ItemSummary>)))]
pub async fn outbox(State(state): State<AppState>, caller: Caller) -> Json<Vec<ItemSummary>> {
    Json(state.connectors().list(caller.listing_tenant()))
}
