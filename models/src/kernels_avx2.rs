//! AVX2 + FMA micro-kernels (see `kernels` for the weight layouts).
//!
//! Every function here is `unsafe` and compiled with
//! `#[target_feature(enable = "avx2,fma")]`: callers must have checked that
//! the CPU has both (`crate::cpu` does, once) and must pass slices of the
//! documented sizes; pointers are only read or written within them.

use std::arch::x86_64::*;

use crate::kernels::{Q8Rows, PANEL, QK};

/// `y[r][lo..hi] = (x_r · W)[lo..hi] + bias[lo..hi]` for `r < mr ≤ 6`:
/// one 6×16 register tile (12 accumulators), the panel row loaded once per
/// input and broadcast-multiplied against each row's input value.
///
/// # Safety
/// AVX2 + FMA present; `x` is `mr × k`, `w` is `k × 16`; `y` is writable at
/// `r·ldy + c` for `r < mr`, `lo ≤ c < hi ≤ 16`, and nobody else touches it.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn f32_tile(
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
    assert!(x.len() >= mr * k && w.len() >= k * PANEL && hi <= PANEL && mr <= 6);
    // SAFETY: sizes checked above; y is the caller's promise.
    unsafe {
        match mr {
            6 => f32_rows::<6>(x, k, w, bias, y, ldy, lo, hi),
            5 => f32_rows::<5>(x, k, w, bias, y, ldy, lo, hi),
            4 => f32_rows::<4>(x, k, w, bias, y, ldy, lo, hi),
            3 => f32_rows::<3>(x, k, w, bias, y, ldy, lo, hi),
            2 => f32_rows::<2>(x, k, w, bias, y, ldy, lo, hi),
            1 => f32_rows::<1>(x, k, w, bias, y, ldy, lo, hi),
            _ => {}
        }
    }
}

#[allow(clippy::too_many_arguments)]
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn f32_rows<const MR: usize>(
    x: &[f32],
    k: usize,
    w: &[f32],
    bias: &[f32; PANEL],
    y: *mut f32,
    ldy: usize,
    lo: usize,
    hi: usize,
) {
    let (xp, wp) = (x.as_ptr(), w.as_ptr());
    // SAFETY (whole body): reads stay within x (MR × k) and w (k × 16) as
    // checked by the caller; writes go to the caller's tile of y.
    unsafe {
        let b0 = _mm256_loadu_ps(bias.as_ptr());
        let b1 = _mm256_loadu_ps(bias.as_ptr().add(8));
        let mut acc = [[b0, b1]; MR];
        for kk in 0..k {
            let w0 = _mm256_loadu_ps(wp.add(kk * PANEL));
            let w1 = _mm256_loadu_ps(wp.add(kk * PANEL + 8));
            for (r, a) in acc.iter_mut().enumerate() {
                let xv = _mm256_broadcast_ss(&*xp.add(r * k + kk));
                a[0] = _mm256_fmadd_ps(xv, w0, a[0]);
                a[1] = _mm256_fmadd_ps(xv, w1, a[1]);
            }
        }
        store_tile(&acc, y, ldy, lo, hi);
    }
}

/// Writes columns `lo..hi` of each row's 16 accumulated values.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn store_tile<const MR: usize>(
    acc: &[[__m256; 2]; MR],
    y: *mut f32,
    ldy: usize,
    lo: usize,
    hi: usize,
) {
    // SAFETY: the caller owns y's rows 0..MR, columns lo..hi.
    unsafe {
        for (r, a) in acc.iter().enumerate() {
            let dst = y.add(r * ldy);
            if lo == 0 && hi == PANEL {
                _mm256_storeu_ps(dst, a[0]);
                _mm256_storeu_ps(dst.add(8), a[1]);
            } else {
                let mut tmp = [0f32; PANEL];
                _mm256_storeu_ps(tmp.as_mut_ptr(), a[0]);
                _mm256_storeu_ps(tmp.as_mut_ptr().add(8), a[1]);
                for (c, &v) in tmp.iter().enumerate().take(hi).skip(lo) {
                    *dst.add(c) = v;
                }
            }
        }
    }
}

