//! Connectors: the service's calls to and from the platforms support teams
//! work in. Not HTTP routing (that is `http::connectors`), not decisions
//! (that is the engine): the webhooks' authenticity, what a Zammad ticket or
//! a Chatwoot message becomes, and the one durable outbox every outgoing
//! call goes through.
//!
//! | module | job |
//! |---|---|
//! | [`settings`] | the connectors file (`--connectors`), checked against the pack at start |
//! | [`signing`] | the signatures: Zammad's HMAC-SHA1, Chatwoot's and ours HMAC-SHA256, constant-time |
//! | `outbox` | the durable queue and its worker: retries, backoff, never twice |
//! | `deliver` | one outbox step as an HTTP call, with the check of an earlier attempt |
//! | [`zammad`] | the trigger webhook, the write-backs, the history import |
//! | `chatwoot` | the agent-bot contract: which messages to answer, the replies |
//! | [`events`] | the signed outgoing events and their documented shapes |
//!
//! **For other features:** [`Connectors::emit`] posts a signed event
//! (`tenant`, an event type of [`events::EVENT_TYPES`], any JSON data) to the
//! tenant's subscribed endpoints through the outbox; it returns once the
//! event is durable.

mod chatwoot;
mod deliver;
pub mod events;
mod outbox;
pub mod settings;
pub mod signing;
pub mod zammad;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use serde::Serialize;
use triage::api::{ChatMessage, DeflectAction, TicketRequest};
use triage::Engine;

pub use outbox::{id_of, ItemSummary, OutboxStats, Step};
pub use settings::{RetryPolicy, Secret, Settings};

use crate::services::ServiceError;
use outbox::Outbox;

/// Default delay before an outbox call is retried the first time (ms).
pub const DEFAULT_OUTBOX_BACKOFF_MS: u64 = 2_000;
/// Default longest delay between two attempts (ms).
pub const DEFAULT_OUTBOX_MAX_BACKOFF_MS: u64 = 600_000;
/// Default attempts of one call before its delivery is given up.
pub const DEFAULT_OUTBOX_MAX_ATTEMPTS: u32 = 25;
/// Default longest wait for one outgoing call's answer (ms).
pub const DEFAULT_OUTBOX_TIMEOUT_MS: u64 = 10_000;

/// What a connector call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// No such connector for the tenant.
    #[error("{0}")]
    NotConfigured(String),
    /// A missing or wrong signature or token.
    #[error("{0}")]
    Unauthorized(String),
    /// A payload the platform's contract does not allow.
    #[error("{0}")]
    InvalidInput(String),
    /// The outbox could not be opened (shown by `/readyz`).
    #[error("{0}")]
    NotReady(String),
    /// The outbox or the engine failed.
    #[error(transparent)]
    Service(#[from] ServiceError),
}

impl From<triage::Error> for ConnectorError {
    fn from(e: triage::Error) -> Self {
        ConnectorError::Service(ServiceError::Engine(e))
    }
}

/// What a webhook was answered.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct WebhookAnswer {
    /// `queued` (acted on: the write-backs are in the outbox), `duplicate`
    /// (this delivery was acted on before) or `ignored` (see `reason`).
    pub status: String,
    /// Why it was ignored.
    pub reason: Option<String>,
    /// The outbox item (`GET /v1/admin/outbox`).
    pub id: Option<String>,
    /// What was decided: a category (Zammad) or `answer`/`clarify`/`handoff` (Chatwoot).
    pub decision: Option<String>,
}

impl WebhookAnswer {
    fn duplicate(id: String) -> Self {
        WebhookAnswer {
            status: "duplicate".into(),
            reason: None,
            id: Some(id),
            decision: None,
        }
    }

    fn ignored(reason: &str) -> Self {
        WebhookAnswer {
            status: "ignored".into(),
            reason: Some(reason.into()),
            id: None,
            decision: None,
        }
    }
}

/// The headers of a Zammad webhook delivery.
#[derive(Debug, Clone, Default)]
pub struct ZammadDelivery {
    /// `X-Hub-Signature`.
    pub signature: String,
    /// `X-Zammad-Delivery`.
    pub delivery: String,
}

/// The authenticity a Chatwoot delivery carries.
#[derive(Debug, Clone, Default)]
pub struct ChatwootDelivery {
    /// `X-Chatwoot-Signature`.
    pub signature: String,
    /// `X-Chatwoot-Timestamp`.
    pub timestamp: String,
    /// The webhook URL's `token`.
    pub token: String,
}

struct Opened {
    outbox: Arc<Outbox>,
    conversations: chatwoot::Conversations,
}

