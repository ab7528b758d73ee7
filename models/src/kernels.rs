//! The encoder's numeric steps on plain slices, with per-CPU SIMD kernels.
//!
//! Dense layers keep their weights in the layout the kernels read, built once
//! at load time, in *panels* of [`PANEL`] = 16 output columns:
//!
//! * [`Weights::F32`]: panel `p` is `K × 16` floats, row `k` holding
//!   `W[16p..16p+16][k]` (zero past the last column). The micro-kernels keep a
//!   tile of up to 6 rows × 16 columns in registers and stream the panel once
//!   per tile.
//! * [`Weights::Q4`]: the 4-bit file's weights, exactly: each Q4_0 nibble as
//!   one unsigned byte (0..15, value `(q − 8)·d`) and each block's f16 scale
//!   as f32. Within a panel, block `b` (32 inputs) is 8 groups of 4 inputs;
//!   a group is 64 bytes, 4 consecutive inputs for each of the 16 columns,
//!   which is what `vpmaddubsw` (pairs, AVX2) and `vpdpbusd` (quads, AVX-512
//!   VNNI) multiply against one broadcast group of 4 activation bytes.
//!   Activations are quantised per row and block of 32 to int8 with one f32
//!   scale (Q8_0, exactly what the reference C engine does), so each block's
//!   dot product is an exact integer; only the per-block scaling is float.
//!
//! Kernels are chosen per call from [`KernelPath`]; every SIMD kernel has a
//! scalar twin here that the tests compare it against.

use std::ops::Range;

use crate::cpu::KernelPath;

/// Values per quantisation block (Q4_0 weights and Q8_0 activations).
pub(crate) const QK: usize = 32;
/// Output columns per weight panel.
pub(crate) const PANEL: usize = 16;
/// Bytes of one packed Q4 block within a panel: 32 inputs × 16 columns.
const Q4_PANEL_BLOCK: usize = QK * PANEL;
/// Rows processed per pass over a panel range (keeps activations cache-resident).
const ROW_CHUNK: usize = 64;

/// A dense layer's weights in kernel layout (see the module docs).
pub(crate) enum Weights {
    /// f32 panels, `ceil(N/16) × K × 16`.
    F32(Vec<f32>),
    /// Q4 nibbles as bytes, `ceil(N/16) × K/32 × 512`, and block scales,
    /// `ceil(N/16) × K/32 × 16`.
    Q4 { q: Vec<u8>, d: Vec<f32> },
}

/// A dense layer `y = x·Wᵀ + b` (PyTorch's `[out, in]` weights, repacked).
pub(crate) struct Linear {
    /// Input width K.
    pub inp: usize,
    /// Output width N.
    pub out: usize,
    /// The bias, zero-padded to whole panels.
    bias: Vec<[f32; PANEL]>,
    w: Weights,
}

impl Linear {
    /// From f32 weights `w` (`[out, in]` row-major) and bias `b` (`[out]`).
    pub(crate) fn from_f32(w: &[f32], b: &[f32], out: usize, inp: usize) -> Linear {
        assert_eq!(w.len(), out * inp, "linear weights");
        assert_eq!(b.len(), out, "linear bias");
        let panels = out.div_ceil(PANEL);
        let mut data = vec![0f32; panels * inp * PANEL];
        for n in 0..out {
            let (p, c) = (n / PANEL, n % PANEL);
            for k in 0..inp {
                data[(p * inp + k) * PANEL + c] = w[n * inp + k];
            }
        }
        Linear {
            inp,
            out,
            bias: pad_bias(b),
            w: Weights::F32(data),
        }
    }

    /// From Q4_0 weights: `block(n, b)` gives output `n`'s block `b` as its
    /// f32 scale and 16 bytes of nibbles (low nibbles = inputs 0..16, high =
    /// 16..32, ggml's layout). `inp` must be a multiple of 32.
    pub(crate) fn from_q4(
        block: impl Fn(usize, usize) -> (f32, [u8; 16]),
        b: &[f32],
        out: usize,
        inp: usize,
    ) -> Linear {
        assert_eq!(inp % QK, 0, "Q4 input width");
        assert_eq!(b.len(), out, "linear bias");
        let (panels, nb) = (out.div_ceil(PANEL), inp / QK);
        let mut q = vec![0u8; panels * nb * Q4_PANEL_BLOCK];
        let mut d = vec![0f32; panels * nb * PANEL];
        for n in 0..out {
            let (p, c) = (n / PANEL, n % PANEL);
            for blk in 0..nb {
                let (scale, nibbles) = block(n, blk);
                d[(p * nb + blk) * PANEL + c] = scale;
                let base = (p * nb + blk) * Q4_PANEL_BLOCK;
                for (j, &byte) in nibbles.iter().enumerate() {
                    for (i, v) in [(j, byte & 0x0F), (j + 16, byte >> 4)] {
                        q[base + (i / 4) * 64 + c * 4 + i % 4] = v;
                    }
                }
            }
        }
        Linear {
            inp,
            out,
            bias: pad_bias(b),
            w: Weights::Q4 { q, d },
        }
    }

