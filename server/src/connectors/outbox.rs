//! The durable outbox: every call the service makes to another system (a
//! Zammad write-back, a Chatwoot reply, a signed event) is a step of an
//! [`Item`] written here before the request that caused it is answered,
//! and delivered by one worker thread, in order per conversation or ticket,
//! with retries.
//!
//! On disk, under `<data_dir>/outbox/`: `pending/<id>.json` (written to a
//! temporary file, fsynced, renamed, the directory fsynced: a kill -9 leaves
//! the old or the new version, never a torn one), `failed/<id>.json` (given
//! up, with the reason; surfaced in `/readyz`, `/metrics` and
//! `GET /v1/admin/outbox`), and `done/<id>` (an empty marker, so a repeated
//! delivery id is known for [`DONE_KEEP_DAYS`] days).
//!
//! **Never twice.** Before a step is sent the item records that it is in
//! flight (fsynced). A step whose previous attempt may have reached the other
//! side (in flight at a crash, a timeout, a dropped connection, a 5xx) is
//! first checked there: a Zammad note carries its reference in its subject and
//! is looked for among the ticket's articles, a tag among the ticket's tags, a
//! group and priority in the ticket; found, the step counts as done. A
//! Chatwoot bot cannot read a conversation back, so a message whose attempt
//! may have been delivered is not resent but failed and surfaced (at most
//! once); a status toggle is idempotent. Signed events carry a stable id
//! (`Triage-Event-Id`) for receivers to drop repeats, as Stripe's do.
//!
//! **Retries.** 5xx, 408, 429, timeouts and connection failures are retried
//! after `base · 2^(n-1)` (capped at `max`) with jitter (a uniformly random
//! delay between half and all of it), and never before a `Retry-After` the
//! other side sent; after `max_attempts` the item is given up. Any other 4xx
//! will not succeed by waiting: the item fails at once, with the answer.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::Digest;

use super::deliver::{Deliverer, Prior, StepOutcome};
use super::settings::{RetryPolicy, Settings};
use crate::services::{ServiceError, ServiceResult};

/// Days a delivered item's id is remembered (a platform retrying a delivery
/// later than that would be acted on again).
pub const DONE_KEEP_DAYS: u64 = 30;
/// Failures listed in the stats.
const RECENT_FAILURES: usize = 20;
/// Longest wait a `Retry-After` can impose.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// One call to another system.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Step {
    /// `PUT /api/v1/tickets/{ticket}`: group and priority.
    ZammadTicket {
        /// Zammad ticket id.
        ticket: u64,
        /// Group name.
        group: Option<String>,
        /// Priority id.
        priority_id: Option<u64>,
    },
    /// `POST /api/v1/tags/add`.
    ZammadTag {
        /// Zammad ticket id.
        ticket: u64,
        /// The tag.
        tag: String,
    },
    /// `POST /api/v1/ticket_articles`: an internal note.
    ZammadNote {
        /// Zammad ticket id.
        ticket: u64,
        /// Subject, carrying the item's reference (what a check looks for).
        subject: String,
        /// HTML body.
        body: String,
    },
    /// `POST /api/v1/accounts/{account}/conversations/{conversation}/messages`.
    ChatwootMessage {
        /// Account id.
        account: u64,
        /// Conversation id.
        conversation: u64,
        /// Text.
        content: String,
        /// A private note (agents only).
        private: bool,
    },
    /// `POST /api/v1/accounts/{account}/conversations/{conversation}/toggle_status`.
    ChatwootStatus {
        /// Account id.
        account: u64,
        /// Conversation id.
        conversation: u64,
        /// `open`, ...
        status: String,
    },
    /// A signed event to a configured endpoint.
    Event {
        /// The endpoint.
        url: String,
        /// The event's id (`Triage-Event-Id`).
        event_id: String,
        /// The event's type.
        event_type: String,
        /// The JSON body, exactly as signed and sent.
        body: String,
    },
}

impl Step {
    /// A short name for logs and listings.
    pub fn name(&self) -> &'static str {
        match self {
            Step::ZammadTicket { .. } => "zammad.ticket",
            Step::ZammadTag { .. } => "zammad.tag",
            Step::ZammadNote { .. } => "zammad.note",
            Step::ChatwootMessage { .. } => "chatwoot.message",
            Step::ChatwootStatus { .. } => "chatwoot.status",
            Step::Event { .. } => "event",
        }
    }
}

