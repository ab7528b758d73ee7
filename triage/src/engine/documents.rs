//! Writing and reading the engine's documents: tickets, articles and the
//! phrasings learned for them. Every write holds the document write mutex
//! across the index write and the in-memory update (see the engine's module
//! docs), so the index, the ticket memory and the FAQ bank always agree.

use indexer::{ticket_text, Article, DocKind, Document, Ticket};
use models::EmbedKind;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::heads::is_labelled;
use super::{request_text, Engine, WriteLock};
use crate::api::{ArticleRecord, LearnedPhrasing};
use crate::clock::now_rfc3339;
use crate::error::{Error, Result};
use crate::pack::priority_rank;
use crate::store::faqbank::FaqBank;

impl Engine {
    /// Validates a ticket against the pack.
    pub fn check_ticket(&self, t: &Ticket) -> Result<()> {
        if t.id.trim().is_empty() {
            return Err(Error::InvalidInput("a ticket needs an id".into()));
        }
        request_text(&t.title, &t.body)?;
        if !t.category.is_empty()
            && !self
                .pack
                .leaf_categories()
                .iter()
                .any(|c| c.id == t.category)
        {
            return Err(Error::InvalidInput(format!(
                "unknown category `{}` (expected a leaf category of pack {})",
                t.category, self.pack.name
            )));
        }
        if !t.priority.is_empty() && priority_rank(&t.priority).is_none() {
            return Err(Error::InvalidInput(format!(
                "unknown priority `{}` (expected P0..P3)",
                t.priority
            )));
        }
        if !t.queue.is_empty() && !self.pack.queues.iter().any(|q| q.id == t.queue) {
            return Err(Error::InvalidInput(format!("unknown queue `{}`", t.queue)));
        }
        if !t.created_at.is_empty() && OffsetDateTime::parse(&t.created_at, &Rfc3339).is_err() {
            return Err(Error::InvalidInput(format!(
                "created_at `{}` is not an RFC 3339 time",
                t.created_at
            )));
        }
        Ok(())
    }

    /// Stores a ticket in the index and memory; `corrected` marks an agent-verified
    /// example (`None` keeps the current flag). The caller holds the write mutex
    /// (`_held`), so no other write lands between the index and the memory update.
    /// A write that adds, changes or replaces labelled data is counted for the
    /// tenant's next retrain ([`Engine::pending_changes`]).
    pub(super) fn store_ticket(
        &self,
        held: &WriteLock<'_>,
        mut t: Ticket,
        corrected: Option<bool>,
    ) -> Result<()> {
        self.check_ticket(&t)?;
        if t.created_at.is_empty() {
            t.created_at = now_rfc3339();
        }
        let was_labelled = self
            .read()
            .memory
            .get(&t.tenant, &t.id)
            .is_some_and(|e| is_labelled(&e.ticket));
        let labelled = was_labelled || is_labelled(&t);
        let tenant = t.tenant.clone();
        self.index.upsert_tickets(vec![t.clone()])?;
        let v = match self.index.vector(DocKind::Ticket, &t.tenant, &t.id) {
            Some(v) => v,
            None => self.embed_one(&ticket_text(&t.title, &t.body), EmbedKind::Passage)?,
        };
        self.write().memory.upsert(t.clone(), &v, corrected)?;
        self.space_upsert(held, &t)?;
        if labelled {
            self.note_change(&tenant);
        }
        Ok(())
    }

    /// Adds or replaces a ticket; searchable and used as evidence when this returns.
    pub fn upsert_ticket(&self, t: Ticket) -> Result<()> {
        let held = self.lock_writes();
        self.store_ticket(&held, t, None)
    }

    /// Deletes a ticket; `true` if it existed. Serialised with other writes, so
    /// the index and the ticket memory agree afterwards.
    pub fn delete_ticket(&self, tenant: &str, id: &str) -> Result<bool> {
        let held = self.lock_writes();
        self.forget_ticket(&held, tenant, id)
    }

    /// Deletes a ticket from the index and the memory (the caller holds the
    /// write mutex); `true` if it existed.
    pub(super) fn forget_ticket(
        &self,
        held: &WriteLock<'_>,
        tenant: &str,
        id: &str,
    ) -> Result<bool> {
        let labelled = self
            .read()
            .memory
            .get(tenant, id)
            .is_some_and(|e| is_labelled(&e.ticket));
        let existed = self.index.delete(DocKind::Ticket, tenant, id)?;
        let in_memory = self.write().memory.remove(tenant, id);
        self.space_remove(held, tenant, id);
        if labelled {
            self.note_change(tenant);
        }
        Ok(existed || in_memory)
    }

    /// Adds or replaces an article; used for deflection when this returns. The
    /// phrasings (its own and its active learned ones) are embedded first,
    /// without the write mutex; the index write and the FAQ bank update then
    /// happen under it, together.
    pub fn upsert_article(&self, a: Article) -> Result<()> {
        self.check_article(&a)?;
        let learned = self.learned.active_texts(&a.tenant, &a.id);
        let vectors = self.embed_phrasings(&a, &learned)?;
        let held = self.lock_writes();
        self.index.upsert_articles(vec![a.clone()])?;
        self.bank_article(&held, a, &learned, &vectors)
    }

