//! Learning from agents: corrections become labelled examples at once.
//!
//! A correction is written to the index (durable, searchable) and to the
//! engine's ticket memory (the kNN side sees it on the very next call), and
//! then appended to the feedback log — the audit trail and
//! the record of which examples are agent-verified (those may overrule the
//! model). "This article solved it" teaches the message, personal data
//! masked, as an agent-approved phrasing of the article (kept in the
//! learned-phrasing store, not in the article), so the same question is
//! answered next time.

use indexer::{ticket_text, Ticket};

use crate::api::{Feedback, FeedbackOutcome, LearnedStatus};
use crate::clock::now_rfc3339;
use crate::engine::{Engine, WriteLock};
use crate::error::{Error, Result};
use crate::store::faqbank::FaqBank;
use crate::store::feedback::FeedbackRecord;
use crate::store::learned::MAX_TEXT_CHARS;

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
    /// phrasing of the article (the learned-phrasing store), last.
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
                        if p.status == LearnedStatus::Active {
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
        if let Some(article) = &fb.solved_by_article {
            if !plan.outcome.ticket_id.is_empty() || !fb.ticket_id.trim().is_empty() {
                let ticket = if plan.outcome.ticket_id.is_empty() {
                    fb.ticket_id.trim()
                } else {
                    plan.outcome.ticket_id.as_str()
                };
                // Resolved with an article: not a knowledge gap.
                self.note_solved(&fb.tenant, ticket, article)?;
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
            if message.chars().count() > MAX_TEXT_CHARS {
                return Err(Error::InvalidInput(format!(
                    "`message` is longer than the {} characters a learned phrasing may have",
                    MAX_TEXT_CHARS
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

    /// Counts a stored correction.
    fn count_correction(&self) {
        self.write().corrections += 1;
    }
}