/// Q4 weights × Q8 activations for `mr ≤ 3` rows and one panel.
///
/// Per block of 32 inputs and group of 4: the group's 4 activation bytes are
/// broadcast to every dword, `vpmaddubsw` multiplies them with the 16
/// columns' 4 weight bytes (two registers of 8 columns) and adds pairs into
/// 16-bit lanes. Eight groups of `2 × 15 × 127` fit in a 16-bit lane without
/// saturating, so a whole block accumulates in 16 bits; `vpmaddwd` with ones
/// then sums each column's two lanes into 32 bits (the block's exact integer
/// dot product), the `−8` nibble offset is taken off with the block's
/// activation sum, and the block is scaled into f32 accumulators.
///
/// # Safety
/// AVX2 + FMA present; `a` holds `mr` rows; `w` is `k/32 × 512` bytes, `wd`
/// `k/32 × 16` scales; `y` as for [`f32_tile`].
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn q4_tile(
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
    assert!(
        a.q.len() >= mr * a.k
            && a.d.len() >= mr * nb
            && a.s.len() >= mr * nb
            && w.len() >= nb * QK * PANEL
            && wd.len() >= nb * PANEL
            && hi <= PANEL
            && mr <= 3
    );
    // SAFETY: sizes checked above; y is the caller's promise.
    unsafe {
        match mr {
            3 => q4_rows::<3>(a, w, wd, bias, y, ldy, lo, hi),
            2 => q4_rows::<2>(a, w, wd, bias, y, ldy, lo, hi),
            1 => q4_rows::<1>(a, w, wd, bias, y, ldy, lo, hi),
            _ => {}
        }
    }
}

#[allow(clippy::too_many_arguments)]
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn q4_rows<const MR: usize>(
    a: &Q8Rows<'_>,
    w: &[u8],
    wd: &[f32],
    bias: &[f32; PANEL],
    y: *mut f32,
    ldy: usize,
    lo: usize,
    hi: usize,
) {
    let (k, nb) = (a.k, a.k / QK);
    let (qa, da, sa) = (a.q.as_ptr(), a.d.as_ptr(), a.s.as_ptr());
    // SAFETY (whole body): reads stay within the checked slices; writes go
    // to the caller's tile of y.
    unsafe {
        let ones = _mm256_set1_epi16(1);
        let mut acc = [[_mm256_setzero_ps(); 2]; MR];
        for b in 0..nb {
            let wb = w.as_ptr().add(b * QK * PANEL);
            let mut isum = [[_mm256_setzero_si256(); 2]; MR];
            // An opaque trip count keeps LLVM from unrolling the 8 groups
            // and regrouping the integer sums per row, which needs all 16
            // weight registers at once and spills them to the stack.
            for g in 0..std::hint::black_box(QK / 4) {
                let w0 = _mm256_loadu_si256(wb.add(g * 64) as *const __m256i);
                let w1 = _mm256_loadu_si256(wb.add(g * 64 + 32) as *const __m256i);
                for (r, s) in isum.iter_mut().enumerate() {
                    let quad = (qa.add(r * k + b * QK + g * 4) as *const i32).read_unaligned();
                    let av = _mm256_set1_epi32(quad);
                    s[0] = _mm256_add_epi16(s[0], _mm256_maddubs_epi16(w0, av));
                    s[1] = _mm256_add_epi16(s[1], _mm256_maddubs_epi16(w1, av));
                }
            }
            let d0 = _mm256_loadu_ps(wd.as_ptr().add(b * PANEL));
            let d1 = _mm256_loadu_ps(wd.as_ptr().add(b * PANEL + 8));
            for (r, (s, f)) in isum.iter().zip(acc.iter_mut()).enumerate() {
                let corr = _mm256_set1_epi32(8 * *sa.add(r * nb + b));
                let scale = _mm256_set1_ps(*da.add(r * nb + b));
                let i0 = _mm256_sub_epi32(_mm256_madd_epi16(s[0], ones), corr);
                let i1 = _mm256_sub_epi32(_mm256_madd_epi16(s[1], ones), corr);
                f[0] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i0), _mm256_mul_ps(d0, scale), f[0]);
                f[1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i1), _mm256_mul_ps(d1, scale), f[1]);
            }
        }
        let b0 = _mm256_loadu_ps(bias.as_ptr());
        let b1 = _mm256_loadu_ps(bias.as_ptr().add(8));
        for f in acc.iter_mut() {
            f[0] = _mm256_add_ps(f[0], b0);
            f[1] = _mm256_add_ps(f[1], b1);
        }
        store_tile(&acc, y, ldy, lo, hi);
    }
}

