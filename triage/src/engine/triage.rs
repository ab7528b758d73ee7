//! What the engine decides about a request: category, priority, queue,
//! fields and duplicates ([`Engine::triage`], [`Engine::classify_ticket`]),
//! suggestions from similar tickets and articles ([`Engine::suggest`]), and
//! search. The engine asks the store for the evidence (the request's
//! neighbours within its tenant); the decisions are [`crate::decide`]'s.

use indexer::{
    ticket_text, DocKind, Document, Filters, Hit, NeighbourQuery, SearchMode, SearchRequest, Ticket,
};
use models::EmbedKind;
use time::OffsetDateTime;

use super::{request_text, Engine};
use crate::api::{Duplicate, Suggestions, TicketRequest, TriageResult};
use crate::decide::escalation::EscalationContext;
use crate::decide::labels::{queue_decision, with_default_priority, Head, LabelQuery, Request};
use crate::decide::recommend::{
    duplicates, infer_fields, is_resolved, predict_resolution, ticket_hit, DuplicateQuery,
};
use crate::error::Result;
use crate::store::memory::TicketMemory;

/// Neighbours that vote on labels and are shown as evidence.
const K_NEIGHBOURS: usize = 10;
/// Similar resolved tickets and articles suggested.
const SUGGEST_K: usize = 5;
/// Candidate duplicates fetched (above the duplicate similarity, in the window).
const DUPLICATE_CANDIDATES: usize = 50;

/// Stored tickets near a request, as the decisions take them: the tickets
/// (with their vectors and whether an agent corrected them) and `(slot,
/// similarity)` into them, most similar first.
struct Nearby {
    memory: TicketMemory,
    near: Vec<(usize, f32)>,
}

impl Engine {
    /// Category, priority, queue, fields and duplicates for a new request.
    pub fn triage(&self, req: &TicketRequest) -> Result<TriageResult> {
        let text = request_text(&req.title, &req.body)?;
        let v = self.embed_one(&text, EmbedKind::Passage)?;
        let duplicates = self.duplicates(&v, &text, req)?;
        // The same customer's earlier requests in the window are repeat contacts.
        let earlier = duplicates.iter().filter(|d| d.same_customer).count();
        let mut result = self.decide_all(&v, &text, &req.tenant, None, earlier)?;
        result.duplicates = duplicates;
        Ok(result)
    }

    /// The stored tickets `query` admits nearest `v`, with their corrected flags.
    fn nearby(&self, v: &[f32], query: &NeighbourQuery) -> Result<Nearby> {
        let found = self.store.neighbours(v, query)?;
        let mut memory = TicketMemory::new(self.embedder.dim());
        let mut near = Vec::with_capacity(found.len());
        let state = self.read();
        for n in found {
            if let Document::Ticket(t) = n.doc {
                let corrected = state.corrected.contains(&(t.tenant.clone(), t.id.clone()));
                memory.upsert(t, &n.vector, Some(corrected))?;
                near.push((memory.len() - 1, n.similarity));
            }
        }
        Ok(Nearby { memory, near })
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
        self.decide_all(&v, &text, tenant, None, 0)
    }

    /// Reclassifies a stored or new ticket (no duplicate lookup). The ticket's own
    /// stored copy does not vote for itself unless an agent corrected it.
    pub fn classify_ticket(&self, t: &Ticket) -> Result<TriageResult> {
        let text = request_text(&t.title, &t.body)?;
        let unchanged = self
            .stored_ticket(&t.tenant, &t.id)?
            .is_some_and(|s| ticket_text(&s.title, &s.body) == text);
        let stored = if unchanged {
            self.store.vector(DocKind::Ticket, &t.tenant, &t.id)?
        } else {
            None
        };
        let v = match stored {
            Some(v) => v,
            None => self.embed_one(&text, EmbedKind::Passage)?,
        };
        self.decide_all(&v, &text, &t.tenant, Some(&t.id), 0)
    }

