//! The two kinds of document the index stores, and the shapes of a search.
//!
//! These types are the indexer's public contract: `triage` builds them and the
//! server serialises them, so field names are part of the JSON API.

use std::collections::BTreeMap;

use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer, Serialize};

/// Which kind of document a record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum DocKind {
    /// A historical or live support ticket.
    Ticket,
    /// A knowledge-base / FAQ article.
    Article,
}

/// A support ticket as stored in the index. Only `id` is required; every other
/// field defaults to empty so partial records from other systems still load.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Ticket {
    /// Stable external id (unique per tenant and kind).
    pub id: String,
    /// Short subject line.
    pub title: String,
    /// The customer's description.
    pub body: String,
    /// Category id from the tenant's taxonomy (empty = unlabelled).
    pub category: String,
    /// Priority `P0`..`P3` (empty = unknown).
    pub priority: String,
    /// Queue / skill group.
    pub queue: String,
    /// Workflow status, e.g. `open`, `resolved`, `closed`.
    pub status: String,
    /// Structured fields (order number, device model, ...).
    pub fields: BTreeMap<String, String>,
    /// How the ticket was resolved (empty while open).
    pub resolution: String,
    /// Customer identifier, used to find duplicates from the same customer.
    pub customer_id: String,
    /// Channel the request came from (phone, chat, wechat, email, web).
    pub channel: String,
    /// Creation time, RFC 3339 (e.g. `2026-03-01T08:30:00Z`).
    pub created_at: String,
    /// Tenant that owns the ticket (empty = the default tenant).
    pub tenant: String,
}

/// A knowledge-base article or FAQ entry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Article {
    /// Stable external id (unique per tenant and kind).
    pub id: String,
    /// The canonical question or title.
    pub question: String,
    /// The answer / article body shown to a customer.
    pub answer: String,
    /// Other phrasings of the same question.
    pub alt_questions: Vec<String>,
    /// Free-form tags.
    pub tags: Vec<String>,
    /// Category id from the tenant's taxonomy.
    pub category: String,
    /// Tenant that owns the article (empty = the default tenant).
    pub tenant: String,
}

/// Either kind of document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Document {
    /// A ticket.
    Ticket(Ticket),
    /// An article.
    Article(Article),
}

/// Which retrievers a search uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum SearchMode {
    /// BM25 and vectors, fused.
    #[default]
    Hybrid,
    /// BM25 only.
    Bm25,
    /// Vectors only.
    Vector,
}

/// How hybrid search combines the two ranked lists.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Fusion {
    /// Reciprocal-rank fusion: `sum 1 / (k + rank)`.
    Rrf {
        /// The RRF constant (60 by default).
        k: f32,
    },
    /// `w * normalised_bm25 + (1 - w) * cosine`.
    Weighted {
        /// Weight of the (max-normalised) BM25 score, 0..=1.
        bm25_weight: f32,
    },
    /// Z-score fusion (the default): `w * z_bm25 + (1 - w) * z_vector`, each
    /// retriever's score standardised over its own candidates for this query
    /// (a candidate it did not return gets its lowest z), so a first hit far
    /// ahead of the rest keeps its lead.
    Zscore {
        /// Weight of the BM25 z-score, 0..=1 (0.4 by default).
        bm25_weight: f32,
    },
}

impl Default for Fusion {
    /// Z-score fusion with BM25 weight [`crate::fusion::DEFAULT_ZSCORE_BM25_WEIGHT`]
    /// (measured against RRF in docs/EVAL.md).
    fn default() -> Self {
        Fusion::Zscore {
            bm25_weight: crate::fusion::DEFAULT_ZSCORE_BM25_WEIGHT,
        }
    }
}

/// Restrictions applied inside both retrievers (before truncation to `k`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Filters {
    /// Only this tenant's documents (`None` = the default tenant, `""`).
    pub tenant: Option<String>,
    /// Only this kind.
    pub kind: Option<DocKind>,
    /// Only these categories (empty = any).
    pub categories: Vec<String>,
    /// Only these ticket statuses (empty = any).
    pub statuses: Vec<String>,
    /// Only tickets created at or after this RFC 3339 time.
    pub created_after: Option<String>,
    /// Only tickets created before this RFC 3339 time.
    pub created_before: Option<String>,
}

/// One search.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SearchRequest {
    /// The query text.
    pub text: String,
    /// Retrievers to use.
    pub mode: SearchMode,
    /// Number of hits to return (10 when omitted; 0 gives no hits; at most [`crate::MAX_K`]).
    pub k: usize,
    /// Filters applied in both retrievers.
    #[serde(deserialize_with = "object")]
    pub filters: Filters,
    /// Fusion method for hybrid mode.
    pub fusion: Fusion,
}

impl Default for SearchRequest {
    /// An empty hybrid search for 10 hits with the default fusion and no filters beyond the default tenant.
    fn default() -> Self {
        SearchRequest {
            text: String::new(),
            mode: SearchMode::default(),
            k: 10,
            filters: Filters::default(),
            fusion: Fusion::default(),
        }
    }
}

/// Why a document was returned: every hit carries its evidence.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Explanation {
    /// BM25 score, if the lexical retriever found it.
    pub bm25_score: Option<f32>,
    /// 1-based rank in the lexical list.
    pub bm25_rank: Option<usize>,
    /// Cosine similarity to the query: set when the vector retriever ranked the
    /// document, and in hybrid mode for every hit (computed from its stored vector).
    pub vector_similarity: Option<f32>,
    /// 1-based rank in the vector list.
    pub vector_rank: Option<usize>,
    /// The fused score the final ranking used.
    pub fused_score: f32,
    /// Query terms (after segmentation) that occur in the document.
    pub matched_terms: Vec<String>,
}

/// One ranked result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Hit {
    /// The document's external id.
    pub id: String,
    /// Its kind.
    pub kind: DocKind,
    /// The stored document.
    pub doc: Document,
    /// The score the ranking used (same as `explanation.fused_score`).
    pub score: f32,
    /// Why it matched.
    pub explanation: Explanation,
}

/// Reads a struct only from a JSON object: serde would also read one from an
/// array of its fields in order, which no client means.
fn object<'de, D: Deserializer<'de>, T: DeserializeOwned>(d: D) -> Result<T, D::Error> {
    let map = serde_json::Map::deserialize(d)?;
    serde_json::from_value(serde_json::Value::Object(map)).map_err(D::Error::custom)
}

/// [`object`] for each item of a list (`#[serde(deserialize_with = "indexer::objects")]`).
pub fn objects<'de, D: Deserializer<'de>, T: DeserializeOwned>(d: D) -> Result<Vec<T>, D::Error> {
    Vec::<serde_json::Map<String, serde_json::Value>>::deserialize(d)?
        .into_iter()
        .map(|map| serde_json::from_value(serde_json::Value::Object(map)).map_err(D::Error::custom))
        .collect()
}
