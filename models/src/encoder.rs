//! The BERT encoder forward pass and mean pooling.
//!
//! Windows are *packed*: their tokens are concatenated into one `[T, H]`
//! matrix, so every weight matrix is streamed once per batch and no compute
//! is spent on padding; attention runs per window.
//!
//! The whole pass is one job on the [`team`](crate::team): every thread runs
//! every step on its share and the threads meet at a barrier only where a
//! step needs another thread's output. Per layer:
//!
//! 1. Q|K|V of the thread's own heads, then attention of those heads (no
//!    barrier between: a head's attention reads only its own columns); with
//!    int8 weights each head's context columns are quantised by its thread;
//! 2. the attention output projection, split by columns;
//! 3. `LN(x + attn)` split by rows (and quantised to int8 per row);
//! 4. the GELU feed-forward input layer, split by columns (and quantised);
//! 5. the feed-forward output layer, split by columns;
//! 6. `LN(x + ffn)` split by rows.
//!
//! Six barriers a layer, each a few hundred nanoseconds when the threads
//! spin. Buffers live in a [`Workspace`] that is reused across requests.

use std::sync::Mutex;

use crate::cpu::{cpu_info, KernelPath};
use crate::kernels::{attend, gelu, layer_norm, quantize_block, Input, Linear, Q8Rows, QK};
use crate::profile::Marks;
use crate::team::{self, Ctx};
use crate::weights::BertWeights;
use crate::Error;

/// Workspaces kept for reuse are at most this many tokens' worth (~22 MB
/// for e5-small); a larger batch's buffers are freed after it.
const KEEP_TOKENS: usize = 1024;

/// Buffers of one forward pass, sized for its token count.
#[derive(Default)]
pub(crate) struct Workspace {
    tokens: usize,
    x: Vec<f32>,
    qkv: Vec<f32>,
    ctx: Vec<f32>,
    tmp: Vec<f32>,
    mid: Vec<f32>,
    /// Int8 copy of `x` (input of Q|K|V and the feed-forward layer).
    qa: Q8Buf,
    /// Int8 copy of the attention context, then of the GELU output.
    qb: Q8Buf,
}

#[derive(Default)]
struct Q8Buf {
    q: Vec<i8>,
    d: Vec<f32>,
    s: Vec<i32>,
}

fn grow<T: Default + Clone>(v: &mut Vec<T>, n: usize) {
    if v.len() < n {
        v.resize(n, T::default());
    }
}

impl Workspace {
    fn fit(&mut self, w: &BertWeights, t: usize) {
        let (h, ff) = (w.cfg.hidden, w.cfg.ffn);
        self.tokens = self.tokens.max(t);
        for (v, n) in [
            (&mut self.x, t * h),
            (&mut self.qkv, t * 3 * h),
            (&mut self.ctx, t * h),
            (&mut self.tmp, t * h),
            (&mut self.mid, t * ff),
        ] {
            grow(v, n);
        }
        if w.int8 {
            for (buf, k) in [(&mut self.qa, h), (&mut self.qb, ff.max(h))] {
                grow(&mut buf.q, t * k);
                grow(&mut buf.d, t * k / QK);
                grow(&mut buf.s, t * k / QK);
            }
        }
    }
}

/// Workspaces kept between requests (one per concurrent forward pass).
#[derive(Default)]
pub(crate) struct WorkspacePool(Mutex<Vec<Workspace>>);

impl WorkspacePool {
    fn take(&self) -> Workspace {
        let mut pool = self.0.lock().unwrap_or_else(|e| e.into_inner());
        pool.pop().unwrap_or_default()
    }

    fn give(&self, ws: Workspace) {
        if ws.tokens <= KEEP_TOKENS {
            self.0.lock().unwrap_or_else(|e| e.into_inner()).push(ws);
        }
    }
}

/// A buffer shared by the threads of one job, each touching disjoint parts
/// between barriers (see the module docs for who writes what when).
struct Shared<T> {
    ptr: *mut T,
    len: usize,
}

// SAFETY: access goes through the unsafe methods below, whose callers
// guarantee that no element is written by one thread while another thread
// reads or writes it (disjoint shares, separated by barriers).
unsafe impl<T: Send> Sync for Shared<T> {}
unsafe impl<T: Send> Send for Shared<T> {}

