//! Retraining the classifier heads while the service runs.
//!
//! Ticket writes and agent corrections reach the neighbour vote at once, but
//! a tenant's linear heads only learn them when [`Engine::retrain`] runs for
//! that tenant (seconds of CPU at tens of thousands of tickets). The engine
//! counts each tenant's labelled changes where they happen
//! ([`Engine::pending_changes`]); the [`Retrainer`] runs at most one retrain
//! at a time on tokio's blocking pool, and keeps what `/readyz`, `/metrics`
//! and `/v1/admin/stats` report. [`background`] retrains a tenant when the
//! [`RetrainPolicy`] says one is due; `POST /v1/admin/retrain` retrains the
//! caller's tenant on demand. A failed (or panicking) retrain keeps the
//! previous heads and is logged; it never stops the server.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use triage::Engine;

use super::{ServiceError, ServiceResult};

/// Default number of labelled changes (ticket writes, corrections) after which
/// the server retrains a tenant's classifiers in the background.
pub const DEFAULT_RETRAIN_AFTER_CHANGES: u64 = 50;
/// Default shortest time between two trainings, in seconds: a retrain costs
/// seconds of CPU at tens of thousands of tickets, so a busy desk must not
/// retrain after every burst of edits.
pub const DEFAULT_RETRAIN_MIN_INTERVAL_SECS: u64 = 300;

/// When the server retrains its classifier heads in the background. Ticket
/// writes and corrections reach the neighbour vote at once, but the linear
/// heads only learn them when retrained; `POST /v1/admin/retrain` retrains on
/// demand whatever this says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrainPolicy {
    /// Labelled changes that must be pending before a background retrain; 0 = never.
    pub after_changes: u64,
    /// Time that must have passed since the last training (or attempt).
    pub min_interval: Duration,
}

impl Default for RetrainPolicy {
    fn default() -> Self {
        RetrainPolicy {
            after_changes: DEFAULT_RETRAIN_AFTER_CHANGES,
            min_interval: Duration::from_secs(DEFAULT_RETRAIN_MIN_INTERVAL_SECS),
        }
    }
}

/// Shortest and longest pause between two background checks: the check is a
/// few map lookups, so it can run often; it never needs to run more often
/// than the minimum interval itself.
const MIN_CHECK: Duration = Duration::from_millis(100);
const MAX_CHECK: Duration = Duration::from_secs(5);

/// Who asked for a retrain (logged with it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// An operator or batch job, through `POST /v1/admin/retrain`.
    Admin,
    /// The background task, after enough labelled changes.
    Background,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Trigger::Admin => "admin",
            Trigger::Background => "background",
        }
    }
}

/// The answer of a finished retrain (`POST /v1/admin/retrain`).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Retrained {
    /// Always `retrained`.
    #[schema(value_type = String)]
    pub status: &'static str,
    /// The tenant whose heads were retrained.
    pub tenant: String,
    /// The tenant's tickets with a category the classifier learned from.
    pub labelled_examples: usize,
    /// Wall-clock seconds the training took.
    pub seconds: f64,
}

/// What `/readyz` and `/v1/admin/stats` report about retraining.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RetrainStatus {
    /// Labelled changes (ticket writes, corrections) the heads have not
    /// learned yet: of the tenant asked about, or of all tenants.
    pub pending_changes: u64,
    /// Whether a retrain is running now.
    pub running: bool,
    /// When heads were last trained (Unix seconds; engine load counts), if they were.
    pub last_trained_unix: Option<u64>,
    /// Seconds the last successful retrain took (none before the first).
    pub last_duration_seconds: Option<f64>,
    /// Successful retrains since the server started.
    pub completed: u64,
    /// Failed retrains since the server started.
    pub failed: u64,
    /// Why the last retrain failed, if it did.
    pub last_error: Option<String>,
    /// The policy: background retrain after this many changes of a tenant (0 = never)...
    pub after_changes: u64,
    /// ...and at least this many seconds after that tenant's last training.
    pub min_interval_secs: u64,
}

/// Counters and timestamps behind [`RetrainStatus`].
struct History {
    /// When the engine was loaded (which trains every tenant's heads).
    loaded: Instant,
    /// Start of each tenant's last training or attempt: the minimum interval
    /// runs from here (engine load counts), so a failing retrain is not
    /// retried in a tight loop.
    last_attempt: HashMap<String, Instant>,
    last_trained: Option<SystemTime>,
    last_duration: Option<Duration>,
    completed: u64,
    failed: u64,
    last_error: Option<String>,
}

/// Pauses a retrain after it took the slot and before it trains, so a test
/// can hold one "running" deterministically (no sleeps).
#[cfg(test)]
pub(crate) struct TestHold {
    /// Signalled when the held retrain has taken the slot.
    pub started: std::sync::mpsc::Sender<()>,
    /// The retrain trains once this receives (or its sender is dropped).
    pub release: std::sync::mpsc::Receiver<()>,
}

