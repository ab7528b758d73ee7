//! Bulk ingest of JSONL files: every line is validated before anything is
//! written, then documents are embedded in batches and committed in chunks,
//! with a progress bar.

use std::fs;
use std::path::Path;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use crate::doc::{Article, DocKind, Document, Ticket};
use crate::index::Index;
use crate::schema::Meta;
use crate::Error;

/// Documents per tantivy commit during bulk ingest.
const CHUNK: usize = 1024;

/// What a bulk ingest did, with the embedding time shown separately.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IngestReport {
    /// Kind of the ingested documents.
    pub kind: DocKind,
    /// Documents read and written (added or replaced).
    pub docs: usize,
    /// Documents whose text had to be embedded (unchanged texts reuse their vector).
    pub embedded: usize,
    /// Seconds spent in the embedding model.
    pub embed_secs: f64,
    /// Seconds spent everywhere else (parsing, indexing, graph insertion, commits).
    pub index_secs: f64,
    /// Wall-clock seconds in total.
    pub total_secs: f64,
}

/// Parses a JSONL file of `kind` documents; blank lines are skipped.
pub(crate) fn parse_jsonl(kind: DocKind, path: &Path) -> Result<Vec<Document>, Error> {
    let text = fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut docs = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |reason: String| Error::BadLine {
            path: path.to_path_buf(),
            line: i + 1,
            reason,
        };
        let doc = match kind {
            DocKind::Ticket => serde_json::from_str::<Ticket>(line).map(Document::Ticket),
            DocKind::Article => serde_json::from_str::<Article>(line).map(Document::Article),
        }
        .map_err(|e| bad(format!("not a valid {kind:?} JSON object: {e}")))?;
        Meta::of(&doc).map_err(|e| bad(e.to_string()))?;
        docs.push(doc);
    }
    Ok(docs)
}

impl Index {
    /// Ingests a JSONL file of tickets or articles (one JSON object a line).
    /// A malformed line fails the whole call before anything is written, with
    /// an error naming the line. With `progress`, draws a progress bar on stderr.
    pub fn ingest_jsonl(
        &self,
        kind: DocKind,
        path: &Path,
        progress: bool,
    ) -> Result<IngestReport, Error> {
        let started = Instant::now();
        let docs = parse_jsonl(kind, path)?;
        let bar = if progress {
            let bar = ProgressBar::new(docs.len() as u64);
            if let Ok(style) = ProgressStyle::with_template(
                "{msg} [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec}, eta {eta})",
            ) {
                bar.set_style(style);
            }
            bar.set_message(format!("ingesting {}", path.display()));
            bar
        } else {
            ProgressBar::hidden()
        };
        let total = docs.len();
        let (mut embedded, mut embed_secs) = (0, 0.0);
        let mut docs = docs.into_iter().peekable();
        while docs.peek().is_some() {
            let chunk: Vec<Document> = docs.by_ref().take(CHUNK).collect();
            let n = chunk.len();
            let (e, s) = self.upsert(chunk)?;
            embedded += e;
            embed_secs += s;
            bar.inc(n as u64);
        }
        self.flush()?;
        bar.finish_and_clear();
        let total_secs = started.elapsed().as_secs_f64();
        let report = IngestReport {
            kind,
            docs: total,
            embedded,
            embed_secs,
            index_secs: total_secs - embed_secs,
            total_secs,
        };
        tracing::info!(?report, "ingest finished");
        Ok(report)
    }
}