impl<T> Shared<T> {
    fn new(v: &mut [T]) -> Self {
        Shared {
            ptr: v.as_mut_ptr(),
            len: v.len(),
        }
    }

    /// # Safety
    /// No thread writes `range` while the returned slice lives.
    unsafe fn get(&self, range: std::ops::Range<usize>) -> &[T] {
        assert!(range.start <= range.end && range.end <= self.len);
        // SAFETY: in bounds (checked); no concurrent writer (caller).
        unsafe { std::slice::from_raw_parts(self.ptr.add(range.start), range.len()) }
    }

    /// # Safety
    /// No other thread touches `range` while the returned slice lives.
    #[allow(clippy::mut_from_ref)]
    unsafe fn get_mut(&self, range: std::ops::Range<usize>) -> &mut [T] {
        assert!(range.start <= range.end && range.end <= self.len);
        // SAFETY: in bounds (checked); exclusive for the caller's share.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(range.start), range.len()) }
    }

    /// The whole buffer for writes through [`Linear::forward`].
    fn ptr(&self) -> *mut T {
        self.ptr
    }
}

/// Shared views of a [`Q8Buf`] with rows of `k` values.
struct SharedQ8 {
    k: usize,
    q: Shared<i8>,
    d: Shared<f32>,
    s: Shared<i32>,
}

impl SharedQ8 {
    fn new(buf: &mut Q8Buf, k: usize) -> Self {
        SharedQ8 {
            k,
            q: Shared::new(&mut buf.q),
            d: Shared::new(&mut buf.d),
            s: Shared::new(&mut buf.s),
        }
    }

    /// Rows `0..t` as a kernel input.
    ///
    /// # Safety
    /// No thread writes those rows while the view lives.
    unsafe fn rows(&self, t: usize) -> Q8Rows<'_> {
        let nb = self.k / QK;
        // SAFETY: the caller's promise.
        unsafe {
            Q8Rows {
                k: self.k,
                q: self.q.get(0..t * self.k),
                d: self.d.get(0..t * nb),
                s: self.s.get(0..t * nb),
            }
        }
    }

    /// Quantises `src` (row `m`'s values of columns `cols`, a whole number of
    /// blocks) into row `m`'s blocks.
    ///
    /// # Safety
    /// No other thread touches row `m`'s blocks `cols` meanwhile.
    unsafe fn quantize(
        &self,
        path: KernelPath,
        m: usize,
        cols: std::ops::Range<usize>,
        src: &[f32],
    ) {
        debug_assert!(
            cols.start.is_multiple_of(QK)
                && cols.len().is_multiple_of(QK)
                && src.len() == cols.len()
        );
        let (k, nb) = (self.k, self.k / QK);
        let (b0, b1) = (cols.start / QK, cols.end / QK);
        // SAFETY: the caller's promise.
        let (q, d, s) = unsafe {
            (
                self.q.get_mut(m * k + cols.start..m * k + cols.end),
                self.d.get_mut(m * nb + b0..m * nb + b1),
                self.s.get_mut(m * nb + b0..m * nb + b1),
            )
        };
        for (i, (x, q)) in src.chunks_exact(QK).zip(q.chunks_exact_mut(QK)).enumerate() {
            (d[i], s[i]) = quantize_block(path, x, q);
        }
    }
}

/// How many threads a forward pass over `tokens` tokens uses, given the
/// configured maximum: short inputs gain little past 4 threads (each
/// thread's share of a 384-column layer gets too thin to pay for a barrier).
pub(crate) fn threads_for(tokens: usize, max: usize) -> usize {
    let cap = if tokens <= 64 { 4 } else { usize::MAX };
    max.clamp(1, cap)
}

/// Mean-pooled last hidden states of each window (token ids including the
/// begin/end tokens; every window must be non-empty and fit the model),
/// computed on up to `threads` threads.
pub(crate) fn pooled(
    w: &BertWeights,
    windows: &[Vec<u32>],
    threads: usize,
    pool: &WorkspacePool,
) -> Result<Vec<Vec<f32>>, Error> {
    let tokens = windows.iter().map(Vec::len).sum();
    pooled_on(
        w,
        windows,
        threads_for(tokens, threads),
        pool,
        cpu_info().path,
    )
}

