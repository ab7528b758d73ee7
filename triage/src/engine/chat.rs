//! The self-service chat: conversations, answers, customers' feedback, handoffs.
//!
//! The chat is what customers meet, and it is open to anyone the operator
//! lets in (a public chat key, or a widget): nothing it returns may carry
//! another customer's words, and nothing a customer sends may change what
//! other customers get on its own. So:
//!
//! * Conversations have ids the service issues ([`Sessions`], 128 random
//!   bits): a client cannot pick one, and an unknown id starts a new
//!   conversation rather than joining someone else's.
//! * A reply shows articles as the chat displays them ([`ChatArticle`]: id,
//!   question, answer) and a draft made of the customer's own words
//!   ([`ChatDraft`]); never similar tickets, learned phrasings or the
//!   evidence of the ticket classifier.
//! * Feedback ([`Engine::chat_feedback`]) is about an article this
//!   conversation was shown in that turn, and only proposes the message as a
//!   phrasing ([`crate::store::learned`]): it counts after several conversations
//!   agree, or an agent approves it. Urgent messages are never learned.
//! * A handoff ([`Engine::chat_ticket`]) creates an open, unlabelled ticket
//!   with an id the service chooses: a customer cannot overwrite a ticket,
//!   set a resolution, or label training data.

use indexer::Ticket;
use models::EmbedKind;

use crate::api::LearnedStatus;
use crate::api::{
    ChatArticle, ChatCandidate, ChatDraft, ChatEvidence, ChatFeedback, ChatFeedbackOutcome,
    ChatMessage, ChatReply, ChatTicket, ChatTicketRequest, DeflectAction,
};
use crate::clock::now_rfc3339;
use crate::decide::deflect::{decide, evidence_line, ScoredArticle};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::pack::priority_rank;
use crate::store::activity::Activity;
use crate::store::faqbank::FaqBank;
use crate::store::learned::MAX_TEXT_CHARS;
use crate::store::sessions::Sessions;

/// Longest title a handoff ticket gets from the first message (characters).
const TITLE_CHARS: usize = 60;
/// The out-of-scope check overrules a matched article only when the category
/// model's out-of-scope class is at least this probable (before the
/// unlike-anything guard scales it): a veto at "probability 0.00" would
/// contradict itself.
const OUT_OF_SCOPE_VETO: f32 = 0.5;

