//! Request and response types of the triage engine.
//!
//! These are the engine's public contract and, serialised with serde, the
//! JSON bodies of the HTTP API. Add fields freely; rename or remove none.

use std::collections::BTreeMap;

use indexer::{Article, Hit, Ticket};
use serde::{Deserialize, Serialize};

mod insights;

pub use insights::{
    AlertExample, AnswerMaterial, ClusterExample, ClusterStatus, DeflectionStats, EmergingCluster,
    EmergingReport, GapReport, Heatmap, InsightAlert, KnowledgeGap, NearestArticle, Overview,
    PublishGap, PublishedGap, RiskyTicket, Share, Spike, TriageStats, VolumeSeries,
};

/// An incoming service request to triage.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TicketRequest {
    /// Subject line (may be empty).
    pub title: String,
    /// The request text.
    pub body: String,
    /// Channel (phone, chat, wechat, email, web).
    pub channel: String,
    /// Customer id, used to find this customer's recent duplicates first.
    pub customer_id: String,
    /// Tenant (empty = default tenant).
    pub tenant: String,
}

/// One scored label with the runner-up alternatives.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LabelDecision {
    /// The chosen label, or `None` when the engine abstains.
    pub label: Option<String>,
    /// Calibrated probability of the top label (0..1).
    pub confidence: f32,
    /// True when confidence is below the pack's threshold: a human should decide.
    pub abstain: bool,
    /// Top alternatives with their probabilities, best first (includes the top label).
    pub alternatives: Vec<ScoredLabel>,
    /// Human-readable reasons (e.g. `knn: 7/10 neighbours`, `lexicon: 停机`).
    pub reasons: Vec<String>,
}

/// A label with a probability.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ScoredLabel {
    /// The label id.
    pub label: String,
    /// Its probability.
    pub probability: f32,
}

/// A field extracted from the text (with its span) or inferred from neighbours.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FieldValue {
    /// Field name (e.g. `order_no`, `phone`, `email`, `device_model`).
    pub name: String,
    /// The value.
    pub value: String,
    /// Byte span `[start, end)` in the text the value came from, if extracted.
    pub span: Option<(usize, usize)>,
    /// Character span `[start, end)` (Unicode scalar values), if extracted — easier for UIs.
    pub char_span: Option<(usize, usize)>,
    /// `extracted` (found in the text) or `inferred` (from similar tickets).
    pub source: String,
    /// 1.0 for pattern matches; the neighbour agreement for inferred values.
    pub confidence: f32,
}

/// A likely duplicate of the request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Duplicate {
    /// The existing ticket.
    pub ticket: Ticket,
    /// Cosine similarity to the request.
    pub similarity: f32,
    /// Whether it is from the same customer.
    pub same_customer: bool,
}

/// The full triage of one request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TriageResult {
    /// Category decision.
    pub category: LabelDecision,
    /// Priority decision (`P0`..`P3`).
    pub priority: LabelDecision,
    /// Queue / skill group (from the category, or its own decision).
    pub queue: LabelDecision,
    /// Extracted and inferred fields.
    pub fields: Vec<FieldValue>,
    /// Likely duplicates, same customer first.
    pub duplicates: Vec<Duplicate>,
    /// True when any of category/priority needs a human.
    pub needs_human: bool,
    /// The nearest labelled tickets the decision used (evidence).
    pub neighbours: Vec<Hit>,
    /// How likely the request is to turn into a complaint, and why.
    #[serde(default)]
    pub escalation_risk: EscalationRisk,
}

/// The risk that a request escalates into a complaint (see the pack's
/// `[escalation]` table): explicit escalation words, repeat contact, anger,
/// waiting time and similar labelled tickets, each named in `reasons`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EscalationRisk {
    /// Risk between 0 and 1.
    pub score: f32,
    /// Whether the risk reaches the pack's flag (default 0.5).
    pub flagged: bool,
    /// The evidence that raised it (or "no sign of escalation").
    pub reasons: Vec<String>,
}

/// A self-service chat message.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChatMessage {
    /// The message text.
    pub text: String,
    /// The conversation id the service issued with an earlier reply; omit it
    /// (or send an unknown one) to start a new conversation. Earlier turns of
    /// the conversation add context to short follow-ups.
    pub session_id: Option<String>,
    /// Customer id, copied into the ticket created on handoff.
    pub customer_id: String,
    /// Tenant (empty = default tenant).
    pub tenant: String,
}

