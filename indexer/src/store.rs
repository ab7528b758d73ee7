//! The store interface: what the engine needs of wherever documents and
//! their vectors live.
//!
//! [`Store`] is the one contract between `triage` and storage: durable
//! writes, lookups, hybrid search and filtered nearest-neighbour search.
//! Queries are declarative ([`NeighbourQuery`] is a tenant, a kind and
//! attribute conditions, not a closure), so a store can run them where its
//! data is: the embedded [`Index`] inside its HNSW graph or by an exact scan
//! of one tenant's partition, a database as a `WHERE` clause beside its
//! vector index, a vector engine as a payload filter.

use std::sync::Arc;

use models::TextEmbedder;
use serde::{Deserialize, Serialize};

use crate::doc::{Article, DocKind, Document, Hit, SearchRequest, Ticket};
use crate::index::{Index, IndexStats};
use crate::Error;

/// A nearest-neighbour query within one tenant's documents of one kind.
#[derive(Debug, Clone, PartialEq)]
pub struct NeighbourQuery {
    /// The tenant searched (`""` is the default tenant).
    pub tenant: String,
    /// The kind of document returned.
    pub kind: DocKind,
    /// At most this many neighbours.
    pub k: usize,
    /// Only neighbours at least this similar (cosine).
    pub min_similarity: Option<f32>,
    /// Ids left out (a request's own stored copy).
    pub exclude_ids: Vec<String>,
    /// Only tickets with a resolution.
    pub resolved_only: bool,
    /// Only documents with a category.
    pub labelled_only: bool,
    /// Only documents created at or after this time (Unix seconds).
    pub created_from: Option<i64>,
    /// Only documents created before this time (Unix seconds).
    pub created_until: Option<i64>,
}

impl NeighbourQuery {
    /// The `k` nearest tickets of `tenant`, without further conditions.
    pub fn tickets(tenant: &str, k: usize) -> NeighbourQuery {
        NeighbourQuery {
            tenant: tenant.to_string(),
            kind: DocKind::Ticket,
            k,
            min_similarity: None,
            exclude_ids: Vec::new(),
            resolved_only: false,
            labelled_only: false,
            created_from: None,
            created_until: None,
        }
    }
}

/// A stored document near a query vector.
#[derive(Debug, Clone, PartialEq)]
pub struct Neighbour {
    /// The document.
    pub doc: Document,
    /// Its cosine similarity to the query (of its stored vector).
    pub similarity: f32,
    /// Its stored (unit) vector.
    pub vector: Vec<f32>,
}

/// A stored document's attributes, without its text or vector: enough to
/// choose training rows and count labels without reading every document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DocRow {
    /// Document id.
    pub id: String,
    /// Category (may be empty).
    pub category: String,
    /// Ticket priority (empty for articles).
    pub priority: String,
    /// Ticket status (empty for articles).
    pub status: String,
    /// Whether a ticket has a resolution.
    pub resolved: bool,
    /// Creation time in Unix seconds, when known.
    pub created: Option<i64>,
    /// A stable hash of the text the document was embedded as: equal hashes,
    /// equal vectors (under one model).
    pub text_hash: u64,
}