/// One-at-a-time guard and history of retraining.
pub struct Retrainer {
    policy: RetrainPolicy,
    running: Arc<AtomicBool>,
    history: Mutex<History>,
    #[cfg(test)]
    pub(crate) hold: Mutex<Option<TestHold>>,
}

/// The one retrain slot, held while a retrain runs; dropping it (also when a
/// retrain panics, or its task never starts) frees the slot.
pub struct RunGuard {
    running: Arc<AtomicBool>,
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        self.running.store(false, Ordering::SeqCst);
    }
}

/// Whether a background retrain is due: enabled, enough changes pending, and
/// the minimum interval passed since the last training or attempt.
pub fn is_due(policy: &RetrainPolicy, pending: u64, since_last: Duration) -> bool {
    policy.after_changes > 0 && pending >= policy.after_changes && since_last >= policy.min_interval
}

/// How often the background task checks whether a retrain is due.
pub fn check_interval(policy: &RetrainPolicy) -> Duration {
    policy.min_interval.clamp(MIN_CHECK, MAX_CHECK)
}

impl Retrainer {
    /// A retrainer following `policy`.
    pub fn new(policy: RetrainPolicy) -> Retrainer {
        Retrainer {
            policy,
            running: Arc::new(AtomicBool::new(false)),
            history: Mutex::new(History {
                loaded: Instant::now(),
                last_attempt: HashMap::new(),
                last_trained: None,
                last_duration: None,
                completed: 0,
                failed: 0,
                last_error: None,
            }),
            #[cfg(test)]
            hold: Mutex::new(None),
        }
    }

    fn history(&self) -> MutexGuard<'_, History> {
        self.history.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The policy in force.
    pub fn policy(&self) -> &RetrainPolicy {
        &self.policy
    }

    /// Records that the engine was just opened, which trains the heads.
    pub fn engine_loaded(&self) {
        let mut h = self.history();
        h.loaded = Instant::now();
        h.last_trained = Some(SystemTime::now());
    }

    /// Whether a retrain is running.
    pub fn running(&self) -> bool {
        self.running.load(Ordering::SeqCst)
    }

    /// Takes the retrain slot, or `None` when a retrain is running.
    pub fn try_begin(&self) -> Option<RunGuard> {
        self.running
            .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
            .ok()
            .map(|_| RunGuard {
                running: Arc::clone(&self.running),
            })
    }

    /// The tenants whose background retrain is due now, most pending first.
    pub fn due(&self, engine: &Engine) -> Vec<String> {
        if self.running() {
            return Vec::new();
        }
        let h = self.history();
        let mut due: Vec<(String, u64)> = engine
            .pending_changes()
            .into_iter()
            .filter(|(tenant, pending)| {
                let since = h.last_attempt.get(tenant).unwrap_or(&h.loaded).elapsed();
                is_due(&self.policy, *pending, since)
            })
            .collect();
        due.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        due.into_iter().map(|(t, _)| t).collect()
    }

