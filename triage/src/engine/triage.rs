//! What the engine decides about a request: category, priority, queue,
//! fields and duplicates ([`Engine::triage`], [`Engine::classify_ticket`]),
//! suggestions from similar tickets and articles ([`Engine::suggest`]), and
//! search. The engine finds the evidence under its read lock; the decisions
//! are [`crate::decide`]'s.

use indexer::{ticket_text, DocKind, Filters, Hit, SearchMode, SearchRequest, Ticket};
use models::EmbedKind;
use time::OffsetDateTime;

use super::{request_text, Engine, State};
use crate::api::{Duplicate, Suggestions, TicketRequest, TriageResult};
use crate::decide::escalation::EscalationContext;
use crate::decide::labels::{queue_decision, with_default_priority, Head, LabelQuery, Request};
use crate::decide::recommend::{
    duplicates, infer_fields, is_resolved, predict_resolution, ticket_hit, DuplicateQuery,
};
use crate::error::Result;
use crate::store::activity::Activity;
use crate::store::memory::Example;

/// Neighbours that vote on labels and are shown as evidence.
const K_NEIGHBOURS: usize = 10;
/// Similar resolved tickets and articles suggested.
const SUGGEST_K: usize = 5;

impl Engine {
    /// Category, priority, queue, fields and duplicates for a new request.
    pub fn triage(&self, req: &TicketRequest) -> Result<TriageResult> {
        let text = request_text(&req.title, &req.body)?;
        let v = self.embed_one(&text, EmbedKind::Passage)?;
        let state = self.read();
        let duplicates = self.duplicates(&state, &v, &text, req)?;
        // The same customer's earlier requests in the window are repeat contacts.
        let earlier = duplicates.iter().filter(|d| d.same_customer).count();
        let mut result = self.decide_all(&state, &v, &text, &req.tenant, None, earlier)?;
        drop(state);
        result.duplicates = duplicates;
        self.note_activity(
            &req.tenant,
            Activity::Triage {
                abstained: result.category.abstain,
                flagged: result.escalation_risk.flagged,
            },
        );
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
        self.decide_all(&state, &v, &text, tenant, None, 0)
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
        self.decide_all(&state, &v, &text, &t.tenant, Some(&t.id), 0)
    }

    /// The label decisions, fields, escalation risk and evidence for one
    /// embedded text; `earlier_contacts` counts the customer's requests in the
    /// duplicate window (0 where unknown).
    fn decide_all(
        &self,
        state: &State,
        v: &[f32],
        text: &str,
        tenant: &str,
        self_id: Option<&str>,
        earlier_contacts: usize,
    ) -> Result<TriageResult> {
        let threshold = self.pack.thresholds.classify_abstain;
        let usable = |e: &Example| {
            e.ticket.tenant == tenant && (self_id != Some(e.ticket.id.as_str()) || e.corrected)
        };
        let neighbours = state.memory.nearest(v, K_NEIGHBOURS, usable)?;
        let labelled = |head: Head| -> Vec<(usize, f32)> {
            neighbours
                .iter()
                .copied()
                .filter(|(i, _)| !head.of(&state.memory.item(*i).ticket).is_empty())
                .collect()
        };
        let (cat_nb, pri_nb) = (labelled(Head::Category), labelled(Head::Priority));
        let request = Request::new(text, self_id);
        let heads = state.heads(tenant);

        let (cat_pools, pri_pools) = (
            self.shared.category_pools(tenant),
            self.shared.priority_pools(tenant),
        );
        let cat_query = LabelQuery {
            head: Head::Category,
            memory: &state.memory,
            classifier: heads.category.as_ref(),
            pools: &cat_pools,
            vector: v,
            neighbours: &cat_nb,
            request: &request,
        };
        let cat = cat_query.evidence()?;
        let category = cat_query.decision(&cat, threshold);
        let queue = queue_decision(&self.pack, &state.memory, &cat, threshold);
        let pri_query = LabelQuery {
            head: Head::Priority,
            classifier: heads.priority.as_ref(),
            pools: &pri_pools,
            neighbours: &pri_nb,
            ..cat_query
        };
        let pri = pri_query.evidence()?;
        let priority = pri_query.decision(&pri, threshold);
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
        let v = self.embed_one(text, EmbedKind::Passage)?;
        let state = self.read();
        let neighbours = state.memory.nearest(&v, K_NEIGHBOURS, |e| {
            e.ticket.tenant == tenant && !e.ticket.category.is_empty()
        })?;
        let evidence = LabelQuery {
            head: Head::Category,
            memory: &state.memory,
            classifier: state.heads(tenant).category.as_ref(),
            pools: &self.shared.category_pools(tenant),
            vector: &v,
            neighbours: &neighbours,
            request: &Request::new(text, None),
        }
        .evidence()?;
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

/// The similarity-weighted share of neighbours whose escalation field says
/// `true`, among those that carry it (`true`/`false`, `yes`/`no`, `1`/`0`);
/// `None` when none does.
pub(super) fn escalated_share<'a>(
    neighbours: impl Iterator<Item = (Option<&'a String>, f32)>,
) -> Option<f32> {
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
