//! Label decisions: the category, priority and queue of a request, each with
//! its probabilities and the reasons a person can check.
//!
//! A label's probabilities come from the tenant's trained head when it has one
//! (its calibrated linear and neighbour scores, the pack's shared examples
//! among the neighbours as they were in training), else from the neighbours'
//! similarity-weighted vote. An agent's correction of this very request
//! decides outright ([`OVERRIDE_SIMILARITY`]). Below the pack's threshold a
//! decision abstains: a human decides. The category head learns the pack's
//! out-of-scope examples as one more class ([`OUT_OF_SCOPE`]) that is never
//! returned: when it ranks first, the request looks like one the service does
//! not handle. A queue is the sum of the category probabilities routed to it.
//!
//! The engine finds the neighbours under its lock and hands them over in a
//! [`LabelQuery`]; everything here is a function of what it is given.

use std::cell::OnceCell;
use std::collections::HashMap;

use indexer::{ticket_text, Ticket};

use crate::api::{LabelDecision, ScoredLabel};
use crate::error::Result;
use crate::model::classify::Classifier;
use crate::model::knn::{vote_weights, VectorSet, VOTE_TEMPERATURE};
use crate::model::textsim::Units;
use crate::pack::Pack;
use crate::store::memory::{Example, TicketMemory};

/// How an abstention's reason ends; a rule that overrules the abstention
/// rewrites it (see [`overrule_abstention`]), so reasons never contradict the
/// decision they explain.
const NEEDS_A_HUMAN: &str = ": needs a human";

/// Clears `decision`'s abstention for a rule that decides instead (`by`, e.g.
/// "the urgent lexicon floor P0"), rewriting the model's abstention reason to
/// say who decided.
pub fn overrule_abstention(decision: &mut LabelDecision, by: &str) {
    decision.abstain = false;
    for r in &mut decision.reasons {
        if let Some(head) = r.strip_suffix(NEEDS_A_HUMAN) {
            *r = format!("model {head}: overruled by {by}");
        }
    }
}

/// The category head's label for the pack's out-of-scope examples (not a
/// valid category id, so it never clashes with one and is never returned).
pub const OUT_OF_SCOPE: &str = "(out of scope)";
/// An agent-corrected example decides a request's labels outright only when it
/// is the same ticket or the same text (the same words, ignoring case, spacing
/// and punctuation), and at least this similar (a cheap first check). Similar
/// but different requests learn from it through the neighbour vote at once and
/// through the linear head after the next retrain: one correction must not
/// relabel every request that shares a product name.
pub const OVERRIDE_SIMILARITY: f32 = 0.95;
/// Alternatives listed with a decision.
const MAX_ALTERNATIVES: usize = 3;

/// Which label of a ticket a decision, or a trained head, is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Head {
    /// The leaf category.
    Category,
    /// The priority, `P0`..`P3`.
    Priority,
}

impl Head {
    /// The ticket's label for this head (empty when it has none).
    pub fn of(self, t: &Ticket) -> &str {
        match self {
            Head::Category => &t.category,
            Head::Priority => &t.priority,
        }
    }

    /// `category` or `priority`.
    pub fn name(self) -> &'static str {
        match self {
            Head::Category => "category",
            Head::Priority => "priority",
        }
    }
}

/// Labelled vectors the vote consults besides the tenant's own tickets (the
/// pack's shared examples): one label per vector, empty for none.
pub struct Pool<'a> {
    /// The vectors.
    pub vectors: &'a VectorSet,
    /// Their labels, by vector index.
    pub labels: &'a [String],
}

/// The request a decision is about, as the override rule sees it.
pub struct Request<'a> {
    text: &'a str,
    id: Option<&'a str>,
    /// The text's units, cut once and only when a corrected neighbour is
    /// close enough to ask.
    units: OnceCell<Vec<String>>,
}

impl<'a> Request<'a> {
    /// A request with `text` (as embedded); `id` when it is a stored ticket
    /// being reclassified.
    pub fn new(text: &'a str, id: Option<&'a str>) -> Request<'a> {
        Request {
            text,
            id,
            units: OnceCell::new(),
        }
    }

    /// Whether `e` is an agent's correction of this very request: the same
    /// ticket, or the same words.
    fn is_corrected_copy(&self, e: &Example) -> bool {
        e.corrected
            && (self.id == Some(e.ticket.id.as_str())
                || Units::new(&ticket_text(&e.ticket.title, &e.ticket.body)).units
                    == *self.units.get_or_init(|| Units::new(self.text).units))
    }
}

