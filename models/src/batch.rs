//! Micro-batching of concurrent embedding calls, next to the embedder it
//! wraps (as TEI keeps its queue and batching in its core, not in the router).
//!
//! Request handlers each embed one or two short texts; run one at a time the
//! model is memory-bound and slow per text. [`BatchingEmbedder`] sends small
//! calls to one worker thread that, while other callers are inside `embed`,
//! waits up to [`BATCH_WINDOW`] for their texts, then embeds everyone's texts
//! of the same kind in one forward pass and hands each caller its own
//! vectors. A lone caller is never delayed. Large calls (bulk ingest,
//! reclassification) bypass the queue so they never stall chat requests.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::{EmbedKind, Error, TextEmbedder};

/// How long the worker waits for more callers after the first one arrives.
pub const BATCH_WINDOW: Duration = Duration::from_millis(2);
/// Calls with more texts than this go straight to the model.
const DIRECT_CALL_TEXTS: usize = 8;
/// Most texts embedded in one batched forward pass.
const MAX_BATCH_TEXTS: usize = 32;

type Reply = Result<Vec<Vec<f32>>, Error>;

struct Job {
    texts: Vec<String>,
    kind: EmbedKind,
    reply: Sender<Reply>,
}

/// A [`TextEmbedder`] that coalesces concurrent small calls into batches.
pub struct BatchingEmbedder {
    inner: Arc<dyn TextEmbedder>,
    queue: Mutex<Sender<Job>>,
    /// Callers currently inside a queued `embed` call.
    waiting: Arc<AtomicUsize>,
}

impl BatchingEmbedder {
    /// Wraps `inner` and starts the batching worker thread (it ends when this is dropped).
    pub fn new(inner: Arc<dyn TextEmbedder>) -> Self {
        Self::with_window(inner, BATCH_WINDOW)
    }

    /// As [`BatchingEmbedder::new`], waiting up to `window` for more callers.
    fn with_window(inner: Arc<dyn TextEmbedder>, window: Duration) -> Self {
        let (tx, rx) = mpsc::channel::<Job>();
        let worker_model = Arc::clone(&inner);
        let waiting = Arc::new(AtomicUsize::new(0));
        let worker_waiting = Arc::clone(&waiting);
        let spawned = std::thread::Builder::new()
            .name("embed-batcher".into())
            .spawn(move || worker(worker_model.as_ref(), &rx, &worker_waiting, window));
        if let Err(e) = spawned {
            // Without a worker every call falls back to direct embedding (send fails).
            tracing::warn!("could not start the embedding batcher: {e}");
        }
        BatchingEmbedder {
            inner,
            queue: Mutex::new(tx),
            waiting,
        }
    }
}

impl TextEmbedder for BatchingEmbedder {
    fn encoder(&self) -> Option<&crate::Embedder> {
        self.inner.encoder()
    }

    fn embed(&self, texts: &[&str], kind: EmbedKind) -> Result<Vec<Vec<f32>>, Error> {
        if texts.is_empty() || texts.len() > DIRECT_CALL_TEXTS {
            return self.inner.embed(texts, kind);
        }
        let (reply, answer) = mpsc::channel();
        let job = Job {
            texts: texts.iter().map(|t| (*t).to_string()).collect(),
            kind,
            reply,
        };
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let sent = match self.queue.lock() {
            Ok(queue) => queue.send(job).is_ok(),
            Err(_) => false,
        };
        let result = if sent {
            answer
                .recv()
                .map_err(|_| Error::InvalidInput("the embedding batcher stopped".into()))
                .and_then(|r| r)
        } else {
            self.inner.embed(texts, kind)
        };
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        result
    }

    fn dim(&self) -> usize {
        self.inner.dim()
    }

    fn name(&self) -> &str {
        self.inner.name()
    }
}

