//! What the engine decides about a request: category, priority, queue,
//! fields and duplicates ([`Engine::triage`], [`Engine::classify_ticket`]),
//! suggestions from similar tickets and articles ([`Engine::suggest`]), and
//! search. The engine finds the evidence under its read lock; the decisions
//! are [`crate::decide`]'s.

use indexer::{ticket_text, DocKind, Filters, Hit, SearchMode, SearchRequest, Ticket};
use models::EmbedKind;
use time::OffsetDateTime;

use super::{request_text, Engine, State};
use crate::api::LabelDecision;
use crate::api::{Duplicate, Suggestions, TicketRequest, TriageResult};
use crate::decide::escalation::EscalationContext;
use crate::decide::labels::{
    queue_decision, with_default_priority, Evidence, Head, LabelQuery, Pool, Request,
};
use crate::decide::recommend::{
    duplicates, infer_fields, is_resolved, predict_resolution, ticket_hit, DuplicateQuery,
};
use crate::error::Result;
use crate::model::classify::Classifier;
use crate::store::memory::Example;
use crate::store::memory::TicketMemory;

/// Neighbours that vote on labels and are shown as evidence.
const K_NEIGHBOURS: usize = 10;
/// Similar resolved tickets and articles suggested.
const SUGGEST_K: usize = 5;

impl Engine {
    /// Category, priority, queue, fields and duplicates for a new request.
    pub fn triage(&self, req: &TicketRequest) -> Result<TriageResult> {
        let text = request_text(&req.title, &req.body)?;
        let v = self.embed_one(&text, EmbedKind::Passage)?;
        let va = self.adapted_vector(&req.tenant, &text)?;
        let state = self.read();
        let duplicates = self.duplicates(&state, &v, &text, req)?;
        // The same customer's earlier requests in the window are repeat contacts.
        let earlier = duplicates.iter().filter(|d| d.same_customer).count();
        let vectors = Vectors {
            shipped: &v,
            adapted: va.as_deref(),
        };
        let mut result = self.decide_all(&state, vectors, &text, &req.tenant, None, earlier)?;
        result.duplicates = duplicates;
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
        let va = self.adapted_vector(tenant, &text)?;
        let state = self.read();
        let vectors = Vectors {
            shipped: &v,
            adapted: va.as_deref(),
        };
        self.decide_all(&state, vectors, &text, tenant, None, 0)
    }

    /// Reclassifies a stored or new ticket (no duplicate lookup). The ticket's own
    /// stored copy does not vote for itself unless an agent corrected it.
    pub fn classify_ticket(&self, t: &Ticket) -> Result<TriageResult> {
        let text = request_text(&t.title, &t.body)?;
        let same = |m: &crate::store::memory::TicketMemory| {
            m.get(&t.tenant, &t.id)
                .filter(|e| ticket_text(&e.ticket.title, &e.ticket.body) == text)
                .and_then(|_| m.vector(&t.tenant, &t.id).map(<[f32]>::to_vec))
        };
        let (stored, stored_adapted) = {
            let state = self.read();
            let space = state.spaces.get(&t.tenant).map(|s| same(&s.memory));
            (same(&state.memory), space.flatten())
        };
        let v = match stored {
            Some(v) => v,
            None => self.embed_one(&text, EmbedKind::Passage)?,
        };
        let va = match stored_adapted {
            Some(v) => Some(v),
            None => self.adapted_vector(&t.tenant, &text)?,
        };
        let state = self.read();
        let vectors = Vectors {
            shipped: &v,
            adapted: va.as_deref(),
        };
        self.decide_all(&state, vectors, &text, &t.tenant, Some(&t.id), 0)
    }