    /// What `/readyz` and `/v1/admin/stats` report: pending changes of
    /// `tenant` (`None`: of all tenants).
    pub fn status(&self, engine: Option<&Engine>, tenant: Option<&str>) -> RetrainStatus {
        let pending = engine.map_or(0, |e| {
            e.pending_changes()
                .into_iter()
                .filter(|(t, _)| tenant.is_none_or(|x| x == t))
                .map(|(_, n)| n)
                .sum()
        });
        let h = self.history();
        RetrainStatus {
            pending_changes: pending,
            running: self.running(),
            last_trained_unix: h
                .last_trained
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| d.as_secs()),
            last_duration_seconds: h.last_duration.map(|d| d.as_secs_f64()),
            completed: h.completed,
            failed: h.failed,
            last_error: h.last_error.clone(),
            after_changes: self.policy.after_changes,
            min_interval_secs: self.policy.min_interval.as_secs(),
        }
    }

    /// Retrains `tenant`'s heads now on the blocking pool and answers when
    /// done: 409 when a retrain is already running, the engine's error when
    /// training fails (the previous heads stay in use). The bookkeeping
    /// happens on the blocking thread, so it completes even if the caller
    /// goes away.
    pub async fn retrain(
        self: &Arc<Self>,
        engine: Arc<Engine>,
        tenant: String,
        trigger: Trigger,
    ) -> ServiceResult<Retrained> {
        let guard = self.try_begin().ok_or_else(|| {
            ServiceError::Conflict(
                "a retrain is already running; try again when it has finished".into(),
            )
        })?;
        let this = Arc::clone(self);
        tokio::task::spawn_blocking(move || this.run(&engine, &tenant, trigger, guard))
            .await
            .map_err(|e| {
                // `run` catches panics; this is a cancelled blocking task (runtime shutdown).
                tracing::error!(trigger = trigger.as_str(), "retrain task ended early: {e}");
                ServiceError::Internal("the retrain was cancelled".into())
            })?
    }

    /// One retrain on the current (blocking) thread, holding `guard`.
    fn run(
        &self,
        engine: &Engine,
        tenant: &str,
        trigger: Trigger,
        guard: RunGuard,
    ) -> ServiceResult<Retrained> {
        let _guard = guard;
        #[cfg(test)]
        self.wait_for_test_hold();
        let started = Instant::now();
        self.history()
            .last_attempt
            .insert(tenant.to_string(), started);
        tracing::info!(
            trigger = trigger.as_str(),
            tenant,
            "retraining the classifiers"
        );
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| engine.retrain(tenant)));
        let elapsed = started.elapsed();
        let labelled_examples = match result {
            Ok(Ok(n)) => n,
            Ok(Err(e)) => return Err(self.failed(ServiceError::Engine(e), trigger, elapsed)),
            Err(_) => {
                let err = ServiceError::Internal("retraining panicked".into());
                return Err(self.failed(err, trigger, elapsed));
            }
        };
        {
            let mut h = self.history();
            h.completed += 1;
            h.last_trained = Some(SystemTime::now());
            h.last_duration = Some(elapsed);
            h.last_error = None;
        }
        tracing::info!(
            trigger = trigger.as_str(),
            tenant,
            labelled_examples,
            seconds = elapsed.as_secs_f64(),
            "classifiers retrained"
        );
        Ok(Retrained {
            status: "retrained",
            tenant: tenant.to_string(),
            labelled_examples,
            seconds: elapsed.as_secs_f64(),
        })
    }

    /// Records a failed retrain and hands its error back.
    fn failed(&self, err: ServiceError, trigger: Trigger, elapsed: Duration) -> ServiceError {
        let mut h = self.history();
        h.failed += 1;
        h.last_error = Some(err.to_string());
        drop(h);
        tracing::error!(
            trigger = trigger.as_str(),
            seconds = elapsed.as_secs_f64(),
            "retraining failed, keeping the previous classifiers: {err}"
        );
        err
    }

    #[cfg(test)]
    fn wait_for_test_hold(&self) {
        let hold = self.hold.lock().ok().and_then(|mut h| h.take());
        if let Some(h) = hold {
            let _ = h.started.send(());
            let _ = h.release.recv();
        }
    }
}

/// The background task: every few seconds, retrains the tenants that are
/// [`Retrainer::due`] on the engine `engine` returns (none while it loads).
/// Runs until aborted; returns at once when background retraining is off.
pub async fn background<F>(retrainer: Arc<Retrainer>, engine: F)
where
    F: Fn() -> Option<Arc<Engine>> + Send + 'static,
{
    let policy = retrainer.policy().clone();
    if policy.after_changes == 0 {
        tracing::info!("background retraining is off (retrain_after_changes = 0)");
        return;
    }
    let mut tick = tokio::time::interval(check_interval(&policy));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(engine) = engine() else {
            continue;
        };
        for tenant in retrainer.due(&engine) {
            // Failures are logged where they happen and the next attempt waits the
            // minimum interval; a conflict means an operator's retrain got there first.
            let _ = retrainer
                .retrain(Arc::clone(&engine), tenant, Trigger::Background)
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(after: u64, secs: u64) -> RetrainPolicy {
        RetrainPolicy {
            after_changes: after,
            min_interval: Duration::from_secs(secs),
        }
    }

    #[test]
    fn due_needs_enough_changes_and_the_interval() {
        let p = policy(50, 300);
        assert!(!is_due(&p, 49, Duration::from_secs(1000)));
        assert!(!is_due(&p, 50, Duration::from_secs(299)));
        assert!(is_due(&p, 50, Duration::from_secs(300)));
        assert!(is_due(&p, 500, Duration::from_secs(301)));
        // 0 turns background retraining off, however much is pending.
        assert!(!is_due(&policy(0, 0), u64::MAX, Duration::MAX));
    }

    #[test]
    fn checks_run_every_few_seconds_at_most() {
        assert_eq!(check_interval(&policy(50, 300)), MAX_CHECK);
        assert_eq!(check_interval(&policy(50, 0)), MIN_CHECK);
        assert_eq!(check_interval(&policy(50, 1)), Duration::from_secs(1));
    }

    #[test]
    fn one_slot_freed_on_drop() {
        let r = Retrainer::new(policy(1, 0));
        let g = r.try_begin().expect("free");
        assert!(r.running());
        assert!(r.try_begin().is_none());
        drop(g);
        assert!(!r.running());
        assert!(r.try_begin().is_some());
    }
}
