//! Background reclassification jobs: the durable job store and its worker
//! (served as `POST /v1/jobs/reclassify`, `GET /v1/jobs/{id}`, cancel).
//!
//! A job's tickets are written (fsynced) to `<data_dir>/jobs/<id>/input.jsonl`
//! before the job is acknowledged; one worker thread runs jobs with the same
//! code as `triage reclassify`, appending to `labels.jsonl`. The worker is
//! fair between tenants: it runs a job for at most a slice of tickets, then
//! gives the next tenant with queued work its turn (round robin; one tenant's
//! jobs run in arrival order), so a small job is not stuck behind another
//! tenant's large one. Slices use the resumability of the reclassify run.
//!
//! A job without `report.json` is unfinished: on the next start it is resumed
//! where it stopped, so a kill -9 loses nothing that was acknowledged. A
//! cancelled job has a `cancelled` marker (fsynced before the cancel is
//! answered) and is never resumed.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use indexer::Ticket;
use serde::{Deserialize, Serialize};
use triage::Engine;

use super::{ServiceError, ServiceResult};
use crate::reclassify::{self, Progress, Report, RunOptions};

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Accepted, waiting for the worker.
    Queued,
    /// Being processed.
    Running,
    /// Finished; the report is available.
    Done,
    /// Stopped with an error (see `error`).
    Failed,
    /// Cancelled by a client before it finished; the labels written so far stay.
    Cancelled,
}

/// What `GET /v1/jobs/{id}` returns.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct JobStatus {
    /// Job id.
    pub id: String,
    /// Job kind (`reclassify`).
    #[schema(value_type = String)]
    pub kind: &'static str,
    /// State.
    pub state: JobState,
    /// Tickets done so far.
    pub done: usize,
    /// Tickets in the job.
    pub total: usize,
    /// Tickets per second so far in this run.
    pub rate_per_second: f64,
    /// Estimated seconds left, while running.
    pub eta_seconds: Option<f64>,
    /// The summary report, once done.
    pub report: Option<Report>,
    /// The failure, if failed.
    pub error: Option<String>,
    /// Tenant the job belongs to.
    #[serde(skip)]
    pub tenant: String,
}

/// Job metadata persisted next to its input.
#[derive(Debug, Serialize, Deserialize)]
struct Meta {
    id: String,
    tenant: String,
    total: usize,
}

/// Tickets a job classifies per turn before the worker moves on to the next
/// tenant with queued work (a few seconds of work with the real model).
pub const SLICE_TICKETS: usize = 200;

/// Name of the marker file of a cancelled job, in its directory.
const CANCELLED: &str = "cancelled";

struct Live {
    status: JobStatus,
    started: Option<Instant>,
    started_done: usize,
    /// Set once the job is cancelled: the worker stops it at the next ticket.
    cancelled: Arc<AtomicBool>,
}

/// A job handed to the worker.
struct Queued {
    id: String,
    tenant: String,
}

/// The job registry and its worker.
pub struct Jobs {
    dir: PathBuf,
    live: Arc<Mutex<BTreeMap<String, Live>>>,
    /// Jobs whose `meta.json` could not be read at start: id → why.
    corrupt: Mutex<BTreeMap<String, String>>,
    queue: Mutex<Option<Sender<Queued>>>,
    /// Set by [`Jobs::shutdown`]: the worker stops at the next ticket.
    shutdown: Arc<AtomicBool>,
    worker: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Tickets per turn (see [`SLICE_TICKETS`]).
    slice: usize,
}

impl Jobs {
    /// A registry storing jobs under `<data_dir>/jobs`. Nothing runs until [`Jobs::start`].
    pub fn new(data_dir: &Path) -> Self {
        Jobs {
            dir: data_dir.join("jobs"),
            live: Arc::new(Mutex::new(BTreeMap::new())),
            corrupt: Mutex::new(BTreeMap::new()),
            queue: Mutex::new(None),
            shutdown: Arc::new(AtomicBool::new(false)),
            worker: Mutex::new(None),
            slice: SLICE_TICKETS,
        }
    }

