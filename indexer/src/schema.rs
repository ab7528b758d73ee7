//! The tantivy schema and the mapping between [`Document`]s and stored rows.
//!
//! Each row holds everything needed to rebuild the in-memory state: the
//! document (JSON), its passage vector (little-endian f32 bytes), the vector id
//! used by the HNSW graph and the hash of the embedded text. One tantivy
//! commit is therefore the single atomic, durable write of the index.

use std::ops::Bound;

use tantivy::query::{BooleanQuery, ConstScoreQuery, Occur, Query, RangeQuery, TermQuery};
use tantivy::schema::{
    Field, IndexRecordOption, NumericOptions, Schema, TextFieldIndexing, TextOptions, Value, FAST,
    INDEXED, STORED, STRING,
};
use tantivy::{TantivyDocument, Term};
use time::format_description::well_known::Rfc3339;

use crate::doc::{DocKind, Document, Filters};
use crate::text::ANALYZER;
use crate::Error;

/// Handles to every field of the schema.
#[derive(Clone, Copy)]
pub(crate) struct Fields {
    /// `kind \x1f tenant \x1f id`: the unique key used to replace and delete.
    pub key: Field,
    pub kind: Field,
    pub tenant: Field,
    pub id: Field,
    pub category: Field,
    pub status: Field,
    /// Ticket creation time, unix seconds.
    pub created: Field,
    /// Vector id in the HNSW graph.
    pub vid: Field,
    /// [`crate::text::stable_hash`] of the embedded text.
    pub thash: Field,
    pub vector: Field,
    /// The document as JSON.
    pub doc: Field,
    /// Ticket title / article question and alternative questions (boosted).
    pub title: Field,
    /// Ticket body and field values / article answer and tags.
    pub body: Field,
    /// Ticket resolution (searchable, low boost).
    pub resolution: Field,
}

/// The BM25 text fields with their boosts.
pub(crate) fn text_fields(f: &Fields) -> [(Field, f32); 3] {
    [(f.title, 2.0), (f.body, 1.0), (f.resolution, 0.5)]
}

/// Builds the schema for a new index.
pub(crate) fn build() -> Schema {
    let mut b = Schema::builder();
    let text = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(ANALYZER)
            .set_index_option(IndexRecordOption::WithFreqs),
    );
    b.add_text_field("key", STRING);
    b.add_text_field("kind", STRING | STORED);
    b.add_text_field("tenant", STRING | STORED);
    b.add_text_field("id", STRING | STORED);
    b.add_text_field("category", STRING | STORED);
    b.add_text_field("status", STRING | STORED);
    b.add_i64_field("created", NumericOptions::default() | INDEXED | STORED);
    b.add_u64_field("vid", NumericOptions::default() | FAST | STORED);
    b.add_u64_field("thash", STORED);
    b.add_bytes_field("vector", STORED);
    b.add_bytes_field("doc", STORED);
    b.add_text_field("title", text.clone());
    b.add_text_field("body", text.clone());
    b.add_text_field("resolution", text);
    b.build()
}

impl Fields {
    /// Looks the fields up in an (opened) schema; a missing field means the
    /// directory holds some other tantivy index.
    pub(crate) fn from_schema(schema: &Schema) -> Result<Fields, String> {
        let get = |name: &str| {
            schema
                .get_field(name)
                .map_err(|_| format!("schema has no field {name:?}: not an index of this service"))
        };
        Ok(Fields {
            key: get("key")?,
            kind: get("kind")?,
            tenant: get("tenant")?,
            id: get("id")?,
            category: get("category")?,
            status: get("status")?,
            created: get("created")?,
            vid: get("vid")?,
            thash: get("thash")?,
            vector: get("vector")?,
            doc: get("doc")?,
            title: get("title")?,
            body: get("body")?,
            resolution: get("resolution")?,
        })
    }
}

/// The string form of a kind, as stored and filtered on.
pub(crate) fn kind_str(kind: DocKind) -> &'static str {
    match kind {
        DocKind::Ticket => "ticket",
        DocKind::Article => "article",
    }
}

