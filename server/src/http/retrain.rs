//! Retraining the classifier heads while the service runs.
//!
//! Ticket writes and agent corrections reach the neighbour vote at once, but
//! the engine's linear heads only learn them when [`Engine::retrain`] runs
//! (seconds of CPU at tens of thousands of tickets). The [`Retrainer`] counts
//! the labelled changes since the last training, runs at most one retrain at a
//! time on tokio's blocking pool, and keeps what `/readyz` and `/metrics`
//! report. [`background`] retrains when the [`RetrainPolicy`] says one is due;
//! `POST /v1/admin/retrain` retrains on demand. A failed (or panicking)
//! retrain keeps the previous heads and is logged; it never stops the server.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use triage::engine::Engine;

use super::error::{ApiError, ApiResult};
use super::AppState;
use crate::config::RetrainPolicy;

/// Shortest and longest pause between two background checks: the check is a
/// few atomic loads, so it can run often; it never needs to run more often
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
#[derive(Debug, Clone, Serialize)]
pub struct Retrained {
    /// Always `retrained`.
    pub status: &'static str,
    /// Tickets with a category the classifier learned from.
    pub labelled_examples: usize,
    /// Wall-clock seconds the training took.
    pub seconds: f64,
}

/// What `/readyz` reports about retraining.
#[derive(Debug, Clone, Serialize)]
pub struct RetrainStatus {
    /// Labelled changes (ticket writes, corrections) the heads have not learned yet.
    pub pending_changes: u64,
    /// Whether a retrain is running now.
    pub running: bool,
    /// When the heads were last trained (Unix seconds; engine load counts), if they were.
    pub last_trained_unix: Option<u64>,
    /// Seconds the last successful retrain took (none before the first).
    pub last_duration_seconds: Option<f64>,
    /// Successful retrains since the server started.
    pub completed: u64,
    /// Failed retrains since the server started.
    pub failed: u64,
    /// Why the last retrain failed, if it did.
    pub last_error: Option<String>,
    /// The policy: background retrain after this many changes (0 = never)...
    pub after_changes: u64,
    /// ...and at least this many seconds after the last training.
    pub min_interval_secs: u64,
}

/// Counters and timestamps behind [`RetrainStatus`].
struct History {
    /// Start of the last training or attempt (engine load counts): the
    /// minimum interval runs from here, so a failing retrain is not retried
    /// in a tight loop.
    last_attempt: Instant,
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

/// Pending-change counter, one-at-a-time guard and history of retraining.
pub struct Retrainer {
    policy: RetrainPolicy,
    pending: AtomicU64,
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
    /// A retrainer following `policy`, with nothing pending.
    pub fn new(policy: RetrainPolicy) -> Retrainer {
        Retrainer {
            policy,
            pending: AtomicU64::new(0),
            running: Arc::new(AtomicBool::new(false)),
            history: Mutex::new(History {
                last_attempt: Instant::now(),
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
        h.last_attempt = Instant::now();
        h.last_trained = Some(SystemTime::now());
    }

    /// Counts `n` writes that change labelled data (ticket upserts, imports,
    /// deletes, corrections).
    pub fn note_changes(&self, n: u64) {
        self.pending.fetch_add(n, Ordering::SeqCst);
    }

    /// Labelled changes not yet learned by the heads.
    pub fn pending(&self) -> u64 {
        self.pending.load(Ordering::SeqCst)
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

    /// Whether the background task should retrain now.
    pub fn due(&self) -> bool {
        let since = self.history().last_attempt.elapsed();
        !self.running() && is_due(&self.policy, self.pending(), since)
    }

    /// What `/readyz` and `/metrics` report.
    pub fn status(&self) -> RetrainStatus {
        let h = self.history();
        RetrainStatus {
            pending_changes: self.pending(),
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

    /// Retrains `engine` now on the blocking pool and answers when done:
    /// 409 when a retrain is already running, the engine's error when training
    /// fails (the previous heads stay in use). The bookkeeping happens on the
    /// blocking thread, so it completes even if the caller goes away.
    pub async fn retrain(
        self: &Arc<Self>,
        engine: Arc<Engine>,
        trigger: Trigger,
    ) -> ApiResult<Retrained> {
        let guard = self.try_begin().ok_or_else(|| {
            ApiError::Conflict(
                "a retrain is already running; try again when it has finished".into(),
            )
        })?;
        let this = Arc::clone(self);
        tokio::task::spawn_blocking(move || this.run(&engine, trigger, guard))
            .await
            .map_err(|e| {
                // `run` catches panics; this is a cancelled blocking task (runtime shutdown).
                tracing::error!(trigger = trigger.as_str(), "retrain task ended early: {e}");
                ApiError::Internal("the retrain was cancelled".into())
            })?
    }

    /// One retrain on the current (blocking) thread, holding `guard`.
    fn run(&self, engine: &Engine, trigger: Trigger, guard: RunGuard) -> ApiResult<Retrained> {
        let _guard = guard;
        #[cfg(test)]
        self.wait_for_test_hold();
        let taken = self.pending();
        let started = Instant::now();
        self.history().last_attempt = started;
        tracing::info!(
            trigger = trigger.as_str(),
            pending_changes = taken,
            "retraining the classifiers"
        );
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| engine.retrain()));
        let elapsed = started.elapsed();
        let failure = match result {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(ApiError::from(e)),
            Err(_) => Some(ApiError::Internal("retraining panicked".into())),
        };
        if let Some(err) = failure {
            let mut h = self.history();
            h.failed += 1;
            h.last_error = Some(err.to_string());
            drop(h);
            tracing::error!(
                trigger = trigger.as_str(),
                seconds = elapsed.as_secs_f64(),
                "retraining failed, keeping the previous classifiers: {err}"
            );
            return Err(err);
        }
        // Only this (slot-holding) code subtracts, so `pending >= taken`; changes
        // counted meanwhile stay pending for the next retrain.
        self.pending.fetch_sub(taken, Ordering::SeqCst);
        let labelled_examples = engine.stats().labelled_examples;
        {
            let mut h = self.history();
            h.completed += 1;
            h.last_trained = Some(SystemTime::now());
            h.last_duration = Some(elapsed);
            h.last_error = None;
        }
        tracing::info!(
            trigger = trigger.as_str(),
            labelled_examples,
            seconds = elapsed.as_secs_f64(),
            "classifiers retrained"
        );
        Ok(Retrained {
            status: "retrained",
            labelled_examples,
            seconds: elapsed.as_secs_f64(),
        })
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

/// The background task: every few seconds, retrains when [`Retrainer::due`].
/// Runs until aborted; returns at once when background retraining is off.
pub async fn background(state: AppState) {
    let retrainer = state.retrainer();
    let policy = retrainer.policy().clone();
    if policy.after_changes == 0 {
        tracing::info!("background retraining is off (retrain_after_changes = 0)");
        return;
    }
    let mut tick = tokio::time::interval(check_interval(&policy));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Ok(engine) = state.engine() else {
            continue;
        };
        if !retrainer.due() {
            continue;
        }
        // Failures are logged where they happen and the next attempt waits the
        // minimum interval; a conflict means an operator's retrain got there first.
        let _ = retrainer.retrain(engine, Trigger::Background).await;
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
        r.note_changes(3);
        assert!(!r.due(), "not due while running");
        drop(g);
        assert!(!r.running());
        assert!(r.due());
        assert_eq!(r.status().pending_changes, 3);
    }
}