    /// Sets how many tickets a job classifies per turn (at least 1) before
    /// another tenant's job gets the worker; default [`SLICE_TICKETS`].
    #[cfg(test)]
    fn with_slice(mut self, tickets: usize) -> Self {
        self.slice = tickets.max(1);
        self
    }

    /// Starts the worker on `engine` and re-queues every unfinished job found
    /// on disk (cancelled ones are loaded as cancelled, not resumed).
    pub fn start(&self, engine: Arc<Engine>) {
        let (tx, rx) = mpsc::channel::<Queued>();
        let worker = Worker {
            engine,
            dir: self.dir.clone(),
            live: Arc::clone(&self.live),
            shutdown: Arc::clone(&self.shutdown),
            slice: self.slice,
        };
        let spawned = std::thread::Builder::new()
            .name("reclassify-jobs".into())
            .spawn(move || worker.run(&rx));
        match spawned {
            Ok(handle) => {
                if let Ok(mut w) = self.worker.lock() {
                    *w = Some(handle);
                }
            }
            Err(e) => {
                tracing::error!("could not start the job worker: {e}");
                return;
            }
        }
        for meta in self.unfinished_on_disk() {
            tracing::info!(job = %meta.id, "resuming unfinished reclassify job");
            self.register(&meta, JobState::Queued);
            let _ = tx.send(Queued {
                id: meta.id,
                tenant: meta.tenant,
            });
        }
        if let Ok(mut q) = self.queue.lock() {
            *q = Some(tx);
        }
    }

