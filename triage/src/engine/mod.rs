//! The triage engine: one object the server and CLI drive.
//!
//! It owns the pack, the hybrid index, an in-memory copy of every ticket with
//! its passage vector (for kNN evidence, duplicates and recommendations), the
//! FAQ bank for deflection, and the trained classifiers. Reads take a shared
//! lock; upserts and feedback take it briefly for writing, after the slow
//! embedding work is done, so a change is visible to the very next call.
//!
//! Document writes (upserts, deletes, feedback) are also serialised by one
//! write mutex, taken before the state lock and held across the index write and
//! the memory/bank update (and across feedback's read-modify-write), so the
//! index, the ticket memory and the FAQ bank always agree and no concurrent
//! update is lost. Reads never take it.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use indexer::{
    ticket_text, Article, DocKind, Document, Filters, Hit, Index, SearchMode, SearchRequest, Ticket,
};
use models::{EmbedKind, TextEmbedder};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

mod chat;
mod feedback;

use crate::api::{
    ArticleRecord, EngineStats, LabelDecision, LearnedPhrasing, ScoredLabel, Suggestions,
    TicketRequest, TriageResult,
};
use crate::clock::now_rfc3339;
use crate::decide::deflect::Deflector;
use crate::decide::fields::FieldExtractor;
use crate::decide::priority::PriorityRules;
use crate::decide::privacy::Masker;
use crate::decide::recommend::{
    duplicates, infer_fields, is_resolved, predict_resolution, ticket_hit,
};
use crate::engine::chat::Sessions;
use crate::error::{Error, Result};
use crate::model::classify::{Classifier, ClassifierOptions};
use crate::model::knn::VectorSet;
use crate::model::textsim::Units;
use crate::model::verifier::Verifier;
use crate::pack::{priority_rank, Pack};
use crate::store::faqbank::FaqBank;
use crate::store::feedback::FeedbackLog;
use crate::store::headcache::{training_key, HeadCache};
use crate::store::learned::{LearnPolicy, LearnedStore};
use crate::store::memory::{Example, TicketMemory};

/// Neighbours that vote on labels and are shown as evidence.
const K_NEIGHBOURS: usize = 10;
/// The category classifier's label for the pack's out-of-scope examples (not a
/// valid category id, so it never clashes with one and is never returned).
const OUT_OF_SCOPE: &str = "(out of scope)";
/// An agent-corrected example decides a request's labels outright only when it
/// is the same ticket or the same text (the same words, ignoring case, spacing
/// and punctuation), and at least this similar (a cheap first check). Similar
/// but different requests learn from it through the neighbour vote at once and
/// through the linear head after the next retrain: one correction must not
/// relabel every request that shares a product name.
pub const OVERRIDE_SIMILARITY: f32 = 0.95;
/// Alternatives listed with a decision.
const MAX_ALTERNATIVES: usize = 3;
/// Similar resolved tickets and articles suggested.
const SUGGEST_K: usize = 5;
/// Pack documents are upserted in batches of this many (progress is logged per batch).
const INGEST_BATCH: usize = 256;

/// Where the engine finds its pack and keeps its data.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The tenant pack directory (`pack.toml`, `articles.jsonl`, `tickets.jsonl`).
    pub pack_dir: PathBuf,
    /// The data directory (index, feedback log); created if missing.
    pub data_dir: PathBuf,
    /// When customers' "this helped" makes a learned phrasing answer others.
    pub learn: LearnPolicy,
}

impl EngineConfig {
    /// A configuration with the default learning policy.
    pub fn new(pack_dir: PathBuf, data_dir: PathBuf) -> EngineConfig {
        EngineConfig {
            pack_dir,
            data_dir,
            learn: LearnPolicy::default(),
        }
    }
}

/// Labels with probabilities, best first.
type LabelProbs = Vec<(String, f32)>;

/// What a label decision is made from.
struct Evidence {
    /// Calibrated probabilities, best first.
    probs: LabelProbs,
    /// A corrected neighbour `(slot, similarity)` that decides instead.
    over: Option<(usize, f32)>,
    /// Why the probabilities were scaled down, if they were.
    note: Option<String>,
    /// The out-of-scope probability before the unlike-the-examples guard
    /// scaled it, when that class ranks first.
    out_of_scope: Option<f32>,
}

/// The two trained heads of one tenant (either may be missing when there is
/// too little labelled data).
#[derive(Debug, Clone, Default)]
pub(crate) struct Heads {
    pub(crate) category: Option<Classifier>,
    pub(crate) priority: Option<Classifier>,
}

/// Everything that changes while the engine runs.
pub(crate) struct State {
    pub(crate) memory: TicketMemory,
    pub(crate) bank: FaqBank,
    /// Heads of each tenant that has labelled tickets of its own: trained on
    /// that tenant's tickets and the shared pack only, so one tenant's data
    /// never moves another's decisions.
    heads: HashMap<String, Heads>,
    /// Heads of tenants without labelled tickets of their own: the pack only.
    base: Heads,
    corrections: usize,
}

impl State {
    /// The heads that decide for `tenant`.
    pub(crate) fn heads(&self, tenant: &str) -> &Heads {
        self.heads.get(tenant).unwrap_or(&self.base)
    }
}

