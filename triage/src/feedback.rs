//! Learning from agents: corrections become labelled examples at once.
//!
//! A correction is written to the index (durable, searchable) and to the
//! engine's ticket memory (the kNN side sees it on the very next call), and
//! then appended to `feedback.jsonl` in the data directory — the audit trail
//! and the record of which examples are agent-verified (those may overrule
//! the model). "This article solved it" teaches the message, personal data
//! masked, as an agent-approved phrasing of the article (kept in
//! [`crate::learned`], not in the article), so the same question is answered
//! next time.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::api::{Feedback, FeedbackOutcome};
use crate::engine::{now_rfc3339, Engine, WriteLock};
use crate::error::{Error, Result};
use crate::faqbank::FaqBank;
use indexer::{ticket_text, Ticket};

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
    /// last line (a crash mid-append, even one that cut a multi-byte character)
    /// is skipped with a warning and cut off the file, so the next append does
    /// not bury it mid-file; an undecodable line elsewhere is an error (see
    /// [`scan`]).
    pub fn open(path: &Path) -> Result<(FeedbackLog, Vec<FeedbackRecord>)> {
        let io = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        let scan = scan(path)?;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io)?;
        if let Some(torn_at) = scan.torn_at {
            tracing::warn!(
                offset = torn_at,
                "cutting the torn last line off {}",
                path.display()
            );
            file.set_len(torn_at).map_err(io)?;
            file.sync_data().map_err(io)?;
        }
        let records = scan.records;
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
        let before = f.metadata().map_err(io)?.len();
        // Start on a fresh line even if a previous append was torn.
        let written = f
            .write_all(format!("\n{line}\n").as_bytes())
            .and_then(|()| f.sync_data());
        if let Err(e) = written {
            // Take a partial record back off the file: the caller is told it
            // failed, and a later append must not bury it mid-file.
            if let Err(cut) = f.set_len(before) {
                tracing::warn!(
                    error = %cut,
                    "could not cut a failed append off {}",
                    self.path.display()
                );
            }
            return Err(io(e));
        }
        Ok(())
    }
}

/// What [`scan`] found in a feedback log.
#[derive(Default)]
struct Scan {
    /// The records, in file order.
    records: Vec<FeedbackRecord>,
    /// Byte offset of a skipped (torn) last line, where the file can be cut.
    torn_at: Option<u64>,
}

