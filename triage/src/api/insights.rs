//! The insight reports: emerging problems, knowledge gaps and the dashboard's
//! overview (see [`crate::insights`] for how they are computed).

use std::collections::BTreeMap;

use indexer::Article;
use serde::{Deserialize, Serialize};

use super::EscalationRisk;

/// Whether a cluster of tickets is new, growing or steady against its baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum ClusterStatus {
    /// Hardly seen in the baseline weeks (fewer than one ticket expected in the window).
    New,
    /// Clearly more than its baseline share (the count model's tail).
    Growing,
    /// Within what its baseline share leads to expect.
    Steady,
}

/// How many of a group's tickets carry one value (a category, a product…).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Share {
    /// The value (empty: not set).
    pub value: String,
    /// Tickets with it.
    pub count: u32,
    /// Their share of the group (0–1).
    pub share: f32,
}

/// A ticket shown as an example of a cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClusterExample {
    /// The ticket's id.
    pub ticket_id: String,
    /// Its title.
    pub title: String,
    /// The start of its text (at most 200 characters).
    pub text: String,
    /// When it was created (RFC 3339).
    pub created_at: String,
    /// Its category (empty: unlabelled).
    pub category: String,
    /// Cosine to the cluster's centre (centred vectors): 1 is the most central.
    pub similarity: f32,
}

/// A day (or two) whose count the baseline does not explain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Spike {
    /// Start of the period tested (RFC 3339).
    pub from: String,
    /// Length of the period tested in days (the last day, or the last two).
    pub days: u32,
    /// Tickets of the cluster in it.
    pub count: u32,
    /// Tickets expected from the cluster's baseline share and the day's volume.
    pub expected: f64,
    /// Probability of at least `count` under the baseline (Poisson or negative binomial).
    pub p_value: f64,
}

/// One cluster of the recent window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EmergingCluster {
    /// Id within this report (from its most central ticket).
    pub id: String,
    /// Its most distinctive words (class-based TF-IDF), most distinctive first.
    pub label: Vec<String>,
    /// Tickets in the window.
    pub size: u32,
    /// Tickets per day of the window, oldest first (the report's `days`).
    pub daily: Vec<u32>,
    /// Tickets expected in the window from its baseline share.
    pub expected: f64,
    /// Share of the baseline weeks' tickets that were like these (0–1).
    pub baseline_share: f64,
    /// New, growing or steady.
    pub status: ClusterStatus,
    /// Probability of at least `size` tickets in the window under the baseline.
    pub p_value: f64,
    /// The last day or two, when their count is a spike (this raises an alert).
    pub spike: Option<Spike>,
    /// Its tickets by category, most first.
    pub categories: Vec<Share>,
    /// Its tickets by each field the pack's `[insights] fields` names.
    pub fields: BTreeMap<String, Vec<Share>>,
    /// Its most central tickets.
    pub examples: Vec<ClusterExample>,
}

/// Emerging problems of one tenant: the recent window's tickets grouped by
/// meaning, each group against its own baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EmergingReport {
    /// The tenant.
    pub tenant: String,
    /// Days in the window.
    pub window_days: u32,
    /// Days of baseline before it.
    pub baseline_days: u32,
    /// Start of the window (RFC 3339).
    pub from: String,
    /// End of the window (RFC 3339, exclusive).
    pub to: String,
    /// Start of each day of the window (24-hour periods ending at `to`).
    pub days: Vec<String>,
    /// Tickets created in the window.
    pub tickets: u32,
    /// Tickets per day of the window.
    pub daily_total: Vec<u32>,
    /// Tickets created in the baseline period.
    pub baseline_tickets: u32,
    /// Window tickets that joined a cluster (the rest are one-offs).
    pub clustered: u32,
    /// Variance / mean of daily counts the count model assumed (1 = Poisson).
    pub dispersion: f64,
    /// The clusters: spikes first, then new, growing and steady ones, larger first.
    pub clusters: Vec<EmergingCluster>,
    /// When the report was computed (RFC 3339).
    pub generated_at: String,
}

/// An emerging-problem alert: the outgoing event (`insights.spike`) and what
/// the log line and the metric count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InsightAlert {
    /// Stable id of the alert.
    pub id: String,
    /// Event type (`insights.spike`).
    #[serde(rename = "type")]
    pub event_type: String,
    /// The tenant.
    pub tenant: String,
    /// When it was raised (RFC 3339).
    pub at: String,
    /// The cluster's id in the report it came from.
    pub cluster_id: String,
    /// The cluster's distinctive words.
    pub label: Vec<String>,
    /// New or growing.
    pub status: ClusterStatus,
    /// Tickets in the window.
    pub size: u32,
    /// Start of each day of the window.
    pub days: Vec<String>,
    /// Tickets per day.
    pub daily: Vec<u32>,
    /// The count that raised it.
    pub spike: Spike,
    /// Its most central tickets (id and title).
    pub examples: Vec<AlertExample>,
}

/// A ticket named in an alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AlertExample {
    /// The ticket's id.
    pub ticket_id: String,
    /// Its title.
    pub title: String,
}

/// A resolved ticket near a knowledge gap: how agents answered it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AnswerMaterial {
    /// The resolved ticket.
    pub ticket_id: String,
    /// Its resolution.
    pub resolution: String,
    /// Cosine of its vector to the gap's centre.
    pub similarity: f32,
}

/// The article that comes closest to answering a gap's question.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NearestArticle {
    /// Article id.
    pub id: String,
    /// Its question.
    pub question: String,
    /// Probability that it answers the gap's question (the chat's own scoring).
    pub probability: f32,
}

