//! The chat's conversations, in memory: a restart starts every conversation
//! afresh.
//!
//! Ids are issued here (128 random bits), never chosen by a client: an
//! unknown or another tenant's id starts a new conversation rather than
//! joining someone else's. A conversation keeps its last turns (for context
//! and for feedback on what each reply showed), the oldest conversations are
//! evicted first, and each may hand off a few tickets only.

use std::collections::{HashMap, VecDeque};

use crate::error::{Error, Result};

/// Conversations remembered, oldest evicted first.
const MAX_SESSIONS: usize = 10_000;
/// Earlier messages that give a follow-up its context.
const CONTEXT_TURNS: usize = 4;
/// Turns whose shown articles can still get feedback.
const KEPT_TURNS: usize = 16;
/// Tickets one conversation may create.
const MAX_TICKETS_PER_SESSION: u32 = 3;

/// One message of a conversation and the articles its reply showed.
#[derive(Debug, Clone)]
pub struct Turn {
    /// Its number in the conversation, from 1.
    pub number: u32,
    /// What the customer wrote.
    pub text: String,
    /// The ids of the articles the reply showed.
    pub shown: Vec<String>,
}

/// One conversation.
#[derive(Debug)]
pub struct Session {
    tenant: String,
    /// The customer who started it (may be empty).
    pub customer_id: String,
    /// Its last [`KEPT_TURNS`] turns, oldest first.
    pub turns: VecDeque<Turn>,
    next_turn: u32,
    tickets: u32,
}

impl Session {
    /// The texts of its kept turns, oldest first.
    pub fn texts(&self) -> Vec<String> {
        self.turns.iter().map(|t| t.text.clone()).collect()
    }
}

/// The chat conversations the engine remembers (in memory: a restart starts
/// every conversation afresh).
#[derive(Debug, Default)]
pub struct Sessions {
    map: HashMap<String, Session>,
    order: VecDeque<String>,
}

impl Sessions {
    /// The conversation `requested` of `tenant`, or a new one with a fresh id
    /// when it is missing, unknown, or another tenant's. Returns its id and
    /// the texts of its recent messages.
    pub fn resolve(
        &mut self,
        tenant: &str,
        requested: Option<&str>,
        customer_id: &str,
    ) -> (String, Vec<String>) {
        if let Some(id) = requested {
            if let Some(s) = self.map.get(id).filter(|s| s.tenant == tenant) {
                let history = s
                    .turns
                    .iter()
                    .rev()
                    .take(CONTEXT_TURNS)
                    .rev()
                    .map(|t| t.text.clone())
                    .collect();
                return (id.to_string(), history);
            }
        }
        let id = format!("{:032x}", rand::random::<u128>());
        self.order.push_back(id.clone());
        if self.order.len() > MAX_SESSIONS {
            if let Some(old) = self.order.pop_front() {
                self.map.remove(&old);
            }
        }
        self.map.insert(
            id.clone(),
            Session {
                tenant: tenant.to_string(),
                customer_id: customer_id.to_string(),
                turns: VecDeque::new(),
                next_turn: 1,
                tickets: 0,
            },
        );
        (id, Vec::new())
    }

    /// The conversation `id` of `tenant` (another tenant's is unknown to it).
    pub fn get(&self, tenant: &str, id: &str) -> Result<&Session> {
        self.map
            .get(id)
            .filter(|s| s.tenant == tenant)
            .ok_or_else(|| unknown_session(id))
    }

    /// Counts a ticket handed off from conversation `id` of `tenant` (at most
    /// [`MAX_TICKETS_PER_SESSION`]); returns its customer and the texts of its
    /// kept turns.
    pub fn hand_off(&mut self, tenant: &str, id: &str) -> Result<(String, Vec<String>)> {
        let s = self
            .map
            .get_mut(id)
            .filter(|s| s.tenant == tenant)
            .ok_or_else(|| unknown_session(id))?;
        if s.tickets >= MAX_TICKETS_PER_SESSION {
            return Err(Error::InvalidInput(format!(
                "a conversation creates at most {MAX_TICKETS_PER_SESSION} tickets"
            )));
        }
        s.tickets += 1;
        Ok((s.customer_id.clone(), s.texts()))
    }

    /// Records a message and what its reply showed; returns its turn number.
    pub fn record(&mut self, id: &str, text: &str, shown: Vec<String>) -> u32 {
        let Some(s) = self.map.get_mut(id) else {
            return 0;
        };
        let number = s.next_turn;
        s.next_turn += 1;
        s.turns.push_back(Turn {
            number,
            text: text.to_string(),
            shown,
        });
        if s.turns.len() > KEPT_TURNS {
            s.turns.pop_front();
        }
        number
    }
}

/// The error for a conversation id that is unknown (or expired, or another
/// tenant's); the id is cut short, as a client may send anything.
fn unknown_session(id: &str) -> Error {
    let shown: String = id.chars().take(40).collect();
    Error::NotFound(format!(
        "conversation `{shown}` (unknown or expired: start a new one by sending a message without `session_id`)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_issued_and_bound_to_their_tenant() {
        let mut s = Sessions::default();
        let (a, h) = s.resolve("acme", Some("my-own-id"), "c1");
        assert_ne!(a, "my-own-id", "a client cannot choose an id");
        assert_eq!(a.len(), 32);
        assert!(h.is_empty());
        s.record(&a, "洗衣机漏水", vec!["kb-1".into()]);
        let (same, h) = s.resolve("acme", Some(&a), "c1");
        assert_eq!(same, a);
        assert_eq!(h, vec!["洗衣机漏水".to_string()]);
        // Another tenant cannot join it, nor read its turns.
        let (other, h) = s.resolve("globex", Some(&a), "c2");
        assert_ne!(other, a);
        assert!(h.is_empty());
        assert!(s.get("globex", &a).is_err());
        assert_eq!(s.record(&a, "还是漏水", vec![]), 2);
    }
}