/// The connectors of the service: settings, outbox, the bot's conversations.
pub struct Connectors {
    settings: Arc<Settings>,
    data_dir: PathBuf,
    opened: OnceLock<Opened>,
    open_error: Mutex<Option<String>>,
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The first `max` characters of `text`.
fn clip(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

impl Connectors {
    /// Connectors with `settings`, keeping their files under `data_dir`;
    /// nothing is opened until [`Connectors::start`].
    pub fn new(data_dir: &Path, settings: Settings) -> Connectors {
        Connectors {
            settings: Arc::new(settings),
            data_dir: data_dir.to_path_buf(),
            opened: OnceLock::new(),
            open_error: Mutex::new(None),
        }
    }

    /// Opens the outbox (resuming what a previous run left) and starts its worker.
    pub fn start(&self) {
        if self.opened.get().is_some() {
            return;
        }
        let opened = Outbox::open(&self.data_dir, self.settings.policy).and_then(|outbox| {
            Ok(Opened {
                outbox: Arc::new(outbox),
                conversations: chatwoot::Conversations::open(&self.data_dir.join("connectors"))?,
            })
        });
        match opened {
            Ok(o) => {
                o.outbox.start(Arc::clone(&self.settings));
                let _ = self.opened.set(o);
            }
            Err(e) => {
                tracing::error!("cannot open the outbox: {e}");
                if let Ok(mut slot) = self.open_error.lock() {
                    *slot = Some(e.to_string());
                }
            }
        }
    }

    /// Stops the outbox's worker after its call in progress.
    pub fn shutdown(&self) {
        if let Some(o) = self.opened.get() {
            o.outbox.shutdown();
        }
    }

    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    fn opened(&self) -> Result<&Opened, ConnectorError> {
        self.opened.get().ok_or_else(|| {
            ConnectorError::NotReady(
                self.open_error
                    .lock()
                    .ok()
                    .and_then(|e| e.clone())
                    .map(|e| format!("the outbox cannot be opened: {e}"))
                    .unwrap_or_else(|| "the outbox is not open yet".into()),
            )
        })
    }

    /// The outbox's figures (`None` until it is open).
    pub fn stats(&self) -> Option<OutboxStats> {
        self.opened.get().map(|o| o.outbox.stats())
    }

    /// Why the outbox could not be opened, if it could not.
    pub fn open_error(&self) -> Option<String> {
        self.open_error.lock().ok().and_then(|e| e.clone())
    }

    /// A tenant's pending and failed deliveries.
    pub fn list(&self, tenant: Option<&str>) -> Vec<ItemSummary> {
        self.opened
            .get()
            .map(|o| o.outbox.list(tenant))
            .unwrap_or_default()
    }

    /// Posts a signed event of `event_type` with `data` to each endpoint of
    /// `tenant` subscribed to it, through the outbox; returns how many
    /// endpoints will get it, once it is durable. Without subscribed
    /// endpoints this writes nothing.
    pub fn emit(
        &self,
        tenant: &str,
        event_type: &str,
        data: impl Serialize,
    ) -> Result<usize, ConnectorError> {
        let endpoints: Vec<&settings::WebhookSettings> = self
            .settings
            .webhooks
            .iter()
            .filter(|w| w.tenant == tenant && w.wants(event_type))
            .collect();
        if endpoints.is_empty() {
            return Ok(0);
        }
        let outbox = &self.opened()?.outbox;
        let id = format!("evt_{:032x}", rand::random::<u128>());
        let event = events::Event {
            id: id.clone(),
            event_type: event_type.to_string(),
            created_at: time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            tenant: tenant.to_string(),
            data: serde_json::to_value(data)
                .map_err(|e| ConnectorError::InvalidInput(e.to_string()))?,
        };
        let body = serde_json::to_string(&event)
            .map_err(|e| ConnectorError::InvalidInput(e.to_string()))?;
        for w in &endpoints {
            outbox.enqueue(
                &format!("event/{id}/{}", w.url),
                tenant,
                "webhook",
                &format!("webhook/{}", w.url),
                vec![Step::Event {
                    url: w.url.clone(),
                    event_id: id.clone(),
                    event_type: event_type.to_string(),
                    body: body.clone(),
                }],
            )?;
        }
        Ok(endpoints.len())
    }

    /// A Zammad trigger delivery for `tenant`: verified (HMAC-SHA1 of the
    /// raw body, constant time), acted on once per delivery id (triaged, the
    /// ticket kept for duplicates, the write-backs written to the outbox, a
    /// `triage.decided` event emitted); texts longer than `max_chars` are cut.
    pub fn zammad_webhook(
        &self,
        engine: &Engine,
        tenant: &str,
        delivery: &ZammadDelivery,
        body: &[u8],
        max_chars: usize,
    ) -> Result<WebhookAnswer, ConnectorError> {
        let z = self.settings.zammad(tenant).ok_or_else(|| {
            ConnectorError::NotConfigured(format!("no Zammad is configured for tenant `{tenant}`"))
        })?;
        if !signing::verify_zammad(z.webhook_secret.expose(), body, &delivery.signature) {
            return Err(ConnectorError::Unauthorized(
                "missing or wrong X-Hub-Signature (sha1= HMAC-SHA1 of the body with the webhook's secret)"
                    .into(),
            ));
        }
        let id = delivery.delivery.trim();
        if id.is_empty() || id.chars().count() > 256 || id.chars().any(char::is_control) {
            return Err(ConnectorError::InvalidInput(
                "X-Zammad-Delivery must be a delivery id (1-256 characters)".into(),
            ));
        }
        let payload: zammad::WebhookPayload = serde_json::from_slice(body).map_err(|e| {
            ConnectorError::InvalidInput(format!("not a Zammad webhook payload: {e}"))
        })?;
        if payload.ticket.id == 0 {
            return Err(ConnectorError::InvalidInput(
                "the payload has no `ticket.id`".into(),
            ));
        }
        let outbox = &self.opened()?.outbox;
        let key = format!("zammad/{tenant}/{id}");
        if outbox.knows(&key) {
            return Ok(WebhookAnswer::duplicate(id_of(&key)));
        }
        if let Some(a) = &payload.article {
            if a.sender != "Customer" || a.internal {
                // Our own notes and agents' replies fire triggers too.
                outbox.enqueue(&key, tenant, "zammad", "", Vec::new())?;
                return Ok(WebhookAnswer::ignored(
                    "the article is not the customer's (an agent's, a note, or the system's)",
                ));
            }
        }
        let t = &payload.ticket;
        let title = clip(t.title.trim(), max_chars);
        let text = clip(
            &payload
                .article
                .as_ref()
                .map(|a| a.text())
                .unwrap_or_default(),
            max_chars,
        );
        if title.trim().is_empty() && text.trim().is_empty() {
            outbox.enqueue(&key, tenant, "zammad", "", Vec::new())?;
            return Ok(WebhookAnswer::ignored("the ticket has no text"));
        }
        let customer = match &t.customer_id {
            serde_json::Value::Null => String::new(),
            v => format!(
                "zammad:{}",
                v.as_u64().map(|n| n.to_string()).unwrap_or_default()
            ),
        };
        let request = TicketRequest {
            title: title.clone(),
            body: text.clone(),
            channel: "zammad".into(),
            customer_id: customer.clone(),
            tenant: tenant.to_string(),
        };
        let ours = zammad::our_id(t.id);
        let mut result = engine.triage(&request)?;
        result.duplicates.retain(|d| d.ticket.id != ours);
        let mut suggestions = engine.suggest(&request)?;
        suggestions.similar_tickets.retain(|h| h.id != ours);
        suggestions.duplicates.retain(|d| d.ticket.id != ours);
        let steps = zammad::plan(z, t.id, &result, &suggestions, &id_of(&key)[..12]);
        // Kept (open, unlabelled) so that later requests find it as a duplicate.
        let created_at = if time::OffsetDateTime::parse(
            &t.created_at,
            &time::format_description::well_known::Rfc3339,
        )
        .is_ok()
        {
            t.created_at.clone()
        } else {
            String::new()
        };
        engine.upsert_ticket(indexer::Ticket {
            id: ours,
            title,
            body: text,
            status: "open".into(),
            channel: "zammad".into(),
            customer_id: customer,
            created_at,
            tenant: tenant.to_string(),
            ..indexer::Ticket::default()
        })?;
        let queued = outbox.enqueue(
            &key,
            tenant,
            "zammad",
            &format!("zammad/{tenant}/{}", t.id),
            steps,
        )?;
        if queued.duplicate {
            return Ok(WebhookAnswer::duplicate(queued.id));
        }
        self.emit(
            tenant,
            events::TRIAGE_DECIDED,
            events::TriageDecided::from_result("zammad", Some(t.id.to_string()), &result),
        )?;
        Ok(WebhookAnswer {
            status: "queued".into(),
            reason: None,
            id: Some(queued.id),
            decision: Some(
                result
                    .category
                    .label
                    .clone()
                    .filter(|_| !result.category.abstain)
                    .unwrap_or_else(|| "needs-human".into()),
            ),
        })
    }

    /// A Chatwoot agent-bot event for `tenant`: authenticated (the bot's
    /// signature, else the URL token), answered once per message and only
    /// when it is the customer's message in a conversation no person has;
    /// the reply, or the handoff (a message, a private note with the ticket
    /// draft, the status set to `open`), goes through the outbox.
    pub fn chatwoot_webhook(
        &self,
        engine: &Engine,
        tenant: &str,
        auth: &ChatwootDelivery,
        body: &[u8],
        max_chars: usize,
    ) -> Result<WebhookAnswer, ConnectorError> {
        let c = self.settings.chatwoot(tenant).ok_or_else(|| {
            ConnectorError::NotConfigured(format!(
                "no Chatwoot is configured for tenant `{tenant}`"
            ))
        })?;
        let authentic = match (&c.webhook_secret, &c.url_token) {
            (Some(secret), _) => signing::verify_chatwoot(
                secret.expose(),
                body,
                &auth.timestamp,
                &auth.signature,
                now_unix(),
            ),
            (None, Some(token)) => signing::same_token(token.expose(), &auth.token),
            (None, None) => false,
        };
        if !authentic {
            return Err(ConnectorError::Unauthorized(
                "missing, wrong or stale X-Chatwoot-Signature / X-Chatwoot-Timestamp (or URL token)".into(),
            ));
        }
        let event: chatwoot::MessageEvent = serde_json::from_slice(body).map_err(|e| {
            ConnectorError::InvalidInput(format!("not a Chatwoot webhook event: {e}"))
        })?;
        if let Some(reason) = event.ignored(c.account_id) {
            return Ok(WebhookAnswer::ignored(reason));
        }
        let opened = self.opened()?;
        let key = format!(
            "chatwoot/{tenant}/{}/{}",
            event.account.id,
            event.message_id()
        );
        if opened.outbox.knows(&key) {
            return Ok(WebhookAnswer::duplicate(id_of(&key)));
        }
        let (account, conversation) = (event.account.id, event.conversation.id);
        let conv = chatwoot::conversation_key(tenant, account, conversation);
        if opened.conversations.handed_off(&conv) {
            return Ok(WebhookAnswer::ignored(
                "the conversation was handed to a person",
            ));
        }
        let text = clip(
            event.content.as_deref().unwrap_or_default().trim(),
            max_chars,
        );
        let (steps, decision, reply) = match opened.conversations.picked(&conv, &text) {
            Some((question, answer)) => (
                vec![Step::ChatwootMessage {
                    account,
                    conversation,
                    content: chatwoot::answer_text(&question, &answer),
                    private: false,
                }],
                "answer",
                None,
            ),
            None => {
                let contact = event
                    .sender
                    .as_ref()
                    .map(|s| s.id.to_string())
                    .unwrap_or_default();
                let reply = engine.deflect(&ChatMessage {
                    text,
                    session_id: opened.conversations.session(&conv),
                    customer_id: format!("chatwoot:{account}:{contact}"),
                    tenant: tenant.to_string(),
                })?;
                opened.conversations.remember(&conv, &reply);
                let decision = match reply.action {
                    DeflectAction::Answer => "answer",
                    DeflectAction::Clarify => "clarify",
                    DeflectAction::Handoff => "handoff",
                };
                (
                    chatwoot::plan(account, conversation, &reply),
                    decision,
                    Some(reply),
                )
            }
        };
        let handoff = steps
            .iter()
            .any(|s| matches!(s, Step::ChatwootStatus { .. }));
        if handoff {
            // Before the outbox: the bot must stay quiet from now on.
            opened.conversations.hand_off(&conv)?;
        }
        let queued = opened.outbox.enqueue(
            &key,
            tenant,
            "chatwoot",
            &format!("chatwoot/{tenant}/{account}/{conversation}"),
            steps,
        )?;
        if queued.duplicate {
            return Ok(WebhookAnswer::duplicate(queued.id));
        }
        if handoff {
            if let Some(draft) = reply.and_then(|r| r.ticket_draft) {
                self.emit(
                    tenant,
                    events::CHAT_HANDOFF,
                    events::ChatHandoff {
                        source: "chatwoot".into(),
                        ticket_id: None,
                        conversation: Some(format!("{account}/{conversation}")),
                        draft,
                    },
                )?;
            }
        }
        Ok(WebhookAnswer {
            status: "queued".into(),
            reason: None,
            id: Some(queued.id),
            decision: Some(decision.into()),
        })
    }
}