    /// Persists a new job's tickets and queues it; returns its status.
    pub fn submit(&self, tenant: &str, tickets: &[Ticket]) -> ServiceResult<JobStatus> {
        let id = new_id();
        let job_dir = self.dir.join(&id);
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(&job_dir)?;
            let mut input = File::create(job_dir.join("input.jsonl"))?;
            for t in tickets {
                let mut line = serde_json::to_vec(t).map_err(std::io::Error::other)?;
                line.push(b'\n');
                input.write_all(&line)?;
            }
            input.sync_all()?;
            let meta = Meta {
                id: id.clone(),
                tenant: tenant.to_string(),
                total: tickets.len(),
            };
            let tmp = job_dir.join("meta.json.tmp");
            let mut f = File::create(&tmp)?;
            f.write_all(&serde_json::to_vec(&meta).map_err(std::io::Error::other)?)?;
            f.sync_all()?;
            std::fs::rename(&tmp, job_dir.join("meta.json"))?;
            File::open(&job_dir)?.sync_all()?;
            Ok(())
        };
        write().map_err(|e| {
            ServiceError::io(format!("cannot store job in {}", job_dir.display()), e)
        })?;
        let meta = Meta {
            id: id.clone(),
            tenant: tenant.to_string(),
            total: tickets.len(),
        };
        let status = self.register(&meta, JobState::Queued);
        let sent = self
            .queue
            .lock()
            .ok()
            .and_then(|q| {
                q.as_ref().map(|tx| {
                    tx.send(Queued {
                        id: id.clone(),
                        tenant: tenant.to_string(),
                    })
                    .is_ok()
                })
            })
            .unwrap_or(false);
        if !sent {
            return Err(ServiceError::NotReady(
                "the job worker is not running yet; the job is stored and starts with it".into(),
            ));
        }
        Ok(status)
    }

    /// The status of a job visible to `tenant` (`None` = any tenant); 500
    /// `corrupt` for a job whose metadata on disk is unreadable (its tenant
    /// is unknown, so it is reported to whoever asks for its unguessable id).
    /// Paths in the report are relative to the data directory.
    pub fn status(&self, id: &str, tenant: Option<&str>) -> ServiceResult<JobStatus> {
        let not_found = || ServiceError::NotFound(format!("no job {id:?}"));
        if let Some(why) = self.corrupt.lock().ok().and_then(|c| c.get(id).cloned()) {
            return Err(ServiceError::Corrupt(why));
        }
        let live = self
            .live
            .lock()
            .map_err(|_| ServiceError::Internal("job registry lock poisoned".into()))?;
        let job = live.get(id).ok_or_else(not_found)?;
        if tenant.is_some_and(|t| t != job.status.tenant) {
            return Err(not_found());
        }
        let mut status = job.status.clone();
        if let Some(report) = &mut status.report {
            report.input = self.relative(&report.input);
            report.output = self.relative(&report.output);
        }
        if let Some(error) = &mut status.error {
            if let Some(data_dir) = self.dir.parent() {
                let prefix = format!("{}/", data_dir.display());
                *error = error.replace(&prefix, "");
            }
        }
        if let Some(started) = job.started {
            let secs = started.elapsed().as_secs_f64();
            let done_now = status.done.saturating_sub(job.started_done);
            if secs > 0.0 && done_now > 0 {
                status.rate_per_second = done_now as f64 / secs;
                if status.state == JobState::Running {
                    let left = status.total.saturating_sub(status.done);
                    status.eta_seconds = Some(left as f64 / status.rate_per_second);
                }
            }
        }
        Ok(status)
    }

    /// `path` relative to the data directory (just the file name when it is
    /// elsewhere): responses do not reveal the server's directory layout.
    fn relative(&self, path: &Path) -> PathBuf {
        let data_dir = self.dir.parent().unwrap_or(&self.dir);
        match path.strip_prefix(data_dir) {
            Ok(rel) => rel.to_path_buf(),
            Err(_) => path.file_name().map(PathBuf::from).unwrap_or_default(),
        }
    }

    /// Path of a job's output file, for jobs visible to `tenant`.
    pub fn labels_path(&self, id: &str, tenant: Option<&str>) -> ServiceResult<PathBuf> {
        self.status(id, tenant)?;
        Ok(self.dir.join(id).join("labels.jsonl"))
    }

    /// Cancels a job visible to `tenant` (`None` = any tenant), with the
    /// same visibility rule as [`Jobs::status`]: a queued job is cancelled at
    /// once, a running one stops at the next ticket (the labels written so
    /// far stay). The cancellation is durable before this returns: a marker
    /// is fsynced in the job directory, so the job is not resumed after a
    /// restart. Cancelling a cancelled job returns its status again; a job
    /// that has already finished (done or failed) is a 409 `conflict`.
    pub fn cancel(&self, id: &str, tenant: Option<&str>) -> ServiceResult<JobStatus> {
        if let Some(why) = self.corrupt.lock().ok().and_then(|c| c.get(id).cloned()) {
            return Err(ServiceError::Corrupt(why));
        }
        {
            let mut live = self
                .live
                .lock()
                .map_err(|_| ServiceError::Internal("job registry lock poisoned".into()))?;
            let job = live
                .get_mut(id)
                .filter(|job| tenant.is_none_or(|t| t == job.status.tenant))
                .ok_or_else(|| ServiceError::NotFound(format!("no job {id:?}")))?;
            match job.status.state {
                state @ (JobState::Done | JobState::Failed) => {
                    return Err(ServiceError::Conflict(format!(
                        "job {id:?} has already finished ({}); there is nothing to cancel",
                        format!("{state:?}").to_lowercase()
                    )));
                }
                JobState::Cancelled => {}
                JobState::Queued | JobState::Running => {
                    // Under the registry lock: the worker cannot finish the
                    // job in between, and sees the state when its slice ends.
                    let job_dir = self.dir.join(id);
                    write_marker(&job_dir).map_err(|e| {
                        ServiceError::io(format!("cannot cancel job in {}", job_dir.display()), e)
                    })?;
                    job.status.state = JobState::Cancelled;
                    job.status.eta_seconds = None;
                    job.cancelled.store(true, Ordering::SeqCst);
                    tracing::info!(job = %id, "reclassify job cancelled");
                }
            }
        }
        self.status(id, tenant)
    }

    /// Asks the running job to stop at the next ticket and waits for the worker
    /// (it resumes on the next start).
    pub fn shutdown(&self) {
        self.shutdown.store(true, Ordering::SeqCst);
        if let Ok(mut q) = self.queue.lock() {
            q.take();
        }
        let handle = self.worker.lock().ok().and_then(|mut w| w.take());
        if let Some(h) = handle {
            let _ = h.join();
        }
    }

    fn register(&self, meta: &Meta, state: JobState) -> JobStatus {
        let status = JobStatus {
            id: meta.id.clone(),
            kind: "reclassify",
            state,
            done: 0,
            total: meta.total,
            rate_per_second: 0.0,
            eta_seconds: None,
            report: None,
            error: None,
            tenant: meta.tenant.clone(),
        };
        if let Ok(mut live) = self.live.lock() {
            live.insert(
                meta.id.clone(),
                Live {
                    status: status.clone(),
                    started: None,
                    started_done: 0,
                    cancelled: Arc::new(AtomicBool::new(state == JobState::Cancelled)),
                },
            );
        }
        status
    }

    /// Jobs on disk: finished ones are loaded as done, unfinished ones returned.
    fn unfinished_on_disk(&self) -> Vec<Meta> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut unfinished = Vec::new();
        for entry in entries.flatten() {
            let dir = entry.path();
            let meta_path = dir.join("meta.json");
            let meta = match std::fs::read(&meta_path) {
                Ok(bytes) => serde_json::from_slice::<Meta>(&bytes).map_err(|e| e.to_string()),
                // Written last before the job is acknowledged: without it the
                // job was never accepted, and there is nothing to resume.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    if dir.is_dir() {
                        tracing::debug!(dir = %dir.display(), "skipping unacknowledged job directory");
                    }
                    continue;
                }
                Err(e) => Err(e.to_string()),
            };
            let meta = match meta {
                Ok(meta) => meta,
                Err(e) => {
                    tracing::warn!(
                        file = %meta_path.display(),
                        "job metadata is unreadable; the job cannot run and GET /v1/jobs/<id> reports it as corrupt: {e}"
                    );
                    let id = entry.file_name().to_string_lossy().into_owned();
                    if let Ok(mut corrupt) = self.corrupt.lock() {
                        corrupt.insert(
                            id.clone(),
                            format!(
                                "job {id:?} cannot be read: jobs/{id}/meta.json is corrupt: {e}"
                            ),
                        );
                    }
                    continue;
                }
            };
            if dir.join(CANCELLED).exists() {
                self.register(&meta, JobState::Cancelled);
                let done = std::fs::read(dir.join("labels.jsonl"))
                    .map(|b| b.iter().filter(|&&c| c == b'\n').count())
                    .unwrap_or(0);
                update(&self.live, &meta.id, |s| s.done = done);
                continue;
            }
            let report = std::fs::read(dir.join("report.json"))
                .ok()
                .and_then(|b| serde_json::from_slice::<Report>(&b).ok());
            match report {
                Some(report) => {
                    self.register(&meta, JobState::Done);
                    update(&self.live, &meta.id, |s| {
                        s.done = report.tickets;
                        s.report = Some(report);
                    });
                }
                None => unfinished.push(meta),
            }
        }
        unfinished.sort_by(|a, b| a.id.cmp(&b.id));
        unfinished
    }
}

