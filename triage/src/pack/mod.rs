//! Tenant packs: what a support team configures (format in `docs/PACK.md`).
//!
//! A pack is a directory: `pack.toml` (taxonomy, queues, priorities, urgency
//! lexicon, field patterns, thresholds) and optionally `articles.jsonl`,
//! `tickets.jsonl` and `out_of_scope.jsonl`. This module holds the loaded
//! types and their lookups; [`load`](Pack::load) reads and validates a
//! directory (`config` for `pack.toml`, `load` for the JSONL files; every
//! error names the file, the 1-based line and the key, [`Error::Pack`]) and
//! [`sync`] keeps a data directory in step with the pack it serves.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use indexer::{Article, Ticket};
use serde::Serialize;

use crate::error::Error;

mod config;
mod load;
pub mod sync;

/// Default of `[thresholds] classify_abstain`: below this calibrated probability a
/// label decision abstains. Also the default of `triage eval classify --threshold`,
/// so an evaluation measures what a pack without the key would do.
pub const DEFAULT_CLASSIFY_ABSTAIN: f32 = 0.55;

/// The four priority levels, most urgent first. A pack must define exactly these.
pub const PRIORITY_LEVELS: [&str; 4] = ["P0", "P1", "P2", "P3"];

/// Rank of a priority id (`P0` → 0, most urgent), or `None` if it is not one of
/// [`PRIORITY_LEVELS`]; used wherever priorities are compared.
pub fn priority_rank(id: &str) -> Option<usize> {
    PRIORITY_LEVELS.iter().position(|level| *level == id)
}

/// A loaded, validated tenant pack: configuration plus knowledge base and history.
#[derive(Debug, Clone, Serialize)]
pub struct Pack {
    /// The directory the pack was loaded from.
    pub dir: PathBuf,
    /// Identifier of the pack (`[pack] name`).
    pub name: String,
    /// Free-text description.
    pub description: String,
    /// `zh` or `en`: the language most requests are in.
    pub default_language: String,
    /// Decision thresholds.
    pub thresholds: Thresholds,
    /// Queues / skill groups, in file order.
    pub queues: Vec<Queue>,
    /// Categories (parents and leaves), in file order.
    pub categories: Vec<Category>,
    /// Priorities, always exactly `P0`..`P3` in that order.
    pub priorities: Vec<Priority>,
    /// Urgency lexicon: priority id → words whose presence raises a request to at least that level.
    pub lexicon: BTreeMap<String, Vec<String>>,
    /// Phrases inside which a lexicon word does not count (`[lexicon] except = [...]`), e.g.
    /// 点不着火 ("won't light") contains 着火 ("on fire") but is a routine fault.
    pub lexicon_exceptions: Vec<String>,
    /// Field specs (extra patterns and inferable fields).
    pub fields: Vec<FieldSpec>,
    /// Knowledge-base articles from `articles.jsonl` (empty if the file is absent).
    pub articles: Vec<Article>,
    /// Labelled historical tickets from `tickets.jsonl` (empty if the file is absent).
    pub tickets: Vec<Ticket>,
    /// Requests this pack does not serve, from `out_of_scope.jsonl` (`{"text"}` lines;
    /// empty if absent): the category classifier learns them as "none of these", so
    /// an unrelated request is sent to a human instead of into a queue.
    pub out_of_scope: Vec<String>,
    /// Escalation-risk rules (`[escalation]`; defaults when absent).
    pub escalation: Escalation,
    /// What the insights break tickets down by (`[insights]`).
    pub insights: Insights,
    /// Fingerprint of the documents the pack puts in the index (`tickets.jsonl` and
    /// `articles.jsonl` as loaded, SHA-256): a data
    /// directory re-ingests the pack when it changes.
    #[serde(skip)]
    pub fingerprint: String,
}

/// Words that announce a complaint, a regulator, the press or a lawyer, in
/// Chinese and English: a request that uses one is likely to escalate.
pub const ESCALATION_WORDS: &[&str] = &[
    "投诉",
    "12315",
    "曝光",
    "律师",
    "起诉",
    "媒体",
    "消协",
    "工商",
    "差评",
    "维权",
    "退款否则",
    "否则投诉",
    "举报",
    "赔偿",
    "法院",
    "lawyer",
    "attorney",
    "sue",
    "lawsuit",
    "chargeback",
    "cancel my account",
    "complaint",
    "complain",
    "legal action",
    "ombudsman",
    "refund or else",
    "bbb",
];

/// Words of anger and exasperation (Chinese and English).
pub const ANGER_WORDS: &[&str] = &[
    "垃圾",
    "气死",
    "太差",
    "坑人",
    "骗子",
    "受够了",
    "忍无可忍",
    "什么破",
    "无语",
    "恶心",
    "太过分",
    "欺骗",
    "忽悠",
    "态度恶劣",
    "ridiculous",
    "unacceptable",
    "furious",
    "disgusting",
    "worst",
    "scam",
    "fed up",
    "outrageous",
    "terrible service",
    "angry",
];

/// Escalation risk at or above which a request is flagged.
pub const ESCALATION_FLAG: f32 = 0.5;