/// The triage engine (`Send + Sync`; share it behind an `Arc`).
pub struct Engine {
    pub(crate) pack: Pack,
    pub(crate) embedder: Arc<dyn TextEmbedder>,
    pub(crate) index: Index,
    extractor: FieldExtractor,
    /// Masks personal data in texts kept for others (learned phrasings).
    pub(crate) masker: Masker,
    pub(crate) rules: PriorityRules,
    pub(crate) deflector: Deflector,
    /// What the pack teaches every tenant, embedded like tickets.
    shared: SharedExamples,
    pub(crate) state: RwLock<State>,
    /// Serialises document writes (see the module docs): held across the index
    /// write and the memory/bank update of every upsert and delete, and across
    /// the whole read-modify-write of feedback. Lock order: this mutex first,
    /// then `state`; reads take only `state`.
    writes: Mutex<()>,
    pub(crate) log: FeedbackLog,
    /// Trained heads kept across restarts (see [`HeadCache`]).
    heads: HeadCache,
    /// Phrasings learned from chats and agents (see [`crate::store::learned`]).
    pub(crate) learned: LearnedStore,
    /// Chat sessions: their turns and the articles each turn showed.
    pub(crate) sessions: Mutex<Sessions>,
    /// Labelled changes per tenant that its heads have not learned yet.
    pending: Mutex<HashMap<String, u64>>,
}

/// Proof that the caller holds the engine's document write mutex
/// ([`Engine::lock_writes`]); functions that write documents take it so they
/// cannot be called without the lock.
pub(crate) type WriteLock<'a> = MutexGuard<'a, ()>;

/// The text a request is embedded as ([`ticket_text`], the indexer's rule for
/// stored tickets), refusing a request with neither title nor body.
fn request_text(title: &str, body: &str) -> Result<String> {
    let text = ticket_text(title, body);
    if text.is_empty() {
        return Err(Error::InvalidInput(
            "a request needs a non-empty title or body".into(),
        ));
    }
    Ok(text)
}

impl Engine {
    /// Loads the pack, opens (or creates) the index in `data_dir`, ingests the
    /// pack's tickets and articles on first start, and trains the classifiers
    /// from the labelled tickets.
    pub fn open(cfg: EngineConfig, embedder: Arc<dyn TextEmbedder>) -> Result<Engine> {
        let pack = Pack::load(&cfg.pack_dir)?;
        std::fs::create_dir_all(&cfg.data_dir).map_err(|source| Error::Io {
            path: cfg.data_dir.clone(),
            source,
        })?;
        let index = Index::open(&cfg.data_dir.join("index"), embedder.clone())?;
        let (log, records) = FeedbackLog::open(&cfg.data_dir.join("feedback.jsonl"))?;
        // Refuses another pack's data dir; re-ingests the pack when its documents changed.
        crate::pack::sync::sync_pack(&cfg.data_dir, &pack, &index, &records, |p| {
            ingest_pack(&index, p)
        })?;
        let verifier_path = cfg.pack_dir.join("verifier.json");
        let verifier = if verifier_path.exists() {
            Verifier::load(&verifier_path)?
        } else {
            Verifier::builtin()?
        };
        let corrected: HashSet<(String, String)> = records
            .iter()
            .map(|r| (r.tenant.clone(), r.ticket_id.clone()))
            .collect();

        let dim = embedder.dim();
        let mut memory = TicketMemory::new(dim);
        for (doc, v) in index.all(DocKind::Ticket, None)? {
            if let Document::Ticket(t) = doc {
                let c = corrected.contains(&(t.tenant.clone(), t.id.clone()));
                memory.upsert(t, &v, Some(c))?;
            }
        }
        let learned = LearnedStore::open(&cfg.data_dir.join("learned.jsonl"), cfg.learn)?;
        let mut bank = FaqBank::new(dim);
        let articles: Vec<(Article, Vec<String>)> = index
            .all(DocKind::Article, None)?
            .into_iter()
            .filter_map(|(d, _)| match d {
                Document::Article(a) => {
                    let extra = learned.active_texts(&a.tenant, &a.id);
                    Some((a, extra))
                }
                Document::Ticket(_) => None,
            })
            .collect();
        let phrasings: Vec<&str> = articles
            .iter()
            .flat_map(|(a, extra)| FaqBank::texts(a, extra))
            .collect();
        let mut vectors = embedder.embed(&phrasings, EmbedKind::Query)?.into_iter();
        for (a, extra) in &articles {
            let n = FaqBank::texts(a, extra).len();
            let vs: Vec<Vec<f32>> = vectors.by_ref().take(n).collect();
            bank.upsert_with_learned(a.clone(), extra, &vs)?;
        }
        let shared = SharedExamples::embed(&pack, &memory, embedder.as_ref())?;
        let heads = HeadCache::new(&cfg.data_dir.join("heads"));
        let (tenant_heads, base) = train_all(&pack, &memory, &shared, &heads)?;
        tracing::info!(
            tickets = memory.len(),
            articles = bank.len(),
            corrections = records.len(),
            tenants_with_heads = tenant_heads.len(),
            "engine ready"
        );
        Ok(Engine {
            extractor: FieldExtractor::new(&pack.fields)?,
            masker: Masker::new(&pack.fields)?,
            rules: PriorityRules::new(&pack),
            deflector: Deflector::new(verifier),
            shared,
            pack,
            embedder,
            index,
            state: RwLock::new(State {
                memory,
                bank,
                heads: tenant_heads,
                base,
                corrections: records.len(),
            }),
            writes: Mutex::new(()),
            log,
            heads,
            learned,
            sessions: Mutex::new(Sessions::default()),
            pending: Mutex::new(HashMap::new()),
        })
    }

    /// The loaded pack.
    pub fn pack(&self) -> &Pack {
        &self.pack
    }

    pub(crate) fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes the document write mutex (see the module docs); take it before
    /// [`Engine::read`]/[`Engine::write`], never while holding those. A writer
    /// that panicked leaves nothing half-locked, so a poisoned mutex is reused.
    pub(crate) fn lock_writes(&self) -> WriteLock<'_> {
        self.writes.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn embed_one(&self, text: &str, kind: EmbedKind) -> Result<Vec<f32>> {
        self.embedder
            .embed(&[text], kind)?
            .into_iter()
            .next()
            .ok_or_else(|| Error::Numeric("the embedder returned no vector".into()))
    }

