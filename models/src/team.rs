//! A small team of persistent, spinning worker threads for one forward pass.
//!
//! One short query is ~60 dependent steps of a few hundred microseconds or
//! less; handing each to a thread pool that parks its threads (rayon) costs
//! tens of microseconds per step, as much as the arithmetic. Here every
//! thread runs the whole forward pass as one job, splitting each step's
//! columns or rows by its index, and the threads meet at a spinning barrier
//! between dependent steps (well under a microsecond on two cores). Idle
//! workers spin a little after a job (back-to-back requests stay hot) and
//! then sleep on a condition variable, so an idle server burns no CPU.
//!
//! There is one team per process, used by one forward pass at a time: a
//! second concurrent forward runs on its own thread alone, which is what
//! concurrent requests want anyway (each core busy with its own request).
//!
//! On a machine whose cores are busy with other work, a worker that the
//! kernel descheduled holds every barrier for a time slice (milliseconds),
//! and two threads become far slower than one. The caller therefore counts
//! how long it waits at barriers: when it waited for more than 40 % of a
//! pass (two threads then gain nothing), the following passes run on the
//! caller alone, for a stretch that doubles each time the team is tried
//! again and still waits (16 to 1,024 passes).

use std::cell::{Cell, UnsafeCell};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long an idle worker spins for the next job before sleeping: long
/// enough for back-to-back requests, short enough not to take much from
/// other work on the core (waking a sleeping worker costs ~0.1 ms).
const IDLE_SPIN: Duration = Duration::from_millis(1);
/// Spin iterations at a barrier before yielding the core between checks
/// (a descheduled team-mate cannot arrive while we hold its core).
const BARRIER_SPINS: u32 = 20_000;

/// What one thread of a job knows about the team.
pub(crate) struct Ctx<'a> {
    /// This thread's index, `0..threads` (0 is the caller).
    pub index: usize,
    /// Threads running the job.
    pub threads: usize,
    shared: Option<&'a Shared>,
    /// Time the caller spent waiting at barriers (thread 0 only).
    waited: Cell<Duration>,
}

impl<'a> Ctx<'a> {
    fn new(index: usize, threads: usize, shared: Option<&'a Shared>) -> Self {
        Ctx {
            index,
            threads,
            shared,
            waited: Cell::new(Duration::ZERO),
        }
    }

    /// Waits until every thread of the job has reached this point.
    pub(crate) fn sync(&self) {
        if let Some(s) = self.shared {
            if self.index == 0 {
                let start = Instant::now();
                s.barrier(self.threads);
                self.waited.set(self.waited.get() + start.elapsed());
            } else {
                s.barrier(self.threads);
            }
        }
    }

    /// This thread's share of `0..n` when split in `threads` contiguous
    /// parts of multiples of `align` (the last part takes the remainder).
    pub(crate) fn share(&self, n: usize, align: usize) -> std::ops::Range<usize> {
        split(n, align, self.index, self.threads)
    }
}

/// Part `i` of `t` of `0..n`, boundaries rounded to multiples of `align`.
pub(crate) fn split(n: usize, align: usize, i: usize, t: usize) -> std::ops::Range<usize> {
    let units = n.div_ceil(align.max(1));
    let at = |j: usize| (units * j / t * align).min(n);
    at(i)..at(i + 1)
}

type Job<'a> = dyn Fn(&Ctx<'_>) + Sync + 'a;

/// One worker's mailbox.
struct Slot {
    /// The job to run; written by the leader before `epoch` is bumped, read
    /// by the worker after it sees the bump and before it publishes `done`.
    job: UnsafeCell<Option<*const Job<'static>>>,
    /// Threads taking part in the job.
    threads: AtomicUsize,
    /// Jobs posted to this worker.
    epoch: AtomicUsize,
    /// Jobs this worker has finished.
    done: AtomicUsize,
    sleeping: AtomicBool,
    lock: Mutex<()>,
    wake: Condvar,
}

struct Shared {
    /// Worker `i` (thread index `i + 1`) reads `slots[i]`.
    slots: Vec<Slot>,
    arrived: AtomicUsize,
    generation: AtomicUsize,
    panicked: AtomicBool,
}

// SAFETY: a slot's `job` is written only by the leader while its worker is
// between jobs (`done == epoch`), and read only by that worker between the
// leader's `epoch` release and its own `done` release.
unsafe impl Sync for Shared {}
unsafe impl Send for Shared {}

