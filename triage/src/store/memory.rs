//! A handful of stored tickets with their passage vectors, searchable
//! exactly: the neighbours the store returned for one request (the engine
//! keeps no copy of the tickets; see [`crate::engine`]), in the shape the
//! decisions take them.

use std::collections::HashMap;

use indexer::Ticket;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::error::Result;
use crate::model::knn::VectorSet;

/// A ticket as the engine remembers it.
#[derive(Debug, Clone)]
pub struct Example {
    /// The ticket.
    pub ticket: Ticket,
    /// Whether an agent corrected or confirmed its labels (such examples can overrule the model).
    pub corrected: bool,
    /// `created_at` in Unix seconds (`None` when empty or not RFC 3339).
    pub created: Option<i64>,
}

/// `created_at` of a ticket in Unix seconds.
fn created_seconds(t: &Ticket) -> Option<i64> {
    OffsetDateTime::parse(&t.created_at, &Rfc3339)
        .ok()
        .map(OffsetDateTime::unix_timestamp)
}

/// Tickets with their vectors (a request's neighbours, or a test's examples).
#[derive(Debug, Clone)]
pub struct TicketMemory {
    vectors: VectorSet,
    items: Vec<Example>,
    slot_of: HashMap<(String, String), usize>,
}

impl TicketMemory {
    /// An empty memory for `dim`-dimensional vectors.
    pub fn new(dim: usize) -> TicketMemory {
        TicketMemory {
            vectors: VectorSet::new(dim),
            items: Vec::new(),
            slot_of: HashMap::new(),
        }
    }

    /// Adds or replaces a ticket; `corrected = None` keeps an existing flag.
    pub fn upsert(
        &mut self,
        ticket: Ticket,
        vector: &[f32],
        corrected: Option<bool>,
    ) -> Result<()> {
        let key = (ticket.tenant.clone(), ticket.id.clone());
        match self.slot_of.get(&key) {
            Some(&slot) => {
                self.vectors.set(slot, vector)?;
                let item = &mut self.items[slot];
                item.created = created_seconds(&ticket);
                item.ticket = ticket;
                if let Some(c) = corrected {
                    item.corrected = c;
                }
            }
            None => {
                let slot = self.vectors.push(vector)?;
                self.items.push(Example {
                    created: created_seconds(&ticket),
                    ticket,
                    corrected: corrected.unwrap_or(false),
                });
                self.slot_of.insert(key, slot);
            }
        }
        Ok(())
    }

    /// Example in slot `i` (slots come from [`TicketMemory::nearest_at_least`] or [`TicketMemory::len`]).
    pub fn item(&self, i: usize) -> &Example {
        &self.items[i]
    }

    /// Number of tickets.
    pub fn len(&self) -> usize {
        self.slot_of.len()
    }

    /// The `k` live examples most similar to `v` that `keep` accepts, best first.
    #[cfg(test)]
    pub fn nearest(
        &self,
        v: &[f32],
        k: usize,
        keep: impl Fn(&Example) -> bool,
    ) -> Result<Vec<(usize, f32)>> {
        self.nearest_at_least(v, k, f32::NEG_INFINITY, keep)
    }

    /// [`TicketMemory::nearest`] among examples at least `min` similar to `v`.
    pub fn nearest_at_least(
        &self,
        v: &[f32],
        k: usize,
        min: f32,
        keep: impl Fn(&Example) -> bool,
    ) -> Result<Vec<(usize, f32)>> {
        self.vectors
            .top_k_at_least(v, k, min, |i| keep(&self.items[i]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticket(id: &str, tenant: &str, category: &str) -> Ticket {
        Ticket {
            id: id.into(),
            tenant: tenant.into(),
            category: category.into(),
            ..Ticket::default()
        }
    }

    #[test]
    fn upsert_replaces_by_tenant_and_id() {
        let mut m = TicketMemory::new(2);
        m.upsert(ticket("a", "", "x"), &[1.0, 0.0], None).unwrap();
        m.upsert(ticket("b", "", "y"), &[0.0, 1.0], None).unwrap();
        m.upsert(ticket("a", "t2", "z"), &[1.0, 0.0], None).unwrap();
        assert_eq!(m.len(), 3);
        m.upsert(ticket("a", "", "x2"), &[0.0, 1.0], Some(true))
            .unwrap();
        assert_eq!(m.len(), 3);
        let near = m
            .nearest(&[0.0, 1.0], 5, |e| e.ticket.tenant.is_empty())
            .unwrap();
        assert_eq!(near.len(), 2);
        let a = m.item(near[0].0);
        assert!(near
            .iter()
            .all(|(i, _)| m.item(*i).ticket.tenant.is_empty()));
        assert_eq!(a.ticket.category, "x2");
        assert!(a.corrected);
    }
}