/// [`pooled`] on exactly `threads` threads (if free) and a given kernel path
/// (which the CPU must support).
fn pooled_on(
    w: &BertWeights,
    windows: &[Vec<u32>],
    threads: usize,
    pool: &WorkspacePool,
    path: KernelPath,
) -> Result<Vec<Vec<f32>>, Error> {
    let layers = 0..w.layers.len();
    forward_on(
        w,
        Start::Tokens(windows),
        layers,
        Out::Pooled,
        threads,
        pool,
        path,
    )
}

/// What a forward pass starts from.
pub(crate) enum Start<'a> {
    /// Token ids of each window (begin/end tokens included).
    Tokens(&'a [Vec<u32>]),
    /// Hidden states `[len, H]` (row-major) of each window at the input of
    /// the first layer run.
    States(&'a [&'a [f32]]),
}

/// What a forward pass returns per window.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Out {
    /// The mean of the last layer's rows (not normalised).
    Pooled,
    /// The last layer's rows, `[len, H]` row-major.
    States,
}

/// Runs `layers` of `w` over the windows of `start`, on up to `threads`
/// threads: the whole pass from tokens, the lower layers only (to keep their
/// output), or the upper layers from kept states.
pub(crate) fn forward(
    w: &BertWeights,
    start: Start<'_>,
    layers: std::ops::Range<usize>,
    out: Out,
    threads: usize,
    pool: &WorkspacePool,
) -> Result<Vec<Vec<f32>>, Error> {
    let tokens = match &start {
        Start::Tokens(wins) => wins.iter().map(Vec::len).sum(),
        Start::States(s) => s.iter().map(|x| x.len()).sum::<usize>() / w.cfg.hidden.max(1),
    };
    forward_on(
        w,
        start,
        layers,
        out,
        threads_for(tokens, threads),
        pool,
        cpu_info().path,
    )
}

fn forward_on(
    w: &BertWeights,
    start: Start<'_>,
    layers: std::ops::Range<usize>,
    out: Out,
    threads: usize,
    pool: &WorkspacePool,
    path: KernelPath,
) -> Result<Vec<Vec<f32>>, Error> {
    let h = w.cfg.hidden;
    if layers.end > w.layers.len() || layers.start > layers.end {
        return Err(Error::InvalidInput(format!(
            "layers {layers:?} of a {}-layer model",
            w.layers.len()
        )));
    }
    let mut tokens = Vec::new();
    let mut segments = Vec::new();
    let mut states = Vec::new();
    match start {
        Start::Tokens(windows) => {
            if windows.iter().any(Vec::is_empty) {
                return Err(Error::InvalidInput("empty encoder window".into()));
            }
            w.check_input(windows)?;
            for win in windows {
                segments.push((tokens.len(), win.len()));
                tokens.extend(win.iter().enumerate().map(|(p, &id)| (id, p)));
            }
        }
        Start::States(rows) => {
            for r in rows {
                if r.is_empty() || r.len() % h != 0 {
                    return Err(Error::InvalidInput(format!(
                        "hidden states of {} values are not whole rows of {h}",
                        r.len()
                    )));
                }
                segments.push((states.len() / h, r.len() / h));
                states.extend_from_slice(r);
            }
        }
    }
    let total: usize = segments.iter().map(|s| s.1).sum();
    if total == 0 {
        return Ok(Vec::new());
    }
    let words = w.word_view()?;

    let mut ws = pool.take();
    ws.fit(w, total);
    let ff = w.cfg.ffn;
    let plan = Plan {
        w,
        path,
        t: total,
        layers,
        tokens: &tokens,
        states: (!states.is_empty()).then_some(states.as_slice()),
        segments: &segments,
        words: &words,
        x: Shared::new(&mut ws.x),
        qkv: Shared::new(&mut ws.qkv),
        ctx: Shared::new(&mut ws.ctx),
        tmp: Shared::new(&mut ws.tmp),
        mid: Shared::new(&mut ws.mid),
        qa: SharedQ8::new(&mut ws.qa, h),
        qx: SharedQ8::new(&mut ws.qb, h),
        qm: SharedQ8::new(&mut ws.qb, ff),
    };
    let job = |ctx: &Ctx<'_>| plan.run(ctx);
    let ran = team::run(threads, &job);
    let result = ran
        .map_err(|_| Error::InvalidInput("encoder thread panicked".into()))
        .map(|()| {
            segments
                .iter()
                .map(|&(s0, len)| {
                    let rows = &ws.x[s0 * h..(s0 + len) * h];
                    if out == Out::States {
                        return rows.to_vec();
                    }
                    let mut acc = vec![0f32; h];
                    for row in rows.chunks_exact(h) {
                        for (a, &v) in acc.iter_mut().zip(row) {
                            *a += v;
                        }
                    }
                    let inv = 1.0 / len as f32;
                    acc.iter_mut().for_each(|a| *a *= inv);
                    acc
                })
                .collect()
        });
    pool.give(ws);
    result
}