    /// Category, priority, queue, fields and duplicates for a new request.
    pub fn triage(&self, req: &TicketRequest) -> Result<TriageResult> {
        let text = request_text(&req.title, &req.body)?;
        let v = self.embed_one(&text, EmbedKind::Passage)?;
        let state = self.read();
        let mut result = self.decide_all(&state, &v, &text, &req.tenant, None)?;
        let th = &self.pack.thresholds;
        result.duplicates = duplicates(
            &state.memory,
            &v,
            &text,
            &req.tenant,
            &req.customer_id,
            "",
            th.duplicate_similarity,
            th.duplicate_window_days,
            OffsetDateTime::now_utc(),
        )?;
        Ok(result)
    }

    /// Category, priority, queue and fields of a text, without the duplicate
    /// lookup (the chat's ticket drafts).
    pub(crate) fn classify_text(
        &self,
        tenant: &str,
        title: &str,
        body: &str,
    ) -> Result<TriageResult> {
        let text = request_text(title, body)?;
        let v = self.embed_one(&text, EmbedKind::Passage)?;
        let state = self.read();
        self.decide_all(&state, &v, &text, tenant, None)
    }

    /// Reclassifies a stored or new ticket (no duplicate lookup). The ticket's own
    /// stored copy does not vote for itself unless an agent corrected it.
    pub fn classify_ticket(&self, t: &Ticket) -> Result<TriageResult> {
        let text = request_text(&t.title, &t.body)?;
        let stored = {
            let state = self.read();
            state
                .memory
                .get(&t.tenant, &t.id)
                .filter(|e| ticket_text(&e.ticket.title, &e.ticket.body) == text)
                .and_then(|_| state.memory.vector(&t.tenant, &t.id).map(<[f32]>::to_vec))
        };
        let v = match stored {
            Some(v) => v,
            None => self.embed_one(&text, EmbedKind::Passage)?,
        };
        let state = self.read();
        self.decide_all(&state, &v, &text, &t.tenant, Some(&t.id))
    }

    /// The label decisions, fields and evidence for one embedded text.
    fn decide_all(
        &self,
        state: &State,
        v: &[f32],
        text: &str,
        tenant: &str,
        self_id: Option<&str>,
    ) -> Result<TriageResult> {
        let threshold = self.pack.thresholds.classify_abstain;
        let usable = |e: &Example| {
            e.ticket.tenant == tenant && (self_id != Some(e.ticket.id.as_str()) || e.corrected)
        };
        let neighbours = state.memory.nearest(v, K_NEIGHBOURS, usable)?;
        let labelled = |f: fn(&Ticket) -> &str| -> Vec<(usize, f32)> {
            neighbours
                .iter()
                .copied()
                .filter(|(i, _)| !f(&state.memory.item(*i).ticket).is_empty())
                .collect()
        };
        let cat_nb = labelled(|t| t.category.as_str());
        let pri_nb = labelled(|t| t.priority.as_str());
        // Cut into units only when a corrected neighbour is close enough to ask.
        let units = std::cell::OnceCell::new();
        let decides = |i: usize| {
            let e = state.memory.item(i);
            e.corrected
                && (self_id == Some(e.ticket.id.as_str())
                    || Units::new(&ticket_text(&e.ticket.title, &e.ticket.body)).units
                        == *units.get_or_init(|| Units::new(text).units))
        };

        let heads = state.heads(tenant);
        let cat = self.label_probs(
            state,
            heads.category.as_ref(),
            &self.shared.category_pools(tenant),
            v,
            &cat_nb,
            &decides,
            |t| &t.category,
        )?;
        let category = self.decision(&state.memory, &cat, &cat_nb, threshold, |t| &t.category);
        let queue = self.queue_decision(&state.memory, &cat.probs, cat.over, threshold);
        let pri = self.label_probs(
            state,
            heads.priority.as_ref(),
            &self.shared.priority_pools(tenant),
            v,
            &pri_nb,
            &decides,
            |t| &t.priority,
        )?;
        let mut priority = self.decision(&state.memory, &pri, &pri_nb, threshold, |t| &t.priority);
        if priority.label.is_none() {
            // No priority model: fall back to the category's default priority, if any.
            if let Some(p) = category
                .label
                .as_deref()
                .and_then(|c| self.pack.category(c))
                .and_then(|c| c.default_priority.clone())
            {
                priority
                    .reasons
                    .push(format!("category default priority {p}"));
                priority.label = Some(p);
                priority.confidence = priority.confidence.max(category.confidence);
                priority.abstain = priority.confidence < threshold;
            }
        }
        let priority = self.rules.apply(text, priority);

        let mut fields = self.extractor.extract(text);
        let inferred = infer_fields(&state.memory, &neighbours, &self.pack.fields, &fields);
        fields.extend(inferred);
        let hits = neighbours
            .iter()
            .enumerate()
            .map(|(r, (i, s))| ticket_hit(&state.memory.item(*i).ticket, *s, r + 1))
            .collect();
        Ok(TriageResult {
            needs_human: category.abstain || priority.abstain,
            category,
            priority,
            queue,
            fields,
            duplicates: Vec::new(),
            neighbours: hits,
        })
    }