fn update(live: &Mutex<BTreeMap<String, Live>>, id: &str, f: impl FnOnce(&mut JobStatus)) {
    if let Ok(mut live) = live.lock() {
        if let Some(job) = live.get_mut(id) {
            f(&mut job.status);
        }
    }
}

/// Writes and fsyncs the `cancelled` marker of a job, and its directory entry.
fn write_marker(job_dir: &Path) -> std::io::Result<()> {
    let mut f = File::create(job_dir.join(CANCELLED))?;
    f.write_all(b"cancelled\n")?;
    f.sync_all()?;
    File::open(job_dir)?.sync_all()
}

/// Which job runs next: tenants with queued work take turns (round robin),
/// and each tenant's jobs run in arrival order.
#[derive(Default)]
struct RoundRobin {
    /// Tenant → its unfinished jobs, oldest first (never empty).
    queues: HashMap<String, VecDeque<String>>,
    /// Tenants with queued work; the front one has the turn.
    turn: VecDeque<String>,
}

impl RoundRobin {
    fn push(&mut self, job: Queued) {
        let queue = self.queues.entry(job.tenant.clone()).or_default();
        if queue.is_empty() {
            self.turn.push_back(job.tenant);
        }
        queue.push_back(job.id);
    }

    /// The job whose turn it is.
    fn front(&self) -> Option<&str> {
        let tenant = self.turn.front()?;
        self.queues.get(tenant)?.front().map(String::as_str)
    }