/// Which activations a dense layer reads.
#[derive(Clone, Copy)]
enum Src {
    /// The hidden state (input of Q|K|V and of the feed-forward layer).
    X,
    /// The attention context.
    Ctx,
    /// The GELU output.
    Mid,
}

/// Everything one job's threads share.
struct Plan<'a> {
    w: &'a BertWeights,
    path: KernelPath,
    t: usize,
    /// The layers run.
    layers: std::ops::Range<usize>,
    /// `(token id, position)` of each packed token (starting from tokens).
    tokens: &'a [(u32, usize)],
    /// The packed input states `[t, H]` (starting from kept states).
    states: Option<&'a [f32]>,
    /// `(first row, length)` of each window.
    segments: &'a [(usize, usize)],
    words: &'a crate::weights::WordView<'a>,
    x: Shared<f32>,
    qkv: Shared<f32>,
    ctx: Shared<f32>,
    tmp: Shared<f32>,
    mid: Shared<f32>,
    /// `x` quantised.
    qa: SharedQ8,
    /// The context quantised (rows of H) and, in the same buffer later in
    /// the layer, the GELU output quantised (rows of FF).
    qx: SharedQ8,
    qm: SharedQ8,
}

impl Plan<'_> {
    /// One thread's part of the whole forward pass.
    fn run(&self, ctx: &Ctx<'_>) {
        let (w, t, path) = (self.w, self.t, self.path);
        let (h, ff, nh) = (w.cfg.hidden, w.cfg.ffn, w.cfg.heads);
        let hd = h / nh;
        let int8 = w.int8;
        let mut scores = Vec::new();
        let mut marks = if ctx.index == 0 { Marks::new() } else { None };

        // Embeddings and their LayerNorm (or the kept states), by rows.
        for m in ctx.share(t, 1) {
            // SAFETY: row m of x is this thread's.
            let row = unsafe { self.x.get_mut(m * h..(m + 1) * h) };
            if let Some(states) = self.states {
                row.copy_from_slice(&states[m * h..(m + 1) * h]);
            } else {
                let (id, pos) = self.tokens[m];
                w.embed_row(self.words, id, pos, row);
                layer_norm(path, row, None, &w.emb_norm.w, &w.emb_norm.b, w.eps);
            }
            if int8 {
                // SAFETY: row m of qa is this thread's.
                unsafe { self.qa.quantize(path, m, 0..h, row) };
            }
        }
        ctx.sync();
        Marks::note(&mut marks, "embeddings + LN");

        // Heads are this thread's for the whole pass; their context columns
        // are whole int8 blocks when hd is a multiple of 32.
        let heads = ctx.share(nh, 1);
        let quantize_heads = int8 && hd % QK == 0;
        for li in self.layers.clone() {
            let layer = &w.layers[li];
            if let Some(m) = marks.as_mut() {
                m.layer(li);
            }
            // 1. Q|K|V of own heads, then their attention.
            let c = heads.start * hd..heads.end * hd;
            for part in 0..3 {
                let cols = part * h + c.start..part * h + c.end;
                // SAFETY: x / qa are only read during this step; the qkv
                // columns of own heads are written by this thread only.
                unsafe { self.dense(&layer.qkv, Src::X, cols, &self.qkv, 3 * h) };
            }
            Marks::note(&mut marks, "Q|K|V dense (own heads)");
            assert!(self.qkv.len >= t * 3 * h && self.ctx.len >= t * h);
            for &(s0, len) in self.segments {
                for head in heads.clone() {
                    let o = head * hd;
                    // SAFETY: rows s0..s0+len are in bounds (asserted); attend
                    // reads only own heads' columns of qkv (written above by
                    // this thread) and writes only own heads' columns of ctx.
                    unsafe {
                        attend(
                            path,
                            self.qkv.ptr().add(s0 * 3 * h),
                            3 * h,
                            (o, h + o, 2 * h + o),
                            len,
                            hd,
                            self.ctx.ptr().add(s0 * h + o),
                            h,
                            &mut scores,
                        );
                    }
                }
            }
            if quantize_heads {
                for m in 0..t {
                    // SAFETY: own heads' context columns, blocks of row m.
                    unsafe {
                        let src = self.ctx.get(m * h + c.start..m * h + c.end);
                        self.qx.quantize(path, m, c.clone(), src);
                    }
                }
            } else if int8 {
                ctx.sync();
                for m in ctx.share(t, 1) {
                    // SAFETY: row m is this thread's.
                    unsafe {
                        self.qx
                            .quantize(path, m, 0..h, self.ctx.get(m * h..(m + 1) * h))
                    };
                }
            }
            ctx.sync();
            Marks::note(&mut marks, "attention (+ wait)");

            // 2. Attention output projection, by columns.
            // SAFETY: ctx / qx are only read now; own columns of tmp.
            unsafe { self.dense(&layer.attn_out, Src::Ctx, ctx.share(h, 16), &self.tmp, h) };
            ctx.sync();
            Marks::note(&mut marks, "attention output dense");

            // 3. x = LN(x + attn), by rows.
            self.add_norm(ctx, &layer.attn_norm);
            ctx.sync();
            Marks::note(&mut marks, "add + LN 1 (+ int8)");

            // 4. mid = GELU(x·Wi + bi), by columns (whole int8 blocks).
            let cols = ctx.share(ff, QK);
            // SAFETY: x / qa are only read now; own columns of mid.
            unsafe { self.dense(&layer.ffn_in, Src::X, cols.clone(), &self.mid, ff) };
            Marks::note(&mut marks, "FFN in dense");
            if !cols.is_empty() {
                for m in 0..t {
                    // SAFETY: own columns of row m of mid and of qm.
                    unsafe {
                        let row = self.mid.get_mut(m * ff + cols.start..m * ff + cols.end);
                        gelu(path, row);
                        if int8 {
                            self.qm.quantize(path, m, cols.clone(), row);
                        }
                    }
                }
            }
            ctx.sync();
            Marks::note(&mut marks, "GELU (+ int8, + wait)");

            // 5. Feed-forward output, by columns.
            // SAFETY: mid / qm are only read now; own columns of tmp.
            unsafe { self.dense(&layer.ffn_out, Src::Mid, ctx.share(h, 16), &self.tmp, h) };
            ctx.sync();
            Marks::note(&mut marks, "FFN out dense");

            // 6. x = LN(x + ffn), by rows.
            self.add_norm(ctx, &layer.out_norm);
            ctx.sync();
            Marks::note(&mut marks, "add + LN 2 (+ int8)");
        }
        if let Some(m) = marks {
            m.finish(t);
        }
    }

    /// Columns `cols` of `lin` applied to all rows of `src` (or its int8
    /// copy), into `out` (stride `ld`).
    ///
    /// # Safety
    /// The input is not written meanwhile; `out`'s columns `cols` are this
    /// thread's alone.
    unsafe fn dense(
        &self,
        lin: &Linear,
        src: Src,
        cols: std::ops::Range<usize>,
        out: &Shared<f32>,
        ld: usize,
    ) {
        let t = self.t;
        assert!(out.len >= t * ld);
        // SAFETY: the caller's promises; forward writes only rows 0..t,
        // columns cols of out (checked in bounds above).
        unsafe {
            let input = if lin.is_q4() {
                let q = match src {
                    Src::X => &self.qa,
                    Src::Ctx => &self.qx,
                    Src::Mid => &self.qm,
                };
                Input::Q8(q.rows(t))
            } else {
                let f = match src {
                    Src::X => &self.x,
                    Src::Ctx => &self.ctx,
                    Src::Mid => &self.mid,
                };
                Input::F32(f.get(0..t * lin.inp))
            };
            lin.forward(self.path, input, 0..t, cols, out.ptr(), ld);
        }
    }

    /// `x = LN(x + tmp)` for this thread's rows, quantised when int8.
    fn add_norm(&self, ctx: &Ctx<'_>, norm: &crate::weights::Norm) {
        let h = self.w.cfg.hidden;
        for m in ctx.share(self.t, 1) {
            // SAFETY: row m of x, tmp and qa is this thread's during this step.
            unsafe {
                let row = self.x.get_mut(m * h..(m + 1) * h);
                let res = self.tmp.get(m * h..(m + 1) * h);
                layer_norm(self.path, row, Some(res), &norm.w, &norm.b, self.w.eps);
                if self.w.int8 {
                    self.qa.quantize(self.path, m, 0..h, row);
                }
            }
        }
    }
}