impl Engine {
    fn sessions(&self) -> std::sync::MutexGuard<'_, Sessions> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Answer, clarify or hand off a chat message, within its conversation.
    pub fn deflect(&self, msg: &ChatMessage) -> Result<ChatReply> {
        let text = msg.text.trim();
        if text.is_empty() {
            return Err(Error::InvalidInput("the message is empty".into()));
        }
        let (session_id, history) = self.sessions().resolve(
            &msg.tenant,
            msg.session_id.as_deref().filter(|s| !s.is_empty()),
            &msg.customer_id,
        );
        let th = self.pack.thresholds;
        let q = self.embed_one(text, EmbedKind::Query)?;
        let mut scored = {
            let state = self.read();
            self.deflector.score(&state.bank, text, &q, &msg.tenant)?
        };
        let mut reasons = Vec::new();
        let mut matched_text = text.to_string();
        let top = |s: &[ScoredArticle]| s.first().map(|a| a.probability).unwrap_or(0.0);
        if let Some(prev) = history.last() {
            if top(&scored) < th.deflect_answer {
                // A short follow-up ("and for the fridge?") may need the previous turn.
                let joined = format!("{prev} {text}");
                let qc = self.embed_one(&joined, EmbedKind::Query)?;
                let with_context = {
                    let state = self.read();
                    self.deflector
                        .score(&state.bank, &joined, &qc, &msg.tenant)?
                };
                if top(&with_context) > top(&scored) {
                    scored = with_context;
                    matched_text = joined;
                    reasons.push("matched together with the previous message".to_string());
                }
            }
        }
        let mut d = decide(&scored, th.deflect_answer, th.deflect_clarify);
        d.reasons.push(evidence_line(&self.read().bank, &scored));
        if d.action != DeflectAction::Handoff {
            // An article can look like a request it does not serve ("cancel my gym
            // membership" vs "cancel an order"): the category model, which learned
            // the pack's out-of-scope examples, has the last word.
            if let Some(p) = vetoes(self.out_of_scope(&matched_text, &msg.tenant)?) {
                d.action = DeflectAction::Handoff;
                d.chosen.clear();
                d.reasons.push(format!(
                    "looks like a request this service does not handle (probability {p:.2}): handing off to a human"
                ));
            }
        }
        reasons.extend(d.reasons);
        let candidates: Vec<ChatCandidate> = {
            let state = self.read();
            d.chosen
                .iter()
                .filter_map(|s| {
                    let a = state.bank.article(s.slot)?;
                    let entry = state.bank.entry(s.best.entry);
                    Some(ChatCandidate {
                        article: ChatArticle {
                            id: a.id.clone(),
                            question: a.question.clone(),
                            answer: a.answer.clone(),
                            category: a.category.clone(),
                        },
                        confidence: s.probability,
                        evidence: ChatEvidence {
                            similarity: s.best.cos,
                            matched_terms: s.matched.clone(),
                            missing_terms: if entry.is_some_and(|e| !e.learned) {
                                s.missing.clone()
                            } else {
                                Vec::new()
                            },
                            matched_phrasing: entry.filter(|e| !e.learned).map(|e| e.text.clone()),
                        },
                    })
                })
                .collect()
        };
        let shown = candidates.iter().map(|c| c.article.id.clone()).collect();
        let turn = self.sessions().record(&session_id, text, shown);
        let best = {
            let state = self.read();
            scored
                .first()
                .and_then(|s| state.bank.article(s.slot).map(|a| a.id.clone()))
        };
        self.note_activity(
            &msg.tenant,
            Activity::Deflect {
                session: session_id.clone(),
                action: d.action,
                confidence: d.confidence,
                article: best,
                // A question the knowledge base did not answer: kept for the gaps.
                text: (d.action == DeflectAction::Handoff).then(|| self.masker.mask(text)),
            },
        );
        let ticket_draft = if d.action == DeflectAction::Handoff {
            let mut turns = history;
            turns.push(text.to_string());
            Some(self.draft(&msg.tenant, &title_of(text), &turns.join("\n"))?)
        } else {
            None
        };
        Ok(ChatReply {
            action: d.action,
            confidence: d.confidence,
            session_id,
            turn,
            candidates,
            ticket_draft,
            reasons,
        })
    }

    /// The prefilled ticket of a text: predicted labels and the fields found
    /// in it, nothing of other tickets.
    fn draft(&self, tenant: &str, title: &str, body: &str) -> Result<ChatDraft> {
        let triage = self.classify_text(tenant, title, body)?;
        Ok(ChatDraft {
            title: title.to_string(),
            body: body.to_string(),
            category: triage.category.label,
            priority: triage.priority.label,
            queue: triage.queue.label,
            needs_human: triage.needs_human,
            fields: triage
                .fields
                .into_iter()
                .filter(|f| f.source == "extracted")
                .collect(),
        })
    }

    /// The ticket draft of a conversation so far (for "none of these" and
    /// "not helpful": the customer reviews it before submitting).
    pub fn chat_draft(&self, tenant: &str, session_id: &str) -> Result<ChatDraft> {
        let texts = self.sessions().get(tenant, session_id)?.texts();
        let first = texts.first().map(String::as_str).unwrap_or_default();
        self.draft(tenant, &title_of(first), &texts.join("\n"))
    }

