//! Background reclassification jobs (`POST /v1/jobs/reclassify`, `GET /v1/jobs/{id}`).
//!
//! A job's tickets are written (fsynced) to `<data_dir>/jobs/<id>/input.jsonl`
//! before the job is acknowledged; one worker thread runs jobs in order with
//! the same code as `triage reclassify`, appending to `labels.jsonl`. A job
//! without `report.json` is unfinished: on the next start it is resumed where
//! it stopped, so a kill -9 loses nothing that was acknowledged.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use indexer::Ticket;
use serde::{Deserialize, Serialize};
use triage::engine::Engine;

use super::error::{ApiError, ApiResult};
use crate::reclassify::{self, Progress, Report, RunOptions};

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
}

/// What `GET /v1/jobs/{id}` returns.
#[derive(Debug, Clone, Serialize)]
pub struct JobStatus {
    /// Job id.
    pub id: String,
    /// Job kind (`reclassify`).
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

struct Live {
    status: JobStatus,
    started: Option<Instant>,
    started_done: usize,
}

/// The job registry and its worker.
pub struct Jobs {
    dir: PathBuf,
    live: Arc<Mutex<BTreeMap<String, Live>>>,
    /// Jobs whose `meta.json` could not be read at start: id → why.
    corrupt: Mutex<BTreeMap<String, String>>,
    queue: Mutex<Option<Sender<String>>>,
    cancel: Arc<AtomicBool>,
    worker: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Jobs {
    /// A registry storing jobs under `<data_dir>/jobs`. Nothing runs until [`Jobs::start`].
    pub fn new(data_dir: &Path) -> Self {
        Jobs {
            dir: data_dir.join("jobs"),
            live: Arc::new(Mutex::new(BTreeMap::new())),
            corrupt: Mutex::new(BTreeMap::new()),
            queue: Mutex::new(None),
            cancel: Arc::new(AtomicBool::new(false)),
            worker: Mutex::new(None),
        }
    }

    /// Starts the worker on `engine` and re-queues every unfinished job found on disk.
    pub fn start(&self, engine: Arc<Engine>) {
        let (tx, rx) = mpsc::channel::<String>();
        let live = Arc::clone(&self.live);
        let cancel = Arc::clone(&self.cancel);
        let dir = self.dir.clone();
        let spawned = std::thread::Builder::new()
            .name("reclassify-jobs".into())
            .spawn(move || worker(&engine, &dir, &live, &cancel, &rx));
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
            let _ = tx.send(meta.id);
        }
        if let Ok(mut q) = self.queue.lock() {
            *q = Some(tx);
        }
    }

    /// Persists a new job's tickets and queues it; returns its status.
    pub fn submit(&self, tenant: &str, tickets: &[Ticket]) -> ApiResult<JobStatus> {
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
            let message = format!("cannot store job in {}: {e}", job_dir.display());
            match e.kind() {
                std::io::ErrorKind::PermissionDenied
                | std::io::ErrorKind::ReadOnlyFilesystem
                | std::io::ErrorKind::StorageFull => ApiError::Storage(message),
                _ => ApiError::Internal(message),
            }
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
            .and_then(|q| q.as_ref().map(|tx| tx.send(id.clone()).is_ok()))
            .unwrap_or(false);
        if !sent {
            return Err(ApiError::NotReady(
                "the job worker is not running yet; the job is stored and starts with it".into(),
            ));
        }
        Ok(status)
    }

    /// The status of a job visible to `tenant` (`None` = any tenant); 500
    /// `corrupt` for a job whose metadata on disk is unreadable (its tenant
    /// is unknown, so it is reported to whoever asks for its unguessable id).
    /// Paths in the report are relative to the data directory.
    pub fn status(&self, id: &str, tenant: Option<&str>) -> ApiResult<JobStatus> {
        let not_found = || ApiError::NotFound(format!("no job {id:?}"));
        if let Some(why) = self.corrupt.lock().ok().and_then(|c| c.get(id).cloned()) {
            return Err(ApiError::Corrupt(why));
        }
        let live = self
            .live
            .lock()
            .map_err(|_| ApiError::Internal("job registry lock poisoned".into()))?;
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
    pub fn labels_path(&self, id: &str, tenant: Option<&str>) -> ApiResult<PathBuf> {
        self.status(id, tenant)?;
        Ok(self.dir.join(id).join("labels.jsonl"))
    }

    /// Asks the running job to stop at the next ticket and waits for the worker
    /// (it resumes on the next start).
    pub fn shutdown(&self) {
        self.cancel.store(true, Ordering::SeqCst);
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

fn worker(
    engine: &Engine,
    dir: &Path,
    live: &Mutex<BTreeMap<String, Live>>,
    cancel: &AtomicBool,
    rx: &Receiver<String>,
) {
    while let Ok(id) = rx.recv() {
        if cancel.load(Ordering::SeqCst) {
            break;
        }
        let job_dir = dir.join(&id);
        let tenant = live
            .lock()
            .ok()
            .and_then(|l| l.get(&id).map(|j| j.status.tenant.clone()))
            .unwrap_or_default();
        let opts = RunOptions {
            tenant: Some(tenant),
            cancel: Some(cancel),
        };
        let mut first = true;
        let mut on_progress = |p: Progress| {
            if let Ok(mut l) = live.lock() {
                if let Some(job) = l.get_mut(&id) {
                    if first {
                        job.started = Some(Instant::now());
                        job.started_done = p.done;
                        job.status.state = JobState::Running;
                        first = false;
                    }
                    job.status.done = p.done;
                    job.status.total = p.total;
                }
            }
        };
        let result = reclassify::run(
            engine,
            &job_dir.join("input.jsonl"),
            &job_dir.join("labels.jsonl"),
            &opts,
            &mut on_progress,
        );
        match result {
            Ok(report) if report.interrupted => {
                tracing::info!(job = %id, "job interrupted by shutdown; it resumes on restart");
                break;
            }
            Ok(report) => {
                let written = reclassify::write_report(&report, &job_dir.join("report"));
                update(live, &id, |s| match written {
                    Ok(()) => {
                        s.state = JobState::Done;
                        s.eta_seconds = None;
                        s.report = Some(report);
                    }
                    Err(e) => {
                        s.state = JobState::Failed;
                        s.error = Some(format!("{e:#}"));
                    }
                });
            }
            Err(e) => {
                tracing::error!(job = %id, "reclassify job failed: {e:#}");
                update(live, &id, |s| {
                    s.state = JobState::Failed;
                    s.error = Some(format!("{e:#}"));
                });
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