/// What one label decision is made from.
pub struct LabelQuery<'a> {
    /// Which label.
    pub head: Head,
    /// The tickets the neighbours' slots point into.
    pub memory: &'a TicketMemory,
    /// The tenant's trained head for this label, if it has one.
    pub classifier: Option<&'a Classifier>,
    /// The shared examples the vote consults too (see [`Pool`]).
    pub pools: &'a [Pool<'a>],
    /// The request's passage vector.
    pub vector: &'a [f32],
    /// The tenant's tickets nearest the request that carry this label,
    /// `(slot, similarity)`, best first.
    pub neighbours: &'a [(usize, f32)],
    /// The request, for the override rule.
    pub request: &'a Request<'a>,
}

/// The evidence of one label decision.
#[derive(Debug, Clone, PartialEq)]
pub struct Evidence {
    /// Calibrated probabilities, best first (the out-of-scope class removed).
    pub probs: Vec<(String, f32)>,
    /// A corrected neighbour `(slot, similarity)` that decides instead.
    pub over: Option<(usize, f32)>,
    /// Why the probabilities were scaled down, or that the request looks out
    /// of scope.
    pub note: Option<String>,
    /// The out-of-scope probability before the unlike-the-examples guard
    /// scaled it, when that class ranks first.
    pub out_of_scope: Option<f32>,
}