/// How a pack judges the risk that a request turns into a complaint
/// (`[escalation]` in `pack.toml`; every key optional).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Escalation {
    /// Explicit escalation words (投诉, 12315, "lawyer", "chargeback"…).
    pub words: Vec<String>,
    /// Words of anger.
    pub anger: Vec<String>,
    /// Risk at or above which `escalation_risk.flagged` is true.
    pub flag: f32,
    /// A ticket field whose value `true`/`false` labels escalated history: the
    /// nearest labelled tickets then add a learned part to the risk.
    pub field: Option<String>,
}

impl Default for Escalation {
    fn default() -> Self {
        Escalation {
            words: ESCALATION_WORDS.iter().map(|w| w.to_string()).collect(),
            anger: ANGER_WORDS.iter().map(|w| w.to_string()).collect(),
            flag: ESCALATION_FLAG,
            field: None,
        }
    }
}

/// What the insights break tickets down by (`[insights]` in `pack.toml`;
/// every key optional).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Insights {
    /// Fields each emerging cluster is broken down by (product, region…),
    /// each one of the pack's `[[fields]]`.
    pub fields: Vec<String>,
    /// The field of the dashboard's heat map (× category): one of the pack's
    /// `[[fields]]`; the first of `fields` when not set.
    pub heatmap: Option<String>,
}

/// Decision thresholds; each has a default used when the key is absent.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Thresholds {
    /// Below this calibrated probability the category decision abstains ("needs a human").
    pub classify_abstain: f32,
    /// A chat message is answered at or above this confidence.
    pub deflect_answer: f32,
    /// Candidates are offered at or above this confidence (below: hand off).
    pub deflect_clarify: f32,
    /// Cosine similarity at or above which a recent ticket is a likely duplicate.
    pub duplicate_similarity: f32,
    /// Only tickets created within this many days count as duplicates.
    pub duplicate_window_days: u32,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            classify_abstain: DEFAULT_CLASSIFY_ABSTAIN,
            deflect_answer: 0.80,
            deflect_clarify: 0.45,
            duplicate_similarity: 0.92,
            duplicate_window_days: 14,
        }
    }
}

/// A queue / skill group that tickets are routed to.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Queue {
    /// Stable id referenced by categories and tickets.
    pub id: String,
    /// Display name.
    pub name: String,
}

/// A node of the two-level category taxonomy.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Category {
    /// Stable id (e.g. `repair.no_power`).
    pub id: String,
    /// Parent id for leaves; `None` for top-level categories.
    pub parent: Option<String>,
    /// Display name.
    pub name: String,
    /// What belongs here (also useful as a label description for the model).
    pub description: String,
    /// Queue this category routes to (leaves inherit their parent's when absent).
    pub queue: Option<String>,
    /// Priority used when nothing else decides (`P0`..`P3`).
    pub default_priority: Option<String>,
}

/// One priority level with its service-level target.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Priority {
    /// `P0`..`P3`.
    pub id: String,
    /// Display name.
    pub name: String,
    /// When to use it.
    pub description: String,
    /// Response-time target in hours, if the pack sets one.
    pub response_hours: Option<f32>,
}

/// A field the service fills in: an extra pattern and/or inference from neighbours.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldSpec {
    /// Field name (may be a built-in extractor's name to add a pattern to it).
    pub name: String,
    /// Regular expression; capture group 1 (or the whole match) is the value.
    pub pattern: Option<String>,
    /// What the field is.
    pub description: String,
    /// Whether the value may be inferred from similar tickets' `fields`.
    pub infer: bool,
    /// Whether the value is personal data (a name, an address, an account):
    /// masked wherever the service keeps a customer's words for others, e.g.
    /// in phrasings learned from chats.
    pub personal: bool,
}

impl Pack {
    /// Categories that have no children, in file order: the labels a classifier predicts.
    pub fn leaf_categories(&self) -> Vec<&Category> {
        let parents: HashSet<&str> = self
            .categories
            .iter()
            .filter_map(|c| c.parent.as_deref())
            .collect();
        self.categories
            .iter()
            .filter(|c| !parents.contains(c.id.as_str()))
            .collect()
    }

    /// The category with this id, if any.
    pub fn category(&self, id: &str) -> Option<&Category> {
        self.categories.iter().find(|c| c.id == id)
    }

    /// The queue a category routes to: its own, else its parent's.
    pub fn queue_for(&self, category: &str) -> Option<&str> {
        let cat = self.category(category)?;
        cat.queue.as_deref().or_else(|| {
            cat.parent
                .as_deref()
                .and_then(|p| self.category(p))
                .and_then(|p| p.queue.as_deref())
        })
    }
}

/// Builds an [`Error::Pack`].
fn pack_error(file: &Path, line: usize, key: &str, message: impl Into<String>) -> Error {
    Error::Pack {
        file: file.to_path_buf(),
        line,
        key: key.to_string(),
        message: message.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priority_rank_orders_levels() {
        assert_eq!(priority_rank("P0"), Some(0));
        assert_eq!(priority_rank("P3"), Some(3));
        assert_eq!(priority_rank("P4"), None);
        assert_eq!(priority_rank("p0"), None);
    }
}
