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

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use indexer::{Article, DocKind, Document, Filters, Hit, Index, SearchMode, SearchRequest, Ticket};
use models::{EmbedKind, TextEmbedder};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::api::{
    ArticleMatch, ChatMessage, DeflectAction, DeflectResult, EngineStats, LabelDecision,
    ScoredLabel, Suggestions, TicketDraft, TicketRequest, TriageResult,
};
use crate::classify::{Classifier, ClassifierOptions};
use crate::deflect::{decide, Deflector, ScoredArticle};
use crate::error::{Error, Result};
use crate::faqbank::FaqBank;
use crate::feedback::FeedbackLog;
use crate::fields::FieldExtractor;
use crate::headcache::{training_key, HeadCache};
use crate::knn::VectorSet;
use crate::memory::{Example, TicketMemory};
use crate::pack::{priority_rank, Pack};
use crate::priority::PriorityRules;
use crate::recommend::{duplicates, infer_fields, is_resolved, predict_resolution, ticket_hit};
use crate::textsim::Units;
use crate::verifier::Verifier;

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
/// Conversations remembered for chat context, and turns kept per conversation.
const MAX_SESSIONS: usize = 10_000;
const MAX_TURNS: usize = 4;
/// Pack documents are upserted in batches of this many (progress is logged per batch).
const INGEST_BATCH: usize = 256;

/// Where the engine finds its pack and keeps its data.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The tenant pack directory (`pack.toml`, `articles.jsonl`, `tickets.jsonl`).
    pub pack_dir: PathBuf,
    /// The data directory (index, feedback log); created if missing.
    pub data_dir: PathBuf,
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
    /// The out-of-scope probability, when that class ranks first.
    out_of_scope: Option<f32>,
}

/// Everything that changes while the engine runs.
struct State {
    memory: TicketMemory,
    bank: FaqBank,
    category: Option<Classifier>,
    priority: Option<Classifier>,
    corrections: usize,
}

/// Recent chat turns per conversation, oldest conversations evicted first.
#[derive(Default)]
struct Sessions {
    turns: HashMap<String, Vec<String>>,
    order: VecDeque<String>,
}

impl Sessions {
    fn history(&self, key: &str) -> Vec<String> {
        self.turns.get(key).cloned().unwrap_or_default()
    }

    fn push(&mut self, key: String, turn: &str) {
        if !self.turns.contains_key(&key) {
            self.order.push_back(key.clone());
            if self.order.len() > MAX_SESSIONS {
                if let Some(old) = self.order.pop_front() {
                    self.turns.remove(&old);
                }
            }
        }
        let turns = self.turns.entry(key).or_default();
        turns.push(turn.to_string());
        if turns.len() > MAX_TURNS {
            turns.remove(0);
        }
    }
}

/// The triage engine (`Send + Sync`; share it behind an `Arc`).
pub struct Engine {
    pub(crate) pack: Pack,
    pub(crate) embedder: Arc<dyn TextEmbedder>,
    pub(crate) index: Index,
    extractor: FieldExtractor,
    rules: PriorityRules,
    deflector: Deflector,
    /// Short labelled examples from the pack besides its tickets, embedded like tickets.
    examples: PackExamples,
    state: RwLock<State>,
    /// Serialises document writes (see the module docs): held across the index
    /// write and the memory/bank update of every upsert and delete, and across
    /// the whole read-modify-write of feedback. Lock order: this mutex first,
    /// then `state`; reads take only `state`.
    writes: Mutex<()>,
    pub(crate) log: FeedbackLog,
    /// Trained heads kept across restarts (see [`HeadCache`]).
    heads: HeadCache,
    sessions: Mutex<Sessions>,
}

/// Proof that the caller holds the engine's document write mutex
/// ([`Engine::lock_writes`]); functions that write documents take it so they
/// cannot be called without the lock.
pub(crate) type WriteLock<'a> = MutexGuard<'a, ()>;