/// Reads the log at `path` (none if it does not exist) as bytes and parses it
/// line by line. A last line that is not valid UTF-8 or not a record (a torn
/// append) is skipped with a warning. Elsewhere, a line that is not a record
/// is corruption and an error naming the file and line.
fn scan(path: &Path) -> Result<Scan> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Scan::default()),
        Err(source) => {
            return Err(Error::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    // `(byte offset, line)` for every line, the last one with or without a newline.
    let mut lines: Vec<(usize, &[u8])> = Vec::new();
    let mut start = 0;
    for piece in bytes.split_inclusive(|&b| b == b'\n') {
        lines.push((start, piece.strip_suffix(b"\n").unwrap_or(piece)));
        start += piece.len();
    }
    let blank = |l: &[u8]| l.iter().all(u8::is_ascii_whitespace);
    let last = lines.iter().rposition(|(_, l)| !blank(l));
    let mut scan = Scan::default();
    for (n, &(offset, raw)) in lines.iter().enumerate() {
        if blank(raw) {
            continue;
        }
        let is_last = Some(n) == last;
        let parsed = match std::str::from_utf8(raw) {
            Ok(text) => serde_json::from_str::<FeedbackRecord>(text).map_err(|e| e.to_string()),
            Err(e) if is_last => Err(format!("not valid UTF-8: {e}")),
            Err(e) => {
                return Err(Error::Io {
                    path: path.to_path_buf(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!(
                            "line {}: not valid UTF-8 ({e}); the feedback log is corrupt \
                             (only a torn last line is skipped)",
                            n + 1
                        ),
                    ),
                })
            }
        };
        match parsed {
            Ok(r) => scan.records.push(r),
            Err(error) if is_last => {
                tracing::warn!(
                    line = n + 1,
                    %error,
                    bytes = raw.len(),
                    "skipping a torn last feedback record in {}",
                    path.display()
                );
                scan.torn_at = u64::try_from(offset).ok();
            }
            Err(error) => {
                // A garbled record in the middle is a correction that would be
                // lost without a word: refuse to start, naming the line.
                return Err(Error::Io {
                    path: path.to_path_buf(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!(
                            "line {}: not a feedback record ({error}); the feedback log is \
                             corrupt (only a torn last line is skipped): restore it from a \
                             backup, or remove the line to drop that correction",
                            n + 1
                        ),
                    ),
                });
            }
        }
    }
    Ok(scan)
}

/// A validated piece of feedback: everything it will change, computed before
/// anything is written, so a refused request changes nothing.
struct FeedbackPlan {
    /// The relabelled ticket to store as an agent-verified example.
    ticket: Option<Ticket>,
    /// The article and the (masked) message to teach as its phrasing.
    phrasing: Option<(String, String)>,
    /// What the caller is told.
    outcome: FeedbackOutcome,
}

impl Engine {
    /// Applies an agent's correction or confirmation; it takes effect on the very next call.
    ///
    /// Every part is validated first (the ticket or its text, the labels, the
    /// article and the message); a refused request (unknown article, unknown
    /// category, ...) changes nothing. Then the relabelled ticket is written
    /// to the index (a durable commit) and only then the record appended to
    /// the feedback log: the log lists corrections that reached the index, so
    /// after a crash between the two the ticket is never taken for a
    /// correction nobody made (the client got no answer and resends). A log
    /// append that fails puts the previous ticket back. "This article solved
    /// it" teaches the message, personal data masked, as an agent-approved
    /// phrasing of the article ([`crate::learned`]), last.
    ///
    /// The whole read-modify-write runs under the engine's write mutex: parallel
    /// corrections of one ticket or article each start from the previous one's
    /// result, so none is lost, and the log lists them in the order applied.
    pub fn feedback(&self, fb: Feedback) -> Result<FeedbackOutcome> {
        let held = self.lock_writes();
        let mut plan = self.plan_feedback(&held, &fb)?;
        if let Some(t) = plan.ticket.take() {
            let previous = self
                .read()
                .memory
                .get(&t.tenant, &t.id)
                .map(|e| (e.ticket.clone(), e.corrected));
            let (tenant, id) = (t.tenant.clone(), t.id.clone());
            self.store_ticket(&held, t, Some(true))?;
            let logged = self.log.append(&FeedbackRecord {
                at: now_rfc3339(),
                tenant: fb.tenant.clone(),
                ticket_id: plan.outcome.ticket_id.clone(),
                changes: plan.outcome.changes.clone(),
                article: None,
            });
            if let Err(e) = logged {
                let restored = match previous {
                    Some((old, corrected)) => self.store_ticket(&held, old, Some(corrected)),
                    None => self.forget_ticket(&held, &tenant, &id).map(|_| ()),
                };
                if let Err(undo) = restored {
                    tracing::error!(ticket = %id, error = %undo, "could not undo a correction whose log record failed");
                }
                return Err(e);
            }
            self.count_correction();
        }
        if let Some((article, text)) = plan.phrasing.take() {
            match self.learned.teach(&fb.tenant, &article, &text)? {
                Some(p) => {
                    plan.outcome.changes.push(format!(
                        "article {article}: learned the message as phrasing {} ({})",
                        p.id,
                        if p.status == crate::learned::LearnedStatus::Active {
                            "active"
                        } else {
                            "inactive"
                        }
                    ));
                    plan.outcome.learned_phrasing = Some(p);
                    self.rebank(&held, &fb.tenant, &article)?;
                }
                None => plan.outcome.changes.push(format!(
                    "article {article}: not learned (it has as many learned phrasings as it may keep)"
                )),
            }
        }
        drop(held);
        let outcome = plan.outcome;
        // The changes' values (fields, phrasings) may be personal data: logged as a count.
        tracing::info!(ticket = %outcome.ticket_id, changes = outcome.changes.len(), "feedback stored");
        Ok(outcome)
    }

    /// Validates `fb` and computes what it changes, without changing anything;
    /// called with the write mutex held, so the plan starts from the stored state.
    fn plan_feedback(&self, _held: &WriteLock<'_>, fb: &Feedback) -> Result<FeedbackPlan> {
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
        if fb.fields.keys().any(|k| k.trim().is_empty()) {
            return Err(Error::InvalidInput(
                "feedback fields need non-empty names".into(),
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
            // The labels are checked here, not when the ticket is stored.
            self.check_ticket(&t)?;
            outcome.ticket_id = t.id.clone();
            ticket = Some(t);
        }
        let mut phrasing = None;
        if let Some(article_id) = &fb.solved_by_article {
            let a = self
                .get_article(&fb.tenant, article_id)
                .ok_or_else(|| Error::NotFound(format!("article `{article_id}`")))?;
            let message = fb
                .message
                .clone()
                .filter(|m| !m.trim().is_empty())
                .or_else(|| ticket.as_ref().map(|t| ticket_text(&t.title, &t.body)))
                .unwrap_or_else(|| ticket_text(&fb.title, &fb.body));
            let message = self.masker.mask(message.trim());
            if message.trim().is_empty() {
                return Err(Error::InvalidInput(
                    "solved_by_article needs the message it answered".into(),
                ));
            }
            if message.chars().count() > crate::learned::MAX_TEXT_CHARS {
                return Err(Error::InvalidInput(format!(
                    "`message` is longer than the {} characters a learned phrasing may have",
                    crate::learned::MAX_TEXT_CHARS
                )));
            }
            if FaqBank::phrasings(&a).contains(&message.as_str()) {
                outcome
                    .changes
                    .push(format!("article {article_id}: phrasing already known"));
            } else {
                phrasing = Some((article_id.clone(), message));
            }
            outcome.article_updated = Some(article_id.clone());
        }
        Ok(FeedbackPlan {
            ticket,
            phrasing,
            outcome,
        })
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
