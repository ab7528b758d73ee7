//! Retraining while the service runs: labelled writes are counted per tenant
//! until [`Engine::retrain`] trains that tenant's heads again (see
//! [`heads`](super::heads) for what they learn from).

use super::heads::{train_owner, Heads, Owner};
use super::Engine;
use crate::error::Result;
use crate::store::memory::TicketMemory;

impl Engine {
    /// Counts one labelled change of `tenant`.
    pub(super) fn note_change(&self, tenant: &str) {
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

    /// Retrains `tenant`'s classifiers from its labelled tickets now in memory
    /// (corrections included) and the shared pack, and nothing of any other
    /// tenant; seconds for thousands of tickets. A tenant with an adapted
    /// encoder is retrained in its adapted space. Returns the labelled
    /// examples the category head learned from.
    pub fn retrain(&self, tenant: &str) -> Result<usize> {
        let snapshot = self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(tenant)
            .copied()
            .unwrap_or(0);
        let (heads, own, space) = self.train_tenant(tenant, true)?;
        let examples = own[0];
        {
            let mut state = self.write();
            // Heads trained in a space that was swapped meanwhile (an
            // adaptation installed or dropped) are not that space's: the swap
            // installed its own.
            if state.spaces.get(tenant).map(|s| s.digest.clone()) == space {
                if own.iter().sum::<usize>() > 0 {
                    state.heads.insert(tenant.to_string(), heads);
                } else {
                    state.heads.remove(tenant);
                }
            }
        }
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = pending.get_mut(tenant) {
            *n = n.saturating_sub(snapshot);
        }
        Ok(examples)
    }

    /// Trains `tenant`'s heads on a copy of its rows taken under the read
    /// lock (training itself runs without the lock): in its adapted space
    /// when `adapted` and it has one. Returns the heads, their own-row
    /// counts and the digest of the space they were trained in.
    pub(super) fn train_tenant(
        &self,
        tenant: &str,
        adapted: bool,
    ) -> Result<(Heads, [usize; 2], Option<String>)> {
        let (owned, shared, digest) = {
            let state = self.read();
            match state.spaces.get(tenant).filter(|_| adapted) {
                Some(space) => (
                    space.memory.clone(),
                    space.shared.clone(),
                    Some(space.digest.clone()),
                ),
                None => {
                    let mut memory = TicketMemory::new(state.memory.dim());
                    for (e, v) in state
                        .memory
                        .iter()
                        .filter(|(e, _)| e.ticket.tenant == tenant)
                    {
                        memory.upsert(e.ticket.clone(), v, Some(e.corrected))?;
                    }
                    (memory, self.shared.clone(), None)
                }
            }
        };
        let (heads, own, _) = train_owner(
            &self.pack,
            &owned,
            &shared,
            &self.heads,
            Owner::Tenant(tenant),
        )?;
        Ok((heads, own, digest))
    }
}