/// The unique key of a document.
pub(crate) fn key(kind: DocKind, tenant: &str, id: &str) -> String {
    format!("{}\x1f{tenant}\x1f{id}", kind_str(kind))
}

/// Parses an RFC 3339 timestamp (or a bare `YYYY-MM-DD`, taken as midnight UTC)
/// into unix seconds.
pub(crate) fn parse_time(s: &str) -> Result<i64, String> {
    if let Ok(t) = time::OffsetDateTime::parse(s, &Rfc3339) {
        return Ok(t.unix_timestamp());
    }
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(s, &fmt)
        .map(|d| d.midnight().assume_utc().unix_timestamp())
        .map_err(|_| format!("{s:?} is not an RFC 3339 time (e.g. 2026-03-01T08:30:00Z) or a date"))
}

/// Filterable attributes of a document, kept in memory for vector search.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Meta {
    pub kind: DocKind,
    pub tenant: String,
    pub id: String,
    pub category: String,
    pub status: String,
    /// A ticket's priority (empty for articles).
    pub priority: String,
    pub created: Option<i64>,
    /// A ticket with a non-empty resolution.
    pub resolved: bool,
}

impl Meta {
    /// Extracts (and validates) the attributes of a document.
    pub(crate) fn of(doc: &Document) -> Result<Meta, Error> {
        let (kind, tenant, id, category, status, created) = match doc {
            Document::Ticket(t) => (
                DocKind::Ticket,
                &t.tenant,
                &t.id,
                &t.category,
                t.status.as_str(),
                t.created_at.as_str(),
            ),
            Document::Article(a) => (DocKind::Article, &a.tenant, &a.id, &a.category, "", ""),
        };
        let (priority, resolved) = match doc {
            Document::Ticket(t) => (t.priority.clone(), !t.resolution.trim().is_empty()),
            Document::Article(_) => (String::new(), false),
        };
        let invalid = |reason: String| Error::InvalidDocument {
            id: id.clone(),
            reason,
        };
        if id.trim().is_empty() {
            return Err(invalid("id is empty".into()));
        }
        if id.contains('\x1f') || tenant.contains('\x1f') {
            return Err(invalid(
                "id and tenant may not contain control character U+001F".into(),
            ));
        }
        let created = match created.trim() {
            "" => None,
            s => Some(parse_time(s).map_err(|e| invalid(format!("created_at: {e}")))?),
        };
        Ok(Meta {
            kind,
            tenant: tenant.clone(),
            id: id.clone(),
            category: category.clone(),
            status: status.to_string(),
            priority,
            created,
            resolved,
        })
    }

    /// This document's unique key.
    pub(crate) fn key(&self) -> String {
        key(self.kind, &self.tenant, &self.id)
    }
}

/// Filters with times parsed, ready to apply in both retrievers.
#[derive(Debug, Clone, Default)]
pub(crate) struct CompiledFilters {
    pub tenant: String,
    pub kind: Option<DocKind>,
    pub categories: Vec<String>,
    pub statuses: Vec<String>,
    pub after: Option<i64>,
    pub before: Option<i64>,
    /// Vector ids left out (a request's own stored copy).
    pub exclude: Vec<u64>,
    /// Only tickets with a resolution.
    pub resolved_only: bool,
    /// Only documents with a category.
    pub labelled_only: bool,
}

impl CompiledFilters {
    /// Validates `f`. A status or date restriction only matches tickets that have one.
    pub(crate) fn compile(f: &Filters) -> Result<Self, Error> {
        let time = |s: &Option<String>, name: &str| -> Result<Option<i64>, Error> {
            s.as_deref()
                .map(|s| parse_time(s).map_err(|e| Error::InvalidRequest(format!("{name}: {e}"))))
                .transpose()
        };
        Ok(CompiledFilters {
            tenant: f.tenant.clone().unwrap_or_default(),
            kind: f.kind,
            categories: f.categories.clone(),
            statuses: f.statuses.clone(),
            after: time(&f.created_after, "created_after")?,
            before: time(&f.created_before, "created_before")?,
            ..CompiledFilters::default()
        })
    }