    /// The label decisions, fields, escalation risk and evidence for one
    /// embedded text; `earlier_contacts` counts the customer's requests in the
    /// duplicate window (0 where unknown).
    fn decide_all(
        &self,
        state: &State,
        vectors: Vectors<'_>,
        text: &str,
        tenant: &str,
        self_id: Option<&str>,
        earlier_contacts: usize,
    ) -> Result<TriageResult> {
        let threshold = self.pack.thresholds.classify_abstain;
        let v = vectors.shipped;
        let usable = |e: &Example| {
            e.ticket.tenant == tenant && (self_id != Some(e.ticket.id.as_str()) || e.corrected)
        };
        let neighbours = state.memory.nearest(v, K_NEIGHBOURS, usable)?;
        let request = Request::new(text, self_id);
        let heads = state.heads(tenant);
        let (cat_pools, pri_pools) = (
            self.shared.category_pools(tenant),
            self.shared.priority_pools(tenant),
        );
        // The neighbours shown, the override by an agent's correction and the
        // queue are the shipped space's; the probabilities come from the
        // tenant's adapted space when it has one.
        let shown = Side::new(&state.memory, &neighbours, v, &cat_pools, &pri_pools);
        let adapted = match (vectors.adapted, state.spaces.get(tenant)) {
            (Some(va), Some(space)) => {
                let nb = space.memory.nearest(va, K_NEIGHBOURS, usable)?;
                let pools = (
                    space.shared.category_pools(tenant),
                    space.shared.priority_pools(tenant),
                );
                Some((space, va, nb, pools))
            }
            _ => None,
        };
        let voted = match &adapted {
            Some((space, va, nb, (cp, pp))) => Side::new(&space.memory, nb, va, cp, pp),
            None => shown.clone(),
        };
        let (category, cat) = label_decision(
            Head::Category,
            heads.category.as_ref(),
            (&shown, &voted),
            &request,
            threshold,
        )?;
        let queue = queue_decision(&self.pack, &state.memory, &cat, threshold);
        let (priority, _) = label_decision(
            Head::Priority,
            heads.priority.as_ref(),
            (&shown, &voted),
            &request,
            threshold,
        )?;
        let priority = with_default_priority(priority, &category, &self.pack, threshold);
        let priority = self.rules.apply(text, priority);

        let mut fields = self.extractor.extract(text);
        let inferred = infer_fields(&state.memory, &neighbours, &self.pack.fields, &fields);
        fields.extend(inferred);
        let hits = neighbours
            .iter()
            .enumerate()
            .map(|(r, (i, s))| ticket_hit(&state.memory.item(*i).ticket, *s, r + 1))
            .collect();
        let learned = self.pack.escalation.field.as_deref().and_then(|field| {
            escalated_share(
                neighbours
                    .iter()
                    .map(|(i, s)| (state.memory.item(*i).ticket.fields.get(field), *s)),
            )
        });
        let escalation_risk = self.escalation.assess(
            text,
            EscalationContext {
                earlier_contacts,
                learned,
            },
        );
        Ok(TriageResult {
            escalation_risk,
            needs_human: category.abstain || priority.abstain,
            category,
            priority,
            queue,
            fields,
            duplicates: Vec::new(),
            neighbours: hits,
        })
    }

    /// The out-of-scope probability of `text`, when the tenant's category
    /// model ranks that class first (`None` otherwise, or without a model).
    pub(super) fn out_of_scope(&self, text: &str, tenant: &str) -> Result<Option<f32>> {
        if self.read().heads(tenant).category.is_none() {
            return Ok(None);
        }
        let request = Request::new(text, None);
        let labelled = |e: &Example| e.ticket.tenant == tenant && !e.ticket.category.is_empty();
        let ask = |state: &State, memory: &TicketMemory, v: &[f32], pools: &[Pool<'_>]| {
            let neighbours = memory.nearest(v, K_NEIGHBOURS, labelled)?;
            let evidence = LabelQuery {
                head: Head::Category,
                memory,
                classifier: state.heads(tenant).category.as_ref(),
                pools,
                vector: v,
                neighbours: &neighbours,
                request: &request,
            }
            .evidence()?;
            Ok(evidence.out_of_scope)
        };
        if let Some(va) = self.adapted_vector(tenant, text)? {
            let state = self.read();
            if let Some(space) = state.spaces.get(tenant) {
                return ask(
                    &state,
                    &space.memory,
                    &va,
                    &space.shared.category_pools(tenant),
                );
            }
        }
        let v = self.embed_one(text, EmbedKind::Passage)?;
        let state = self.read();
        ask(
            &state,
            &state.memory,
            &v,
            &self.shared.category_pools(tenant),
        )
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
        Ok(Suggestions {
            similar_tickets: resolved
                .iter()
                .take(SUGGEST_K)
                .enumerate()
                .map(|(r, (i, s))| ticket_hit(&state.memory.item(*i).ticket, *s, r + 1))
                .collect(),
            articles,
            duplicates: self.duplicates(&state, &v, &text, req)?,
            predicted_resolution: predict_resolution(&state.memory, &resolved),
        })
    }