    /// Validates an article against the pack.
    fn check_article(&self, a: &Article) -> Result<()> {
        if a.id.trim().is_empty() {
            return Err(Error::InvalidInput("an article needs an id".into()));
        }
        if a.question.trim().is_empty() && a.answer.trim().is_empty() {
            return Err(Error::InvalidInput(
                "an article needs a question or an answer".into(),
            ));
        }
        if !a.category.is_empty() && self.pack.category(&a.category).is_none() {
            return Err(Error::InvalidInput(format!(
                "unknown category `{}`",
                a.category
            )));
        }
        Ok(())
    }

    /// The query vectors of an article's entries ([`FaqBank::texts`] order, its
    /// own phrasings then the `learned` ones), reusing those the bank already
    /// holds for the same text: a vector depends only on its text, so this
    /// needs no write mutex.
    pub(super) fn embed_phrasings(&self, a: &Article, learned: &[String]) -> Result<Vec<Vec<f32>>> {
        let texts = FaqBank::texts(a, learned);
        let known: Vec<Option<Vec<f32>>> = {
            let state = self.read();
            texts
                .iter()
                .map(|t| state.bank.known_vector(&a.tenant, &a.id, t))
                .collect()
        };
        let missing: Vec<&str> = texts
            .iter()
            .zip(&known)
            .filter(|(_, k)| k.is_none())
            .map(|(t, _)| *t)
            .collect();
        let mut fresh = self.embedder.embed(&missing, EmbedKind::Query)?.into_iter();
        // Fail here, before anything is written, rather than in the bank
        // after the index write.
        known
            .into_iter()
            .map(|k| {
                k.or_else(|| fresh.next()).ok_or_else(|| {
                    Error::Numeric("the embedder returned fewer vectors than phrasings".into())
                })
            })
            .collect()
    }

    /// Puts a checked article into the FAQ bank with its active learned
    /// phrasings (`vectors` from [`Engine::embed_phrasings`]). The caller
    /// holds the write mutex (`_held`), so a concurrent delete cannot land
    /// between an index write and this.
    fn bank_article(
        &self,
        _held: &WriteLock<'_>,
        a: Article,
        learned: &[String],
        vectors: &[Vec<f32>],
    ) -> Result<()> {
        self.write().bank.upsert_with_learned(a, learned, vectors)
    }

    /// Re-banks a stored article after its active learned phrasings changed.
    pub(super) fn rebank(&self, held: &WriteLock<'_>, tenant: &str, article: &str) -> Result<()> {
        let Some(a) = self.read().bank.get(tenant, article).cloned() else {
            return Ok(());
        };
        let learned = self.learned.active_texts(tenant, article);
        let vectors = self.embed_phrasings(&a, &learned)?;
        self.bank_article(held, a, &learned, &vectors)
    }

    /// Deletes an article (and forgets its learned phrasings); `true` if it
    /// existed. Serialised with other writes, so the index and the FAQ bank
    /// agree afterwards.
    pub fn delete_article(&self, tenant: &str, id: &str) -> Result<bool> {
        let _held = self.lock_writes();
        let existed = self.index.delete(DocKind::Article, tenant, id)?;
        let in_bank = self.write().bank.remove(tenant, id);
        if existed || in_bank {
            self.learned.forget_article(tenant, id)?;
        }
        Ok(existed || in_bank)
    }

    /// A stored article with its learned phrasings (for agents: the texts
    /// are masked, but they are customers' words and never go to the chat).
    pub fn article_record(&self, tenant: &str, id: &str) -> Option<ArticleRecord> {
        let article = self.read().bank.get(tenant, id).cloned()?;
        Some(ArticleRecord {
            learned: self.learned.list(tenant, Some(id)),
            article,
        })
    }

    /// The tenant's learned phrasings (of one article, or all).
    pub fn learned_phrasings(&self, tenant: &str, article: Option<&str>) -> Vec<LearnedPhrasing> {
        self.learned.list(tenant, article)
    }

    /// An agent approves a learned phrasing: it answers from now on.
    pub fn approve_learned(&self, tenant: &str, id: &str) -> Result<LearnedPhrasing> {
        let held = self.lock_writes();
        let p = self.learned.approve(tenant, id)?;
        self.rebank(&held, tenant, &p.article_id)?;
        Ok(p)
    }

    /// An agent removes a learned phrasing: it stops answering at once and is
    /// never learned again from customers' clicks.
    pub fn remove_learned(&self, tenant: &str, id: &str) -> Result<LearnedPhrasing> {
        let held = self.lock_writes();
        let p = self.learned.remove(tenant, id)?;
        self.rebank(&held, tenant, &p.article_id)?;
        Ok(p)
    }

    /// A stored ticket.
    pub fn get_ticket(&self, tenant: &str, id: &str) -> Result<Option<Ticket>> {
        if let Some(e) = self.read().memory.get(tenant, id) {
            return Ok(Some(e.ticket.clone()));
        }
        Ok(match self.index.get(DocKind::Ticket, tenant, id)? {
            Some(Document::Ticket(t)) => Some(t),
            _ => None,
        })
    }

    /// A stored article (from the FAQ bank).
    pub(super) fn get_article(&self, tenant: &str, id: &str) -> Option<Article> {
        self.read().bank.get(tenant, id).cloned()
    }
}