impl LabelQuery<'_> {
    /// The neighbour that is an agent's correction of this very request
    /// (`(slot, similarity)`), which decides instead of the model (see
    /// [`OVERRIDE_SIMILARITY`]).
    pub fn corrected_copy(&self) -> Option<(usize, f32)> {
        self.neighbours.iter().copied().find(|&(i, s)| {
            s >= OVERRIDE_SIMILARITY && self.request.is_corrected_copy(self.memory.item(i))
        })
    }

    /// The label's probabilities (best first) from the classifier and the
    /// neighbours (the shared examples in `pools` among them, as they were in
    /// training), the corrected neighbour that overrides them (see
    /// [`OVERRIDE_SIMILARITY`]), and a note when the out-of-scope guard scaled
    /// them down or the request looks out of scope.
    pub fn evidence(&self) -> Result<Evidence> {
        let over = self.corrected_copy();
        let label = |i: usize| self.head.of(&self.memory.item(i).ticket);
        let mut note = None;
        let mut out_of_scope = None;
        let mut raw_out_of_scope = None;
        let mut probs: Vec<(String, f32)> = match self.classifier {
            Some(clf) => {
                let mut classed: Vec<(usize, f32)> = self
                    .neighbours
                    .iter()
                    .filter_map(|(i, s)| clf.class_of(label(*i)).map(|c| (c, *s)))
                    .collect();
                // The pack's shared examples are neighbours too, as they were in training.
                let mut pooled = false;
                for pool in self.pools.iter().filter(|p| !p.labels.is_empty()) {
                    let near = pool
                        .vectors
                        .top_k(self.vector, clf.k(), |i| !pool.labels[i].is_empty())?;
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
                let pred = clf.predict(self.vector, &classed)?;
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
                let weights = vote_weights(self.neighbours, VOTE_TEMPERATURE);
                for ((i, _), w) in self.neighbours.iter().zip(weights) {
                    *votes.entry(label(*i).to_string()).or_default() += w;
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

    /// Turns the evidence (or its override) into a [`LabelDecision`] with
    /// reasons; it abstains below `threshold`.
    pub fn decision(&self, evidence: &Evidence, threshold: f32) -> LabelDecision {
        let label = |t: &Ticket| self.head.of(t).to_string();
        let (probs, over) = (&evidence.probs, evidence.over);
        let mut alternatives = scored(probs);
        let mut reasons = Vec::new();
        if let Some((l, _)) = probs.first() {
            let agree = self
                .neighbours
                .iter()
                .filter(|(i, _)| self.head.of(&self.memory.item(*i).ticket) == l)
                .count();
            reasons.push(format!(
                "neighbours: {agree}/{} labelled {l}",
                self.neighbours.len()
            ));
            if let Some((i, s)) = self.neighbours.first() {
                let t = &self.memory.item(*i).ticket;
                reasons.push(format!(
                    "nearest: {} ({}, similarity {s:.2})",
                    t.id,
                    label(t)
                ));
            }
        }
        reasons.extend(evidence.note.clone());
        if let Some((i, _)) = over {
            let t = &self.memory.item(i).ticket;
            let l = label(t);
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
                format!("confidence {p:.2} below threshold {threshold:.2}{NEEDS_A_HUMAN}"),
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
}

/// The first [`MAX_ALTERNATIVES`] of `probs` (best first) as scored labels.
fn scored(probs: &[(String, f32)]) -> Vec<ScoredLabel> {
    probs
        .iter()
        .take(MAX_ALTERNATIVES)
        .map(|(l, p)| ScoredLabel {
            label: l.clone(),
            probability: *p,
        })
        .collect()
}

/// The queue decision: the category probabilities summed per queue the pack
/// routes them to, or the queue of the corrected ticket that decides the
/// category (`category.over`, a slot of `memory`).
pub fn queue_decision(
    pack: &Pack,
    memory: &TicketMemory,
    category: &Evidence,
    threshold: f32,
) -> LabelDecision {
    if let Some((i, _)) = category.over {
        let t = &memory.item(i).ticket;
        let q = if t.queue.is_empty() {
            pack.queue_for(&t.category).unwrap_or_default().to_string()
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
    for (c, p) in &category.probs {
        if let Some(q) = pack.queue_for(c) {
            *by_queue.entry(q.to_string()).or_default() += p;
        }
    }
    let mut probs: Vec<(String, f32)> = by_queue.into_iter().collect();
    probs.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let alternatives = scored(&probs);
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

/// A priority decision that has no label falls back to the decided
/// category's default priority, if the pack sets one, at the category's
/// confidence (it abstains below `threshold`).
pub fn with_default_priority(
    mut priority: LabelDecision,
    category: &LabelDecision,
    pack: &Pack,
    threshold: f32,
) -> LabelDecision {
    if priority.label.is_some() {
        return priority;
    }
    if let Some(p) = category
        .label
        .as_deref()
        .and_then(|c| pack.category(c))
        .and_then(|c| c.default_priority.clone())
    {
        priority
            .reasons
            .push(format!("category default priority {p}"));
        priority.label = Some(p);
        priority.confidence = priority.confidence.max(category.confidence);
        priority.abstain = priority.confidence < threshold;
    }
    priority
}

#[cfg(test)]
mod tests {
    use super::*;

    const PACK_TOML: &str = r#"
[pack]
name = "labels"

[[queues]]
id = "repair"

[[queues]]
id = "billing"

[[categories]]
id = "repair"
queue = "repair"

[[categories]]
id = "repair.leak"
parent = "repair"
default_priority = "P2"

[[categories]]
id = "repair.no_power"
parent = "repair"

[[categories]]
id = "billing.refund"
queue = "billing"
"#;

    fn pack() -> Pack {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pack.toml"), PACK_TOML).unwrap();
        Pack::load(dir.path()).unwrap()
    }

    /// A memory of `(id, body, category, angle, corrected)`: unit vectors at
    /// `angle` radians from the request's `[1, 0]`.
    fn memory(tickets: &[(&str, &str, &str, f32, bool)]) -> TicketMemory {
        let mut m = TicketMemory::new(2);
        for (id, body, category, angle, corrected) in tickets {
            let t = Ticket {
                id: id.to_string(),
                body: body.to_string(),
                category: category.to_string(),
                ..Ticket::default()
            };
            m.upsert(t, &[angle.cos(), angle.sin()], Some(*corrected))
                .unwrap();
        }
        m
    }

    fn query<'a>(
        memory: &'a TicketMemory,
        neighbours: &'a [(usize, f32)],
        request: &'a Request<'a>,
    ) -> LabelQuery<'a> {
        LabelQuery {
            head: Head::Category,
            memory,
            classifier: None,
            pools: &[],
            vector: &[1.0, 0.0],
            neighbours,
            request,
        }
    }

    #[test]
    fn without_a_head_the_neighbours_vote_and_a_low_vote_abstains() {
        let m = memory(&[
            ("a", "水管漏水", "repair.leak", 0.0, false),
            ("b", "洗衣机漏水", "repair.leak", 0.2, false),
            ("c", "电视没电", "repair.no_power", 0.1, false),
        ]);
        let near = m.nearest(&[1.0, 0.0], 3, |_| true).unwrap();
        let request = Request::new("漏水了", None);
        let q = query(&m, &near, &request);
        let e = q.evidence().unwrap();
        // The one vote formula: each neighbour weighs exp((s - best) / 0.05).
        let w = vote_weights(&near, VOTE_TEMPERATURE);
        let leak = (w[0] + w[2]) / w.iter().sum::<f32>();
        assert_eq!(e.probs[0].0, "repair.leak");
        assert!(
            (e.probs[0].1 - leak).abs() < 1e-6,
            "{:?} vs {leak}",
            e.probs
        );
        assert!((e.probs.iter().map(|p| p.1).sum::<f32>() - 1.0).abs() < 1e-6);
        assert_eq!(
            (e.over, e.note.as_ref(), e.out_of_scope),
            (None, None, None)
        );

        let d = q.decision(&e, 0.5);
        assert_eq!(d.label.as_deref(), Some("repair.leak"));
        assert!(!d.abstain);
        assert_eq!(d.reasons[0], format!("calibrated probability {leak:.2}"));
        assert_eq!(d.reasons[1], "neighbours: 2/3 labelled repair.leak");
        assert_eq!(d.reasons[2], "nearest: a (repair.leak, similarity 1.00)");
        assert_eq!(d.alternatives.len(), 2);

        let d = q.decision(&e, 0.99);
        assert_eq!(d.label, None);
        assert!(d.abstain);
        assert!(
            d.reasons[0].contains("below threshold 0.99"),
            "{:?}",
            d.reasons
        );
        let none = query(&m, &[], &request);
        let d = none.decision(&none.evidence().unwrap(), 0.5);
        assert!(d.abstain && d.label.is_none());
        assert_eq!(d.reasons, ["no labelled examples to learn from"]);
    }

    #[test]
    fn a_correction_of_the_same_words_decides_and_a_similar_text_does_not() {
        let m = memory(&[
            ("n", "空调漏水怎么办", "repair.no_power", 0.0, false),
            ("fixed", "空调漏水", "repair.leak", 0.01, true),
        ]);
        let near = m.nearest(&[1.0, 0.0], 2, |_| true).unwrap();
        // The same words, other punctuation and spacing: the agent decides.
        let same = Request::new("空调 漏水！", None);
        let q = query(&m, &near, &same);
        let e = q.evidence().unwrap();
        assert_eq!(e.over, Some(near[1]));
        let d = q.decision(&e, 0.99);
        assert_eq!(d.label.as_deref(), Some("repair.leak"));
        assert_eq!((d.confidence, d.abstain), (1.0, false));
        assert!(d.reasons[0].starts_with("agent correction of this same request (fixed)"));
        assert_eq!(d.alternatives[0].label, "repair.leak");
        let queue = queue_decision(&pack(), &m, &e, 0.99);
        assert_eq!(queue.label.as_deref(), Some("repair"), "{queue:?}");
        // A similar request learns from it through the vote only.
        let other = Request::new("空调漏水了", None);
        assert_eq!(query(&m, &near, &other).evidence().unwrap().over, None);
        // The stored ticket itself, reclassified, is decided by its correction.
        let itself = Request::new("其他文字", Some("fixed"));
        assert!(query(&m, &near, &itself).evidence().unwrap().over.is_some());
    }

    #[test]
    fn the_out_of_scope_class_is_never_a_label_but_is_reported_first() {
        let m = memory(&[
            ("x", "足球比赛几点开始", OUT_OF_SCOPE, 0.0, false),
            ("y", "空调漏水", "repair.leak", 0.3, false),
        ]);
        let near = m.nearest(&[1.0, 0.0], 2, |_| true).unwrap();
        let request = Request::new("今晚的比赛", None);
        let e = query(&m, &near, &request).evidence().unwrap();
        assert_eq!(e.probs.len(), 1);
        assert_eq!(e.probs[0].0, "repair.leak");
        let w = vote_weights(&near, VOTE_TEMPERATURE);
        let p = e.out_of_scope.unwrap();
        assert!((p - w[0] / (w[0] + w[1])).abs() < 1e-6, "{p}");
        assert!(e.note.unwrap().contains("does not handle"));
    }

    #[test]
    fn queues_sum_their_categories_and_priority_falls_back_to_the_category_default() {
        let pack = pack();
        let m = memory(&[]);
        let evidence = |probs: &[(&str, f32)]| Evidence {
            probs: probs.iter().map(|(l, p)| (l.to_string(), *p)).collect(),
            over: None,
            note: None,
            out_of_scope: None,
        };
        let e = evidence(&[
            ("billing.refund", 0.4),
            ("repair.leak", 0.35),
            ("repair.no_power", 0.25),
        ]);
        let q = queue_decision(&pack, &m, &e, 0.55);
        assert_eq!(
            q.label.as_deref(),
            Some("repair"),
            "inherited from the parent"
        );
        assert!((q.confidence - 0.6).abs() < 1e-6);
        assert_eq!(q.alternatives[1].label, "billing");
        assert!(queue_decision(&pack, &m, &e, 0.7).abstain);
        assert!(queue_decision(&pack, &m, &evidence(&[]), 0.5).abstain);

        let category = LabelDecision {
            label: Some("repair.leak".into()),
            confidence: 0.8,
            ..LabelDecision::default()
        };
        let p = with_default_priority(LabelDecision::default(), &category, &pack, 0.55);
        assert_eq!(
            (p.label.as_deref(), p.confidence, p.abstain),
            (Some("P2"), 0.8, false)
        );
        assert_eq!(p.reasons, ["category default priority P2"]);
        let decided = LabelDecision {
            label: Some("P0".into()),
            ..LabelDecision::default()
        };
        let kept = with_default_priority(decided, &category, &pack, 0.55);
        assert_eq!(kept.label.as_deref(), Some("P0"));
        let no_power = LabelDecision {
            label: Some("repair.no_power".into()),
            ..category
        };
        let p = with_default_priority(LabelDecision::default(), &no_power, &pack, 0.55);
        assert_eq!(
            p.label, None,
            "no default priority: nothing to fall back to"
        );
    }
}