/// A delivery: the steps caused by one webhook or decision, in order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Item {
    /// File name: a digest of `key`.
    pub id: String,
    /// What caused it (`zammad/<tenant>/<delivery id>`, ...): a repeat is a duplicate.
    pub key: String,
    /// Whose it is.
    pub tenant: String,
    /// `zammad`, `chatwoot` or `webhook`.
    pub connector: String,
    /// Items with the same order key are delivered in the order they were written.
    pub order_key: String,
    /// Position in the outbox (time of writing, in microseconds, made unique).
    pub seq: u64,
    /// When it was written (Unix seconds).
    pub created_unix: u64,
    /// The calls.
    pub steps: Vec<Step>,
    /// The next step to run.
    pub step: usize,
    /// Attempts of that step so far.
    pub attempts: u32,
    /// Whether an attempt of that step may have reached the other side.
    pub maybe_applied: bool,
    /// Not before (Unix milliseconds).
    pub next_at_ms: u64,
    /// The last failure.
    pub last_error: Option<String>,
}

/// What [`Outbox::enqueue`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enqueued {
    /// The item's id.
    pub id: String,
    /// True when the key was already known: nothing was written.
    pub duplicate: bool,
}

/// One item as listed for its tenant's administrators.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ItemSummary {
    /// The item's id.
    pub id: String,
    /// `zammad`, `chatwoot` or `webhook`.
    pub connector: String,
    /// `pending` or `failed`.
    pub state: String,
    /// The step it is at (`zammad.note`, ...).
    pub step: String,
    /// Steps done of all.
    pub steps_done: usize,
    /// Steps in all.
    pub steps_total: usize,
    /// Attempts of the current step.
    pub attempts: u32,
    /// When it was written (Unix seconds).
    pub created_unix: u64,
    /// Why the last attempt failed (or why it was given up).
    pub error: Option<String>,
}

/// The outbox's figures, for `/metrics` and `/readyz`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct OutboxStats {
    /// Items waiting to be delivered.
    pub pending: usize,
    /// Pending items by connector.
    pub pending_by_connector: BTreeMap<String, usize>,
    /// Items given up (kept in `outbox/failed/`).
    pub failed: usize,
    /// Age of the oldest pending item (seconds).
    pub oldest_pending_seconds: u64,
    /// Items delivered since the start.
    pub delivered_total: u64,
    /// Failed attempts that were retried, since the start.
    pub retries_total: u64,
    /// The latest items given up.
    pub recent_failures: Vec<ItemSummary>,
}

struct Queue {
    /// seq → item.
    pending: BTreeMap<u64, Item>,
    /// Failed items (summaries), oldest first.
    failed: Vec<(String, ItemSummary)>,
    /// Every id known (pending, failed, done).
    known: BTreeSet<String>,
    last_seq: u64,
}

struct Inner {
    dir: PathBuf,
    queue: Mutex<Queue>,
    wake: Condvar,
    shutdown: AtomicBool,
    delivered: AtomicU64,
    retries: AtomicU64,
    policy: RetryPolicy,
}