    /// Whether the layer takes Q8 activations (its weights are Q4).
    pub(crate) fn is_q4(&self) -> bool {
        matches!(self.w, Weights::Q4 { .. })
    }

    /// Computes `y[m, c] = Σ_k x[m, k]·W[c, k] + b[c]` for `m` in `rows` and
    /// `c` in `cols`, writing `y` at `m·ldy + c`.
    ///
    /// # Safety
    /// `y` must be valid for writes of every element `m·ldy + c` named above,
    /// and no other thread may access those elements during the call.
    pub(crate) unsafe fn forward(
        &self,
        path: KernelPath,
        x: Input<'_>,
        rows: Range<usize>,
        cols: Range<usize>,
        y: *mut f32,
        ldy: usize,
    ) {
        if rows.is_empty() || cols.is_empty() {
            return;
        }
        let k = self.inp;
        assert!(cols.end <= self.out && ldy >= cols.end, "linear columns");
        match (&self.w, x) {
            (Weights::F32(panels), Input::F32(x)) => {
                assert!(x.len() >= rows.end * k, "linear input rows");
                let mr_max = if path == KernelPath::Avx512 { 8 } else { 6 };
                for_tiles(rows, cols, mr_max, |m, mr, p, lo, hi| {
                    let w = &panels[p * k * PANEL..(p + 1) * k * PANEL];
                    let bias = &self.bias[p];
                    let x = &x[m * k..(m + mr) * k];
                    // SAFETY: x holds mr rows of k, w is k×16, the caller
                    // vouches for y's rows m..m+mr, columns 16p+lo..16p+hi.
                    unsafe {
                        let y = y.add(m * ldy + p * PANEL);
                        f32_tile(path, x, mr, k, w, bias, y, ldy, lo, hi)
                    }
                });
            }
            (Weights::Q4 { q, d }, Input::Q8(a)) => {
                let nb = k / QK;
                assert!(
                    a.k == k && a.q.len() >= rows.end * k && a.d.len() >= rows.end * nb,
                    "linear Q8 input rows"
                );
                assert!(a.s.len() >= rows.end * nb, "linear Q8 input sums");
                let mr_max = if path == KernelPath::Avx512 && crate::cpu::cpu_info().vnni {
                    8
                } else {
                    3
                };
                for_tiles(rows, cols, mr_max, |m, mr, p, lo, hi| {
                    let w = &q[p * nb * Q4_PANEL_BLOCK..(p + 1) * nb * Q4_PANEL_BLOCK];
                    let wd = &d[p * nb * PANEL..(p + 1) * nb * PANEL];
                    let bias = &self.bias[p];
                    let rows = Q8Rows {
                        k,
                        q: &a.q[m * k..(m + mr) * k],
                        d: &a.d[m * nb..(m + mr) * nb],
                        s: &a.s[m * nb..(m + mr) * nb],
                    };
                    // SAFETY: as above; rows holds mr rows, w and wd one panel.
                    unsafe {
                        let y = y.add(m * ldy + p * PANEL);
                        q4_tile(path, &rows, mr, w, wd, bias, y, ldy, lo, hi)
                    }
                });
            }
            _ => panic!("linear: activations do not match the weights' precision"),
        }
    }
}

/// `b` in panels of 16, the last one zero-padded.
fn pad_bias(b: &[f32]) -> Vec<[f32; PANEL]> {
    b.chunks(PANEL)
        .map(|c| {
            let mut out = [0f32; PANEL];
            out[..c.len()].copy_from_slice(c);
            out
        })
        .collect()
}

/// Walks `rows × cols` as (row chunk, panel, row tile): calls
/// `f(first row, rows in tile, panel, first column in panel, end column in panel)`.
fn for_tiles(
    rows: Range<usize>,
    cols: Range<usize>,
    mr_max: usize,
    mut f: impl FnMut(usize, usize, usize, usize, usize),
) {
    let (p0, p1) = (cols.start / PANEL, cols.end.div_ceil(PANEL));
    let mut m0 = rows.start;
    while m0 < rows.end {
        let m1 = rows.end.min(m0 + ROW_CHUNK);
        for p in p0..p1 {
            let lo = cols.start.max(p * PANEL) - p * PANEL;
            let hi = cols.end.min((p + 1) * PANEL) - p * PANEL;
            let mut m = m0;
            while m < m1 {
                let mr = mr_max.min(m1 - m);
                f(m, mr, p, lo, hi);
                m += mr;
            }
        }
        m0 = m1;
    }
}