/// Spins on `ready`, yielding the core after a while.
fn spin_until(ready: impl Fn() -> bool) {
    let mut spins = 0u32;
    while !ready() {
        if spins < BARRIER_SPINS {
            spins += 1;
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
}

impl Shared {
    fn barrier(&self, n: usize) {
        let generation = self.generation.load(Ordering::Acquire);
        if self.arrived.fetch_add(1, Ordering::AcqRel) + 1 == n {
            self.arrived.store(0, Ordering::Relaxed);
            self.generation.store(generation + 1, Ordering::Release);
            return;
        }
        // A panicked team-mate never arrives: let everyone run to the end.
        spin_until(|| {
            self.generation.load(Ordering::Acquire) != generation
                || self.panicked.load(Ordering::Relaxed)
        });
    }

    fn worker(&self, index: usize) {
        let slot = &self.slots[index - 1];
        let mut seen = 0usize;
        loop {
            // Spin for the next job, then sleep.
            let start = Instant::now();
            let mut spins = 0u32;
            while slot.epoch.load(Ordering::Acquire) == seen {
                spins = spins.wrapping_add(1);
                std::hint::spin_loop();
                if spins.is_multiple_of(1024) && start.elapsed() > IDLE_SPIN {
                    let mut guard = slot.lock.lock().unwrap_or_else(|e| e.into_inner());
                    slot.sleeping.store(true, Ordering::SeqCst);
                    while slot.epoch.load(Ordering::SeqCst) == seen {
                        guard = slot.wake.wait(guard).unwrap_or_else(|e| e.into_inner());
                    }
                    slot.sleeping.store(false, Ordering::SeqCst);
                }
            }
            seen = slot.epoch.load(Ordering::Acquire);
            let threads = slot.threads.load(Ordering::Relaxed);
            // SAFETY: the leader stored this job before bumping `epoch` and
            // keeps it alive until we publish `done` (see `Team::run`).
            let job = unsafe { (*slot.job.get()).map(|j| &*j) };
            if let Some(job) = job {
                let ctx = Ctx::new(index, threads, Some(self));
                if catch_unwind(AssertUnwindSafe(|| job(&ctx))).is_err() {
                    self.panicked.store(true, Ordering::Relaxed);
                }
            }
            slot.done.store(seen, Ordering::Release);
        }
    }
}

/// The process's team: `workers` threads besides the caller.
struct Team {
    shared: &'static Shared,
    workers: usize,
}

impl Team {
    fn new(workers: usize) -> Team {
        let slots = (0..workers)
            .map(|_| Slot {
                job: UnsafeCell::new(None),
                threads: AtomicUsize::new(0),
                epoch: AtomicUsize::new(0),
                done: AtomicUsize::new(0),
                sleeping: AtomicBool::new(false),
                lock: Mutex::new(()),
                wake: Condvar::new(),
            })
            .collect();
        let shared: &'static Shared = Box::leak(Box::new(Shared {
            slots,
            arrived: AtomicUsize::new(0),
            generation: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
        }));
        let mut started = 0;
        for index in 1..=workers {
            let spawned = std::thread::Builder::new()
                .name(format!("embed-{index}"))
                .spawn(move || shared.worker(index));
            if spawned.is_err() {
                break;
            }
            started += 1;
        }
        Team {
            shared,
            workers: started,
        }
    }

    /// Runs `job` on `threads` threads (the caller and `threads − 1` workers),
    /// returning how long the caller waited for the others.
    fn run(&self, threads: usize, job: &Job<'_>) -> Result<Duration, JobPanicked> {
        let s = self.shared;
        let threads = threads.clamp(1, self.workers + 1);
        s.arrived.store(0, Ordering::Relaxed);
        s.panicked.store(false, Ordering::Relaxed);
        // SAFETY: the lifetime is erased only for the slots' storage; this
        // function does not return before every worker it posts to has
        // published `done` for this job, after its last use of the pointer.
        let erased: *const Job<'static> = unsafe { std::mem::transmute(job as *const Job<'_>) };
        for slot in &s.slots[..threads - 1] {
            // SAFETY: this worker finished its previous job (we waited for
            // it), so it does not read `job` now.
            unsafe { *slot.job.get() = Some(erased) };
            slot.threads.store(threads, Ordering::Relaxed);
            slot.epoch.fetch_add(1, Ordering::SeqCst);
            if slot.sleeping.load(Ordering::SeqCst) {
                let _guard = slot.lock.lock().unwrap_or_else(|e| e.into_inner());
                slot.wake.notify_one();
            }
        }
        let ctx = Ctx::new(0, threads, Some(s));
        if catch_unwind(AssertUnwindSafe(|| job(&ctx))).is_err() {
            s.panicked.store(true, Ordering::Relaxed);
        }
        // Wait for every posted worker, even after a panic: they may still
        // be reading the job.
        let start = Instant::now();
        for slot in &s.slots[..threads - 1] {
            let posted = slot.epoch.load(Ordering::Relaxed);
            spin_until(|| slot.done.load(Ordering::Acquire) == posted);
        }
        if s.panicked.load(Ordering::Relaxed) {
            Err(JobPanicked)
        } else {
            Ok(ctx.waited.get() + start.elapsed())
        }
    }
}

