//! Learning from agents: corrections become labelled examples at once.
//!
//! A correction is written to the index (durable, searchable) and to the
//! engine's ticket memory (the kNN side sees it on the very next call), and
//! appended to `feedback.jsonl` in the data directory — the audit trail and
//! the record of which examples are agent-verified (those may overrule the
//! model). "This article solved it" adds the message as a phrasing of the
//! article, so the same question is answered next time.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::api::{Feedback, FeedbackOutcome};
use crate::engine::{now_rfc3339, ticket_text, Engine};
use crate::error::{Error, Result};
use crate::faqbank::FaqBank;
use indexer::Ticket;

/// One stored correction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeedbackRecord {
    /// When it was received (RFC 3339).
    pub at: String,
    /// Tenant of the ticket.
    pub tenant: String,
    /// The ticket it corrected or confirmed.
    pub ticket_id: String,
    /// What changed.
    pub changes: Vec<String>,
    /// Article that got a new phrasing, if any.
    pub article: Option<String>,
}

/// Append-only JSONL log of corrections; each append is synced before returning.
#[derive(Debug)]
pub struct FeedbackLog {
    path: PathBuf,
    file: Mutex<File>,
}

impl FeedbackLog {
    /// Opens (creating) the log and returns the records already in it. A torn
    /// last line (a crash mid-append) is skipped with a warning.
    pub fn open(path: &Path) -> Result<(FeedbackLog, Vec<FeedbackRecord>)> {
        let io = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut records = Vec::new();
        if path.exists() {
            let reader = BufReader::new(File::open(path).map_err(io)?);
            for (n, line) in reader.lines().enumerate() {
                let line = line.map_err(io)?;
                if line.trim().is_empty() {
                    continue;
                }
                match serde_json::from_str::<FeedbackRecord>(&line) {
                    Ok(r) => records.push(r),
                    Err(e) => tracing::warn!(
                        line = n + 1,
                        error = %e,
                        "skipping unreadable feedback record in {}",
                        path.display()
                    ),
                }
            }
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io)?;
        Ok((
            FeedbackLog {
                path: path.to_path_buf(),
                file: Mutex::new(file),
            },
            records,
        ))
    }

    /// Appends one record durably.
    pub fn append(&self, record: &FeedbackRecord) -> Result<()> {
        let io = |source| Error::Io {
            path: self.path.clone(),
            source,
        };
        let line = serde_json::to_string(record).map_err(|e| Error::Numeric(e.to_string()))?;
        let mut f = self
            .file
            .lock()
            .map_err(|_| Error::Numeric("feedback log lock poisoned".into()))?;
        // Start on a fresh line even if a previous append was torn.
        f.write_all(format!("\n{line}\n").as_bytes()).map_err(io)?;
        f.sync_data().map_err(io)
    }
}