    /// A customer's "did this help?" on an article their conversation was
    /// shown: recorded, and (when it helped) the message proposed as a
    /// phrasing of the article, personal data masked. It answers other
    /// customers only after customers of several conversations agree (see
    /// [`LearnPolicy`](crate::LearnPolicy)) or an agent approves it
    /// ([`Engine::approve_learned`]).
    pub fn chat_feedback(&self, fb: &ChatFeedback) -> Result<ChatFeedbackOutcome> {
        let turn = {
            let sessions = self.sessions();
            let s = sessions.get(&fb.tenant, &fb.session_id)?;
            s.turns
                .iter()
                .find(|t| t.number == fb.turn)
                .cloned()
                .ok_or_else(|| {
                    Error::NotFound(format!(
                        "turn {} of this conversation (recent turns only)",
                        fb.turn
                    ))
                })?
        };
        if !turn.shown.contains(&fb.article_id) {
            return Err(Error::InvalidInput(format!(
                "article `{}` was not shown in turn {} of this conversation",
                fb.article_id, fb.turn
            )));
        }
        let not_learned = |reason: &str| ChatFeedbackOutcome {
            recorded: true,
            learning: "not_learned".into(),
            reason: Some(reason.to_string()),
        };
        if self
            .rules
            .lexicon_hits(&turn.text)
            .iter()
            .any(|h| priority_rank(&h.level).is_some_and(|r| r <= 1))
        {
            return Ok(not_learned(
                "urgent requests are never answered from phrasings learned from chats",
            ));
        }
        let masked = self.masker.mask(&turn.text);
        if masked.chars().count() > MAX_TEXT_CHARS {
            return Ok(not_learned(&format!(
                "messages longer than {MAX_TEXT_CHARS} characters are not learned"
            )));
        }
        let held = self.lock_writes();
        let article = self
            .get_article(&fb.tenant, &fb.article_id)
            .ok_or_else(|| Error::NotFound(format!("article `{}`", fb.article_id)))?;
        if FaqBank::phrasings(&article).contains(&masked.trim()) {
            return Ok(ChatFeedbackOutcome {
                recorded: true,
                learning: "known".into(),
                reason: Some("the message is one of the article's own phrasings".into()),
            });
        }
        let vote = self.learned.vote(
            &fb.tenant,
            &fb.article_id,
            &masked,
            &fb.session_id,
            fb.helpful,
        )?;
        let Some(vote) = vote else {
            return Ok(not_learned(
                "this article has as many learned phrasings as it may keep",
            ));
        };
        if vote.activation_changed {
            self.rebank(&held, &fb.tenant, &fb.article_id)?;
        }
        let learning = match vote.status {
            LearnedStatus::Candidate => "candidate",
            LearnedStatus::Active => "active",
            LearnedStatus::Removed => "removed",
        };
        Ok(ChatFeedbackOutcome {
            recorded: true,
            learning: learning.into(),
            reason: None,
        })
    }

    /// Hands a conversation to a person: creates an open ticket (id chosen by
    /// the service, no labels, no resolution) from the customer's words, with
    /// the fields found in them and the contact they gave.
    pub fn chat_ticket(&self, req: &ChatTicketRequest) -> Result<ChatTicket> {
        let (customer_id, texts) = self.sessions().hand_off(&req.tenant, &req.session_id)?;
        let title = if req.title.trim().is_empty() {
            title_of(texts.first().map(String::as_str).unwrap_or_default())
        } else {
            req.title.trim().to_string()
        };
        let body = if req.body.trim().is_empty() {
            texts.join("\n")
        } else {
            req.body.trim().to_string()
        };
        if title.is_empty() && body.is_empty() {
            return Err(Error::InvalidInput(
                "the conversation has no message to hand off".into(),
            ));
        }
        let draft = self.draft(&req.tenant, &title, &body)?;
        let mut fields: std::collections::BTreeMap<String, String> = draft
            .fields
            .iter()
            .map(|f| (f.name.clone(), f.value.clone()))
            .collect();
        if !req.contact.trim().is_empty() {
            fields.insert("contact".into(), req.contact.trim().to_string());
        }
        let ticket = Ticket {
            id: format!("chat-{:016x}", rand::random::<u64>()),
            tenant: req.tenant.clone(),
            title,
            body,
            channel: "chat".into(),
            status: "open".into(),
            customer_id,
            fields,
            created_at: now_rfc3339(),
            ..Ticket::default()
        };
        let ticket_id = ticket.id.clone();
        self.upsert_ticket(ticket)?;
        self.note_activity(
            &req.tenant,
            Activity::ChatTicket {
                ticket_id: ticket_id.clone(),
            },
        );
        Ok(ChatTicket {
            ticket_id,
            status: "open".into(),
            draft,
        })
    }
}

/// The out-of-scope probability that overrules a matched article, if the
/// category model's is high enough ([`OUT_OF_SCOPE_VETO`]).
fn vetoes(out_of_scope: Option<f32>) -> Option<f32> {
    out_of_scope.filter(|p| *p >= OUT_OF_SCOPE_VETO)
}

/// The first characters of a message, as a ticket title.
fn title_of(text: &str) -> String {
    text.trim().chars().take(TITLE_CHARS).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_out_of_scope_veto_needs_a_probable_out_of_scope_class() {
        // Before: the veto fired at "probability 0.00" right after a verified match.
        assert_eq!(vetoes(Some(0.004)), None);
        assert_eq!(vetoes(Some(0.49)), None);
        assert_eq!(vetoes(Some(0.5)), Some(0.5));
        assert_eq!(vetoes(Some(0.93)), Some(0.93));
        assert_eq!(vetoes(None), None);
    }
}