/// [`crate::kernels::quantize_block`] with AVX2: the same arithmetic (`x ·
/// (1/d)` rounded half to even by `vcvtps2dq`), so the same bytes.
///
/// # Safety
/// AVX2 + FMA present; `x` and `q` hold 32 values.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn quantize_block(x: &[f32], q: &mut [i8]) -> (f32, i32) {
    assert!(x.len() >= QK && q.len() >= QK);
    // SAFETY: 32 values read from x and written to q (checked above).
    unsafe {
        let p = x.as_ptr();
        let v = [
            _mm256_loadu_ps(p),
            _mm256_loadu_ps(p.add(8)),
            _mm256_loadu_ps(p.add(16)),
            _mm256_loadu_ps(p.add(24)),
        ];
        let sign = _mm256_set1_ps(-0.0);
        let m = v.iter().fold(_mm256_setzero_ps(), |m, &x| {
            _mm256_max_ps(m, _mm256_andnot_ps(sign, x))
        });
        let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        let m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
        let amax = _mm_cvtss_f32(m);
        let d = amax / 127.0;
        let id = _mm256_set1_ps(if d > 0.0 { 1.0 / d } else { 0.0 });
        let i = v.map(|x| _mm256_cvtps_epi32(_mm256_mul_ps(x, id)));
        // Pack to bytes (lane-wise), then undo the 128-bit lane interleave.
        let w01 = _mm256_packs_epi32(i[0], i[1]);
        let w23 = _mm256_packs_epi32(i[2], i[3]);
        let b = _mm256_packs_epi16(w01, w23);
        let b = _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256(q.as_mut_ptr() as *mut __m256i, b);
        let s = _mm256_add_epi32(_mm256_add_epi32(i[0], i[1]), _mm256_add_epi32(i[2], i[3]));
        let s = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
        (d, _mm_cvtsi128_si32(s))
    }
}

/// `e^x` for `x ≤ 0` in eight lanes: the polynomial of `kernels::exp_neg`.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn exp_neg(x: __m256) -> __m256 {
    let x = _mm256_max_ps(x, _mm256_set1_ps(-87.0));
    let n = _mm256_round_ps(
        _mm256_mul_ps(x, _mm256_set1_ps(std::f32::consts::LOG2_E)),
        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC,
    );
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_359_4), x);
    let r = _mm256_fmadd_ps(n, _mm256_set1_ps(2.121_944_4e-4), r);
    let mut p = _mm256_set1_ps(1.987_569_1e-4);
    for c in [
        1.398_199_9e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        0.166_666_55,
        0.5,
    ] {
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
    }
    let e = _mm256_add_ps(
        _mm256_fmadd_ps(_mm256_mul_ps(p, r), r, r),
        _mm256_set1_ps(1.0),
    );
    let bits = _mm256_add_epi32(
        _mm256_castps_si256(e),
        _mm256_slli_epi32(_mm256_cvtps_epi32(n), 23),
    );
    _mm256_castsi256_ps(bits)
}

