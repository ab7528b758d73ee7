//! Where a forward pass spends its time, step by step (for `triage bench
//! embed --profile` and the profile table in docs/BENCHMARKS.md).
//!
//! Off by default: the encoder then checks one relaxed atomic per pass.
//! When on, the calling thread (thread 0 of the team) notes the time at the
//! end of every step, after the barrier that closes it, so a step's time
//! includes waiting for the slowest thread: what the step adds to latency.
//! It also notes its own CPU time (Linux), which leaves out the time the
//! thread was descheduled: on a machine shared with other work, that is the
//! step's cost on an idle machine (with one thread).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

static ON: AtomicBool = AtomicBool::new(false);
static ACC: Mutex<Option<Profile>> = Mutex::new(None);

/// Accumulated step times of the forward passes since [`start`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Profile {
    /// Forward passes recorded.
    pub passes: usize,
    /// Tokens in them.
    pub tokens: usize,
    /// Total seconds per (layer, step) in the order of the pass; layer
    /// `None` is outside the layers.
    pub steps: Vec<(Option<usize>, &'static str, f64)>,
    /// Total CPU seconds of the calling thread per step name.
    pub cpu: Vec<(&'static str, f64)>,
}

impl Profile {
    /// Seconds per pass of each step summed over the layers, in first-seen order.
    pub fn by_step(&self) -> Vec<(&'static str, f64)> {
        let mut out: Vec<(&'static str, f64)> = Vec::new();
        for &(_, name, secs) in &self.steps {
            match out.iter_mut().find(|(n, _)| *n == name) {
                Some(entry) => entry.1 += secs,
                None => out.push((name, secs)),
            }
        }
        let passes = self.passes.max(1) as f64;
        out.iter_mut().for_each(|e| e.1 /= passes);
        out
    }

    /// CPU seconds per pass of the calling thread in each step (summed over
    /// the layers), in the order of [`Profile::by_step`].
    pub fn cpu_by_step(&self) -> Vec<(&'static str, f64)> {
        let passes = self.passes.max(1) as f64;
        self.cpu.iter().map(|&(n, s)| (n, s / passes)).collect()
    }

    /// Seconds per pass of each layer (all its steps).
    pub fn by_layer(&self) -> Vec<(Option<usize>, f64)> {
        let mut out: Vec<(Option<usize>, f64)> = Vec::new();
        for &(layer, _, secs) in &self.steps {
            match out.iter_mut().find(|(l, _)| *l == layer) {
                Some(entry) => entry.1 += secs,
                None => out.push((layer, secs)),
            }
        }
        let passes = self.passes.max(1) as f64;
        out.iter_mut().for_each(|e| e.1 /= passes);
        out
    }
}

/// Starts recording (clearing what was recorded before).
pub fn start() {
    *ACC.lock().unwrap_or_else(|e| e.into_inner()) = Some(Profile::default());
    ON.store(true, Ordering::Relaxed);
}

/// Stops recording and returns what was recorded since [`start`].
pub fn stop() -> Option<Profile> {
    ON.store(false, Ordering::Relaxed);
    ACC.lock().unwrap_or_else(|e| e.into_inner()).take()
}

/// CPU time of the calling thread, in seconds (0 where unsupported).
#[cfg(target_os = "linux")]
fn thread_cpu() -> f64 {
    #[repr(C)]
    struct Timespec {
        sec: i64,
        nsec: i64,
    }
    unsafe extern "C" {
        fn clock_gettime(clock: i32, ts: *mut Timespec) -> i32;
    }
    const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
    let mut ts = Timespec { sec: 0, nsec: 0 };
    // SAFETY: clock_gettime writes one timespec (two 64-bit fields on
    // 64-bit Linux) into the pointer it is given.
    if unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut ts) } == 0 {
        ts.sec as f64 + ts.nsec as f64 * 1e-9
    } else {
        0.0
    }
}

#[cfg(not(target_os = "linux"))]
fn thread_cpu() -> f64 {
    0.0
}

/// Marks of one pass, kept by thread 0.
pub(crate) struct Marks {
    last: Instant,
    last_cpu: f64,
    layer: Option<usize>,
    steps: Vec<(Option<usize>, &'static str, f64, f64)>,
}

impl Marks {
    /// `Some` when recording is on.
    pub(crate) fn new() -> Option<Marks> {
        ON.load(Ordering::Relaxed).then(|| Marks {
            last: Instant::now(),
            last_cpu: thread_cpu(),
            layer: None,
            steps: Vec::with_capacity(128),
        })
    }

    /// Steps marked from now on belong to `layer`.
    pub(crate) fn layer(&mut self, layer: usize) {
        self.layer = Some(layer);
    }

    /// The step `name` ended now.
    pub(crate) fn mark(&mut self, name: &'static str) {
        let (now, cpu) = (Instant::now(), thread_cpu());
        self.steps.push((
            self.layer,
            name,
            (now - self.last).as_secs_f64(),
            cpu - self.last_cpu,
        ));
        self.last = now;
        self.last_cpu = cpu;
    }

    /// Marks the end of step `name` if recording.
    pub(crate) fn note(marks: &mut Option<Marks>, name: &'static str) {
        if let Some(m) = marks.as_mut() {
            m.mark(name);
        }
    }

    /// Adds this pass of `tokens` tokens to the profile.
    pub(crate) fn finish(self, tokens: usize) {
        let mut acc = ACC.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = acc.as_mut() {
            p.passes += 1;
            p.tokens += tokens;
            for (layer, name, secs, cpu) in self.steps {
                match p.steps.iter_mut().find(|s| s.0 == layer && s.1 == name) {
                    Some(s) => s.2 += secs,
                    None => p.steps.push((layer, name, secs)),
                }
                match p.cpu.iter_mut().find(|s| s.0 == name) {
                    Some(s) => s.1 += cpu,
                    None => p.cpu.push((name, cpu)),
                }
            }
        }
    }
}