impl Engine {
    /// Applies an agent's correction or confirmation; it takes effect on the very next call.
    pub fn feedback(&self, fb: Feedback) -> Result<FeedbackOutcome> {
        let relabels = fb.category.is_some()
            || fb.priority.is_some()
            || fb.queue.is_some()
            || !fb.fields.is_empty();
        if !relabels && fb.solved_by_article.is_none() {
            return Err(Error::InvalidInput(
                "feedback needs a correction (category, priority, queue, fields) or solved_by_article"
                    .into(),
            ));
        }
        let mut outcome = FeedbackOutcome::default();
        let mut ticket: Option<Ticket> = None;
        if relabels {
            let existing = if fb.ticket_id.trim().is_empty() {
                None
            } else {
                self.get_ticket(&fb.tenant, &fb.ticket_id)?
            };
            let mut t = match existing {
                Some(t) => t,
                None if ticket_text(&fb.title, &fb.body).is_empty() => {
                    return Err(Error::NotFound(format!(
                        "ticket `{}` (send its title/body to create it)",
                        fb.ticket_id
                    )))
                }
                None => {
                    outcome.created = true;
                    let id = if fb.ticket_id.trim().is_empty() {
                        format!(
                            "fb-{}",
                            time::OffsetDateTime::now_utc().unix_timestamp_nanos()
                        )
                    } else {
                        fb.ticket_id.clone()
                    };
                    Ticket {
                        id,
                        title: fb.title.clone(),
                        body: fb.body.clone(),
                        tenant: fb.tenant.clone(),
                        status: "open".into(),
                        ..Ticket::default()
                    }
                }
            };
            let mut set = |name: &str, slot: &mut String, new: &Option<String>| {
                if let Some(v) = new {
                    if slot != v {
                        outcome.changes.push(format!("{name}: {slot} → {v}"));
                    } else {
                        outcome.changes.push(format!("{name}: {v} confirmed"));
                    }
                    *slot = v.clone();
                }
            };
            set("category", &mut t.category, &fb.category);
            set("priority", &mut t.priority, &fb.priority);
            set("queue", &mut t.queue, &fb.queue);
            for (k, v) in &fb.fields {
                outcome.changes.push(format!("field {k}: {v}"));
                t.fields.insert(k.clone(), v.clone());
            }
            if fb.queue.is_none() && fb.category.is_some() {
                // A new category routes to its queue unless the agent said otherwise.
                if let Some(q) = self.pack.queue_for(&t.category) {
                    t.queue = q.to_string();
                }
            }
            self.store_ticket(t.clone(), Some(true))?;
            outcome.ticket_id = t.id.clone();
            ticket = Some(t);
        }
        if let Some(article_id) = &fb.solved_by_article {
            let mut a = self
                .get_article(&fb.tenant, article_id)
                .ok_or_else(|| Error::NotFound(format!("article `{article_id}`")))?;
            let message = fb
                .message
                .clone()
                .filter(|m| !m.trim().is_empty())
                .or_else(|| ticket.as_ref().map(|t| ticket_text(&t.title, &t.body)))
                .unwrap_or_else(|| ticket_text(&fb.title, &fb.body));
            let message = message.trim().to_string();
            if message.is_empty() {
                return Err(Error::InvalidInput(
                    "solved_by_article needs the message it answered".into(),
                ));
            }
            if FaqBank::phrasings(&a).contains(&message.as_str()) {
                outcome
                    .changes
                    .push(format!("article {article_id}: phrasing already known"));
            } else {
                a.alt_questions.push(message);
                self.upsert_article(a)?;
                outcome.changes.push(format!(
                    "article {article_id}: added the message as a phrasing"
                ));
            }
            outcome.article_updated = Some(article_id.clone());
        }
        self.log.append(&FeedbackRecord {
            at: now_rfc3339(),
            tenant: fb.tenant.clone(),
            ticket_id: outcome.ticket_id.clone(),
            changes: outcome.changes.clone(),
            article: outcome.article_updated.clone(),
        })?;
        self.count_correction();
        tracing::info!(ticket = %outcome.ticket_id, changes = ?outcome.changes, "feedback stored");
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> FeedbackRecord {
        FeedbackRecord {
            at: "2026-03-01T00:00:00Z".into(),
            tenant: String::new(),
            ticket_id: id.into(),
            changes: vec!["category: a → b".into()],
            article: None,
        }
    }

    #[test]
    fn records_survive_reopen_and_a_torn_line_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("feedback.jsonl");
        let (log, old) = FeedbackLog::open(&path).unwrap();
        assert!(old.is_empty());
        log.append(&record("T1")).unwrap();
        drop(log);
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"at\":\"2026")
            .unwrap();
        let (log, old) = FeedbackLog::open(&path).unwrap();
        assert_eq!(old, vec![record("T1")]);
        log.append(&record("T2")).unwrap();
        let (_, all) = FeedbackLog::open(&path).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[1].ticket_id, "T2");
    }
}