/// One head's softmax attention over one window (see `kernels::attend`),
/// for head sizes that are a multiple of 8. K is first transposed into
/// `scratch` so that a row's scores are eight-wide FMAs over the keys (no
/// horizontal sums); then each row's softmax and `Σ p_j·v_j` run in
/// registers.
///
/// # Safety
/// AVX2 + FMA present; as `kernels::attend` for the pointers; `hd % 8 == 0`.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn attend(
    qkv: *const f32,
    ld: usize,
    (q0, k0, v0): (usize, usize, usize),
    len: usize,
    hd: usize,
    ctx: *mut f32,
    ld_ctx: usize,
    scratch: &mut Vec<f32>,
) {
    assert!(hd.is_multiple_of(8) && len > 0);
    let lp = len.next_multiple_of(8);
    scratch.clear();
    scratch.resize(hd * lp + lp, 0.0);
    let (kt, scores) = scratch.split_at_mut(hd * lp);
    // SAFETY (whole body): row j's k / q / v runs (hd values at qkv + j·ld +
    // offset) and output runs are the caller's promise; kt is hd × lp and
    // scores lp long (sized above), indexed within those bounds.
    unsafe {
        for j in 0..len {
            let k = qkv.add(j * ld + k0);
            for e in 0..hd {
                *kt.get_unchecked_mut(e * lp + j) = *k.add(e);
            }
        }
        let ktp = kt.as_ptr();
        let sp = scores.as_mut_ptr();
        for i in 0..len {
            let q = qkv.add(i * ld + q0);
            let mut max = _mm256_set1_ps(f32::NEG_INFINITY);
            // Four blocks of 8 keys at a time: independent FMA chains.
            for jg in (0..lp).step_by(32) {
                let nb = ((lp - jg) / 8).min(4);
                // Even and odd inputs in separate chains (FMA latency).
                let mut acc = [_mm256_setzero_ps(); 4];
                let mut odd = [_mm256_setzero_ps(); 4];
                for e in (0..hd).step_by(2) {
                    let (qe, qo) = (_mm256_set1_ps(*q.add(e)), _mm256_set1_ps(*q.add(e + 1)));
                    let (re, ro) = (ktp.add(e * lp + jg), ktp.add((e + 1) * lp + jg));
                    for b in 0..nb {
                        acc[b] = _mm256_fmadd_ps(qe, _mm256_loadu_ps(re.add(8 * b)), acc[b]);
                        odd[b] = _mm256_fmadd_ps(qo, _mm256_loadu_ps(ro.add(8 * b)), odd[b]);
                    }
                }
                for (a, o) in acc.iter_mut().zip(odd) {
                    *a = _mm256_add_ps(*a, o);
                }
                for (b, a) in acc.iter_mut().enumerate().take(nb) {
                    let jb = jg + 8 * b;
                    if jb + 8 > len {
                        // Padding keys get no weight.
                        let valid = (len - jb) as i32;
                        let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
                        let keep = _mm256_cmpgt_epi32(_mm256_set1_epi32(valid), lane);
                        *a = _mm256_blendv_ps(
                            _mm256_set1_ps(f32::NEG_INFINITY),
                            *a,
                            _mm256_castsi256_ps(keep),
                        );
                    }
                    _mm256_storeu_ps(sp.add(jb), *a);
                    max = _mm256_max_ps(max, *a);
                }
            }
            let m = _mm_max_ps(_mm256_castps256_ps128(max), _mm256_extractf128_ps(max, 1));
            let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
            let m = _mm256_set1_ps(_mm_cvtss_f32(_mm_max_ss(m, _mm_shuffle_ps(m, m, 1))));
            let mut sum = _mm256_setzero_ps();
            for jb in (0..lp).step_by(8) {
                let e = exp_neg(_mm256_sub_ps(_mm256_loadu_ps(sp.add(jb)), m));
                _mm256_storeu_ps(sp.add(jb), e);
                sum = _mm256_add_ps(sum, e);
            }
            let s = _mm_add_ps(_mm256_castps256_ps128(sum), _mm256_extractf128_ps(sum, 1));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            let inv = 1.0 / _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps(s, s, 1)));
            let out = ctx.add(i * ld_ctx);
            // Four blocks of 8 output values at a time: independent chains.
            let scale = _mm256_set1_ps(inv);
            for cg in (0..hd).step_by(32) {
                let nc = ((hd - cg) / 8).min(4);
                let mut acc = [_mm256_setzero_ps(); 4];
                for j in 0..len {
                    let p = _mm256_set1_ps(*sp.add(j));
                    let v = qkv.add(j * ld + v0 + cg);
                    for (c, a) in acc.iter_mut().enumerate().take(nc) {
                        *a = _mm256_fmadd_ps(p, _mm256_loadu_ps(v.add(8 * c)), *a);
                    }
                }
                for (c, a) in acc.iter().enumerate().take(nc) {
                    _mm256_storeu_ps(out.add(cg + 8 * c), _mm256_mul_ps(*a, scale));
                }
            }
        }
    }
}
