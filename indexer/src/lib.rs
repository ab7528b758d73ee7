//! Hybrid search index of support tickets and knowledge-base articles.
//!
//! Documents go in (upserts, deletes, bulk JSONL ingest); ranked, explained
//! hits come out. Lexical retrieval is tantivy BM25 over jieba-segmented,
//! lower-cased and stemmed Chinese/English text; semantic retrieval is an
//! HNSW graph (hnsw_rs) over the passage embeddings of a
//! [`models::TextEmbedder`]; hybrid search fuses both (RRF or weighted). Every
//! write is one durable tantivy commit that carries the document's vector, so
//! the graph is only a cache, rebuilt or caught up when it is stale (rebuilt
//! in the background when tombstones pile up, without stopping writes).
//!
//! With the `openapi` feature, the document and search types derive
//! utoipa's `ToSchema` (the server's API document is generated from them).

mod doc;
mod error;
pub mod eval;
mod graph_store;
mod index;
mod ingest;
mod manifest;
mod schema;
mod search;
mod text;
mod vectors;
mod verify;

pub use doc::{
    objects, Article, DocKind, Document, Explanation, Filters, Fusion, Hit, SearchMode,
    SearchRequest, Ticket,
};
pub use error::{Damage, DamagedFile, Error};
pub use index::{Index, IndexStats};
pub use ingest::IngestReport;
pub use search::MAX_K;
pub use text::{ticket_text, words};
pub use vectors::{EF_SEARCH as DEFAULT_EF_SEARCH, EXACT_MAX as DEFAULT_EXACT_MAX};