    /// Label probabilities (best first) from the classifier and neighbours (the
    /// shared pack examples in `pools` among them, as they were in training),
    /// the corrected neighbour that overrides them (the first one `decides`
    /// accepts, see [`OVERRIDE_SIMILARITY`]), and a note when the
    /// out-of-scope guard scaled them down or the request looks out of scope.
    #[allow(clippy::too_many_arguments)]
    fn label_probs(
        &self,
        state: &State,
        clf: Option<&Classifier>,
        pools: &[Pool<'_>],
        v: &[f32],
        neighbours: &[(usize, f32)],
        decides: &dyn Fn(usize) -> bool,
        label: fn(&Ticket) -> &String,
    ) -> Result<Evidence> {
        let over = neighbours
            .iter()
            .copied()
            .find(|&(i, s)| s >= OVERRIDE_SIMILARITY && decides(i));
        let mut note = None;
        let mut out_of_scope = None;
        let mut raw_out_of_scope = None;
        let mut probs: LabelProbs = match clf {
            Some(clf) => {
                let mut classed: Vec<(usize, f32)> = neighbours
                    .iter()
                    .filter_map(|(i, s)| {
                        clf.class_of(label(&state.memory.item(*i).ticket))
                            .map(|c| (c, *s))
                    })
                    .collect();
                // The pack's shared examples are neighbours too, as they were in training.
                let mut pooled = false;
                for pool in pools.iter().filter(|p| !p.labels.is_empty()) {
                    let near = pool
                        .vectors
                        .top_k(v, clf.k(), |i| !pool.labels[i].is_empty())?;
                    classed.extend(
                        near.into_iter()
                            .filter_map(|(i, s)| clf.class_of(&pool.labels[i]).map(|c| (c, s))),
                    );
                    pooled = true;
                }
                if pooled {
                    classed.sort_by(|a, b| b.1.total_cmp(&a.1));
                    classed.truncate(clf.k());
                }
                let pred = clf.predict(v, &classed)?;
                raw_out_of_scope = clf
                    .class_of(OUT_OF_SCOPE)
                    .and_then(|c| pred.probs.get(c).copied());
                if pred.guard < 1.0 {
                    note = Some(format!(
                        "unlike the labelled examples (in-domain score {:.3}): confidence × {:.2}",
                        pred.in_domain, pred.guard
                    ));
                }
                clf.labels()
                    .iter()
                    .cloned()
                    .zip(pred.probs.iter().map(|p| p * pred.guard))
                    .collect()
            }
            None => {
                // No model yet: the neighbours' similarity-weighted vote.
                let mut votes: HashMap<String, f32> = HashMap::new();
                let best = neighbours.first().map(|n| n.1).unwrap_or(0.0);
                for (i, s) in neighbours {
                    *votes
                        .entry(label(&state.memory.item(*i).ticket).clone())
                        .or_default() += ((s - best) / 0.05).exp();
                }
                let total: f32 = votes.values().sum();
                votes
                    .into_iter()
                    .map(|(l, w)| (l, w / total.max(1e-9)))
                    .collect()
            }
        };
        probs.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        if let Some(pos) = probs.iter().position(|(l, _)| l == OUT_OF_SCOPE) {
            let (_, p) = probs.remove(pos);
            if pos == 0 {
                note = Some(format!(
                    "looks like a request this service does not handle (probability {p:.2})"
                ));
                out_of_scope = Some(raw_out_of_scope.unwrap_or(p));
            }
        }
        Ok(Evidence {
            probs,
            over,
            note,
            out_of_scope,
        })
    }

    /// Turns probabilities (or an override) into a [`LabelDecision`] with reasons.
    fn decision(
        &self,
        memory: &TicketMemory,
        evidence: &Evidence,
        neighbours: &[(usize, f32)],
        threshold: f32,
        label: fn(&Ticket) -> &String,
    ) -> LabelDecision {
        let (probs, over) = (&evidence.probs, evidence.over);
        let mut alternatives: Vec<ScoredLabel> = probs
            .iter()
            .take(MAX_ALTERNATIVES)
            .map(|(l, p)| ScoredLabel {
                label: l.clone(),
                probability: *p,
            })
            .collect();
        let mut reasons = Vec::new();
        if let Some((l, _)) = probs.first() {
            let agree = neighbours
                .iter()
                .filter(|(i, _)| label(&memory.item(*i).ticket) == l)
                .count();
            reasons.push(format!(
                "neighbours: {agree}/{} labelled {l}",
                neighbours.len()
            ));
            if let Some((i, s)) = neighbours.first() {
                let t = &memory.item(*i).ticket;
                reasons.push(format!(
                    "nearest: {} ({}, similarity {s:.2})",
                    t.id,
                    label(t)
                ));
            }
        }
        reasons.extend(evidence.note.clone());
        if let Some((i, _)) = over {
            let t = &memory.item(i).ticket;
            let l = label(t).clone();
            // An agent labelled this very request: certain, whatever the model says.
            let confidence = 1.0;
            reasons.insert(
                0,
                format!(
                    "agent correction of this same request ({}) decides: {l}",
                    t.id
                ),
            );
            alternatives.retain(|a| a.label != l);
            alternatives.insert(
                0,
                ScoredLabel {
                    label: l.clone(),
                    probability: confidence,
                },
            );
            alternatives.truncate(MAX_ALTERNATIVES);
            return LabelDecision {
                label: Some(l),
                confidence,
                abstain: false,
                alternatives,
                reasons,
            };
        }
        let Some((top, p)) = probs.first().cloned() else {
            return LabelDecision {
                label: None,
                confidence: 0.0,
                abstain: true,
                alternatives,
                reasons: vec!["no labelled examples to learn from".into()],
            };
        };
        let abstain = p < threshold;
        if abstain {
            reasons.insert(
                0,
                format!("confidence {p:.2} below threshold {threshold:.2}: needs a human"),
            );
        } else {
            reasons.insert(0, format!("calibrated probability {p:.2}"));
        }
        LabelDecision {
            label: (!abstain).then_some(top),
            confidence: p,
            abstain,
            alternatives,
            reasons,
        }
    }

    /// Queue probabilities are the category probabilities summed per queue.
    fn queue_decision(
        &self,
        memory: &TicketMemory,
        cat_probs: &[(String, f32)],
        over: Option<(usize, f32)>,
        threshold: f32,
    ) -> LabelDecision {
        if let Some((i, _)) = over {
            let t = &memory.item(i).ticket;
            let q = if t.queue.is_empty() {
                self.pack
                    .queue_for(&t.category)
                    .unwrap_or_default()
                    .to_string()
            } else {
                t.queue.clone()
            };
            if !q.is_empty() {
                return LabelDecision {
                    label: Some(q.clone()),
                    confidence: 1.0,
                    abstain: false,
                    alternatives: vec![ScoredLabel {
                        label: q,
                        probability: 1.0,
                    }],
                    reasons: vec![format!(
                        "agent correction of this same request ({}) decides",
                        t.id
                    )],
                };
            }
        }
        let mut by_queue: HashMap<String, f32> = HashMap::new();
        for (c, p) in cat_probs {
            if let Some(q) = self.pack.queue_for(c) {
                *by_queue.entry(q.to_string()).or_default() += p;
            }
        }
        let mut probs: Vec<(String, f32)> = by_queue.into_iter().collect();
        probs.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let alternatives: Vec<ScoredLabel> = probs
            .iter()
            .take(MAX_ALTERNATIVES)
            .map(|(l, p)| ScoredLabel {
                label: l.clone(),
                probability: *p,
            })
            .collect();
        match probs.first() {
            Some((q, p)) => LabelDecision {
                label: (*p >= threshold).then(|| q.clone()),
                confidence: *p,
                abstain: *p < threshold,
                alternatives,
                reasons: vec![format!(
                    "sum of category probabilities routed to {q}: {p:.2}"
                )],
            },
            None => LabelDecision {
                label: None,
                confidence: 0.0,
                abstain: true,
                alternatives,
                reasons: vec!["no category maps to a queue".into()],
            },
        }
    }

    /// The out-of-scope probability of `text`, when the tenant's category
    /// model ranks that class first (`None` otherwise, or without a model).
    pub(crate) fn out_of_scope(&self, text: &str, tenant: &str) -> Result<Option<f32>> {
        if self.read().heads(tenant).category.is_none() {
            return Ok(None);
        }
        let v = self.embed_one(text, EmbedKind::Passage)?;
        let state = self.read();
        let neighbours = state.memory.nearest(&v, K_NEIGHBOURS, |e| {
            e.ticket.tenant == tenant && !e.ticket.category.is_empty()
        })?;
        let evidence = self.label_probs(
            &state,
            state.heads(tenant).category.as_ref(),
            &self.shared.category_pools(tenant),
            &v,
            &neighbours,
            &|_| false,
            |t| &t.category,
        )?;
        Ok(evidence.out_of_scope)
    }

    /// Similar resolved tickets, articles, duplicates and a predicted resolution.
    pub fn suggest(&self, req: &TicketRequest) -> Result<Suggestions> {
        let text = request_text(&req.title, &req.body)?;
        let v = self.embed_one(&text, EmbedKind::Passage)?;
        let articles = self.index.search(&SearchRequest {
            text: text.clone(),
            mode: SearchMode::Hybrid,
            k: SUGGEST_K,
            filters: Filters {
                tenant: Some(req.tenant.clone()),
                kind: Some(DocKind::Article),
                ..Filters::default()
            },
            ..SearchRequest::default()
        })?;
        let state = self.read();
        let resolved = state.memory.nearest(&v, K_NEIGHBOURS, |e| {
            e.ticket.tenant == req.tenant && is_resolved(&e.ticket)
        })?;
        let th = &self.pack.thresholds;
        Ok(Suggestions {
            similar_tickets: resolved
                .iter()
                .take(SUGGEST_K)
                .enumerate()
                .map(|(r, (i, s))| ticket_hit(&state.memory.item(*i).ticket, *s, r + 1))
                .collect(),
            articles,
            duplicates: duplicates(
                &state.memory,
                &v,
                &text,
                &req.tenant,
                &req.customer_id,
                "",
                th.duplicate_similarity,
                th.duplicate_window_days,
                OffsetDateTime::now_utc(),
            )?,
            predicted_resolution: predict_resolution(&state.memory, &resolved),
        })
    }

    /// Hybrid search over the index (filters, explanations).
    pub fn search(&self, req: &SearchRequest) -> Result<Vec<Hit>> {
        Ok(self.index.search(req)?)
    }

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
    pub(crate) fn store_ticket(
        &self,
        _held: &WriteLock<'_>,
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
        self.write().memory.upsert(t, &v, corrected)?;
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
    pub(crate) fn forget_ticket(
        &self,
        _held: &WriteLock<'_>,
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
        if labelled {
            self.note_change(tenant);
        }
        Ok(existed || in_memory)
    }

    /// Counts one labelled change of `tenant`.
    fn note_change(&self, tenant: &str) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        *pending.entry(tenant.to_string()).or_default() += 1;
    }

    /// Labelled changes (ticket writes and deletes that touch labels,
    /// corrections) per tenant that the tenant's heads have not learned yet.
    pub fn pending_changes(&self) -> Vec<(String, u64)> {
        let pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<(String, u64)> = pending
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(t, n)| (t.clone(), *n))
            .collect();
        out.sort();
        out
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
    pub(crate) fn embed_phrasings(&self, a: &Article, learned: &[String]) -> Result<Vec<Vec<f32>>> {
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
    pub(crate) fn rebank(&self, held: &WriteLock<'_>, tenant: &str, article: &str) -> Result<()> {
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
    pub(crate) fn get_article(&self, tenant: &str, id: &str) -> Option<Article> {
        self.read().bank.get(tenant, id).cloned()
    }

    /// Counts a stored correction.
    pub(crate) fn count_correction(&self) {
        self.write().corrections += 1;
    }

    /// Retrains `tenant`'s classifiers from its labelled tickets now in memory
    /// (corrections included) and the shared pack, and nothing of any other
    /// tenant; seconds for thousands of tickets. Returns the labelled examples
    /// the category head learned from.
    pub fn retrain(&self, tenant: &str) -> Result<usize> {
        let snapshot = self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(tenant)
            .copied()
            .unwrap_or(0);
        // Only this tenant's rows are copied out of the memory; training runs
        // without the state lock.
        let owned = {
            let state = self.read();
            let mut memory = TicketMemory::new(state.memory.dim());
            for (e, v) in state
                .memory
                .iter()
                .filter(|(e, _)| e.ticket.tenant == tenant)
            {
                memory.upsert(e.ticket.clone(), v, Some(e.corrected))?;
            }
            memory
        };
        let (heads, own, _) = train_owner(
            &self.pack,
            &owned,
            &self.shared,
            &self.heads,
            Owner::Tenant(tenant),
        )?;
        let examples = own[0];
        {
            let mut state = self.write();
            if own.iter().sum::<usize>() > 0 {
                state.heads.insert(tenant.to_string(), heads);
            } else {
                state.heads.remove(tenant);
            }
        }
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = pending.get_mut(tenant) {
            *n = n.saturating_sub(snapshot);
        }
        Ok(examples)
    }

    /// Counts for health and metrics: of one tenant, or (`None`) of all.
    pub fn stats(&self, tenant: Option<&str>) -> EngineStats {
        let state = self.read();
        let leaves: HashSet<String> = self
            .pack
            .leaf_categories()
            .iter()
            .map(|c| c.id.clone())
            .collect();
        let mine = |t: &str| tenant.is_none_or(|x| x == t);
        let (learned_candidates, learned_active) = self.learned.counts(tenant);
        EngineStats {
            tickets: state
                .memory
                .iter()
                .filter(|(e, _)| mine(&e.ticket.tenant))
                .count(),
            articles: state.bank.count(tenant),
            labelled_examples: state
                .memory
                .iter()
                .filter(|(e, _)| mine(&e.ticket.tenant) && leaves.contains(&e.ticket.category))
                .count(),
            categories: leaves.len(),
            corrections: match tenant {
                None => state.corrections,
                Some(t) => state
                    .memory
                    .iter()
                    .filter(|(e, _)| e.corrected && e.ticket.tenant == t)
                    .count(),
            },
            learned_candidates,
            learned_active,
            model: self.embedder.name().to_string(),
            pack: self.pack.name.clone(),
        }
    }
}

/// Whether a ticket carries a label a head learns from.
fn is_labelled(t: &Ticket) -> bool {
    !t.category.is_empty() || !t.priority.is_empty()
}

/// Upserts the pack's tickets and articles into the index: all of them on first
/// start, the new or changed ones when [`crate::pack::sync::sync_pack`] finds the
/// pack edited. Runs inside [`Engine::open`], before any request can write.
fn ingest_pack(index: &Index, pack: &Pack) -> Result<()> {
    tracing::info!(
        tickets = pack.tickets.len(),
        articles = pack.articles.len(),
        "ingesting {} tickets and {} articles of pack {}",
        pack.tickets.len(),
        pack.articles.len(),
        pack.name
    );
    for (n, chunk) in pack.tickets.chunks(INGEST_BATCH).enumerate() {
        let mut batch = chunk.to_vec();
        for t in batch.iter_mut().filter(|t| t.created_at.is_empty()) {
            t.created_at = now_rfc3339();
        }
        index.upsert_tickets(batch)?;
        tracing::info!(
            done = (n * INGEST_BATCH + chunk.len()),
            total = pack.tickets.len(),
            "ingesting tickets"
        );
    }
    for chunk in pack.articles.chunks(INGEST_BATCH) {
        index.upsert_articles(chunk.to_vec())?;
    }
    Ok(())
}

/// Labelled vectors the vote consults besides the tenant's own tickets: one
/// label per vector (empty = no label for this head).
pub(crate) struct Pool<'a> {
    vectors: &'a VectorSet,
    labels: &'a [String],
}

/// What the pack teaches every tenant besides the tenant's own tickets.
///
/// * Each article's phrasings under the article's category, and the
///   out-of-scope requests under [`OUT_OF_SCOPE`]: requests are often one
///   short sentence, tickets a title and a body, and without the phrasings
///   "short" would look like "out of scope". Every tenant's category head
///   learns them, the default tenant's too.
/// * The pack's tickets (the default tenant's, `tenant = ""`) with the pack's
///   labels: the base every *other* tenant learns from besides its own
///   tickets. The default tenant holds them as its own tickets already (with
///   its agents' corrections); no other tenant sees those corrections.
struct SharedExamples {
    phrasings: VectorSet,
    phrasing_labels: Vec<String>,
    tickets: VectorSet,
    ticket_ids: Vec<String>,
    ticket_category: Vec<String>,
    ticket_priority: Vec<String>,
}

impl SharedExamples {
    /// Embeds the pack's article phrasings (leaf categories only) and
    /// out-of-scope texts; takes the pack tickets' vectors from `memory`
    /// where the stored copy has the pack's text (embeds them otherwise).
    fn embed(
        pack: &Pack,
        memory: &TicketMemory,
        embedder: &dyn TextEmbedder,
    ) -> Result<SharedExamples> {
        let leaves: HashSet<&str> = pack
            .leaf_categories()
            .iter()
            .map(|c| c.id.as_str())
            .collect();
        let mut texts: Vec<&str> = Vec::new();
        let mut phrasing_labels: Vec<String> = Vec::new();
        for a in pack
            .articles
            .iter()
            .filter(|a| leaves.contains(a.category.as_str()))
        {
            for p in FaqBank::phrasings(a) {
                texts.push(p);
                phrasing_labels.push(a.category.clone());
            }
        }
        for t in &pack.out_of_scope {
            texts.push(t);
            phrasing_labels.push(OUT_OF_SCOPE.to_string());
        }
        let mut phrasings = VectorSet::new(embedder.dim());
        for v in embedder.embed(&texts, EmbedKind::Passage)? {
            phrasings.push(&v)?;
        }

        let mut pack_tickets: Vec<&Ticket> = pack
            .tickets
            .iter()
            .filter(|t| t.tenant.is_empty() && is_labelled(t))
            .collect();
        pack_tickets.sort_by(|a, b| a.id.cmp(&b.id));
        let text_of = |t: &Ticket| ticket_text(&t.title, &t.body);
        let stored: Vec<Option<Vec<f32>>> = pack_tickets
            .iter()
            .map(|t| {
                memory
                    .get("", &t.id)
                    .filter(|e| text_of(&e.ticket) == text_of(t))
                    .and_then(|_| memory.vector("", &t.id).map(<[f32]>::to_vec))
            })
            .collect();
        let missing: Vec<String> = pack_tickets
            .iter()
            .zip(&stored)
            .filter(|(_, v)| v.is_none())
            .map(|(t, _)| text_of(t))
            .collect();
        let missing_refs: Vec<&str> = missing.iter().map(String::as_str).collect();
        let mut fresh = embedder
            .embed(&missing_refs, EmbedKind::Passage)?
            .into_iter();
        let mut tickets = VectorSet::new(embedder.dim());
        for v in stored {
            let v = v.or_else(|| fresh.next()).ok_or_else(|| {
                Error::Numeric("the embedder returned fewer vectors than texts".into())
            })?;
            tickets.push(&v)?;
        }
        let category = |t: &&Ticket| {
            if leaves.contains(t.category.as_str()) {
                t.category.clone()
            } else {
                String::new()
            }
        };
        let priority = |t: &&Ticket| {
            if priority_rank(&t.priority).is_some() {
                t.priority.clone()
            } else {
                String::new()
            }
        };
        Ok(SharedExamples {
            phrasings,
            phrasing_labels,
            ticket_category: pack_tickets.iter().map(category).collect(),
            ticket_priority: pack_tickets.iter().map(priority).collect(),
            ticket_ids: pack_tickets.iter().map(|t| t.id.clone()).collect(),
            tickets,
        })
    }

    /// Whether `tenant` learns from the pack's tickets as shared examples (every
    /// tenant but the default one, which holds them as its own).
    fn shares_tickets(tenant: &str) -> bool {
        !tenant.is_empty()
    }

    /// The pools the category vote of `tenant` consults.
    fn category_pools(&self, tenant: &str) -> Vec<Pool<'_>> {
        let mut pools = vec![Pool {
            vectors: &self.phrasings,
            labels: &self.phrasing_labels,
        }];
        if Self::shares_tickets(tenant) {
            pools.push(Pool {
                vectors: &self.tickets,
                labels: &self.ticket_category,
            });
        }
        pools
    }

    /// The pools the priority vote of `tenant` consults.
    fn priority_pools(&self, tenant: &str) -> Vec<Pool<'_>> {
        if Self::shares_tickets(tenant) {
            vec![Pool {
                vectors: &self.tickets,
                labels: &self.ticket_priority,
            }]
        } else {
            Vec::new()
        }
    }
}