/// A thread of a parallel job panicked (a bug); its results are garbage.
#[derive(Debug)]
pub(crate) struct JobPanicked;

fn team() -> &'static Mutex<Team> {
    static TEAM: OnceLock<Mutex<Team>> = OnceLock::new();
    TEAM.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Mutex::new(Team::new(cores.saturating_sub(1)))
    })
}

/// Runs `job` once on each of up to `threads` threads (fewer when the team is
/// busy with another forward pass or the machine has fewer cores), the
/// caller being thread 0; returns once all have finished.
///
/// After a pass in which the caller waited for the others more than 40 % of
/// the time, passes run on the caller alone for a while (see the module docs).
pub(crate) fn run(threads: usize, job: &Job<'_>) -> Result<(), JobPanicked> {
    if threads > 1 && !BACKOFF.solo() {
        if let Ok(team) = team().try_lock() {
            let start = Instant::now();
            let waited = team.run(threads, job)?;
            BACKOFF.record(waited.as_secs_f64() > 0.4 * start.elapsed().as_secs_f64());
            return Ok(());
        }
    }
    let ctx = Ctx::new(0, 1, None);
    catch_unwind(AssertUnwindSafe(|| job(&ctx))).map_err(|_| JobPanicked)
}

/// When to leave the team out (see the module docs).
struct Backoff {
    /// Passes still to run alone.
    solo_left: AtomicUsize,
    /// Passes to run alone after the next pass that waits too long.
    stretch: AtomicUsize,
}

const MIN_STRETCH: usize = 16;
const MAX_STRETCH: usize = 1024;

static BACKOFF: Backoff = Backoff {
    solo_left: AtomicUsize::new(0),
    stretch: AtomicUsize::new(MIN_STRETCH),
};

impl Backoff {
    /// Whether this pass runs alone (counting it).
    fn solo(&self) -> bool {
        self.solo_left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
    }

    /// Records a team pass: `stalled` when the caller mostly waited.
    fn record(&self, stalled: bool) {
        let stretch = self.stretch.load(Ordering::Relaxed);
        if stalled {
            self.solo_left.store(stretch, Ordering::Relaxed);
            self.stretch
                .store((stretch * 2).min(MAX_STRETCH), Ordering::Relaxed);
        } else {
            self.stretch
                .store((stretch / 2).max(MIN_STRETCH), Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_cover_the_range_in_aligned_parts() {
        for (n, align, t) in [
            (17, 1, 2),
            (384, 16, 2),
            (1536, 32, 3),
            (5, 16, 4),
            (0, 1, 2),
        ] {
            let parts: Vec<_> = (0..t).map(|i| split(n, align, i, t)).collect();
            assert_eq!(parts[0].start, 0);
            assert_eq!(parts[t - 1].end, n);
            for w in parts.windows(2) {
                assert_eq!(w[0].end, w[1].start);
                assert!(w[0].end % align == 0 || w[0].end == n);
            }
        }
    }

    #[test]
    fn every_thread_runs_and_barriers_order_the_steps() {
        let threads = 2;
        let slots: Vec<AtomicUsize> = (0..64).map(|_| AtomicUsize::new(0)).collect();
        for _ in 0..50 {
            let job = |ctx: &Ctx<'_>| {
                for step in 0..8 {
                    for i in ctx.share(64, 1) {
                        // Every slot must have seen all previous steps.
                        assert_eq!(slots[i].load(Ordering::Relaxed), step);
                    }
                    ctx.sync();
                    for i in ctx.share(64, 1) {
                        slots[(i + 7) % 64].fetch_add(0, Ordering::Relaxed);
                        slots[i].fetch_add(1, Ordering::Relaxed);
                    }
                    ctx.sync();
                }
            };
            run(threads, &job).unwrap();
            for s in &slots {
                assert_eq!(s.swap(0, Ordering::Relaxed), 8);
            }
        }
    }

    #[test]
    fn a_panicking_job_is_reported_not_hung() {
        let job = |ctx: &Ctx<'_>| {
            ctx.sync();
            if ctx.index == ctx.threads - 1 {
                panic!("boom");
            }
            ctx.sync();
        };
        assert!(run(2, &job).is_err());
        // The team still works afterwards.
        let ok = |ctx: &Ctx<'_>| ctx.sync();
        assert!(run(2, &ok).is_ok());
    }
}