/// Takes the next job, then collects the other waiting callers' jobs for up
/// to `window`, and embeds them per kind.
fn worker(model: &dyn TextEmbedder, rx: &Receiver<Job>, waiting: &AtomicUsize, window: Duration) {
    while let Ok(first) = rx.recv() {
        let deadline = Instant::now() + window;
        let mut jobs = vec![first];
        let mut texts: usize = jobs[0].texts.len();
        while texts < MAX_BATCH_TEXTS {
            // Everything queued right now joins without waiting.
            if let Ok(job) = rx.try_recv() {
                texts += job.texts.len();
                jobs.push(job);
                continue;
            }
            // Wait only for callers that are inside `embed` but not queued yet.
            if jobs.len() >= waiting.load(Ordering::SeqCst) {
                break;
            }
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            match rx.recv_timeout(deadline - now) {
                Ok(job) => {
                    texts += job.texts.len();
                    jobs.push(job);
                }
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        let (queries, passages): (Vec<Job>, Vec<Job>) =
            jobs.into_iter().partition(|j| j.kind == EmbedKind::Query);
        for (group, kind) in [(queries, EmbedKind::Query), (passages, EmbedKind::Passage)] {
            if !group.is_empty() {
                run_group(model, group, kind);
            }
        }
    }
}

/// Embeds a group of same-kind jobs in one call; on failure, each job alone so
/// every caller gets its own error (or its vectors when only another failed).
fn run_group(model: &dyn TextEmbedder, group: Vec<Job>, kind: EmbedKind) {
    let all: Vec<&str> = group
        .iter()
        .flat_map(|j| j.texts.iter().map(String::as_str))
        .collect();
    tracing::trace!(jobs = group.len(), texts = all.len(), "embedding batch");
    match model.embed(&all, kind) {
        Ok(vectors) if vectors.len() == all.len() => {
            let mut vectors = vectors.into_iter();
            for job in group {
                let mine: Vec<Vec<f32>> = vectors.by_ref().take(job.texts.len()).collect();
                // A caller that gave up (timed out) is not an error here.
                let _ = job.reply.send(Ok(mine));
            }
        }
        _ => {
            for job in group {
                let refs: Vec<&str> = job.texts.iter().map(String::as_str).collect();
                let _ = job.reply.send(model.embed(&refs, kind));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic fake model: the vector encodes the text length and kind,
    /// and it counts calls so the test can see batching happen.
    struct Fake {
        calls: AtomicUsize,
    }

    impl TextEmbedder for Fake {
        fn embed(&self, texts: &[&str], kind: EmbedKind) -> Result<Vec<Vec<f32>>, Error> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(20));
            if texts.contains(&"fail") {
                return Err(Error::InvalidInput("fail".into()));
            }
            let k = if kind == EmbedKind::Query { 1.0 } else { 2.0 };
            Ok(texts.iter().map(|t| vec![t.len() as f32, k]).collect())
        }
        fn dim(&self) -> usize {
            2
        }
        fn name(&self) -> &str {
            "fake"
        }
    }

    #[test]
    fn concurrent_calls_share_batches_and_get_their_own_vectors() {
        let fake = Arc::new(Fake {
            calls: AtomicUsize::new(0),
        });
        let batcher = Arc::new(BatchingEmbedder::new(fake.clone()));
        let handles: Vec<_> = (0..16)
            .map(|i| {
                let b = Arc::clone(&batcher);
                std::thread::spawn(move || {
                    let text = "x".repeat(i + 1);
                    let kind = if i % 2 == 0 {
                        EmbedKind::Query
                    } else {
                        EmbedKind::Passage
                    };
                    let v = b.embed(&[&text], kind).unwrap();
                    (i, kind, v)
                })
            })
            .collect();
        for h in handles {
            let (i, kind, v) = h.join().unwrap();
            let k = if kind == EmbedKind::Query { 1.0 } else { 2.0 };
            assert_eq!(v, vec![vec![(i + 1) as f32, k]]);
        }
        // 16 callers, each model call takes 20 ms: they must have been coalesced.
        assert!(fake.calls.load(Ordering::SeqCst) < 16);
    }

    #[test]
    fn a_lone_caller_is_not_delayed() {
        let fake = Arc::new(Fake {
            calls: AtomicUsize::new(0),
        });
        // A window so long that waiting it out even once would dwarf any
        // scheduling noise: ten lone calls (20 ms each) must not wait for company.
        let window = Duration::from_secs(30);
        let batcher = BatchingEmbedder::with_window(fake.clone(), window);
        let started = Instant::now();
        for _ in 0..10 {
            batcher.embed(&["x"], EmbedKind::Query).unwrap();
        }
        let elapsed = started.elapsed();
        assert!(elapsed < window / 2, "{elapsed:?}");
        assert_eq!(fake.calls.load(Ordering::SeqCst), 10);
    }

    #[test]
    fn one_failing_caller_does_not_fail_the_others() {
        let fake = Arc::new(Fake {
            calls: AtomicUsize::new(0),
        });
        let batcher = Arc::new(BatchingEmbedder::new(fake));
        let b1 = Arc::clone(&batcher);
        let bad = std::thread::spawn(move || b1.embed(&["fail"], EmbedKind::Query));
        let good = batcher.embed(&["good"], EmbedKind::Query).unwrap();
        assert_eq!(good, vec![vec![4.0, 1.0]]);
        assert!(bad.join().unwrap().is_err());
    }
}