/// One f32 tile: `mr` rows of `x` (each `k` long) times a `k × 16` panel.
///
/// # Safety
/// `y` must be writable at `r·ldy + c` for `r < mr`, `lo ≤ c < hi ≤ 16`.
#[allow(clippy::too_many_arguments)]
unsafe fn f32_tile(
    path: KernelPath,
    x: &[f32],
    mr: usize,
    k: usize,
    w: &[f32],
    bias: &[f32; PANEL],
    y: *mut f32,
    ldy: usize,
    lo: usize,
    hi: usize,
) {
    debug_assert!(x.len() == mr * k && w.len() == k * PANEL && hi <= PANEL);
    match path {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the path was chosen by feature detection (crate::cpu).
        KernelPath::Avx512 => unsafe {
            crate::kernels_avx512::f32_tile(x, mr, k, w, bias, y, ldy, lo, hi)
        },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        KernelPath::Avx2 => unsafe {
            crate::kernels_avx2::f32_tile(x, mr, k, w, bias, y, ldy, lo, hi)
        },
        _ => {
            let mut acc = [0f32; PANEL];
            for r in 0..mr {
                acc.copy_from_slice(bias);
                let xr = &x[r * k..(r + 1) * k];
                for (kk, &xv) in xr.iter().enumerate() {
                    let wk = &w[kk * PANEL..(kk + 1) * PANEL];
                    for (a, &wv) in acc.iter_mut().zip(wk) {
                        *a += xv * wv;
                    }
                }
                for (c, &v) in acc.iter().enumerate().take(hi).skip(lo) {
                    // SAFETY: the caller vouches for row r, columns lo..hi.
                    unsafe { *y.add(r * ldy + c) = v };
                }
            }
        }
    }
}

/// One Q4×Q8 tile: `mr` quantised rows times one Q4 panel.
///
/// # Safety
/// As [`f32_tile`].
#[allow(clippy::too_many_arguments)]
unsafe fn q4_tile(
    path: KernelPath,
    a: &Q8Rows<'_>,
    mr: usize,
    w: &[u8],
    wd: &[f32],
    bias: &[f32; PANEL],
    y: *mut f32,
    ldy: usize,
    lo: usize,
    hi: usize,
) {
    let nb = a.k / QK;
    debug_assert!(a.q.len() == mr * a.k && w.len() == nb * Q4_PANEL_BLOCK && hi <= PANEL);
    match path {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the path and VNNI flag were chosen by feature detection.
        KernelPath::Avx512 if crate::cpu::cpu_info().vnni => unsafe {
            crate::kernels_avx512::q4_tile(a, mr, w, wd, bias, y, ldy, lo, hi)
        },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AVX-512 implies AVX2 + FMA (crate::cpu).
        KernelPath::Avx2 | KernelPath::Avx512 => unsafe {
            crate::kernels_avx2::q4_tile(a, mr, w, wd, bias, y, ldy, lo, hi)
        },
        _ => {
            for r in 0..mr {
                let mut acc = [0f32; PANEL];
                let qa = &a.q[r * a.k..(r + 1) * a.k];
                for b in 0..nb {
                    let da = a.d[r * nb + b];
                    let corr = 8 * a.s[r * nb + b];
                    let wb = &w[b * Q4_PANEL_BLOCK..(b + 1) * Q4_PANEL_BLOCK];
                    for (c, acc) in acc.iter_mut().enumerate() {
                        let mut isum = 0i32;
                        for i in 0..QK {
                            let wq = i32::from(wb[(i / 4) * 64 + c * 4 + i % 4]);
                            isum += wq * i32::from(qa[b * QK + i]);
                        }
                        *acc += (isum - corr) as f32 * (wd[b * PANEL + c] * da);
                    }
                }
                for (c, (&v, &b)) in acc.iter().zip(bias).enumerate().take(hi).skip(lo) {
                    // SAFETY: the caller vouches for row r, columns lo..hi.
                    unsafe { *y.add(r * ldy + c) = v + b };
                }
            }
        }
    }
}

/// A dense layer's input: f32 rows, or rows quantised to Q8_0.
#[derive(Clone, Copy)]
pub(crate) enum Input<'a> {
    /// Row-major `rows × K` floats.
    F32(&'a [f32]),
    /// Quantised rows.
    Q8(Q8Rows<'a>),
}

/// Rows quantised per block of 32: `q` int8 (`rows × k`), `d` the blocks'
/// scales and `s` the blocks' integer sums (both `rows × k/32`).
#[derive(Clone, Copy)]
pub(crate) struct Q8Rows<'a> {
    pub k: usize,
    pub q: &'a [i8],
    pub d: &'a [f32],
    pub s: &'a [i32],
}