    /// Drops the front job (finished, cancelled or failed) without ending
    /// its tenant's turn.
    fn drop_front(&mut self) {
        let Some(tenant) = self.turn.front() else {
            return;
        };
        let emptied = self.queues.get_mut(tenant).is_none_or(|q| {
            q.pop_front();
            q.is_empty()
        });
        if emptied {
            self.queues.remove(tenant);
            self.turn.pop_front();
        }
    }

    /// Ends the turn of the front tenant, dropping its front job if that is
    /// over: the tenant goes to the back of the line if it has jobs left.
    fn end_turn(&mut self, job_over: bool) {
        let Some(tenant) = self.turn.pop_front() else {
            return;
        };
        let left = self.queues.get_mut(&tenant).is_some_and(|q| {
            if job_over {
                q.pop_front();
            }
            !q.is_empty()
        });
        if left {
            self.turn.push_back(tenant);
        } else {
            self.queues.remove(&tenant);
        }
    }

    fn is_empty(&self) -> bool {
        self.turn.is_empty()
    }
}

/// How one slice of a job ended.
enum Slice {
    /// The job finished, failed or was cancelled: drop it.
    Over,
    /// The slice's budget is spent and tickets are left: next tenant's turn.
    MoreToDo,
    /// The server is stopping: the job resumes on the next start.
    Shutdown,
}

/// What the slices of one job have added up to in this process, so that the
/// final report counts the whole run, not only its last slice.
#[derive(Default)]
struct Totals {
    slices: usize,
    resumed: usize,
    processed: usize,
    repaired_torn_line: bool,
    elapsed_seconds: f64,
}

/// The worker thread's state.
struct Worker {
    engine: Arc<Engine>,
    dir: PathBuf,
    live: Arc<Mutex<BTreeMap<String, Live>>>,
    shutdown: Arc<AtomicBool>,
    slice: usize,
}

impl Worker {
    /// Runs jobs until the queue is closed or the server stops.
    fn run(&self, rx: &Receiver<Queued>) {
        let mut order = RoundRobin::default();
        let mut totals: HashMap<String, Totals> = HashMap::new();
        let arrivals = |order: &mut RoundRobin| {
            while let Ok(job) = rx.try_recv() {
                order.push(job);
            }
        };
        loop {
            if order.is_empty() {
                match rx.recv() {
                    Ok(job) => order.push(job),
                    Err(_) => break,
                }
            }
            arrivals(&mut order);
            if self.shutdown.load(Ordering::SeqCst) {
                break;
            }
            let Some(id) = order.front().map(str::to_string) else {
                continue;
            };
            let cancelled = self.live.lock().ok().and_then(|l| {
                l.get(&id)
                    .filter(|j| j.status.state != JobState::Cancelled)
                    .map(|j| (j.status.tenant.clone(), Arc::clone(&j.cancelled)))
            });
            let Some((tenant, cancelled)) = cancelled else {
                order.drop_front();
                totals.remove(&id);
                continue;
            };
            let sums = totals.entry(id.clone()).or_default();
            let slice = self.slice(&id, tenant, &cancelled, sums);
            // Tenants that queued work during the slice are in line before
            // this one's next turn.
            arrivals(&mut order);
            match slice {
                Slice::Over => {
                    totals.remove(&id);
                    order.end_turn(true);
                }
                Slice::MoreToDo => order.end_turn(false),
                Slice::Shutdown => break,
            }
        }
    }

