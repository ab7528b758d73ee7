//! Retraining while the service runs: labelled writes are counted per tenant
//! until [`Engine::retrain`] trains that tenant's heads again (see
//! [`heads`](super::heads) for what they learn from).

use super::heads::{train_owner, Owner};
use super::Engine;
use crate::error::Result;

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

    /// Retrains `tenant`'s classifiers from its labelled tickets now in the
    /// store (corrections included; a fixed sample beyond
    /// [`super::heads::MAX_OWN_ROWS`]) and the shared pack, and nothing of any
    /// other tenant; seconds for thousands of tickets, bounded beyond.
    /// Returns the labelled examples the category head learned from.
    pub fn retrain(&self, tenant: &str) -> Result<usize> {
        let snapshot = self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(tenant)
            .copied()
            .unwrap_or(0);
        // Training reads the tenant's rows from the store, without the state lock.
        let corrected = self.read().corrected.clone();
        let (heads, own) = train_owner(
            &self.pack,
            self.store.as_ref(),
            &corrected,
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
}