/// Whose heads are trained: one tenant's (its tickets plus the shared pack),
/// or the pack's own (for tenants without labelled tickets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner<'a> {
    Tenant(&'a str),
    Pack,
}

/// Which head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Head {
    Category,
    Priority,
}

/// One head's training rows: vectors row-major, one label per row, and how
/// many rows are the owner's own tickets.
struct TrainingSet {
    x: Vec<f32>,
    y: Vec<String>,
    own: usize,
    out_of_scope: bool,
}

/// The rows `owner`'s `head` learns from: the owner's labelled tickets in
/// (tenant, id) order, so the same tickets train the same head (and find its
/// stored copy) whatever order the index returned them in; then the pack's
/// tickets (every owner but the default tenant); then, for the category head,
/// the pack's phrasings and out-of-scope examples.
fn training_set(
    pack: &Pack,
    memory: &TicketMemory,
    shared: &SharedExamples,
    owner: Owner<'_>,
    head: Head,
) -> TrainingSet {
    let leaves: HashSet<&str> = pack
        .leaf_categories()
        .iter()
        .map(|c| c.id.as_str())
        .collect();
    let label = |t: &Ticket| -> Option<String> {
        match head {
            Head::Category => leaves
                .contains(t.category.as_str())
                .then(|| t.category.clone()),
            Head::Priority => priority_rank(&t.priority).map(|_| t.priority.clone()),
        }
    };
    let mut rows: Vec<(&Ticket, &[f32], String)> = match owner {
        Owner::Tenant(tenant) => memory
            .iter()
            .filter(|(e, _)| e.ticket.tenant == tenant)
            .filter_map(|(e, v)| label(&e.ticket).map(|l| (&e.ticket, v, l)))
            .collect(),
        Owner::Pack => Vec::new(),
    };
    rows.sort_by(|a, b| (&a.0.tenant, &a.0.id).cmp(&(&b.0.tenant, &b.0.id)));
    let own = rows.len();
    let mut x = Vec::with_capacity((own + shared.ticket_ids.len()) * shared.tickets.dim());
    let mut y = Vec::with_capacity(own + shared.ticket_ids.len());
    for (_, v, l) in rows {
        x.extend_from_slice(v);
        y.push(l);
    }
    let shares = match owner {
        Owner::Tenant(t) => SharedExamples::shares_tickets(t),
        Owner::Pack => true,
    };
    if shares {
        let labels = match head {
            Head::Category => &shared.ticket_category,
            Head::Priority => &shared.ticket_priority,
        };
        for (i, l) in labels.iter().enumerate() {
            if let (false, Some(v)) = (l.is_empty(), shared.tickets.get(i)) {
                x.extend_from_slice(v);
                y.push(l.clone());
            }
        }
    }
    let mut out_of_scope = false;
    if head == Head::Category && !y.is_empty() {
        x.extend_from_slice(shared.phrasings.as_flat());
        y.extend(shared.phrasing_labels.iter().cloned());
        out_of_scope = y.iter().any(|l| l == OUT_OF_SCOPE);
    }
    TrainingSet {
        x,
        y,
        own,
        out_of_scope,
    }
}