/// The outbox and its worker.
pub struct Outbox {
    inner: Arc<Inner>,
    worker: Mutex<Option<std::thread::JoinHandle<()>>>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The id (file name) of a key: 32 hex characters of its SHA-256.
pub fn id_of(key: &str) -> String {
    hex::encode(&sha2::Sha256::digest(key.as_bytes())[..16])
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ServiceError {
    let context = context.into();
    move |e| ServiceError::io(context, e)
}

/// Writes `bytes` to `path` durably: a temporary file, fsync, rename, fsync of the directory.
fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    sync_dir(path.parent().unwrap_or_else(|| Path::new(".")))
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

fn summary(item: &Item, state: &str) -> ItemSummary {
    ItemSummary {
        id: item.id.clone(),
        connector: item.connector.clone(),
        state: state.into(),
        step: item
            .steps
            .get(item.step)
            .map(|s| s.name().to_string())
            .unwrap_or_default(),
        steps_done: item.step,
        steps_total: item.steps.len(),
        attempts: item.attempts,
        created_unix: item.created_unix,
        error: item.last_error.clone(),
    }
}

/// The delay before attempt `attempts + 1` of a step (see the module docs):
/// exponential, capped, jittered, never before `retry_after`.
pub fn backoff(policy: &RetryPolicy, attempts: u32, retry_after: Option<Duration>) -> Duration {
    let exp = policy
        .base
        .saturating_mul(1u32 << attempts.saturating_sub(1).min(20))
        .min(policy.max);
    let half = exp / 2;
    let jittered = half + exp.saturating_sub(half).mul_f64(rand::random::<f64>());
    jittered.max(retry_after.unwrap_or_default().min(MAX_RETRY_AFTER))
}

impl Outbox {
    /// Opens (creating) `<data_dir>/outbox`, loading what a previous run
    /// left; nothing is delivered until [`Outbox::start`].
    pub fn open(data_dir: &Path, policy: RetryPolicy) -> ServiceResult<Outbox> {
        let dir = data_dir.join("outbox");
        for sub in ["pending", "failed", "done"] {
            std::fs::create_dir_all(dir.join(sub))
                .map_err(io(format!("creating {}", dir.join(sub).display())))?;
        }
        let mut queue = Queue {
            pending: BTreeMap::new(),
            failed: Vec::new(),
            known: BTreeSet::new(),
            last_seq: 0,
        };
        let read_items = |sub: &str| -> ServiceResult<Vec<Item>> {
            let mut items = Vec::new();
            let d = dir.join(sub);
            for entry in std::fs::read_dir(&d).map_err(io(format!("reading {}", d.display())))? {
                let path = entry
                    .map_err(io(format!("reading {}", d.display())))?
                    .path();
                if path.extension().is_some_and(|e| e == "tmp") {
                    // A write a crash interrupted: the item is the renamed file, or was never acknowledged.
                    let _ = std::fs::remove_file(&path);
                    continue;
                }
                let text =
                    std::fs::read(&path).map_err(io(format!("reading {}", path.display())))?;
                let item: Item = serde_json::from_slice(&text).map_err(|e| {
                    ServiceError::Corrupt(format!("outbox item {}: {e}", path.display()))
                })?;
                items.push(item);
            }
            Ok(items)
        };
        for item in read_items("pending")? {
            queue.known.insert(item.id.clone());
            queue.last_seq = queue.last_seq.max(item.seq);
            queue.pending.insert(item.seq, item);
        }
        let mut failed = read_items("failed")?;
        failed.sort_by_key(|i| i.seq);
        for item in failed {
            queue.known.insert(item.id.clone());
            queue
                .failed
                .push((item.tenant.clone(), summary(&item, "failed")));
        }
        let keep = Duration::from_secs(DONE_KEEP_DAYS * 86_400);
        let done = dir.join("done");
        for entry in std::fs::read_dir(&done)
            .map_err(io(format!("reading {}", done.display())))?
            .flatten()
        {
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > keep);
            if old {
                let _ = std::fs::remove_file(entry.path());
            } else {
                queue
                    .known
                    .insert(entry.file_name().to_string_lossy().into_owned());
            }
        }
        Ok(Outbox {
            inner: Arc::new(Inner {
                dir,
                queue: Mutex::new(queue),
                wake: Condvar::new(),
                shutdown: AtomicBool::new(false),
                delivered: AtomicU64::new(0),
                retries: AtomicU64::new(0),
                policy,
            }),
            worker: Mutex::new(None),
        })
    }

    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.inner.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `key` was already written (pending, failed or delivered).
    pub fn knows(&self, key: &str) -> bool {
        self.queue().known.contains(&id_of(key))
    }

    /// Writes an item for `key` durably (unless `key` is known: then nothing
    /// is written and the answer says `duplicate`), and wakes the worker. An
    /// item without steps is remembered as done (a delivery acted on with
    /// nothing to send).
    pub fn enqueue(
        &self,
        key: &str,
        tenant: &str,
        connector: &str,
        order_key: &str,
        steps: Vec<Step>,
    ) -> ServiceResult<Enqueued> {
        let id = id_of(key);
        let mut queue = self.queue();
        if queue.known.contains(&id) {
            return Ok(Enqueued {
                id,
                duplicate: true,
            });
        }
        if steps.is_empty() {
            let marker = self.inner.dir.join("done").join(&id);
            File::create(&marker)
                .and_then(|f| f.sync_all())
                .and_then(|()| sync_dir(&self.inner.dir.join("done")))
                .map_err(io(format!("writing {}", marker.display())))?;
            queue.known.insert(id.clone());
            return Ok(Enqueued {
                id,
                duplicate: false,
            });
        }
        let now = now_ms();
        let seq = (now * 1000).max(queue.last_seq + 1);
        let item = Item {
            id: id.clone(),
            key: key.to_string(),
            tenant: tenant.to_string(),
            connector: connector.to_string(),
            order_key: order_key.to_string(),
            seq,
            created_unix: now / 1000,
            steps,
            step: 0,
            attempts: 0,
            maybe_applied: false,
            next_at_ms: now,
            last_error: None,
        };
        self.persist(&item)?;
        queue.last_seq = seq;
        queue.known.insert(id.clone());
        queue.pending.insert(seq, item);
        drop(queue);
        self.inner.wake.notify_all();
        Ok(Enqueued {
            id,
            duplicate: false,
        })
    }

    fn pending_path(&self, id: &str) -> PathBuf {
        self.inner.dir.join("pending").join(format!("{id}.json"))
    }

    fn persist(&self, item: &Item) -> ServiceResult<()> {
        let path = self.pending_path(&item.id);
        let bytes = serde_json::to_vec(item).map_err(|e| ServiceError::Internal(e.to_string()))?;
        write_durably(&path, &bytes).map_err(io(format!("writing {}", path.display())))
    }

    /// Starts the worker thread, which delivers with `settings`' endpoints and secrets.
    pub fn start(self: &Arc<Self>, settings: Arc<Settings>) {
        let mut worker = self.worker.lock().unwrap_or_else(|p| p.into_inner());
        if worker.is_some() {
            return;
        }
        let outbox = Arc::clone(self);
        let deliverer = Deliverer::new(settings, self.inner.policy.timeout);
        match std::thread::Builder::new()
            .name("outbox".into())
            .spawn(move || outbox.run(&deliverer))
        {
            Ok(handle) => *worker = Some(handle),
            Err(e) => tracing::error!("could not start the outbox worker: {e}"),
        }
    }

    /// Stops the worker after the call in progress (bounded by the call timeout).
    pub fn shutdown(&self) {
        self.inner.shutdown.store(true, Ordering::SeqCst);
        self.inner.wake.notify_all();
        let handle = self.worker.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }

    /// The next item due: the earliest of the items first in their order key.
    fn next_due(queue: &Queue, now: u64) -> (Option<u64>, Option<u64>) {
        let mut heads = BTreeSet::new();
        let mut best: Option<(u64, u64)> = None;
        for (seq, item) in &queue.pending {
            if !heads.insert(item.order_key.as_str()) {
                continue;
            }
            if best.is_none_or(|(at, _)| item.next_at_ms < at) {
                best = Some((item.next_at_ms, *seq));
            }
        }
        match best {
            Some((at, seq)) if at <= now => (Some(seq), None),
            Some((at, _)) => (None, Some(at)),
            None => (None, None),
        }
    }

    fn run(&self, deliverer: &Deliverer) {
        loop {
            let item = {
                let mut queue = self.queue();
                loop {
                    if self.inner.shutdown.load(Ordering::SeqCst) {
                        return;
                    }
                    let now = now_ms();
                    match Self::next_due(&queue, now) {
                        (Some(seq), _) => break queue.pending.get(&seq).cloned(),
                        (None, at) => {
                            let wait = at.map_or(Duration::from_secs(3600), |at| {
                                Duration::from_millis(at.saturating_sub(now))
                            });
                            queue = self
                                .inner
                                .wake
                                .wait_timeout(queue, wait)
                                .unwrap_or_else(|p| p.into_inner())
                                .0;
                        }
                    }
                }
            };
            if let Some(item) = item {
                if let Err(e) = self.attempt(deliverer, item) {
                    tracing::error!("outbox: {e}");
                    // The disk refused the update: wait before trying again.
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        }
    }

    /// Runs the current step of `item` once and records what became of it.
    fn attempt(&self, deliverer: &Deliverer, mut item: Item) -> ServiceResult<()> {
        let Some(step) = item.steps.get(item.step).cloned() else {
            return self.finish(item);
        };
        // Whether an earlier attempt may have reached the other side (a
        // timeout, a 5xx, or in flight when the process died): then the step
        // is checked there before it is sent again.
        let prior = Prior {
            in_flight: item.maybe_applied,
            retried: item.attempts > 0,
        };
        if !item.maybe_applied {
            // Known to the disk before anything is sent.
            item.maybe_applied = true;
            self.persist(&item)?;
        }
        let outcome = deliverer.run(&item.tenant, &step, prior);
        let policy = self.inner.policy;
        match outcome {
            StepOutcome::Done => {
                tracing::debug!(item = %item.id, step = step.name(), "outbox step delivered");
                item.step += 1;
                item.attempts = 0;
                item.maybe_applied = false;
                item.last_error = None;
                if item.step >= item.steps.len() {
                    return self.finish(item);
                }
                item.next_at_ms = now_ms();
                self.update(item)
            }
            StepOutcome::Retry {
                error,
                retry_after,
                maybe_applied,
            } => {
                item.attempts += 1;
                item.maybe_applied = maybe_applied;
                item.last_error = Some(format!("{}: {error}", step.name()));
                if item.attempts >= policy.max_attempts {
                    item.last_error = Some(format!(
                        "{}: gave up after {} attempts; last: {error}",
                        step.name(),
                        item.attempts
                    ));
                    return self.fail(item);
                }
                self.inner.retries.fetch_add(1, Ordering::Relaxed);
                let delay = backoff(&policy, item.attempts, retry_after);
                tracing::warn!(item = %item.id, step = step.name(), attempts = item.attempts,
                    delay_ms = delay.as_millis() as u64, "outbox: {error}; retrying");
                item.next_at_ms = now_ms() + delay.as_millis() as u64;
                self.update(item)
            }
            StepOutcome::Permanent(error) => {
                item.last_error = Some(format!("{}: {error}", step.name()));
                self.fail(item)
            }
        }
    }

    fn update(&self, item: Item) -> ServiceResult<()> {
        self.persist(&item)?;
        self.queue().pending.insert(item.seq, item);
        Ok(())
    }

    fn finish(&self, item: Item) -> ServiceResult<()> {
        let marker = self.inner.dir.join("done").join(&item.id);
        File::create(&marker)
            .and_then(|f| f.sync_all())
            .map_err(io(format!("writing {}", marker.display())))?;
        let path = self.pending_path(&item.id);
        std::fs::remove_file(&path).map_err(io(format!("removing {}", path.display())))?;
        sync_dir(&self.inner.dir.join("pending")).map_err(io("syncing the outbox"))?;
        self.queue().pending.remove(&item.seq);
        self.inner.delivered.fetch_add(1, Ordering::Relaxed);
        tracing::info!(item = %item.id, connector = %item.connector, "outbox item delivered");
        Ok(())
    }

    fn fail(&self, item: Item) -> ServiceResult<()> {
        tracing::error!(item = %item.id, connector = %item.connector,
            "outbox item given up: {}", item.last_error.as_deref().unwrap_or("unknown"));
        let path = self
            .inner
            .dir
            .join("failed")
            .join(format!("{}.json", item.id));
        let bytes = serde_json::to_vec(&item).map_err(|e| ServiceError::Internal(e.to_string()))?;
        write_durably(&path, &bytes).map_err(io(format!("writing {}", path.display())))?;
        let pending = self.pending_path(&item.id);
        std::fs::remove_file(&pending).map_err(io(format!("removing {}", pending.display())))?;
        let mut queue = self.queue();
        queue.pending.remove(&item.seq);
        queue
            .failed
            .push((item.tenant.clone(), summary(&item, "failed")));
        Ok(())
    }

    /// The figures of all tenants (for the operator).
    pub fn stats(&self) -> OutboxStats {
        let queue = self.queue();
        let now = now_ms() / 1000;
        let mut by = BTreeMap::new();
        for item in queue.pending.values() {
            *by.entry(item.connector.clone()).or_insert(0) += 1;
        }
        OutboxStats {
            pending: queue.pending.len(),
            pending_by_connector: by,
            failed: queue.failed.len(),
            oldest_pending_seconds: queue
                .pending
                .values()
                .map(|i| now.saturating_sub(i.created_unix))
                .max()
                .unwrap_or(0),
            delivered_total: self.inner.delivered.load(Ordering::Relaxed),
            retries_total: self.inner.retries.load(Ordering::Relaxed),
            recent_failures: queue
                .failed
                .iter()
                .rev()
                .take(RECENT_FAILURES)
                .map(|(_, s)| s.clone())
                .collect(),
        }
    }

    /// A tenant's pending and failed items (all tenants' with `None`).
    pub fn list(&self, tenant: Option<&str>) -> Vec<ItemSummary> {
        let queue = self.queue();
        let mine = |t: &str| tenant.is_none_or(|want| want == t);
        let mut out: Vec<ItemSummary> = queue
            .pending
            .values()
            .filter(|i| mine(&i.tenant))
            .map(|i| summary(i, "pending"))
            .collect();
        out.extend(
            queue
                .failed
                .iter()
                .filter(|(t, _)| mine(t))
                .map(|(_, s)| s.clone()),
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            base: Duration::from_millis(100),
            max: Duration::from_millis(1000),
            max_attempts: 3,
            timeout: Duration::from_millis(500),
        }
    }

    #[test]
    fn backoff_doubles_is_capped_jittered_and_honours_retry_after() {
        let p = policy();
        for _ in 0..50 {
            let first = backoff(&p, 1, None);
            assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
            let third = backoff(&p, 3, None);
            assert!(third >= Duration::from_millis(200) && third <= Duration::from_millis(400));
            let capped = backoff(&p, 30, None);
            assert!(capped >= Duration::from_millis(500) && capped <= Duration::from_millis(1000));
            assert_eq!(
                backoff(&p, 1, Some(Duration::from_secs(7))),
                Duration::from_secs(7)
            );
        }
    }

    #[test]
    fn items_survive_a_reopen_and_keys_are_remembered() {
        let dir = tempfile::tempdir().unwrap();
        let step = Step::ZammadTag {
            ticket: 1,
            tag: "x".into(),
        };
        {
            let outbox = Outbox::open(dir.path(), policy()).unwrap();
            let a = outbox
                .enqueue("k1", "", "zammad", "t1", vec![step.clone()])
                .unwrap();
            assert!(!a.duplicate);
            assert!(
                outbox
                    .enqueue("k1", "", "zammad", "t1", vec![step.clone()])
                    .unwrap()
                    .duplicate
            );
            assert!(
                !outbox
                    .enqueue("k2", "", "zammad", "t1", vec![])
                    .unwrap()
                    .duplicate
            );
            // A torn temporary file (a crash mid-write) is ignored.
            std::fs::write(dir.path().join("outbox/pending/zz.tmp"), b"{").unwrap();
        }
        let outbox = Outbox::open(dir.path(), policy()).unwrap();
        assert!(outbox.knows("k1") && outbox.knows("k2") && !outbox.knows("k3"));
        let listed = outbox.list(Some(""));
        assert_eq!(listed.len(), 1);
        assert_eq!(
            (listed[0].state.as_str(), listed[0].step.as_str()),
            ("pending", "zammad.tag")
        );
        assert!(outbox.list(Some("acme")).is_empty());
        assert_eq!(outbox.stats().pending_by_connector["zammad"], 1);
    }

    #[test]
    fn an_earlier_item_of_the_same_order_key_goes_first() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(dir.path(), policy()).unwrap();
        let step = |t: &str| Step::ZammadTag {
            ticket: 1,
            tag: t.into(),
        };
        outbox
            .enqueue("a", "", "zammad", "ticket-1", vec![step("a")])
            .unwrap();
        outbox
            .enqueue("b", "", "zammad", "ticket-1", vec![step("b")])
            .unwrap();
        outbox
            .enqueue("c", "", "zammad", "ticket-2", vec![step("c")])
            .unwrap();
        let mut queue = outbox.queue();
        let first = *queue.pending.keys().next().unwrap();
        // The first item waits (a retry later): the second of its ticket may not overtake it.
        queue.pending.get_mut(&first).unwrap().next_at_ms = u64::MAX;
        let (due, _) = Outbox::next_due(&queue, now_ms());
        assert_eq!(queue.pending[&due.unwrap()].key, "c");
    }
}