    /// Runs one turn of job `id`: at most `self.slice` tickets.
    fn slice(&self, id: &str, tenant: String, cancelled: &AtomicBool, sums: &mut Totals) -> Slice {
        let job_dir = self.dir.join(id);
        let stop = AtomicBool::new(false);
        let opts = RunOptions {
            tenant: Some(tenant),
            cancel: Some(&stop),
        };
        // Called once at the start of the run, then after every ticket.
        let mut calls = 0usize;
        let mut on_progress = |p: Progress| {
            if let Ok(mut l) = self.live.lock() {
                if let Some(job) = l.get_mut(id) {
                    if job.started.is_none() {
                        job.started = Some(Instant::now());
                        job.started_done = p.done;
                    }
                    if job.status.state == JobState::Queued {
                        job.status.state = JobState::Running;
                    }
                    job.status.done = p.done;
                    job.status.total = p.total;
                }
            }
            if calls >= self.slice
                || cancelled.load(Ordering::SeqCst)
                || self.shutdown.load(Ordering::SeqCst)
            {
                stop.store(true, Ordering::SeqCst);
            }
            calls += 1;
        };
        let result = reclassify::run(
            &self.engine,
            &job_dir.join("input.jsonl"),
            &job_dir.join("labels.jsonl"),
            &opts,
            &mut on_progress,
        );
        let mut report = match result {
            Ok(report) => report,
            Err(e) => {
                tracing::error!(job = %id, "reclassify job failed: {e:#}");
                self.finish(id, |s| {
                    s.state = JobState::Failed;
                    s.error = Some(format!("{e:#}"));
                });
                return Slice::Over;
            }
        };
        if sums.slices == 0 {
            sums.resumed = report.resumed;
        }
        sums.slices += 1;
        sums.processed += report.processed_this_run;
        sums.repaired_torn_line |= report.repaired_torn_line;
        sums.elapsed_seconds += report.elapsed_seconds;
        if report.interrupted {
            if self.shutdown.load(Ordering::SeqCst) {
                tracing::info!(job = %id, "job interrupted by shutdown; it resumes on restart");
                return Slice::Shutdown;
            }
            if cancelled.load(Ordering::SeqCst) {
                return Slice::Over;
            }
            return Slice::MoreToDo;
        }
        report.resumed = sums.resumed;
        report.processed_this_run = sums.processed;
        report.repaired_torn_line = sums.repaired_torn_line;
        report.elapsed_seconds = sums.elapsed_seconds;
        let base = job_dir.join("report");
        self.finish(id, move |s| {
            match reclassify::write_report(&report, &base) {
                Ok(()) => {
                    s.state = JobState::Done;
                    s.eta_seconds = None;
                    s.report = Some(report);
                }
                Err(e) => {
                    s.state = JobState::Failed;
                    s.error = Some(format!("{e:#}"));
                }
            }
        });
        Slice::Over
    }

    /// Applies the end of a job to its status, under the registry lock,
    /// unless it was cancelled meanwhile (then it stays cancelled and no
    /// report is written: a cancel that was answered is never undone).
    fn finish(&self, id: &str, f: impl FnOnce(&mut JobStatus)) {
        if let Ok(mut live) = self.live.lock() {
            if let Some(job) = live.get_mut(id) {
                if job.status.state != JobState::Cancelled {
                    f(&mut job.status);
                }
            }
        }
    }
}