    /// The label decisions, fields, escalation risk and evidence for one
    /// embedded text; `earlier_contacts` counts the customer's requests in the
    /// duplicate window (0 where unknown).
    fn decide_all(
        &self,
        v: &[f32],
        text: &str,
        tenant: &str,
        self_id: Option<&str>,
        earlier_contacts: usize,
    ) -> Result<TriageResult> {
        let threshold = self.pack.thresholds.classify_abstain;
        // A stored ticket does not vote for itself unless an agent corrected it.
        let mut query = NeighbourQuery::tickets(tenant, K_NEIGHBOURS);
        if let Some(id) = self_id.filter(|id| !self.is_corrected(tenant, id)) {
            query.exclude_ids.push(id.to_string());
        }
        let Nearby {
            memory,
            near: neighbours,
        } = self.nearby(v, &query)?;
        let labelled = |head: Head| -> Vec<(usize, f32)> {
            neighbours
                .iter()
                .copied()
                .filter(|(i, _)| !head.of(&memory.item(*i).ticket).is_empty())
                .collect()
        };
        let (cat_nb, pri_nb) = (labelled(Head::Category), labelled(Head::Priority));
        let request = Request::new(text, self_id);
        let state = self.read();
        let heads = state.heads(tenant);

        let (cat_pools, pri_pools) = (
            self.shared.category_pools(tenant),
            self.shared.priority_pools(tenant),
        );
        let cat_query = LabelQuery {
            head: Head::Category,
            memory: &memory,
            classifier: heads.category.as_ref(),
            pools: &cat_pools,
            vector: v,
            neighbours: &cat_nb,
            request: &request,
        };
        let cat = cat_query.evidence()?;
        let category = cat_query.decision(&cat, threshold);
        let queue = queue_decision(&self.pack, &memory, &cat, threshold);
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
        let inferred = infer_fields(&memory, &neighbours, &self.pack.fields, &fields);
        fields.extend(inferred);
        let hits = neighbours
            .iter()
            .enumerate()
            .map(|(r, (i, s))| ticket_hit(&memory.item(*i).ticket, *s, r + 1))
            .collect();
        let learned = self.pack.escalation.field.as_deref().and_then(|field| {
            escalated_share(
                neighbours
                    .iter()
                    .map(|(i, s)| (memory.item(*i).ticket.fields.get(field), *s)),
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
        let query = NeighbourQuery {
            labelled_only: true,
            ..NeighbourQuery::tickets(tenant, K_NEIGHBOURS)
        };
        let Nearby {
            memory,
            near: neighbours,
        } = self.nearby(&v, &query)?;
        let state = self.read();
        let evidence = LabelQuery {
            head: Head::Category,
            memory: &memory,
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
        let articles = self.store.search(&SearchRequest {
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
        let query = NeighbourQuery {
            resolved_only: true,
            ..NeighbourQuery::tickets(&req.tenant, K_NEIGHBOURS)
        };
        let Nearby {
            memory,
            near: resolved,
        } = self.nearby(&v, &query)?;
        debug_assert!(resolved
            .iter()
            .all(|(i, _)| is_resolved(&memory.item(*i).ticket)));
        Ok(Suggestions {
            similar_tickets: resolved
                .iter()
                .take(SUGGEST_K)
                .enumerate()
                .map(|(r, (i, s))| ticket_hit(&memory.item(*i).ticket, *s, r + 1))
                .collect(),
            articles,
            duplicates: self.duplicates(&v, &text, req)?,
            predicted_resolution: predict_resolution(&memory, &resolved),
        })
    }

    /// Recent likely duplicates of a request (embedded as `v`, with `text`),
    /// by the pack's duplicate thresholds.
    fn duplicates(&self, v: &[f32], text: &str, req: &TicketRequest) -> Result<Vec<Duplicate>> {
        let th = &self.pack.thresholds;
        let query = DuplicateQuery {
            vector: v,
            text,
            tenant: &req.tenant,
            customer_id: &req.customer_id,
            similarity: th.duplicate_similarity,
            window_days: th.duplicate_window_days,
            now: OffsetDateTime::now_utc(),
        };
        // The store narrows to the window and the similarity; the wording test is the decision's.
        let (since, until) = query.window();
        let candidates = NeighbourQuery {
            min_similarity: Some(query.similarity),
            created_from: Some(since),
            created_until: until.checked_add(1),
            ..NeighbourQuery::tickets(&req.tenant, DUPLICATE_CANDIDATES)
        };
        let Nearby { memory, .. } = self.nearby(v, &candidates)?;
        duplicates(&memory, &query)
    }

    /// Hybrid search over the store (filters, explanations).
    pub fn search(&self, req: &SearchRequest) -> Result<Vec<Hit>> {
        Ok(self.store.search(req)?)
    }
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