    /// Recent likely duplicates of a request (embedded as `v`, with `text`),
    /// by the pack's duplicate thresholds.
    fn duplicates(
        &self,
        state: &State,
        v: &[f32],
        text: &str,
        req: &TicketRequest,
    ) -> Result<Vec<Duplicate>> {
        let th = &self.pack.thresholds;
        duplicates(
            &state.memory,
            &DuplicateQuery {
                vector: v,
                text,
                tenant: &req.tenant,
                customer_id: &req.customer_id,
                similarity: th.duplicate_similarity,
                window_days: th.duplicate_window_days,
                now: OffsetDateTime::now_utc(),
            },
        )
    }

    /// Hybrid search over the index (filters, explanations).
    pub fn search(&self, req: &SearchRequest) -> Result<Vec<Hit>> {
        Ok(self.index.search(req)?)
    }
}

/// The two vectors of a request: the shipped encoder's, and its tenant's
/// adapted encoder's when the tenant has one.
#[derive(Clone, Copy)]
struct Vectors<'a> {
    shipped: &'a [f32],
    adapted: Option<&'a [f32]>,
}

/// Where a label's evidence is gathered: a memory of tickets, the request's
/// vector in that memory's space, its nearest tickets there that carry each
/// label, and the pack's shared examples in that space.
#[derive(Clone)]
struct Side<'a> {
    memory: &'a TicketMemory,
    vector: &'a [f32],
    category: Vec<(usize, f32)>,
    priority: Vec<(usize, f32)>,
    category_pools: &'a [Pool<'a>],
    priority_pools: &'a [Pool<'a>],
}

impl<'a> Side<'a> {
    fn new(
        memory: &'a TicketMemory,
        neighbours: &[(usize, f32)],
        vector: &'a [f32],
        category_pools: &'a [Pool<'a>],
        priority_pools: &'a [Pool<'a>],
    ) -> Side<'a> {
        let labelled = |head: Head| -> Vec<(usize, f32)> {
            neighbours
                .iter()
                .copied()
                .filter(|(i, _)| !head.of(&memory.item(*i).ticket).is_empty())
                .collect()
        };
        Side {
            memory,
            vector,
            category: labelled(Head::Category),
            priority: labelled(Head::Priority),
            category_pools,
            priority_pools,
        }
    }

    fn query<'q>(
        &'q self,
        head: Head,
        classifier: Option<&'q Classifier>,
        request: &'q Request<'q>,
    ) -> LabelQuery<'q> {
        let (neighbours, pools) = match head {
            Head::Category => (&self.category, self.category_pools),
            Head::Priority => (&self.priority, self.priority_pools),
        };
        LabelQuery {
            head,
            memory: self.memory,
            classifier,
            pools,
            vector: self.vector,
            neighbours,
            request,
        }
    }
}

/// One label's decision: probabilities from the `voted` side (the tenant's
/// adapted space, or the shipped one), the agent-correction override and
/// the reasons from the `shown` side (the shipped space).
fn label_decision(
    head: Head,
    classifier: Option<&Classifier>,
    (shown, voted): (&Side<'_>, &Side<'_>),
    request: &Request<'_>,
    threshold: f32,
) -> Result<(LabelDecision, Evidence)> {
    let shown = shown.query(head, classifier, request);
    let mut evidence = voted.query(head, classifier, request).evidence()?;
    evidence.over = shown.corrected_copy();
    let decision = shown.decision(&evidence, threshold);
    Ok((decision, evidence))
}

/// The similarity-weighted share of neighbours whose escalation field says
/// `true`, among those that carry it (`true`/`false`, `yes`/`no`, `1`/`0`);
/// `None` when none does.
fn escalated_share<'a>(neighbours: impl Iterator<Item = (Option<&'a String>, f32)>) -> Option<f32> {
    let (mut yes, mut all) = (0f32, 0f32);
    for (value, sim) in neighbours {
        let Some(v) = value else { continue };
        let w = sim.max(0.0);
        match v.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "1" => {
                yes += w;
                all += w;
            }
            "false" | "no" | "0" => all += w,
            _ => {}
        }
    }
    (all > 0.0).then(|| yes / all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_learned_share_counts_only_labelled_neighbours() {
        let (t, f, other) = ("true".to_string(), "no".to_string(), "maybe".to_string());
        assert_eq!(escalated_share([(None, 0.9)].into_iter()), None);
        assert_eq!(escalated_share([(Some(&other), 0.9)].into_iter()), None);
        let share =
            escalated_share([(Some(&t), 0.9), (Some(&f), 0.3), (None, 0.8)].into_iter()).unwrap();
        assert!((share - 0.75).abs() < 1e-6, "{share}");
    }
}