/// A new job id: time-ordered and unguessable.
fn new_id() -> String {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    format!("job-{millis:013x}-{:08x}", rand::random::<u32>())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::reclassify::test_engine::{engine, open_gate, wait_entered};

    const BOUND: Duration = Duration::from_secs(60);

    fn tickets(prefix: &str, n: usize, text: impl Fn(usize) -> String) -> Vec<Ticket> {
        (0..n)
            .map(|i| Ticket {
                id: format!("{prefix}-{i}"),
                title: "洗衣机漏水".into(),
                body: text(i),
                category: "repair.water_leak".into(),
                ..Ticket::default()
            })
            .collect()
    }

    fn started(dir: &Path, slice: usize) -> Jobs {
        let jobs = Jobs::new(dir).with_slice(slice);
        jobs.start(engine());
        jobs
    }

    /// Waits (bounded) until job `id` is in `state`.
    fn wait_state(jobs: &Jobs, id: &str, state: JobState) -> JobStatus {
        let started = Instant::now();
        loop {
            let status = jobs.status(id, None).unwrap();
            if status.state == state {
                return status;
            }
            assert!(
                started.elapsed() < BOUND,
                "job {id} never {state:?}: {status:?}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn label_lines(dir: &Path, id: &str) -> usize {
        std::fs::read_to_string(dir.join("jobs").join(id).join("labels.jsonl"))
            .map(|t| t.lines().count())
            .unwrap_or(0)
    }

    #[test]
    fn round_robin_alternates_tenants_and_keeps_each_tenants_order() {
        let mut rr = RoundRobin::default();
        for (tenant, id) in [("a", "a1"), ("a", "a2"), ("b", "b1"), ("c", "c1")] {
            rr.push(Queued {
                id: id.into(),
                tenant: tenant.into(),
            });
        }
        let mut ran = Vec::new();
        // a1 needs two turns; everything else one.
        let mut a1_turns = 0;
        while let Some(id) = rr.front().map(str::to_string) {
            ran.push(id.clone());
            let over = id != "a1" || {
                a1_turns += 1;
                a1_turns == 2
            };
            rr.end_turn(over);
            if ran.len() == 2 {
                // A late arrival joins the end of the line.
                rr.push(Queued {
                    id: "d1".into(),
                    tenant: "d".into(),
                });
            }
        }
        // d arrived when a (after its first turn) was already back in line.
        assert_eq!(ran, ["a1", "b1", "c1", "a1", "d1", "a2"]);
        assert!(rr.is_empty() && rr.queues.is_empty());
        // Dropping a cancelled job does not cost its tenant the turn.
        for (tenant, id) in [("a", "a1"), ("a", "a2"), ("b", "b1")] {
            rr.push(Queued {
                id: id.into(),
                tenant: tenant.into(),
            });
        }
        rr.drop_front();
        assert_eq!(rr.front(), Some("a2"));
    }

    #[test]
    fn a_small_job_of_another_tenant_runs_between_slices_of_a_big_one() {
        let dir = tempfile::tempdir().unwrap();
        let jobs = started(dir.path(), 2);
        // The big job's first slice (2 tickets) passes gate fair1, the rest waits at fair2.
        let big = tickets("BIG", 12, |i| {
            let gate = if i < 2 { "fair1" } else { "fair2" };
            format!("洗衣机底部漏水 {i} GATE-{gate}")
        });
        let big = jobs.submit("tenant-a", &big).unwrap().id;
        wait_entered("fair1", 1);
        let small = tickets("SMALL", 2, |i| format!("洗衣机漏水了 {i}"));
        let small = jobs.submit("tenant-b", &small).unwrap().id;
        open_gate("fair1");
        let done = wait_state(&jobs, &small, JobState::Done);
        assert_eq!(done.report.as_ref().map(|r| r.tickets), Some(2));
        let status = jobs.status(&big, None).unwrap();
        assert_eq!(
            (status.state, status.done),
            (JobState::Running, 2),
            "{status:?}"
        );
        open_gate("fair2");
        let status = wait_state(&jobs, &big, JobState::Done);
        let report = status.report.unwrap();
        assert_eq!(
            (report.tickets, report.processed_this_run, report.resumed),
            (12, 12, 0)
        );
        assert_eq!(label_lines(dir.path(), &big), 12);
        jobs.shutdown();
    }

    #[test]
    fn a_queued_job_is_cancelled_at_once_durably_and_never_runs() {
        let dir = tempfile::tempdir().unwrap();
        let jobs = started(dir.path(), SLICE_TICKETS);
        let first = tickets("Q1", 2, |i| format!("洗衣机底部漏水 {i} GATE-queued"));
        let first = jobs.submit("t", &first).unwrap().id;
        wait_entered("queued", 1);
        let second = jobs
            .submit("t", &tickets("Q2", 3, |i| format!("漏水 {i}")))
            .unwrap()
            .id;
        assert_eq!(jobs.status(&second, None).unwrap().state, JobState::Queued);
        // Another tenant's key does not see it.
        assert!(matches!(
            jobs.cancel(&second, Some("other")),
            Err(ServiceError::NotFound(_))
        ));
        assert!(matches!(
            jobs.cancel("job-none", None),
            Err(ServiceError::NotFound(_))
        ));
        let cancelled = jobs.cancel(&second, Some("t")).unwrap();
        assert_eq!(cancelled.state, JobState::Cancelled);
        assert!(dir
            .path()
            .join("jobs")
            .join(&second)
            .join(CANCELLED)
            .is_file());
        // Cancelling again answers the same; a finished job cannot be cancelled.
        assert_eq!(
            jobs.cancel(&second, None).unwrap().state,
            JobState::Cancelled
        );
        open_gate("queued");
        wait_state(&jobs, &first, JobState::Done);
        assert!(matches!(
            jobs.cancel(&first, None),
            Err(ServiceError::Conflict(_))
        ));
        jobs.shutdown();
        assert_eq!(label_lines(dir.path(), &second), 0);
        // After a restart it is still cancelled and does not run.
        let jobs = started(dir.path(), SLICE_TICKETS);
        assert_eq!(
            jobs.status(&second, None).unwrap().state,
            JobState::Cancelled
        );
        let later = jobs
            .submit("t", &tickets("Q3", 1, |_| "漏水".into()))
            .unwrap()
            .id;
        wait_state(&jobs, &later, JobState::Done);
        assert_eq!(
            jobs.status(&second, None).unwrap().state,
            JobState::Cancelled
        );
        assert_eq!(label_lines(dir.path(), &second), 0);
        assert!(!dir
            .path()
            .join("jobs")
            .join(&second)
            .join("report.json")
            .exists());
        jobs.shutdown();
    }

    #[test]
    fn a_running_job_stops_at_the_next_ticket_when_cancelled() {
        let dir = tempfile::tempdir().unwrap();
        let jobs = started(dir.path(), SLICE_TICKETS);
        let all = tickets("RUN", 20, |i| format!("洗衣机底部漏水 {i} GATE-running"));
        let id = jobs.submit("t", &all).unwrap().id;
        wait_entered("running", 1);
        assert_eq!(jobs.status(&id, None).unwrap().state, JobState::Running);
        assert_eq!(jobs.cancel(&id, None).unwrap().state, JobState::Cancelled);
        open_gate("running");
        // The worker is free again once the cancelled job has stopped.
        let next = jobs
            .submit("t", &tickets("AFTER", 1, |_| "漏水".into()))
            .unwrap()
            .id;
        wait_state(&jobs, &next, JobState::Done);
        let status = jobs.status(&id, None).unwrap();
        assert_eq!(
            (status.state, status.done),
            (JobState::Cancelled, 1),
            "{status:?}"
        );
        assert_eq!(
            label_lines(dir.path(), &id),
            1,
            "only the ticket in progress was finished"
        );
        assert!(status.report.is_none());
        jobs.shutdown();
        let jobs = started(dir.path(), SLICE_TICKETS);
        let status = jobs.status(&id, None).unwrap();
        assert_eq!((status.state, status.done), (JobState::Cancelled, 1));
        jobs.shutdown();
        assert_eq!(label_lines(dir.path(), &id), 1);
    }

    #[test]
    fn a_job_stopped_by_shutdown_resumes_after_restart_without_repeats() {
        let dir = tempfile::tempdir().unwrap();
        let jobs = started(dir.path(), 4);
        let all = tickets("SD", 9, |i| format!("洗衣机底部漏水 {i} GATE-shutdown"));
        let id = jobs.submit("t", &all).unwrap().id;
        wait_entered("shutdown", 1);
        std::thread::scope(|s| {
            s.spawn(|| jobs.shutdown());
            // Let the ticket in progress finish only once shutdown is asked for.
            let asked = Instant::now();
            while !jobs.shutdown.load(Ordering::SeqCst) {
                assert!(asked.elapsed() < BOUND, "shutdown never asked");
                std::thread::yield_now();
            }
            open_gate("shutdown");
        });
        assert_eq!(label_lines(dir.path(), &id), 1);
        let jobs = started(dir.path(), 4);
        let report = wait_state(&jobs, &id, JobState::Done).report.unwrap();
        assert_eq!(
            (report.tickets, report.resumed, report.processed_this_run),
            (9, 1, 8)
        );
        let text = std::fs::read_to_string(dir.path().join("jobs").join(&id).join("labels.jsonl"))
            .unwrap();
        let ids: std::collections::HashSet<&str> = text
            .lines()
            .map(|l| l.split('"').nth(3).unwrap_or_default())
            .collect();
        assert_eq!((ids.len(), text.lines().count()), (9, 9));
        jobs.shutdown();
    }
}