/// Scales `v` to unit L2 norm (left unchanged if it is all zeros).
pub(crate) fn l2_normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 1e-12 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::tests::paths;
    use crate::weights::synthetic;
    use crate::Precision;

    fn windows(lens: &[usize]) -> Vec<Vec<u32>> {
        lens.iter()
            .enumerate()
            .map(|(i, &n)| {
                (0..n as u32)
                    .map(|j| (j * 37 + i as u32 * 11) % 1000)
                    .collect()
            })
            .collect()
    }

    fn cosine(a: &[f32], b: &[f32]) -> f32 {
        let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        let n = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
        dot / (n(a) * n(b))
    }

    #[test]
    fn every_path_and_thread_count_computes_the_same_forward() {
        let mut cfg = synthetic::e5_small_shape();
        cfg.layers = 2;
        let pool = WorkspacePool::default();
        let wins = windows(&[17, 1, 40, 3]);
        let mut f32_ref = None;
        for precision in [Precision::F32, Precision::Int8] {
            let w = synthetic::weights(cfg.clone(), precision, 7);
            assert_eq!(w.int8, precision == Precision::Int8);
            let reference = pooled_on(&w, &wins, 1, &pool, KernelPath::Scalar).unwrap();
            for path in paths() {
                for threads in [1, 2, 3] {
                    let got = pooled_on(&w, &wins, threads, &pool, path).unwrap();
                    for (g, r) in got.iter().zip(&reference) {
                        let diff = g
                            .iter()
                            .zip(r)
                            .map(|(a, b)| (a - b).abs())
                            .fold(0f32, f32::max);
                        // Paths differ in float rounding (FMA, summation
                        // order); with int8 activations a rounding flip moves
                        // a value by one quantisation step, so compare those
                        // by direction too.
                        let cos = cosine(g, r);
                        assert!(
                            diff < 2e-3 || (w.int8 && cos > 0.99995 && diff < 2e-2),
                            "{precision:?} {path:?} {threads} threads: {diff} {cos}"
                        );
                    }
                    // One window alone gives what it gives inside a batch.
                    let alone = pooled_on(&w, &wins[..1], threads, &pool, path).unwrap();
                    assert!(cosine(&alone[0], &got[0]) > 0.99999);
                }
            }
            match &f32_ref {
                None => f32_ref = Some(reference),
                Some(f) => {
                    // int8 activations stay close to the f32 forward.
                    for (a, b) in f.iter().zip(&reference) {
                        assert!(cosine(a, b) > 0.999, "int8 vs f32: {}", cosine(a, b));
                    }
                }
            }
        }
    }

    /// `cargo test --release -p models --lib -- --ignored --nocapture forward_speed`
    #[test]
    #[ignore = "timing, not a check"]
    fn forward_speed() {
        let pool = WorkspacePool::default();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let counts: Vec<usize> = [1, 2, 4, 8, 16]
            .into_iter()
            .filter(|&t| t <= cores)
            .collect();
        for precision in [Precision::Int8, Precision::F32] {
            let w = synthetic::weights(synthetic::e5_small_shape(), precision, 3);
            for path in paths().into_iter().filter(|&p| p != KernelPath::Scalar) {
                for &threads in &counts {
                    let one = windows(&[17]);
                    let mut lat = Vec::new();
                    for _ in 0..60 {
                        let t0 = std::time::Instant::now();
                        pooled_on(&w, &one, threads, &pool, path).unwrap();
                        lat.push(t0.elapsed().as_secs_f64() * 1e3);
                    }
                    lat.sort_by(f64::total_cmp);
                    let batch = windows(&[17; 32]);
                    let t0 = std::time::Instant::now();
                    for _ in 0..3 {
                        pooled_on(&w, &batch, threads, &pool, path).unwrap();
                    }
                    let per_s = 96.0 / t0.elapsed().as_secs_f64();
                    println!(
                        "{precision:?} {path:?} {threads:>2} threads: 17 tokens p50 {:.2} ms p90 {:.2} ms; 32x17 batch {per_s:.0} windows/s",
                        lat[lat.len() / 2],
                        lat[lat.len() * 9 / 10]
                    );
                }
            }
        }
    }
}