/// The file name a head is kept under in the [`HeadCache`]: the default
/// tenant's heads keep the names they always had; other tenants' names carry
/// a digest of the tenant (any string is a valid tenant).
fn head_name(owner: Owner<'_>, head: Head) -> String {
    let head = match head {
        Head::Category => "category",
        Head::Priority => "priority",
    };
    match owner {
        Owner::Tenant("") => head.to_string(),
        Owner::Tenant(t) => {
            let digest = <sha2::Sha256 as sha2::Digest>::digest(t.as_bytes());
            let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
            format!("tenant-{hex}-{head}")
        }
        Owner::Pack => format!("pack-{head}"),
    }
}

/// The options and digest a head of `set` is trained with.
fn head_options(set: &TrainingSet) -> (ClassifierOptions, String) {
    let mut opts = ClassifierOptions::for_size(set.y.len());
    if set.out_of_scope {
        opts.out_of_scope_label = Some(OUT_OF_SCOPE.into());
    }
    let key = training_key(&set.x, &set.y, &opts);
    (opts, key)
}

/// Trains (or loads from `cache`, when it was trained on exactly this data)
/// one head; `None` when there is too little labelled data. Also returns the
/// digest of the training data.
fn train_head(
    name: &str,
    set: TrainingSet,
    cache: &HeadCache,
) -> Result<(Option<Classifier>, String)> {
    let (opts, key) = head_options(&set);
    let TrainingSet { x, y, .. } = set;
    let distinct: HashSet<&String> = y.iter().collect();
    if distinct.len() < 2 || y.len() < 4 {
        tracing::debug!(
            head = name,
            examples = y.len(),
            "too few labelled tickets to train a classifier; using neighbours only"
        );
        return Ok((None, key));
    }
    let dim = x.len() / y.len();
    if let Some(clf) = cache.load(name, &key) {
        tracing::info!(
            head = name,
            examples = y.len(),
            "loaded the stored head trained on the same data"
        );
        return Ok((Some(clf), key));
    }
    let clf = Classifier::train(&x, dim, &y, &opts)?;
    cache.store(name, &key, &clf);
    Ok((Some(clf), key))
}