/// What the chat should do with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum DeflectAction {
    /// Show the article's answer.
    Answer,
    /// Offer 2–3 candidate articles to choose from.
    Clarify,
    /// Hand off to a human and create a ticket.
    Handoff,
}

/// An article as the chat shows it: its question and answer, nothing else
/// (no learned phrasings: those are other customers' words).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChatArticle {
    /// Article id (to say whether it helped).
    pub id: String,
    /// The question it answers.
    pub question: String,
    /// The answer.
    pub answer: String,
    /// Its category.
    pub category: String,
}

/// Why an article was matched, as far as the chat may see.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChatEvidence {
    /// Cosine similarity of the message and the best-matching phrasing.
    pub similarity: f32,
    /// Words or characters the message shares with that phrasing.
    pub matched_terms: Vec<String>,
    /// Words or characters of that phrasing the message lacks (empty when it
    /// was a learned phrasing: customers' words are not shown).
    #[serde(default)]
    pub missing_terms: Vec<String>,
    /// The article's own phrasing that matched best; `None` when it was a
    /// phrasing learned from chats (not shown: customers' words).
    pub matched_phrasing: Option<String>,
}

/// A candidate article for a chat message.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChatCandidate {
    /// The article.
    pub article: ChatArticle,
    /// Calibrated probability that this article answers the message.
    pub confidence: f32,
    /// The match evidence.
    pub evidence: ChatEvidence,
}

/// A prefilled ticket the chat shows before a handoff: the customer's own
/// words and what the service read from them, nothing of other tickets.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChatDraft {
    /// Proposed title.
    pub title: String,
    /// The conversation text.
    pub body: String,
    /// Predicted category, if confident.
    pub category: Option<String>,
    /// Predicted priority (the urgency lexicon included), if decided.
    pub priority: Option<String>,
    /// Predicted queue, if confident.
    pub queue: Option<String>,
    /// True when a person must decide category or priority.
    pub needs_human: bool,
    /// Fields found in the customer's text (with spans).
    pub fields: Vec<FieldValue>,
}

/// The chat's answer to one message.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChatReply {
    /// Answer, clarify or hand off.
    pub action: DeflectAction,
    /// Confidence of the best candidate.
    pub confidence: f32,
    /// The conversation this message belongs to (issued by the service: send
    /// it with the next message and with feedback).
    pub session_id: String,
    /// The turn number of this message in the conversation (for feedback).
    pub turn: u32,
    /// The answering article (`answer`) or the plausible candidates
    /// (`clarify`, one to three), most probable first.
    pub candidates: Vec<ChatCandidate>,
    /// On handoff: the prefilled ticket the chat can submit.
    pub ticket_draft: Option<ChatDraft>,
    /// Why this action was chosen.
    pub reasons: Vec<String>,
}

/// A customer's "did this help?" about an article the chat showed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChatFeedback {
    /// The conversation.
    pub session_id: String,
    /// The turn whose reply showed the article.
    pub turn: u32,
    /// The article shown.
    pub article_id: String,
    /// Whether it helped.
    pub helpful: bool,
    /// Tenant (empty = default tenant).
    pub tenant: String,
}

/// What a customer's feedback did.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChatFeedbackOutcome {
    /// Always true: the feedback was recorded.
    pub recorded: bool,
    /// What became of the message as a phrasing of the article: `candidate`
    /// (waiting for more customers or an agent), `active`, `removed`, `known`
    /// (already one of the article's phrasings) or `not_learned` (see `reason`).
    pub learning: String,
    /// Why the message was not learned, when it was not.
    pub reason: Option<String>,
}

/// A customer's request to hand the conversation to a person.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChatTicketRequest {
    /// The conversation.
    pub session_id: String,
    /// Title (default: the first message).
    pub title: String,
    /// Description (default: the conversation's messages).
    pub body: String,
    /// How to reach the customer (phone or e-mail), optional.
    pub contact: String,
    /// Tenant (empty = default tenant).
    pub tenant: String,
}

/// The ticket a chat handoff created.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChatTicket {
    /// The new ticket's id (chosen by the service).
    pub ticket_id: String,
    /// Always `open`: an agent picks it up.
    pub status: String,
    /// The draft it was created from (category and priority are predictions
    /// for the agent; the ticket is stored unlabelled until an agent decides).
    pub draft: ChatDraft,
}