/// Where documents and their vectors live (see the module docs). `Send +
/// Sync`: reads run concurrently; every write is durable when it returns.
pub trait Store: Send + Sync + std::fmt::Debug {
    /// The embedding model the store's vectors come from.
    fn embedder(&self) -> &Arc<dyn TextEmbedder>;
    /// Adds or replaces tickets (by tenant and id); durable and searchable on return.
    fn upsert_tickets(&self, docs: Vec<Ticket>) -> Result<(), Error>;
    /// Adds or replaces articles (by tenant and id); durable and searchable on return.
    fn upsert_articles(&self, docs: Vec<Article>) -> Result<(), Error>;
    /// Deletes a document; `true` if it existed. Durable on return.
    fn delete(&self, kind: DocKind, tenant: &str, id: &str) -> Result<bool, Error>;
    /// The stored document, if it exists.
    fn get(&self, kind: DocKind, tenant: &str, id: &str) -> Result<Option<Document>, Error>;
    /// The stored (unit) passage vector of a document.
    fn vector(&self, kind: DocKind, tenant: &str, id: &str) -> Result<Option<Vec<f32>>, Error>;
    /// Hybrid, BM25 or vector search, embedding the query text as needed.
    fn search(&self, req: &SearchRequest) -> Result<Vec<Hit>, Error>;
    /// The documents nearest `vector` (a unit passage or query vector of this
    /// store's model) that `query` admits, most similar first.
    fn neighbours(&self, vector: &[f32], query: &NeighbourQuery) -> Result<Vec<Neighbour>, Error>;
    /// The attributes of every live document of `kind` in `tenant`, in id order.
    fn rows(&self, kind: DocKind, tenant: &str) -> Result<Vec<DocRow>, Error>;
    /// How many live documents of `kind` carry each category (in one tenant,
    /// or in all with `None`); documents without a category are not counted.
    fn category_counts(
        &self,
        kind: DocKind,
        tenant: Option<&str>,
    ) -> Result<Vec<(String, usize)>, Error>;
    /// The tenants holding documents of `kind`, sorted.
    fn tenants(&self, kind: DocKind) -> Result<Vec<String>, Error>;
    /// Live documents of `kind` (in one tenant, or in all with `None`).
    fn count(&self, kind: DocKind, tenant: Option<&str>) -> Result<usize, Error>;
    /// Every document of `kind` (of one tenant, or of all with `None`) with its vector.
    fn all(&self, kind: DocKind, tenant: Option<&str>) -> Result<Vec<(Document, Vec<f32>)>, Error>;
    /// Counts and sizes.
    fn stats(&self) -> IndexStats;
    /// Finishes background work and saves what a restart would otherwise redo.
    fn flush(&self) -> Result<(), Error>;
}

impl Store for Index {
    fn embedder(&self) -> &Arc<dyn TextEmbedder> {
        Index::embedder(self)
    }
    fn upsert_tickets(&self, docs: Vec<Ticket>) -> Result<(), Error> {
        Index::upsert_tickets(self, docs)
    }
    fn upsert_articles(&self, docs: Vec<Article>) -> Result<(), Error> {
        Index::upsert_articles(self, docs)
    }
    fn delete(&self, kind: DocKind, tenant: &str, id: &str) -> Result<bool, Error> {
        Index::delete(self, kind, tenant, id)
    }
    fn get(&self, kind: DocKind, tenant: &str, id: &str) -> Result<Option<Document>, Error> {
        Index::get(self, kind, tenant, id)
    }
    fn vector(&self, kind: DocKind, tenant: &str, id: &str) -> Result<Option<Vec<f32>>, Error> {
        Ok(Index::vector(self, kind, tenant, id))
    }
    fn search(&self, req: &SearchRequest) -> Result<Vec<Hit>, Error> {
        Index::search(self, req)
    }
    fn neighbours(&self, vector: &[f32], query: &NeighbourQuery) -> Result<Vec<Neighbour>, Error> {
        Index::neighbours(self, vector, query)
    }
    fn rows(&self, kind: DocKind, tenant: &str) -> Result<Vec<DocRow>, Error> {
        Ok(Index::rows(self, kind, tenant))
    }
    fn category_counts(
        &self,
        kind: DocKind,
        tenant: Option<&str>,
    ) -> Result<Vec<(String, usize)>, Error> {
        Ok(self.read_state().category_counts(kind, tenant))
    }
    fn tenants(&self, kind: DocKind) -> Result<Vec<String>, Error> {
        Ok(self.read_state().tenants(kind))
    }
    fn count(&self, kind: DocKind, tenant: Option<&str>) -> Result<usize, Error> {
        let state = self.read_state();
        Ok(match tenant {
            Some(t) => state.count_in(kind, t),
            None => state.count(kind),
        })
    }
    fn all(&self, kind: DocKind, tenant: Option<&str>) -> Result<Vec<(Document, Vec<f32>)>, Error> {
        Index::all(self, kind, tenant)
    }
    fn stats(&self) -> IndexStats {
        Index::stats(self)
    }
    fn flush(&self) -> Result<(), Error> {
        Index::flush(self)
    }
}