/// Trains both heads of `owner`; returns them, how many of their rows are the
/// owner's own tickets (category, priority) and their data digests.
fn train_owner(
    pack: &Pack,
    memory: &TicketMemory,
    shared: &SharedExamples,
    cache: &HeadCache,
    owner: Owner<'_>,
) -> Result<(Heads, [usize; 2], [String; 2])> {
    let cat = training_set(pack, memory, shared, owner, Head::Category);
    let pri = training_set(pack, memory, shared, owner, Head::Priority);
    let own = [cat.own, pri.own];
    let (category, cat_key) = train_head(&head_name(owner, Head::Category), cat, cache)?;
    let (priority, pri_key) = train_head(&head_name(owner, Head::Priority), pri, cache)?;
    Ok((Heads { category, priority }, own, [cat_key, pri_key]))
}

/// Trains the heads of every tenant with labelled tickets of its own, and the
/// pack's heads for the others (the default tenant's, when its training data
/// is exactly the pack's: the same data trains the same heads).
fn train_all(
    pack: &Pack,
    memory: &TicketMemory,
    shared: &SharedExamples,
    cache: &HeadCache,
) -> Result<(HashMap<String, Heads>, Heads)> {
    let mut tenants: Vec<&str> = memory
        .iter()
        .filter(|(e, _)| is_labelled(&e.ticket))
        .map(|(e, _)| e.ticket.tenant.as_str())
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    tenants.sort_unstable();
    let mut heads = HashMap::new();
    let mut default_keys = None;
    for tenant in tenants {
        let (trained, _, keys) = train_owner(pack, memory, shared, cache, Owner::Tenant(tenant))?;
        if tenant.is_empty() {
            default_keys = Some(keys);
        }
        heads.insert(tenant.to_string(), trained);
    }
    let pack_keys = [Head::Category, Head::Priority]
        .map(|h| head_options(&training_set(pack, memory, shared, Owner::Pack, h)).1);
    let base = match (heads.get(""), default_keys) {
        (Some(default), Some(keys)) if keys == pack_keys => default.clone(),
        _ => train_owner(pack, memory, shared, cache, Owner::Pack)?.0,
    };
    Ok((heads, base))
}