/// Quantises one block of 32 values to int8 with scale `max|x| / 127`,
/// rounding `x·(1/scale)` half to even (the reference engine's `lrintf`),
/// and returns the scale and the sum of the quantised values.
pub(crate) fn quantize_block(path: KernelPath, x: &[f32], q: &mut [i8]) -> (f32, i32) {
    assert!(x.len() == QK && q.len() == QK);
    match path {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AVX2 and AVX-512 paths are only chosen on CPUs with AVX2 + FMA.
        KernelPath::Avx2 | KernelPath::Avx512 => unsafe {
            crate::kernels_avx2::quantize_block(x, q)
        },
        _ => {
            let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
            let d = amax / 127.0;
            let id = if d > 0.0 { 1.0 / d } else { 0.0 };
            // Adding and taking away 1.5·2^23 rounds half to even (|v| ≤ 127).
            const MAGIC: f32 = 12_582_912.0;
            let mut sum = 0i32;
            for (o, &v) in q.iter_mut().zip(x) {
                let r = ((v * id + MAGIC) - MAGIC) as i32;
                *o = r.clamp(-127, 127) as i8;
                sum += i32::from(*o);
            }
            (d, sum)
        }
    }
}

/// `erf(x)` as a rational polynomial (Eigen's `generic_fast_erf_float`):
/// within a few float ulps of libm, branch-free and vectorisable.
#[inline(always)]
fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_3e-10_f32;
    for c in [
        2.770_681_4e-8,
        -2.101_024e-6,
        -5.692_506_4e-5,
        -7.349_906_3e-4,
        -2.954_600_1e-3,
        -1.609_603_3e-2,
    ] {
        p = p * x2 + c;
    }
    let mut q = -1.456_607_2e-5_f32;
    for c in [
        -2.133_740_6e-4,
        -1.682_827e-3,
        -7.373_329_3e-3,
        -1.426_474e-2,
    ] {
        q = q * x2 + c;
    }
    x * p / q
}

/// BERT's exact GELU, `x·Φ(x) = x/2·(1 + erf(x/√2))`, in place.
#[inline(always)]
fn gelu_generic(v: &mut [f32]) {
    for x in v {
        *x = 0.5 * *x * (1.0 + erf(*x * std::f32::consts::FRAC_1_SQRT_2));
    }
}

/// `e^x` for `x ≤ 0` (softmax arguments), within 2 ulp of libm on
/// `[-87, 0]` and 0 below: Cephes' `expf` range reduction and polynomial,
/// written so that it vectorises.
#[inline(always)]
fn exp_neg(x: f32) -> f32 {
    let x = x.max(-87.0);
    // Round to nearest (even) with the 1.5·2^23 trick, which vectorises anywhere.
    const MAGIC: f32 = 12_582_912.0;
    let n = (x * std::f32::consts::LOG2_E + MAGIC) - MAGIC;
    // x − n·ln2 in two parts (Cody–Waite) for accuracy.
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let mut p = 1.987_569_1e-4_f32;
    for c in [
        1.398_199_9e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        0.166_666_55,
        0.5,
    ] {
        p = p * r + c;
    }
    let e = p * r * r + r + 1.0;
    f32::from_bits(e.to_bits().wrapping_add(((n as i32) << 23) as u32))
}