    /// Whether only tenant and kind are restricted.
    pub(crate) fn is_simple(&self) -> bool {
        self.categories.is_empty()
            && self.statuses.is_empty()
            && self.after.is_none()
            && self.before.is_none()
            && self.exclude.is_empty()
            && !self.resolved_only
            && !self.labelled_only
    }

    /// Whether the document with vector id `vid` and attributes `m` passes the filters.
    pub(crate) fn matches(&self, vid: u64, m: &Meta) -> bool {
        m.tenant == self.tenant
            && self.kind.is_none_or(|k| k == m.kind)
            && (self.categories.is_empty() || self.categories.contains(&m.category))
            && (self.statuses.is_empty() || self.statuses.contains(&m.status))
            && self.after.is_none_or(|a| m.created.is_some_and(|c| c >= a))
            && self.before.is_none_or(|b| m.created.is_some_and(|c| c < b))
            && (!self.resolved_only || m.resolved)
            && (!self.labelled_only || !m.category.is_empty())
            && !self.exclude.contains(&vid)
    }

    /// The same filters as zero-scoring tantivy clauses.
    pub(crate) fn clauses(&self, f: &Fields) -> Vec<(Occur, Box<dyn Query>)> {
        let term = |field: Field, value: &str| -> Box<dyn Query> {
            Box::new(TermQuery::new(
                Term::from_field_text(field, value),
                IndexRecordOption::Basic,
            ))
        };
        let any_of = |field: Field, values: &[String]| -> Box<dyn Query> {
            Box::new(BooleanQuery::new(
                values
                    .iter()
                    .map(|v| (Occur::Should, term(field, v)))
                    .collect(),
            ))
        };
        let mut out = vec![term(f.tenant, &self.tenant)];
        if let Some(k) = self.kind {
            out.push(term(f.kind, kind_str(k)));
        }
        if !self.categories.is_empty() {
            out.push(any_of(f.category, &self.categories));
        }
        if !self.statuses.is_empty() {
            out.push(any_of(f.status, &self.statuses));
        }
        if self.after.is_some() || self.before.is_some() {
            let lower = self.after.map_or(Bound::Unbounded, |a| {
                Bound::Included(Term::from_field_i64(f.created, a))
            });
            let upper = self.before.map_or(Bound::Unbounded, |b| {
                Bound::Excluded(Term::from_field_i64(f.created, b))
            });
            out.push(Box::new(RangeQuery::new(lower, upper)));
        }
        out.into_iter()
            .map(|q| {
                (
                    Occur::Must,
                    Box::new(ConstScoreQuery::new(q, 0.0)) as Box<dyn Query>,
                )
            })
            .collect()
    }
}

/// One stored row, decoded.
pub(crate) struct Row {
    pub meta: Meta,
    pub vid: u64,
    pub thash: u64,
    pub vector: Vec<f32>,
}

/// Encodes a vector as little-endian f32 bytes.
fn vector_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Builds the tantivy row for a document.
pub(crate) fn to_row(
    f: &Fields,
    doc: &Document,
    meta: &Meta,
    vid: u64,
    thash: u64,
    vector: &[f32],
) -> Result<TantivyDocument, Error> {
    let mut d = TantivyDocument::new();
    d.add_text(f.key, meta.key());
    d.add_text(f.kind, kind_str(meta.kind));
    d.add_text(f.tenant, &meta.tenant);
    d.add_text(f.id, &meta.id);
    d.add_text(f.category, &meta.category);
    d.add_text(f.status, &meta.status);
    if let Some(c) = meta.created {
        d.add_i64(f.created, c);
    }
    d.add_u64(f.vid, vid);
    d.add_u64(f.thash, thash);
    d.add_bytes(f.vector, &vector_bytes(vector));
    let json = serde_json::to_vec(doc).map_err(|e| Error::InvalidDocument {
        id: meta.id.clone(),
        reason: e.to_string(),
    })?;
    d.add_bytes(f.doc, &json);
    match doc {
        Document::Ticket(t) => {
            d.add_text(f.title, &t.title);
            d.add_text(f.body, &t.body);
            for v in t.fields.values() {
                d.add_text(f.body, v);
            }
            d.add_text(f.resolution, &t.resolution);
        }
        Document::Article(a) => {
            d.add_text(f.title, &a.question);
            for q in &a.alt_questions {
                d.add_text(f.title, q);
            }
            d.add_text(f.body, &a.answer);
            for t in &a.tags {
                d.add_text(f.body, t);
            }
        }
    }
    Ok(d)
}

