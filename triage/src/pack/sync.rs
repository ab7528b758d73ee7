//! Keeping a data directory in step with the pack it serves.
//!
//! The data directory remembers, in its `pack-ingested` marker, which pack it
//! belongs to and a fingerprint of the pack documents it ingested
//! (`tickets.jsonl` and `articles.jsonl`). On every start:
//!
//! - a marker naming another pack is refused: a data directory belongs to one
//!   pack, and mixing two packs' tickets would train on the wrong taxonomy;
//! - a missing marker (first start), a marker without a fingerprint (written by
//!   an older version) or a different fingerprint (the pack was edited) makes
//!   the pack's tickets and articles be upserted again, then the marker is
//!   rewritten. Documents added through the API under other ids are kept, and
//!   so are agents' corrections: a pack ticket an agent relabelled keeps the
//!   agent's labels, and an article keeps the phrasings feedback taught it.

use std::collections::HashSet;
use std::path::Path;

use indexer::{Article, DocKind, Document, Index};

use crate::error::{Error, Result};
use crate::pack::Pack;
use crate::store::feedback::FeedbackRecord;
use crate::store::marker::{PackMarker, MARKER_FILE};

/// What [`sync_pack`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Whether the pack's documents were compared with the index (marker
    /// missing, without fingerprint, or with another fingerprint).
    pub checked: bool,
    /// Pack tickets written (new or changed).
    pub tickets_upserted: usize,
    /// Pack articles written (new or changed).
    pub articles_upserted: usize,
    /// Changed pack tickets not written because an agent corrected the stored copy.
    pub corrections_kept: usize,
}

/// Brings the index in `data_dir` in step with `pack` (see the module docs):
/// refuses a data directory that belongs to another pack, and when the pack's
/// documents changed since the marker was written, passes the new or changed
/// tickets and articles (as a copy of `pack` holding only those) to `ingest`,
/// then rewrites the marker. `log` is the feedback log's records: the tickets
/// and articles agents corrected, which keep their stored version.
pub fn sync_pack(
    data_dir: &Path,
    pack: &Pack,
    index: &Index,
    log: &[FeedbackRecord],
    ingest: impl FnOnce(&Pack) -> Result<()>,
) -> Result<SyncReport> {
    let marker_path = data_dir.join(MARKER_FILE);
    let marker = PackMarker::read(&marker_path)?;
    if let Some(m) = &marker {
        if m.name != pack.name {
            return Err(Error::Pack {
                file: pack.dir.join("pack.toml"),
                line: 0,
                key: "pack.name".into(),
                message: format!(
                    "data directory {} belongs to pack `{}`, but this pack is `{}`; a data \
                     directory serves one pack: use another data directory for `{}` (or \
                     restore the name `{}`)",
                    data_dir.display(),
                    m.name,
                    pack.name,
                    pack.name,
                    m.name
                ),
            });
        }
        if m.fingerprint.as_deref() == Some(pack.fingerprint.as_str()) {
            return Ok(SyncReport::default());
        }
    }
    let corrected: HashSet<(&str, &str)> = log
        .iter()
        .map(|r| (r.tenant.as_str(), r.ticket_id.as_str()))
        .collect();
    let taught: HashSet<(&str, &str)> = log
        .iter()
        .filter_map(|r| r.article.as_deref().map(|a| (r.tenant.as_str(), a)))
        .collect();

    let mut report = SyncReport {
        checked: true,
        ..SyncReport::default()
    };
    let mut tickets = Vec::new();
    for t in &pack.tickets {
        let stored = match index.get(DocKind::Ticket, &t.tenant, &t.id)? {
            Some(Document::Ticket(s)) => s,
            _ => {
                tickets.push(t.clone());
                continue;
            }
        };
        let mut t = t.clone();
        if t.created_at.is_empty() {
            // Keep the time it was first ingested at.
            t.created_at = stored.created_at.clone();
        }
        if t == stored {
            continue;
        }
        if corrected.contains(&(t.tenant.as_str(), t.id.as_str())) {
            tracing::debug!(
                ticket = %t.id,
                "pack ticket differs from its agent-corrected copy: kept the correction"
            );
            report.corrections_kept += 1;
            continue;
        }
        tickets.push(t);
    }
    let mut articles = Vec::new();
    for a in &pack.articles {
        let mut a = a.clone();
        if let Some(Document::Article(stored)) = index.get(DocKind::Article, &a.tenant, &a.id)? {
            if taught.contains(&(a.tenant.as_str(), a.id.as_str())) {
                keep_taught_phrasings(&mut a, &stored);
            }
            if a == stored {
                continue;
            }
        }
        articles.push(a);
    }
    report.tickets_upserted = tickets.len();
    report.articles_upserted = articles.len();
    let reason = match &marker {
        None => "first start".to_string(),
        Some(m) => match &m.fingerprint {
            None => "marker without fingerprint".to_string(),
            Some(old) => format!("pack documents changed ({old} → {})", pack.fingerprint),
        },
    };
    tracing::info!(
        pack = %pack.name,
        tickets = report.tickets_upserted,
        articles = report.articles_upserted,
        corrections_kept = report.corrections_kept,
        "{reason}: upserting {} tickets and {} articles of the pack into {} (documents with other ids are kept)",
        report.tickets_upserted,
        report.articles_upserted,
        data_dir.display()
    );
    if !tickets.is_empty() || !articles.is_empty() {
        let changed = Pack {
            tickets,
            articles,
            ..pack_without_documents(pack)
        };
        ingest(&changed)?;
    }
    PackMarker {
        name: pack.name.clone(),
        fingerprint: Some(pack.fingerprint.clone()),
    }
    .write(&marker_path)?;
    Ok(report)
}

/// Adds to `article` the phrasings of the stored copy it lacks: those were
/// taught by agents' "this article solved it" feedback.
fn keep_taught_phrasings(article: &mut Article, stored: &Article) {
    for p in &stored.alt_questions {
        let known = article.question.trim() == p.trim()
            || article.alt_questions.iter().any(|q| q.trim() == p.trim());
        if !known {
            article.alt_questions.push(p.clone());
        }
    }
}

/// A copy of `pack` without its tickets and articles (cheap to fill with a subset).
fn pack_without_documents(pack: &Pack) -> Pack {
    Pack {
        dir: pack.dir.clone(),
        name: pack.name.clone(),
        description: pack.description.clone(),
        default_language: pack.default_language.clone(),
        thresholds: pack.thresholds,
        queues: pack.queues.clone(),
        categories: pack.categories.clone(),
        priorities: pack.priorities.clone(),
        lexicon: pack.lexicon.clone(),
        lexicon_exceptions: pack.lexicon_exceptions.clone(),
        fields: pack.fields.clone(),
        articles: Vec::new(),
        tickets: Vec::new(),
        out_of_scope: pack.out_of_scope.clone(),
        escalation: pack.escalation.clone(),
        insights: pack.insights.clone(),
        fingerprint: pack.fingerprint.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taught_phrasings_are_kept_once() {
        let stored = Article {
            id: "kb".into(),
            question: "Q".into(),
            alt_questions: vec!["old".into(), "taught".into()],
            ..Article::default()
        };
        let mut edited = Article {
            id: "kb".into(),
            question: "Q2".into(),
            alt_questions: vec!["old".into()],
            ..Article::default()
        };
        keep_taught_phrasings(&mut edited, &stored);
        assert_eq!(edited.alt_questions, vec!["old", "taught"]);
        assert_eq!(edited.question, "Q2");
    }
}