/// The text a ticket or request is embedded as (the indexer's ticket text:
/// title and body, trimmed, joined by a newline).
pub(crate) fn ticket_text(title: &str, body: &str) -> String {
    [title.trim(), body.trim()]
        .into_iter()
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Like [`ticket_text`], refusing a request with neither title nor body.
fn request_text(title: &str, body: &str) -> Result<String> {
    let text = ticket_text(title, body);
    if text.is_empty() {
        return Err(Error::InvalidInput(
            "a request needs a non-empty title or body".into(),
        ));
    }
    Ok(text)
}

/// Current time as RFC 3339.
pub(crate) fn now_rfc3339() -> String {
    OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_default()
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
        crate::packsync::sync_pack(&cfg.data_dir, &pack, &index, &records, |p| {
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
        let mut bank = FaqBank::new(dim);
        let articles: Vec<Article> = index
            .all(DocKind::Article, None)?
            .into_iter()
            .filter_map(|(d, _)| match d {
                Document::Article(a) => Some(a),
                Document::Ticket(_) => None,
            })
            .collect();
        let phrasings: Vec<&str> = articles.iter().flat_map(FaqBank::phrasings).collect();
        let mut vectors = embedder.embed(&phrasings, EmbedKind::Query)?.into_iter();
        for a in &articles {
            let n = FaqBank::phrasings(a).len();
            let vs: Vec<Vec<f32>> = vectors.by_ref().take(n).collect();
            bank.upsert(a.clone(), &vs)?;
        }
        let examples = PackExamples::embed(&pack, embedder.as_ref())?;
        let heads = HeadCache::new(&cfg.data_dir.join("heads"));
        let (category, priority) = train_heads(&pack, &memory, &examples, &heads)?;
        tracing::info!(
            tickets = memory.len(),
            articles = bank.len(),
            corrections = records.len(),
            "engine ready"
        );
        Ok(Engine {
            extractor: FieldExtractor::new(&pack.fields)?,
            rules: PriorityRules::new(&pack),
            deflector: Deflector::new(verifier),
            examples,
            pack,
            embedder,
            index,
            state: RwLock::new(State {
                memory,
                bank,
                category,
                priority,
                corrections: records.len(),
            }),
            writes: Mutex::new(()),
            log,
            heads,
            sessions: Mutex::new(Sessions::default()),
        })
    }

    /// The loaded pack.
    pub fn pack(&self) -> &Pack {
        &self.pack
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
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

    fn embed_one(&self, text: &str, kind: EmbedKind) -> Result<Vec<f32>> {
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

        let cat = self.label_probs(
            state,
            state.category.as_ref(),
            Some(&self.examples),
            v,
            &cat_nb,
            &decides,
            |t| &t.category,
        )?;
        let category = self.decision(&state.memory, &cat, &cat_nb, threshold, |t| &t.category);
        let queue = self.queue_decision(&state.memory, &cat.probs, cat.over, threshold);
        let pri = self.label_probs(
            state,
            state.priority.as_ref(),
            None,
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
    /// pack's `examples` among them, when the classifier learned them), the
    /// corrected neighbour that overrides them (the first one `decides` accepts,
    /// see [`OVERRIDE_SIMILARITY`]), and a note when the out-of-scope guard
    /// scaled them down or the request looks out of scope.
    #[allow(clippy::too_many_arguments)]
    fn label_probs(
        &self,
        state: &State,
        clf: Option<&Classifier>,
        examples: Option<&PackExamples>,
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
        let mut probs: LabelProbs = match clf {
            Some(clf) => {
                let mut classed: Vec<(usize, f32)> = neighbours
                    .iter()
                    .filter_map(|(i, s)| {
                        clf.class_of(label(&state.memory.item(*i).ticket))
                            .map(|c| (c, *s))
                    })
                    .collect();
                // The pack's other examples are neighbours too, as they were in training.
                if let Some(ex) = examples.filter(|ex| !ex.labels.is_empty()) {
                    let near = ex.vectors.top_k(v, clf.k(), |_| true)?;
                    classed.extend(
                        near.into_iter()
                            .filter_map(|(i, s)| clf.class_of(&ex.labels[i]).map(|c| (c, s))),
                    );
                    classed.sort_by(|a, b| b.1.total_cmp(&a.1));
                    classed.truncate(clf.k());
                }
                let pred = clf.predict(v, &classed)?;
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
                out_of_scope = Some(p);
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

    /// Answer, clarify or hand off a chat message.
    pub fn deflect(&self, msg: &ChatMessage) -> Result<DeflectResult> {
        let text = msg.text.trim();
        if text.is_empty() {
            return Err(Error::InvalidInput("the message is empty".into()));
        }
        let session_key = msg
            .session_id
            .as_ref()
            .filter(|s| !s.is_empty())
            .map(|s| format!("{}\u{1}{s}", msg.tenant));
        let history = match &session_key {
            Some(k) => self
                .sessions
                .lock()
                .map(|s| s.history(k))
                .unwrap_or_default(),
            None => Vec::new(),
        };
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
        if d.action != DeflectAction::Handoff {
            // An article can look like a request it does not serve ("cancel my gym
            // membership" vs "cancel an order"): the category model, which learned
            // the pack's out-of-scope examples, has the last word.
            if let Some(p) = self.out_of_scope(&matched_text, &msg.tenant)? {
                d.action = DeflectAction::Handoff;
                d.chosen.clear();
                d.reasons.push(format!(
                    "looks like a request this service does not handle (probability {p:.2}): handing off to a human"
                ));
            }
        }
        reasons.extend(d.reasons);
        if let Some(k) = session_key {
            if let Ok(mut s) = self.sessions.lock() {
                s.push(k, text);
            }
        }
        let candidates: Vec<ArticleMatch> = {
            let state = self.read();
            d.chosen
                .iter()
                .enumerate()
                .filter_map(|(r, s)| {
                    let a = state.bank.article(s.slot)?.clone();
                    Some(ArticleMatch {
                        hit: Hit {
                            id: a.id.clone(),
                            kind: DocKind::Article,
                            doc: Document::Article(a.clone()),
                            score: s.probability,
                            explanation: indexer::Explanation {
                                vector_similarity: Some(s.best.cos),
                                vector_rank: Some(r + 1),
                                fused_score: s.probability,
                                matched_terms: s.matched.clone(),
                                ..indexer::Explanation::default()
                            },
                        },
                        article: a,
                        confidence: s.probability,
                    })
                })
                .collect()
        };
        let ticket_draft = if d.action == DeflectAction::Handoff {
            let mut turns = history;
            turns.push(text.to_string());
            let title: String = text.chars().take(60).collect();
            let body = turns.join("\n");
            let triage = self.triage(&TicketRequest {
                title: title.clone(),
                body: body.clone(),
                channel: "chat".into(),
                customer_id: msg.customer_id.clone(),
                tenant: msg.tenant.clone(),
            })?;
            Some(TicketDraft {
                title,
                body,
                triage,
            })
        } else {
            None
        };
        Ok(DeflectResult {
            action: d.action,
            confidence: d.confidence,
            candidates,
            ticket_draft,
            reasons,
        })
    }

    /// The out-of-scope probability of `text`, when the category model ranks
    /// that class first (`None` otherwise, or without a model).
    fn out_of_scope(&self, text: &str, tenant: &str) -> Result<Option<f32>> {
        if self.read().category.is_none() {
            return Ok(None);
        }
        let v = self.embed_one(text, EmbedKind::Passage)?;
        let state = self.read();
        let neighbours = state.memory.nearest(&v, K_NEIGHBOURS, |e| {
            e.ticket.tenant == tenant && !e.ticket.category.is_empty()
        })?;
        let evidence = self.label_probs(
            &state,
            state.category.as_ref(),
            Some(&self.examples),
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
    pub(crate) fn check_ticket(&self, t: &Ticket) -> Result<()> {
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
        self.index.upsert_tickets(vec![t.clone()])?;
        let v = match self.index.vector(DocKind::Ticket, &t.tenant, &t.id) {
            Some(v) => v,
            None => self.embed_one(&ticket_text(&t.title, &t.body), EmbedKind::Passage)?,
        };
        self.write().memory.upsert(t, &v, corrected)
    }

    /// Adds or replaces a ticket; searchable and used as evidence when this returns.
    pub fn upsert_ticket(&self, t: Ticket) -> Result<()> {
        let held = self.lock_writes();
        self.store_ticket(&held, t, None)
    }

    /// Deletes a ticket; `true` if it existed. Serialised with other writes, so
    /// the index and the ticket memory agree afterwards.
    pub fn delete_ticket(&self, tenant: &str, id: &str) -> Result<bool> {
        let _held = self.lock_writes();
        let existed = self.index.delete(DocKind::Ticket, tenant, id)?;
        let in_memory = self.write().memory.remove(tenant, id);
        Ok(existed || in_memory)
    }

    /// Adds or replaces an article; used for deflection when this returns. The
    /// phrasings are embedded first, without the write mutex; the index write
    /// and the FAQ bank update then happen under it, together.
    pub fn upsert_article(&self, a: Article) -> Result<()> {
        self.check_article(&a)?;
        let vectors = self.embed_phrasings(&a)?;
        let held = self.lock_writes();
        self.store_article(&held, a, &vectors)
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

    /// The query vectors of an article's phrasings ([`FaqBank::phrasings`]
    /// order), reusing those the bank already holds for the same text: a vector
    /// depends only on its text, so this needs no write mutex.
    pub(crate) fn embed_phrasings(&self, a: &Article) -> Result<Vec<Vec<f32>>> {
        let texts = FaqBank::phrasings(a);
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

    /// Writes a checked article to the index and the FAQ bank (`vectors` from
    /// [`Engine::embed_phrasings`]). The caller holds the write mutex (`_held`),
    /// so a concurrent delete cannot land between the two.
    pub(crate) fn store_article(
        &self,
        _held: &WriteLock<'_>,
        a: Article,
        vectors: &[Vec<f32>],
    ) -> Result<()> {
        self.index.upsert_articles(vec![a.clone()])?;
        self.write().bank.upsert(a, vectors)
    }

    /// Deletes an article; `true` if it existed. Serialised with other writes,
    /// so the index and the FAQ bank agree afterwards.
    pub fn delete_article(&self, tenant: &str, id: &str) -> Result<bool> {
        let _held = self.lock_writes();
        let existed = self.index.delete(DocKind::Article, tenant, id)?;
        let in_bank = self.write().bank.remove(tenant, id);
        Ok(existed || in_bank)
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

    /// Retrains the classifiers from every labelled ticket now in memory
    /// (corrections included); seconds for thousands of tickets.
    pub fn retrain(&self) -> Result<()> {
        let memory = self.read().memory.clone();
        let (category, priority) = train_heads(&self.pack, &memory, &self.examples, &self.heads)?;
        let mut state = self.write();
        state.category = category;
        state.priority = priority;
        Ok(())
    }

    /// Counts for health and metrics.
    pub fn stats(&self) -> EngineStats {
        let state = self.read();
        let leaves: HashSet<String> = self
            .pack
            .leaf_categories()
            .iter()
            .map(|c| c.id.clone())
            .collect();
        EngineStats {
            tickets: state.memory.len(),
            articles: state.bank.len(),
            labelled_examples: state
                .memory
                .iter()
                .filter(|(e, _)| leaves.contains(&e.ticket.category))
                .count(),
            categories: leaves.len(),
            corrections: state.corrections,
            model: self.embedder.name().to_string(),
            pack: self.pack.name.clone(),
        }
    }
}

/// Upserts the pack's tickets and articles into the index: all of them on first
/// start, the new or changed ones when [`crate::packsync::sync_pack`] finds the
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

/// Short labelled examples a pack gives besides its tickets: each article's
/// phrasings under the article's category, and the out-of-scope requests under
/// [`OUT_OF_SCOPE`]. Requests are often one short sentence, tickets a title and
/// a body: without the phrasings, "short" would look like "out of scope".
struct PackExamples {
    vectors: VectorSet,
    labels: Vec<String>,
}

impl PackExamples {
    /// Embeds the pack's article phrasings (leaf categories only) and out-of-scope texts.
    fn embed(pack: &Pack, embedder: &dyn TextEmbedder) -> Result<PackExamples> {
        let leaves: HashSet<&str> = pack
            .leaf_categories()
            .iter()
            .map(|c| c.id.as_str())
            .collect();
        let mut texts: Vec<&str> = Vec::new();
        let mut labels: Vec<String> = Vec::new();
        for a in pack
            .articles
            .iter()
            .filter(|a| leaves.contains(a.category.as_str()))
        {
            for p in FaqBank::phrasings(a) {
                texts.push(p);
                labels.push(a.category.clone());
            }
        }
        for t in &pack.out_of_scope {
            texts.push(t);
            labels.push(OUT_OF_SCOPE.to_string());
        }
        let mut vectors = VectorSet::new(embedder.dim());
        for v in embedder.embed(&texts, EmbedKind::Passage)? {
            vectors.push(&v)?;
        }
        Ok(PackExamples { vectors, labels })
    }
}

/// Trains the category and priority classifiers from the labelled tickets in
/// memory; the category classifier also learns the pack's [`PackExamples`]
/// (out-of-scope requests as one more class, [`OUT_OF_SCOPE`]). A head stored
/// in `heads` for exactly the same training data is loaded instead.
fn train_heads(
    pack: &Pack,
    memory: &TicketMemory,
    examples: &PackExamples,
    heads: &HeadCache,
) -> Result<(Option<Classifier>, Option<Classifier>)> {
    let leaves: HashSet<&str> = pack
        .leaf_categories()
        .iter()
        .map(|c| c.id.as_str())
        .collect();
    let train = |name: &str,
                 label: &dyn Fn(&Ticket) -> Option<String>,
                 extra: Option<&PackExamples>|
     -> Result<Option<Classifier>> {
        // In (tenant, id) order, so the same tickets train the same head (and
        // find its stored copy) whatever order the index returned them in.
        let mut rows: Vec<(&Ticket, &[f32], String)> = memory
            .iter()
            .filter_map(|(e, v)| label(&e.ticket).map(|l| (&e.ticket, v, l)))
            .collect();
        rows.sort_by(|a, b| (&a.0.tenant, &a.0.id).cmp(&(&b.0.tenant, &b.0.id)));
        let mut x = Vec::with_capacity(rows.iter().map(|r| r.1.len()).sum());
        let mut y = Vec::with_capacity(rows.len());
        for (_, v, l) in rows {
            x.extend_from_slice(v);
            y.push(l);
        }
        if let Some(extra) = extra.filter(|_| !y.is_empty()) {
            x.extend_from_slice(extra.vectors.as_flat());
            y.extend(extra.labels.iter().cloned());
        }
        let mut opts = ClassifierOptions::for_size(y.len());
        if y.iter().any(|l| l == OUT_OF_SCOPE) {
            opts.out_of_scope_label = Some(OUT_OF_SCOPE.into());
        }
        let distinct: HashSet<&String> = y.iter().collect();
        if distinct.len() < 2 || y.len() < 4 {
            tracing::warn!(
                examples = y.len(),
                "too few labelled tickets to train a classifier; using neighbours only"
            );
            return Ok(None);
        }
        let dim = x.len() / y.len();
        let key = training_key(&x, &y, &opts);
        if let Some(clf) = heads.load(name, &key) {
            tracing::info!(
                head = name,
                examples = y.len(),
                "loaded the stored head trained on the same data"
            );
            return Ok(Some(clf));
        }
        let clf = Classifier::train(&x, dim, &y, &opts)?;
        heads.store(name, &key, &clf);
        Ok(Some(clf))
    };
    let category = train(
        "category",
        &|t| {
            leaves
                .contains(t.category.as_str())
                .then(|| t.category.clone())
        },
        Some(examples),
    )?;
    let priority = train(
        "priority",
        &|t| priority_rank(&t.priority).map(|_| t.priority.clone()),
        None,
    )?;
    Ok((category, priority))
}