/// Decodes the stored document JSON of a row.
pub(crate) fn read_doc(f: &Fields, d: &TantivyDocument) -> Result<Document, String> {
    let bytes = d
        .get_first(f.doc)
        .and_then(|v| v.as_bytes())
        .ok_or("row without stored document")?;
    serde_json::from_slice(bytes).map_err(|e| format!("stored document is not valid JSON: {e}"))
}

/// Decodes the stored vector of a row, checking its dimension.
pub(crate) fn read_vector(f: &Fields, d: &TantivyDocument, dim: usize) -> Result<Vec<f32>, String> {
    let bytes = d
        .get_first(f.vector)
        .and_then(|v| v.as_bytes())
        .ok_or("row without stored vector")?;
    if bytes.len() != dim * 4 {
        return Err(format!(
            "stored vector has {} bytes, expected {} (dim {dim})",
            bytes.len(),
            dim * 4
        ));
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

/// Decodes everything the in-memory state needs from a stored row (the
/// attributes from the stored document itself).
pub(crate) fn read_row(f: &Fields, d: &TantivyDocument, dim: usize) -> Result<Row, String> {
    let doc = read_doc(f, d)?;
    let meta = Meta::of(&doc).map_err(|e| format!("stored document is invalid: {e}"))?;
    let num = |field: Field, name: &str| {
        d.get_first(field)
            .and_then(|v| v.as_u64())
            .ok_or_else(|| format!("row without {name}"))
    };
    Ok(Row {
        meta,
        vid: num(f.vid, "vid")?,
        thash: num(f.thash, "thash")?,
        vector: read_vector(f, d, dim)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_rfc3339_and_dates() {
        assert_eq!(parse_time("1970-01-02T00:00:00Z"), Ok(86_400));
        assert_eq!(parse_time("1970-01-02"), Ok(86_400));
        assert_eq!(parse_time("1970-01-01T01:00:00+01:00"), Ok(0));
        assert!(parse_time("yesterday").is_err());
    }

    #[test]
    fn filters_match_in_memory() {
        let m = Meta {
            kind: DocKind::Ticket,
            tenant: "t".into(),
            id: "1".into(),
            category: "billing".into(),
            status: "open".into(),
            priority: String::new(),
            created: Some(100),
            resolved: false,
        };
        let mut f = CompiledFilters {
            tenant: "t".into(),
            ..Default::default()
        };
        assert!(f.matches(0, &m));
        f.statuses = vec!["closed".into()];
        assert!(!f.matches(0, &m));
        f.statuses = vec!["closed".into(), "open".into()];
        f.after = Some(100);
        f.before = Some(101);
        assert!(f.matches(0, &m));
        f.before = Some(100);
        assert!(!f.matches(0, &m));
        f.before = None;
        f.tenant = "other".into();
        assert!(!f.matches(0, &m));
    }

    #[test]
    fn invalid_documents_are_refused() {
        let bad_time = Document::Ticket(crate::Ticket {
            id: "x".into(),
            created_at: "soon".into(),
            ..Default::default()
        });
        assert!(matches!(
            Meta::of(&bad_time),
            Err(Error::InvalidDocument { .. })
        ));
        let no_id = Document::Article(crate::Article::default());
        assert!(matches!(
            Meta::of(&no_id),
            Err(Error::InvalidDocument { .. })
        ));
    }
}