/// An article with its learned phrasings, as agents see it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ArticleRecord {
    /// The article as written.
    pub article: Article,
    /// Phrasings learned from chats and agents, with their status and source.
    pub learned: Vec<LearnedPhrasing>,
}

/// Side-panel recommendations for an agent.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Suggestions {
    /// Similar resolved tickets with their resolutions.
    pub similar_tickets: Vec<Hit>,
    /// Relevant knowledge articles.
    pub articles: Vec<Hit>,
    /// Likely duplicates, same customer first.
    pub duplicates: Vec<Duplicate>,
    /// Where neighbours agree: a predicted resolution and its probability.
    pub predicted_resolution: Option<PredictedResolution>,
}

/// A resolution the nearest resolved tickets agree on.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PredictedResolution {
    /// The resolution text (from the most similar supporting ticket).
    pub text: String,
    /// Share of the similarity-weighted resolved neighbours whose resolution
    /// says the same (in other words, possibly).
    pub probability: f32,
    /// Ids of the supporting tickets.
    pub supporting_ticket_ids: Vec<String>,
}

/// An agent's correction or confirmation.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Feedback {
    /// The ticket the feedback is about (stored/updated as a labelled example).
    pub ticket_id: String,
    /// The request text, if the ticket is not in the index yet.
    pub title: String,
    /// The request body, if the ticket is not in the index yet.
    pub body: String,
    /// Corrected category.
    pub category: Option<String>,
    /// Corrected priority.
    pub priority: Option<String>,
    /// Corrected queue.
    pub queue: Option<String>,
    /// Corrected or confirmed field values.
    pub fields: BTreeMap<String, String>,
    /// "This article solved it": the article id.
    pub solved_by_article: Option<String>,
    /// Text of the chat message the article answered: learned (personal data
    /// masked) as an agent-approved phrasing of the article.
    pub message: Option<String>,
    /// Tenant (empty = default tenant).
    pub tenant: String,
}

/// What a piece of feedback changed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FeedbackOutcome {
    /// The labelled example the feedback was stored as.
    pub ticket_id: String,
    /// Whether the ticket was new to the index (created from the feedback's text).
    pub created: bool,
    /// Human-readable changes (`category: a → b`, `article kb-1: added phrasing`).
    pub changes: Vec<String>,
    /// The article that got the message as a new phrasing, if any.
    pub article_updated: Option<String>,
    /// The learned phrasing the message became, if any.
    pub learned_phrasing: Option<LearnedPhrasing>,
}

/// Counts and model facts for `/readyz`, `/metrics` and the CLI.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EngineStats {
    /// Tickets in the index.
    pub tickets: usize,
    /// Articles in the index.
    pub articles: usize,
    /// Tickets with a category label the classifier can learn from.
    pub labelled_examples: usize,
    /// Leaf categories of the pack.
    pub categories: usize,
    /// Agent corrections stored so far.
    pub corrections: usize,
    /// Learned phrasings waiting for customers' agreement or an agent.
    pub learned_candidates: usize,
    /// Learned phrasings in use.
    pub learned_active: usize,
    /// Embedding model name.
    pub model: String,
    /// Pack name.
    pub pack: String,
}

/// Where a learned phrasing stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum LearnedStatus {
    /// Proposed by customers; not used for answers yet.
    Candidate,
    /// An entry of the FAQ bank: answers like the article's own phrasings.
    Active,
    /// Removed by an agent: not used, and not learned again from clicks.
    Removed,
}

/// A phrasing of an article learned from chats, as agents see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LearnedPhrasing {
    /// Stable id (`lp-` and 16 hex digits of a digest of tenant, article and text).
    pub id: String,
    /// Tenant.
    pub tenant: String,
    /// The article it is a phrasing of.
    pub article_id: String,
    /// The text, personal data masked.
    pub text: String,
    /// Candidate, active or removed.
    pub status: LearnedStatus,
    /// Distinct chat sessions that said the article helped with this text.
    pub helpful_sessions: usize,
    /// Distinct chat sessions that said it did not.
    pub unhelpful_sessions: usize,
    /// `customer` (learned from chat clicks) or `agent` (taught by an agent).
    pub source: String,
    /// Whether an agent approved or taught it.
    pub approved_by_agent: bool,
    /// When it was first proposed (RFC 3339).
    pub created_at: String,
    /// When it last changed (RFC 3339).
    pub updated_at: String,
}