/// `a·b` in eight independent lanes (vectorisable).
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Sum of `f(x)` over `v` in eight independent lanes (vectorisable).
#[inline(always)]
fn lanes_sum(v: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = v.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().map(|&x| f(x)).sum();
    for c in chunks {
        for i in 0..8 {
            acc[i] += f(c[i]);
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `row ← LN(row + residual)`.
#[inline(always)]
fn ln_generic(row: &mut [f32], residual: Option<&[f32]>, w: &[f32], b: &[f32], eps: f32) {
    if let Some(r) = residual {
        row.iter_mut().zip(r).for_each(|(x, r)| *x += r);
    }
    let h = row.len() as f32;
    let mean = lanes_sum(row, |x| x) / h;
    let var = lanes_sum(row, |x| (x - mean) * (x - mean)) / h;
    let inv = 1.0 / (var + eps).sqrt();
    for ((x, &w), &b) in row.iter_mut().zip(w).zip(b) {
        *x = (*x - mean) * inv * w + b;
    }
}

/// One head's attention over one window (see [`attend`]), all in one
/// function so that the small dot products and updates inline and vectorise.
///
/// # Safety
/// As [`attend`]; `scores` holds `len` values.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn attend_generic(
    qkv: *const f32,
    ld: usize,
    (q0, k0, v0): (usize, usize, usize),
    len: usize,
    hd: usize,
    ctx: *mut f32,
    ld_ctx: usize,
    scores: &mut [f32],
) {
    // SAFETY: the caller vouches for these runs.
    let run =
        |i: usize, off: usize| unsafe { std::slice::from_raw_parts(qkv.add(i * ld + off), hd) };
    for i in 0..len {
        let q = run(i, q0);
        for (j, s) in scores.iter_mut().enumerate() {
            *s = dot(q, run(j, k0));
        }
        let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        scores.iter_mut().for_each(|x| *x = exp_neg(*x - max));
        let inv = 1.0 / lanes_sum(scores, |x| x);
        // SAFETY: the caller vouches for this output run.
        let out = unsafe { std::slice::from_raw_parts_mut(ctx.add(i * ld_ctx), hd) };
        out.fill(0.0);
        for (j, &p) in scores.iter().enumerate() {
            let p = p * inv;
            out.iter_mut()
                .zip(run(j, v0))
                .for_each(|(y, &x)| *y += p * x);
        }
    }
}

/// The row-wise numerics compiled twice: plain, and with AVX2 + FMA enabled
/// (the same code; the compiler vectorises it for the wider registers).
macro_rules! vector_ops {
    ($($attr:meta)?; $gelu:ident, $ln:ident, $attend:ident) => {
        $(#[$attr])?
        #[inline(never)]
        unsafe fn $gelu(v: &mut [f32]) {
            gelu_generic(v)
        }

        $(#[$attr])?
        #[inline(never)]
        unsafe fn $ln(row: &mut [f32], residual: Option<&[f32]>, w: &[f32], b: &[f32], eps: f32) {
            ln_generic(row, residual, w, b, eps)
        }

        #[allow(clippy::too_many_arguments)]
        $(#[$attr])?
        #[inline(never)]
        unsafe fn $attend(
            qkv: *const f32,
            ld: usize,
            offsets: (usize, usize, usize),
            len: usize,
            hd: usize,
            ctx: *mut f32,
            ld_ctx: usize,
            scores: &mut [f32],
        ) {
            // SAFETY: the caller's promises, passed on.
            unsafe { attend_generic(qkv, ld, offsets, len, hd, ctx, ld_ctx, scores) }
        }
    };
}

vector_ops!(; gelu_plain, ln_plain, attend_plain);
#[cfg(target_arch = "x86_64")]
vector_ops!(target_feature(enable = "avx2,fma"); gelu_avx2, ln_avx2, attend_avx2);

/// Applies GELU to `v` in place.
pub(crate) fn gelu(path: KernelPath, v: &mut [f32]) {
    match path {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AVX2 and AVX-512 paths are only chosen on CPUs with AVX2 + FMA.
        KernelPath::Avx2 | KernelPath::Avx512 => unsafe { gelu_avx2(v) },
        // SAFETY: plain code, no target features.
        _ => unsafe { gelu_plain(v) },
    }
}

/// `row ← LN(row + residual)` with scale `w`, shift `b` (all the same length).
pub(crate) fn layer_norm(
    path: KernelPath,
    row: &mut [f32],
    residual: Option<&[f32]>,
    w: &[f32],
    b: &[f32],
    eps: f32,
) {
    assert!(w.len() == row.len() && b.len() == row.len());
    assert!(residual.is_none_or(|r| r.len() == row.len()));
    match path {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as in `gelu`.
        KernelPath::Avx2 | KernelPath::Avx512 => unsafe { ln_avx2(row, residual, w, b, eps) },
        // SAFETY: plain code.
        _ => unsafe { ln_plain(row, residual, w, b, eps) },
    }
}

/// Softmax attention of one head over one window of `len` rows:
/// `ctx_i = Σ_j softmax_j(q_i·k_j)·v_j`, where row `i`'s `q`, `k` and `v` are
/// the `hd` values at `qkv + i·ld + q0` (`k0`, `v0`) and its output goes to
/// the `hd` values at `ctx + i·ld_ctx`. `scores` is scratch.
///
/// # Safety
/// Those `3·len` input runs must be readable and not written meanwhile, and
/// the `len` output runs writable and touched by no one else.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn attend(
    path: KernelPath,
    qkv: *const f32,
    ld: usize,
    offsets: (usize, usize, usize),
    len: usize,
    hd: usize,
    ctx: *mut f32,
    ld_ctx: usize,
    scores: &mut Vec<f32>,
) {
    scores.resize(len, 0.0);
    // SAFETY: the caller's promises; AVX2 + FMA are present on the AVX2 and
    // AVX-512 paths (crate::cpu).
    unsafe {
        match path {
            #[cfg(target_arch = "x86_64")]
            KernelPath::Avx2 | KernelPath::Avx512 if hd.is_multiple_of(8) => {
                crate::kernels_avx2::attend(qkv, ld, offsets, len, hd, ctx, ld_ctx, scores)
            }
            #[cfg(target_arch = "x86_64")]
            KernelPath::Avx2 | KernelPath::Avx512 => {
                attend_avx2(qkv, ld, offsets, len, hd, ctx, ld_ctx, scores)
            }
            _ => attend_plain(qkv, ld, offsets, len, hd, ctx, ld_ctx, scores),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn rand_vec(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
            })
            .collect()
    }

    /// Every path this CPU can run, scalar first.
    pub(crate) fn paths() -> Vec<KernelPath> {
        let best = crate::cpu::cpu_info().best;
        [KernelPath::Scalar, KernelPath::Avx2, KernelPath::Avx512]
            .into_iter()
            .filter(|&p| p <= best)
            .collect()
    }

    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    fn run(lin: &Linear, path: KernelPath, x: Input<'_>, m: usize, cols: Range<usize>) -> Vec<f32> {
        let mut y = vec![f32::NAN; m * lin.out];
        // SAFETY: y is m × out, owned here.
        unsafe { lin.forward(path, x, 0..m, cols.clone(), y.as_mut_ptr(), lin.out) };
        // Columns outside `cols` stay untouched.
        for row in y.chunks(lin.out) {
            for (c, v) in row.iter().enumerate() {
                assert_eq!(cols.contains(&c), !v.is_nan(), "column {c}");
            }
        }
        y
    }

    #[test]
    fn f32_linear_matches_the_plain_product_on_every_path() {
        let (out, inp) = (40, 24);
        let w = rand_vec(out * inp, 1);
        let b = rand_vec(out, 2);
        let lin = Linear::from_f32(&w, &b, out, inp);
        for m in [1, 2, 5, 6, 7, 13, 70, 131] {
            let x = rand_vec(m * inp, 3 + m as u64);
            let mut expected = vec![0f32; m * out];
            for r in 0..m {
                for n in 0..out {
                    expected[r * out + n] = b[n]
                        + (0..inp)
                            .map(|k| x[r * inp + k] * w[n * inp + k])
                            .sum::<f32>();
                }
            }
            for path in paths() {
                let got = run(&lin, path, Input::F32(&x), m, 0..out);
                assert!(max_diff(&got, &expected) < 1e-5, "{path:?} m = {m}");
                let part = run(&lin, path, Input::F32(&x), m, 3..37);
                for r in 0..m {
                    for n in 3..37 {
                        assert_eq!(part[r * out + n], got[r * out + n]);
                    }
                }
            }
        }
    }

    /// Random Q4_0 blocks: (scale, nibbles) per (output, block).
    fn q4_weights(out: usize, inp: usize, seed: u64) -> Vec<(f32, [u8; 16])> {
        let r = rand_vec(out * inp / QK * 17, seed);
        r.chunks(17)
            .map(|c| {
                let mut nib = [0u8; 16];
                for (j, v) in c[1..].iter().enumerate() {
                    nib[j] = ((v + 0.5) * 255.99) as u8;
                }
                (c[0] * 0.1, nib)
            })
            .collect()
    }

    pub(crate) fn quantize_rows(x: &[f32], k: usize) -> (Vec<i8>, Vec<f32>, Vec<i32>) {
        let rows = x.len() / k;
        let mut q = vec![0i8; x.len()];
        let mut d = vec![0f32; rows * k / QK];
        let mut s = vec![0i32; rows * k / QK];
        for (i, (xb, qb)) in x.chunks(QK).zip(q.chunks_mut(QK)).enumerate() {
            (d[i], s[i]) = quantize_block(KernelPath::Scalar, xb, qb);
        }
        (q, d, s)
    }

    #[test]
    fn q4_linear_matches_dequantised_weights_on_every_path() {
        let (out, inp) = (48, 96);
        let blocks = q4_weights(out, inp, 4);
        let b = rand_vec(out, 5);
        let nb = inp / QK;
        let lin = Linear::from_q4(|n, blk| blocks[n * nb + blk], &b, out, inp);
        // Dequantised weights, as the f32 path would use them.
        let mut w = vec![0f32; out * inp];
        for n in 0..out {
            for blk in 0..nb {
                let (d, nib) = blocks[n * nb + blk];
                for j in 0..16 {
                    w[n * inp + blk * QK + j] = (f32::from(nib[j] & 15) - 8.0) * d;
                    w[n * inp + blk * QK + j + 16] = (f32::from(nib[j] >> 4) - 8.0) * d;
                }
            }
        }
        for m in [1, 2, 3, 4, 9, 17, 70] {
            let x = rand_vec(m * inp, 6 + m as u64);
            let (q, d, s) = quantize_rows(&x, inp);
            // The exact answer for the quantised activations.
            let xq: Vec<f32> = q
                .iter()
                .enumerate()
                .map(|(i, &v)| f32::from(v) * d[i / QK])
                .collect();
            let mut expected = vec![0f32; m * out];
            for r in 0..m {
                for n in 0..out {
                    expected[r * out + n] = b[n]
                        + (0..inp)
                            .map(|k| xq[r * inp + k] * w[n * inp + k])
                            .sum::<f32>();
                }
            }
            let input = Input::Q8(Q8Rows {
                k: inp,
                q: &q,
                d: &d,
                s: &s,
            });
            for path in paths() {
                let got = run(&lin, path, input, m, 0..out);
                assert!(max_diff(&got, &expected) < 1e-4, "{path:?} m = {m}");
                let part = run(&lin, path, input, m, 5..33);
                assert!(max_diff(&part[5..33], &got[5..33]) < 1e-6);
            }
        }
    }

    #[test]
    fn q8_blocks_round_like_the_reference_engine() {
        let mut x = rand_vec(QK, 9);
        x[3] = -2.0; // the block's maximum magnitude maps to -127
        x[7] = 0.0;
        // Exact halves must round to even: with d = 2/127, x = 2.5·d → 2.
        x[9] = 2.5 * (2.0 / 127.0);
        let mut first = None;
        for path in paths() {
            let mut q = [0i8; QK];
            let (d, s) = quantize_block(path, &x, &mut q);
            assert_eq!(d, 2.0 / 127.0);
            assert_eq!(q[3], -127);
            assert_eq!(q[7], 0);
            assert!(q[9] == 2 || q[9] == 3, "{}", q[9]);
            assert_eq!(s, q.iter().map(|&v| i32::from(v)).sum::<i32>());
            for (v, &qv) in x.iter().zip(&q) {
                assert!((f32::from(qv) * d - v).abs() <= d / 2.0 + 1e-6);
            }
            // Every path gives the same bytes.
            match first {
                None => first = Some(q),
                Some(f) => assert_eq!(f, q, "{path:?}"),
            }
            let (d, s) = quantize_block(path, &[0.0; QK], &mut q);
            assert_eq!((d, s), (0.0, 0));
            assert_eq!(q, [0; QK]);
        }
        // Many random blocks: SIMD and scalar agree byte for byte.
        for seed in 0..200 {
            let x: Vec<f32> = rand_vec(QK, 100 + seed)
                .iter()
                .map(|v| v * seed as f32)
                .collect();
            let mut a = [0i8; QK];
            let ra = quantize_block(KernelPath::Scalar, &x, &mut a);
            for path in paths() {
                let mut b = [0i8; QK];
                assert_eq!(quantize_block(path, &x, &mut b), ra);
                assert_eq!(a, b);
            }
        }
    }

    #[test]
    fn polynomial_erf_matches_libm() {
        for i in -800..=800 {
            let x = i as f32 / 100.0;
            assert!(
                (erf(x) - candle_core::cpu::erf::erf_f32(x)).abs() < 2e-6,
                "x = {x}"
            );
        }
    }

    #[test]
    fn vector_exp_matches_libm() {
        for i in 0..=10_000 {
            let x = -(i as f32) * 0.0087;
            let (got, want) = (exp_neg(x), x.exp());
            assert!(
                (got - want).abs() <= want * 3e-7 + 1e-38,
                "x = {x}: {got} vs {want}"
            );
        }
        assert_eq!(exp_neg(-200.0), exp_neg(-87.0));
    }

    #[test]
    fn attention_agrees_across_paths_for_any_length() {
        let (h, hd) = (64, 32);
        for len in [1, 7, 8, 9, 18, 40] {
            let qkv = rand_vec(len * 3 * h, len as u64);
            let mut first: Option<Vec<f32>> = None;
            for path in paths() {
                let mut ctx = vec![0f32; len * h];
                for head in 0..2 {
                    let o = head * hd;
                    // SAFETY: len rows of 3h in, len rows of h out, owned here.
                    unsafe {
                        attend(
                            path,
                            qkv.as_ptr(),
                            3 * h,
                            (o, h + o, 2 * h + o),
                            len,
                            hd,
                            ctx.as_mut_ptr().add(o),
                            h,
                            &mut Vec::new(),
                        )
                    };
                }
                match &first {
                    None => first = Some(ctx),
                    Some(f) => assert!(max_diff(f, &ctx) < 1e-5, "{path:?} len {len}"),
                }
            }
        }
    }

    #[test]
    fn vector_ops_agree_across_paths() {
        let x = rand_vec(1000, 11);
        let (w, b) = (rand_vec(1000, 12), rand_vec(1000, 13));
        let mut reference: Option<(Vec<f32>, Vec<f32>, Vec<f32>)> = None;
        for path in paths() {
            let mut g = x.iter().map(|v| v * 8.0).collect::<Vec<_>>();
            gelu(path, &mut g);
            let mut l = x.clone();
            layer_norm(path, &mut l, Some(&w), &w, &b, 1e-12);
            // One head, 5 rows, hd 8, q|k|v side by side.
            let qkv = rand_vec(5 * 24, 14);
            let mut ctx = vec![0f32; 5 * 8];
            // SAFETY: 5 rows of 24 in, 5 rows of 8 out, both owned here.
            unsafe {
                attend(
                    path,
                    qkv.as_ptr(),
                    24,
                    (0, 8, 16),
                    5,
                    8,
                    ctx.as_mut_ptr(),
                    8,
                    &mut Vec::new(),
                )
            };
            match &reference {
                None => {
                    // Check the scalar path against first principles.
                    for (v, &x) in g.iter().zip(&x) {
                        let x = x * 8.0;
                        let want =
                            0.5 * x * (1.0 + candle_core::cpu::erf::erf_f32(x / 2f32.sqrt()));
                        assert!((v - want).abs() < 1e-5);
                    }
                    let s: Vec<f32> = x.iter().zip(&w).map(|(a, b)| a + b).collect();
                    let mean = s.iter().sum::<f32>() / 1000.0;
                    let var = s.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / 1000.0;
                    for i in 0..1000 {
                        let want = (s[i] - mean) / (var + 1e-12).sqrt() * w[i] + b[i];
                        assert!((l[i] - want).abs() < 1e-5);
                    }
                    for i in 0..5 {
                        let sc: Vec<f32> = (0..5)
                            .map(|j| (0..8).map(|e| qkv[i * 24 + e] * qkv[j * 24 + 8 + e]).sum())
                            .collect();
                        let mx = sc.iter().copied().fold(f32::MIN, f32::max);
                        let ex: Vec<f32> = sc.iter().map(|s| (s - mx).exp()).collect();
                        let z: f32 = ex.iter().sum();
                        for e in 0..8 {
                            let want: f32 = (0..5).map(|j| ex[j] / z * qkv[j * 24 + 16 + e]).sum();
                            assert!((ctx[i * 8 + e] - want).abs() < 1e-5);
                        }
                    }
                    reference = Some((g, l, ctx));
                }
                Some((g0, l0, c0)) => {
                    assert!(max_diff(&g, g0) < 1e-5, "{path:?} gelu");
                    assert!(max_diff(&l, l0) < 1e-5, "{path:?} layer norm");
                    assert!(max_diff(&ctx, c0) < 1e-5, "{path:?} attention");
                }
            }
        }
    }
}

#[cfg(test)]
mod speed {
    //! `cargo test --release -p models --lib -- --ignored --nocapture kernel_speed`
    use super::tests::{quantize_rows, rand_vec};
    use super::*;

    /// Nanoseconds this thread has run on a CPU (Linux schedstat), so that a
    /// loaded machine's waiting time is left out.
    fn cpu_ns() -> u64 {
        std::fs::read_to_string("/proc/thread-self/schedstat")
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }

    #[test]
    #[ignore = "timing, not a check"]
    fn attention_speed() {
        let (len, h, hd) = (18, 384, 32);
        let qkv = rand_vec(len * 3 * h, 1);
        let mut ctx = vec![0f32; len * h];
        let mut scores = Vec::new();
        for path in super::tests::paths() {
            let (t0, c0) = (std::time::Instant::now(), cpu_ns());
            let reps = 2000;
            for _ in 0..reps {
                for head in 0..12 {
                    let o = head * hd;
                    // SAFETY: len rows of 3h in, len rows of h out, owned here.
                    unsafe {
                        attend(
                            path,
                            qkv.as_ptr(),
                            3 * h,
                            (o, h + o, 2 * h + o),
                            len,
                            hd,
                            ctx.as_mut_ptr().add(o),
                            h,
                            &mut scores,
                        )
                    };
                }
            }
            let cpu = (cpu_ns() - c0) as f64 * 1e-9;
            println!(
                "attention {len} tokens x 12 heads {path:?}: {:.1} us per layer cpu ({:.1} wall)",
                cpu / reps as f64 * 1e6,
                t0.elapsed().as_secs_f64() / reps as f64 * 1e6
            );
        }
    }

    #[test]
    #[ignore = "timing, not a check"]
    fn kernel_speed() {
        for &(m, k, n) in &[
            (17, 384, 1536),
            (17, 1536, 384),
            (17, 384, 1152),
            (512, 384, 1536),
        ] {
            let w = rand_vec(n * k, 1);
            let b = rand_vec(n, 2);
            let f = Linear::from_f32(&w, &b, n, k);
            let blocks: Vec<(f32, [u8; 16])> = (0..n * k / QK)
                .map(|i| (0.01, [(i % 251) as u8; 16]))
                .collect();
            let nb = k / QK;
            let q = Linear::from_q4(|r, c| blocks[r * nb + c], &b, n, k);
            let x = rand_vec(m * k, 3);
            let (qa, qd, qs) = quantize_rows(&x, k);
            let mut y = vec![0f32; m * n];
            let reps = (2_000_000_000 / (m * k * n)).max(3);
            for path in super::tests::paths() {
                for (name, lin, input) in [
                    ("f32", &f, Input::F32(&x)),
                    (
                        "q4q8",
                        &q,
                        Input::Q8(Q8Rows {
                            k,
                            q: &qa,
                            d: &qd,
                            s: &qs,
                        }),
                    ),
                ] {
                    let (t0, c0) = (std::time::Instant::now(), cpu_ns());
                    for _ in 0..reps {
                        // SAFETY: y is m × n, owned here.
                        unsafe { lin.forward(path, input, 0..m, 0..n, y.as_mut_ptr(), n) };
                    }
                    let wall = t0.elapsed().as_secs_f64();
                    let cpu = (cpu_ns() - c0) as f64 * 1e-9;
                    let macs = (reps * m * k * n) as f64;
                    println!(
                        "{m:>4}x{k:>4}x{n:>4} {path:?} {name}: {:.1} GMAC/s wall, {:.1} GMAC/s cpu, {:.1} us/call cpu",
                        macs / wall / 1e9,
                        macs / cpu / 1e9,
                        cpu / reps as f64 * 1e6
                    );
                }
            }
        }
    }
}
