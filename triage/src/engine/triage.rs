//! What the engine decides about a request: category, priority, queue,
//! fields and duplicates ([`Engine::triage`], [`Engine::classify_ticket`]),
//! suggestions from similar tickets and articles ([`Engine::suggest`]), and
//! search.

use std::collections::HashMap;

use indexer::{ticket_text, DocKind, Filters, Hit, SearchMode, SearchRequest, Ticket};
use models::EmbedKind;
use time::OffsetDateTime;

use super::training::Pool;
use super::{request_text, Engine, State};
use crate::api::{LabelDecision, ScoredLabel, Suggestions, TicketRequest, TriageResult};
use crate::decide::recommend::{
    duplicates, infer_fields, is_resolved, predict_resolution, ticket_hit,
};
use crate::error::Result;
use crate::model::classify::Classifier;
use crate::model::textsim::Units;
use crate::store::memory::{Example, TicketMemory};

/// Neighbours that vote on labels and are shown as evidence.
const K_NEIGHBOURS: usize = 10;
/// The category classifier's label for the pack's out-of-scope examples (not a
/// valid category id, so it never clashes with one and is never returned).
pub(super) const OUT_OF_SCOPE: &str = "(out of scope)";
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

impl Engine {
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
    pub(super) fn classify_text(
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
    pub(super) fn out_of_scope(&self, text: &str, tenant: &str) -> Result<Option<f32>> {
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
}