/// A question customers ask that the knowledge base does not answer, with a
/// draft article.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KnowledgeGap {
    /// Stable id (from the tenant and the question), for publishing.
    pub id: String,
    /// Handed-off chat messages and resolved tickets that asked it.
    pub volume: u32,
    /// Of which handed-off chat messages.
    pub chats: u32,
    /// Of which tickets resolved without an article.
    pub tickets: u32,
    /// Rank score: the volume, discounted by how well an article already answers.
    pub score: f32,
    /// Its most distinctive words.
    pub label: Vec<String>,
    /// Draft question: the most central customer phrasing (personal data masked).
    pub question: String,
    /// Draft alternative phrasings: other customers' wordings, most central first.
    pub alternatives: Vec<String>,
    /// Draft answer material: the resolutions of the nearest resolved tickets.
    pub answer_material: Vec<AnswerMaterial>,
    /// Likely category (from the nearest resolved tickets), if they agree.
    pub category: Option<String>,
    /// The article that comes closest today, if any.
    pub nearest_article: Option<NearestArticle>,
    /// First time it was asked in the window (RFC 3339).
    pub first_seen: String,
    /// Last time (RFC 3339).
    pub last_seen: String,
}

/// Knowledge gaps of one tenant, largest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GapReport {
    /// The tenant.
    pub tenant: String,
    /// Days looked back.
    pub window_days: u32,
    /// Start of the window (RFC 3339).
    pub from: String,
    /// End of the window (RFC 3339).
    pub to: String,
    /// Handed-off chat messages in the window.
    pub handed_off: u32,
    /// Tickets resolved in the window without an article.
    pub resolved_without_article: u32,
    /// The gaps, highest score first.
    pub gaps: Vec<KnowledgeGap>,
    /// When the report was computed (RFC 3339).
    pub generated_at: String,
}

/// An agent's edit of a gap's draft, to publish as an article.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PublishGap {
    /// The article's question (required).
    pub question: String,
    /// The article's answer (required).
    pub answer: String,
    /// Other phrasings of the question.
    pub alt_questions: Vec<String>,
    /// Category id (empty: none).
    pub category: String,
    /// Tenant (empty = default tenant; a key's tenant wins).
    pub tenant: String,
}

/// A published gap: the article it became (answering in the chat at once).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PublishedGap {
    /// The gap.
    pub gap_id: String,
    /// The new article.
    pub article: Article,
}

/// Tickets per day of one category.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VolumeSeries {
    /// Top-level category id (empty: unlabelled).
    pub category: String,
    /// Its name in the pack.
    pub name: String,
    /// Tickets created per day (the overview's `days`).
    pub counts: Vec<u32>,
}

/// What the chat did with customers' messages.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeflectionStats {
    /// Messages the chat decided on.
    pub messages: u32,
    /// Answered from an article.
    pub answer: u32,
    /// Offered candidates to choose from.
    pub clarify: u32,
    /// Handed off to a person.
    pub handoff: u32,
    /// `answer / messages` (0 without messages).
    pub answer_rate: f32,
    /// `clarify / messages`.
    pub clarify_rate: f32,
    /// `handoff / messages`.
    pub handoff_rate: f32,
    /// Tickets customers submitted from a handoff.
    pub tickets: u32,
}

/// What the triage decided on requests.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TriageStats {
    /// Requests triaged.
    pub requests: u32,
    /// Of which the category model abstained on ("needs a human").
    pub abstained: u32,
    /// `abstained / requests` (0 without requests).
    pub abstention_rate: f32,
    /// Of which the escalation risk flagged.
    pub escalation_flagged: u32,
}

/// An open ticket likely to turn into a complaint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RiskyTicket {
    /// The ticket's id.
    pub ticket_id: String,
    /// Its title.
    pub title: String,
    /// Its category (empty: unlabelled).
    pub category: String,
    /// Its customer.
    pub customer_id: String,
    /// When it was created (RFC 3339).
    pub created_at: String,
    /// The risk and its reasons.
    pub risk: EscalationRisk,
}

/// Counts of tickets by one field's values × top-level categories.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Heatmap {
    /// The field.
    pub field: String,
    /// Its values (rows), most tickets first (empty: not set).
    pub rows: Vec<String>,
    /// Top-level categories (columns).
    pub columns: Vec<String>,
    /// `counts[row][column]`.
    pub counts: Vec<Vec<u32>>,
}

/// The dashboard's figures for one tenant and window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Overview {
    /// The tenant.
    pub tenant: String,
    /// Days in the window.
    pub window_days: u32,
    /// Start of the window (RFC 3339).
    pub from: String,
    /// End (RFC 3339, exclusive).
    pub to: String,
    /// Start of each day (24-hour periods ending at `to`).
    pub days: Vec<String>,
    /// Tickets created per day by top-level category (from the stored tickets).
    pub volume: Vec<VolumeSeries>,
    /// The chat's decisions in the window (from the activity log).
    pub deflection: DeflectionStats,
    /// Triage decisions in the window (from the activity log).
    pub triage: TriageStats,
    /// Earliest record of the activity log (RFC 3339): rates cover no time before it.
    pub counted_since: Option<String>,
    /// Open tickets by escalation risk, highest first (flagged ones only).
    pub high_risk: Vec<RiskyTicket>,
    /// Window tickets by a field × category, when the pack or the caller names a field.
    pub heatmap: Option<Heatmap>,
}
