//! The signed events the service posts to configured endpoints (Zendesk's
//! and Stripe's scheme): one JSON envelope per decision, delivered through
//! the outbox with `Triage-Signature: t=<unix>,v1=<hex HMAC-SHA256 of
//! "{t}.{body}">`, `Triage-Event-Id` and `Triage-Event-Type`. Their shapes are
//! the OpenAPI document's `webhooks` ([`webhooks_doc`]).
//!
//! Adding an event type: a name in [`EVENT_TYPES`], a data type deriving
//! `ToSchema` in [`schemas`]/[`webhooks_doc`], and a call of
//! [`super::Connectors::emit`] where it is decided.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{json, Value};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{PartialSchema, ToSchema};

/// A triage decision was made (`POST /v1/triage`, a Zammad ticket).
pub const TRIAGE_DECIDED: &str = "triage.decided";
/// A conversation was handed to a person (a chat ticket, a Chatwoot handoff).
pub const CHAT_HANDOFF: &str = "chat.handoff";
/// A phrasing was learned for an article (an agent's, or customers' agreed).
pub const PHRASING_LEARNED: &str = "phrasing.learned";

/// Every event type an endpoint may subscribe to.
pub const EVENT_TYPES: &[&str] = &[TRIAGE_DECIDED, CHAT_HANDOFF, PHRASING_LEARNED];

/// The envelope every event is posted in.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Event {
    /// Unique id (also `Triage-Event-Id`): the same on every retry, so a
    /// receiver drops an event it has already seen.
    pub id: String,
    /// One of the event types (also `Triage-Event-Type`).
    #[serde(rename = "type")]
    pub event_type: String,
    /// When it was decided (RFC 3339).
    pub created_at: String,
    /// The tenant (`""` = the default tenant).
    pub tenant: String,
    /// The event's data; its shape depends on `type`.
    #[schema(value_type = Object)]
    pub data: Value,
}

/// `triage.decided`: category, priority and queue of a request.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TriageDecided {
    /// Where the request came from: `api` or `zammad`.
    pub source: String,
    /// The ticket's id where it has one (Zammad's ticket id).
    pub ticket_id: Option<String>,
    /// The category, unless the classifier abstained.
    pub category: Option<String>,
    /// Its calibrated confidence.
    pub category_confidence: f32,
    /// True when the category was left to a person.
    pub abstained: bool,
    /// `P0`..`P3`.
    pub priority: Option<String>,
    /// The queue.
    pub queue: Option<String>,
    /// True when a person must look (abstention, escalation risk).
    pub needs_human: bool,
    /// Fields found (name → value).
    pub fields: BTreeMap<String, String>,
    /// Ids of likely duplicates.
    pub duplicates: Vec<String>,
}

impl TriageDecided {
    /// The event data of a triage result.
    pub fn from_result(
        source: &str,
        ticket_id: Option<String>,
        r: &triage::api::TriageResult,
    ) -> Self {
        TriageDecided {
            source: source.into(),
            ticket_id,
            category: r.category.label.clone().filter(|_| !r.category.abstain),
            category_confidence: r.category.confidence,
            abstained: r.category.abstain,
            priority: r.priority.label.clone(),
            queue: r.queue.label.clone(),
            needs_human: r.needs_human,
            fields: r
                .fields
                .iter()
                .map(|f| (f.name.clone(), f.value.clone()))
                .collect(),
            duplicates: r.duplicates.iter().map(|d| d.ticket.id.clone()).collect(),
        }
    }
}

/// `chat.handoff`: a conversation was handed to a person, with its ticket draft.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ChatHandoff {
    /// `chat` (the chat page or widget) or `chatwoot`.
    pub source: String,
    /// The ticket created (`chat-…`), for the chat.
    pub ticket_id: Option<String>,
    /// The conversation (`account/conversation` for Chatwoot).
    pub conversation: Option<String>,
    /// The prefilled ticket.
    pub draft: triage::api::ChatDraft,
}

/// `phrasing.learned`: a phrasing now answers for an article.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PhrasingLearned {
    /// The learned phrasing's id, when known.
    pub id: Option<String>,
    /// The article it answers for.
    pub article_id: String,
    /// The phrasing (personal data masked), when known.
    pub text: Option<String>,
    /// `active` or `candidate`.
    pub status: String,
    /// `agent` or `customer`.
    pub source: String,
}

/// The schemas the `webhooks` section names.
pub fn schemas() -> Vec<(String, RefOr<Schema>)> {
    let mut out = vec![
        ("Event".to_string(), Event::schema()),
        ("TriageDecided".to_string(), TriageDecided::schema()),
        ("ChatHandoff".to_string(), ChatHandoff::schema()),
        ("PhrasingLearned".to_string(), PhrasingLearned::schema()),
    ];
    Event::schemas(&mut out);
    TriageDecided::schemas(&mut out);
    ChatHandoff::schemas(&mut out);
    PhrasingLearned::schemas(&mut out);
    out
}

/// The OpenAPI 3.1 `webhooks` object: each event as the POST we send.
pub fn webhooks_doc() -> Value {
    let mut hooks = serde_json::Map::new();
    for (event, data, summary) in [
        (
            TRIAGE_DECIDED,
            "TriageDecided",
            "A triage decision (POST /v1/triage, a Zammad ticket)",
        ),
        (
            CHAT_HANDOFF,
            "ChatHandoff",
            "A conversation handed to a person, with its ticket draft",
        ),
        (
            PHRASING_LEARNED,
            "PhrasingLearned",
            "A phrasing that now answers for an article",
        ),
    ] {
        let header = |name: &str, description: &str| {
            json!({"name": name, "in": "header", "required": true, "description": description,
                   "schema": {"type": "string"}})
        };
        hooks.insert(event.to_string(), json!({"post": {
            "summary": summary,
            "description": "Posted to each endpoint of the tenant subscribed to this type (`[[webhooks]]` \
                in the connectors file), through the durable outbox: retried with backoff on 5xx, 429 and \
                timeouts. Verify `Triage-Signature` (HMAC-SHA256 of `{t}.{raw body}` with the endpoint's \
                secret, `t` within 5 minutes), then drop an `id` you have seen (a retry repeats it). \
                Answer 2xx; any other 4xx gives the event up.",
            "parameters": [
                header("Triage-Signature", "`t=<unix seconds>,v1=<hex HMAC-SHA256 of \"{t}.{body}\">`"),
                header("Triage-Event-Id", "The event's id (the body's `id`)"),
                header("Triage-Event-Type", "The event's type (the body's `type`)"),
            ],
            "requestBody": {"required": true, "content": {"application/json": {"schema": {"allOf": [
                {"$ref": "#/components/schemas/Event"},
                {"type": "object", "required": ["type", "data"], "properties": {
                    "type": {"const": event},
                    "data": {"$ref": format!("#/components/schemas/{data}")}}}
            ]}}}},
            "responses": {"2XX": {"description": "Received"}},
        }}));
    }
    Value::Object(hooks)
}
