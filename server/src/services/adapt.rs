//! Adapting tenants' encoders in the background (`/v1/admin/adapt`).
//!
//! An adaptation takes minutes of CPU ([`Engine::adapt`]): it runs on a
//! thread of its own, one at a time in the process, training on
//! [`Adaptations::threads`] threads (one by default, so requests keep the
//! other core of a small machine). `POST` starts one for the caller's tenant
//! and answers at once; `GET` says where it stands (running, the adapter in
//! use, the last verdict of the held-out fold, the last error); `DELETE`
//! drops the tenant's adapter. A failed or panicking adaptation changes
//! nothing and is reported, never fatal.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;
use triage::{AdaptSettings, Engine};

use super::{ServiceError, ServiceResult};

/// Default threads an adaptation trains on.
pub const DEFAULT_ADAPT_THREADS: usize = 1;

/// The held-out fold's verdict on the last adaptation of a tenant.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AdaptVerdict {
    /// Whether the adapted encoder is now used for the tenant's labels.
    pub accepted: bool,
    /// The tenant's labelled tickets held out to judge it.
    pub held_out: usize,
    /// Their accuracy with the shipped encoder.
    pub frozen_accuracy: f32,
    /// Their accuracy with the adapted encoder.
    pub adapted_accuracy: f32,
    /// Seconds the whole adaptation took.
    pub seconds: f32,
}

/// Where a tenant's adaptation stands (`GET /v1/admin/adapt`).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AdaptStatus {
    /// The tenant.
    pub tenant: String,
    /// Whether an adaptation of this tenant is running now.
    pub running: bool,
    /// The digest of the adapter the tenant's decisions use, if any.
    pub active: Option<String>,
    /// The last finished adaptation's verdict.
    pub last: Option<AdaptVerdict>,
    /// Why the last adaptation of this tenant failed, if it did.
    pub last_error: Option<String>,
}

/// What `DELETE /v1/admin/adapt` did.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AdaptDropped {
    /// The tenant.
    pub tenant: String,
    /// Whether an adapter was stored or in use (and is now gone).
    pub dropped: bool,
}

/// One adaptation at a time, and each tenant's last error.
pub struct Adaptations {
    threads: usize,
    running: Mutex<Option<String>>,
    errors: Mutex<HashMap<String, String>>,
    /// Pauses the next adaptation once it runs (tests, no sleeps).
    #[cfg(test)]
    pub(crate) hold: Mutex<Option<super::retrain::TestHold>>,
}

impl Adaptations {
    /// Adaptations training on `threads` threads (at least one).
    pub fn new(threads: usize) -> Adaptations {
        Adaptations {
            threads: threads.max(1),
            running: Mutex::new(None),
            errors: Mutex::new(HashMap::new()),
            #[cfg(test)]
            hold: Mutex::new(None),
        }
    }

    /// Threads an adaptation trains on.
    pub fn threads(&self) -> usize {
        self.threads
    }

    fn running(&self) -> MutexGuard<'_, Option<String>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn errors(&self) -> MutexGuard<'_, HashMap<String, String>> {
        self.errors.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Where `tenant`'s adaptation stands.
    pub fn status(&self, engine: &Engine, tenant: &str) -> AdaptStatus {
        let a = engine.adaptation(tenant);
        AdaptStatus {
            tenant: tenant.to_string(),
            running: self.running().as_deref() == Some(tenant),
            active: a.active,
            last: a.last.map(|s| AdaptVerdict {
                accepted: s.fold.accepted,
                held_out: s.fold.held_out,
                frozen_accuracy: s.fold.frozen_accuracy,
                adapted_accuracy: s.fold.adapted_accuracy,
                seconds: s.seconds,
            }),
            last_error: self.errors().get(tenant).cloned(),
        }
    }

    /// Starts adapting `tenant` on a thread of its own; 409 while any
    /// adaptation runs.
    pub fn start(self: &Arc<Self>, engine: Arc<Engine>, tenant: &str) -> ServiceResult<()> {
        {
            let mut running = self.running();
            if let Some(other) = running.as_ref() {
                let whose = if other == tenant { "this" } else { "another" };
                return Err(ServiceError::Conflict(format!(
                    "an adaptation of {whose} tenant is running; try again when it has finished"
                )));
            }
            *running = Some(tenant.to_string());
        }
        let this = Arc::clone(self);
        let who = tenant.to_string();
        let spawned = std::thread::Builder::new()
            .name("adapt".into())
            .spawn(move || this.run(&engine, &who));
        if let Err(e) = spawned {
            *self.running() = None;
            return Err(ServiceError::Internal(format!(
                "could not start the adaptation: {e}"
            )));
        }
        Ok(())
    }

    fn run(&self, engine: &Engine, tenant: &str) {
        #[cfg(test)]
        {
            let hold = self.hold.lock().ok().and_then(|mut h| h.take());
            if let Some(h) = hold {
                let _ = h.started.send(());
                let _ = h.release.recv();
            }
        }
        let mut settings = AdaptSettings::default();
        settings.options.threads = self.threads;
        tracing::info!(tenant, threads = self.threads, "adapting the encoder");
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| engine.adapt(tenant, &settings)));
        let error = match result {
            Ok(Ok(outcome)) => {
                tracing::info!(
                    tenant,
                    accepted = outcome.accepted,
                    frozen = outcome.summary.fold.frozen_accuracy,
                    adapted = outcome.summary.fold.adapted_accuracy,
                    seconds = outcome.summary.seconds,
                    "adaptation finished"
                );
                None
            }
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some("the adaptation panicked".to_string()),
        };
        match error {
            Some(e) => {
                tracing::warn!(tenant, error = %e, "adaptation failed; nothing changed");
                self.errors().insert(tenant.to_string(), e);
            }
            None => {
                self.errors().remove(tenant);
            }
        }
        *self.running() = None;
    }

    /// Drops `tenant`'s adapter; 409 while that tenant is being adapted.
    pub fn drop_adapter(&self, engine: &Engine, tenant: &str) -> ServiceResult<AdaptDropped> {
        // Held while dropping, so no adaptation starts meanwhile.
        let running = self.running();
        if running.as_deref() == Some(tenant) {
            return Err(ServiceError::Conflict(
                "this tenant is being adapted; drop its adapter when that has finished".into(),
            ));
        }
        let dropped = engine.drop_adaptation(tenant)?;
        drop(running);
        Ok(AdaptDropped {
            tenant: tenant.to_string(),
            dropped,
        })
    }
}
